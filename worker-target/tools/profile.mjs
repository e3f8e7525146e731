// A CPU profile of a running workerd isolate, for finding where a Worker's
// CPU time per request goes (bench/results.md, "The Worker").
//
//   workerd serve config.capnp --inspector-addr=127.0.0.1:9230 &
//   node --experimental-websocket tools/profile.mjs 9230 5 &   # 5 s profile
//   wrk -c16 -d4s ... http://127.0.0.1:<worker port>/small     # the load
//
// Prints each function's share of the samples (self time), "(idle)" and
// "(program)" (the runtime's own work) included. For named WASM frames,
// serve the .wasm wasm-bindgen wrote (build/pkg/) rather than the one
// wasm-opt shrank.
const [, , port, seconds = "5"] = process.argv;
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
const self = new Map();
let total = 0;
profile.samples.forEach((sample, i) => {
  const frame = nodes.get(sample).callFrame;
  const key = `${frame.functionName || "(anon)"} ${frame.url.split("/").pop()}`;
  const dt = profile.timeDeltas[i] || 0;
  total += dt;
  self.set(key, (self.get(key) || 0) + dt);
});
for (const [key, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 60)) {
  console.log(`${((100 * t) / total).toFixed(1).padStart(5)}%  ${key}`);
}
ws.close();
