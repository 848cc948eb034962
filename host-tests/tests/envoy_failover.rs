//! Failover in a real Envoy (`envoy/failover/envoy.yaml`): a rate-limited or failing provider hands
//! the request to the category's next candidate, streamed answers still stream, Retry-After
//! becomes a cooldown every worker honours, and when nothing can answer the client gets
//! switchyard's 429 with a proper Retry-After.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use switchyard_host_tests::envoy::EnvoyOptions;
use switchyard_host_tests::mock::{Behavior, Broken};
use switchyard_host_tests::scenario::{Answer, Scenario};

const CHAT: &str = "/v1/chat/completions";
/// Category `general`: openai/gpt-4o-mini, then anthropic/claude-sonnet-4-5, then mistral.
const GENERAL: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Write a haiku"}],"temperature":0.3}"#;
/// Category `extraction`: openai/gpt-4o-mini, then mistral/mistral-small-latest.
const EXTRACT: &str = r#"{"model":"extract-fields","messages":[{"role":"user","content":"Total?"}]}"#;

fn failover() -> Scenario {
    Scenario::start("failover", 3).expect("failover scenario starts")
}

fn rate_limited(retry_after: &str) -> Behavior {
    Behavior { status: Some(429), retry_after: Some(retry_after.to_owned()), ..Behavior::default() }
}

fn assert_served_by(a: &Answer, upstream: &str, model: &str) {
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-switchyard-upstream"), Some(upstream), "{:?}", a.headers);
    assert_eq!(a.header("x-switchyard-model"), Some(model), "{:?}", a.headers);
}

#[test]
fn rate_limited_primary_fails_over_to_the_next_model() {
    let s = failover();
    s.provider("provider_a").unwrap().push_behavior(rate_limited("1"));
    let a = s.post(CHAT, &[("x-mock-usage", "1000,100")], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "anthropic", "claude-sonnet-4-5");
    assert_eq!(a.header("x-mock-upstream"), Some("provider_b"));
    assert_eq!(a.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(a.header("x-switchyard-failover-from"), Some("openai/gpt-4o-mini=429"));
    assert_eq!(a.header("x-switchyard-category"), Some("general"));
    // Priced at the model that answered: 1000 × 3.00 + 100 × 15.00 per million.
    assert_eq!(a.header("x-switchyard-cost-usd"), Some("0.0045"));
    assert_eq!(a.header("retry-after"), None, "the 429's headers do not leak");

    // Each provider got the client's body with only `model` changed, and no internal headers.
    let to_a = s.provider("provider_a").unwrap().last_request().unwrap();
    let to_b = s.provider("provider_b").unwrap().last_request().unwrap();
    assert_eq!(to_a.body_text(), GENERAL.replace("\"gpt-4o\"", "\"gpt-4o-mini\""));
    assert_eq!(to_b.body_text(), GENERAL.replace("\"gpt-4o\"", "\"claude-sonnet-4-5\""));
    assert_eq!(to_b.header("content-length"), Some(to_b.body.len().to_string().as_str()));
    for seen in [&to_a, &to_b] {
        assert!(
            seen.headers.iter().all(|(k, _)| !k.starts_with("x-switchyard-") && k != "x-envoy-attempt-count"),
            "{:?}",
            seen.headers
        );
    }
    let prom = s.envoy.stats_prometheus();
    assert!(
        prom.lines().any(|l| l.starts_with("switchyard_failovers_total{")
            && l.contains("from=\"openai/gpt-4o-mini\"")
            && l.contains("to=\"anthropic/claude-sonnet-4-5\"")
            && l.contains("status=\"429\"")
            && l.ends_with(" 1")),
        "{prom}"
    );
    assert!(
        prom.lines().any(|l| l.starts_with("switchyard_cooldowns_total{") && l.contains("upstream=\"openai\"")),
        "{prom}"
    );
}

#[test]
fn no_failover_when_the_first_candidate_answers() {
    let s = failover();
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "openai", "gpt-4o-mini");
    assert_eq!(a.header("x-switchyard-attempts"), Some("1"));
    assert_eq!(a.header("x-switchyard-failover-from"), None);
    assert_eq!(s.provider("provider_b").unwrap().hits(), 0);
}

