"""Read switchyard's cost, token and latency figures with the official OpenAI Python SDK."""
import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("SWITCHYARD_BASE_URL", "http://127.0.0.1:10000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "unused-behind-switchyard"),
)
messages = [{"role": "user", "content": "Total of invoice 7?"}]

# Ordinary answers: the figures are response headers; with_raw_response exposes them.
raw = client.chat.completions.with_raw_response.create(model="extract-fields", messages=messages)
completion = raw.parse()
print("answer:", completion.choices[0].message.content)
print("category:", raw.headers["x-switchyard-category"], "model:", raw.headers["x-switchyard-model"])
print("cost USD:", raw.headers["x-switchyard-cost-usd"],
      "tokens in/out:", raw.headers["x-switchyard-input-tokens"], raw.headers["x-switchyard-output-tokens"],
      "upstream ms:", raw.headers["x-switchyard-upstream-ms"], "total ms:", raw.headers["x-switchyard-total-ms"])

# Streamed answers: ask for usage; the final chunk's usage carries the cost.
stream = client.chat.completions.create(
    model="extract-fields", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.usage is not None:
        figures = chunk.model_extra["switchyard"]  # cost_usd is the exact decimal; usage.cost a float
        print("stream cost USD:", figures["cost_usd"], "tokens in/out:",
              chunk.usage.prompt_tokens, chunk.usage.completion_tokens,
              "ttft ms:", figures["ttft_ms"], "total ms:", figures["total_ms"])
