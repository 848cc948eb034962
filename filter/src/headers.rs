//! A header map read from Envoy in one piece.
//!
//! The SDK's `get_map` copies every name and value into a `String` of its own (two allocations per
//! header inside the VM) and panics when a value is not UTF-8, which HTTP allows (`obs-text`, bytes
//! 0x80-0xFF) and Envoy passes on: one such byte from a client or a provider would trap the VM.
//! [`Headers::read`] takes the host's serialized map as it comes (one buffer) and reads the names
//! and values in place; a value that is not UTF-8 is read with U+FFFD for its bad bytes, the way
//! `String::from_utf8_lossy` does (header names are tokens, always ASCII).

use std::ops::Range;

use proxy_wasm::types::{MapType, Status};

/// The headers of one map, in the order the host gave them.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// Every name and value, one after the other.
    text: String,
    /// Where each pair's name and value are in `text`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

impl Headers {
    /// The headers of `map`, read with one hostcall.
    pub fn read(map: MapType) -> Result<Headers, Status> {
        host::get_map_bytes(map).map(|bytes| bytes.map(Headers::parse).unwrap_or_default())
    }

    /// Headers from pairs.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in pairs {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }

    /// Headers from the proxy-wasm serialization of a map: the number of pairs, each pair's name
    /// and value lengths (little-endian `u32`s), then each name and value followed by a NUL byte.
    /// A map cut short (not something Envoy sends) gives the pairs that are whole, and none when
    /// its size table is cut.
    pub fn parse(mut bytes: Vec<u8>) -> Headers {
        let count = read_u32(&bytes, 0).unwrap_or(0);
        // A size table longer than the map: not a map.
        let start = match count.checked_mul(8).and_then(|table| table.checked_add(4)) {
            Some(start) if start <= bytes.len() => start,
            _ => return Headers::default(),
        };
        // Offsets from the start of the names and values, which are all that is kept.
        let text_len = bytes.len().saturating_sub(start);
        let mut pairs = Vec::with_capacity(count);
        let mut at = 0usize;
        for n in 0..count {
            let (Some(name_len), Some(value_len)) = (read_u32(&bytes, 4 + n * 8), read_u32(&bytes, 8 + n * 8)) else {
                break;
            };
            // Each name and value is followed by a NUL byte.
            let Some(name_end) = at.checked_add(name_len) else { break };
            let Some(value_end) = name_end.checked_add(1).and_then(|v| v.checked_add(value_len)) else { break };
            if value_end >= text_len {
                break;
            }
            pairs.push((at..name_end, name_end + 1..value_end));
            at = value_end + 1;
        }
        bytes.drain(..start.min(bytes.len()));
        match String::from_utf8(bytes) {
            // The usual case: the text is used where it lies.
            Ok(text) => Headers { text, pairs },
            Err(not_utf8) => {
                let bytes = not_utf8.into_bytes();
                let mut headers =
                    Headers { text: String::with_capacity(bytes.len()), pairs: Vec::with_capacity(pairs.len()) };
                for (name, value) in pairs {
                    let lossy = |r: Range<usize>| String::from_utf8_lossy(bytes.get(r).unwrap_or_default());
                    headers.push(&lossy(name), &lossy(value));
                }
                headers
            }
        }
    }

    fn push(&mut self, name: &str, value: &str) {
        let name_at = self.text.len();
        self.text.push_str(name);
        let value_at = self.text.len();
        self.text.push_str(value);
        self.pairs.push((name_at..value_at, value_at..self.text.len()));
    }

    /// Each header's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(name, value)| (self.piece(name), self.piece(value)))
    }

    /// The first value of the header named exactly `name` (Envoy's names are lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(|n| n == name)
    }

    /// The first value of the header whose name `is_it` picks; only names are read on the way.
    pub fn find(&self, mut is_it: impl FnMut(&str) -> bool) -> Option<&str> {
        self.pairs.iter().find(|(name, _)| is_it(self.piece(name))).map(|(_, value)| self.piece(value))
    }

    /// Keeps the headers for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let text = &self.text;
        self.pairs.retain(|(name, value)| keep(piece(text, name), piece(text, value)));
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn piece(&self, range: &Range<usize>) -> &str {
        piece(&self.text, range)
    }
}