#[test]
fn failures_chain_through_every_candidate() {
    let s = failover();
    s.provider("provider_a").unwrap().push_behavior(rate_limited("1"));
    s.provider("provider_b").unwrap().push_behavior(Behavior::status(503));
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "mistral", "mistral-small-latest");
    assert_eq!(a.header("x-switchyard-attempts"), Some("3"));
    assert_eq!(a.header("x-switchyard-failover-from"), Some("openai/gpt-4o-mini=429,anthropic/claude-sonnet-4-5=503"));
}

#[test]
fn connection_reset_before_the_answer_fails_over() {
    let s = failover();
    s.provider("provider_a").unwrap().push_behavior(Behavior::broken(Broken::ResetBeforeHeaders));
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "anthropic", "claude-sonnet-4-5");
    assert_eq!(a.header("x-switchyard-attempts"), Some("2"));
    // A reset is not a rate limit: no cooldown, the next request tries the primary again.
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "openai", "gpt-4o-mini");
}

#[test]
fn streamed_answer_from_the_fallback_still_streams() {
    let s = failover();
    s.provider("provider_a").unwrap().push_behavior(rate_limited("1"));
    s.provider("provider_b").unwrap().set_behavior(Behavior {
        chunks: Some(4),
        chunk_delay_ms: Some(250),
        ..Behavior::default()
    });
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Write a haiku"}]}"#;
    let raw = s.stream_raw(CHAT, body, "").unwrap();
    let (head, lines) = (raw.head, raw.lines);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("x-switchyard-attempts: 2"), "{head}");
    assert!(head.contains("x-switchyard-model: claude-sonnet-4-5"), "{head}");
    let data: Vec<&(Duration, String)> = lines.iter().filter(|(_, l)| l.starts_with("data: ")).collect();
    assert!(data.len() >= 5, "{lines:?}");
    let (first, last) = (data[0].0, data[data.len() - 1].0);
    assert!(last - first >= Duration::from_millis(750), "chunks arrived together: {data:?}");
    assert!(data.iter().all(|(_, l)| !l.contains("usage")), "the client did not ask for usage: {data:?}");
    assert!(data.iter().any(|(_, l)| l.contains("claude-sonnet-4-5")));
}

#[test]
fn cooldown_is_shared_by_every_worker_and_expires() {
    let s = Scenario::start_with("failover", 3, EnvoyOptions { concurrency: 2, ..EnvoyOptions::default() }).unwrap();
    let primary = s.provider("provider_a").unwrap();
    primary.push_behavior(rate_limited("2"));
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "anthropic", "claude-sonnet-4-5");
    assert_eq!(primary.hits(), 1);

    // Many requests at once, on fresh connections, so both workers take some.
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| s.post(CHAT, &[("connection", "close")], GENERAL.as_bytes()).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for a in &answers {
        assert_served_by(a, "anthropic", "claude-sonnet-4-5");
        assert_eq!(a.header("x-switchyard-attempts"), Some("1"), "the cooling primary is not even tried");
    }
    assert_eq!(primary.hits(), 1, "no second 429 from the primary inside its cooldown");
    // Both workers took connections (each has its own VM; the cooldown lives in shared data).
    let busy: Vec<_> = s
        .envoy
        .stats_matching("downstream_cx_total")
        .into_iter()
        .filter(|(name, value)| name.starts_with("listener.127.0.0.1_") && name.contains(".worker_") && *value > 0)
        .collect();
    assert!(busy.len() >= 2, "requests did not land on both workers: {busy:?}");

    std::thread::sleep(Duration::from_millis(2300));
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "openai", "gpt-4o-mini");
    assert_eq!(primary.hits(), 2, "the cooldown expired by itself");
}

#[test]
fn every_candidate_rate_limited_gets_switchyards_429_with_retry_after() {
    let s = failover();
    let (a, c) = (s.provider("provider_a").unwrap(), s.provider("provider_c").unwrap());
    a.set_behavior(rate_limited("7"));
    c.set_behavior(rate_limited("3"));
    let answer = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    assert_eq!(answer.status, 429, "{}", answer.text());
    let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((2..=3).contains(&retry_after), "soonest cooldown is about 3 s: {retry_after}");
    let json = answer.json().unwrap();
    assert_eq!(json["error"]["code"], "all_candidates_cooling");
    assert_eq!(json["error"]["type"], "rate_limit_error");
    assert_eq!((a.hits(), c.hits()), (1, 1));

    // While both cool, the filter answers at once without contacting anyone.
    let again = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    assert_eq!(again.status, 429);
    assert!(again.header("retry-after").is_some());
    assert_eq!((a.hits(), c.hits()), (1, 1));
}

