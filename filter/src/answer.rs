//! What switchyard does to an upstream's answer: read its usage, price it, and keep a streamed
//! answer in the shape the client asked for.
//!
//! A non-streaming answer is whole when it is priced (`price_body`). A streamed (SSE) answer goes
//! through `StreamedAnswer` chunk by chunk: events pass on unchanged and as soon as they are
//! complete; the usage chunk is read, and then either removed (switchyard asked for it on the
//! client's behalf) or passed on with the cost added (the client asked for it). Bytes of an event
//! that is not complete yet are held until it is, so the client never sees half an edited event.
//! The host glue decides when to call these and what to do with headers, metrics and logs.

use crate::config::Price;
use crate::cost::{self, Cost, Unpriced};
use crate::route::UsageChunk;
use crate::sse::{Event, SseSplitter};
use crate::text::{push_decimal, push_json_string};
use crate::usage::{self, Usage};

/// What is known about an answer's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priced {
    /// Usage read and priced.
    Cost(Usage, Cost),
    /// Usage read, but the model lacks a price it needs.
    Unpriced(Usage, Unpriced),
    /// The answer carried no usage switchyard could read.
    NoUsage,
    /// The answer was too large to hold (non-streaming) or to follow (streaming).
    TooLarge,
}

impl Priced {
    pub fn from_usage(usage: Option<Usage>, price: &Price) -> Priced {
        match usage {
            None => Priced::NoUsage,
            Some(usage) => match cost::price(&usage, price) {
                Ok(cost) => Priced::Cost(usage, cost),
                Err(why) => Priced::Unpriced(usage, why),
            },
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        match self {
            Priced::Cost(usage, _) | Priced::Unpriced(usage, _) => Some(*usage),
            Priced::NoUsage | Priced::TooLarge => None,
        }
    }

    /// The `x-switchyard-cost-usd` value: a decimal string, or `unknown`.
    pub fn cost_text(&self) -> String {
        match self {
            Priced::Cost(_, cost) => cost.text(),
            _ => "unknown".to_owned(),
        }
    }

    /// Why the cost is unknown (`x-switchyard-cost-status`), or `ok`.
    pub fn status(&self) -> &'static str {
        match self {
            Priced::Cost(..) => "ok",
            Priced::Unpriced(..) => "unpriced",
            Priced::NoUsage => "no-usage",
            Priced::TooLarge => "too-large",
        }
    }
}

/// Prices a whole non-streaming answer.
pub fn price_body(body: &[u8], price: &Price) -> Priced {
    Priced::from_usage(usage::from_body(body), price)
}

/// Latency figures added to the final usage chunk of a stream the client asked usage for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub upstream_ms: u64,
    pub ttft_ms: u64,
    pub total_ms: u64,
}

/// Follows one streamed answer.
pub struct StreamedAnswer {
    splitter: SseSplitter,
    events: Events,
    /// Largest incomplete event held before switchyard stops following the stream.
    limit: usize,
    gave_up: bool,
}

/// What the events of a stream have said so far, and what to do with them.
struct Events {
    mode: UsageChunk,
    price: Price,
    usage: Option<Usage>,
    /// An event has been taken: a byte order mark is no longer possible.
    started: bool,
}

impl StreamedAnswer {
    pub fn new(mode: UsageChunk, price: Price, limit: usize) -> Self {
        StreamedAnswer {
            splitter: SseSplitter::new(),
            events: Events { mode, price, usage: None, started: false },
            limit,
            gave_up: false,
        }
    }

    /// Whether this stream's bytes may be edited (else they are only read).
    fn edits(&self) -> bool {
        matches!(self.events.mode, UsageChunk::Injected | UsageChunk::ClientAsked) && !self.gave_up
    }

