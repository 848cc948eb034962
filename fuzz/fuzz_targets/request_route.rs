//! Request parser + classifier + model splice: arbitrary bytes as a request body through
//! `route::decide`, with the endpoint, category hint, headers and cooling candidates derived from
//! the input. A rewritten body must be valid JSON equal to the input except `model` (and
//! `stream_options.include_usage` when switchyard asked for usage), with every other byte as sent.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use switchyard::config::{self, Candidate, Config};
use switchyard::headers::Headers;
use switchyard::request::{self, Endpoint, IncludeUsage};
use switchyard::route::{self, UsageChunk};
use switchyard_fuzz::{is_json, Dice, Json};

/// Categories with every kind of rule; one provider model needs escaping when spliced in.
fn rules() -> serde_json::Value {
    json!([
        {"name": "extraction",
         "when": {"any": [{"model": {"glob": "extract-*"}}, {"json_mode": true}]},
         "candidates": [{"upstream": "openai", "model": "mini"}]},
        {"name": "fraud",
         "when": {"any": [
            {"header": {"name": "x-team", "equals": "risk"}},
            {"text": {"in": "last_user", "keywords": ["chargeback", "stolen card", "Fraud"]}},
            {"text": {"in": "system", "matches": "(?i)\\bfraud(ster)?s?\\b"}}]},
         "candidates": [{"upstream": "anthropic", "model": "sonnet"}, {"upstream": "openai", "model": "mini"}]},
        {"name": "agents",
         "when": {"all": [{"tools": true}, {"not": {"user": {"prefix": "batch-"}}}]},
         "candidates": [{"upstream": "openai", "model": "big"}, {"upstream": "anthropic", "model": "sonnet"}]},
        {"name": "embeddings", "when": {"path": {"glob": "*/embeddings"}},
         "candidates": [{"upstream": "mistral", "model": "embed"}]},
        {"name": "long", "when": {"tokens": {"min": 300}},
         "candidates": [{"upstream": "anthropic", "model": "sonnet"}, {"upstream": "openai", "model": "big"}]},
        {"name": "teams", "when": {"any": [
            {"metadata": {"key": "team", "one_of": ["ops", "sre"]}},
            {"header": {"name": "x-tier", "matches": "^(gold|platinum)$"}},
            {"model": {"matches": "^gpt-4[o.]"}},
            {"text": {"in": "all", "matches": "\\d{4}-\\d{4}-\\d{4}", "case_sensitive": true}}]},
         "candidates": [{"upstream": "self", "model": "odd"}, {"upstream": "openai", "model": "mini"}]},
        {"name": "short", "when": {"all": [{"stream": true}, {"tokens": {"max": 20}}]},
         "candidates": [{"upstream": "mistral", "model": "small"}]},
        {"name": "general",
         "candidates": [{"upstream": "mistral", "model": "small"}, {"upstream": "openai", "model": "mini"},
                        {"upstream": "self", "model": "odd"}]}
    ])
}

