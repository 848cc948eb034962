//! What the fuzz targets share: an order-keeping JSON tree to compare bodies with, a protobuf
//! `Struct` encoder to reach the config loader's Struct path with fuzzed JSON, and a small
//! deterministic generator for the chunk boundaries a fuzz input asks for.
//!
//! The checks here are written from what the filter promises (its module docs), not from its code:
//! they must hold for any input the fuzzer finds.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps object members in order and duplicates as written, so that comparing
/// two documents also catches a reordered or doubled member.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// Numbers as serde_json reads them; the same text always reads the same.
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole document; `None` when it is not JSON serde_json can read into numbers
    /// (out-of-range numbers such as `1e400` included).
    pub fn parse(bytes: &[u8]) -> Option<Json> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn member(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn members(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Int(i128::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Int(i128::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    members.push((k, v));
                }
                Ok(Json::Object(members))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// True when `bytes` is one valid JSON document (numbers are not evaluated, so `1e400` counts).
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// `edited` is the object `original` without one of its top-level `"usage": null` members,
/// everything else the same and in the same order.
pub fn removed_one_null_usage(original: &Json, edited: &Json) -> bool {
    match (original, edited) {
        (Json::Object(a), Json::Object(b)) if a.len() == b.len() + 1 => (0..a.len()).any(|skip| {
            a.get(skip).is_some_and(|(k, v)| k == "usage" && *v == Json::Null)
                && a.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, m)| m).eq(b.iter())
        }),
        _ => false,
    }
}

/// `edited` is `original` with a member `"cost": <number>` appended to one object (the usage
/// object), everything else the same.
pub fn appended_cost(original: &Json, edited: &Json) -> bool {
    match (original, edited) {
        (Json::Object(a), Json::Object(b)) if b.len() == a.len() + 1 => {
            matches!(b.last(), Some((k, Json::Float(_) | Json::Int(_))) if k == "cost")
                && a.iter().eq(b.iter().take(a.len()))
        }
        (Json::Object(a), Json::Object(b)) if a.len() == b.len() => {
            one_child_differs(a.iter().map(|(k, v)| (Some(k), v)), b.iter().map(|(k, v)| (Some(k), v)), appended_cost)
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => {
            one_child_differs(a.iter().map(|v| (None, v)), b.iter().map(|v| (None, v)), appended_cost)
        }
        _ => false,
    }
}

/// All children equal but exactly one, which satisfies `edit`.
fn one_child_differs<'a>(
    a: impl Iterator<Item = (Option<&'a String>, &'a Json)>,
    b: impl Iterator<Item = (Option<&'a String>, &'a Json)>,
    edit: fn(&Json, &Json) -> bool,
) -> bool {
    let mut edited = 0;
    for ((ka, va), (kb, vb)) in a.zip(b) {
        if ka != kb {
            return false;
        }
        if va != vb {
            if !edit(va, vb) {
                return false;
            }
            edited += 1;
        }
    }
    edited == 1
}

/// The filter's Struct encoder (`google.protobuf.Struct` wire bytes, as Envoy writes them).
pub use switchyard::pbstruct::encode::encode_struct;

/// A small deterministic generator (splitmix64) seeded from fuzz input bytes: the same input always
/// gives the same chunk boundaries, so a crash reproduces from its file alone.
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: &[u8]) -> Self {
        Dice(seed.iter().fold(0x9E37_79B9_7F4A_7C15, |a, &b| (a ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)))
    }

    pub fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n.max(1)
    }
}

/// Cuts `input` into chunks whose sizes `dice` picks from `0..=max` (empty chunks included: Envoy
/// can deliver an empty final chunk with end of stream).
pub fn chunks<'a>(input: &'a [u8], dice: &mut Dice, max: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let size = usize::try_from(dice.below(max as u64 + 1)).unwrap_or(1).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
    }
    if dice.below(4) == 0 {
        out.push(&[]);
    }
    out
}
