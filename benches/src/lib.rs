//! Shared fixtures for switchyard's benchmarks: a realistic configuration (several categories,
//! regex and keyword rules, a price book) and request/answer bodies of chosen sizes.

use serde_json::json;
use switchyard::config::{from_value, Config};

/// Six categories with header, model, regex, keyword, token and JSON-mode rules.
pub fn realistic_config() -> Config {
    let config = json!({
        "upstreams": {
            "openai": {"cluster": "provider_a"},
            "anthropic": {"cluster": "provider_b", "host": "api.anthropic.com"},
            "mistral": {"cluster": "provider_c", "base_path": "/v1"}
        },
        "models": {
            "gpt-4o-mini": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6, "cached_input_usd_per_1m": 0.075},
            "claude-sonnet-4-5": {"input_usd_per_1m": 3, "output_usd_per_1m": 15, "cached_input_usd_per_1m": 0.3},
            "mistral-small-latest": {"input_usd_per_1m": 0.1, "output_usd_per_1m": 0.3},
            "mistral-embed": {"input_usd_per_1m": 0.1}
        },
        "categories": [
            {"name": "extraction", "when": {"any": [{"model": {"glob": "extract-*"}}, {"json_mode": true}]},
             "candidates": [{"upstream": "openai", "model": "gpt-4o-mini"}]},
            {"name": "fraud-review", "when": {"any": [
                {"header": {"name": "x-team", "equals": "risk"}},
                {"text": {"in": "last_user", "keywords": ["chargeback", "fraud", "stolen card", "dispute"]}}]},
             "candidates": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}, {"upstream": "openai", "model": "gpt-4o-mini"}]},
            {"name": "code", "when": {"text": {"in": "system", "matches": "(?i)\\b(rust|python|typescript)\\b.*\\bcode\\b"}},
             "candidates": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}]},
            {"name": "embeddings", "when": {"path": {"prefix": "/v1/embeddings"}},
             "candidates": [{"upstream": "mistral", "model": "mistral-embed"}]},
            {"name": "long-context", "when": {"tokens": {"min": 100000}},
             "candidates": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}]},
            {"name": "general", "candidates": [{"upstream": "mistral", "model": "mistral-small-latest"}]}
        ],
        "default_category": "general"
    });
    match from_value(config) {
        Ok(config) => config,
        Err(e) => unreachable_config(&e.to_string()),
    }
}

#[allow(clippy::panic)]
fn unreachable_config(message: &str) -> ! {
    panic!("benchmark config is invalid: {message}")
}

/// The request headers of the harness benchmarks' chat completion (`POST /v1/chat/completions`,
/// JSON).
pub const REQUEST_HEADERS: [(&str, &str); 5] = [
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    (":authority", "llm.internal"),
    (":scheme", "http"),
    ("content-type", "application/json"),
];

/// The non-streaming answer of the harness benchmarks, with usage.
pub const CHAT_ANSWER: &[u8] = br#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":512,"completion_tokens":12,"total_tokens":524}}"#;

/// A chat request of about `size` bytes: a system prompt and a user message padded with prose, so
/// that every rule (including the regex and keyword ones) reads the whole text and none matches.
pub fn chat_body(size: usize) -> Vec<u8> {
    let filler = "The quarterly report lists revenue by region and the notes explain each figure. ";
    let mut text = String::new();
    while text.len() + 200 < size {
        text.push_str(filler);
    }
    serde_json::to_vec(&json!({
        "model": "auto",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You summarise business documents."},
            {"role": "user", "content": text}
        ]
    }))
    .unwrap_or_default()
}

/// A streamed chat answer of `chunks` content chunks, the usage chunk and `[DONE]`, with
/// `"usage":null` in each chunk as providers send when usage was asked for.
pub fn sse_stream(chunks: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..chunks {
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":812,\"completion_tokens\":64,\"total_tokens\":876}}\n\n");
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}
