//! A mock OpenAI-compatible upstream that the end-to-end tests start in-process and the demo starts as
//! the `mock-upstream` binary.
//!
//! Real providers are slow, cost money and cannot be told to rate-limit on cue, so the tests route
//! Envoy to this server instead. It is a small HTTP/1.1 server on `std::net` (a thread per connection,
//! keep-alive, `TCP_NODELAY`, `Content-Length` and chunked request bodies) that:
//!
//! - records every request exactly as received (method, path with query, lowercase headers, raw body
//!   bytes), so tests can check what switchyard sent upstream;
//! - answers the OpenAI shapes switchyard routes (`*/chat/completions`, `*/completions`,
//!   `*/embeddings`, `*/responses`, streaming as SSE when the body says `"stream": true`) and echoes
//!   anything else as `{"mock": name, "method": ..., "path": ...}`;
//! - says who answered: the answer's `model` is the requested model, and the headers
//!   `x-mock-upstream: <name>` and `x-mock-model: <model>` are set on every answer;
//! - can be told to misbehave ([`Behavior`]): status codes with `Retry-After`, delays, chunk spacing,
//!   usage numbers and broken answers. Knobs come from [`MockUpstream::set_behavior`] (default for all
//!   requests), [`MockUpstream::push_behavior`] (one-shot queue), `x-mock-*` request headers (see
//!   [`Behavior::from_request_headers`]), or, for a mock in another process, the control endpoints
//!   under `/_mock/` (`POST /_mock/behavior`, `POST /_mock/push`, `POST /_mock/reset`,
//!   `POST /_mock/clear`, `GET /_mock/requests`, `GET /_mock/hits`, `GET /_mock/chaos`).
//!
//! Usage numbers are deterministic so tests can compute expected costs: unless a knob says otherwise
//! `prompt_tokens = max(1, request body length / 4)` and `completion_tokens =`
//! [`DEFAULT_COMPLETION_TOKENS`] (see [`Usage::for_request_body`]).
//!
//! For long runs (the soak test) two settings change this: [`MockUpstream::set_recording`]`(false)`
//! keeps only counters instead of every request, and [`MockUpstream::set_chaos`] makes the mock draw
//! faults at random ([`Chaos`]: rate limits, server errors, resets, slow answers), independently for
//! every request it receives — so each failover attempt switchyard makes gets its own draw.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Content chunks in a streamed answer when no knob says otherwise.
pub const DEFAULT_CHUNKS: u32 = 3;
/// `completion_tokens` reported when no usage knob says otherwise.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 12;
/// Model reported when the request body names none.
pub const UNKNOWN_MODEL: &str = "unknown";

const MAX_HEAD_BYTES: u64 = 64 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
const EMBEDDING_DIMENSIONS: u64 = 8;

/// How the mock answers. Every field is optional; unset fields keep the normal, healthy answer.
///
/// Behaviors stack: the default (set with [`MockUpstream::set_behavior`] or `POST /_mock/behavior`),
/// then the next one-shot behavior from the queue ([`MockUpstream::push_behavior`],
/// `POST /_mock/push`), then the request's own `x-mock-*` headers; later layers override earlier ones
/// field by field, and `headers` accumulate.
///
/// As JSON (control endpoints): `{"status": 429, "retry_after": "2", "delay_ms": 50,
/// "chunk_delay_ms": 20, "chunks": 4, "headers": [["x-extra", "1"]], "broken": "reset-mid-body",
/// "usage": {"prompt": 100, "completion": 20, "cached": 30, "reasoning": 5}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Status code of the answer. Non-2xx answers carry an OpenAI-style error body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Wait this long before sending the response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Wait this long between two events of a streamed answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Number of content chunks of a streamed answer (the reply text is split over them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Value of a `Retry-After` response header (seconds or an HTTP date, sent as given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Extra response headers, sent as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Answer wrongly on purpose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
    /// Usage numbers to report instead of the computed ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Ways to answer wrongly, for testing how switchyard copes with bad upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Broken {
    /// A well-framed answer whose body is not JSON (streamed: one `data:` event is not JSON).
    InvalidJson,
    /// A well-framed answer whose body is cut short: non-streaming, half the JSON with a matching
    /// `Content-Length`; streaming, the stream ends cleanly after half the events (no usage, no
    /// `[DONE]`).
    Truncated,
    /// Read the request, then close the connection without answering.
    ResetBeforeHeaders,
    /// Send the headers and part of the body, then close the connection mid-body.
    ResetMidBody,
    /// Leave `usage` out of the answer (streamed: no usage chunk even when asked for).
    NoUsage,
}

impl FromStr for Broken {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim() {
            "invalid-json" => Ok(Self::InvalidJson),
            "truncated" => Ok(Self::Truncated),
            "reset-before-headers" => Ok(Self::ResetBeforeHeaders),
            "reset-mid-body" => Ok(Self::ResetMidBody),
            "no-usage" => Ok(Self::NoUsage),
            other => bail!(
                "unknown broken mode `{other}` (expected invalid-json, truncated, \
                 reset-before-headers, reset-mid-body or no-usage)"
            ),
        }
    }
}

/// Token counts the mock reports. Chat and completions report them as `prompt_tokens`,
/// `completion_tokens`, `prompt_tokens_details.cached_tokens` and
/// `completion_tokens_details.reasoning_tokens`; the Responses API as `input_tokens`,
/// `output_tokens`, `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub prompt: u64,
    /// Output (completion) tokens.
    pub completion: u64,
    /// Input tokens served from the provider's prompt cache (part of `prompt`).
    #[serde(default)]
    pub cached: u64,
    /// Output tokens spent on reasoning (part of `completion`).
    #[serde(default)]
    pub reasoning: u64,
}

impl Usage {
    /// The usage reported when no knob says otherwise: `prompt = max(1, body_len / 4)`,
    /// `completion =` [`DEFAULT_COMPLETION_TOKENS`], nothing cached, no reasoning.
    pub fn for_request_body(body_len: usize) -> Usage {
        let prompt = u64::try_from(body_len / 4).unwrap_or(u64::MAX).max(1);
        Usage { prompt, completion: DEFAULT_COMPLETION_TOKENS, cached: 0, reasoning: 0 }
    }

