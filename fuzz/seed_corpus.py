#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target into fuzz/corpus/<target>/seed-*.

The seeds are the shapes switchyard meets in production: OpenAI chat/completions/embeddings/
responses requests and answers, their SSE streams, the plugin configurations of envoy/*/envoy.yaml
(as JSON text and as google.protobuf.Struct wire bytes, the two encodings Envoy hands over) and
Retry-After / reset headers as providers send them. Run it from anywhere (needs PyYAML); the fuzzer
grows the corpus from here and `cargo fuzz cmin` keeps it small.
"""

import json
import pathlib
import struct

import yaml

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / f"seed-{name}").write_bytes(data)


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- request_route: request bodies -------------------------------------------------------------

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}
LONG = "Please summarise the attached contract clause by clause. " * 30
REQUESTS = {
    "chat": CHAT,
    "chat-system": {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You review fraud reports."},
            {"role": "user", "content": "Customer says their stolen card was used twice."},
            {"role": "assistant", "content": "Which merchant?"},
            {"role": "user", "content": "Is this a chargeback? Card 4111-1111-1111-1111"},
        ],
        "temperature": 0.2,
    },
    "chat-stream": {"model": "gpt-4o", "stream": True, "messages": CHAT["messages"]},
    "chat-stream-usage": {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                          "messages": CHAT["messages"]},
    "chat-stream-usage-off": {"model": "x", "stream": True, "stream_options": {"include_usage": False}},
    "chat-stream-options-null": {"model": "x", "stream": True, "stream_options": None},
    "chat-stream-options-empty": {"model": "x", "stream": True, "stream_options": {}},
    "chat-stream-options-other": {"model": "x", "stream": True, "stream_options": {"include_obfuscation": False}},
    "chat-stream-options-bad": {"model": "x", "stream": True, "stream_options": "yes"},
    "chat-tools": {
        "model": "gpt-4o", "user": "human-42",
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"model": {"type": "string"}},
                                  "required": ["model"]}}}],
        "tool_choice": "auto",
    },
    "chat-functions": {"model": "gpt-3.5-turbo", "functions": [{"name": "f", "parameters": {}}],
                       "messages": [{"role": "user", "content": "call f"}]},
    "chat-json-schema": {"model": "extract-invoice",
                         "response_format": {"type": "json_schema", "json_schema": {"name": "inv", "schema": {}}},
                         "messages": [{"role": "user", "content": "Invoice #12, total 40 EUR"}]},
    "chat-json-object": {"model": "gpt-4o-mini", "response_format": {"type": "json_object"},
                         "messages": [{"role": "user", "content": "JSON please"}]},
    "chat-parts": {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
        "metadata": {"team": "ops", "ticket": 7}},
    "chat-developer": {"model": "o3-mini", "reasoning_effort": "low", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief. Fraudsters lie."}]},
        {"role": "user", "content": "hi"}], "max_completion_tokens": 100},
    "chat-long": {"model": "auto", "messages": [{"role": "user", "content": LONG}]},
    "completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7,
                    "temperature": 0},
    "completions-stream": {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "stream": True},
    "embeddings": {"model": "text-embedding-3-small", "input": "The food was delicious",
                   "encoding_format": "float"},
    "embeddings-list": {"model": "mistral-embed", "input": ["first", "second"], "dimensions": 256},
    "embeddings-tokens": {"model": "text-embedding-ada-002", "input": [[1212, 318, 257, 1332]]},
    "responses": {"model": "gpt-4.1", "input": "Tell me a three sentence bedtime story about a unicorn."},
    "responses-items": {"model": "gpt-4.1", "instructions": "You are a fraud analyst.", "stream": True,
                        "input": [{"role": "user", "content": [{"type": "input_text", "text": "chargeback?"}]},
                                  {"type": "function_call_output", "call_id": "c1", "output": "{}"},
                                  {"role": "user", "content": "and now?"}],
                        "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}},
    "responses-tools": {"model": "gpt-4.1", "tools": [{"type": "web_search_preview"}], "input": "news"},
}
for name, body in REQUESTS.items():
    write("request_route", name, compact(body))
write("request_route", "pretty", json.dumps(REQUESTS["chat-system"], indent=2))
write("request_route", "escapes",
      r'{"messages":[{"role":"user","content":"{\"model\":\"x\"} caf\u00e9 \ud83d\ude82"}],'
      r'"model":"gpt-\u0034o","n":1e2,"top_p":0.70}')
write("request_route", "spaces", '{ "model" :\t"extract-x" ,\r\n "stream" : true , "stream_options" : { } }')
write("request_route", "model-last", '{"stream":true,"user":"batch-1","model":"gpt-4o-mini"}')

# --- sse_usage: streamed and whole answers (first byte: price and follow limit) -------------------

def sse(events, end="\n\n"):
    return "".join(f"data: {e if isinstance(e, str) else compact(e)}{end}" for e in events)


def chunk(delta, finish=None, usage_null=True):
    c = {"id": "chatcmpl-BqX", "object": "chat.completion.chunk", "created": 1751900000,
         "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_34a54ae93c",
         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage_null:
        c["usage"] = None
    return c


USAGE = {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                       "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
USAGE_CHUNK = {"id": "chatcmpl-BqX", "object": "chat.completion.chunk", "created": 1751900000,
               "model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": USAGE}
CHAT_STREAM = sse([chunk({"role": "assistant", "content": ""}), chunk({"content": "Crème brûlée 🚂"}),
                   chunk({}, "stop"), USAGE_CHUNK, "[DONE]"])
STREAMS = {
    "chat-usage": CHAT_STREAM,
    "chat-no-usage": sse([chunk({"content": "Hi"}, usage_null=False), chunk({}, "stop", False), "[DONE]"]),
    "chat-crlf": CHAT_STREAM.replace("\n\n", "\r\n\r\n"),
    "chat-cr": CHAT_STREAM.replace("\n\n", "\r\r"),
    "chat-comments": ": keep-alive\n\n" + CHAT_STREAM.replace("data: [DONE]", ": done soon\ndata: [DONE]"),
    "chat-bom": "\ufeff" + CHAT_STREAM,
    "chat-cost": sse([chunk({"content": "x"}), {**USAGE_CHUNK, "usage": {**USAGE, "cost": 0.5}}, "[DONE]"]),
    "chat-running-usage": sse([{**chunk({"content": "a"}, usage_null=False), "usage": {"prompt_tokens": 5,
                               "completion_tokens": 1}}, {**chunk({}, "stop", False),
                               "usage": {"prompt_tokens": 5, "completion_tokens": 2}}, "[DONE]"]),
    "deepseek": sse([chunk({"content": "x"}), {**USAGE_CHUNK, "usage": {"prompt_tokens": 40, "completion_tokens": 3,
                     "prompt_cache_hit_tokens": 32, "prompt_cache_miss_tokens": 8}}, "[DONE]"]),
    "completions": sse([{"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
                         "choices": [{"text": "This", "index": 0, "logprobs": None, "finish_reason": None}],
                         "usage": None},
                        {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "x", "choices": [],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}, "[DONE]"]),
    "multiline-data": 'data: {"id":"c1",\ndata: "choices":[],\ndata: "usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n',
    "error-event": 'event: error\ndata: {"error":{"message":"overloaded","type":"server_error"}}\n\n',
    "unterminated": sse([chunk({"content": "Hel"})]) + 'data: {"id":"c1","choices":[{"delta":{"content":"lo',
}
RESPONSES_USAGE = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
                   "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}
RESPONSE = {"id": "resp_67c", "object": "response", "created_at": 1741290958, "status": "completed",
            "model": "gpt-4.1-2025-04-14", "output": [{"type": "message", "id": "msg_1", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": "Hi!", "annotations": []}]}],
            "usage": RESPONSES_USAGE}
RESPONSES_EVENTS = [
    ("response.created", {"type": "response.created", "sequence_number": 0,
                          "response": {**RESPONSE, "status": "in_progress", "output": [], "usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                    "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi!"}),
    ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": RESPONSE}),
]
STREAMS["responses"] = "".join(f"event: {name}\ndata: {compact(body)}\n\n" for name, body in RESPONSES_EVENTS)
STREAMS["responses-incomplete"] = STREAMS["responses"].replace("response.completed", "response.incomplete")
BODIES = {
    "body-chat": {"id": "chatcmpl-B9M", "object": "chat.completion", "created": 1741569952, "model": "gpt-4.1",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}], "usage": USAGE,
                  "service_tier": "default"},
    "body-embeddings": {"object": "list", "data": [{"object": "embedding", "index": 0,
                        "embedding": [0.0023064255, -0.009327292, -0.0028842222]}], "model": "text-embedding-3-small",
                        "usage": {"prompt_tokens": 8, "total_tokens": 8}},
    "body-responses": RESPONSE,
}
# The first byte: price (bits 0-1: full, input only, none), mode (bits 2-3: not applicable, client
# asked, injected, unavailable), a small follow limit (bit 4, size in bits 5-7).
for i, (name, text) in enumerate(list(STREAMS.items()) + [(k, compact(v)) for k, v in BODIES.items()]):
    for mode, label in ((1, "asked"), (2, "injected")):
        write("sse_usage", f"{name}-{label}", bytes([i % 3 | mode << 2]) + text.encode())
    if i % 4 == 0:
        write("sse_usage", f"{name}-limited", bytes([2 << 2 | 0x10 | (i % 8) << 5]) + text.encode())

# --- config_load: the configurations of envoy/*/envoy.yaml, as JSON and as Struct bytes -----------

