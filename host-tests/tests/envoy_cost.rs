//! Cost, tokens and latency in a real Envoy: response headers on ordinary answers, the final usage
//! chunk on streamed ones, Prometheus counters and the access log — each checked against figures
//! computed here by hand from the demo's price book and the mock's reported usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use serde_json::Value;
use switchyard_host_tests::scenario::Scenario;

const CHAT: &str = "/v1/chat/completions";
const EXTRACT: &str = r#"{"model":"extract-fields","messages":[{"role":"user","content":"Total of invoice 7?"}]}"#;

fn demo() -> Scenario {
    Scenario::start("demo", 3).expect("demo scenario starts")
}

/// USD cost of `input` (of which `cached`) and `output` tokens at gpt-4o-mini's demo prices
/// (0.15 / 0.60 / 0.075 cached, per million), as an exact decimal string.
fn gpt4o_mini_cost(input: u64, cached: u64, output: u64) -> String {
    // In units of 1e-9 USD per million tokens → femto-dollars, then printed exactly.
    let femtos =
        u128::from(input - cached) * 150_000_000 + u128::from(cached) * 75_000_000 + u128::from(output) * 600_000_000;
    let whole = femtos / 1_000_000_000_000_000;
    let frac = femtos % 1_000_000_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:015}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[test]
fn non_streaming_answer_carries_cost_tokens_and_latency_headers() {
    let s = demo();
    let a = s.post(CHAT, &[("x-mock-usage", "1000,500,200,40")], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(gpt4o_mini_cost(1000, 200, 500), "0.000435");
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("0.000435"));
    assert_eq!(a.header("x-switchyard-cost-status"), Some("ok"));
    assert_eq!(a.header("x-switchyard-input-tokens"), Some("1000"));
    assert_eq!(a.header("x-switchyard-output-tokens"), Some("500"));
    assert_eq!(a.header("x-switchyard-cached-input-tokens"), Some("200"));
    assert_eq!(a.header("x-switchyard-reasoning-tokens"), Some("40"));
    let upstream_ms: u64 = a.header("x-switchyard-upstream-ms").unwrap().parse().unwrap();
    let total_ms: u64 = a.header("x-switchyard-total-ms").unwrap().parse().unwrap();
    assert!(total_ms >= upstream_ms);
    // The body is the upstream's, untouched.
    assert_eq!(a.json().unwrap()["usage"]["prompt_tokens"], 1000);

    // The mock's default usage: a quarter of the request body length in, 12 out.
    let a = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    let input = (EXTRACT.len() / 4) as u64;
    assert_eq!(a.header("x-switchyard-input-tokens"), Some(input.to_string().as_str()));
    assert_eq!(a.header("x-switchyard-cost-usd"), Some(gpt4o_mini_cost(input, 0, 12).as_str()));
    assert_eq!(a.header("x-switchyard-cached-input-tokens"), None, "absent when zero");
}

#[test]
fn every_api_shape_is_priced() {
    let s = demo();
    // Embeddings: mistral-embed at 0.10 per million input tokens, no output.
    let a = s.post("/v1/embeddings", &[("x-mock-usage", "2000,0")], br#"{"model":"e","input":"hello"}"#).unwrap();
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("0.0002"), "{:?}", a.headers);
    // Completions and Responses API (its usage has input_tokens/output_tokens).
    let a =
        s.post("/v1/completions", &[("x-mock-usage", "1000,1000")], br#"{"model":"extract-x","prompt":"p"}"#).unwrap();
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("0.00075"));
    let a = s
        .post("/v1/responses", &[("x-mock-usage", "1000,1000,0,300")], br#"{"model":"extract-x","input":"p"}"#)
        .unwrap();
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("0.00075"));
    assert_eq!(a.header("x-switchyard-reasoning-tokens"), Some("300"));
}

#[test]
fn upstream_ms_reflects_an_injected_delay() {
    let s = demo();
    let a = s.post(CHAT, &[("x-mock-delay-ms", "300")], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 200);
    let upstream_ms: u64 = a.header("x-switchyard-upstream-ms").unwrap().parse().unwrap();
    let total_ms: u64 = a.header("x-switchyard-total-ms").unwrap().parse().unwrap();
    assert!(upstream_ms >= 300, "upstream-ms {upstream_ms}");
    assert!(upstream_ms < 5000, "upstream-ms {upstream_ms}");
    assert!(total_ms >= upstream_ms, "total {total_ms} < upstream {upstream_ms}");
}

