//! Micro-benchmarks of switchyard's decision core, natively: what the filter does per request and
//! per answer chunk, without the host boundary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::answer::{StreamedAnswer, Timing};
use switchyard::headers::Headers;
use switchyard::route::{decide, never_cooling, UsageChunk};
use switchyard_benches::{chat_body, realistic_config, sse_stream};

fn request_path(c: &mut Criterion) {
    let config = realistic_config();
    let path = "/v1/chat/completions";
    let target = switchyard::request::target("", path).unwrap();
    let headers = Headers::from_pairs(&[("content-type", "application/json")]);
    let mut group = c.benchmark_group("decide");
    for size in [1024, 2 * 1024, 16 * 1024, 256 * 1024] {
        let body = chat_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| decide(&config, path, &target, &headers, None, black_box(body), &never_cooling, 0).unwrap());
        });
    }
    group.finish();
}

fn usage_extraction(c: &mut Criterion) {
    let answer = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The invoice total is 1,240.00 EUR, due on 2026-12-01."},"finish_reason":"stop"}],"usage":{"prompt_tokens":812,"completion_tokens":19,"total_tokens":831,"prompt_tokens_details":{"cached_tokens":512},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    c.bench_function("usage/from_body", |b| b.iter(|| switchyard::usage::from_body(black_box(answer)).unwrap()));
    let price = realistic_config().models[0].price;
    c.bench_function("usage/price_body", |b| b.iter(|| switchyard::answer::price_body(black_box(answer), &price)));
    let responses = br#"{"id":"resp_1","object":"response","created_at":1741476777,"status":"completed","error":null,"model":"o3-2025-04-16","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"The image depicts a scenic landscape.","annotations":[]}]}],"parallel_tool_calls":true,"store":true,"temperature":1.0,"tool_choice":"auto","tools":[],"top_p":1.0,"usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":128},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":380},"user":null,"metadata":{}}"#;
    c.bench_function("usage/from_body_responses_api", |b| {
        b.iter(|| switchyard::usage::from_body(black_box(responses)).unwrap())
    });

    // One streamed event's data: what each chunk of a stream costs (sse/* measures whole streams).
    let content = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1751900000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
    let usage = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1751900000,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    let mut group = c.benchmark_group("usage/event");
    group.bench_function("from_event_content_chunk", |b| {
        b.iter(|| assert!(switchyard::usage::from_event(black_box(content)).is_none()))
    });
    group.bench_function("from_event_usage_chunk", |b| {
        b.iter(|| switchyard::usage::from_event(black_box(usage)).unwrap())
    });
    group.bench_function("is_usage_only_chunk_content_chunk", |b| {
        b.iter(|| switchyard::usage::is_usage_only_chunk(black_box(content)))
    });
    group.bench_function("with_usage_cost", |b| {
        b.iter(|| switchyard::usage::with_usage_cost(black_box(usage), "0.000345").unwrap())
    });
    group.finish();
}

fn sse_chunks(c: &mut Criterion) {
    let stream = sse_stream(64);
    let events: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    // One event per chunk, as providers send them (each `data:` line and its blank line).
    let chunks: Vec<Vec<u8>> = events.chunks(2).map(|pair| pair.concat()).collect();
    let price = realistic_config().models[0].price;
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Elements(chunks.len() as u64));
    group.bench_function("splitter_per_stream_of_64_chunks", |b| {
        b.iter(|| {
            let mut splitter = switchyard::sse::SseSplitter::new();
            for chunk in &chunks {
                splitter.feed(black_box(chunk), |event| {
                    black_box(event);
                });
            }
        });
    });
    for (name, mode) in [("injected", UsageChunk::Injected), ("client_asked", UsageChunk::ClientAsked)] {
        group.bench_function(format!("answer_{name}_per_stream_of_64_chunks"), |b| {
            b.iter(|| {
                let mut answer = StreamedAnswer::new(mode, price, 1 << 20);
                let last = chunks.len() - 1;
                for (i, chunk) in chunks.iter().enumerate() {
                    black_box(answer.push(black_box(chunk), i == last, Timing::default()));
                }
                answer.priced()
            });
        });
    }
    group.finish();
}

/// How long a rate-limited answer asks to wait: what a 429 costs besides the failover itself.
fn retry_after(c: &mut Criterion) {
    let now_ms = 1_764_000_000_000;
    let owned = |pairs: &[(&str, &str)]| Headers::from_pairs(pairs);
    let cases = [
        ("seconds", owned(&[("content-type", "application/json"), ("retry-after", "30")])),
        ("http_date", owned(&[("content-type", "application/json"), ("retry-after", "Wed, 26 Nov 2025 12:00:00 GMT")])),
        ("ratelimit_reset", owned(&[("x-ratelimit-reset-requests", "1m6s"), ("x-ratelimit-reset-tokens", "250ms")])),
    ];
    let mut group = c.benchmark_group("retry_after");
    for (name, headers) in &cases {
        assert!(switchyard::cooldown::parse(headers, now_ms).is_some(), "{name}");
        group.bench_function(*name, |b| b.iter(|| switchyard::cooldown::parse(black_box(headers), now_ms)));
    }
    group.finish();
}

criterion_group!(benches, request_path, usage_extraction, sse_chunks, retry_after);
criterion_main!(benches);