def varint(v):
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        if v == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def struct_value(v):
    if v is None:
        return varint(1 << 3) + varint(0)
    if isinstance(v, bool):
        return varint(4 << 3) + varint(int(v))
    if isinstance(v, (int, float)):
        return varint(2 << 3 | 1) + struct.pack("<d", float(v))
    if isinstance(v, str):
        return field(3, v.encode())
    if isinstance(v, dict):
        return field(5, struct_bytes(v))
    return field(6, b"".join(field(1, struct_value(item)) for item in v))


def struct_bytes(obj):
    return b"".join(field(1, field(1, k.encode()) + field(2, struct_value(v))) for k, v in obj.items())


def configurations(node):
    """Every `configuration` of a wasm filter in a parsed Envoy config."""
    if isinstance(node, dict):
        conf = node.get("configuration")
        if isinstance(conf, dict) and "value" in conf:
            value = conf["value"]
            yield json.loads(value) if isinstance(value, str) else value
        for child in node.values():
            yield from configurations(child)
    elif isinstance(node, list):
        for child in node:
            yield from configurations(child)


configs = {}
for path in sorted(ROOT.glob("envoy/*/envoy.yaml")):
    for i, conf in enumerate(configurations(yaml.safe_load(path.read_text()))):
        configs[f"{path.parent.name}-{i}"] = conf
