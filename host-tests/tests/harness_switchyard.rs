//! The differential scenarios (`tests/differential.rs`) in the harness alone: the real
//! `switchyard.wasm`, each scenario's plugin configuration, and an in-process mock provider answering
//! the request as the harness forwarded it — no Envoy. Each outcome must be the one the scenario
//! means (`differential::expect`). This is the fast loop for working on the filter: the whole set
//! runs in well under a second once the module is compiled (the first run after a rebuild of the
//! module compiles it, which a debug build of Cranelift takes tens of seconds to do; the result is
//! cached under `target/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Instant;

use switchyard_host_tests::differential::{self, cases, harness_host, run_harness_against, Env};
use switchyard_host_tests::harness::{Host, LogLevel, MetricValue};
use switchyard_host_tests::mock::MockUpstream;

#[test]
fn every_scenario_runs_in_the_harness_alone() {
    let wasm = differential::wasm().unwrap();
    let started = Instant::now();
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let provider = MockUpstream::start(case.env.fallback_cluster()).unwrap();
        let host = harness_host(&wasm, case.env).unwrap();
        let outcome = run_harness_against(&host, case, &provider).unwrap();
        if let Err(e) = differential::expect(case, &outcome) {
            failures.push(format!("{e:#}"));
        }
        // The filter never logs above info for these requests.
        let loud: Vec<_> = host.logs().into_iter().filter(|l| l.level >= LogLevel::Warn).collect();
        if !loud.is_empty() {
            failures.push(format!("{}: logged {loud:?}", case.name));
        }
    }
    println!("{} scenarios in the harness: {:?}", all.len(), started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One worker VM per Envoy worker: a request on either worker is routed the same way, and the
/// metrics they define are the process's, as in Envoy.
#[test]
fn two_workers_route_alike_and_share_metrics() {
    let wasm = differential::wasm().unwrap();
    let host = Host::builder(&wasm)
        .workers(2)
        .plugin_name("switchyard")
        .root_id("switchyard")
        .vm_id("switchyard")
        .build()
        .unwrap();
    assert!(host.configure(Env::Demo.plugin_config().unwrap()).unwrap().accepted);
    let body = br#"{"model":"extract-fields","messages":[{"role":"user","content":"hi"}]}"#;
    let headers = differential::envoy_request_headers("POST", "/v1/chat/completions", &[], body);
    for worker in 0..2 {
        let mut s = host.stream_on(worker).unwrap();
        let up = differential::send_request(&mut s, &headers, body).unwrap();
        assert!(up.complete, "worker {worker}: {up:?}");
        assert_eq!(up.header("x-switchyard-cluster"), Some("provider_a"), "worker {worker}");
        assert!(up.route_cache_cleared);
        assert!(up.content_length_consistent());
    }
    let requests: u64 = host
        .metrics()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.ends_with("switchyard_requests_total") && name.contains("category=.=extraction;.;"))
        .map(|(_, v)| match v {
            MetricValue::Counter(n) => *n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(requests, 2);
}

/// The demo's keyword rule (chargeback, fraud, stolen card in the last user message, any case) as
/// the module runs it, with its vector search: on generated texts of every length up to a few
/// hundred bytes, each with a keyword or a near miss somewhere (often across the end of a 16- or
/// 64-byte block), in either case, and with the two characters outside ASCII that fold to a
/// keyword's letter (the Kelvin sign to `k`, the long s to `s`), the request goes to fraud-review
/// exactly when a plain case-insensitive search of the folded text finds a keyword.
#[test]
fn keyword_rules_in_the_module_find_what_a_plain_search_finds() {
    let wasm = differential::wasm().unwrap();
    let host = harness_host(&wasm, Env::Demo).unwrap();
    let keywords = ["chargeback", "fraud", "stolen card"];
    let pieces = [
        "fraud",
        "FRAUD",
        "frau",
        "fRaUd",
        "stolen card",
        "Stolen Card",
        "stolen  card",
        "chargeback",
        "CHARGEBAC",
        "charge\u{212a}ack",
        "charGEBAC\u{212a}",
        "\u{17f}tolen card",
        "\u{17f}tolen",
        "é",
        "€",
        "\n",
    ];
    let filler = "the quarterly report lists revenue by region and explains each figure; ";
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut found, mut missed) = (0, 0);
    for _ in 0..600 {
        let len = (next() % 300) as usize;
        let mut text: String = filler.chars().cycle().take(len).collect();
        for _ in 0..=(next() % 2) {
            let piece = pieces[(next() % pieces.len() as u64) as usize];
            let at = next() as usize % (text.len() + 1);
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.insert_str(at, piece);
        }
        let folded = text.replace('\u{212a}', "k").replace('\u{17f}', "s").to_ascii_lowercase();
        let expected = keywords.iter().any(|k| folded.contains(k));
        let body = serde_json::to_vec(&serde_json::json!({
            "model": "auto",
            "messages": [{"role": "user", "content": text}]
        }))
        .unwrap();
        let headers = differential::envoy_request_headers("POST", "/v1/chat/completions", &[], &body);
        let up = differential::send_request(&mut host.stream().unwrap(), &headers, &body).unwrap();
        // fraud-review goes to provider_b first; general to provider_c.
        let cluster = if expected { "provider_b" } else { "provider_c" };
        assert_eq!(up.header("x-switchyard-cluster"), Some(cluster), "{text:?}");
        if expected {
            found += 1
        } else {
            missed += 1
        }
    }
    assert!(found > 150 && missed > 150, "{found} texts with a keyword, {missed} without: too few of one kind");
}

/// A body past Envoy's 1 MiB buffer limit, as Envoy 1.40 handles it (checked against its debug log
/// and stats): a frame that takes a paused buffer past the limit gets Envoy's plain 413, though the
/// filter's body callback still runs (switchyard counts its own refusal, which is dropped); a first
/// frame that is itself over the limit reaches the filter whole, and switchyard's JSON 413 answers.
#[test]
fn a_body_past_the_buffer_limit_is_refused_by_whoever_sees_it_first() {
    let wasm = differential::wasm().unwrap();
    let body = vec![b' '; 1024 * 1024 + 100];
    let headers = differential::envoy_request_headers("POST", "/v1/chat/completions", &[], &body);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = |host: &Host| host.counter("code=.=request_too_large;.;switchyard_refused_total");

    let host = harness_host(&wasm, Env::Demo).unwrap();
    let mut s = host.stream().unwrap();
    let (first, rest) = body.split_at(64 * 1024);
    let up = s.request_chunks(&refs, &[first, rest]).unwrap();
    let answered = up.answered.unwrap();
    assert_eq!(answered.status, Some(413));
    assert_eq!(answered.body_str(), "Payload Too Large");
    assert_eq!(answered.local_reply.unwrap().details, "request_payload_too_large");
    assert_eq!(refused(&host), Some(1), "the filter's callback ran with the whole buffer");

    let host = harness_host(&wasm, Env::Demo).unwrap();
    let mut s = host.stream().unwrap();
    let answered = s.request(&refs, &body).unwrap().answered.unwrap();
    assert_eq!(answered.status, Some(413));
    assert_eq!(answered.header("x-switchyard-error"), Some("request_too_large"));
    assert_eq!(refused(&host), Some(1));
}

/// The ledger role (the upstream filter on the attempts cluster) writes each attempt's candidate
/// and status for the front: a provider's status as it is, and the attempt role's own reply for a
/// candidate that was cooling as `cooling`, so that failover headers and metrics do not count it
/// as a provider's 503.
#[test]
fn the_ledger_records_provider_statuses_and_cooling_skips() {
    let wasm = differential::wasm().unwrap();
    let host = Host::builder(&wasm)
        .plugin_name("switchyard")
        .root_id("switchyard_ledger")
        .vm_id("switchyard")
        .build()
        .unwrap();
    // The ledger role takes no settings of its own.
    let configured = host.configure("{}").unwrap();
    assert!(configured.accepted, "{:?}", host.logs());
    let request = [(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "attempts")];
    let mut s = host.stream().unwrap();
    s.send_request_headers(&request, true).unwrap();
    // Attempt 1: candidate 0 cooling, skipped by the attempt role.
    s.send_response_headers(
        503,
        &[("x-switchyard-candidate", "0"), ("x-switchyard-failover", "skip"), ("content-type", "application/json")],
        true,
    )
    .unwrap();
    assert_eq!(s.filter_state("switchyard_attempts").unwrap().as_deref(), Some(&b"0:cooling"[..]));

    // A provider's own 503 (marked for failover with its status) stays a 503.
    let mut s = host.stream().unwrap();
    s.send_request_headers(&request, true).unwrap();
    s.send_response_headers(503, &[("x-switchyard-candidate", "1"), ("x-switchyard-failover", "503")], true).unwrap();
    assert_eq!(s.filter_state("switchyard_attempts").unwrap().as_deref(), Some(&b"1:503"[..]));
}

/// The benchmarks drive streams with `push_request` and `push_response`, which skip the views:
/// the flow, and what the upstream and the client get, are those of `request` and `respond`.
#[test]
fn pushing_a_request_and_its_answer_is_the_same_flow_as_sending_them() {
    let wasm = differential::wasm().unwrap();
    let host = harness_host(&wasm, Env::Demo).unwrap();
    let body = br#"{"model":"auto","messages":[{"role":"user","content":"a chargeback"}]}"#;
    let headers = differential::envoy_request_headers("POST", "/v1/chat/completions", &[], body);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = br#"{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":10}}"#;
    let json = [("content-type", "application/json")];

    let mut sent = host.stream().unwrap();
    let sent_up = sent.request(&refs, body).unwrap();
    let sent_client = sent.respond(200, &json, answer).unwrap();
    let mut pushed = host.stream().unwrap();
    assert!(pushed.push_request(&refs, body).unwrap());
    assert_eq!(pushed.upstream().unwrap(), sent_up);
    assert!(pushed.push_response(200, &json, &[answer]).unwrap());
    let pushed_client = pushed.client().unwrap();
    assert_eq!(pushed_client.header("x-switchyard-category"), Some("fraud-review"));
    assert_eq!(pushed_client.status, sent_client.status);
    assert_eq!(pushed_client.body, sent_client.body);
    let names = |c: &switchyard_host_tests::harness::ClientResponse| {
        c.headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&pushed_client), names(&sent_client));

    // A request the filter answers itself never reaches the upstream.
    let mut refused = host.stream().unwrap();
    assert!(!refused.push_request(&refs, b"{not json").unwrap());
    assert_eq!(refused.client().unwrap().status, Some(400));
}
