// The Worker's entry module: hands each request to the Rust handler.
// `cargo xtask build-worker` bundles this with the wasm-bindgen output into
// build/worker.js; the .wasm stays a separate module (build/*.wasm).
import { fetch as handle } from "../build/pkg/ollama_proxy_worker.js";

export default {
  fetch(request, env, ctx) {
    return handle(request, env, ctx);
  },
};