    /// Takes one chunk of the answer. Returns the bytes to send instead of it, or `None` when the
    /// chunk goes on exactly as it came. `timing` goes into an edited usage chunk.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool, timing: Timing) -> Option<Vec<u8>> {
        self.push_with(chunk, end_of_stream, &|| timing)
    }

    /// [`StreamedAnswer::push`] with the timing asked for only when a usage chunk is annotated
    /// (reading the clock is a hostcall; most chunks do not need it).
    pub fn push_with(&mut self, chunk: &[u8], end_of_stream: bool, timing: &dyn Fn() -> Timing) -> Option<Vec<u8>> {
        if self.gave_up {
            return None;
        }
        let held_before = self.splitter.pending_len();
        let edits = self.edits();
        let mut out: Vec<u8> = Vec::with_capacity(if edits { chunk.len() + held_before } else { 0 });
        let mut changed = false;
        let events = &mut self.events;
        self.splitter.feed(chunk, |event| changed |= events.take(&event, edits, timing, &mut out));
        if end_of_stream {
            self.splitter.finish(|event| changed |= events.take(&event, edits, timing, &mut out));
        }
        if end_of_stream {
            out.extend_from_slice(&self.splitter.take_pending());
        } else if self.splitter.pending_len() > self.limit {
            // An event this large is not an LLM stream switchyard understands: stop following it
            // and let every byte through as it is.
            self.gave_up = true;
            out.extend_from_slice(&self.splitter.take_pending());
            return edits.then_some(out);
        }
        if !edits {
            return None;
        }
        // Nothing edited, nothing held from before and nothing held back now: the events are
        // exactly the chunk, which can go as it is, without a copy into Envoy.
        let same = !changed && held_before == 0 && self.splitter.pending_len() == 0;
        (!same).then_some(out)
    }

    /// What the stream's usage chunk said, priced; `TooLarge` when switchyard stopped following.
    pub fn priced(&self) -> Priced {
        if self.gave_up {
            return Priced::TooLarge;
        }
        Priced::from_usage(self.events.usage, &self.events.price)
    }
}

impl Events {
    /// Handles one complete event: records its usage and, when editing, appends what the client
    /// gets in its place to `out`. True when that differs from the event's bytes.
    fn take(&mut self, event: &Event<'_>, edits: bool, timing: &dyn Fn() -> Timing, out: &mut Vec<u8>) -> bool {
        let first = !std::mem::replace(&mut self.started, true);
        let Some(data) = event.data.as_deref() else {
            if edits {
                out.extend_from_slice(event.raw);
            }
            return false;
        };
        // The search for `usage` members that tells whether the event may carry usage also finds
        // the `"usage": null` member a stream with usage injected loses.
        let strip = edits && matches!(self.mode, UsageChunk::Injected);
        let mut null_member = None;
        let found = usage::from_event_noting(data, |at, value| {
            if strip && null_member.is_none() {
                null_member = top_level_null(data.as_bytes(), at, value);
            }
        });
        if found.is_some() {
            self.usage = found;
        }
        if !edits {
            return false;
        }
        match (self.mode, found) {
            // The usage chunk switchyard asked for: the client gets nothing in its place.
            (UsageChunk::Injected, Some(_)) if usage::is_usage_only_chunk(data) => return true,
            // With usage switched on, providers put `"usage":null` in every other chunk; a
            // client that did not ask for usage gets its chunks without it.
            (UsageChunk::Injected, None) => {
                if let Some((before, after)) = null_member.and_then(|member| strip_member(data, member)) {
                    replace_data(out, event.raw, data, &[before, after], first);
                    return true;
                }
            }
            (UsageChunk::ClientAsked, Some(_)) => {
                if let Some(edited) = annotate(data, &Priced::from_usage(found, &self.price), timing()) {
                    replace_data(out, event.raw, data, &[&edited], first);
                    return true;
                }
            }
            _ => {}
        }
        out.extend_from_slice(event.raw);
        false
    }
}