    /// `prompt + completion`.
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

impl FromStr for Usage {
    type Err = anyhow::Error;

    /// Parses `prompt,completion[,cached[,reasoning]]`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let numbers = s
            .split(',')
            .map(|part| part.trim().parse::<u64>().with_context(|| format!("`{part}` is not a token count")))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        match numbers.as_slice() {
            [prompt, completion] => Ok(Usage { prompt: *prompt, completion: *completion, ..Usage::default() }),
            [prompt, completion, cached] => {
                Ok(Usage { prompt: *prompt, completion: *completion, cached: *cached, reasoning: 0 })
            }
            [prompt, completion, cached, reasoning] => {
                Ok(Usage { prompt: *prompt, completion: *completion, cached: *cached, reasoning: *reasoning })
            }
            _ => bail!("expected `prompt,completion[,cached[,reasoning]]`, got `{s}`"),
        }
    }
}

impl Behavior {
    /// A behavior that only sets the status code.
    pub fn status(status: u16) -> Behavior {
        Behavior { status: Some(status), ..Behavior::default() }
    }

    /// A behavior that only breaks the answer.
    pub fn broken(broken: Broken) -> Behavior {
        Behavior { broken: Some(broken), ..Behavior::default() }
    }

    /// `self` with every field that `top` sets replaced by `top`'s; headers accumulate.
    pub fn overlay(mut self, top: &Behavior) -> Behavior {
        self.status = top.status.or(self.status);
        self.delay_ms = top.delay_ms.or(self.delay_ms);
        self.chunk_delay_ms = top.chunk_delay_ms.or(self.chunk_delay_ms);
        self.chunks = top.chunks.or(self.chunks);
        self.retry_after = top.retry_after.clone().or(self.retry_after);
        self.headers.extend(top.headers.iter().cloned());
        self.broken = top.broken.or(self.broken);
        self.usage = top.usage.or(self.usage);
        self
    }

    /// The knobs a request sets through its own headers (names compared case-insensitively):
    ///
    /// | header                  | value                                                    |
    /// |-------------------------|----------------------------------------------------------|
    /// | `x-mock-status`         | status code                                              |
    /// | `x-mock-delay-ms`       | delay before the response headers                        |
    /// | `x-mock-chunk-delay-ms` | delay between streamed events                            |
    /// | `x-mock-chunks`         | number of streamed content chunks                        |
    /// | `x-mock-retry-after`    | `Retry-After` value                                      |
    /// | `x-mock-header`         | `name: value` extra response header (may repeat)         |
    /// | `x-mock-latin1`         | sent back as a response header, in Latin-1 bytes         |
    /// | `x-mock-broken`         | `invalid-json`, `truncated`, `reset-before-headers`, `reset-mid-body`, `no-usage` |
    /// | `x-mock-usage`          | `prompt,completion[,cached[,reasoning]]`                 |
    pub fn from_request_headers(headers: &[(String, String)]) -> anyhow::Result<Behavior> {
        let mut behavior = Behavior::default();
        for (name, value) in headers {
            let value = value.trim();
            let bad = || format!("bad `{name}: {value}` request header");
            match name.to_ascii_lowercase().as_str() {
                "x-mock-status" => behavior.status = Some(value.parse().with_context(bad)?),
                "x-mock-delay-ms" => behavior.delay_ms = Some(value.parse().with_context(bad)?),
                "x-mock-chunk-delay-ms" => {
                    behavior.chunk_delay_ms = Some(value.parse().with_context(bad)?);
                }
                "x-mock-chunks" => behavior.chunks = Some(value.parse().with_context(bad)?),
                "x-mock-retry-after" => behavior.retry_after = Some(value.to_owned()),
                "x-mock-header" => {
                    let (extra_name, extra_value) =
                        value.split_once(':').ok_or_else(|| anyhow!("expected `name: value`")).with_context(bad)?;
                    behavior.headers.push((extra_name.trim().to_owned(), extra_value.trim().to_owned()));
                }
                LATIN1_HEADER => behavior.headers.push((LATIN1_HEADER.to_owned(), value.to_owned())),
                "x-mock-broken" => behavior.broken = Some(value.parse().with_context(bad)?),
                "x-mock-usage" => behavior.usage = Some(value.parse().with_context(bad)?),
                _ => {}
            }
        }
        Ok(behavior)
    }
}

/// Faults the mock draws at random for every request it receives (see [`MockUpstream::set_chaos`]).
///
/// Each request gets one independent draw: at most one of the *exclusive* faults (a status from
/// `statuses`, or a reset before the headers), and, independently of that, maybe a slow or a
/// stalled answer. A drawn fault is a [`Behavior`] layer between the default behavior and the
/// one-shot queue, so a request's own `x-mock-*` headers still win, field by field.
///
/// As text (the `mock-upstream --chaos` flag, [`Chaos::from_str`]): comma-separated `key=value`:
///
/// | key | value | fault |
/// |---|---|---|
/// | a status code, e.g. `429` | probability | answer that status (an OpenAI-style error body) |
/// | `reset-before-headers` | probability | read the request, close the connection without answering |
/// | `slow` | `probability:ms` | hold the headers `ms/2..=ms`, space streamed events a tenth of that |
/// | `stall` | `probability:ms` | hold the headers exactly `ms` (to outlast a per-try timeout) |
/// | `retry-after-ms` | `lo-hi` | a 429 says `retry-after-ms: lo..=hi` (default `5-50`) |
/// | `retry-after-1s` | share | this share of the 429s says `Retry-After: 1` instead |
/// | `seed` | integer | seed of the draws (mixed with the mock's name) |
///
/// e.g. `429=0.10,503=0.02,slow=0.05:300,seed=7`.
#[derive(Clone, Debug, PartialEq)]
pub struct Chaos {
    /// `(status, probability)`: answer this status code.
    pub statuses: Vec<(u16, f64)>,
    /// Probability of closing the connection without answering.
    pub reset_before_headers: f64,
    /// Probability of a slow answer, and its longest header delay in ms.
    pub slow: (f64, u64),
    /// Probability of a stalled answer, and its header delay in ms.
    pub stall: (f64, u64),
    /// Range of the `retry-after-ms` value of a drawn 429, inclusive.
    pub retry_after_ms: (u64, u64),
    /// Share of drawn 429s that say `Retry-After: 1` instead of `retry-after-ms`.
    pub retry_after_1s: f64,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for Chaos {
    /// No faults at all (add some); 429s say `retry-after-ms: 5..=50`.
    fn default() -> Self {
        Chaos {
            statuses: Vec::new(),
            reset_before_headers: 0.0,
            slow: (0.0, 0),
            stall: (0.0, 0),
            retry_after_ms: (5, 50),
            retry_after_1s: 0.0,
            seed: 0,
        }
    }
}

/// How many faults a mock drew (see [`Chaos`]); also `GET /_mock/chaos`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChaosCounts {
    /// Requests that took part in a draw.
    pub draws: u64,
    /// Drawn status answers, by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connections closed without an answer.
    pub reset_before_headers: u64,
    /// Slow answers.
    pub slow: u64,
    /// Stalled answers.
    pub stall: u64,
    /// 429s that said `Retry-After: 1`.
    pub retry_after_1s: u64,
}

