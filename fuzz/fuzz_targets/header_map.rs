//! Header maps as Envoy serializes them for `proxy_get_header_map_pairs`: arbitrary bytes to
//! `Headers::parse`, the reader behind every header map the filter reads.
//!
//! Properties: no panic; every pair read is whole (its name and value inside the input, in order);
//! writing the pairs read back in the same format and reading them again gives the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::headers::Headers;

fuzz_target!(|data: &[u8]| {
    let headers = Headers::parse(data.to_vec());
    let text_len: usize = headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    // Lossy reading only ever replaces a bad byte sequence with U+FFFD (3 bytes), at most 3 per byte.
    assert!(text_len <= data.len().saturating_mul(3));
    let again = Headers::parse(serialize(&headers));
    assert_eq!(again, headers);
    let pairs: Vec<(&str, &str)> = headers.iter().collect();
    assert_eq!(Headers::from_pairs(&pairs), headers);
    if let Some((name, value)) = pairs.first() {
        assert_eq!(headers.get(name).map(|v| v == *value), Some(true));
    }
});

/// The proxy-wasm serialization of a map.
fn serialize(headers: &Headers) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = headers.iter().collect();
    let mut out = u32::try_from(pairs.len()).unwrap().to_le_bytes().to_vec();
    for (name, value) in &pairs {
        out.extend_from_slice(&u32::try_from(name.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap().to_le_bytes());
    }
    for (name, value) in &pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}
