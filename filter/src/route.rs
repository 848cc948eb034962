//! The routing decision for one request: category, candidate, and the rewritten request.
//!
//! `decide` takes plain data (the request path, its headers, the client's category hint and the
//! body bytes) and returns either a `Decision` the host glue applies as it is, or a `Refusal` the
//! glue sends back as an OpenAI-style error. Nothing here calls the host. The body is rewritten by
//! splicing the new model name over the old value's bytes: every other byte stays the client's.

use std::ops::Range;

use crate::config::{Candidate, Config};
use crate::headers::Headers;
use crate::request::{self, Endpoint, Facts, IncludeUsage, Target};
use crate::text::json_string;

/// What to do with an inspected request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub category: usize,
    pub candidate: Candidate,
    /// The category's candidates to try, in order, as indexes into its `candidates` (the first is
    /// `candidate`); cooling candidates are left out. Without failover, only `candidate`.
    pub plan: Vec<usize>,
    /// The body to send upstream, when it differs from the client's.
    pub body: Option<Vec<u8>>,
    /// The `:path` to send upstream, when it differs from the client's.
    pub path: Option<String>,
    /// The client asked for a streamed answer.
    pub stream: bool,
    /// How the streamed answer's usage chunk is to be treated.
    pub usage_chunk: UsageChunk,
}

/// What happens to the usage chunk of a streamed chat or completions answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageChunk {
    /// Not a stream, or an endpoint whose stream always carries usage (Responses API).
    NotApplicable,
    /// The client asked for it: it is passed on, with the cost added.
    ClientAsked,
    /// switchyard asked for it on the client's behalf: it is read, then removed from the stream.
    Injected,
    /// The request's `stream_options` could not be edited: the answer may carry no usage.
    Unavailable,
}

/// A request switchyard answers itself, with an OpenAI-style error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u32,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// OpenAI's `error.code`, and switchyard's `x-switchyard-error` header.
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn invalid_request(code: &'static str, message: String) -> Self {
        Refusal { status: 400, kind: "invalid_request_error", code, message, retry_after: None }
    }

    pub fn too_large(limit: usize) -> Self {
        Refusal {
            status: 413,
            kind: "invalid_request_error",
            code: "request_too_large",
            message: format!("request body is larger than switchyard's limit of {limit} bytes"),
            retry_after: None,
        }
    }

    /// Every candidate of the category is cooling down after a rate limit; the soonest is free
    /// again in `wait_ms`.
    pub fn all_cooling(category: &str, wait_ms: u64) -> Self {
        let secs = wait_ms.div_ceil(1000).max(1);
        Refusal {
            status: 429,
            kind: "rate_limit_error",
            code: "all_candidates_cooling",
            message: format!("every provider for category `{category}` is rate-limited; retry after {secs} seconds"),
            retry_after: Some(secs),
        }
    }

    /// The JSON error body, in the shape OpenAI's SDKs parse.
    pub fn body(&self) -> String {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
        .to_string()
    }
}

/// Until when (Unix ms) a candidate is cooling down, if it is.
pub type Cooling<'c> = &'c dyn Fn(Candidate) -> Option<u64>;

/// Nothing is cooling: for callers without shared state.
pub fn never_cooling(_: Candidate) -> Option<u64> {
    None
}

