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

#[test]
fn an_in_flight_request_costs_the_vm_less_than_its_body_plus_4_kib() {
    let wasm = std::fs::read(locate::switchyard_wasm_path().expect("switchyard.wasm is built (make wasm)")).unwrap();
    let host = Host::builder(&wasm).plugin_name("switchyard").root_id("switchyard").vm_id("switchyard").build().unwrap();
    assert!(host.configure(DEMO_CONFIG).unwrap().accepted);
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