fn models() -> serde_json::Value {
    json!({
        "mini": {"provider_model": "gpt-4o-mini", "input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6},
        "big": {"provider_model": "gpt-4o", "input_usd_per_1m": 2.5, "output_usd_per_1m": 10},
        "sonnet": {"provider_model": "claude-sonnet-4-5", "input_usd_per_1m": 3, "output_usd_per_1m": 15},
        "small": {"provider_model": "mistral-small-latest"},
        "embed": {"provider_model": "mistral-embed", "input_usd_per_1m": 0.1},
        "odd": {"provider_model": "we\"ird\\/name é 🚂 \u{1}"}
    })
}

static PLAIN: LazyLock<Config> = LazyLock::new(|| {
    config::from_value(json!({
        "allow_category_hint": true,
        "upstreams": {
            "openai": {"cluster": "openai"},
            "anthropic": {"cluster": "anthropic", "base_path": "/api/v1"},
            "mistral": {"cluster": "mistral"},
            "self": {"cluster": "self", "base_path": "/v1beta/openai/"}
        },
        "models": models(),
        "categories": rules(),
        "default_category": "general"
    }))
    .expect("the fuzz config loads")
});

/// A listener prefix, failover, and a small body limit.
static PREFIXED: LazyLock<Config> = LazyLock::new(|| {
    config::from_value(json!({
        "allow_category_hint": true,
        "path_prefix": "/llm/",
        "max_request_bytes": 2000,
        "failover": {"statuses": [429, 503], "cooldown_min_ms": 50},
        "upstreams": {
            "openai": {"cluster": "openai"},
            "anthropic": {"cluster": "anthropic"},
            "mistral": {"cluster": "mistral", "base_path": "/v1"},
            "self": {"cluster": "self"}
        },
        "models": models(),
        "categories": rules(),
        "default_category": "general"
    }))
    .expect("the fuzz config loads")
});

const NOW_MS: u64 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let mut dice = Dice::new(data);
    let config: &Config = if dice.below(3) == 0 { &PREFIXED } else { &PLAIN };
    let endpoint = match dice.below(6) {
        0..=2 => Endpoint::ChatCompletions,
        3 => Endpoint::Completions,
        4 => Endpoint::Responses,
        _ => Endpoint::Embeddings,
    };
    let query = if dice.below(4) == 0 { "?api-version=2024-10-21" } else { "" };
    let path = format!("{}/v1{}{query}", config.path_prefix, endpoint.suffix());
    let target = request::target(&config.path_prefix, &path).expect("a well-formed path is recognised");
    assert_eq!((target.endpoint, target.query), (endpoint, query));

    let names = config.categories.len() as u64;
    let pick = dice.below(names * 2 + 1);
    let hint = match pick {
        n if n < names => config.categories.get(n as usize).map(|c| c.name.as_str()),
        n if n == names => Some("no-such-category"),
        _ => None,
    };
    let mut headers = Vec::new();
    if dice.below(3) == 0 {
        headers.push(("x-team".to_owned(), if dice.below(2) == 0 { "risk" } else { "ops" }.to_owned()));
    }
    if dice.below(3) == 0 {
        headers.push(("x-tier".to_owned(), if dice.below(2) == 0 { "gold" } else { "tin" }.to_owned()));
    }
    // Candidates cooling down: some until later, some whose cooldown has already ended.
    let cooling_mask = if dice.below(2) == 0 { 0 } else { dice.roll() };
    let ended_mask = dice.roll();
    let cooling = |c: Candidate| -> Option<u64> {
        let bit = 1u64 << ((c.upstream * 8 + c.model) % 64);
        if cooling_mask & bit == 0 {
            None
        } else if ended_mask & bit == 0 {
            Some(NOW_MS + 1 + (bit % 97_000))
        } else {
            Some(NOW_MS - 1)
        }
    };
    let is_cooling = |c: Candidate| cooling(c).is_some_and(|until| until > NOW_MS);

    let headers = Headers::from_pairs(&headers);
    let outcome = route::decide(config, &path, &target, &headers, hint, data, &cooling, NOW_MS);
    let parsed = request::parse(data);
    match outcome {
        Err(refusal) => {
            assert!(is_json(refusal.body().as_bytes()), "refusal body is JSON: {refusal:?}");
            match refusal.status {
                413 => assert!(data.len() > config.max_request_bytes),
                400 => assert!(
                    parsed.is_err() || hint.is_some_and(|h| config.category_index(h).is_none()),
                    "400 for a usable body: {refusal:?}"
                ),
                429 => {
                    assert!(refusal.retry_after.is_some_and(|s| s >= 1));
                    assert!(parsed.is_ok());
                }
                status => panic!("unexpected status {status}: {refusal:?}"),
            }
        }
        Ok(decision) => {
            assert!(data.len() <= config.max_request_bytes);
            let parsed = parsed.expect("a routed body parses");
            let category = config.categories.get(decision.category).expect("category index is valid");
            if let Some(hint) = hint {
                assert_eq!(config.category_index(hint), Some(decision.category), "the hint picks the category");
            }
            // The plan: every candidate not cooling, in the category's order (without failover, only
            // the first of them: no other is ever tried); the first is the pick.
            let free = category.candidates.iter().enumerate().filter(|(_, c)| !is_cooling(**c)).map(|(i, _)| i);
            let want: Vec<usize> = if config.failover.is_some() { free.collect() } else { free.take(1).collect() };
            assert_eq!(decision.plan, want);
            assert_eq!(category.candidates.get(decision.plan[0]), Some(&decision.candidate));
            let encoded = switchyard::plan::encode(decision.category, &decision.plan);
            assert_eq!(switchyard::plan::decode(&encoded), Some((decision.category, decision.plan.clone())));

            assert_eq!(decision.stream, parsed.stream);
            let streams_usage =
                decision.stream && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
            let want_chunk = match (&parsed.include_usage, streams_usage) {
                (_, false) => UsageChunk::NotApplicable,
                (IncludeUsage::Requested, true) => UsageChunk::ClientAsked,
                (IncludeUsage::Unusable, true) => UsageChunk::Unavailable,
                (_, true) => UsageChunk::Injected,
            };
            assert_eq!(decision.usage_chunk, want_chunk);

            let upstream = config.upstreams.get(decision.candidate.upstream).expect("upstream index is valid");
            if let Some(p) = &decision.path {
                let base = upstream.base_path.as_deref().unwrap_or("/v1");
                assert_eq!(*p, format!("{base}{}{query}", endpoint.suffix()));
            } else {
                assert!(upstream.base_path.as_deref().is_none_or(|b| b == "/v1") && config.path_prefix.is_empty());
            }

            let provider = &config.models.get(decision.candidate.model).expect("model index is valid").provider_model;
            check_body(data, &parsed, provider, decision.usage_chunk, decision.body.as_deref());
        }
    }
});

