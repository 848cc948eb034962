//! SSE parser + usage extraction: arbitrary bytes as a streamed answer, cut into chunks at
//! input-chosen offsets, through `SseSplitter` and `StreamedAnswer` in every `UsageChunk` mode, plus
//! `usage::from_body`, `from_event` and `with_usage_cost` on the stream and each event's data.
//!
//! Input: the first byte picks the model's price (bits 0-1), the `UsageChunk` mode (bits 2-3) and a
//! small follow limit (bit 4 on: `(bits 5-7) * 24` bytes); the rest is the stream.
//! Properties: however the stream is cut, the splitter returns the same events and the client gets
//! the same bytes; read-only modes pass every byte unchanged; editing modes change only the usage
//! chunk (cost added, or removed when switchyard asked for it) and `"usage":null` members, and an
//! event whose data was JSON stays JSON.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use switchyard::answer::{Priced, StreamedAnswer, Timing};
use switchyard::config::{self, Price};
use switchyard::route::UsageChunk;
use switchyard::sse::{self, SseSplitter};
use switchyard::usage;
use switchyard_fuzz::{appended_cost, chunks, is_json, removed_one_null_usage, Dice, Json};

/// Full price, input price only (so some answers are unpriced), no price.
static PRICES: LazyLock<[Price; 3]> = LazyLock::new(|| {
    let c = config::from_value(json!({
        "upstreams": {"u": {"cluster": "c"}},
        "models": {
            "a": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6, "cached_input_usd_per_1m": 0.075,
                  "reasoning_usd_per_1m": 2.4},
            "b": {"input_usd_per_1m": 3},
            "c": {}
        },
        "categories": [{"name": "k", "candidates": [{"upstream": "u", "model": "a"}]}],
        "default_category": "k"
    }))
    .expect("the fuzz config loads");
    [c.models[0].price, c.models[1].price, c.models[2].price]
});

const MODES: [UsageChunk; 4] =
    [UsageChunk::NotApplicable, UsageChunk::ClientAsked, UsageChunk::Injected, UsageChunk::Unavailable];
const TIMING: Timing = Timing { upstream_ms: 5, ttft_ms: 7, total_ms: 9 };
const BIG: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else { return };
    let price = PRICES[usize::from(control & 3) % 3];
    let mode = MODES[usize::from(control >> 2 & 3)];
    let small_limit = (control & 0x10 != 0).then_some(usize::from(control >> 5) * 24);
    let mut dice = Dice::new(data);
    // Byte by byte, a few bytes, typical network chunks.
    let max_chunk = [1, 3, 16, 64, 512][dice.below(5) as usize];
    let cuts = chunks(stream, &mut dice, max_chunk);

    // The splitter: the same events and the same leftover however the stream is cut, and every
    // byte comes back, in order.
    let (events, tail) = split(&[stream]);
    assert_eq!(split(&cuts), (events.clone(), tail.clone()), "events depend on the cuts");
    let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.iter().copied()).chain(tail.iter().copied()).collect();
    assert!(joined == stream, "the splitter lost or reordered bytes");

    let (whole, priced) = play(mode, price, BIG, &[stream]);
    let (cut, cut_priced) = play(mode, price, BIG, &cuts);
    assert!(cut == whole, "{mode:?}: output depends on the cuts");
    assert_eq!(cut_priced, priced, "{mode:?}: usage depends on the cuts");
    match mode {
        UsageChunk::NotApplicable | UsageChunk::Unavailable => {
            assert!(whole == stream, "{mode:?}: a read-only stream was changed");
        }
        _ => check_edits(mode, &events, &tail, &whole),
    }
    if let Some(limit) = small_limit {
        // Past the limit switchyard stops following the stream: bytes pass, none are lost.
        let (out, small_priced) = play(mode, price, limit, &cuts);
        if !matches!(mode, UsageChunk::ClientAsked | UsageChunk::Injected) {
            assert!(out == stream, "{mode:?}: a read-only stream was changed (limit {limit})");
        } else if small_priced != Priced::TooLarge {
            assert!(out == whole, "{mode:?}: output changed under a limit never reached");
        }
    }

    // Usage readers on the whole text and on each event's data.
    let _ = usage::from_body(stream);
    let cost = ["0.00045", "0", "12.5", "0.000000000000001", "1e3", "-1", "01", ".5", ""][dice.below(9) as usize];
    if let Ok(text) = std::str::from_utf8(stream) {
        check_usage_text(text, cost);
    }
    for event in &events {
        if let Some(data) = &event.data {
            check_usage_text(data, cost);
        }
    }
});

/// An event copied out of the splitter, which lends each one for the length of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    raw: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
}

impl From<sse::Event<'_>> for Event {
    fn from(e: sse::Event<'_>) -> Self {
        Event { raw: e.raw.to_vec(), data: e.data.map(|d| d.into_owned()), event: e.event.map(|v| v.into_owned()) }
    }
}

