//! Decodes a `google.protobuf.Struct` from its protobuf wire bytes into a JSON value.
//!
//! When an operator writes switchyard's configuration as native YAML in the Envoy config
//! (`"@type": type.googleapis.com/google.protobuf.Struct`), Envoy hands the filter the serialized
//! Struct message, not JSON. This module turns those bytes into a `serde_json::Value` so that the
//! one config loader serves both encodings. It knows only the four messages involved (Struct,
//! Value, ListValue and the map entry) and rejects anything else with the byte offset of the fault.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused: a config is never this deep, and the decoder recurses.
const MAX_DEPTH: usize = 64;

/// A fault in the wire bytes, with the offset where it was found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid protobuf Struct at byte {offset}: {reason}")]
pub struct StructError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Decodes the bytes of a `google.protobuf.Struct` message into a JSON object.
pub fn decode_struct(bytes: &[u8]) -> Result<Value, StructError> {
    let mut reader = Reader { bytes, pos: 0, base: 0 };
    reader.read_struct(0).map(Value::Object)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` within the whole message, so faults name an absolute position.
    base: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, StructError> {
        Err(StructError { offset: self.base + self.pos, reason })
    }

    fn varint(&mut self) -> Result<u64, StructError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return self.fail("truncated varint");
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], StructError> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.bytes.len());
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += len;
                Ok(slice)
            }
            None => self.fail("length runs past the end of the message"),
        }
    }

    /// Reads one field: its number and its payload.
    fn field(&mut self) -> Result<(u64, Field<'a>), StructError> {
        let key = self.varint()?;
        let number = key >> 3;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let raw = self.take(8)?;
                let mut buf = [0u8; 8];
                buf.copy_from_slice(raw);
                Field::Fixed64(u64::from_le_bytes(buf))
            }
            2 => {
                let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return self.fail("unsupported wire type"),
        };
        Ok((number, field))
    }

    /// A reader over a sub-message that was just taken, keeping offsets absolute.
    fn nested(&self, bytes: &'a [u8]) -> Reader<'a> {
        let base = self.base + self.pos.saturating_sub(bytes.len());
        Reader { bytes, pos: 0, base }
    }

    fn read_struct(&mut self, depth: usize) -> Result<Map<String, Value>, StructError> {
        if depth > MAX_DEPTH {
            return self.fail("nesting too deep");
        }
        let mut map = Map::new();
        while self.pos < self.bytes.len() {
            // Unknown fields are skipped, as protobuf readers do.
            if let (1, Field::Bytes(entry)) = self.field()? {
                let mut sub = self.nested(entry);
                let (key, value) = sub.read_entry(depth + 1)?;
                map.insert(key, value);
            }
        }
        Ok(map)
    }

    fn read_entry(&mut self, depth: usize) -> Result<(String, Value), StructError> {
        let mut key = String::new();
        let mut value = Value::Null;
        while self.pos < self.bytes.len() {
            match self.field()? {
                (1, Field::Bytes(raw)) => match std::str::from_utf8(raw) {
                    Ok(text) => key = text.to_owned(),
                    Err(_) => return self.fail("map key is not UTF-8"),
                },
                (2, Field::Bytes(raw)) => {
                    let mut sub = self.nested(raw);
                    value = sub.read_value(depth + 1)?;
                }
                _ => {}
            }
        }
        Ok((key, value))
    }

    fn read_value(&mut self, depth: usize) -> Result<Value, StructError> {
        if depth > MAX_DEPTH {
            return self.fail("nesting too deep");
        }
        let mut value = Value::Null;
        while self.pos < self.bytes.len() {
            value = match self.field()? {
                (1, Field::Varint(_)) => Value::Null,
                (2, Field::Fixed64(bits)) => number(f64::from_bits(bits)),
                (3, Field::Bytes(raw)) => match std::str::from_utf8(raw) {
                    Ok(text) => Value::String(text.to_owned()),
                    Err(_) => return self.fail("string value is not UTF-8"),
                },
                (4, Field::Varint(flag)) => Value::Bool(flag != 0),
                (5, Field::Bytes(raw)) => {
                    let mut sub = self.nested(raw);
                    Value::Object(sub.read_struct(depth + 1)?)
                }
                (6, Field::Bytes(raw)) => {
                    let mut sub = self.nested(raw);
                    sub.read_list(depth + 1)?
                }
                (1..=6, Field::Fixed32) => return self.fail("unexpected 32-bit field in Value"),
                (1..=6, _) => return self.fail("field of Value has the wrong wire type"),
                _ => value,
            };
        }
        Ok(value)
    }

    fn read_list(&mut self, depth: usize) -> Result<Value, StructError> {
        if depth > MAX_DEPTH {
            return self.fail("nesting too deep");
        }
        let mut items = Vec::new();
        while self.pos < self.bytes.len() {
            if let (1, Field::Bytes(raw)) = self.field()? {
                let mut sub = self.nested(raw);
                items.push(sub.read_value(depth + 1)?);
            }
        }
        Ok(Value::Array(items))
    }
}

/// YAML integers arrive as doubles; give whole numbers back their integer form so that integer
/// config fields (byte limits, token counts) deserialize.
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() <= EXACT {
        // Exact: |value| <= 2^53 and whole.
        #[allow(clippy::cast_possible_truncation)]
        let whole = value as i64;
        return Value::Number(Number::from(whole));
    }
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::encode::encode_struct;
    use super::*;
    use serde_json::json;

    fn enc_struct(v: &serde_json::Value) -> Vec<u8> {
        encode_struct(v).unwrap()
    }

    #[test]
    fn round_trips_every_value_kind() {
        let doc = json!({
            "name": "fraud", "limit": 1048576, "ratio": 0.25, "neg": -3,
            "on": true, "off": false, "none": null,
            "list": [1, "two", {"three": [3.5]}, []],
            "nested": {"a": {"b": {"c": "d"}}},
            "unicode": "naïve 🚂"
        });
        assert_eq!(decode_struct(&enc_struct(&doc)).unwrap(), doc);
    }

    #[test]
    fn empty_struct_is_empty_object() {
        assert_eq!(decode_struct(&[]).unwrap(), json!({}));
    }

    #[test]
    fn truncated_bytes_are_rejected_with_offset() {
        let bytes = enc_struct(&json!({"key": "value"}));
        for cut in 1..bytes.len() {
            let err = decode_struct(&bytes[..cut]).unwrap_err();
            assert!(err.offset <= cut, "{err}");
        }
    }

    #[test]
    fn json_text_is_not_a_struct() {
        assert!(decode_struct(br#"{"a": 1}"#).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut v = json!("leaf");
        for _ in 0..200 {
            v = json!({ "n": v });
        }
        let err = decode_struct(&enc_struct(&v)).unwrap_err();
        assert_eq!(err.reason, "nesting too deep");
    }
}

/// A minimal Struct encoder for building inputs: the filter's tests and the fuzz targets (feature
/// `struct-encoder`). Envoy does the real encoding; this one writes what Envoy writes for JSON.
#[cfg(any(test, feature = "struct-encoder"))]
pub mod encode {
    use serde_json::Value;

    /// Encodes a JSON object as the protobuf wire bytes of a `google.protobuf.Struct`, as Envoy
    /// does for a plugin configuration written as native YAML. `None` for anything but an object.
    pub fn encode_struct(value: &Value) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for (key, val) in value.as_object()? {
            let mut entry = Vec::new();
            length_delimited(1, key.as_bytes(), &mut entry);
            length_delimited(2, &encode_value(val), &mut entry);
            length_delimited(1, &entry, &mut out);
        }
        Some(out)
    }

    fn encode_value(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match value {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_bits().to_le_bytes());
            }
            Value::String(s) => length_delimited(3, s.as_bytes(), &mut out),
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Object(_) => length_delimited(5, &encode_struct(value).unwrap_or_default(), &mut out),
            Value::Array(items) => {
                let mut list = Vec::new();
                for item in items {
                    length_delimited(1, &encode_value(item), &mut list);
                }
                length_delimited(6, &list, &mut out);
            }
        }
        out
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn length_delimited(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
}