impl ChaosCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ChaosCounts) {
        self.draws += other.draws;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.reset_before_headers += other.reset_before_headers;
        self.slow += other.slow;
        self.stall += other.stall;
        self.retry_after_1s += other.retry_after_1s;
    }
}

impl Chaos {
    /// The behavior layer of one draw, and the draw counted into `counts`.
    pub fn draw(&self, rng: &mut SplitMix64, counts: &mut ChaosCounts) -> Behavior {
        let mut behavior = Behavior::default();
        counts.draws += 1;
        let mut roll = rng.next_f64();
        let mut exclusive_drawn = false;
        for (status, probability) in &self.statuses {
            if roll < *probability {
                behavior.status = Some(*status);
                *counts.statuses.entry(*status).or_default() += 1;
                if *status == 429 {
                    if rng.next_f64() < self.retry_after_1s {
                        behavior.retry_after = Some("1".to_owned());
                        counts.retry_after_1s += 1;
                    } else {
                        let (lo, hi) = self.retry_after_ms;
                        let ms = rng.in_range(lo, hi);
                        behavior.headers.push(("retry-after-ms".to_owned(), ms.to_string()));
                    }
                }
                exclusive_drawn = true;
                break;
            }
            roll -= probability;
        }
        if !exclusive_drawn && roll < self.reset_before_headers {
            behavior.broken = Some(Broken::ResetBeforeHeaders);
            counts.reset_before_headers += 1;
        }
        let roll = rng.next_f64();
        let (stall, stall_ms) = self.stall;
        let (slow, slow_ms) = self.slow;
        if roll < stall {
            behavior.delay_ms = Some(stall_ms);
            counts.stall += 1;
        } else if roll < stall + slow {
            let delay = rng.in_range(slow_ms / 2, slow_ms);
            behavior.delay_ms = Some(delay);
            behavior.chunk_delay_ms = Some(delay / 10);
            counts.slow += 1;
        }
        behavior
    }
}

impl FromStr for Chaos {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> anyhow::Result<Chaos> {
        let mut chaos = Chaos::default();
        let probability = |key: &str, text: &str| -> anyhow::Result<f64> {
            let p: f64 = text.trim().parse().with_context(|| format!("`{key}={text}`: not a probability"))?;
            if !(0.0..=1.0).contains(&p) {
                bail!("`{key}={text}`: a probability is between 0 and 1");
            }
            Ok(p)
        };
        let probability_ms = |key: &str, text: &str| -> anyhow::Result<(f64, u64)> {
            let (p, ms) = text.split_once(':').with_context(|| format!("`{key}={text}`: expected `probability:ms`"))?;
            let ms = ms.trim().parse().with_context(|| format!("`{key}={text}`: `{ms}` is not milliseconds"))?;
            Ok((probability(key, p)?, ms))
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').with_context(|| format!("`{part}` is not key=value"))?;
            let key = key.trim();
            match key {
                "reset-before-headers" => chaos.reset_before_headers = probability(key, value)?,
                "slow" => chaos.slow = probability_ms(key, value)?,
                "stall" => chaos.stall = probability_ms(key, value)?,
                "retry-after-1s" => chaos.retry_after_1s = probability(key, value)?,
                "retry-after-ms" => {
                    let (lo, hi) = value.split_once('-').with_context(|| format!("`{part}`: expected `lo-hi`"))?;
                    let lo: u64 = lo.trim().parse().with_context(|| format!("`{part}`: `{lo}` is not a number"))?;
                    let hi: u64 = hi.trim().parse().with_context(|| format!("`{part}`: `{hi}` is not a number"))?;
                    if lo > hi {
                        bail!("`{part}`: lo is above hi");
                    }
                    chaos.retry_after_ms = (lo, hi);
                }
                "seed" => chaos.seed = value.trim().parse().with_context(|| format!("`{part}`: not an integer"))?,
                status => match status.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => chaos.statuses.push((code, probability(key, value)?)),
                    _ => bail!(
                        "unknown chaos key `{key}` (expected a status code, reset-before-headers, slow, stall, \
                         retry-after-ms, retry-after-1s or seed)"
                    ),
                },
            }
        }
        let exclusive: f64 = chaos.statuses.iter().map(|(_, p)| p).sum::<f64>() + chaos.reset_before_headers;
        if exclusive > 1.0 {
            bail!("the status and reset probabilities add up to {exclusive}, more than 1");
        }
        if chaos.slow.0 + chaos.stall.0 > 1.0 {
            bail!("the slow and stall probabilities add up to more than 1");
        }
        Ok(chaos)
    }
}