/// The body sent upstream: the client's bytes with only the model value replaced and, when
/// switchyard asked for usage on the client's behalf, `include_usage` turned on.
fn check_body(input: &[u8], parsed: &request::Body<'_>, provider: &str, chunk: UsageChunk, body: Option<&[u8]>) {
    // The edits, as (span, text), from the spans the parser reported.
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    if parsed.model.value != provider {
        edits.push((parsed.model.span.clone(), serde_json::to_string(provider).expect("a string serializes")));
    }
    if chunk == UsageChunk::Injected {
        const FIELD: &str = r#""include_usage":true"#;
        edits.push(match &parsed.include_usage {
            IncludeUsage::NoOptions { null_span: None } => {
                let open = input.iter().position(|b| *b == b'{').expect("an object has a brace");
                (open + 1..open + 1, format!(r#""stream_options":{{{FIELD}}},"#))
            }
            IncludeUsage::NoOptions { null_span: Some(span) } => {
                assert_eq!(&input[span.clone()], b"null");
                (span.clone(), format!("{{{FIELD}}}"))
            }
            IncludeUsage::MissingIn { open_brace, empty } => {
                assert_eq!(input[*open_brace], b'{');
                (open_brace + 1..open_brace + 1, if *empty { FIELD.to_owned() } else { format!("{FIELD},") })
            }
            IncludeUsage::Off { span } => (span.clone(), "true".to_owned()),
            other => panic!("injected usage with {other:?}"),
        });
    }
    let Some(out) = body else {
        assert!(edits.is_empty(), "the body needed edits but was left alone");
        return;
    };
    assert!(!edits.is_empty(), "the body was rewritten for nothing");
    edits.sort_by_key(|(span, _)| span.start);
    let mut want = Vec::new();
    let mut at = 0;
    for (span, text) in &edits {
        assert!(span.start >= at && span.end <= input.len(), "edits overlap or run past the body");
        want.extend_from_slice(&input[at..span.start]);
        want.extend_from_slice(text.as_bytes());
        at = span.end;
    }
    want.extend_from_slice(&input[at..]);
    assert!(out == want.as_slice(), "bytes outside the edits changed");

    // And as JSON: equal to the input except the edited members, in the same order.
    assert!(is_json(out), "the rewritten body is not JSON");
    let Some(before) = Json::parse(input) else { return };
    let after = Json::parse(out).expect("the rewritten body reads as JSON when the input did");
    let mut expected = before;
    let Json::Object(members) = &mut expected else { panic!("a routed body is an object") };
    for (key, value) in members.iter_mut() {
        if key == "model" {
            *value = Json::Str(provider.to_owned());
        }
    }
    if chunk == UsageChunk::Injected {
        let on = ("include_usage".to_owned(), Json::Bool(true));
        match members.iter_mut().find(|(k, _)| k == "stream_options") {
            None => members.insert(0, ("stream_options".to_owned(), Json::Object(vec![on]))),
            Some((_, value @ Json::Null)) => *value = Json::Object(vec![on]),
            Some((_, Json::Object(options))) => match options.iter_mut().find(|(k, _)| k == "include_usage") {
                Some((_, flag)) => *flag = Json::Bool(true),
                None => options.insert(0, on),
            },
            Some(other) => panic!("injected usage into {other:?}"),
        }
    }
    assert_eq!(after, expected, "the rewritten body differs from the input beyond model and include_usage");
}
