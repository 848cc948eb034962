//! Token usage as the upstream reported it, and the cost written back into a streamed answer.
//!
//! OpenAI-format answers carry a `usage` object in two shapes: chat completions, completions and
//! embeddings count `prompt_tokens` / `completion_tokens` (with `prompt_tokens_details.cached_tokens`
//! and `completion_tokens_details.reasoning_tokens`), the Responses API counts `input_tokens` /
//! `output_tokens` (with `input_tokens_details` and `output_tokens_details`). Both are read into one
//! `Usage`, with the numbers as reported: cached tokens stay inside `input` and reasoning tokens
//! inside `output`, as OpenAI counts them, and what that means for the bill is `cost`'s decision.
//! Answers are parsed with serde into borrowed types that name only the fields read, so a large
//! answer is walked once and never copied into a `serde_json::Value`. A count that is negative, not
//! a whole number or not a number makes the whole usage absent: a cost is better missing than
//! guessed. `with_usage_cost` adds `usage.cost` (the convention LiteLLM and OpenRouter follow) to a
//! streamed chunk by splicing bytes, leaving every other byte as the upstream sent it, and never
//! replaces a `cost` the upstream put there itself. When to read usage, which event's usage counts
//! (the last one) and what to do without it are the caller's decisions.

use std::fmt;
use std::marker::PhantomData;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Tokens of one answer, as the upstream reported them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input: u64,
    /// Generated tokens, reasoning ones included.
    pub output: u64,
    /// Prompt tokens read from the provider's cache (part of `input`).
    pub cached_input: u64,
    /// Reasoning tokens (part of `output`).
    pub reasoning: u64,
}

/// Usage of a whole non-streaming answer of /v1/chat/completions, /v1/completions, /v1/embeddings
/// or /v1/responses (the top-level `usage` object).
pub fn from_body(body: &[u8]) -> Option<Usage> {
    // Checked as UTF-8 once (ASCII a word at a time), so that serde_json reads it as a `str` and
    // does not check each key again; a body that is not UTF-8 is read as bytes, as before.
    let usage = match crate::text::utf8(body) {
        Ok(text) => serde_json::from_str::<Object<WithUsage>>(text).ok()?.0.usage,
        Err(_) => serde_json::from_slice::<Object<WithUsage>>(body).ok()?.0.usage,
    };
    usage?.0.read()
}

/// Usage carried by one SSE `data` payload: a chat/completions chunk whose `usage` is a non-null
/// object, or a Responses API terminal event (`response.completed`, `response.incomplete` or
/// `response.failed`) whose `response.usage` is one. Some upstreams report a running total in every
/// chunk; the last one reported is the answer's.
pub fn from_event(data: &str) -> Option<Usage> {
    from_event_noting(data, |_, _| {})
}

/// [`from_event`], also showing `each_member` every `"usage"` key it finds in `data` (where the
/// text `"usage"` starts and where its value starts, as [`usage_values`] gives them): a caller that
/// also looks for a `usage` member needs no second search.
pub fn from_event_noting(data: &str, each_member: impl FnMut(usize, usize)) -> Option<Usage> {
    if !may_hold_usage_object(data, each_member) {
        return None;
    }
    parse_event(data)
}

/// [`from_event`] without the shortcut for chunks that cannot carry usage.
fn parse_event(data: &str) -> Option<Usage> {
    let Object(event) = serde_json::from_str::<Object<StreamEvent<'_>>>(data).ok()?;
    if let Some(Object(usage)) = event.usage {
        return usage.read();
    }
    if event.kind.is_some_and(Kind::is_terminal) {
        return event.response_usage()?.read();
    }
    None
}

/// A searcher for the text `"usage"`, built once (building one costs more than searching a chunk).
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

