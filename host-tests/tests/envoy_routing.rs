//! Routing by category in a real Envoy 1.40 with switchyard.wasm, against the project's mock
//! providers: the request reaches the category's cluster with only `model` rewritten, everything
//! else passes through untouched, spoofed headers change nothing, bad input gets a clear error,
//! and a bad configuration makes Envoy refuse to start with switchyard's message in its log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchyard_host_tests::envoy::Envoy;
use switchyard_host_tests::scenario::{render, Answer, Scenario};

const CHAT: &str = "/v1/chat/completions";

fn demo() -> Scenario {
    Scenario::start("demo", 3).expect("demo scenario starts")
}

/// The request must have reached `provider` (and only it) with the body the client sent, except
/// `model` replaced by `model`.
fn assert_routed(s: &Scenario, answer: &Answer, sent: &str, provider: &str, category: &str, model: &str) {
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-switchyard-category"), Some(category));
    assert_eq!(answer.header("x-switchyard-model"), Some(model));
    assert_eq!(answer.header("x-switchyard-attempts"), Some("1"));
    assert_eq!(answer.header("x-mock-upstream"), Some(provider), "answered by the wrong provider");
    let upstream = s.provider(provider).unwrap();
    let seen = upstream.last_request().expect("provider saw the request");
    let requested = serde_json::from_str::<serde_json::Value>(sent).unwrap()["model"].as_str().unwrap().to_owned();
    let expected =
        sent.replacen(&serde_json::to_string(&requested).unwrap(), &serde_json::to_string(model).unwrap(), 1);
    assert_eq!(seen.body_text(), expected, "body differs in more than `model`");
    assert_eq!(seen.header("content-length"), Some(expected.len().to_string().as_str()));
    assert_eq!(answer.json().unwrap()["model"], model, "mock echoes the model it was asked for");
}

#[test]
fn categories_reach_their_clusters_with_the_rewritten_model() {
    let s = demo();
    let extraction =
        r#"{"model":"extract-fields","messages":[{"role":"user","content":"Total of invoice 7?"}],"temperature":0}"#;
    let a = s.post(CHAT, &[], extraction.as_bytes()).unwrap();
    assert_routed(&s, &a, extraction, "provider_a", "extraction", "gpt-4o-mini");
    assert_eq!(a.header("x-switchyard-upstream"), Some("openai"));

    // Fraud by keyword, with whitespace, unicode escapes and unknown fields that must survive.
    let fraud = "{\n  \"messages\": [{\"role\": \"user\", \"content\": \"Customer reports a stolen card \\u00e9\"}],\n  \"model\" : \"auto\",\n  \"x-vendor-field\": {\"model\": \"keep-me\"}\n}";
    let a = s.post(CHAT, &[], fraud.as_bytes()).unwrap();
    assert_routed(&s, &a, fraud, "provider_b", "fraud-review", "claude-sonnet-4-5");
    assert_eq!(a.header("x-switchyard-upstream"), Some("anthropic"));

    // Fraud by header.
    let by_header = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    let a = s.post(CHAT, &[("x-team", "risk")], by_header.as_bytes()).unwrap();
    assert_routed(&s, &a, by_header, "provider_b", "fraud-review", "claude-sonnet-4-5");

    let embed = r#"{"input":["a","b"],"model":"text-embedding-3-small"}"#;
    let a = s.post("/v1/embeddings", &[], embed.as_bytes()).unwrap();
    assert_routed(&s, &a, embed, "provider_c", "embeddings", "mistral-embed");
    assert_eq!(a.json().unwrap()["object"], "list");

    let general = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Write a haiku"}]}"#;
    let a = s.post(CHAT, &[], general.as_bytes()).unwrap();
    assert_routed(&s, &a, general, "provider_c", "general", "mistral-small-latest");

    let long =
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "lorem ipsum ".repeat(3000));
    let a = s.post(CHAT, &[], long.as_bytes()).unwrap();
    assert_routed(&s, &a, &long, "provider_b", "long-context", "claude-sonnet-4-5");

    let completions = r#"{"model":"extract-sku","prompt":"SKU of item?"}"#;
    let a = s.post("/v1/completions", &[], completions.as_bytes()).unwrap();
    assert_routed(&s, &a, completions, "provider_a", "extraction", "gpt-4o-mini");

    let responses = r#"{"model":"o-auto","input":"Is this chargeback legit?"}"#;
    let a = s.post("/v1/responses", &[], responses.as_bytes()).unwrap();
    assert_routed(&s, &a, responses, "provider_b", "fraud-review", "claude-sonnet-4-5");
}