/// Both candidates of `extraction` answer 429 with these Retry-After values; returns the
/// Retry-After of switchyard's own 429.
fn all_cooling_retry_after(first: &str, second: &str) -> u64 {
    let s = failover();
    s.provider("provider_a").unwrap().set_behavior(rate_limited(first));
    s.provider("provider_c").unwrap().set_behavior(rate_limited(second));
    let answer = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(answer.json().unwrap()["error"]["code"], "all_candidates_cooling");
    answer.header("retry-after").unwrap().parse().unwrap()
}

#[test]
fn garbage_retry_after_gets_the_default_cooldown() {
    // The scenario's default cooldown is 5 s; the other candidate asked for 30 s.
    let retry_after = all_cooling_retry_after("whenever", "30");
    assert!((4..=5).contains(&retry_after), "{retry_after}");
}

#[test]
fn huge_retry_after_is_clamped() {
    // The scenario's longest cooldown is 60 s.
    let retry_after = all_cooling_retry_after("999999999", "Fri, 31 Dec 9999 23:59:59 GMT");
    assert!((59..=60).contains(&retry_after), "{retry_after}");
}

/// The failover scenario with one piece of its route changed.
fn failover_edited(from: &str, to: &str) -> Scenario {
    Scenario::start_edited("failover", 3, EnvoyOptions::default(), |yaml| {
        assert!(yaml.contains(from), "scenario has no `{from}`");
        yaml.replacen(from, to, 1)
    })
    .unwrap()
}

#[test]
fn a_candidate_that_times_out_before_its_first_byte_fails_over() {
    let s = failover_edited("per_try_timeout: 30s", "per_try_timeout: 1s");
    s.provider("provider_a").unwrap().push_behavior(Behavior { delay_ms: Some(3000), ..Behavior::default() });
    let started = Instant::now();
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "anthropic", "claude-sonnet-4-5");
    assert!(started.elapsed() < Duration::from_millis(2900), "did not wait for the slow primary");
    // A timeout is not a rate limit: the next request tries the primary again.
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "openai", "gpt-4o-mini");
}

#[test]
fn every_candidate_timing_out_gets_a_gateway_timeout() {
    let s = failover_edited("per_try_timeout: 30s", "per_try_timeout: 1s");
    for p in ["provider_a", "provider_c"] {
        s.provider(p).unwrap().set_behavior(Behavior { delay_ms: Some(2500), ..Behavior::default() });
    }
    let a = s.post(CHAT, &[], EXTRACT.as_bytes()).unwrap();
    assert_eq!(a.status, 504, "{}", a.text());
    assert_eq!((s.provider("provider_a").unwrap().hits(), s.provider("provider_c").unwrap().hits()), (1, 1));
}

#[test]
fn a_body_larger_than_the_retry_buffer_is_not_failed_over() {
    // Envoy can only replay a request it kept: above the route's buffer limit there is no retry.
    let s = failover_edited(
        "                route:\n                  cluster: switchyard_attempts",
        "                per_request_buffer_limit_bytes: 1024\n                route:\n                  cluster: switchyard_attempts",
    );
    s.provider("provider_a").unwrap().push_behavior(rate_limited("5"));
    let big = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(4000));
    let a = s.post(CHAT, &[], big.as_bytes()).unwrap();
    // The primary's 429 is the answer, as switchyard's 429 with the primary's cooldown.
    assert_eq!(a.status, 429, "{}", a.text());
    assert_eq!(s.provider("provider_b").unwrap().hits(), 0);
    let retry_after: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((4..=5).contains(&retry_after), "{retry_after}");
    // Small requests meanwhile fail over as usual (the primary is cooling).
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_served_by(&a, "anthropic", "claude-sonnet-4-5");
}

#[test]
fn a_client_that_leaves_during_failover_harms_nothing() {
    let s = failover();
    s.provider("provider_a").unwrap().push_behavior(Behavior {
        status: Some(429),
        delay_ms: Some(400),
        ..Behavior::default()
    });
    {
        let mut stream = TcpStream::connect(("127.0.0.1", s.envoy.port())).unwrap();
        write!(
            stream,
            "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{GENERAL}",
            GENERAL.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    } // the client hangs up while the primary is still thinking
    std::thread::sleep(Duration::from_millis(600));
    let a = s.post(CHAT, &[], GENERAL.as_bytes()).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let log = s.envoy.log();
    assert!(!log.contains("panicked") && !log.contains("Function: proxy_on"), "{log}");
}