/// False when no member named `usage` in `data` can have an object for its value, which is most
/// chunks of a stream (`"usage":null`, or no `usage` at all): those need no parse. Without a `\u`
/// escape, a key `usage` is written `"usage"`, and a `"` inside a string is escaped, so every
/// `usage` member whose value is an object shows as `"usage"`, optional whitespace, `:`, optional
/// whitespace, `{`. Texts with a `\u` escape are always parsed. Every candidate the search finds
/// is shown to `each_member`.
fn may_hold_usage_object(data: &str, mut each_member: impl FnMut(usize, usize)) -> bool {
    let bytes = data.as_bytes();
    let mut object = false;
    for (at, value) in usage_values(bytes) {
        object |= bytes.get(value) == Some(&b'{');
        each_member(at, value);
    }
    // Any backslash followed by `u` counts (an escaped backslash before a `u` too): such a text is
    // simply parsed.
    object || memchr::memchr_iter(b'\\', bytes).any(|at| bytes.get(at + 1) == Some(&b'u'))
}

/// Each `"usage"` in `bytes` that is followed by `:` (JSON whitespace around it allowed): where the
/// text `"usage"` starts and where the value after the colon starts. These are candidates, found
/// with a vector search; whether one really is a key of the object the caller means is the
/// caller's to decide.
pub(crate) fn usage_values(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    const KEY_LEN: usize = b"\"usage\"".len();
    USAGE_KEY.find_iter(bytes).filter_map(move |at| {
        let colon = skip_json_space(bytes, at.saturating_add(KEY_LEN));
        (bytes.get(colon) == Some(&b':')).then(|| (at, skip_json_space(bytes, colon.saturating_add(1))))
    })
}

/// JSON whitespace.
pub(crate) fn is_json_space(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// The first index at or after `at` that is not JSON whitespace.
pub(crate) fn skip_json_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(is_json_space) {
        at = at.saturating_add(1);
    }
    at
}

/// True for the extra final chunk `stream_options.include_usage` adds: `choices` is an empty array
/// and `usage` is an object.
pub fn is_usage_only_chunk(data: &str) -> bool {
    let Ok(Object(chunk)) = serde_json::from_str::<Object<ChunkShape<'_>>>(data) else { return false };
    let empty_choices = chunk.choices.is_some_and(|c| {
        c.get().strip_prefix('[').and_then(|c| c.strip_suffix(']')).is_some_and(|inner| trim_json(inner).is_empty())
    });
    empty_choices && chunk.usage.is_some_and(|u| u.get().starts_with('{'))
}

/// `data` with `"cost":<cost_usd>` added as the last member of its `usage` object (the top-level
/// one, or `response.usage` in a Responses API terminal event), every other byte unchanged. `None`
/// when there is no `usage` object, when it already has a `cost` member (the upstream's own cost is
/// never overwritten), or when `cost_usd` is not a plain decimal such as `0.000345`.
pub fn with_usage_cost(data: &str, cost_usd: &str) -> Option<String> {
    if !is_plain_decimal(cost_usd) {
        return None;
    }
    let usage = usage_object(data)?;
    if serde_json::from_str::<Object<CostMember>>(usage.get()).ok()?.0.cost {
        return None;
    }
    let text = usage.get();
    let start = (text.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    // The raw value borrows from `data`; make sure the span really is where it says.
    if data.get(start..start.checked_add(text.len())?) != Some(text) {
        return None;
    }
    // Insert after the last member's value, before any whitespace and the closing brace.
    let members = trim_json(text.strip_suffix('}')?);
    let at = start.checked_add(members.len())?;
    let (before, after) = (data.get(..at)?, data.get(at..)?);
    let comma = if members == "{" { "" } else { "," };
    let mut out = String::with_capacity(data.len().saturating_add(cost_usd.len()).saturating_add(8));
    out.push_str(before);
    out.push_str(comma);
    out.push_str("\"cost\":");
    out.push_str(cost_usd);
    out.push_str(after);
    Some(out)
}

/// The `usage` object of a chunk or terminal Responses event, as borrowed raw JSON.
fn usage_object(data: &str) -> Option<&RawValue> {
    let Object(spans) = serde_json::from_str::<Object<Spans<'_>>>(data).ok()?;
    let usage = match spans.usage {
        Some(usage) => usage,
        None if spans.kind.is_some_and(Kind::is_terminal) => {
            serde_json::from_str::<Object<Spans<'_>>>(spans.response?.get()).ok()?.0.usage?
        }
        None => return None,
    };
    usage.get().starts_with('{').then_some(usage)
}

/// JSON whitespace trimmed from the end.
fn trim_json(text: &str) -> &str {
    text.trim_end_matches([' ', '\t', '\r', '\n'])
}

/// Digits, optionally followed by `.` and digits, with no leading zero: a valid JSON number.
fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && (whole == "0" || !whole.starts_with('0')) && fraction.is_none_or(digits)
}