#[test]
fn streaming_request_is_routed_and_streams_back() {
    let s = demo();
    let body = r#"{"model":"extract-fields","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let a = s.post(CHAT, &[], body.as_bytes()).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-switchyard-category"), Some("extraction"));
    assert!(a.header("content-type").unwrap().starts_with("text/event-stream"));
    let text = a.text();
    assert!(text.contains("chat.completion.chunk") && text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains(r#""model":"gpt-4o-mini""#), "{text}");
}

#[test]
fn other_paths_and_methods_pass_through_byte_identical() {
    let s = demo();
    // Not JSON, and on a path switchyard does not inspect: forwarded as is, not refused.
    let body: Vec<u8> = b"\x00\xffnot json {\"model\":\"x\"}".to_vec();
    let a = s.post("/v1/files", &[("x-custom", "kept")], &body).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert_eq!(seen.path, "/v1/files");
    assert_eq!(seen.body, body);
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(a.header("x-switchyard-category"), None);

    let a = s.get("/v1/chat/completions?limit=2", &[]).unwrap();
    assert_eq!(a.status, 200);
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/v1/chat/completions?limit=2"));

    let a = s.get("/v1/models", &[]).unwrap();
    assert_eq!(a.json().unwrap()["path"], "/v1/models");
}

#[test]
fn spoofed_switchyard_headers_do_not_steer_or_leak() {
    let s = demo();
    let spoof = [
        ("x-switchyard-cluster", "provider_c"),
        ("x-switchyard-category", "fraud-review"),
        ("x-switchyard-cost-usd", "0"),
    ];
    let body = r#"{"model":"extract-fields","messages":[{"role":"user","content":"hi"}]}"#;
    let a = s.post(CHAT, &spoof, body.as_bytes()).unwrap();
    assert_routed(&s, &a, body, "provider_a", "extraction", "gpt-4o-mini");
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert_eq!(seen.header("x-switchyard-cluster"), Some("provider_a"));
    assert_eq!(seen.header("x-switchyard-category"), None);
    assert_eq!(seen.header("x-switchyard-cost-usd"), None);

    // On a pass-through path the spoofed route header is removed too: the default route is used.
    let a = s.post("/v1/files", &spoof, b"{}").unwrap();
    assert_eq!(a.header("x-mock-upstream"), Some("provider_a"));
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert!(seen.headers.iter().all(|(k, _)| !k.starts_with("x-switchyard-")), "{:?}", seen.headers);
    assert_eq!(s.provider("provider_c").unwrap().hits(), 0);
}

#[test]
fn upstream_switchyard_headers_are_stripped() {
    let s = demo();
    let body = r#"{"model":"extract-fields","messages":[{"role":"user","content":"hi"}]}"#;
    let a = s
        .post(
            CHAT,
            &[("x-mock-header", "x-switchyard-cost-usd: 123"), ("x-mock-header", "x-switchyard-category: fake")],
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-switchyard-category"), Some("extraction"));
    // switchyard's own cost replaces the upstream's claim, and only one value is sent.
    let costs: Vec<_> =
        a.headers.iter().filter(|(k, _)| k == "x-switchyard-cost-usd").map(|(_, v)| v.as_str()).collect();
    assert_eq!(costs.len(), 1, "{costs:?}");
    assert_ne!(costs[0], "123");
    // And on a pass-through answer.
    let a = s.post("/v1/files", &[("x-mock-header", "x-switchyard-model: fake")], b"x").unwrap();
    assert_eq!(a.header("x-switchyard-model"), None);
}

fn assert_refused(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.header("x-switchyard-error"), Some(code));
    assert!(a.header("content-type").unwrap().starts_with("application/json"));
    let json = a.json().unwrap();
    assert_eq!(json["error"]["code"], code);
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(!json["error"]["message"].as_str().unwrap().is_empty());
}

#[test]
fn bad_request_bodies_get_clear_errors_and_never_reach_a_provider() {
    let s = demo();
    let cases: &[(&[u8], &str, &str)] = &[
        (b"{\"model\": \"extract-x\", ", "invalid_json", "not valid JSON"),
        (b"[\"model\"]", "invalid_json", "must be a JSON object"),
        (b"{\"model\": \"caf\xe9\"}", "invalid_utf8", "not valid UTF-8"),
        (b"{\"messages\": []}", "missing_model", "no `model` field"),
        (b"{\"model\": 4}", "invalid_model", "`model` must be a string"),
        (b"{\"model\":\"a\",\"model\":\"b\"}", "invalid_json", "duplicate field `model`"),
        (b"", "empty_body", "empty"),
    ];
    for (body, code, words) in cases {
        let a = s.post(CHAT, &[], body).unwrap();
        assert_refused(&a, 400, code);
        let message = a.json().unwrap()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(words), "{message}");
    }
    assert_eq!(s.total_hits(), 0);
}

#[test]
fn oversized_bodies_get_413() {
    // Above switchyard's own limit (4 KiB in this scenario): switchyard's JSON error.
    let s = Scenario::start("json-config", 2).unwrap();
    let big = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(8 * 1024));
    let a = s.post("/llm/v1/chat/completions", &[], big.as_bytes()).unwrap();
    assert_refused(&a, 413, "request_too_large");
    assert!(a.text().contains("4096 bytes"));
    assert_eq!(s.total_hits(), 0);

    // Above Envoy's per-connection buffer limit (1 MiB, the demo's limit too): Envoy answers 413.
    let s = demo();
    let huge = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(2 * 1024 * 1024));
    let a = s.post(CHAT, &[], huge.as_bytes()).unwrap();
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(s.total_hits(), 0);
}