#[test]
fn unpriced_model_passes_with_an_explicit_unknown_cost() {
    let s = demo();
    let body = r#"{"model":"llama-3.1-8b-instruct","messages":[{"role":"user","content":"hi"}]}"#;
    let a = s.post(CHAT, &[("x-mock-usage", "10,5")], body.as_bytes()).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-switchyard-category"), Some("experimental"));
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("unknown"));
    assert_eq!(a.header("x-switchyard-cost-status"), Some("unpriced"));
    assert_eq!(a.header("x-switchyard-input-tokens"), Some("10"));
    let prom = s.envoy.stats_prometheus();
    assert!(
        prom.lines().any(|l| l.starts_with("switchyard_unpriced_total{")
            && l.contains("reason=\"unpriced\"")
            && l.ends_with(" 1")),
        "{prom}"
    );

    // An answer without usage.
    let a = s.post(CHAT, &[("x-mock-broken", "no-usage")], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("unknown"));
    assert_eq!(a.header("x-switchyard-cost-status"), Some("no-usage"));
    assert_eq!(a.header("x-switchyard-input-tokens"), None);
}

#[test]
fn error_answers_pass_unpriced_with_routing_headers() {
    let s = demo();
    let a = s.post(CHAT, &[("x-mock-status", "503")], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 503);
    assert_eq!(a.header("x-switchyard-category"), Some("extraction"));
    assert_eq!(a.header("x-switchyard-cost-usd"), None);
    assert!(a.json().unwrap()["error"]["message"].is_string(), "the upstream's error body passes through");
}

/// A streamed answer as it arrived: the head, and each body line with its arrival time.
fn stream_raw(s: &Scenario, body: &str, extra_headers: &str) -> (String, Vec<(Duration, String)>) {
    let raw = s.stream_raw(CHAT, body, extra_headers).unwrap();
    (raw.head, raw.lines)
}

/// The `data:` payloads of a chunked SSE answer read line by line.
fn data_lines(lines: &[(Duration, String)]) -> Vec<String> {
    lines.iter().filter_map(|(_, l)| l.strip_prefix("data: ").map(|d| d.trim_end().to_owned())).collect()
}

#[test]
fn streamed_answer_without_usage_request_gets_none_but_is_still_priced() {
    let s = demo();
    let body = r#"{"model":"extract-fields","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (head, lines) = stream_raw(&s, body, "x-mock-usage: 1000,500\r\nx-mock-chunk-delay-ms: 50\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("x-switchyard-category: extraction"), "{head}");
    assert!(head.contains("x-switchyard-upstream-ms: "), "{head}");
    let data = data_lines(&lines);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    for d in &data {
        assert!(!d.contains("usage"), "the client did not ask for usage: {d}");
    }
    assert!(data.len() >= 3, "{data:?}");
    // switchyard asked the provider for usage on the client's behalf...
    let seen = s.provider("provider_a").unwrap().last_request().unwrap();
    assert_eq!(seen.body_json().unwrap()["stream_options"]["include_usage"], true);
    // ...and recorded the cost in metrics and in the access log.
    let prom = s.envoy.stats_prometheus();
    let cost_line = prom
        .lines()
        .find(|l| l.starts_with("switchyard_cost_nanousd_total{") && l.contains("category=\"extraction\""))
        .unwrap_or_else(|| panic!("{prom}"));
    assert!(cost_line.ends_with(" 450000"), "1000 in + 500 out = 0.00045 USD = 450000 nano-USD: {cost_line}");
    assert!(s.envoy.wait_for_stdout("cost_usd\\\":\\\"0.00045", Duration::from_secs(5)), "{}", s.envoy.stdout());
    // ...and in the trailers after the last chunk (HTTP/1.1 with trailers enabled on the listener).
    let tail: Vec<&str> = lines.iter().map(|(_, l)| l.trim_end()).skip_while(|l| *l != "0").collect();
    assert!(tail.contains(&"x-switchyard-cost-usd: 0.00045"), "{tail:?}");
    assert!(tail.contains(&"x-switchyard-input-tokens: 1000"), "{tail:?}");
    assert!(tail.iter().any(|l| l.starts_with("x-switchyard-ttft-ms: ")), "{tail:?}");
    // Each figure once: the trailers Envoy starts at the last chunk get them added, not doubled.
    for name in ["x-switchyard-cost-usd:", "x-switchyard-cost-status:", "x-switchyard-total-ms:"] {
        assert_eq!(tail.iter().filter(|l| l.starts_with(name)).count(), 1, "{name} {tail:?}");
    }
}