/// The usage chunk's `data` with `usage.cost` (unless the upstream put one there) and a
/// `switchyard` member with the cost and latency figures.
fn annotate(data: &str, priced: &Priced, timing: Timing) -> Option<String> {
    let cost = priced.cost_text();
    let with_cost = match priced {
        Priced::Cost(..) => usage::with_usage_cost(data, &cost).unwrap_or_else(|| data.to_owned()),
        _ => data.to_owned(),
    };
    let trimmed = with_cost.trim_end();
    let body = trimmed.strip_suffix('}')?;
    let mut out = String::with_capacity(body.len().saturating_add(160));
    out.push_str(body);
    out.push_str(r#","switchyard":{"cost_usd":"#);
    push_json_string(&mut out, &cost);
    out.push_str(r#","cost_status":"#);
    push_json_string(&mut out, priced.status());
    for (key, value) in [
        (r#","upstream_ms":"#, timing.upstream_ms),
        (r#","ttft_ms":"#, timing.ttft_ms),
        (r#","total_ms":"#, timing.total_ms),
    ] {
        out.push_str(key);
        push_decimal(&mut out, value);
    }
    out.push_str("}}");
    Some(out)
}

/// `data` without the member at byte span `member` (its top-level `"usage": null`, say), as the
/// text before the member and the text after it; one comma next to it goes with it.
fn strip_member(data: &str, (start, end): (usize, usize)) -> Option<(&str, &str)> {
    let before = data.get(..start)?;
    let after = data.get(end..)?;
    if let Some(before) = before.trim_end().strip_suffix(',') {
        // `..., "usage":null}` → `...}`
        return Some((before, after));
    }
    // `{"usage":null, ...}` → `{...}`
    let after = after.trim_start().strip_prefix(',').unwrap_or(after);
    Some((before, after))
}

/// The byte span of the member whose key `"usage"` starts at `at` and whose value starts at
/// `value` (a candidate from [`usage::usage_values`]), when it is a top-level `"usage": null`.
///
/// Each `"usage"` in the text is a candidate (found with a vector search, not by walking the text):
/// in valid JSON, one that is not preceded by an odd number of backslashes is a whole string, not
/// part of one, and followed by `:` it is a key. It is taken when its value is `null` and the
/// object it is in is the outermost one: walking on from the `null` (strings skipped), the first
/// bracket that closes what was not opened after it is the last byte of the text. Only the text
/// after the member is walked; in a chunk, `usage` is one of the last members.
fn top_level_null(data: &[u8], at: usize, value: usize) -> Option<(usize, usize)> {
    const NULL: &[u8] = b"null";
    let backslashes = data.get(..at)?.iter().rev().take_while(|b| **b == b'\\').count();
    if backslashes % 2 == 1 {
        return None;
    }
    let value_end = value.saturating_add(NULL.len());
    if data.get(value..value_end) != Some(NULL)
        || !matches!(data.get(usage::skip_json_space(data, value_end)), Some(b',' | b'}'))
    {
        return None;
    }
    let closing = enclosing_close(data, value_end)?;
    data.get(closing.saturating_add(1)..)?.iter().all(usage::is_json_space).then_some((at, value_end))
}

/// Where the bracket that closes the object or array around `from` is: walking on from `from`
/// (outside any string), the first `}` or `]` that closes nothing opened after `from`.
fn enclosing_close(data: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = from;
    while let Some(&byte) = data.get(at) {
        match byte {
            b'"' => {
                at = string_end(data, at)?;
                continue;
            }
            b'{' | b'[' => depth = depth.saturating_add(1),
            b'}' | b']' if depth == 0 => return Some(at),
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at = at.saturating_add(1);
    }
    None
}

/// The index just past the closing quote of the JSON string that opens at `open`.
fn string_end(data: &[u8], open: usize) -> Option<usize> {
    let mut at = open.saturating_add(1);
    loop {
        at = at.checked_add(memchr::memchr2(b'"', b'\\', data.get(at..)?)?)?;
        match data.get(at)? {
            b'"' => return at.checked_add(1),
            _ => at = at.saturating_add(2),
        }
    }
}

/// The event's raw bytes with its `data` lines replaced by `new`, one `data` line per line of it,
/// written where the first `data` line was, with that line's spelling (`data:` or `data: `). Every
/// other line (`event`, `id`, comments, the blank line ending the event) is kept. Line ends stay
/// `\r\n` or `\n`, but a lone `\r` becomes `\n`: with lines taken out, a kept `\r` could meet a `\n`
/// and the two would read as one line end. `stream_start`: this is the stream's first event, where a
/// byte order mark is skipped.
/// `new` comes in parts, written one after the other as one text. The result is appended to `out`.
/// `data` is the event's parsed `data`: when it is the one line of an event that has nothing else
/// (the usual chunk), the line is replaced without walking the event's lines again.
fn replace_data(out: &mut Vec<u8>, raw: &[u8], data: &str, new: &[&str], stream_start: bool) {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let new_len: usize = new.iter().map(|part| part.len()).sum();
    if let Some((prefix, end)) = lone_data_line(raw, data) {
        if new.iter().all(|part| memchr::memchr(b'\n', part.as_bytes()).is_none()) {
            out.reserve(prefix.len().saturating_add(new_len).saturating_add(end.len()));
            out.extend_from_slice(prefix);
            for part in new {
                out.extend_from_slice(part.as_bytes());
            }
            out.extend_from_slice(end);
            return;
        }
    }
    out.reserve(raw.len().saturating_add(new_len));
    let mut rest = raw;
    if let Some(after) = rest.strip_prefix(BOM).filter(|_| stream_start) {
        out.extend_from_slice(BOM);
        rest = after;
    }
    let mut written = false;
    while !rest.is_empty() {
        let at = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
        let end_len = match rest.get(at..) {
            Some([b'\r', b'\n', ..]) => 2,
            Some([_, ..]) => 1,
            _ => 0,
        };
        let (line, after) = rest.split_at_checked(at).unwrap_or((rest, &[]));
        let (end, tail) = after.split_at_checked(end_len).unwrap_or((after, &[]));
        rest = tail;
        let end: &[u8] = if end == b"\r\n" { end } else { b"\n" };
        let colon = line.iter().position(|&b| b == b':');
        if line.get(..colon.unwrap_or(line.len())) != Some(b"data") {
            out.extend_from_slice(line);
            out.extend_from_slice(end);
            continue;
        }
        if written {
            continue;
        }
        written = true;
        let prefix = match colon {
            Some(c) => line.get(..c.saturating_add(if line.get(c.saturating_add(1)) == Some(&b' ') { 2 } else { 1 })),
            None => None,
        };
        let prefix = prefix.unwrap_or(b"data: ");
        out.extend_from_slice(prefix);
        for part in new {
            let mut lines = part.split('\n');
            if let Some(first) = lines.next() {
                out.extend_from_slice(first.as_bytes());
            }
            for line in lines {
                out.extend_from_slice(end);
                out.extend_from_slice(prefix);
                out.extend_from_slice(line.as_bytes());
            }
        }
        out.extend_from_slice(end);
    }
}

/// When the event is exactly `data:` or `data: `, then `data`, then `\n\n` or `\r\n\r\n`, with
/// `data` borrowed from `raw` (one valid line): the bytes before and after `data`.
fn lone_data_line<'r>(raw: &'r [u8], data: &str) -> Option<(&'r [u8], &'r [u8])> {
    // Where `data` lies in `raw`, by address: a parsed line borrowed from the event, not a copy.
    let start = (data.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let end = start.checked_add(data.len())?;
    let prefix = raw.get(..start)?;
    let tail = raw.get(end..)?;
    (matches!(prefix, b"data:" | b"data: ") && matches!(tail, b"\n\n" | b"\r\n\r\n")).then_some((prefix, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use serde_json::json;

    /// `data` without its first top-level `"usage": null` member, as a stream with usage injected
    /// sends it.
    fn stripped(data: &str) -> Option<String> {
        let bytes = data.as_bytes();
        let member = usage::usage_values(bytes).find_map(|(at, value)| top_level_null(bytes, at, value))?;
        strip_member(data, member).map(|(before, after)| [before, after].concat())
    }

    fn price() -> Price {
        let c = from_value(json!({
            "upstreams": {"u": {"cluster": "c"}},
            "models": {"m": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6}},
            "categories": [{"name": "k", "candidates": [{"upstream": "u", "model": "m"}]}],
            "default_category": "k"
        }))
        .unwrap();
        c.models[0].price
    }

    const CHUNK1: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n";
    const CHUNK2: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,\"total_tokens\":1500}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn stream() -> String {
        [CHUNK1, CHUNK2, USAGE, DONE].concat()
    }

    /// Feeds `input` in pieces of `size` bytes; returns what the client receives.
    fn play(answer: &mut StreamedAnswer, input: &str, size: usize) -> String {
        let bytes = input.as_bytes();
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let timing = Timing { upstream_ms: 5, ttft_ms: 7, total_ms: 9 };
            match answer.push(piece, last, timing) {
                Some(replaced) => out.extend_from_slice(&replaced),
                None => out.extend_from_slice(piece),
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn injected_usage_chunk_is_removed_at_any_split() {
        for size in 1..=stream().len() {
            let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
            let got = play(&mut a, &stream(), size);
            let want = [CHUNK1, CHUNK2, DONE].concat().replace(",\"usage\":null", "");
            assert_eq!(got, want, "split {size}");
            let Priced::Cost(usage, cost) = a.priced() else { panic!("{:?}", a.priced()) };
            assert_eq!((usage.input, usage.output), (1000, 500));
            assert_eq!(cost.to_string(), "0.00045");
        }
    }

    #[test]
    fn null_usage_members_are_removed_only_when_injected() {
        assert_eq!(stripped(r#"{"a":1,"usage":null}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(stripped(r#"{"usage":null,"a":1}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(stripped(r#"{"a":"\"usage\":null"}"#), None);
        assert_eq!(stripped(r#"{ "a" : 1 , "usage" : null }"#).as_deref(), Some(r#"{ "a" : 1  }"#));
        // Only the top-level member, never text that merely looks like one.
        assert_eq!(stripped(r#"{"x\"usage":null}"#), None);
        assert_eq!(stripped(r#"{"\\\"usage":null}"#), None);
        assert_eq!(stripped(r#"{"a":{"usage":null}}"#), None);
        assert_eq!(stripped(r#"{"a":[{"usage":null}],"usage":null}"#).as_deref(), Some(r#"{"a":[{"usage":null}]}"#));
        assert_eq!(stripped(r#"{"usage":nullx}"#), None);
        assert_eq!(stripped(r#"{"usage":null"#), None);
        // A `"usage"` that is a value, not a key; members after it, with brackets in strings.
        assert_eq!(stripped(r#"{"k":"usage","usage":null}"#).as_deref(), Some(r#"{"k":"usage"}"#));
        assert_eq!(
            stripped(r#"{"a":{"b":1},"usage":null,"c":[1,{"d":"}]"}],"e":"\"}"} "#).as_deref(),
            Some(r#"{"a":{"b":1},"c":[1,{"d":"}]"}],"e":"\"}"} "#)
        );
        assert_eq!(stripped(r#"{"a":[{"usage":null,"x":1}],"b":2}"#), None);
        assert_eq!(stripped(r#"{"a":{"usage":null},"b":"}"}"#), None);
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        let got = play(&mut a, &stream(), 13);
        assert!(!got.contains("usage"), "{got}");
        let mut a = StreamedAnswer::new(UsageChunk::ClientAsked, price(), 1 << 20);
        let got = play(&mut a, &stream(), 13);
        assert_eq!(got.matches("\"usage\":null").count(), 2, "{got}");
    }

    #[test]
    fn client_asked_usage_chunk_gets_the_cost() {
        let mut a = StreamedAnswer::new(UsageChunk::ClientAsked, price(), 1 << 20);
        let got = play(&mut a, &stream(), 17);
        let expected_usage = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,\"total_tokens\":1500,\"cost\":0.00045},\"switchyard\":{\"cost_usd\":\"0.00045\",\"cost_status\":\"ok\",\"upstream_ms\":5,\"ttft_ms\":7,\"total_ms\":9}}\n\n";
        assert_eq!(got, [CHUNK1, CHUNK2, expected_usage, DONE].concat());
    }

    #[test]
    fn upstream_cost_is_not_overwritten() {
        let usage = USAGE.replace("\"total_tokens\":1500", "\"total_tokens\":1500,\"cost\":0.5");
        let mut a = StreamedAnswer::new(UsageChunk::ClientAsked, price(), 1 << 20);
        let got = play(&mut a, &usage, 1000);
        assert!(got.contains("\"cost\":0.5}"), "{got}");
        assert!(!got.contains("\"cost\":0.00045"), "{got}");
        assert!(got.contains("\"cost_usd\":\"0.00045\""), "{got}");
    }

    #[test]
    fn read_only_streams_pass_every_chunk_untouched() {
        for mode in [UsageChunk::NotApplicable, UsageChunk::Unavailable] {
            let mut a = StreamedAnswer::new(mode, price(), 1 << 20);
            for piece in stream().as_bytes().chunks(10) {
                assert_eq!(a.push(piece, false, Timing::default()), None);
            }
            assert!(matches!(a.priced(), Priced::Cost(..)));
        }
    }

    #[test]
    fn whole_events_pass_without_a_copy() {
        let mut a = StreamedAnswer::new(UsageChunk::ClientAsked, price(), 1 << 20);
        assert_eq!(a.push(CHUNK1.as_bytes(), false, Timing::default()), None);
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        let bare = CHUNK1.replace(",\"usage\":null", "");
        assert_eq!(a.push(bare.as_bytes(), false, Timing::default()), None);
        assert_eq!(a.push(USAGE.as_bytes(), false, Timing::default()), Some(Vec::new()));
        assert_eq!(a.push(DONE.as_bytes(), true, Timing::default()), None);
    }

    #[test]
    fn held_bytes_are_never_reordered_or_lost() {
        // Every way to cut a short stream in three, in every mode.
        let input = "data: {\"a\":1}\n\ndata: {\"b\":22}\r\n\r\n: comment\n\ndata: [DONE]\n\n";
        for mode in [UsageChunk::Injected, UsageChunk::ClientAsked, UsageChunk::NotApplicable] {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let mut a = StreamedAnswer::new(mode, price(), 1 << 20);
                    let mut out = Vec::new();
                    let pieces = [&input.as_bytes()[..i], &input.as_bytes()[i..j], &input.as_bytes()[j..]];
                    for (k, piece) in pieces.iter().enumerate() {
                        match a.push(piece, k == 2, Timing::default()) {
                            Some(bytes) => out.extend_from_slice(&bytes),
                            None => out.extend_from_slice(piece),
                        }
                    }
                    assert_eq!(String::from_utf8(out).unwrap(), input, "{mode:?} cut at {i}, {j}");
                }
            }
        }
    }

    #[test]
    fn usage_in_a_final_event_ended_by_a_lone_cr_is_read() {
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        let input = [CHUNK1, &USAGE.replace("\n\n", "\r\r")].concat();
        let got = play(&mut a, &input, 1000);
        assert!(!got.contains("prompt_tokens"), "{got}");
        assert!(matches!(a.priced(), Priced::Cost(..)), "{:?}", a.priced());
    }

    #[test]
    fn edited_events_keep_their_other_lines_and_every_data_line() {
        // A payload split over several `data` lines, with an `event` line and a comment holding
        // the same text: each line of the edited payload gets its own `data` field, the rest stays.
        let input = "event: chunk\r\n: {\"a\":1,\"usage\":null}\r\ndata:{\"a\":1,\r\ndata:\"usage\":null}\r\n\r\n";
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        let got = play(&mut a, input, 1000);
        assert_eq!(got, "event: chunk\r\n: {\"a\":1,\"usage\":null}\r\ndata:{\"a\":1}\r\n\r\n");
        // With the second `data` line gone, the `\r` ending `event` would meet the blank line's `\n`.
        let input = "data: {\"a\":1,\nevent: x\rdata: \"usage\":null}\n\ndata: [DONE]\n\n";
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        assert_eq!(play(&mut a, input, 1000), "data: {\"a\":1}\nevent: x\n\ndata: [DONE]\n\n");
        let usage = "data: {\"choices\":[],\ndata:\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500}}\n\n";
        let mut a = StreamedAnswer::new(UsageChunk::ClientAsked, price(), 1 << 20);
        let got = play(&mut a, usage, 7);
        let data: Vec<&str> = got.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
        let v: serde_json::Value = serde_json::from_str(&data.join("\n")).unwrap();
        assert_eq!(v["usage"]["cost"], 0.00045);
    }

    #[test]
    fn a_lone_data_line_is_replaced_as_the_line_walk_would() {
        let events: &[&[u8]] = &[
            b"data: {\"a\":1}\n\n",
            b"data:{\"a\":1}\r\n\r\n",
            b"data:  {\"a\":1}\n\n",
            b"data: \n\n",
            // Not the shortcut's shape: the walk handles them.
            b"event: x\ndata: {\"a\":1}\n\n",
            b"data: {\"a\":1}\r\r",
            b"\xEF\xBB\xBFdata: {\"a\":1}\n\n",
        ];
        let mut seen = 0;
        for raw in events {
            let mut splitter = SseSplitter::new();
            let mut check = |event: Event<'_>| {
                let Some(std::borrow::Cow::Borrowed(data)) = event.data else { panic!("{raw:?}: one valid data line") };
                for new in [&["x", "y"][..], &["x\ny"], &[""]] {
                    let (mut fast, mut walked) = (Vec::new(), Vec::new());
                    replace_data(&mut fast, event.raw, data, new, true);
                    // The same text at another address is not the event's line: the walk runs.
                    let copy = String::from(data);
                    replace_data(&mut walked, event.raw, copy.as_str(), new, true);
                    assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&walked), "{raw:?} {new:?}");
                }
                seen += 1;
            };
            splitter.feed(raw, &mut check);
            splitter.finish(&mut check);
        }
        assert_eq!(seen, events.len());
        let raw: &[u8] = b"data: {\"a\":1}\n\n";
        let data = std::str::from_utf8(&raw[6..13]).unwrap();
        assert_eq!(lone_data_line(raw, data), Some((&b"data: "[..], &b"\n\n"[..])));
        assert_eq!(lone_data_line(raw, &data[1..]), None, "not the whole value");
        assert_eq!(lone_data_line(raw, "{\"a\":1}"), None, "a copy elsewhere");
    }

    #[test]
    fn replaced_data_gets_one_line_per_line_across_its_parts() {
        let mut out = Vec::new();
        replace_data(
            &mut out,
            b"id: 1\r\ndata:old\r\ndata:old\r\n\r\n",
            "old\nold",
            &["x\ny", "\nz", "", "w\n"],
            false,
        );
        assert_eq!(out, b"id: 1\r\ndata:x\r\ndata:y\r\ndata:zw\r\ndata:\r\n\r\n");
        // The stripped member's comma and the line breaks around it.
        let input = "data: {\"a\":1,\ndata: \"b\":2,\"usage\":null\ndata: }\n\n";
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        assert_eq!(play(&mut a, input, 5), "data: {\"a\":1,\ndata: \"b\":2\ndata: }\n\n");
    }

    #[test]
    fn stream_without_usage_is_reported() {
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 1 << 20);
        let input = [CHUNK1, CHUNK2, DONE].concat().replace(",\"usage\":null", "");
        assert_eq!(play(&mut a, &input, 5), input);
        assert_eq!(a.priced(), Priced::NoUsage);
    }

    #[test]
    fn oversized_event_stops_the_following_but_loses_nothing() {
        let mut a = StreamedAnswer::new(UsageChunk::Injected, price(), 64);
        let input = format!("data: {}\n\n{}", "x".repeat(500), [CHUNK1, USAGE, DONE].concat());
        assert_eq!(play(&mut a, &input, 50), input);
        assert_eq!(a.priced(), Priced::TooLarge);
    }

    #[test]
    fn unterminated_tail_is_flushed_at_the_end() {
        let mut a = StreamedAnswer::new(UsageChunk::ClientAsked, price(), 1 << 20);
        let input = format!("{CHUNK1}data: {{\"partial\"");
        assert_eq!(play(&mut a, &input, 9), input);
    }

    #[test]
    fn bodies_are_priced() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500}}"#;
        assert_eq!(price_body(body, &price()).cost_text(), "0.00045");
        assert_eq!(price_body(b"{}", &price()), Priced::NoUsage);
        assert_eq!(price_body(b"{}", &price()).cost_text(), "unknown");
        let unpriced = price_body(body, &Price::default());
        assert_eq!((unpriced.status(), unpriced.cost_text().as_str()), ("unpriced", "unknown"));
    }
}