/// The name or value at `range` in `text`.
fn piece<'t>(text: &'t str, range: &Range<usize>) -> &'t str {
    text.get(range.clone()).unwrap_or_default()
}

/// The same headers in the same order.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

/// The little-endian `u32` at `at`, as a length.
fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

/// The one hostcall this module makes itself.
#[allow(unsafe_code)]
mod host {
    use std::ptr::null_mut;

    use proxy_wasm::types::{MapType, Status};

    // The same import the SDK declares for its `get_map`.
    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
    }

    /// The serialized pairs of `map`, `None` when the host has none to give.
    pub fn get_map_bytes(map: MapType) -> Result<Option<Vec<u8>>, Status> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer and a length to the two places given, nothing else.
        match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
            Status::Ok if data.is_null() => Ok(None),
            // SAFETY: the host allocated `size` bytes at `data` through the module's
            // `proxy_on_memory_allocate` (the SDK's: a `Vec<u8>` of capacity `size`, forgotten),
            // filled them, and hands them over; this takes ownership back, as the SDK's `get_map`
            // does.
            Status::Ok => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
            status => Err(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy-wasm serialization of `pairs`.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend_from_slice(name);
            out.push(0);
            out.extend_from_slice(value);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_what_the_host_serialized() {
        let pairs: [(&[u8], &[u8]); 4] =
            [(b":method", b"POST"), (b":path", b"/v1/chat/completions"), (b"x-empty", b""), (b"x-team", b"risk")];
        let headers = Headers::parse(serialize(&pairs));
        let read: Vec<(&str, &str)> = headers.iter().collect();
        assert_eq!(read, [(":method", "POST"), (":path", "/v1/chat/completions"), ("x-empty", ""), ("x-team", "risk")]);
        assert_eq!(headers.get("x-team"), Some("risk"));
        assert_eq!(headers.get("X-Team"), None, "names are compared as Envoy gives them, lower case");
        assert_eq!(headers, Headers::from_pairs(&read));
        assert!(Headers::parse(Vec::new()).is_empty());
        assert!(Headers::parse(serialize(&[])).is_empty());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_read_lossily_and_the_others_as_they_are() {
        // Lengths of 200 and more make the size words themselves non-UTF-8.
        let long = vec![b'a'; 200];
        let pairs: [(&[u8], &[u8]); 3] = [(b"x-name", b"caf\xe9"), (b"x-long", &long), (b"x-team", b"risk")];
        let headers = Headers::parse(serialize(&pairs));
        assert_eq!(headers.get("x-name"), Some("caf\u{fffd}"));
        assert_eq!(headers.get("x-long").map(str::len), Some(200));
        assert_eq!(headers.get("x-team"), Some("risk"));
        let valid = Headers::parse(serialize(&[(b"x-long", &long), (b"x-team", b"risk")]));
        assert_eq!(valid.get("x-long").map(str::len), Some(200));
        assert_eq!(valid.get("x-team"), Some("risk"));
    }

    #[test]
    fn a_map_cut_short_gives_its_whole_pairs_and_never_panics() {
        let full = serialize(&[(b"a", b"1"), (b"bb", b"22")]);
        let table = 4 + 2 * 8;
        for cut in 0..full.len() {
            let headers = Headers::parse(full.get(..cut).unwrap().to_vec());
            let read: Vec<(&str, &str)> = headers.iter().collect();
            let whole = match cut {
                c if c < table + 4 => 0, // the table, or the first pair and its NULs
                _ => 1,
            };
            assert_eq!(read, [("a", "1")][..whole], "cut at {cut}");
        }
        assert_eq!(Headers::parse(full).len(), 2);
        // A count far larger than the buffer.
        let mut lying = u32::MAX.to_le_bytes().to_vec();
        lying.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'a', 0, b'b', 0]);
        assert!(Headers::parse(lying).is_empty());
        // Sizes past the end, or past what a usize holds.
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(b"a\0b\0");
        assert!(Headers::parse(huge).is_empty());
    }

    #[test]
    fn retain_keeps_the_rest_in_order() {
        let mut headers =
            Headers::from_pairs(&[("x-switchyard-cost-usd", "1"), ("a", "1"), ("x-switchyard-x", ""), ("b", "2")]);
        headers.retain(|name, _| !name.starts_with("x-switchyard-"));
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
    }
}