#[test]
fn streamed_answer_with_usage_request_gets_the_cost_in_its_usage_chunk() {
    let s = demo();
    let body = r#"{"model":"extract-fields","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, lines) = stream_raw(&s, body, "x-mock-usage: 1000,500,200\r\n");
    let data = data_lines(&lines);
    let usage_chunk: Value =
        data.iter().rev().find(|d| d.contains("\"usage\":{")).map(|d| serde_json::from_str(d).unwrap()).unwrap();
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 1000);
    let cost = gpt4o_mini_cost(1000, 200, 500);
    assert_eq!(usage_chunk["usage"]["cost"].as_f64().unwrap().to_string(), cost);
    assert_eq!(usage_chunk["switchyard"]["cost_usd"], cost);
    assert!(usage_chunk["switchyard"]["ttft_ms"].is_u64());
    assert!(usage_chunk["switchyard"]["total_ms"].is_u64());
    // Chunks before it keep their `"usage": null`: that is what this client asked for.
    assert!(data.iter().filter(|d| d.contains("\"usage\":null")).count() >= 1);
}

#[test]
fn streamed_chunks_arrive_as_they_are_generated() {
    let s = demo();
    let body = r#"{"model":"extract-fields","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, lines) = stream_raw(&s, body, "x-mock-chunks: 4\r\nx-mock-chunk-delay-ms: 200\r\n");
    let times: Vec<Duration> = lines.iter().filter(|(_, l)| l.starts_with("data: ")).map(|(t, _)| *t).collect();
    assert!(times.len() >= 5, "{lines:?}");
    let first = times[0];
    let last = *times.last().unwrap();
    assert!(last - first >= Duration::from_millis(600), "chunks were held back: {times:?}");
}

#[test]
fn prometheus_shows_labelled_counters_and_histograms() {
    let s = demo();
    for _ in 0..3 {
        assert_eq!(s.post(CHAT, &[("x-mock-usage", "100,10")], EXTRACT.as_bytes()).unwrap().status, 200);
    }
    s.post(CHAT, &[("x-mock-status", "429")], EXTRACT.as_bytes()).unwrap();
    let prom = s.envoy.stats_prometheus();
    let has = |prefix: &str, labels: &[&str], value: &str| {
        prom.lines().any(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)) && l.ends_with(value))
    };
    let route = ["category=\"extraction\"", "upstream=\"openai\"", "model=\"gpt-4o-mini\""];
    assert!(has("switchyard_requests_total{", &route, " 4"), "{prom}");
    assert!(has("switchyard_responses_total{", &["status_class=\"2xx\"", "category=\"extraction\""], " 3"), "{prom}");
    assert!(has("switchyard_responses_total{", &["status_class=\"4xx\""], " 1"), "{prom}");
    assert!(has("switchyard_tokens_total{", &["token_type=\"input\"", "category=\"extraction\""], " 300"), "{prom}");
    assert!(has("switchyard_tokens_total{", &["token_type=\"output\""], " 30"), "{prom}");
    // 3 × (100 × 0.15 + 10 × 0.60) / 1e6 USD = 63000 nano-USD
    assert!(has("switchyard_cost_nanousd_total{", &route, " 63000"), "{prom}");
    assert!(prom.contains("switchyard_gen_ai_server_request_duration_ms_bucket{"), "{prom}");
    assert!(prom.contains("switchyard_upstream_ms_count{"), "{prom}");
    assert!(prom.contains("switchyard_gen_ai_client_token_usage_bucket{"), "{prom}");
    // The VM's linear memory, in whole 64 KiB pages.
    let memory = prom
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_vm_memory_bytes{} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no switchyard_vm_memory_bytes gauge: {prom}"));
    assert!(memory >= 65_536 && memory % 65_536 == 0, "{memory}");
}