/// A JSON object read into `T`. serde's derived structs also accept an array of their fields in
/// order; usage that arrives as an array is garbage, not a shorthand, so only objects are read.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Visit(PhantomData)).map(Object)
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Object<RawUsage>>,
}

#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(default)]
    usage: Option<Object<RawUsage>>,
    #[serde(rename = "type", default)]
    kind: Option<Kind>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

impl StreamEvent<'_> {
    fn response_usage(&self) -> Option<RawUsage> {
        Some(serde_json::from_str::<Object<WithUsage>>(self.response?.get()).ok()?.0.usage?.0)
    }
}

/// The Responses API event types that carry the final `response`, with its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Kind {
    #[serde(rename = "response.completed")]
    Completed,
    #[serde(rename = "response.incomplete")]
    Incomplete,
    #[serde(rename = "response.failed")]
    Failed,
    #[serde(other)]
    Other,
}

impl Kind {
    fn is_terminal(self) -> bool {
        matches!(self, Kind::Completed | Kind::Incomplete | Kind::Failed)
    }
}

#[derive(Deserialize)]
struct ChunkShape<'a> {
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Spans<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(rename = "type", default)]
    kind: Option<Kind>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

/// Whether an object has a `cost` member, whatever its value (`null` included).
#[derive(Deserialize)]
struct CostMember {
    #[serde(default, deserialize_with = "present")]
    cost: bool,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// A `usage` object in either shape. Counts are `u64`: a negative, fractional or non-numeric count
/// fails the parse, and with it the whole usage.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Object<Details>>,
    #[serde(default)]
    completion_tokens_details: Option<Object<Details>>,
    #[serde(default)]
    input_tokens_details: Option<Object<Details>>,
    #[serde(default)]
    output_tokens_details: Option<Object<Details>>,
    /// DeepSeek's name for cached prompt tokens.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl RawUsage {
    /// The usage, when it has an input count (every shape has one).
    fn read(self) -> Option<Usage> {
        let input = self.prompt_tokens.or(self.input_tokens)?;
        let output = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        let cached = |d: Option<Object<Details>>| d.and_then(|Object(d)| d.cached_tokens);
        let reasoning = |d: Option<Object<Details>>| d.and_then(|Object(d)| d.reasoning_tokens);
        Some(Usage {
            input,
            output,
            cached_input: cached(self.prompt_tokens_details)
                .or(cached(self.input_tokens_details))
                .or(self.prompt_cache_hit_tokens)
                .unwrap_or(0),
            reasoning: reasoning(self.completion_tokens_details).or(reasoning(self.output_tokens_details)).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "o4-mini-2025-04-16",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "The usage field says \"usage\": {\"prompt_tokens\": 1}.",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 2006,
    "completion_tokens": 1300,
    "total_tokens": 3306,
    "prompt_tokens_details": {
      "cached_tokens": 1920,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 1024,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": null
}"#;

    const COMPLETIONS: &str = r#"{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;

    const EMBEDDINGS: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,-0.0028842222]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;

    const RESPONSES: &str = r#"{"id":"resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41","object":"response","created_at":1741476777,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"o3-2025-04-16","output":[{"type":"reasoning","id":"rs_6820f383d7c08191846711c5df8233bc","summary":[]},{"type":"message","id":"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41","status":"completed","role":"assistant","content":[{"type":"output_text","text":"The image depicts a scenic landscape.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":"medium","summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":128},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":380},"user":null,"metadata":{}}"#;

    const CHUNK_WITH_NULL_USAGE: &str = r#"{"id":"chatcmpl-BqX","object":"chat.completion.chunk","created":1751900000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}],"usage":null}"#;

    const USAGE_CHUNK: &str = r#"{"id":"chatcmpl-BqX","object":"chat.completion.chunk","created":1751900000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#;

    const RESPONSE_COMPLETED: &str = r#"{"type":"response.completed","sequence_number":21,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there! How can I assist you today?","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}"#;

    fn usage(input: u64, output: u64, cached_input: u64, reasoning: u64) -> Option<Usage> {
        Some(Usage { input, output, cached_input, reasoning })
    }

    #[test]
    fn non_streaming_shapes() {
        assert_eq!(from_body(CHAT.as_bytes()), usage(2006, 1300, 1920, 1024));
        assert_eq!(from_body(COMPLETIONS.as_bytes()), usage(5, 7, 0, 0));
        assert_eq!(from_body(EMBEDDINGS.as_bytes()), usage(8, 0, 0, 0));
        assert_eq!(from_body(RESPONSES.as_bytes()), usage(328, 52, 128, 12));
        let deepseek = br#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":100,
            "completion_tokens":20,"total_tokens":120,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}}"#;
        assert_eq!(from_body(deepseek), usage(100, 20, 64, 0));
    }

