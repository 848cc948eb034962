//! Splitting a `text/event-stream` answer into events, however its bytes were chunked.
//!
//! Upstreams stream answers as Server-Sent Events, and Envoy hands them to the filter in chunks cut
//! anywhere: inside a line, inside a UTF-8 character, between the `\r` and the `\n` of a line end.
//! `SseSplitter` holds the bytes of an unfinished event until the blank line that ends it arrives,
//! then hands the event back with its exact bytes and its `data` and `event` fields, read by the
//! WHATWG event-stream rules: lines end with `\r\n`, `\n` or `\r`; a line starting with `:` is a
//! comment; one space after a field's colon is dropped; `data` lines are joined with `\n`; a UTF-8
//! byte order mark at the start of the stream is ignored. Every byte it is given comes back
//! unchanged, either in some event's `raw` or from `take_pending`, so the caller can pass an event
//! on, drop it or replace it without disturbing the rest of the stream.
//!
//! This module decides only where events begin and end and what their fields say. What an event
//! means (usage, `[DONE]`), what to do with it, and how many bytes may be held back before giving
//! up on an oversized event are the caller's decisions (`pending_len` tells it how many are held).

use std::borrow::Cow;

/// The UTF-8 byte order mark, ignored at the very start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One complete event of a stream, borrowed from the chunk (or the held bytes) it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's exact bytes, from its first line through the blank line that ends it.
    pub raw: &'a [u8],
    /// The `data` field: the values of all `data:` lines joined by `\n`; `None` when the event has
    /// no data line (only comments, say, or nothing but the blank line). Invalid UTF-8 is replaced
    /// by U+FFFD here; `raw` keeps the bytes as they came. One valid line is borrowed, not copied.
    pub data: Option<Cow<'a, str>>,
    /// The `event` field (the last one, when there are several).
    pub event: Option<Cow<'a, str>>,
}

/// An incremental splitter: feed it chunks in order, get back each event as soon as it is complete.
#[derive(Debug, Default)]
pub struct SseSplitter {
    /// Bytes of the unfinished event. A chunk that ends on an event boundary is never copied here.
    pending: Vec<u8>,
    cursor: Cursor,
}

/// How far the pending bytes have been scanned, so that no byte is scanned twice.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    /// Bytes of the buffer already scanned for line ends.
    scanned: usize,
    /// Where the line being scanned starts.
    line_start: usize,
    /// The last line ended with `\r`: a `\n` right after it is part of the same line end.
    after_cr: bool,
    /// At least one event has been completed: a byte order mark is no longer possible.
    past_start: bool,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; hands each event it completes to `each`, in order. The events borrow the
    /// chunk (or the bytes held from earlier chunks): nothing is copied unless an event spans chunks.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(Event<'_>)) {
        if self.pending.is_empty() {
            // Nothing held: scan the chunk where it lies and keep only its unfinished tail.
            let consumed = self.cursor.scan(chunk, &mut each);
            self.pending.extend_from_slice(chunk.get(consumed..).unwrap_or_default());
            self.cursor.rebase(consumed);
        } else {
            self.pending.extend_from_slice(chunk);
            let consumed = self.cursor.scan(&self.pending, &mut each);
            self.pending.drain(..consumed);
            self.cursor.rebase(consumed);
        }
    }

    /// At end of stream: hands `each` the held event that is complete but was kept back only
    /// because its blank line ended with a `\r` that a `\n` might have followed. Call it before
    /// `take_pending`. True when there was such an event.
    pub fn finish(&mut self, each: impl FnOnce(Event<'_>)) -> bool {
        let c = self.cursor;
        let held = c.line_start == c.scanned
            && self.pending.get(c.scanned) == Some(&b'\r')
            && c.scanned.checked_add(1) == Some(self.pending.len());
        if !held {
            return false;
        }
        each(Event::parse(&self.pending, !c.past_start));
        self.pending.clear();
        self.cursor = Cursor { past_start: true, ..Cursor::default() };
        true
    }

    /// Bytes held back (an incomplete event), for the caller to flush as-is at end of stream.
    /// The splitter starts afresh afterwards: the next byte pushed is taken as the start of an event.
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.cursor = Cursor { past_start: self.cursor.past_start, ..Cursor::default() };
        std::mem::take(&mut self.pending)
    }

    /// How many bytes are held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