#[test]
fn access_log_carries_the_figures() {
    let s = demo();
    s.post(CHAT, &[("x-mock-usage", "1000,500")], EXTRACT.as_bytes()).unwrap();
    assert!(s.envoy.wait_for_stdout("0.00045", Duration::from_secs(5)), "{}", s.envoy.stdout());
    let line = s.envoy.stdout().lines().find(|l| l.contains("0.00045")).unwrap().to_owned();
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["cluster"], "provider_a");
    let figures: Value = serde_json::from_str(entry["switchyard"].as_str().unwrap()).unwrap();
    assert_eq!(figures["category"], "extraction");
    assert_eq!(figures["model"], "gpt-4o-mini");
    assert_eq!(figures["attempts"], 1);
    assert_eq!(figures["input_tokens"], 1000);
    assert_eq!(figures["output_tokens"], 500);
    assert_eq!(figures["cost_usd"], "0.00045");
    assert_eq!(figures["cost_status"], "ok");
    assert!(figures["upstream_ms"].is_u64() && figures["total_ms"].is_u64(), "{figures}");
}

#[test]
fn answers_larger_than_the_hold_limit_pass_whole_and_unpriced() {
    // This scenario holds at most 256 bytes of an answer; the mock's answers are larger.
    let s = Scenario::start("json-config", 2).unwrap();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let a = s.post("/llm/v1/chat/completions", &[("x-mock-usage", "10,5")], body.as_bytes()).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.body.len() > 256, "{}", a.body.len());
    assert_eq!(a.json().unwrap()["usage"]["prompt_tokens"], 10, "the answer arrives whole");
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("unknown"));
    assert_eq!(a.header("x-switchyard-cost-status"), Some("too-large"));
    let counted = s.envoy.stats_matching("reason=.=too-large;.;");
    assert_eq!(counted.iter().map(|(_, v)| v).sum::<u64>(), 1, "{counted:?}");
}

#[test]
fn a_malformed_answer_passes_untouched_and_unpriced() {
    let s = demo();
    let a = s.post(CHAT, &[("x-mock-broken", "invalid-json")], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 200);
    assert!(a.json().is_err(), "the client gets the provider's bytes as they were");
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("unknown"));
    assert_eq!(a.header("x-switchyard-cost-status"), Some("no-usage"));
    let counted = s.envoy.stats_prometheus();
    assert!(
        counted.lines().any(|l| l.starts_with("switchyard_unpriced_total{") && l.contains("reason=\"no-usage\"")),
        "{counted}"
    );
}

#[test]
fn an_upstream_reset_mid_answer_reaches_the_client_as_a_broken_answer_and_envoy_carries_on() {
    let s = demo();
    // Non-streaming: the held answer never completes; Envoy ends the stream.
    let broken = s.post(CHAT, &[("x-mock-broken", "reset-mid-body")], EXTRACT.as_bytes());
    // Either the connection is reset (Err) or an incomplete answer arrives; never a whole one.
    if let Ok(a) = broken {
        assert_ne!(a.json().ok().map(|j| j["usage"].is_object()), Some(true), "{}", a.text());
    }
    // Streaming: the chunks sent before the reset reach the client, then the stream breaks off.
    let body = r#"{"model":"extract-fields","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let raw = s.stream_raw(CHAT, body, "x-mock-broken: reset-mid-body\r\n").unwrap();
    assert!(raw.head.starts_with("HTTP/1.1 200"), "{}", raw.head);
    assert!(!raw.data().iter().any(|d| d == "[DONE]"), "{:?}", raw.data());
    // Envoy and the filter carry on.
    let a = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-switchyard-cost-status"), Some("ok"));
    assert!(!s.envoy.log().contains("panicked"));
}

#[test]
fn a_refused_connection_without_failover_is_envoys_503_unpriced() {
    let mut s = demo();
    let gone = s.providers.remove(0); // provider_a: its port closes
    assert_eq!(gone.name(), "provider_a");
    drop(gone);
    let a = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.header("x-switchyard-category"), Some("extraction"));
    assert_eq!(a.header("x-switchyard-cost-usd"), None);
    let prom = s.envoy.stats_prometheus();
    assert!(
        prom.lines().any(|l| l.starts_with("switchyard_responses_total{") && l.contains("status_class=\"5xx\"")),
        "{prom}"
    );
}