#[test]
fn chunked_request_body_is_read_whole() {
    let s = demo();
    let body = r#"{"model":"extract-fields","messages":[{"role":"user","content":"split across chunks"}]}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", s.envoy.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").unwrap();
    for piece in body.as_bytes().chunks(7) {
        write!(stream, "{:x}\r\n", piece.len()).unwrap();
        stream.write_all(piece).unwrap();
        stream.write_all(b"\r\n").unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-switchyard-category: extraction"), "{response}");
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert_eq!(seen.body_text(), body.replace("extract-fields", "gpt-4o-mini"));
}

/// HTTP header values may carry bytes that are not UTF-8 (obs-text); Envoy passes them on. One in
/// a client's header and one in a provider's answer must neither trap the VM nor lose the request:
/// it is routed, priced and answered, and a header rule reads the other headers as usual.
#[test]
fn header_values_that_are_not_utf8_are_read_without_failing() {
    let s = demo();
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", s.envoy.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-team: risk\r\n\
         x-mock-latin1: caf\u{e9}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(b"x-client-name: Jos\xe9\r\n\r\n").unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("x-switchyard-category: fraud-review"), "{text}");
    assert!(text.contains("x-switchyard-cost-status: ok"), "{text}");
    // The provider's header reaches the client as it sent it.
    let sent_back: &[u8] = b"x-mock-latin1: caf\xe9\r\n";
    assert!(response.windows(sent_back.len()).any(|w| w == sent_back), "{text}");
    let seen = s.provider("provider_b").unwrap().last_request().unwrap();
    assert_eq!(seen.model().as_deref(), Some("claude-sonnet-4-5"));
    let log = s.envoy.log();
    assert!(!log.contains("panicked") && !log.contains("Function: proxy_on"), "{log}");
}

#[test]
fn json_string_config_with_prefix_rewrites_and_hints() {
    let s = Scenario::start("json-config", 2).unwrap();
    let body = r#"{"model":"whatever","messages":[{"role":"user","content":"hi"}]}"#;

    // Default category, under the listener prefix: the prefix is dropped upstream.
    let a = s.post("/llm/v1/chat/completions?trace=1", &[], body.as_bytes()).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-switchyard-category"), Some("bulk"));
    let seen = s.provider("provider_b").unwrap().last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions?trace=1");
    assert_eq!(seen.model().as_deref(), Some("beta-small"));

    // The client hint is honoured here, and goes no further than switchyard.
    let a = s.post("/llm/v1/chat/completions", &[("x-switchyard-category", "premium")], body.as_bytes()).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-switchyard-category"), Some("premium"));
    assert_eq!(a.header("x-switchyard-model"), Some("alpha/large-2025"));
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert_eq!(seen.path, "/openai/v1/chat/completions");
    assert_eq!(seen.header("host"), Some("api.alpha.test"));
    assert_eq!(seen.header("x-switchyard-category"), None);
    assert_eq!(seen.body_text(), body.replace("\"whatever\"", "\"alpha/large-2025\""));

    let a = s.post("/llm/v1/chat/completions", &[("x-switchyard-category", "nope")], body.as_bytes()).unwrap();
    assert_refused(&a, 400, "unknown_category");

    // Without the prefix the path is not inspected and passes through to the default route.
    let a = s.post("/v1/chat/completions", &[], body.as_bytes()).unwrap();
    assert_eq!(a.header("x-switchyard-category"), None);
    assert_eq!(s.provider("provider_b").unwrap().last_request().unwrap().body_text(), body);
}

#[test]
fn invalid_config_makes_envoy_refuse_with_the_filter_message() {
    let yaml = render("demo", &[1, 2, 3]).unwrap();
    let broken =
        yaml.replacen("- { upstream: openai, model: gpt-4o-mini }", "- { upstream: nowhere, model: gpt-4o-mini }", 1);
    assert_ne!(broken, yaml);
    let log = Envoy::start_expect_failure(&broken).unwrap();
    assert!(
        log.contains("categories[0].candidates[0].upstream: unknown upstream `nowhere`"),
        "switchyard's message missing from Envoy's log:\n{log}"
    );

    let typo = yaml.replacen("route_header: x-switchyard-cluster", "route_headr: x-switchyard-cluster", 1);
    let log = Envoy::start_expect_failure(&typo).unwrap();
    assert!(log.contains("route_headr: unknown field `route_headr`"), "{log}");

    let bad_regex = yaml.replacen("keywords: [chargeback, fraud, stolen card]", "matches: \"(unclosed\"", 1);
    let log = Envoy::start_expect_failure(&bad_regex).unwrap();
    assert!(log.contains("categories[1].when.any[1].text.matches: invalid regex"), "{log}");
}

#[test]
fn secrets_in_a_refused_config_are_not_logged_even_at_debug_level() {
    // An operator pastes a provider key where it does not belong: the config is refused and
    // switchyard's own log lines never repeat the key. (Envoy itself dumps every listener's config,
    // plugin configuration included, at debug level: which is why keys belong in Envoy's secrets,
    // never in switchyard's configuration — README, "Deploying to Envoy".)
    let yaml = render("demo", &[1, 2, 3]).unwrap();
    let leaked = yaml.replacen(
        "openai: { cluster: provider_a }",
        "openai: { cluster: provider_a, api_key: sk-live-DO-NOT-LOG-4242 }",
        1,
    );
    assert_ne!(leaked, yaml);
    let options = switchyard_host_tests::envoy::EnvoyOptions { log_level: "debug".to_owned(), ..Default::default() };
    let log = Envoy::start_expect_failure_with(&leaked, options).unwrap();
    assert!(log.contains("upstreams.openai.api_key: unknown field `api_key`"), "{log}");
    let switchyard_lines: Vec<&str> = log.lines().filter(|l| l.contains("wasm log")).collect();
    assert!(!switchyard_lines.is_empty());
    assert!(
        switchyard_lines.iter().all(|l| !l.contains("DO-NOT-LOG-4242")),
        "switchyard logged the key: {switchyard_lines:?}"
    );
    assert!(
        log.contains("DO-NOT-LOG-4242"),
        "Envoy's debug config dump is expected to show it (the README warns of this)"
    );
}

#[test]
fn secrets_in_a_serving_config_and_in_requests_are_not_logged_even_at_debug_level() {
    // A rule that matches on a shared secret (a tenant key in a header), requests that carry it,
    // that match it, that miss it, and a refused one: at debug level, switchyard's own log lines
    // never repeat the key or the client's credentials.
    const SECRET: &str = "tenant-key-DO-NOT-LOG-7171";
    const BEARER: &str = "Bearer sk-client-DO-NOT-LOG-9393";
    let options = switchyard_host_tests::envoy::EnvoyOptions { log_level: "debug".to_owned(), ..Default::default() };
    let s = Scenario::start_edited("demo", 3, options, |yaml| {
        let edited = yaml.replacen(
            "- header: { name: x-team, equals: risk }",
            &format!("- header: {{ name: x-tenant-key, equals: {SECRET} }}"),
            1,
        );
        assert_ne!(edited, yaml);
        edited
    })
    .unwrap();
    let general = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}"#;
    let routed = s.post(CHAT, &[("x-tenant-key", SECRET), ("authorization", BEARER)], general.as_bytes()).unwrap();
    assert_eq!(routed.header("x-switchyard-category"), Some("fraud-review"));
    let missed = s.post(CHAT, &[("x-tenant-key", "wrong"), ("authorization", BEARER)], general.as_bytes()).unwrap();
    assert_eq!(missed.header("x-switchyard-category"), Some("general"));
    let refused = s.post(CHAT, &[("x-tenant-key", SECRET), ("authorization", BEARER)], b"{not json").unwrap();
    assert_eq!(refused.status, 400);
    assert!(s.envoy.wait_for_log("switchyard: refusing request", Duration::from_secs(5)), "{}", s.envoy.log());
    let log = s.envoy.log();
    let switchyard_lines: Vec<&str> = log.lines().filter(|l| l.contains("wasm log")).collect();
    assert!(switchyard_lines.iter().any(|l| l.contains("configuration loaded")), "{switchyard_lines:?}");
    for needle in ["DO-NOT-LOG-7171", "DO-NOT-LOG-9393"] {
        assert!(
            switchyard_lines.iter().all(|l| !l.contains(needle)),
            "switchyard logged {needle}: {switchyard_lines:?}"
        );
    }
}