/// A small, fast, seedable random number generator (SplitMix64): the mock's chaos draws and the
/// soak test's request mix. Not for anything that needs real randomness.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// A generator seeded with `seed` mixed with `name` (FNV-1a), so mocks with one seed differ.
    pub fn for_name(seed: u64, name: &str) -> SplitMix64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        // Scrambled, so that two nearby seeds do not give the same stream shifted by a few places.
        SplitMix64(SplitMix64(seed ^ hash).next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Request target: path and query, e.g. `/v1/chat/completions?x=1`.
    pub path: String,
    /// Headers in arrival order, names lowercased, values as sent.
    pub headers: Vec<(String, String)>,
    /// The body bytes exactly as received (after undoing chunked transfer encoding). Over the
    /// `/_mock/requests` endpoint this travels as a (lossy) UTF-8 string.
    #[serde(with = "body_as_text")]
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The body parsed as JSON.
    pub fn body_json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("body of {} {} is not JSON: {}", self.method, self.path, self.body_text()))
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body's `model` field, if the body is JSON and has one.
    pub fn model(&self) -> Option<String> {
        requested_model(&self.body)
    }
}

mod body_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&String::from_utf8_lossy(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(deserializer)?.into_bytes())
    }
}

/// The full reply text of a mock answer: `hello from <name> as <model>`.
pub fn reply_text(name: &str, model: &str) -> String {
    format!("hello from {name} as {model}")
}

/// The content pieces of an answer with `chunks` content chunks. The reply text's words are spread
/// over the pieces; when there are more chunks than words the extra pieces are ` [n]`. Non-streaming
/// answers carry the concatenation, which equals [`reply_text`] for up to five chunks.
pub fn reply_pieces(name: &str, model: &str, chunks: u32) -> Vec<String> {
    let text = reply_text(name, model);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let chunks = usize::try_from(chunks).unwrap_or(usize::MAX);
    if chunks == 0 {
        return Vec::new();
    }
    if chunks <= words.len() {
        let (base, extra) = (words.len() / chunks, words.len() % chunks);
        let mut rest = words.as_slice();
        (0..chunks)
            .map(|i| {
                let take = base + usize::from(i < extra);
                let (piece, tail) = rest.split_at(take.min(rest.len()));
                rest = tail;
                piece.concat()
            })
            .collect()
    } else {
        let mut pieces: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        pieces.extend((words.len()..chunks).map(|i| format!(" [{i}]")));
        pieces
    }
}

/// A running mock upstream. It serves until dropped; dropping it stops the accept loop and closes
/// every open connection.
pub struct MockUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_loop: Option<JoinHandle<()>>,
}

struct Shared {
    name: String,
    stopping: AtomicBool,
    state: Mutex<State>,
    connections: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
}

struct State {
    requests: Vec<RecordedRequest>,
    /// Requests received (control requests excluded), recorded or not.
    hits: usize,
    default: Behavior,
    queue: VecDeque<Behavior>,
    /// Settings that [`MockUpstream::reset`] keeps: whether requests are recorded, and the chaos
    /// draws with their generator.
    recording: bool,
    chaos: Option<(Chaos, SplitMix64)>,
    chaos_counts: ChaosCounts,
}

impl Default for State {
    fn default() -> Self {
        State {
            requests: Vec::new(),
            hits: 0,
            default: Behavior::default(),
            queue: VecDeque::new(),
            recording: true,
            chaos: None,
            chaos_counts: ChaosCounts::default(),
        }
    }
}

impl State {
    /// Forgets requests, counts, behaviors and the queue; keeps the recording and chaos settings.
    fn reset(&mut self) {
        let recording = self.recording;
        let chaos = self.chaos.take();
        *self = State { recording, chaos, ..State::default() };
    }

    fn clear(&mut self) {
        self.requests.clear();
        self.hits = 0;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MockUpstream {
    /// Starts a mock named `name` on `127.0.0.1` with a free port.
    pub fn start(name: &str) -> anyhow::Result<MockUpstream> {
        MockUpstream::start_on(name, "127.0.0.1:0")
    }

    /// Starts a mock named `name` listening on `addr`.
    pub fn start_on(name: &str, addr: impl ToSocketAddrs) -> anyhow::Result<MockUpstream> {
        let listener = TcpListener::bind(addr).with_context(|| format!("mock upstream `{name}`: cannot bind"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            stopping: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            connections: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_loop = thread::Builder::new()
            .name(format!("mock-{name}-accept"))
            .spawn(move || accept_connections(&accept_shared, &listener))
            .context("cannot spawn the mock's accept thread")?;
        Ok(MockUpstream { shared, addr, accept_loop: Some(accept_loop) })
    }

    /// The name the mock reports in `x-mock-upstream` and its reply text.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the mock listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` (or the bound address when it is not unspecified).
    pub fn url(&self) -> String {
        format!("http://{}", connectable(self.addr))
    }

    /// Every request received so far (control requests under `/_mock/` excluded), oldest first;
    /// none while recording is off.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.state).requests.clone()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.state).requests.last().cloned()
    }

    /// How many requests were received (control requests excluded), recorded or not.
    pub fn hits(&self) -> usize {
        lock(&self.shared.state).hits
    }

    /// Waits until at least `hits` requests were received; false if `timeout` passed first.
    pub fn wait_for_hits(&self, hits: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.hits() >= hits {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Forgets the recorded requests and the hit count (behaviors stay).
    pub fn clear(&self) {
        lock(&self.shared.state).clear();
    }

    /// Forgets the recorded requests, the counts, the default behavior and the one-shot queue.
    /// Recording and chaos settings stay.
    pub fn reset(&self) {
        lock(&self.shared.state).reset();
    }

    /// Whether to keep every request (the default) or only count them: a mock serving millions of
    /// requests must not hold them all in memory.
    pub fn set_recording(&self, recording: bool) {
        let mut state = lock(&self.shared.state);
        state.recording = recording;
        if !recording {
            state.requests = Vec::new();
        }
    }

    /// Draws faults at random for every following request (`None`: no more chaos). The draws are
    /// seeded with `chaos.seed` mixed with the mock's name, so mocks sharing a seed differ.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        let seeded = chaos.map(|chaos| {
            let rng = SplitMix64::for_name(chaos.seed, &self.shared.name);
            (chaos, rng)
        });
        lock(&self.shared.state).chaos = seeded;
    }

    /// The faults drawn so far (zero without chaos).
    pub fn chaos_counts(&self) -> ChaosCounts {
        lock(&self.shared.state).chaos_counts.clone()
    }

    /// Sets the default behavior for all following requests.
    pub fn set_behavior(&self, behavior: Behavior) {
        lock(&self.shared.state).default = behavior;
    }

    /// Queues a one-shot behavior: the next request without one takes it (on top of the default).
    pub fn push_behavior(&self, behavior: Behavior) {
        lock(&self.shared.state).queue.push_back(behavior);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag; only join when that worked.
        let woke = TcpStream::connect_timeout(&connectable(self.addr), Duration::from_secs(1)).is_ok();
        if let Some(handle) = self.accept_loop.take() {
            if woke {
                let _ = handle.join();
            }
        }
        for (_, stream) in lock(&self.shared.connections).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The address to connect to for a listener bound on `addr` (unspecified → loopback).
fn connectable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    addr
}

fn accept_connections(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut next_connection: u64 = 0;
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = incoming else {
            // e.g. out of file descriptors: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        next_connection += 1;
        let id = next_connection;
        // Registered before the thread starts, so Drop (which joins this loop first) sees it.
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.connections).push((id, clone));
        }
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new().name(format!("mock-{}-conn", shared.name)).spawn(move || {
            let _ = serve_connection(&conn_shared, stream);
            lock(&conn_shared.connections).retain(|(other, _)| *other != id);
        });
        if spawned.is_err() {
            lock(&shared.connections).retain(|(other, _)| *other != id);
        }
    }
}

/// A parsed HTTP/1.x request.
struct HttpRequest {
    method: String,
    path: String,
    http10: bool,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        }
    }

    fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(self.path.as_str(), |(path, _)| path)
    }
}