impl Cursor {
    /// Scans `buf` from where the last scan stopped, hands `each` the events it completes, and returns
    /// how many leading bytes of `buf` those events took.
    fn scan(&mut self, buf: &[u8], each: &mut impl FnMut(Event<'_>)) -> usize {
        let mut event_start = 0;
        let mut i = self.scanned;
        while let Some(rest) = buf.get(i..) {
            if self.after_cr {
                match rest.first() {
                    None => break,
                    Some(b'\n') => {
                        i = i.saturating_add(1);
                        self.line_start = i;
                        self.after_cr = false;
                        continue;
                    }
                    Some(_) => self.after_cr = false,
                }
            }
            let Some(offset) = find_line_end(rest) else {
                i = buf.len();
                break;
            };
            let at = i.saturating_add(offset);
            let is_cr = rest.get(offset) == Some(&b'\r');
            let mut end = at.saturating_add(1);
            if at == self.line_start {
                // A blank line: the event ends here, line end included.
                if is_cr {
                    match buf.get(end) {
                        // Is this `\r` alone or the start of `\r\n`? Wait for the next byte.
                        None => {
                            i = at;
                            break;
                        }
                        Some(b'\n') => end = end.saturating_add(1),
                        Some(_) => {}
                    }
                }
                if let Some(raw) = buf.get(event_start..end) {
                    each(Event::parse(raw, !self.past_start));
                }
                self.past_start = true;
                event_start = end;
            } else {
                self.after_cr = is_cr;
            }
            i = end;
            self.line_start = end;
        }
        self.scanned = i;
        event_start
    }

    /// Makes positions relative to the buffer once its first `consumed` bytes are gone.
    fn rebase(&mut self, consumed: usize) {
        self.scanned = self.scanned.saturating_sub(consumed);
        self.line_start = self.line_start.saturating_sub(consumed);
    }
}

/// A field's value as text, borrowed when it is valid UTF-8 (checking is cheaper than the lossy
/// conversion, which is only for the rare value that is not).
fn text(value: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(value) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value),
    }
}

/// The index of the first `\n` or `\r` in `bytes`.
fn find_line_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', bytes)
}

