// Drives the gateway's /v1 surface with the official OpenAI Node SDK.
//
// Run by the Rust test `sdk::node_sdk` (tests/gateway/sdk.rs) with
// CODEX_POOLER_TEST_NODE_SDK_DIR pointing at a directory holding
// node_modules/openai (openai@7.60.0), and the
// env vars OPENAI_BASE_URL (<gateway>/v1) and OPENAI_API_KEY (a Pool API key).
// Exits non-zero on the first failed check.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const EXPECTED_SDK = "7.60.0";
const ANSWER = "Hello, café from the simulator!";
const MODEL = "gpt-5.5";

const sdkDir = process.env.CODEX_POOLER_TEST_NODE_SDK_DIR;
if (!sdkDir) {
  console.error("CODEX_POOLER_TEST_NODE_SDK_DIR is not set");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(sdkDir), "noop.js"));
const pkg = JSON.parse(
  readFileSync(path.join(path.resolve(sdkDir), "node_modules/openai/package.json"), "utf8"),
);
const { default: OpenAI } = await import(pathToFileURL(require.resolve("openai")).href);

function check(condition, message) {
  if (!condition) {
    console.error(`FAILED: ${message}`);
    process.exit(1);
  }
  console.log(`ok: ${message}`);
}

check(pkg.version === EXPECTED_SDK, `openai SDK is ${EXPECTED_SDK} (got ${pkg.version})`);
const client = new OpenAI({ maxRetries: 0, timeout: 60_000 });

const r = await client.responses.create({ model: MODEL, input: "hi" });
check(r.output_text === ANSWER, "responses.create output_text");

const stream = await client.responses.create({ model: MODEL, input: "hi", stream: true });
let text = "";
let last = null;
for await (const ev of stream) {
  if (ev.type === "response.output_text.delta") text += ev.delta;
  last = ev.type;
}
check(text === ANSWER, "streamed responses text");
check(last === "response.completed", "streamed responses end completed");

const chat = await client.chat.completions.create({
  model: MODEL,
  messages: [{ role: "user", content: "hi" }],
  stream: true,
  stream_options: { include_usage: true },
});
let content = "";
let usage = null;
for await (const chunk of chat) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) content += choice.delta?.content ?? "";
}
check(content === ANSWER, "streamed chat content");
check(usage && usage.total_tokens === 129, "streamed chat usage");

const c = await client.chat.completions.create({
  model: MODEL,
  messages: [{ role: "user", content: "hi" }],
});
check(c.choices[0].message.content === ANSWER, "chat completion content");

const models = [];
for await (const m of client.models.list()) models.push(m.id);
check(models.includes(MODEL), "models.list");

console.log("node SDK checks passed");