/// Whether the connection stays open after an answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    KeepAlive,
    Close,
}

fn serve_connection(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while !shared.stopping.load(Ordering::SeqCst) {
        let Some(request) = read_request(&mut reader, &mut writer)? else {
            break;
        };
        let flow = if request.keep_alive() { Flow::KeepAlive } else { Flow::Close };
        let flow = match answer(shared, &request, &mut writer, flow)? {
            Flow::Close => Flow::Close,
            Flow::KeepAlive => flow,
        };
        if flow == Flow::Close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    Ok(())
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one line (without its CRLF), at most `MAX_HEAD_BYTES` long. `None` at end of stream.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader.by_ref().take(MAX_HEAD_BYTES).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("request line or header too long, or connection closed mid-line"));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    // Header values may carry bytes that are not UTF-8 (HTTP's obs-text): recorded as U+FFFD.
    Ok(Some(String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())))
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(reader: &mut impl BufRead, writer: &mut impl Write) -> io::Result<Option<HttpRequest>> {
    let request_line = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line `{request_line}`")));
    };
    let mut request = HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        http10: version == "HTTP/1.0",
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("connection closed in the request head"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header line `{line}`")))?;
        request.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        if request.headers.len() > 1000 {
            return Err(invalid("too many request headers"));
        }
    }
    if request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = request.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked_body(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| invalid(format!("bad content-length `{length}`")))?;
        if length > MAX_BODY_BYTES {
            return Err(invalid("request body too large"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked_body(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("connection closed in a chunked body"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size `{line}`")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?.unwrap_or_default().is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY_BYTES {
            return Err(invalid("request body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(body.get_mut(start..).unwrap_or_default())?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk data longer than its announced size"));
        }
    }
}

/// The OpenAI endpoints the mock knows, by path suffix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Other,
}

impl Endpoint {
    fn of(method: &str, path: &str) -> Endpoint {
        if method != "POST" {
            Endpoint::Other
        } else if path.ends_with("/chat/completions") {
            Endpoint::ChatCompletions
        } else if path.ends_with("/completions") {
            Endpoint::Completions
        } else if path.ends_with("/embeddings") {
            Endpoint::Embeddings
        } else if path.ends_with("/responses") {
            Endpoint::Responses
        } else {
            Endpoint::Other
        }
    }
}

fn answer(shared: &Shared, request: &HttpRequest, writer: &mut TcpStream, flow: Flow) -> io::Result<Flow> {
    if request.path_only().starts_with("/_mock/") {
        return answer_control(shared, request, writer, flow);
    }
    let stacked = {
        let mut state = lock(&shared.state);
        state.hits += 1;
        if state.recording {
            state.requests.push(RecordedRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
            });
        }
        let state = &mut *state;
        let drawn = match &mut state.chaos {
            Some((chaos, rng)) => chaos.draw(rng, &mut state.chaos_counts),
            None => Behavior::default(),
        };
        let one_shot = state.queue.pop_front().unwrap_or_default();
        state.default.clone().overlay(&drawn).overlay(&one_shot)
    };
    let behavior = match Behavior::from_request_headers(&request.headers) {
        Ok(from_headers) => stacked.overlay(&from_headers),
        Err(error) => {
            let body = error_body(400, &format!("mock {}: {error:#}", shared.name));
            return write_json(writer, 400, &mock_headers(&shared.name, None), &body, flow);
        }
    };
    if let Some(ms) = behavior.delay_ms {
        thread::sleep(Duration::from_millis(ms));
    }
    if behavior.broken == Some(Broken::ResetBeforeHeaders) {
        let _ = writer.shutdown(Shutdown::Both);
        return Ok(Flow::Close);
    }

    let model = requested_model(&request.body).unwrap_or_else(|| UNKNOWN_MODEL.to_owned());
    let endpoint = Endpoint::of(&request.method, request.path_only());
    let mut headers = mock_headers(&shared.name, (endpoint != Endpoint::Other).then_some(model.as_str()));
    if let Some(retry_after) = &behavior.retry_after {
        headers.push(("retry-after".to_owned(), retry_after.clone()));
    }
    headers.extend(behavior.headers.iter().cloned());
    let status = behavior.status.unwrap_or(200);
    if !(200..300).contains(&status) {
        let body = error_body(status, &format!("mock {} answers {status} as asked", shared.name));
        return write_json(writer, status, &headers, &body, flow);
    }

    let parsed: Option<Value> = serde_json::from_slice(&request.body).ok();
    let reply = Reply {
        name: &shared.name,
        model: &model,
        request: parsed.as_ref(),
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        chunks: behavior.chunks.unwrap_or(DEFAULT_CHUNKS),
        usage: (behavior.broken != Some(Broken::NoUsage))
            .then(|| behavior.usage.unwrap_or_else(|| Usage::for_request_body(request.body.len()))),
    };
    let streaming = reply.request.and_then(|r| r.get("stream")).and_then(Value::as_bool) == Some(true);
    let events = match endpoint {
        Endpoint::ChatCompletions if streaming => Some(reply.chat_stream()),
        Endpoint::Completions if streaming => Some(reply.completion_stream()),
        Endpoint::Responses if streaming => Some(reply.responses_stream()),
        _ => None,
    };
    if let Some(events) = events {
        return write_stream(writer, request.http10, status, headers, events, &behavior, flow);
    }
    let body = match endpoint {
        Endpoint::ChatCompletions => reply.chat_completion(),
        Endpoint::Completions => reply.text_completion(),
        Endpoint::Embeddings => reply.embeddings(),
        Endpoint::Responses => reply.response("completed"),
        Endpoint::Other => json!({"mock": shared.name, "method": request.method, "path": request.path}),
    };
    let mut bytes = serde_json::to_vec(&body).map_err(io::Error::other)?;
    match behavior.broken {
        Some(Broken::InvalidJson) => bytes = br#"{"id": "mock-broken", "choices": [ this is not json"#.to_vec(),
        Some(Broken::Truncated) => bytes.truncate(bytes.len() / 2),
        Some(Broken::ResetMidBody) => {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
            headers.push(("content-length".to_owned(), bytes.len().to_string()));
            let mut out = head(status, &headers);
            out.extend_from_slice(bytes.get(..bytes.len() / 2).unwrap_or_default());
            writer.write_all(&out)?;
            writer.flush()?;
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(Flow::Close);
        }
        _ => {}
    }
    write_raw_json(writer, status, &headers, &bytes, flow)
}