    #[test]
    fn missing_or_null_usage_is_none() {
        assert_eq!(from_body(br#"{"id":"x","object":"chat.completion","choices":[]}"#), None);
        assert_eq!(from_body(br#"{"id":"x","usage":null}"#), None);
        assert_eq!(from_body(br#"{"usage":{}}"#), None);
        assert_eq!(from_body(br#"{"usage":{"completion_tokens":3}}"#), None);
        let error = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(from_body(error), None);
        assert_eq!(from_body(b""), None);
        assert_eq!(from_body(b"not json"), None);
        assert_eq!(from_body(b"[1,2]"), None);
        assert_eq!(from_body(b"{\"usage\":{\"prompt_tokens\":1}} trailing"), None);
        assert_eq!(from_body(br#"[{"prompt_tokens":1}]"#), None);
        assert_eq!(from_body(br#"[{"prompt_tokens":1,"completion_tokens":2}]"#), None);
    }

    #[test]
    fn missing_and_null_details_are_zero() {
        assert_eq!(from_body(br#"{"usage":{"prompt_tokens":4}}"#), usage(4, 0, 0, 0));
        let body = br#"{"usage":{"prompt_tokens":4,"completion_tokens":2,"prompt_tokens_details":null,
            "completion_tokens_details":{"reasoning_tokens":null}}}"#;
        assert_eq!(from_body(body), usage(4, 2, 0, 0));
        assert_eq!(from_body(br#"{"usage":{"input_tokens":4,"input_tokens_details":{}}}"#), usage(4, 0, 0, 0));
    }

    #[test]
    fn garbage_counts_make_usage_absent() {
        for bad in [
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":10.0,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":1e3,"completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":"10","completion_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":10,"completion_tokens":true}}"#,
            r#"{"usage":{"prompt_tokens":18446744073709551616}}"#,
            r#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":-5}}}"#,
            r#"{"usage":{"prompt_tokens":10,"completion_tokens_details":"none"}}"#,
            r#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":[5]}}"#,
            r#"{"usage":{"prompt_tokens":10,"prompt_tokens":11}}"#,
            r#"{"usage":[10, 2]}"#,
            r#"{"usage":"10"}"#,
        ] {
            assert_eq!(from_body(bad.as_bytes()), None, "{bad}");
            assert_eq!(from_event(bad), None, "{bad}");
        }
        assert_eq!(from_body(br#"{"usage":{"prompt_tokens":18446744073709551615}}"#), usage(u64::MAX, 0, 0, 0));
    }

    #[test]
    fn whitespace_variants() {
        let body = "{ \"usage\" :\n\t{ \"prompt_tokens\" : 3 ,\r\n \"completion_tokens\":4 } }\n";
        assert_eq!(from_body(body.as_bytes()), usage(3, 4, 0, 0));
        assert_eq!(from_event(body), usage(3, 4, 0, 0));
    }

    #[test]
    fn streaming_events() {
        assert_eq!(from_event(CHUNK_WITH_NULL_USAGE), None);
        assert_eq!(from_event(USAGE_CHUNK), usage(19, 10, 0, 0));
        assert_eq!(from_event(RESPONSE_COMPLETED), usage(37, 11, 0, 0));
        assert_eq!(
            from_event(&RESPONSE_COMPLETED.replace("response.completed", "response.incomplete")),
            usage(37, 11, 0, 0)
        );
        // Earlier Responses events carry a response whose usage is not final (or null): not read.
        assert_eq!(from_event(&RESPONSE_COMPLETED.replace("response.completed", "response.in_progress")), None);
        let created = r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","usage":null}}"#;
        assert_eq!(from_event(created), None);
        let delta = r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#;
        assert_eq!(from_event(delta), None);
        assert_eq!(from_event("[DONE]"), None);
        assert_eq!(from_event(""), None);
        // A running total in an ordinary chunk (vLLM's continuous usage stats) is read too.
        let running =
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        assert_eq!(from_event(running), usage(5, 1, 0, 0));
    }

    #[test]
    fn usage_only_chunk_detection() {
        assert!(is_usage_only_chunk(USAGE_CHUNK));
        assert!(is_usage_only_chunk(r#"{"choices": [ ],"usage": {"prompt_tokens":1}}"#));
        assert!(is_usage_only_chunk("{\"choices\":[\n],\"usage\":{}}"));
        assert!(!is_usage_only_chunk(CHUNK_WITH_NULL_USAGE));
        assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":null}"#));
        assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":3}"#));
        assert!(!is_usage_only_chunk(r#"{"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only_chunk(r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only_chunk(r#"{"choices":[[]],"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only_chunk("[DONE]"));
        assert!(!is_usage_only_chunk(r#"[[],{"prompt_tokens":1}]"#));
        assert!(!is_usage_only_chunk(RESPONSE_COMPLETED));
    }

    #[test]
    fn cost_is_added_byte_exactly() {
        let out = with_usage_cost(USAGE_CHUNK, "0.000345").unwrap();
        let want = USAGE_CHUNK
            .replace(r#""rejected_prediction_tokens":0}}}"#, r#""rejected_prediction_tokens":0},"cost":0.000345}}"#);
        assert_eq!(out, want);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["usage"]["cost"], serde_json::json!(0.000345));

        let cases = [
            (r#"{"usage":{"prompt_tokens":1}}"#, r#"{"usage":{"prompt_tokens":1,"cost":0.5}}"#),
            (r#"{"usage":{}}"#, r#"{"usage":{"cost":0.5}}"#),
            ("{\"usage\":{ \n }}", "{\"usage\":{\"cost\":0.5 \n }}"),
            (
                "{ \"usage\" : { \"prompt_tokens\" : 1 ,\n \"x\" : [ ] \n} , \"choices\": [] }",
                "{ \"usage\" : { \"prompt_tokens\" : 1 ,\n \"x\" : [ ],\"cost\":0.5 \n} , \"choices\": [] }",
            ),
            (
                r#"{"choices":[{"delta":{"content":"\"usage\":{}"}}],"usage":{"prompt_tokens":1,"d":{"cost":1}}}"#,
                r#"{"choices":[{"delta":{"content":"\"usage\":{}"}}],"usage":{"prompt_tokens":1,"d":{"cost":1},"cost":0.5}}"#,
            ),
        ];
        for (data, want) in cases {
            assert_eq!(with_usage_cost(data, "0.5").as_deref(), Some(want), "{data}");
        }
    }

    #[test]
    fn cost_goes_into_the_responses_usage() {
        let out = with_usage_cost(RESPONSE_COMPLETED, "0.0000176").unwrap();
        let want = RESPONSE_COMPLETED.replace(r#""total_tokens":48}"#, r#""total_tokens":48,"cost":0.0000176}"#);
        assert_eq!(out, want);
        let created = r#"{"type":"response.created","response":{"usage":{"input_tokens":1}}}"#;
        assert_eq!(with_usage_cost(created, "1"), None);
    }

    #[test]
    fn upstream_cost_is_never_overwritten() {
        for data in [
            r#"{"choices":[],"usage":{"prompt_tokens":1,"cost":0.002}}"#,
            r#"{"choices":[],"usage":{"cost":null,"prompt_tokens":1}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1, "cost" : {"total": 1}}}"#,
        ] {
            assert_eq!(with_usage_cost(data, "0.5"), None, "{data}");
        }
    }

    #[test]
    fn no_usage_object_no_cost() {
        for data in [
            CHUNK_WITH_NULL_USAGE,
            r#"{"choices":[]}"#,
            r#"{"usage":[1]}"#,
            r#"[{"prompt_tokens":1},{"prompt_tokens":1}]"#,
            r#"{"type":"response.completed","response":[{"input_tokens":1}]}"#,
            r#"{"usage":"x"}"#,
            "[DONE]",
            "",
            r#"{"usage":{"prompt_tokens":1}"#,
        ] {
            assert_eq!(with_usage_cost(data, "0.5"), None, "{data}");
        }
    }

    #[test]
    fn cost_must_be_a_plain_decimal() {
        let data = r#"{"usage":{}}"#;
        for good in ["0", "12.5", "0.000000000000001", "340282366920938463463.374607431768211455"] {
            assert!(with_usage_cost(data, good).is_some(), "{good}");
        }
        for bad in ["", ".5", "5.", "-1", "1e-5", "01", "0.5}", "1,2", "NaN", " 1"] {
            assert_eq!(with_usage_cost(data, bad), None, "{bad}");
        }
    }

    #[test]
    fn chunks_skipped_without_a_parse_are_those_without_usage() {
        let samples = [
            r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"{"choices":[],"usage" :	{"prompt_tokens":3,"completion_tokens":4}}"#,
            "{\"choices\":[],\"usage\"\n:\r\n {\"prompt_tokens\":3,\"completion_tokens\":4}}",
            r#"{"choices":[],"\u0075sage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#"{"choices":[{"delta":{"content":"say \"usage\": {\"prompt_tokens\": 9}"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\"usage\":{"}}],"usage":null}"#,
            r#"{"k\"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#"{"object":"usage","usage":null}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":6}}}"#,
            r#"{"type":"response.completed","response":{"usage":null}}"#,
            r#"{"type":"response.output_text.delta","delta":"usage"}"#,
            r#"[DONE]"#,
            "",
        ];
        for data in samples {
            let skipped = !may_hold_usage_object(data, |_, _| {});
            assert_eq!(from_event(data), parse_event(data), "{data}");
            if skipped {
                assert_eq!(parse_event(data), None, "{data} was skipped but holds usage");
            }
        }
        assert!(from_event(samples[1]).is_some() && from_event(samples[2]).is_some());
        assert!(from_event(samples[3]).is_some() && from_event(samples[4]).is_some());
        assert!(from_event(samples[9]).is_some());
        assert!(!may_hold_usage_object(samples[0], |_, _| {}) && !may_hold_usage_object(samples[5], |_, _| {}));
    }
}
