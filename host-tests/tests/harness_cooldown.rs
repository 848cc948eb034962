//! Cooldowns across Envoy workers, in milliseconds: two VMs of the real `switchyard.wasm` share one
//! shared-data store, as Envoy's workers do. A 429 answered on one worker makes the other worker's
//! next request skip that candidate, the cooldown ends by itself on the (harness) clock, and when
//! every candidate cools the filter answers 429 with Retry-After.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use switchyard_host_tests::harness::{locate, Host};

const CONFIG: &str = r#"{
  "upstreams": {"primary": {"cluster": "cluster_a"}, "backup": {"cluster": "cluster_b"}},
  "models": {"m-primary": {"input_usd_per_1m": 1, "output_usd_per_1m": 2}, "m-backup": {"input_usd_per_1m": 1, "output_usd_per_1m": 2}},
  "categories": [{"name": "general", "candidates": [{"upstream": "primary", "model": "m-primary"}, {"upstream": "backup", "model": "m-backup"}]}],
  "default_category": "general"
}"#;

const BODY: &[u8] = br#"{"model":"any","messages":[{"role":"user","content":"hi"}]}"#;

fn host() -> Host {
    let path = locate::switchyard_wasm_path().expect("switchyard.wasm is built (make wasm)");
    let wasm = std::fs::read(path).unwrap();
    let host = Host::builder(&wasm).workers(2).build().unwrap();
    assert!(host.configure(CONFIG).unwrap().accepted, "{:?}", host.logs());
    host
}

fn headers() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "llm.internal"),
        (":scheme", "http"),
        ("content-type", "application/json"),
    ]
}

/// Sends a request on `worker`; returns the cluster it was routed to (or the local reply status).
fn route_on(host: &Host, worker: usize, answer_status: u16, answer_headers: &[(&str, &str)]) -> Result<String, u16> {
    let mut s = host.stream_on(worker).unwrap();
    let up = s.request(&headers(), BODY).unwrap();
    if let Some(reply) = &up.answered {
        return Err(reply.status.unwrap_or(0));
    }
    let cluster = up.header("x-switchyard-cluster").unwrap().to_owned();
    let body = if answer_status == 200 {
        br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#.to_vec()
    } else {
        br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#.to_vec()
    };
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(answer_headers);
    s.respond(answer_status, &headers, &body).unwrap();
    Ok(cluster)
}

#[test]
fn a_cooldown_set_on_one_worker_is_seen_by_the_other_and_expires() {
    let host = host();
    assert_eq!(route_on(&host, 0, 429, &[("retry-after", "30")]), Ok("cluster_a".to_owned()));
    let (value, _) = host.shared_data("switchyard.cooldown.primary/m-primary").unwrap().expect("cooldown recorded");
    let until: u64 = String::from_utf8(value).unwrap().parse().unwrap();
    let now = host.now().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(until - now, 30_000);

    // The other worker's VM skips the cooling candidate.
    assert_eq!(route_on(&host, 1, 200, &[]), Ok("cluster_b".to_owned()));
    assert_eq!(route_on(&host, 0, 200, &[]), Ok("cluster_b".to_owned()));

    // After 30 s the primary is used again, on both workers.
    host.advance(Duration::from_secs(30)).unwrap();
    assert_eq!(route_on(&host, 1, 200, &[]), Ok("cluster_a".to_owned()));
    assert_eq!(route_on(&host, 0, 200, &[]), Ok("cluster_a".to_owned()));
}

#[test]
fn every_candidate_cooling_is_answered_with_429_and_retry_after() {
    let host = host();
    assert_eq!(route_on(&host, 0, 429, &[("retry-after", "20")]), Ok("cluster_a".to_owned()));
    assert_eq!(route_on(&host, 1, 429, &[("x-ratelimit-reset-requests", "4s")]), Ok("cluster_b".to_owned()));
    let mut s = host.stream_on(0).unwrap();
    let up = s.request(&headers(), BODY).unwrap();
    let reply = up.answered.expect("switchyard answers itself");
    assert_eq!(reply.status, Some(429));
    assert_eq!(reply.header("retry-after"), Some("4"));
    assert_eq!(reply.json().unwrap()["error"]["code"], "all_candidates_cooling");
    assert_eq!(host.counter("code=.=all_candidates_cooling;.;switchyard_refused_total"), Some(1));
}
