//! The numbers and byte layouts of proxy-wasm ABI 0.2.1, as Envoy speaks them: status codes, buffer,
//! map and stream identifiers, and the serialisation of header maps ("pairs").
//!
//! Everything here is plain data with no wasmtime in it, so the encoding can be tested on its own.
//! The pairs layout is Envoy's: a little-endian `u32` count, then a `(u32 key_len, u32 value_len)`
//! pair per entry, then each key and value followed by a NUL byte.

use anyhow::{bail, Context as _, Result};

/// `proxy_status_t` values returned by hostcalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

impl Status {
    /// The value a hostcall returns to the module.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    /// Decodes the wire value; `None` for values outside the ABI (Envoy answers `BadArgument`).
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::HttpRequestBody,
            1 => Self::HttpResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            _ => return None,
        })
    }
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    /// Decodes the wire value; `None` for values outside the ABI (Envoy answers `BadArgument`).
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    HttpRequest,
    HttpResponse,
    Downstream,
    Upstream,
}

impl StreamType {
    /// Decodes the wire value; `None` for values outside the ABI (Envoy answers `BadArgument`).
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::HttpRequest,
            1 => Self::HttpResponse,
            2 => Self::Downstream,
            3 => Self::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    /// Decodes the wire value; `None` for values outside the ABI (Envoy answers `BadArgument`).
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// Decodes the wire value; `None` for values outside the ABI (Envoy answers `BadArgument`).
    pub fn from_raw(raw: i32) -> Option<Self> {
        Some(match raw {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }

    /// Envoy encodes the metric type in the low two bits of every metric id.
    pub fn tag(self) -> u32 {
        match self {
            Self::Counter => 0,
            Self::Gauge => 1,
            Self::Histogram => 2,
        }
    }
}

/// Serialises header pairs the way Envoy hands them to a module.
pub fn serialize_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Result<Vec<u8>> {
    let text: usize = pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + text);
    out.extend_from_slice(&u32::try_from(pairs.len())?.to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.as_ref().len())?.to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.as_ref().len())?.to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    Ok(out)
}

/// Reads a little-endian `u32` at `at`.
fn read_u32(bytes: &[u8], at: usize) -> Result<u32> {
    let end = at.checked_add(4).context("pairs offset overflow")?;
    let raw = bytes.get(at..end).with_context(|| format!("pairs truncated at byte {at}"))?;
    let arr: [u8; 4] = raw.try_into()?;
    Ok(u32::from_le_bytes(arr))
}

/// Parses pairs sent by a module. Like Envoy, an empty buffer (or one shorter than the count) is an
/// empty map; unlike Envoy, a buffer whose sizes point past its end is an error instead of garbage.
pub fn deserialize_pairs(bytes: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.len() < 4 {
        return Ok(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let at =
            4usize.checked_add(i.checked_mul(8).context("pairs count overflow")?).context("pairs count overflow")?;
        let k = usize::try_from(read_u32(bytes, at)?)?;
        let v = usize::try_from(read_u32(bytes, at + 4)?)?;
        sizes.push((k, v));
    }
    let mut at =
        4usize.checked_add(count.checked_mul(8).context("pairs count overflow")?).context("pairs count overflow")?;
    let mut out = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = take(bytes, &mut at, k)?;
        let value = take(bytes, &mut at, v)?;
        out.push((key, value));
    }
    Ok(out)
}

/// Takes `len` bytes plus the NUL that follows them.
fn take(bytes: &[u8], at: &mut usize, len: usize) -> Result<Vec<u8>> {
    let end = at.checked_add(len).context("pairs size overflow")?;
    let Some(slice) = bytes.get(*at..end) else {
        bail!("pairs entry of {len} bytes at offset {} runs past the end ({} bytes)", *at, bytes.len());
    };
    let out = slice.to_vec();
    *at = end.checked_add(1).context("pairs size overflow")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_matches_the_spec_example() {
        let bytes = serialize_pairs(&[("a", "1"), ("b", "22")]).unwrap();
        let expected: Vec<u8> = [
            &2u32.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            b"a\x001\x00b\x0022\x00",
        ]
        .concat();
        assert_eq!(bytes, expected);
        let back = deserialize_pairs(&bytes).unwrap();
        assert_eq!(back, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"22".to_vec())]);
    }

    #[test]
    fn empty_and_truncated_pairs() {
        assert!(deserialize_pairs(&[]).unwrap().is_empty());
        assert!(deserialize_pairs(&[0]).unwrap().is_empty());
        let mut bytes = serialize_pairs(&[("key", "value")]).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(deserialize_pairs(&bytes).is_err());
    }
}
