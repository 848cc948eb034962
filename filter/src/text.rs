//! JSON string literals and decimal numbers written straight into a `String`.
//!
//! Every answer gets several numbers in its headers and the access log's object, and every routed
//! request a model name spliced in as a JSON string. The formatting machinery (`write!`, `Display`,
//! serde's serializer) costs several times more than these few lines inside the VM, so the hot path
//! writes its text here; what it writes is the same.

/// `bytes` as a `str`, as `std::str::from_utf8` checks it. Most bodies are ASCII: that is
/// checked 64 bytes at a time (vector ORs inside the VM) before the byte-wise validation, which then
/// only runs for texts with other characters.
#[allow(unsafe_code)]
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, so `bytes` is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
}

/// Whether every byte is ASCII, 64 bytes per step: eight 64-bit words ORed together and their high
/// bits tested once (the standard library's check takes 8 bytes per step on wasm32).
pub fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(64);
    for chunk in chunks.by_ref() {
        let word = |w: &[u8]| <[u8; 8]>::try_from(w).map_or(HIGH_BITS, u64::from_le_bytes);
        if chunk.chunks_exact(8).map(word).fold(0, |high, w| high | w) & HIGH_BITS != 0 {
            return false;
        }
    }
    chunks.remainder().is_ascii()
}

/// Whether a JSON string literal escapes this byte: `"`, `\` and the control characters (all
/// ASCII, so a byte position found with it is a character boundary).
pub fn needs_json_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < b' '
}

/// Appends `text` as a JSON string literal: `"`, `\` and control characters escaped, everything
/// else (any Unicode) as it is.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = rest.bytes().position(needs_json_escape) {
        let (plain, tail) = rest.split_at(at);
        out.push_str(plain);
        let mut chars = tail.chars();
        match chars.next() {
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some('\t') => out.push_str("\\t"),
            Some(c) => {
                let code = u32::from(c);
                out.push_str("\\u00");
                for nibble in [code >> 4, code & 0xf] {
                    out.push(char::from_digit(nibble, 16).unwrap_or('0'));
                }
            }
            None => {}
        }
        rest = chars.as_str();
    }
    out.push_str(rest);
    out.push('"');
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len().saturating_add(2));
    push_json_string(&mut out, text);
    out
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u64) {
    // Digit by digit: a `str` of the digits would be checked as UTF-8 first.
    let number = decimal(n);
    out.extend(number.digits.iter().skip(number.start).map(|digit| char::from(*digit)));
}

/// Appends `n` in decimal, padded with leading zeros to at least `width` digits (at most 20).
pub fn push_digits(out: &mut String, n: u64, width: usize) {
    out.push_str(Decimal::padded(n, width).as_str());
}

/// `n` in decimal, as a header value.
pub fn decimal(n: u64) -> Decimal {
    Decimal::padded(n, 1)
}

/// A number's decimal digits, held on the stack: a header value without an allocation.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    digits: [u8; 20],
    /// Where the digits start in `digits` (they end at its end).
    start: usize,
}

impl Decimal {
    /// `n` with at least `width` digits (at most 20), leading zeros added.
    fn padded(mut n: u64, width: usize) -> Self {
        // Digits from the last, into a buffer on the stack.
        let mut digits = [b'0'; 20];
        let mut len = 0usize;
        for slot in digits.iter_mut().rev() {
            *slot = b'0'.saturating_add(u8::try_from(n % 10).unwrap_or(0));
            n /= 10;
            len = len.saturating_add(1);
            if n == 0 && len >= width {
                break;
            }
        }
        Decimal { digits, start: digits.len().saturating_sub(len) }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.digits.get(self.start..).unwrap_or_default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_agrees_with_the_standard_check_wherever_the_first_other_byte_is() {
        let ascii: Vec<u8> = (0..200u8).map(|i| b' ' + i % 90).collect();
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 200] {
            let text = ascii.get(..len).unwrap();
            assert!(is_ascii(text));
            assert_eq!(utf8(text), std::str::from_utf8(text));
            for at in 0..len {
                for insert in [&[0x80][..], &[0xff], "é".as_bytes(), "€".as_bytes(), &[0xe2, 0x82]] {
                    let mut bytes = text.to_vec();
                    bytes.splice(at..at, insert.iter().copied());
                    assert!(!is_ascii(&bytes), "{len} {at} {insert:?}");
                    assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes), "{len} {at} {insert:?}");
                }
            }
        }
    }

    #[test]
    fn decimals_are_written_whole() {
        let mut cases = vec![0, 7, u64::MAX, u64::MAX - 1];
        for power in 1..=19 {
            let p = 10u64.pow(power);
            cases.extend([p - 1, p, p + 1]);
        }
        for n in cases {
            assert_eq!(decimal(n).as_str(), n.to_string());
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn digits_are_padded_to_the_width_asked() {
        for (n, width) in
            [(0u64, 1usize), (0, 15), (7, 3), (345, 15), (999_999_999_999_999, 15), (12, 1), (u64::MAX, 20)]
        {
            let mut out = String::new();
            push_digits(&mut out, n, width);
            assert_eq!(out, format!("{n:0width$}"), "{n} to {width} digits");
        }
    }

    #[test]
    fn json_strings_match_serde_json() {
        for text in
            ["", "gpt-4o", "a\"b", "back\\slash", "line\nbreak\r\ttab", "\u{1}\u{1f}", "naïve – 模型 🚀", "\"\\\u{7f}"]
        {
            let ours = json_string(text);
            assert_eq!(ours, serde_json::Value::String(text.to_owned()).to_string(), "{text:?}");
            assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), text);
        }
        // serde_json writes these two as `\b` and `\f`; the same text either way.
        assert_eq!(serde_json::from_str::<String>(&json_string("\u{8}\u{c}")).unwrap(), "\u{8}\u{c}");
    }
}
