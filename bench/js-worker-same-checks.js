// The bench's second hand-written Worker: the first one's (`JS_WORKER` in
// xtask/src/bench.rs) token check, header deletions and CORS header, grown
// to what the Rust Worker does on the bench's `GET /small`, written as a JS
// developer would:
// - 50 keys named by the SHA-256 of their tokens (`AIG_KEYS_JSON`, parsed
//   once per isolate), the token from `cf-aig-authorization` or
//   `Authorization`, hashed with WebCrypto and compared with every key in
//   constant time; an expired key is refused;
// - hop-by-hop headers (and those `Connection` names) dropped both ways,
//   credentials and `Origin` not forwarded;
// - a request id: the client's `X-Request-Id` when it is usable, else a new
//   one, sent to the origin and back to the client;
// - CORS headers when the request has an `Origin`;
// - one JSON log line per request.
// Not here, because the bench's request does not reach them: the model
// gate (a body read for its model), usage metering of LLM answers, limits,
// several boxes, listings filtered by model. Bench only: not a product.

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
]);
const NOT_FORWARDED = new Set(["cf-aig-authorization", "authorization", "origin", "x-request-id"]);
const INVALID_KEY =
  '{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}';

let keys = null;
let ids = 0;
let idPrefix = "";

function parseKeys(env) {
  const bytes = (hex) => new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
  keys = JSON.parse(env.AIG_KEYS_JSON).map((k) => ({
    name: k.name,
    digest: bytes(k.token_sha256),
    models: k.models,
    expires: Date.parse(k.expires),
  }));
  idPrefix = crypto.randomUUID().replaceAll("-", "").slice(0, 16);
}

function usableId(id) {
  return id !== null && id.length > 0 && id.length <= 128 && /^[\x21-\x7e]+$/.test(id);
}

// Names listed in `Connection`, lowercased.
function connectionNames(headers) {
  const listed = headers.get("connection");
  return listed === null ? [] : listed.split(",").map((n) => n.trim().toLowerCase());
}

function copyEndToEnd(from, skip) {
  const listed = connectionNames(from);
  const out = new Headers();
  for (const [name, value] of from) {
    if (!HOP_BY_HOP.has(name) && !skip.has(name) && !listed.includes(name)) {
      out.append(name, value);
    }
  }
  return out;
}

async function findKey(headers) {
  const credential = headers.get("cf-aig-authorization") ?? headers.get("authorization");
  if (credential === null || !credential.startsWith("Bearer ")) {
    return null;
  }
  const token = new TextEncoder().encode(credential.slice(7).trim());
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", token));
  let found = null;
  for (const key of keys) {
    const same = crypto.subtle.timingSafeEqual(key.digest, digest);
    found = found === null && same ? key : found;
  }
  return found;
}

export default {
  async fetch(request, env) {
    const started = Date.now();
    if (keys === null) {
      parseKeys(env);
    }
    const url = new URL(request.url);
    const clientId = request.headers.get("x-request-id");
    const id = usableId(clientId) ? clientId : `${idPrefix}${(ids++).toString(16).padStart(16, "0")}`;
    const origin = request.headers.get("origin");
    const log = (status, key, error) =>
      console.log(
        JSON.stringify({
          message: "request",
          request_id: id,
          method: request.method,
          path: url.pathname,
          status,
          duration_ms: Date.now() - started,
          key: key === null ? "-" : key.name,
          route: "other",
          error,
        }),
      );
    const cors = (headers) => {
      if (origin !== null) {
        headers.set("access-control-allow-origin", "*");
        headers.set("access-control-expose-headers", "x-request-id");
      }
    };
    const key = await findKey(request.headers);
    if (key === null || key.expires <= started) {
      const headers = new Headers({
        "content-type": "application/json",
        "www-authenticate": "Bearer",
        "x-request-id": id,
      });
      cors(headers);
      log(401, null, "invalid_api_key");
      return new Response(INVALID_KEY, { status: 401, headers });
    }
    const headers = copyEndToEnd(request.headers, NOT_FORWARDED);
    headers.set("x-request-id", id);
    const upstream = await fetch(env.OLLAMA_ORIGIN + url.pathname + url.search, {
      method: request.method,
      headers,
      body: request.body,
      redirect: "manual",
      signal: request.signal,
    });
    const answer = copyEndToEnd(upstream.headers, new Set());
    answer.set("x-request-id", id);
    cors(answer);
    log(upstream.status, key, "-");
    return new Response(upstream.body, {
      status: upstream.status,
      statusText: upstream.statusText,
      headers: answer,
    });
  },
};
