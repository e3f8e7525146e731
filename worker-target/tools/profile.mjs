// A CPU profile of a running workerd isolate, for finding where a Worker's
// CPU time per request goes (bench/results.md, "The Worker").
//
//   workerd serve config.capnp --inspector-addr=127.0.0.1:9230 &
//   node --experimental-websocket tools/profile.mjs 9230 5 N &  # 5 s profile
//   wrk -c16 -d4s ... http://127.0.0.1:<worker port>/small      # the load
//
// Prints each function's share of the samples and its time, by self time
// and then inclusive of what it called (each function counted once per
// sample), "(idle)" and "(program)" (the runtime's own work) included. With
// N, the number of requests the load made, times are µs per request;
// without it, µs in all. For named WASM frames, serve the .wasm
// wasm-bindgen wrote (build/pkg/) rather than the one wasm-opt shrank.
// An attached inspector makes console.log far dearer than it is otherwise:
// read the log line's share from a run without it.
const [, , port, seconds = "5", requests = "0"] = process.argv;
const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const ws = new WebSocket(list[0].webSocketDebuggerUrl);
let next = 0;
const pending = new Map();
const call = (method, params = {}) =>
  new Promise((resolve) => {
    const id = ++next;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
ws.onmessage = (message) => {
  const reply = JSON.parse(message.data);
  if (pending.has(reply.id)) {
    pending.get(reply.id)(reply.result);
    pending.delete(reply.id);
  }
};
await new Promise((resolve) => (ws.onopen = resolve));
await call("Profiler.enable");
await call("Profiler.setSamplingInterval", { interval: 100 });
await call("Profiler.start");
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
const { profile } = await call("Profiler.stop");
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const node of profile.nodes) {
  for (const child of node.children || []) {
    parent.set(child, node.id);
  }
}
const name = (id) => {
  const frame = nodes.get(id).callFrame;
  return `${frame.functionName || "(anon)"} ${frame.url.split("/").pop()}`;
};
const self = new Map();
const inclusive = new Map();
const add = (map, key, dt) => map.set(key, (map.get(key) || 0) + dt);
let total = 0;
profile.samples.forEach((sample, i) => {
  const dt = profile.timeDeltas[i] || 0;
  total += dt;
  add(self, name(sample), dt);
  // Each function once per sample, however deep it recursed.
  const seen = new Set();
  for (let id = sample; id !== undefined; id = parent.get(id)) {
    const key = name(id);
    if (!seen.has(key)) {
      seen.add(key);
      add(inclusive, key, dt);
    }
  }
});
const per = Number(requests) || 1;
const print = (title, map, count) => {
  console.log(`== ${title}`);
  for (const [key, t] of [...map].sort((a, b) => b[1] - a[1]).slice(0, count)) {
    const share = ((100 * t) / total).toFixed(1).padStart(5);
    console.log(`${share}% ${(t / per).toFixed(2).padStart(10)}  ${key}`);
  }
};
print("self", self, 40);
print("inclusive", inclusive, 60);
ws.close();
