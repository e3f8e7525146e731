// The page the browser test loads from its own origin: the official
// OpenAI JS SDK, as a browser app would use it against the proxy
// (`cf-aig-authorization` as a default header, `dangerouslyAllowBrowser`).
// `cargo xtask test-all` bundles this file into build/page.js.
import OpenAI from "openai";

const client = (baseURL, token) =>
  new OpenAI({
    baseURL,
    apiKey: "unused",
    defaultHeaders: { "cf-aig-authorization": `Bearer ${token}` },
    dangerouslyAllowBrowser: true,
    maxRetries: 0,
  });

const messages = [{ role: "user", content: "Hello" }];

// What each check saw, for the test to assert on.
async function run({ baseURL, token, wrongToken, allowed, blocked }) {
  const openai = client(baseURL, token);
  const out = {};

  const chat = await openai.chat.completions.create({ model: allowed, messages });
  out.chat = chat.choices[0].message.content;

  // A live stream: when each delta arrived, relative to the first.
  const stream = await openai.chat.completions.create(
    { model: allowed, messages, stream: true },
    { query: { chunks: 4, delay_ms: 150 } },
  );
  const arrivals = [];
  let first = null;
  for await (const chunk of stream) {
    const now = performance.now();
    first ??= now;
    arrivals.push({ ms: now - first, text: chunk.choices[0]?.delta?.content ?? "" });
  }
  out.stream = arrivals;

  out.models = [];
  for await (const model of openai.models.list()) {
    out.models.push(model.id);
  }

  const failure = async (call) => {
    try {
      await call();
      return { raised: null };
    } catch (error) {
      return {
        authentication: error instanceof OpenAI.AuthenticationError,
        permission: error instanceof OpenAI.PermissionDeniedError,
        status: error.status ?? null,
        code: error.code ?? null,
        message: error.message,
      };
    }
  };
  out.wrongKey = await failure(() => client(baseURL, wrongToken).models.list());
  out.blocked = await failure(() =>
    openai.chat.completions.create({ model: blocked, messages }),
  );
  return out;
}

window.runChecks = (args) => run(args).catch((error) => ({ error: String(error && error.stack || error) }));