/// Picks the category and candidate for a request and rewrites it for that candidate.
/// `cooling` tells which candidates to leave out, `now_ms` being the current Unix time.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    config: &Config,
    path: &str,
    target: &Target<'_>,
    headers: &Headers,
    hint: Option<&str>,
    body: &[u8],
    cooling: Cooling<'_>,
    now_ms: u64,
) -> Result<Decision, Refusal> {
    if body.len() > config.max_request_bytes {
        return Err(Refusal::too_large(config.max_request_bytes));
    }
    let parsed = request::parse(body).map_err(|e| Refusal::invalid_request(e.code(), e.to_string()))?;

    let category = match hint {
        Some(name) => config.category_index(name).ok_or_else(|| {
            Refusal::invalid_request(
                "unknown_category",
                format!("x-switchyard-category names no configured category: `{name}`"),
            )
        })?,
        None => classify(config, &Facts::new(path, headers, &parsed)),
    };
    let Some(chain) = config.categories.get(category) else {
        return Err(Refusal {
            status: 500,
            kind: "server_error",
            code: "no_candidate",
            message: "switchyard has no candidate for this category".to_owned(),
            retry_after: None,
        });
    };
    // Without failover only the first free candidate is ever tried: the others' cooldowns (a
    // shared-data read each) are only looked up when every candidate before them is cooling.
    let whole_plan = config.failover.is_some();
    let mut soonest = u64::MAX;
    let mut plan: Vec<usize> = Vec::with_capacity(chain.candidates.len());
    for (i, candidate) in chain.candidates.iter().enumerate() {
        match cooling(*candidate) {
            Some(until) if until > now_ms => soonest = soonest.min(until),
            _ => {
                plan.push(i);
                if !whole_plan {
                    break;
                }
            }
        }
    }
    let Some(&candidate) = plan.first().and_then(|&i| chain.candidates.get(i)) else {
        return Err(Refusal::all_cooling(&chain.name, soonest.saturating_sub(now_ms)));
    };
    let provider_model = config.models.get(candidate.model).map_or("", |m| m.provider_model.as_str());
    let mut edits = Vec::new();
    if parsed.model.value != provider_model {
        edits.push(Edit { span: parsed.model.span.clone(), text: json_string(provider_model) });
    }
    let usage_chunk = if !parsed.stream || !matches!(target.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
    {
        UsageChunk::NotApplicable
    } else {
        match usage_edit(&parsed.include_usage) {
            UsageEdit::AlreadyOn => UsageChunk::ClientAsked,
            UsageEdit::Edit(edit) => {
                edits.push(edit);
                UsageChunk::Injected
            }
            UsageEdit::Insert => {
                // Right after the top-level `{`; the object is not empty (it has `model`).
                let open = body.iter().position(|b| *b == b'{').unwrap_or(0);
                edits.push(Edit {
                    span: open + 1..open + 1,
                    text: r#""stream_options":{"include_usage":true},"#.to_owned(),
                });
                UsageChunk::Injected
            }
            UsageEdit::Impossible => UsageChunk::Unavailable,
        }
    };
    let body = (!edits.is_empty()).then(|| apply_edits(body, edits));
    let path = upstream_path(config, candidate, path, target);
    Ok(Decision { category, candidate, plan, body, path, stream: parsed.stream, usage_chunk })
}

/// One replacement of a byte range of the body.
struct Edit {
    span: Range<usize>,
    text: String,
}

enum UsageEdit {
    AlreadyOn,
    Edit(Edit),
    Insert,
    Impossible,
}

/// The edit that turns `stream_options.include_usage` on.
fn usage_edit(state: &IncludeUsage) -> UsageEdit {
    const FIELD: &str = r#""include_usage":true"#;
    match state {
        IncludeUsage::Requested => UsageEdit::AlreadyOn,
        IncludeUsage::NoOptions { null_span: None } => UsageEdit::Insert,
        IncludeUsage::NoOptions { null_span: Some(span) } => {
            UsageEdit::Edit(Edit { span: span.clone(), text: format!("{{{FIELD}}}") })
        }
        IncludeUsage::MissingIn { open_brace, empty } => {
            let text = if *empty { FIELD.to_owned() } else { format!("{FIELD},") };
            UsageEdit::Edit(Edit { span: open_brace + 1..open_brace + 1, text })
        }
        IncludeUsage::Off { span } => UsageEdit::Edit(Edit { span: span.clone(), text: "true".to_owned() }),
        IncludeUsage::Unusable => UsageEdit::Impossible,
    }
}

/// Applies non-overlapping edits; every byte outside them is copied as is.
fn apply_edits(body: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    edits.sort_by_key(|e| e.span.start);
    let extra: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut at = 0;
    for edit in edits {
        if edit.span.start < at {
            continue; // overlapping edits cannot happen (distinct members); never corrupt the body
        }
        out.extend_from_slice(body.get(at..edit.span.start).unwrap_or_default());
        out.extend_from_slice(edit.text.as_bytes());
        at = edit.span.end;
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    out
}

/// The first category whose rule matches, else the default category.
pub fn classify(config: &Config, facts: &Facts<'_>) -> usize {
    config
        .categories
        .iter()
        .position(|c| c.rule.as_ref().is_some_and(|r| r.matches(facts)))
        .unwrap_or(config.default_category)
}

/// Replaces the bytes in `span` with `model` as a JSON string; everything else is copied as is.
pub fn splice(body: &[u8], span: Range<usize>, model: &str) -> Vec<u8> {
    apply_edits(body, vec![Edit { span, text: json_string(model) }])
}

/// The path to send upstream: the upstream's `base_path` replaces `/v1`, and the configured
/// listener prefix is dropped. `None` when the path stays as the client sent it.
pub fn upstream_path(config: &Config, candidate: Candidate, path: &str, target: &Target<'_>) -> Option<String> {
    let base = config.upstreams.get(candidate.upstream).and_then(|u| u.base_path.as_deref());
    if base.is_none() && config.path_prefix.is_empty() {
        return None;
    }
    let parts = [base.unwrap_or("/v1"), target.endpoint.suffix(), target.query];
    // Compared piece by piece, and joined without the formatting machinery: this runs on every
    // request routed to an upstream with a `base_path`.
    let mut rest = Some(path);
    for part in parts {
        rest = rest.and_then(|r| r.strip_prefix(part));
    }
    if rest == Some("") {
        return None;
    }
    let mut rewritten = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        rewritten.push_str(part);
    }
    Some(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use crate::request::target;
    use serde_json::json;

    fn config() -> Config {
        from_value(json!({
            "allow_category_hint": true,
            "upstreams": {
                "a": {"cluster": "provider_a"},
                "b": {"cluster": "provider_b", "base_path": "/openai/v1"},
                "c": {"cluster": "provider_c"}
            },
            "models": {
                "mini": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6},
                "big": {"provider_model": "big-2025-01", "input_usd_per_1m": 2.5, "output_usd_per_1m": 10},
                "fast": {}
            },
            "categories": [
                {"name": "extraction",
                 "when": {"any": [{"model": {"glob": "extract-*"}}, {"json_mode": true}]},
                 "candidates": [{"upstream": "a", "model": "mini"}]},
                {"name": "fraud",
                 "when": {"all": [
                    {"header": {"name": "x-team", "equals": "risk"}},
                    {"text": {"in": "last_user", "keywords": ["chargeback", "stolen card"]}}]},
                 "candidates": [{"upstream": "b", "model": "big"}, {"upstream": "a", "model": "mini"}]},
                {"name": "long", "when": {"tokens": {"min": 1000}},
                 "candidates": [{"upstream": "b", "model": "big"}]},
                {"name": "batch", "when": {"not": {"any": [{"stream": true}, {"tools": true}, {"user": {"prefix": "human-"}}]}},
                 "candidates": [{"upstream": "c", "model": "fast"}]},
                {"name": "general", "candidates": [{"upstream": "a", "model": "mini"}]}
            ],
            "default_category": "general"
        }))
        .unwrap()
    }

    fn run(headers: &[(&str, &str)], hint: Option<&str>, body: &str) -> Result<(String, Decision), Refusal> {
        let c = config();
        let path = "/v1/chat/completions";
        let t = target("", path).unwrap();
        let headers = Headers::from_pairs(headers);
        decide(&c, path, &t, &headers, hint, body.as_bytes(), &never_cooling, 0)
            .map(|d| (c.categories[d.category].name.clone(), d))
    }

    #[test]
    fn first_matching_category_wins() {
        let (cat, d) = run(&[], None, r#"{"model":"extract-fields","stream":true}"#).unwrap();
        assert_eq!(cat, "extraction");
        assert_eq!(d.body.unwrap(), br#"{"stream_options":{"include_usage":true},"model":"mini","stream":true}"#);
        assert_eq!(d.path, None);

        let body = r#"{"model":"auto","stream":true,"messages":[{"role":"user","content":"Is this a Chargeback?"}]}"#;
        let (cat, d) = run(&[("x-team", "risk")], None, body).unwrap();
        assert_eq!(cat, "fraud");
        assert_eq!(d.path.as_deref(), Some("/openai/v1/chat/completions"));
        let sent = String::from_utf8(d.body.unwrap()).unwrap();
        let want = body.replace(r#""auto""#, r#""big-2025-01""#).replacen(
            '{',
            r#"{"stream_options":{"include_usage":true},"#,
            1,
        );
        assert_eq!(sent, want);

        let (cat, _) = run(&[("x-team", "ops")], None, body).unwrap();
        assert_eq!(cat, "general", "header mismatch falls through; stream rules out batch");

        let long = format!(
            r#"{{"model":"auto","stream":true,"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(4000)
        );
        assert_eq!(run(&[], None, &long).unwrap().0, "long");

        assert_eq!(run(&[], None, r#"{"model":"auto"}"#).unwrap().0, "batch");
        assert_eq!(run(&[], None, r#"{"model":"auto","user":"human-7"}"#).unwrap().0, "general");
        assert_eq!(
            run(&[], None, r#"{"model":"gpt-4o","response_format":{"type":"json_object"}}"#).unwrap().0,
            "extraction"
        );
    }

    #[test]
    fn hint_picks_category_when_given() {
        let (cat, _) = run(&[], Some("fraud"), r#"{"model":"extract-x"}"#).unwrap();
        assert_eq!(cat, "fraud");
        let err = run(&[], Some("nope"), r#"{"model":"x"}"#).unwrap_err();
        assert_eq!((err.status, err.code), (400, "unknown_category"));
    }

    #[test]
    fn unchanged_model_leaves_body_alone() {
        let (_, d) = run(&[], None, r#"{"model":"mini","user":"human-1"}"#).unwrap();
        assert_eq!(d.body, None);
    }

    #[test]
    fn bad_bodies_are_refused_with_400() {
        for (body, code) in [
            ("not json", "invalid_json"),
            ("", "empty_body"),
            (r#"{"messages":[]}"#, "missing_model"),
            (r#"{"model":["a"]}"#, "invalid_model"),
        ] {
            let err = run(&[], None, body).unwrap_err();
            assert_eq!((err.status, err.code), (400, code), "{body}");
            let parsed: serde_json::Value = serde_json::from_str(&err.body()).unwrap();
            assert_eq!(parsed["error"]["type"], "invalid_request_error");
            assert_eq!(parsed["error"]["code"], code);
        }
    }

    #[test]
    fn oversized_body_is_refused_with_413() {
        let mut c = config();
        c.max_request_bytes = 10;
        let t = target("", "/v1/chat/completions").unwrap();
        let err = decide(
            &c,
            "/v1/chat/completions",
            &t,
            &Headers::default(),
            None,
            br#"{"model":"abcdefgh"}"#,
            &never_cooling,
            0,
        )
        .unwrap_err();
        assert_eq!((err.status, err.code), (413, "request_too_large"));
    }

    #[test]
    fn splice_is_byte_exact() {
        let cases: &[(&str, &str)] = &[
            (r#"{"model":"a"}"#, r#"{"model":"NEW"}"#),
            ("{\n  \"model\" :\t\"a\" ,\n  \"z\": 1\n}", "{\n  \"model\" :\t\"NEW\" ,\n  \"z\": 1\n}"),
            (
                r#"{"messages":[{"role":"user","content":"{\"model\":\"x\"}","model":"inner"}],"model":"a\u00e9\"b","temperature":0.70}"#,
                r#"{"messages":[{"role":"user","content":"{\"model\":\"x\"}","model":"inner"}],"model":"NEW","temperature":0.70}"#,
            ),
            (
                r#"{"tools":[{"function":{"parameters":{"model":{"type":"string"}}}}],"model":"\ud83d\ude82","n":1e2}"#,
                r#"{"tools":[{"function":{"parameters":{"model":{"type":"string"}}}}],"model":"NEW","n":1e2}"#,
            ),
        ];
        for (input, want) in cases {
            let parsed = request::parse(input.as_bytes()).unwrap();
            let out = splice(input.as_bytes(), parsed.model.span, "NEW");
            assert_eq!(std::str::from_utf8(&out).unwrap(), *want);
        }
    }

    #[test]
    fn splice_escapes_the_new_model() {
        let input = br#"{"model":"a"}"#;
        let out = splice(input, 9..12, "we\"ird\\name\u{1}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "we\"ird\\name\u{1}");
    }

    fn streamed(body: &str) -> (UsageChunk, String) {
        let (_, d) = run(&[], Some("general"), body).unwrap();
        (d.usage_chunk, d.body.map(|b| String::from_utf8(b).unwrap()).unwrap_or_else(|| body.to_owned()))
    }

    #[test]
    fn streaming_requests_ask_for_usage() {
        let cases = [
            (
                r#"{"model":"x","stream":true}"#,
                r#"{"stream_options":{"include_usage":true},"model":"mini","stream":true}"#,
                UsageChunk::Injected,
            ),
            (
                r#"{"model":"x","stream":true,"stream_options":null}"#,
                r#"{"model":"mini","stream":true,"stream_options":{"include_usage":true}}"#,
                UsageChunk::Injected,
            ),
            (
                r#"{"model":"x","stream":true,"stream_options":{ }}"#,
                r#"{"model":"mini","stream":true,"stream_options":{"include_usage":true }}"#,
                UsageChunk::Injected,
            ),
            (
                r#"{"model":"x","stream":true,"stream_options":{"a":1}}"#,
                r#"{"model":"mini","stream":true,"stream_options":{"include_usage":true,"a":1}}"#,
                UsageChunk::Injected,
            ),
            (
                r#"{"model":"x","stream":true,"stream_options":{"include_usage": false}}"#,
                r#"{"model":"mini","stream":true,"stream_options":{"include_usage": true}}"#,
                UsageChunk::Injected,
            ),
            (
                r#"{"model":"x","stream":true,"stream_options":{"include_usage":true}}"#,
                r#"{"model":"mini","stream":true,"stream_options":{"include_usage":true}}"#,
                UsageChunk::ClientAsked,
            ),
            (
                r#"{"model":"x","stream":true,"stream_options":"bad"}"#,
                r#"{"model":"mini","stream":true,"stream_options":"bad"}"#,
                UsageChunk::Unavailable,
            ),
            (r#"{"model":"x","stream":false}"#, r#"{"model":"mini","stream":false}"#, UsageChunk::NotApplicable),
        ];
        for (input, want, chunk) in cases {
            let (got_chunk, got) = streamed(input);
            assert_eq!(got, want, "{input}");
            assert_eq!(got_chunk, chunk, "{input}");
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(v["model"], "mini");
        }
    }

    #[test]
    fn responses_streams_are_left_alone() {
        let c = config();
        let t = target("", "/v1/responses").unwrap();
        let d = decide(
            &c,
            "/v1/responses",
            &t,
            &Headers::default(),
            Some("general"),
            br#"{"model":"mini","stream":true}"#,
            &never_cooling,
            0,
        )
        .unwrap();
        assert_eq!((d.body, d.usage_chunk, d.stream), (None, UsageChunk::NotApplicable, true));
    }

    #[test]
    fn cooling_candidates_are_left_out_of_the_plan() {
        let c = config();
        let t = target("", "/v1/chat/completions").unwrap();
        let body = br#"{"model":"auto","messages":[{"role":"user","content":"chargeback"}]}"#;
        let headers = Headers::from_pairs(&[("x-team", "risk")]);
        let run = |cooling: Cooling<'_>| decide(&c, "/v1/chat/completions", &t, &headers, None, body, cooling, 1000);
        // Without failover the plan is the first free candidate; the later ones are not looked up.
        let lookups = std::cell::Cell::new(0);
        let counted = |_: Candidate| {
            lookups.set(lookups.get() + 1);
            None
        };
        let d = run(&counted).unwrap();
        assert_eq!((d.plan.clone(), d.candidate, lookups.get()), (vec![0], c.categories[1].candidates[0], 1));
        let first = c.categories[1].candidates[0];
        let d = run(&|cand| (cand == first).then_some(5000)).unwrap();
        assert_eq!((d.plan.clone(), d.candidate), (vec![1], c.categories[1].candidates[1]));
        assert!(String::from_utf8(d.body.unwrap()).unwrap().contains(r#""model":"mini""#));
        // A cooldown that has ended does not count.
        assert_eq!(run(&|_| Some(1000)).unwrap().plan, vec![0]);
        // With failover the plan lists every free candidate, in order.
        let mut with_failover = config();
        with_failover.failover = from_value(json!({
            "upstreams": {"u": {"cluster": "c"}}, "models": {"m": {}},
            "categories": [{"name": "x", "candidates": [{"upstream": "u", "model": "m"}]}],
            "default_category": "x", "failover": {}
        }))
        .unwrap()
        .failover;
        let whole = |cooling: Cooling<'_>| {
            decide(&with_failover, "/v1/chat/completions", &t, &headers, None, body, cooling, 1000).unwrap().plan
        };
        assert_eq!(whole(&never_cooling), vec![0, 1]);
        assert_eq!(whole(&|cand| (cand == first).then_some(5000)), vec![1]);
        // All cooling: 429, Retry-After rounded up to the soonest end.
        let err = run(&|cand| Some(if cand == first { 9000 } else { 3500 })).unwrap_err();
        assert_eq!((err.status, err.code, err.retry_after), (429, "all_candidates_cooling", Some(3)));
        let json: serde_json::Value = serde_json::from_str(&err.body()).unwrap();
        assert_eq!(json["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn upstream_path_is_none_only_when_nothing_changes() {
        let mut c = config();
        let index = |name: &str| c.upstreams.iter().position(|u| u.name == name).unwrap();
        let (a, b) = (index("a"), index("b"));
        let at = |upstream| Candidate { upstream, model: 0 };
        let path = "/v1/embeddings?api-version=2";
        let t = target("", path).unwrap();
        assert_eq!(upstream_path(&c, at(a), path, &t), None);
        assert_eq!(upstream_path(&c, at(b), path, &t).as_deref(), Some("/openai/v1/embeddings?api-version=2"));
        // A base path that is the default: the same path, no rewrite.
        c.upstreams[b].base_path = Some("/v1".into());
        assert_eq!(upstream_path(&c, at(b), path, &t), None);
        // With a listener prefix every path changes, the query kept.
        c.path_prefix = "/llm".into();
        let path = "/llm/v1/embeddings?api-version=2";
        let t = target("/llm", path).unwrap();
        assert_eq!(upstream_path(&c, at(b), path, &t).as_deref(), Some("/v1/embeddings?api-version=2"));
        assert_eq!(upstream_path(&c, at(a), path, &t).as_deref(), Some("/v1/embeddings?api-version=2"));
    }

    #[test]
    fn prefix_is_dropped_upstream() {
        let mut c = config();
        c.path_prefix = "/llm".into();
        let path = "/llm/v1/chat/completions?x=1";
        let t = target("/llm", path).unwrap();
        let d = decide(&c, path, &t, &Headers::default(), None, br#"{"model":"other"}"#, &never_cooling, 0).unwrap();
        assert_eq!(d.path.as_deref(), Some("/v1/chat/completions?x=1"));
    }
}