fn answer_control(shared: &Shared, request: &HttpRequest, writer: &mut TcpStream, flow: Flow) -> io::Result<Flow> {
    let headers = mock_headers(&shared.name, None);
    let parse_behavior = || -> anyhow::Result<Behavior> {
        if request.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Behavior::default());
        }
        serde_json::from_slice(&request.body).context("body is not a Behavior")
    };
    let ok = json!({"ok": true});
    let outcome: anyhow::Result<Value> = match (request.method.as_str(), request.path_only()) {
        ("POST", "/_mock/behavior") => parse_behavior().map(|b| {
            lock(&shared.state).default = b;
            ok
        }),
        ("POST", "/_mock/push") => parse_behavior().map(|b| {
            lock(&shared.state).queue.push_back(b);
            ok
        }),
        ("POST", "/_mock/reset") => {
            lock(&shared.state).reset();
            Ok(ok)
        }
        ("POST", "/_mock/clear") => {
            lock(&shared.state).clear();
            Ok(ok)
        }
        ("GET", "/_mock/requests") => {
            serde_json::to_value(&lock(&shared.state).requests).context("cannot serialize requests")
        }
        ("GET", "/_mock/hits") => Ok(json!({"hits": lock(&shared.state).hits})),
        ("GET", "/_mock/chaos") => {
            serde_json::to_value(&lock(&shared.state).chaos_counts).context("cannot serialize chaos counts")
        }
        (method, path) => {
            let body = error_body(404, &format!("no control endpoint {method} {path}"));
            return write_json(writer, 404, &headers, &body, flow);
        }
    };
    match outcome {
        Ok(body) => write_json(writer, 200, &headers, &body, flow),
        Err(error) => write_json(writer, 400, &headers, &error_body(400, &format!("{error:#}")), flow),
    }
}

fn requested_model(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("model")?.as_str().map(str::to_owned)
}

fn mock_headers(name: &str, model: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![("x-mock-upstream".to_owned(), name.to_owned())];
    if let Some(model) = model {
        headers.push(("x-mock-model".to_owned(), model.to_owned()));
    }
    headers
}

/// An OpenAI-style error body for a non-2xx status.
fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("not_found_error", "not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("api_error", "api_error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Mock Status",
    }
}

