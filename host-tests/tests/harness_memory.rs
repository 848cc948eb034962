//! Memory per in-flight request inside the VM: thousands of 2 KB requests routed and waiting for
//! their answers at once, measured as the growth of the VM's linear memory. The target is at most
//! the body size plus 4 KiB per request; the figure is printed (`--nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use switchyard_host_tests::differential::DEMO_CONFIG;
use switchyard_host_tests::harness::{locate, Host};

const HEADERS: [(&str, &str); 5] = [
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    (":authority", "llm.internal"),
    (":scheme", "http"),
    ("content-type", "application/json"),
];

/// switchyard in a one-worker host, configured with the demo's config.
fn demo_host() -> Host {
    let wasm = std::fs::read(locate::switchyard_wasm_path().expect("switchyard.wasm is built (make wasm)")).unwrap();
    let host =
        Host::builder(&wasm).plugin_name("switchyard").root_id("switchyard").vm_id("switchyard").build().unwrap();
    assert!(host.configure(DEMO_CONFIG).unwrap().accepted);
    host
}

#[test]
fn an_in_flight_request_costs_the_vm_less_than_its_body_plus_4_kib() {
    let host = demo_host();
    let text = "The quarterly report lists revenue by region. ".repeat(40);
    let body = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    assert!(body.len() >= 1900, "{}", body.len());
    let answer = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;

    // Warm up: whole requests, so the allocator has its working set.
    for _ in 0..200 {
        let mut s = host.stream().unwrap();
        assert!(s.request(&HEADERS, body.as_bytes()).unwrap().forwarded());
        s.respond(200, &[("content-type", "application/json")], answer).unwrap();
    }
    let before = host.memory_bytes(0).unwrap();
    const IN_FLIGHT: usize = 2000;
    let mut streams = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let mut s = host.stream().unwrap();
        assert!(s.request(&HEADERS, body.as_bytes()).unwrap().forwarded());
        streams.push(s);
    }
    let after = host.memory_bytes(0).unwrap();
    let per_request = (after - before) as f64 / IN_FLIGHT as f64;
    println!(
        "VM memory: {before} bytes before, {after} with {IN_FLIGHT} requests in flight: {per_request:.0} bytes per request (body {} bytes)",
        body.len()
    );
    assert!(per_request <= (body.len() + 4096) as f64, "{per_request} bytes per in-flight request");
    // They all complete normally.
    for mut s in streams {
        assert_eq!(s.respond(200, &[("content-type", "application/json")], answer).unwrap().status, Some(200));
    }
}

#[test]
fn the_vm_reports_its_memory_as_a_gauge_at_start_and_on_every_tick() {
    let host = demo_host();
    let at_start = host.gauge("switchyard_vm_memory_bytes").expect("reported once configured");
    assert_eq!(at_start, host.memory_bytes(0).unwrap() as u64);
    assert_eq!(host.tick_period(0), Some(std::time::Duration::from_secs(5)));

    // Streamed answers whose first event is not finished yet: the VM holds each one's bytes, so
    // its memory grows; the next tick reports the new size.
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let unfinished = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}", "x".repeat(60_000));
    let mut streams = Vec::new();
    for _ in 0..40 {
        let mut s = host.stream().unwrap();
        assert!(s.request(&HEADERS, body).unwrap().forwarded());
        s.send_response_headers(200, &[("content-type", "text/event-stream")], false).unwrap();
        s.send_response_data(unfinished.as_bytes(), false).unwrap();
        streams.push(s);
    }
    let grown = host.memory_bytes(0).unwrap() as u64;
    assert!(grown > at_start, "{grown} <= {at_start}");
    assert_eq!(host.gauge("switchyard_vm_memory_bytes"), Some(at_start), "not reported before the tick");
    host.advance(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(host.gauge("switchyard_vm_memory_bytes"), Some(grown));
}

#[test]
fn the_host_forgets_a_finished_stream_once_its_handle_is_dropped() {
    let host = demo_host();
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    let answer = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;

    // A held handle keeps its finished stream inspectable.
    let mut held = host.stream().unwrap();
    assert!(held.request(&HEADERS, body).unwrap().forwarded());
    held.respond(200, &[("content-type", "application/json")], answer).unwrap();
    assert_eq!(host.tracked_streams(), 1);
    // A live stream whose handle is dropped stays until the module deletes it.
    let mut live = host.stream().unwrap();
    assert!(live.request(&HEADERS, body).unwrap().forwarded());
    assert_eq!(host.tracked_streams(), 2);

    for _ in 0..500 {
        let mut s = host.stream().unwrap();
        assert!(s.request(&HEADERS, body).unwrap().forwarded());
        assert_eq!(s.respond(200, &[("content-type", "application/json")], answer).unwrap().status, Some(200));
    }
    assert_eq!(host.tracked_streams(), 2, "finished, dropped streams are forgotten");
    assert_eq!(held.client().unwrap().status, Some(200));
    drop(held);
    assert_eq!(host.tracked_streams(), 1);
    assert_eq!(live.respond(200, &[("content-type", "application/json")], answer).unwrap().status, Some(200));
    drop(live);
    assert_eq!(host.tracked_streams(), 0);
}