fn split(chunks: &[&[u8]]) -> (Vec<Event>, Vec<u8>) {
    let mut splitter = SseSplitter::new();
    let mut events = Vec::new();
    for chunk in chunks {
        splitter.feed(chunk, |e| events.push(Event::from(e)));
    }
    splitter.finish(|e| events.push(Event::from(e)));
    (events, splitter.take_pending())
}

/// What the client receives when the answer arrives in `chunks` (the last one ends the stream).
fn play(mode: UsageChunk, price: Price, limit: usize, chunks: &[&[u8]]) -> (Vec<u8>, Priced) {
    let mut answer = StreamedAnswer::new(mode, price, limit);
    let mut out = Vec::new();
    let last = chunks.len().saturating_sub(1);
    if chunks.is_empty() {
        out.extend(answer.push(&[], true, TIMING).unwrap_or_default());
    }
    for (i, chunk) in chunks.iter().enumerate() {
        match answer.push(chunk, i == last, TIMING) {
            Some(replaced) => out.extend_from_slice(&replaced),
            None => out.extend_from_slice(chunk),
        }
    }
    (out, answer.priced())
}

/// Walks the answer's events and what the client got for them, side by side.
fn check_edits(mode: UsageChunk, events: &[Event], tail: &[u8], out: &[u8]) {
    let (sent, sent_tail) = split(&[out]);
    assert!(sent_tail == tail, "{mode:?}: the unfinished tail changed");
    let mut sent = sent.iter();
    for event in events {
        let Some(data) = event.data.as_deref() else {
            assert_eq!(sent.next().map(|e| &e.raw), Some(&event.raw), "{mode:?}: an event without data changed");
            continue;
        };
        let found = usage::from_event(data);
        if mode == UsageChunk::Injected && found.is_some() && usage::is_usage_only_chunk(data) {
            continue; // switchyard's own usage chunk: removed
        }
        let got = sent.next().unwrap_or_else(|| panic!("{mode:?}: an event is missing: {event:?}"));
        let edited = if mode == UsageChunk::Injected {
            // Only a top-level `"usage": null` member goes, never text that merely looks like one.
            // A key spelled with escapes (`"usag\u0065"`) may stay; without any `\` in the data,
            // the member must go.
            let edited = got.raw != event.raw;
            let top_level_null = Json::parse(data.as_bytes()).is_some_and(|json| {
                json.members().is_some_and(|m| m.iter().any(|(k, v)| k == "usage" && *v == Json::Null))
            });
            assert!(
                edited || found.is_some() || !top_level_null || data.contains('\\'),
                "{mode:?}: a top-level null usage stayed:\n{data}"
            );
            edited
        } else {
            found.is_some()
        };
        if !edited {
            assert_eq!(got.raw, event.raw, "{mode:?}: an event that needs no edit changed");
            continue;
        }
        assert_eq!(got.event, event.event, "{mode:?}: the event's `event` field changed");
        let new = got.data.as_deref().unwrap_or_else(|| panic!("{mode:?}: the edited event lost its data: {got:?}"));
        if !is_json(data.as_bytes()) {
            continue;
        }
        assert!(is_json(new.as_bytes()), "{mode:?}: JSON data became invalid:\n{data}\n{new}");
        let (Some(before), Some(after)) = (Json::parse(data.as_bytes()), Json::parse(new.as_bytes())) else { continue };
        match mode {
            UsageChunk::Injected => assert!(
                removed_one_null_usage(&before, &after),
                "{mode:?}: more than a null usage was removed:\n{data}\n{new}"
            ),
            _ => {
                // `switchyard` appended last, and `usage.cost` added when priced.
                let Json::Object(mut members) = after else { panic!("the usage chunk is no longer an object: {new}") };
                let (key, extra) = members.pop().expect("the annotated chunk has members");
                assert_eq!(key, "switchyard", "{new}");
                assert!(extra.member("cost_usd").is_some() && extra.member("total_ms").is_some(), "{new}");
                let after = Json::Object(members);
                assert!(
                    after == before || appended_cost(&before, &after),
                    "{mode:?}: edited beyond the cost:\n{data}\n{new}"
                );
            }
        }
    }
    assert!(sent.next().is_none(), "{mode:?}: the client got more events than the answer had");
}

fn check_usage_text(text: &str, cost: &str) {
    let _ = usage::from_event(text);
    let _ = usage::is_usage_only_chunk(text);
    let _ = usage::from_body(text.as_bytes());
    let Some(with_cost) = usage::with_usage_cost(text, cost) else { return };
    assert!(
        !cost.is_empty() && cost.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !cost.starts_with('.'),
        "cost `{cost}` accepted"
    );
    assert!(is_json(text.as_bytes()), "a cost was added to non-JSON: {text}");
    assert!(is_json(with_cost.as_bytes()), "adding the cost broke the JSON:\n{text}\n{with_cost}");
    if let (Some(before), Some(after)) = (Json::parse(text.as_bytes()), Json::parse(with_cost.as_bytes())) {
        assert!(appended_cost(&before, &after), "adding the cost changed more:\n{text}\n{with_cost}");
    }
}