configs["ledger"] = {"role": "ledger"}
configs["attempt"] = {**configs["failover-0"], "role": "attempt"}
configs["litellm"] = {
    "upstreams": {"openai": {"cluster": "openai", "host": "api.openai.com"}},
    "models": {"mini": {"provider_model": "gpt-4o-mini"}, "big": {"litellm_model": "gpt-4o", "output_usd_per_1m": "10"}},
    "litellm_prices": {"gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                                       "cache_read_input_token_cost": 7.5e-08},
                       "gpt-4o": {"input_cost_per_token": "2.5e-06", "output_cost_per_reasoning_token": 1e-05}},
    "categories": [
        {"name": "rules", "when": {"all": [
            {"header": {"name": "x-team", "one_of": ["risk", "fraud"]}},
            {"not": {"user": {"glob": "batch-*"}}},
            {"metadata": {"key": "tier", "prefix": "gold"}},
            {"text": {"in": "all", "matches": "(?i)charge ?back", "case_sensitive": False}},
            {"tokens": {"min": 10, "max": "4000"}},
            {"any": [{"json_mode": True}, {"tools": False}, {"stream": True}, {"path": {"equals": "/v1/responses"}}]}]},
         "candidates": [{"upstream": "openai", "model": "big"}, {"upstream": "openai", "model": "mini"}]},
        {"name": "general", "candidates": [{"upstream": "openai", "model": "mini"}]}],
    "default_category": "general",
    "route_header": "x-route", "path_prefix": "/llm", "max_request_bytes": 65536, "max_response_bytes": 1e6,
    "failover": {"statuses": [429, 500], "streaming": False, "cooldown_default_ms": 1000},
}
configs["invalid"] = {"upstreams": {}, "categories": [{"name": "a b", "candidates": [{"upstream": "x", "model": "y"}],
                      "when": {"text": {"in": "last_user", "matches": "("}}}], "default_category": "zzz",
                      "failover": {"statuses": [200], "cooldown_min_ms": 10, "cooldown_max_ms": 5}}
for name, conf in configs.items():
    write("config_load", f"{name}.json", json.dumps(conf, indent=1))
    write("config_load", f"{name}.pb", struct_bytes(conf))

# --- retry_after: one header value per line --------------------------------------------------------
# Line 1 is retry-after, 2 retry-after-ms, 3 x-ratelimit-reset-requests, 4 x-ratelimit-reset-tokens.

RETRY = {
    "seconds": "120",
    "imf-date": "Sun, 06 Nov 1994 08:49:47 GMT",
    "rfc850-date": "Sunday, 06-Nov-94 08:50:37 GMT",
    "asctime-date": "Sun Nov  6 08:49:39 1994",
    "future-date": "Fri, 31 Dec 9999 23:59:59 GMT",
    "leap-date": "Tue, 29 Feb 2028 12:00:00 GMT",
    "ms": "\n1500",
    "ms-fraction": "9\n12.5",
    "openai": "\n\n1s\n6m0s",
    "openai-long": "\n\n1h2m3.5s\n20ms",
    "openai-micro": "\n\n150us\n3µs",
    "all": "30\n2500\n59s\n7m12s",
    "garbage": "soon\n-1\n5\n1x",
}
for name, text in RETRY.items():
    write("retry_after", name, text)