fn head(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        if name == LATIN1_HEADER {
            // One byte per character, as HTTP's obs-text allows; not UTF-8.
            out.extend(value.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')));
        } else {
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A response header whose value the mock writes in Latin-1 (one byte per character up to U+00FF),
/// not UTF-8: what an upstream may send, and a filter must read without failing.
pub const LATIN1_HEADER: &str = "x-mock-latin1";

fn write_json(
    writer: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &Value,
    flow: Flow,
) -> io::Result<Flow> {
    let bytes = serde_json::to_vec(body).map_err(io::Error::other)?;
    write_raw_json(writer, status, headers, &bytes, flow)
}

fn write_raw_json(
    writer: &mut impl Write,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    flow: Flow,
) -> io::Result<Flow> {
    let mut headers = headers.to_vec();
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    headers.push(("content-length".to_owned(), body.len().to_string()));
    if flow == Flow::Close {
        headers.push(("connection".to_owned(), "close".to_owned()));
    }
    let mut out = head(status, &headers);
    out.extend_from_slice(body);
    writer.write_all(&out)?;
    writer.flush()?;
    Ok(flow)
}

/// Sends SSE `events` (each a complete `data: ...\n\n` block), one HTTP chunk per event.
fn write_stream(
    writer: &mut impl Write,
    http10: bool,
    status: u16,
    mut headers: Vec<(String, String)>,
    mut events: Vec<String>,
    behavior: &Behavior,
    flow: Flow,
) -> io::Result<Flow> {
    if behavior.broken == Some(Broken::InvalidJson) {
        let at = events.len().min(1);
        events.insert(at, "data: {\"id\": \"mock-broken\", \"choices\": [ not json\n\n".to_owned());
    }
    let half = events.len() / 2;
    let clean_end = match behavior.broken {
        Some(Broken::Truncated) => {
            events.truncate(half);
            true
        }
        Some(Broken::ResetMidBody) => {
            events.truncate(half);
            false
        }
        _ => true,
    };
    // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
    let chunked = !http10;
    headers.push(("content-type".to_owned(), "text/event-stream".to_owned()));
    headers.push(("cache-control".to_owned(), "no-cache".to_owned()));
    if chunked {
        headers.push(("transfer-encoding".to_owned(), "chunked".to_owned()));
    }
    let flow = if chunked { flow } else { Flow::Close };
    if flow == Flow::Close {
        headers.push(("connection".to_owned(), "close".to_owned()));
    }
    writer.write_all(&head(status, &headers))?;
    writer.flush()?;
    let delay = Duration::from_millis(behavior.chunk_delay_ms.unwrap_or(0));
    for (i, event) in events.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            thread::sleep(delay);
        }
        if chunked {
            let mut chunk = format!("{:x}\r\n", event.len()).into_bytes();
            chunk.extend_from_slice(event.as_bytes());
            chunk.extend_from_slice(b"\r\n");
            writer.write_all(&chunk)?;
        } else {
            writer.write_all(event.as_bytes())?;
        }
        writer.flush()?;
    }
    if !clean_end {
        return Ok(Flow::Close);
    }
    if chunked {
        writer.write_all(b"0\r\n\r\n")?;
        writer.flush()?;
    }
    Ok(flow)
}

/// Everything needed to build one answer.
struct Reply<'a> {
    name: &'a str,
    model: &'a str,
    request: Option<&'a Value>,
    id: u64,
    created: u64,
    chunks: u32,
    /// `None` when the answer must leave usage out.
    usage: Option<Usage>,
}

/// The `choices` of a chat completion chunk.
fn chat_choice(delta: Value, finish_reason: Value) -> Value {
    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}])
}

/// A chunk of an OpenAI stream: HEAD (id, object, created, model...) with CHOICES, and
/// `"usage": null` when the stream is to end with a usage chunk (as OpenAI sends it).
fn stream_chunk(mut head: Value, choices: Value, include_usage: bool) -> Value {
    if let Some(object) = head.as_object_mut() {
        object.insert("choices".to_owned(), choices);
        if include_usage {
            object.insert("usage".to_owned(), Value::Null);
        }
    }
    head
}

