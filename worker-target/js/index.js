// The Worker's entry module: hands each request to the Rust handler, and
// exports the Durable Object class that keeps fair turns (the doorman; see
// src/turns.rs). `cargo xtask build-worker` bundles this with the
// wasm-bindgen output into build/worker.js; the .wasm stays a separate
// module (build/*.wasm).
import { DurableObject } from "cloudflare:workers";
import { fetch as handle, EdgeDoorman } from "../build/pkg/ollama_proxy_worker.js";

export default {
  fetch(request, env, ctx) {
    return handle(request, env, ctx);
  },
};

// One object holds every key's rate bucket and every slot (bound as
// DOORMAN). Its methods are called over RPC by the Worker's isolates; each
// runs to completion without awaiting, so calls never interleave.
export class Doorman extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.doorman = new EdgeDoorman(env);
  }

  admit(key, slot, cap, perMinute) {
    return this.doorman.admit(key, slot, cap, perMinute, Date.now());
  }

  renew(lease) {
    return this.doorman.renew(lease, Date.now());
  }

  release(lease) {
    this.doorman.release(lease, Date.now());
  }
}
