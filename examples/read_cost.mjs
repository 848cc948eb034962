// Read switchyard's cost, token and latency figures with the official OpenAI JavaScript SDK.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.SWITCHYARD_BASE_URL ?? "http://127.0.0.1:10000/v1",
  apiKey: process.env.OPENAI_API_KEY ?? "unused-behind-switchyard",
});
const messages = [{ role: "user", content: "Total of invoice 7?" }];

// Ordinary answers: the figures are response headers; withResponse() exposes them.
const { data: completion, response } = await client.chat.completions
  .create({ model: "extract-fields", messages })
  .withResponse();
console.log("answer:", completion.choices[0].message.content);
console.log("cost USD:", response.headers.get("x-switchyard-cost-usd"),
  "tokens in/out:", response.headers.get("x-switchyard-input-tokens"), response.headers.get("x-switchyard-output-tokens"));

// Streamed answers: ask for usage; the final chunk's usage carries the cost.
const stream = await client.chat.completions.create({
  model: "extract-fields", messages, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.usage) console.log("stream cost USD:", chunk.switchyard.cost_usd, "ttft ms:", chunk.switchyard.ttft_ms);
}