impl<'a> Event<'a> {
    /// Reads the fields of a complete event.
    fn parse(raw: &'a [u8], stream_start: bool) -> Event<'a> {
        let mut data: Option<Cow<'a, str>> = None;
        let mut event = None;
        let mut rest = raw;
        if stream_start {
            rest = rest.strip_prefix(BOM).unwrap_or(rest);
        }
        while !rest.is_empty() {
            let end = find_line_end(rest).unwrap_or(rest.len());
            let (line, after) = rest.split_at_checked(end).unwrap_or((rest, &[]));
            rest = match after {
                [b'\r', b'\n', tail @ ..] | [_, tail @ ..] => tail,
                [] => &[],
            };
            if line.is_empty() || line.first() == Some(&b':') {
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let (name, value) = line.split_at_checked(colon).unwrap_or((line, &[]));
                    let value = value.get(1..).unwrap_or_default();
                    (name, value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            match name {
                b"data" => {
                    let value = text(value);
                    data = Some(match data {
                        Some(joined) => {
                            let mut joined = joined.into_owned();
                            joined.push('\n');
                            joined.push_str(&value);
                            Cow::Owned(joined)
                        }
                        None => value,
                    });
                }
                b"event" => event = Some(text(value)),
                _ => {}
            }
        }
        Event { raw, data, event }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chat completions stream as OpenAI sends it with `stream_options.include_usage`.
    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-BqX\",\"object\":\"chat.completion.chunk\",\"created\":1751900000,",
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_34a54ae93c\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},",
        "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"x1\"}\n\n",
        "data: {\"id\":\"chatcmpl-BqX\",\"object\":\"chat.completion.chunk\",\"created\":1751900000,",
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_34a54ae93c\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Crème brûlée 🚂\"},\"logprobs\":null,",
        "\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"Yz\"}\n\n",
        "data: {\"id\":\"chatcmpl-BqX\",\"object\":\"chat.completion.chunk\",\"created\":1751900000,",
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_34a54ae93c\",",
        "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-BqX\",\"object\":\"chat.completion.chunk\",\"created\":1751900000,",
        "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_34a54ae93c\",",
        "\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,",
        "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":",
        "{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// A short stream with every line-end style, comments, fields and multi-byte characters.
    const MIXED_STREAM: &[u8] = b": keep-alive\r\n\r\nevent: delta\r\ndata: h\xC3\xA9\rdata:  two\n\ndata\nid: 7\r\r\n:c\ndata: \xF0\x9F\x9A\x82\n\n";

    /// An event copied out of the splitter, to compare and keep across chunks.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Owned {
        raw: Vec<u8>,
        data: Option<String>,
        event: Option<String>,
    }

    impl From<Event<'_>> for Owned {
        fn from(e: Event<'_>) -> Self {
            Owned { raw: e.raw.to_vec(), data: e.data.map(Cow::into_owned), event: e.event.map(Cow::into_owned) }
        }
    }

    /// The splitter's events, collected.
    trait Collect {
        fn push(&mut self, chunk: &[u8]) -> Vec<Owned>;
        fn end(&mut self) -> Option<Owned>;
    }

    impl Collect for SseSplitter {
        fn push(&mut self, chunk: &[u8]) -> Vec<Owned> {
            let mut events = Vec::new();
            self.feed(chunk, |e| events.push(Owned::from(e)));
            events
        }

        fn end(&mut self) -> Option<Owned> {
            let mut last = None;
            let had = self.finish(|e| last = Some(Owned::from(e)));
            assert_eq!(had, last.is_some());
            last
        }
    }

    fn feed(splitter: &mut SseSplitter, chunks: &[&[u8]]) -> Vec<Owned> {
        chunks.iter().flat_map(|c| splitter.push(c)).collect()
    }

    fn whole(input: &[u8]) -> Vec<Owned> {
        let mut s = SseSplitter::new();
        let events = s.push(input);
        assert_eq!(s.pending_len(), 0);
        events
    }

    #[test]
    fn openai_stream_whole() {
        let events = whole(OPENAI_STREAM.as_bytes());
        assert_eq!(events.len(), 5);
        assert!(events.iter().all(|e| e.event.is_none()));
        assert!(events[1].data.as_deref().unwrap().contains("Crème brûlée 🚂"));
        assert!(events[3].data.as_deref().unwrap().contains("\"choices\":[]"));
        assert_eq!(events[4].data.as_deref(), Some("[DONE]"));
        assert_eq!(events[4].raw, b"data: [DONE]\n\n");
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(joined, OPENAI_STREAM.as_bytes());
        for e in &events[..4] {
            let data = e.data.as_deref().unwrap();
            assert!(data.starts_with('{') && data.ends_with('}'), "{data}");
            assert_eq!(e.raw, format!("data: {data}\n\n").as_bytes());
        }
    }

    #[test]
    fn openai_stream_split_at_every_offset() {
        let input = OPENAI_STREAM.as_bytes();
        let want = whole(input);
        for cut in 0..=input.len() {
            let mut s = SseSplitter::new();
            let got = feed(&mut s, &[&input[..cut], &input[cut..]]);
            assert_eq!(got, want, "split at {cut}");
            assert_eq!(s.pending_len(), 0);
        }
    }

    #[test]
    fn openai_stream_byte_by_byte() {
        let input = OPENAI_STREAM.as_bytes();
        let mut s = SseSplitter::new();
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&mut s, &chunks), whole(input));
    }

    #[test]
    fn mixed_stream_fields() {
        let events = whole(MIXED_STREAM);
        let fields: Vec<(Option<&str>, Option<&str>)> =
            events.iter().map(|e| (e.event.as_deref(), e.data.as_deref())).collect();
        assert_eq!(fields, [(None, None), (Some("delta"), Some("hé\n two")), (None, Some("")), (None, Some("🚂")),]);
        let raws: Vec<&[u8]> = events.iter().map(|e| e.raw.as_slice()).collect();
        assert_eq!(
            raws,
            [
                &b": keep-alive\r\n\r\n"[..],
                b"event: delta\r\ndata: h\xC3\xA9\rdata:  two\n\n",
                b"data\nid: 7\r\r\n",
                b":c\ndata: \xF0\x9F\x9A\x82\n\n",
            ]
        );
    }

    #[test]
    fn mixed_stream_split_at_every_pair_of_offsets() {
        let input = MIXED_STREAM;
        let want = whole(input);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut s = SseSplitter::new();
                let got = feed(&mut s, &[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(got, want, "split at {a} and {b}");
                assert_eq!(s.pending_len(), 0);
            }
        }
    }

    #[test]
    fn crlf_and_lone_cr_line_ends() {
        let events = whole(b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\nevent: b\rdata: 3\r\rdata: 4\n\n");
        assert_eq!(events.len(), 3);
        assert_eq!((events[0].event.as_deref(), events[0].data.as_deref()), (Some("a"), Some("1\n2")));
        assert_eq!((events[1].event.as_deref(), events[1].data.as_deref()), (Some("b"), Some("3")));
        assert_eq!(events[1].raw, b"event: b\rdata: 3\r\r");
        assert_eq!(events[2].data.as_deref(), Some("4"));
    }

    #[test]
    fn cr_at_end_of_chunk_waits_for_the_next_byte() {
        let mut s = SseSplitter::new();
        assert!(s.push(b"data: x\r\n\r").is_empty(), "the `\\n` of `\\r\\n` may follow");
        let events = s.push(b"\ndata: y\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raw, b"data: x\r\n\r\n");
        assert_eq!(events[1].raw, b"data: y\n\n");

        let mut s = SseSplitter::new();
        assert!(s.push(b"data: x\r\r").is_empty());
        let events = s.push(b"data: y\r\r");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw, b"data: x\r\r");
        let last = s.end().unwrap();
        assert_eq!((last.raw.as_slice(), last.data.as_deref()), (&b"data: y\r\r"[..], Some("y")));
        assert_eq!(s.pending_len(), 0);
        assert!(s.take_pending().is_empty());
    }

    #[test]
    fn one_valid_data_line_is_borrowed_not_copied() {
        let mut s = SseSplitter::new();
        let mut kinds = Vec::new();
        s.feed(b"data: a\n\ndata: b\ndata: c\n\ndata: \xFF\n\n", |e| {
            kinds.push(matches!(e.data, Some(Cow::Borrowed(_))));
        });
        assert_eq!(kinds, [true, false, false]);
    }

    #[test]
    fn comments_only_event_has_no_data() {
        let events = whole(b": ping\n\n:\n\n\n");
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.data.is_none() && e.event.is_none()));
        assert_eq!(events[2].raw, b"\n");
    }

    #[test]
    fn field_rules() {
        // No space after the colon, two spaces (one kept), no colon at all, unknown fields, and a
        // field name that only starts like `data`.
        let events = whole(b"data:a\ndata:  b\ndata\nretry: 10\nid: 1\ndatum: no\nevent:x\nevent: y\n\n");
        assert_eq!(events[0].data.as_deref(), Some("a\n b\n"));
        assert_eq!(events[0].event.as_deref(), Some("y"));
        // Values may contain colons.
        let events = whole(b"data: {\"a\":\"b:c\"}\n\n");
        assert_eq!(events[0].data.as_deref(), Some("{\"a\":\"b:c\"}"));
    }

    #[test]
    fn byte_order_mark_is_ignored_at_stream_start_only() {
        let events = whole(b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n");
        assert_eq!(events[0].data.as_deref(), Some("a"));
        assert_eq!(events[0].raw, b"\xEF\xBB\xBFdata: a\n\n");
        assert_eq!(events[1].data, None, "a later mark is part of the field name");
    }

    #[test]
    fn multibyte_character_split_across_chunks() {
        let input = "data: {\"content\":\"日本語 🚂\"}\n\n".as_bytes();
        let want = whole(input);
        assert_eq!(want[0].data.as_deref(), Some("{\"content\":\"日本語 🚂\"}"));
        for cut in 1..input.len() {
            let mut s = SseSplitter::new();
            let mut got = s.push(&input[..cut]);
            if cut < input.len() - 1 {
                assert!(got.is_empty());
            }
            got.extend(s.push(&input[cut..]));
            assert_eq!(got, want, "split at {cut}");
        }
    }

    #[test]
    fn invalid_utf8_does_not_panic_and_raw_stays_exact() {
        let input = b"data: a\xFF\xC3b\nevent: \xE2\x82\n\n";
        let events = whole(input);
        assert_eq!(events[0].raw, input);
        assert_eq!(events[0].data.as_deref(), Some("a\u{FFFD}\u{FFFD}b"));
        assert_eq!(events[0].event.as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn incomplete_tail_is_returned_by_take_pending() {
        let mut s = SseSplitter::new();
        let events = s.push(b"data: one\n\ndata: tw");
        assert_eq!(events.len(), 1);
        assert_eq!(s.pending_len(), 8);
        let events = s.push(b"o\ndata: m\xC3");
        assert!(events.is_empty());
        assert_eq!(s.pending_len(), 18);
        assert_eq!(s.end(), None);
        assert_eq!(s.take_pending(), b"data: two\ndata: m\xC3");
        assert_eq!(s.pending_len(), 0);
        // Afterwards it starts afresh.
        let events = s.push(b"data: next\n\n");
        assert_eq!(events[0].data.as_deref(), Some("next"));
    }

    #[test]
    fn line_ends_are_found_in_every_position() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&b| b == b'\n' || b == b'\r');
        for len in 0..=26 {
            for fill in [b'a', 0x00, 0x0B, 0x0C, 0x0E, 0x80, 0x8A, 0x8D, 0xFF] {
                let plain = vec![fill; len];
                assert_eq!(find_line_end(&plain), naive(&plain));
                for at in 0..len {
                    for end in [b'\n', b'\r'] {
                        let mut bytes = plain.clone();
                        bytes[at] = end;
                        assert_eq!(find_line_end(&bytes), Some(at), "{bytes:?}");
                        if at + 3 < len {
                            bytes[at + 3] = b'\n';
                            assert_eq!(find_line_end(&bytes), Some(at), "{bytes:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let mut s = SseSplitter::new();
        assert!(s.push(b"").is_empty());
        assert!(s.push(b"data: a").is_empty());
        assert!(s.push(b"").is_empty());
        let events = s.push(b"\n\n");
        assert_eq!(events[0].raw, b"data: a\n\n");
    }
}
