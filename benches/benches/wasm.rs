//! The request lifecycle through the real `switchyard.wasm` in the wasmtime harness: what one
//! request and one streamed chunk cost including the host boundary (every hostcall, every copy
//! into and out of the VM). Streams are driven with `push_request` and `push_response`, which do
//! not build the views tests read (copies of what the upstream and the client got);
//! `request_2k_with_test_views` shows what those add. Needs `make wasm` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

/// The host's allocator. Envoy allocates with tcmalloc, not the C library's malloc: the harness
/// standing in for it uses a comparable allocator, so that the host side of each hostcall costs
/// what it would in a proxy rather than what glibc's malloc costs a test program.
#[global_allocator]
static HOST_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_benches::{chat_body, sse_stream, CHAT_ANSWER, REQUEST_HEADERS};
use switchyard_host_tests::differential::{Env, DEMO_CONFIG};
use switchyard_host_tests::harness::{locate, Host};

fn host() -> Host {
    let path = locate::switchyard_wasm_path().expect("switchyard.wasm is built: run `make wasm`");
    let wasm = std::fs::read(path).unwrap();
    let host =
        Host::builder(&wasm).plugin_name("switchyard").root_id("switchyard").vm_id("switchyard").build().unwrap();
    assert!(host.configure(DEMO_CONFIG).unwrap().accepted);
    let _ = Env::Demo;
    host
}

fn floor_host() -> Option<Host> {
    let path = locate::release_wasm("switchyard_floor.wasm")?;
    let wasm = std::fs::read(path).unwrap();
    let host = Host::builder(&wasm).plugin_name("floor").root_id("floor").vm_id("floor").build().unwrap();
    assert!(host.configure(b"").unwrap().accepted);
    Some(host)
}

fn lifecycle(c: &mut Criterion) {
    let host = host();
    let body = chat_body(2 * 1024);
    let answer = CHAT_ANSWER;
    let mut group = c.benchmark_group("wasm");
    group.throughput(Throughput::Bytes(body.len() as u64));
    // One request and its answer, pushed through `host` without the test views.
    let whole_lifecycle = |b: &mut criterion::Bencher<'_>, host: &Host| {
        b.iter(|| {
            let mut s = host.stream().unwrap();
            assert!(s.push_request(&REQUEST_HEADERS, black_box(&body)).unwrap());
            assert!(s.push_response(200, &[("content-type", "application/json")], &[answer]).unwrap());
        });
    };
    group.bench_function("request_2k_non_streaming_whole_lifecycle", |b| whole_lifecycle(b, &host));
    // The same request and answer through the floor filter (benches/floor-filter: hold the
    // headers, copy the body into the VM once, set the route header): what the harness and the host
    // boundary cost any body-reading filter. switchyard's own work is the difference.
    if let Some(floor) = floor_host() {
        group.bench_function("floor_filter_2k_whole_lifecycle", |b| whole_lifecycle(b, &floor));
    } else {
        eprintln!("switchyard_floor.wasm is not built (make bench-wasm): no floor lifecycle");
    }
    // The switchyard lifecycle again, with the views a test reads after each step (the forwarded
    // request and the client's answer, headers and bodies copied out of the harness).
    group.bench_function("request_2k_with_test_views", |b| {
        b.iter(|| {
            let mut s = host.stream().unwrap();
            let up = s.request(&REQUEST_HEADERS, black_box(&body)).unwrap();
            assert!(up.forwarded());
            black_box(s.respond(200, &[("content-type", "application/json")], answer).unwrap());
        });
    });
    group.finish();

    let stream = sse_stream(64);
    let events: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    let chunks: Vec<Vec<u8>> = events.chunks(2).map(|pair| pair.concat()).collect();
    let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let streaming_body = br#"{"model":"extract-fields","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut group = c.benchmark_group("wasm");
    group.throughput(Throughput::Elements(chunk_refs.len() as u64));
    let stream_of = |b: &mut criterion::Bencher<'_>, chunks: &[&[u8]]| {
        b.iter(|| {
            let mut s = host.stream().unwrap();
            assert!(s.push_request(&REQUEST_HEADERS, streaming_body).unwrap());
            assert!(s.push_response(200, &[("content-type", "text/event-stream")], black_box(chunks)).unwrap());
        });
    };
    group.bench_function("stream_of_66_chunks_usage_injected", |b| stream_of(b, &chunk_refs));
    group.finish();
    // The same request answered by the last chunk alone (`[DONE]`, which ends the stream): what
    // the stream costs apart from its chunks. The 65 chunks before it cost the difference.
    let mut group = c.benchmark_group("wasm");
    group.throughput(Throughput::Elements(1));
    group.bench_function("stream_of_its_last_chunk_alone", |b| stream_of(b, &chunk_refs[chunk_refs.len() - 1..]));
    group.finish();
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