fn sse(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn sse_event(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

impl Reply<'_> {
    fn text(&self) -> String {
        reply_pieces(self.name, self.model, self.chunks).concat()
    }

    fn wants_stream_usage(&self) -> bool {
        self.request.and_then(|r| r.pointer("/stream_options/include_usage")).and_then(Value::as_bool).unwrap_or(false)
    }

    fn chat_usage(&self) -> Option<Value> {
        self.usage.map(|u| {
            json!({
                "prompt_tokens": u.prompt,
                "completion_tokens": u.completion,
                "total_tokens": u.total(),
                "prompt_tokens_details": {"cached_tokens": u.cached},
                "completion_tokens_details": {"reasoning_tokens": u.reasoning},
            })
        })
    }

    fn with_usage(&self, mut body: Value) -> Value {
        if let (Some(usage), Some(object)) = (self.chat_usage(), body.as_object_mut()) {
            object.insert("usage".to_owned(), usage);
        }
        body
    }

    fn chat_completion(&self) -> Value {
        self.with_usage(json!({
            "id": format!("chatcmpl-mock-{}", self.id),
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.text(), "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
        }))
    }

    fn text_completion(&self) -> Value {
        self.with_usage(json!({
            "id": format!("cmpl-mock-{}", self.id),
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": self.text(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
        }))
    }

    fn embeddings(&self) -> Value {
        let inputs = match self.request.and_then(|r| r.get("input")) {
            // A list of strings or of token lists is one input per item; a token list is one input.
            Some(Value::Array(items)) if items.iter().all(|i| i.is_string() || i.is_array()) => items.len(),
            _ => 1,
        };
        let dimensions = self
            .request
            .and_then(|r| r.get("dimensions"))
            .and_then(Value::as_u64)
            .unwrap_or(EMBEDDING_DIMENSIONS)
            .min(4096);
        let data: Vec<Value> = (0..inputs)
            .map(|index| {
                let vector: Vec<f64> =
                    (0..dimensions).map(|d| ((index as f64) + 1.0) / 10.0 + (d as f64) / 1000.0).collect();
                json!({"object": "embedding", "index": index, "embedding": vector})
            })
            .collect();
        let mut body = json!({"object": "list", "data": data, "model": self.model});
        if let (Some(u), Some(object)) = (self.usage, body.as_object_mut()) {
            object.insert("usage".to_owned(), json!({"prompt_tokens": u.prompt, "total_tokens": u.prompt}));
        }
        body
    }

    fn response(&self, status: &str) -> Value {
        let complete = status == "completed";
        let output = if complete {
            json!([{
                "type": "message",
                "id": format!("msg_mock_{}", self.id),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": self.text(), "annotations": []}],
            }])
        } else {
            json!([])
        };
        let usage = match self.usage {
            Some(u) if complete => json!({
                "input_tokens": u.prompt,
                "input_tokens_details": {"cached_tokens": u.cached},
                "output_tokens": u.completion,
                "output_tokens_details": {"reasoning_tokens": u.reasoning},
                "total_tokens": u.total(),
            }),
            _ => Value::Null,
        };
        let mut body = json!({
            "id": format!("resp_mock_{}", self.id),
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
        });
        if complete && self.usage.is_none() {
            if let Some(object) = body.as_object_mut() {
                object.remove("usage");
            }
        }
        body
    }

    /// Ends an OpenAI stream: its usage chunk (LAST, a chunk with no choices, given when the client
    /// asked for usage), then `[DONE]`.
    fn end_stream(&self, events: &mut Vec<String>, last: Option<Value>) {
        if let Some(mut last) = last {
            if let (Some(usage), Some(object)) = (self.chat_usage(), last.as_object_mut()) {
                object.insert("usage".to_owned(), usage);
            }
            events.push(sse(&last));
        }
        events.push("data: [DONE]\n\n".to_owned());
    }

    fn chat_stream(&self) -> Vec<String> {
        let include_usage = self.wants_stream_usage() && self.usage.is_some();
        let chunk = |choices: Value| {
            let head = json!({
                "id": format!("chatcmpl-mock-{}", self.id),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_mock",
            });
            stream_chunk(head, choices, include_usage)
        };
        let mut events = vec![sse(&chunk(chat_choice(json!({"role": "assistant", "content": ""}), Value::Null)))];
        for piece in reply_pieces(self.name, self.model, self.chunks) {
            events.push(sse(&chunk(chat_choice(json!({"content": piece}), Value::Null))));
        }
        events.push(sse(&chunk(chat_choice(json!({}), json!("stop")))));
        self.end_stream(&mut events, include_usage.then(|| chunk(json!([]))));
        events
    }

    fn completion_stream(&self) -> Vec<String> {
        let include_usage = self.wants_stream_usage() && self.usage.is_some();
        let chunk = |choices: Value| {
            let head = json!({
                "id": format!("cmpl-mock-{}", self.id),
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
            });
            stream_chunk(head, choices, include_usage)
        };
        let choice =
            |text: &str, finish: Value| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
        let mut events: Vec<String> = reply_pieces(self.name, self.model, self.chunks)
            .iter()
            .map(|piece| sse(&chunk(choice(piece, Value::Null))))
            .collect();
        events.push(sse(&chunk(choice("", json!("stop")))));
        self.end_stream(&mut events, include_usage.then(|| chunk(json!([]))));
        events
    }

    fn responses_stream(&self) -> Vec<String> {
        let item_id = format!("msg_mock_{}", self.id);
        let mut sequence = 0_u64;
        let mut next = || {
            sequence += 1;
            sequence - 1
        };
        let mut events = vec![sse_event(
            "response.created",
            &json!({"type": "response.created", "sequence_number": next(), "response": self.response("in_progress")}),
        )];
        for piece in reply_pieces(self.name, self.model, self.chunks) {
            events.push(sse_event(
                "response.output_text.delta",
                &json!({
                    "type": "response.output_text.delta",
                    "sequence_number": next(),
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                }),
            ));
        }
        events.push(sse_event(
            "response.output_text.done",
            &json!({
                "type": "response.output_text.done",
                "sequence_number": next(),
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "text": self.text(),
            }),
        ));
        events.push(sse_event(
            "response.completed",
            &json!({"type": "response.completed", "sequence_number": next(), "response": self.response("completed")}),
        ));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_reply_text_up_to_five_chunks() {
        for chunks in 1..=5 {
            let pieces = reply_pieces("a", "m", chunks);
            assert_eq!(pieces.len(), chunks as usize);
            assert_eq!(pieces.concat(), reply_text("a", "m"));
        }
        assert_eq!(reply_pieces("a", "m", 7).concat(), "hello from a as m [5] [6]");
        assert!(reply_pieces("a", "m", 0).is_empty());
    }

    #[test]
    fn usage_knob_parses() {
        assert_eq!("1,2".parse::<Usage>().unwrap(), Usage { prompt: 1, completion: 2, cached: 0, reasoning: 0 });
        assert_eq!("1, 2, 3, 4".parse::<Usage>().unwrap(), Usage { prompt: 1, completion: 2, cached: 3, reasoning: 4 });
        assert!("1".parse::<Usage>().is_err());
        assert!("1,x".parse::<Usage>().is_err());
    }

    #[test]
    fn behaviors_overlay_field_by_field() {
        let base = Behavior {
            status: Some(500),
            delay_ms: Some(5),
            headers: vec![("a".into(), "1".into())],
            ..Behavior::default()
        };
        let top = Behavior { status: Some(429), headers: vec![("b".into(), "2".into())], ..Behavior::default() };
        let merged = base.overlay(&top);
        assert_eq!(merged.status, Some(429));
        assert_eq!(merged.delay_ms, Some(5));
        assert_eq!(merged.headers.len(), 2);
    }

    #[test]
    fn header_knobs_parse_and_reject_garbage() {
        let headers: Vec<(String, String)> = [
            ("X-Mock-Status", "429"),
            ("x-mock-retry-after", "3"),
            ("x-mock-header", "x-a: b: c"),
            ("x-mock-broken", "no-usage"),
            ("x-mock-usage", "10,2"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        let behavior = Behavior::from_request_headers(&headers).unwrap();
        assert_eq!(behavior.status, Some(429));
        assert_eq!(behavior.retry_after.as_deref(), Some("3"));
        assert_eq!(behavior.headers, vec![("x-a".to_owned(), "b: c".to_owned())]);
        assert_eq!(behavior.broken, Some(Broken::NoUsage));
        assert_eq!(behavior.usage, Some(Usage { prompt: 10, completion: 2, cached: 0, reasoning: 0 }));
        assert!(Behavior::from_request_headers(&[("x-mock-status".into(), "soon".into())]).is_err());
    }

    #[test]
    fn behavior_json_round_trips() {
        let text = r#"{"status":429,"retry_after":"2","headers":[["x","1"]],"broken":"reset-mid-body","usage":{"prompt":1,"completion":2}}"#;
        let behavior: Behavior = serde_json::from_str(text).unwrap();
        assert_eq!(behavior.broken, Some(Broken::ResetMidBody));
        let again: Behavior = serde_json::from_str(&serde_json::to_string(&behavior).unwrap()).unwrap();
        assert_eq!(again, behavior);
        assert!(serde_json::from_str::<Behavior>(r#"{"stauts": 1}"#).is_err());
    }
}
