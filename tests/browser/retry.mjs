// The OpenAI JS SDK's own retries against a key at its limit: run by
// tests/tests/browser.rs while another request of the same key holds its
// only slot. The SDK gets 429 with Retry-After, waits, retries with its
// defaults, and is served once the slot is free. Prints what it saw as JSON.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const statuses = [];
const client = new OpenAI({
  baseURL,
  apiKey,
  fetch: async (url, init) => {
    const response = await fetch(url, init);
    statuses.push({ status: response.status, retryAfter: response.headers.get("retry-after") });
    return response;
  },
});
try {
  const stream = await client.chat.completions.create({
    model: "llama3.2:1b",
    messages: [{ role: "user", content: "hi" }],
    stream: true,
  });
  let chunks = 0;
  for await (const _ of stream) {
    chunks += 1;
  }
  console.log(JSON.stringify({ statuses, chunks }));
} catch (error) {
  console.log(JSON.stringify({ statuses, error: String(error), status: error.status ?? null }));
}
