// Calls to the Durable Object that holds the doorman (its class, Doorman,
// is exported by js/index.js; see src/turns.rs). One object for the whole
// Worker: every limited request of every isolate asks the same one.
const NAME = "doorman";

function stub(env) {
  const namespace = env.DOORMAN;
  return namespace.get(namespace.idFromName(NAME));
}

export function hasDoorman(env) {
  return env.DOORMAN != null;
}

export function doormanAdmit(env, key, slot, cap, perMinute) {
  return stub(env).admit(key, slot, cap ?? null, perMinute ?? null);
}

export function doormanRenew(env, lease) {
  return stub(env).renew(lease);
}

export function doormanRelease(env, lease) {
  return stub(env).release(lease);
}

// Resolves with "timer" after `ms` milliseconds.
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(() => resolve("timer"), ms));
}
