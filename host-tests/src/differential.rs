//! Differential runs: one request, defined once as data ([`Case`]), played through a real Envoy with
//! switchyard.wasm in front of the mock providers, and through the wasmtime harness with the same
//! module and the same plugin configuration bytes; each run is reduced to the [`Outcome`] a client
//! and a provider can observe, and the two outcomes must be equal. When they differ, the harness is
//! wrong (or cannot know Envoy's behaviour and must say so).
//!
//! Fairness is what this module is about:
//! - **Same configuration bytes.** The `json-config` scenario's JSON string is read out of its YAML
//!   file; the demo's native-YAML configuration is written once as JSON ([`DEMO_CONFIG`]) and Envoy
//!   runs the demo file with that JSON put in as a `StringValue`. (A test checks that this JSON is
//!   what Envoy makes of the demo's YAML.)
//! - **Same upstream answer, byte for byte.** A recording TCP relay sits between Envoy and each mock
//!   provider; the harness is then given exactly the answer the provider sent Envoy (status, headers,
//!   each HTTP chunk as one body frame), so ids and timestamps match.
//! - **Same framing as Envoy's HTTP/1 codec.** Bodies reach the filter as data frames without end of
//!   stream ([`FRAME`] bytes each; Envoy's cuts depend on socket timing, and the outcome must not,
//!   except for a body past the buffer limit: see [`Case::first_frame_alone`]), followed by an empty
//!   frame that ends the stream; a streamed answer arrives one HTTP chunk per frame, as the provider
//!   wrote it.
//! - **Counters too.** The filter's counters (Envoy's `wasmcustom.*` stats, read before and after
//!   each case) must move alike; histograms hold latencies and are left out.
//! - **Time is not compared.** The harness's clock is frozen; the latency figures
//!   (`x-switchyard-*-ms` headers and trailers, `*_ms` members of a stream's usage chunk) are
//!   compared for presence only.
//!
//! What Envoy itself decides (which route and cluster serve a request switchyard did not route,
//! whether an HTTP/1.1 client sees trailers) comes from the scenario's Envoy file and is stated in
//! [`Env`], not guessed by the harness.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::envoy::{self, Envoy};
use crate::harness::{ClientResponse, Host, MetricValue, Stream, UpstreamRequest};
use crate::mock::{Behavior, Broken, MockUpstream, Usage};
use crate::scenario;

/// The demo's plugin configuration (`envoy/demo/envoy.yaml`, written there as native YAML), as JSON.
pub const DEMO_CONFIG: &str = r#"{
  "route_header": "x-switchyard-cluster",
  "max_request_bytes": 1048576,
  "upstreams": {
    "openai": {"cluster": "provider_a"},
    "anthropic": {"cluster": "provider_b"},
    "mistral": {"cluster": "provider_c"}
  },
  "models": {
    "gpt-4o-mini": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.60, "cached_input_usd_per_1m": 0.075},
    "claude-sonnet-4-5": {"input_usd_per_1m": 3.00, "output_usd_per_1m": 15.00, "cached_input_usd_per_1m": 0.30},
    "mistral-small-latest": {"input_usd_per_1m": 0.10, "output_usd_per_1m": 0.30},
    "mistral-embed": {"input_usd_per_1m": 0.10},
    "llama-3.1-8b": {}
  },
  "categories": [
    {"name": "extraction",
     "when": {"any": [{"model": {"glob": "extract-*"}}, {"json_mode": true}]},
     "candidates": [{"upstream": "openai", "model": "gpt-4o-mini"}]},
    {"name": "fraud-review",
     "when": {"any": [{"header": {"name": "x-team", "equals": "risk"}},
                      {"text": {"in": "last_user", "keywords": ["chargeback", "fraud", "stolen card"]}}]},
     "candidates": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"},
                    {"upstream": "openai", "model": "gpt-4o-mini"}]},
    {"name": "embeddings",
     "when": {"path": {"prefix": "/v1/embeddings"}},
     "candidates": [{"upstream": "mistral", "model": "mistral-embed"}]},
    {"name": "long-context",
     "when": {"tokens": {"min": 8000}},
     "candidates": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}]},
    {"name": "experimental",
     "when": {"model": {"glob": "llama-*"}},
     "candidates": [{"upstream": "mistral", "model": "llama-3.1-8b"}]},
    {"name": "general",
     "candidates": [{"upstream": "mistral", "model": "mistral-small-latest"},
                    {"upstream": "openai", "model": "gpt-4o-mini"}]}
  ],
  "default_category": "general"
}
"#;

/// The host name clients put in `Host` (Envoy's `:authority`).
pub const CLIENT_HOST: &str = "llm.test";
/// The `x-request-id` the harness gives every request (Envoy generates a random one).
const REQUEST_ID: &str = "8f0b7a52-3c4d-4e5f-9a6b-7c8d9e0f1a2b";

/// An Envoy scenario a case runs in, with what Envoy decides there outside switchyard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// `envoy/demo/envoy.yaml` (3 providers), its configuration as [`DEMO_CONFIG`].
    Demo,
    /// `envoy/json-config/envoy.yaml` (2 providers), its JSON string configuration.
    JsonConfig,
}

impl Env {
    /// The folder under `envoy/`.
    pub fn scenario(self) -> &'static str {
        match self {
            Env::Demo => "demo",
            Env::JsonConfig => "json-config",
        }
    }

    /// The clusters of the scenario, each served by one mock provider of the same name.
    pub fn clusters(self) -> &'static [&'static str] {
        match self {
            Env::Demo => &["provider_a", "provider_b", "provider_c"],
            Env::JsonConfig => &["provider_a", "provider_b"],
        }
    }

    /// The cluster of the route without the route header (requests switchyard does not route).
    pub fn fallback_cluster(self) -> &'static str {
        match self {
            Env::Demo => "provider_a",
            Env::JsonConfig => "provider_b",
        }
    }

    /// The request header switchyard writes the chosen cluster into.
    pub fn route_header(self) -> &'static str {
        "x-switchyard-cluster"
    }

    /// Whether the listener sends trailers to HTTP/1.1 clients (`enable_trailers`).
    pub fn client_sees_trailers(self) -> bool {
        matches!(self, Env::Demo)
    }

    /// The plugin configuration bytes both Envoy and the harness get.
    pub fn plugin_config(self) -> Result<String> {
        match self {
            Env::Demo => Ok(DEMO_CONFIG.to_owned()),
            Env::JsonConfig => string_value_config(&scenario_yaml(self)?),
        }
    }

    /// The scenario's Envoy YAML with providers on `ports` and the plugin configuration given as the
    /// `StringValue` of [`Env::plugin_config`].
    pub fn envoy_yaml(self, ports: &[u16]) -> Result<String> {
        let yaml = scenario::render(self.scenario(), ports)?;
        match self {
            Env::Demo => replace_configuration(&yaml, DEMO_CONFIG),
            Env::JsonConfig => Ok(yaml),
        }
    }
}

fn scenario_yaml(env: Env) -> Result<String> {
    let path = envoy::workspace_root().join("envoy").join(env.scenario()).join("envoy.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The JSON text of the first `google.protobuf.StringValue` configuration in an Envoy YAML file,
/// exactly as Envoy hands it to the filter: the `value: |` literal block without its indentation,
/// with one final newline.
pub fn string_value_config(yaml: &str) -> Result<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("type.googleapis.com/google.protobuf.StringValue"))
        .context("no google.protobuf.StringValue configuration in the YAML")?;
    let rest = lines.get(at + 1..).unwrap_or_default();
    let value_at = rest
        .iter()
        .position(|l| l.trim_start().starts_with("value: |"))
        .context("the StringValue has no `value: |` literal block")?;
    let value_indent = rest.get(value_at).map_or(0, |l| indent_of(l));
    let block: Vec<&str> = rest
        .get(value_at + 1..)
        .unwrap_or_default()
        .iter()
        .take_while(|l| l.trim().is_empty() || indent_of(l) > value_indent)
        .copied()
        .collect();
    let block_indent =
        block.iter().find(|l| !l.trim().is_empty()).map(|l| indent_of(l)).context("empty value block")?;
    let mut text: Vec<&str> = block.iter().map(|l| l.get(block_indent..).unwrap_or("")).collect();
    while text.last().is_some_and(|l| l.is_empty()) {
        text.pop();
    }
    Ok(format!("{}\n", text.join("\n")))
}

/// `yaml` with the (single) wasm `configuration:` block replaced by a `StringValue` holding `json`.
pub fn replace_configuration(yaml: &str, json: &str) -> Result<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let at =
        lines.iter().position(|l| l.trim() == "configuration:").context("no `configuration:` block in the YAML")?;
    let indent = lines.get(at).map_or(0, |l| indent_of(l));
    let end = lines
        .iter()
        .enumerate()
        .skip(at + 1)
        .find(|(_, l)| !l.trim().is_empty() && indent_of(l) <= indent)
        .map_or(lines.len(), |(i, _)| i);
    let pad = " ".repeat(indent);
    let mut out: Vec<String> = lines.get(..at).unwrap_or_default().iter().map(|l| (*l).to_owned()).collect();
    out.push(format!("{pad}configuration:"));
    out.push(format!("{pad}  \"@type\": type.googleapis.com/google.protobuf.StringValue"));
    out.push(format!("{pad}  value: |"));
    for line in json.trim_end_matches('\n').lines() {
        out.push(format!("{pad}    {line}"));
    }
    out.extend(lines.get(end..).unwrap_or_default().iter().map(|l| (*l).to_owned()));
    Ok(out.join("\n") + "\n")
}

/// One request and the upstream's answer to it, as data.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub env: Env,
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Headers the client sends besides `host`, `content-length` and `connection`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the provider answers (status, extra headers, usage, SSE chunk count, broken answers);
    /// the body or SSE events follow from the request, as the mock provider builds them.
    pub upstream: Behavior,
    /// The client sends the first [`FRAME`] bytes of the body on their own and waits 200 ms before
    /// the rest, so that Envoy's first body frame is that piece. Where Envoy cuts a body decides
    /// who refuses one past its buffer limit: a first frame over the limit reaches the filter
    /// whole (its own 413), while a frame taking a paused buffer past it gets Envoy's 413.
    pub first_frame_alone: bool,
}

impl Case {
    /// A JSON POST to `path` in `env`.
    pub fn post(name: &'static str, env: Env, path: &str, body: impl Into<Vec<u8>>) -> Case {
        Case {
            name,
            env,
            method: "POST",
            path: path.to_owned(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.into(),
            upstream: Behavior::default(),
            first_frame_alone: false,
        }
    }

    /// Adds a client header.
    pub fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets how the provider answers.
    pub fn upstream(mut self, behavior: Behavior) -> Case {
        self.upstream = behavior;
        self
    }

    /// The headers the client sends, in order (without `connection`).
    fn client_headers(&self) -> Vec<(String, String)> {
        client_headers(self.method, &self.headers, &self.body)
    }
}

/// The headers a client sends with `headers` and `body`: `host`, then `headers`, then
/// `content-length` (for a POST or a body).
pub fn client_headers(method: &str, headers: &[(String, String)], body: &[u8]) -> Vec<(String, String)> {
    let mut out = vec![("host".to_owned(), CLIENT_HOST.to_owned())];
    out.extend(headers.iter().cloned());
    if !body.is_empty() || method == "POST" {
        out.push(("content-length".to_owned(), body.len().to_string()));
    }
    out
}

/// Bytes shown as (lossy) text in assertion messages.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 2000;
        let text = String::from_utf8_lossy(&self.0);
        if text.len() > SHOWN {
            let cut = (0..=SHOWN).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            write!(f, "{:?}... ({} bytes)", text.get(..cut).unwrap_or_default(), self.0.len())
        } else {
            write!(f, "{text:?}")
        }
    }
}

/// What the provider received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSeen {
    /// The cluster (= mock provider) that received the request.
    pub cluster: String,
    pub method: String,
    /// Path and query as sent upstream.
    pub path: String,
    /// `Host` as sent upstream.
    pub authority: Option<String>,
    pub content_length: Option<String>,
    /// `x-switchyard-*` request headers that reached the provider (the route header among them).
    pub switchyard_headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Bytes,
}

/// What a client and a provider can observe of one request, with latency values masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status the client received; `None` when no answer came.
    pub status: Option<u16>,
    pub content_type: Option<String>,
    /// `x-switchyard-*` response headers, sorted (latency values masked).
    pub headers: Vec<(String, String)>,
    /// `x-switchyard-*` response trailers, sorted (latency values masked); empty where the client
    /// cannot see trailers.
    pub trailers: Vec<(String, String)>,
    /// The body the client received (for streams, the data events concatenated), latency members
    /// of JSON masked.
    pub body: Bytes,
    /// `None` when the request reached no provider.
    pub upstream: Option<UpstreamSeen>,
    /// The counters the filter moved (name as the filter defined it, increase), sorted.
    pub counters: Vec<(String, u64)>,
}

const MASK: &str = "<ms>";

/// Latency headers: compared for presence only.
fn is_time_header(name: &str) -> bool {
    name.starts_with("x-switchyard-") && name.ends_with("-ms")
}

fn switchyard_pairs(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-switchyard-"))
        .map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            let v = if is_time_header(&k) && v.parse::<u64>().is_ok() { MASK.to_owned() } else { v.clone() };
            (k, v)
        })
        .collect();
    out.sort();
    out
}

/// `body` with the digits after `"upstream_ms":`, `"ttft_ms":` and `"total_ms":` replaced by a mask.
pub fn mask_times(body: &[u8]) -> Vec<u8> {
    const KEYS: [&[u8]; 3] = [b"\"upstream_ms\":", b"\"ttft_ms\":", b"\"total_ms\":"];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let rest = body.get(i..).unwrap_or_default();
        if let Some(key) = KEYS.iter().find(|k| rest.starts_with(k)) {
            out.extend_from_slice(key);
            i += key.len();
            let digits = body.get(i..).unwrap_or_default().iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                out.extend_from_slice(MASK.as_bytes());
                i += digits;
            }
            continue;
        }
        if let Some(b) = body.get(i) {
            out.push(*b);
        }
        i += 1;
    }
    out
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 on the wire

/// One HTTP/1.1 response as it crossed a socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireResponse {
    pub status: u16,
    /// Headers in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body: one element per HTTP chunk for chunked answers, else one element (or none).
    pub frames: Vec<Vec<u8>>,
    pub trailers: Vec<(String, String)>,
    pub chunked: bool,
}

impl WireResponse {
    pub fn body(&self) -> Vec<u8> {
        self.frames.concat()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    bytes.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|p| p + from)
}

fn parse_header_lines(bytes: &[u8], mut at: usize) -> Result<(Vec<(String, String)>, usize)> {
    let mut headers = Vec::new();
    loop {
        let end = find_crlf(bytes, at).context("incomplete header block")?;
        let line = bytes.get(at..end).context("header line out of range")?;
        at = end + 2;
        if line.is_empty() {
            return Ok((headers, at));
        }
        let line = std::str::from_utf8(line).context("header line is not UTF-8")?;
        let (k, v) = line.split_once(':').with_context(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
}

/// Parses one response from `bytes`; `eof` says the connection ended after them (a body without
/// length then runs to the end). Returns the response and the bytes it used.
pub fn parse_response(bytes: &[u8], eof: bool) -> Result<(WireResponse, usize)> {
    let end = find_crlf(bytes, 0).context("no status line")?;
    let line = std::str::from_utf8(bytes.get(..end).unwrap_or_default()).context("status line is not UTF-8")?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let (headers, mut at) = parse_header_lines(bytes, end + 2)?;
    let mut response = WireResponse { status, headers, ..WireResponse::default() };
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    if no_body {
        return Ok((response, at));
    }
    let chunked = response.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.chunked = true;
        loop {
            let end = find_crlf(bytes, at).context("incomplete chunk size line")?;
            let size_line = std::str::from_utf8(bytes.get(at..end).unwrap_or_default())?;
            let size_text = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_line:?}"))?;
            at = end + 2;
            if size == 0 {
                let (trailers, after) = parse_header_lines(bytes, at)?;
                response.trailers = trailers;
                return Ok((response, after));
            }
            let data = bytes.get(at..at + size).context("incomplete chunk")?;
            response.frames.push(data.to_vec());
            at += size;
            if bytes.get(at..at + 2) != Some(b"\r\n".as_slice()) {
                bail!("chunk not followed by CRLF");
            }
            at += 2;
        }
    }
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().with_context(|| format!("bad content-length {len:?}"))?;
        let data = bytes.get(at..at + len).context("incomplete body")?;
        if len > 0 {
            response.frames.push(data.to_vec());
        }
        return Ok((response, at + len));
    }
    if !eof {
        bail!("a body without length needs the end of the connection");
    }
    let rest = bytes.get(at..).unwrap_or_default();
    if !rest.is_empty() {
        response.frames.push(rest.to_vec());
    }
    Ok((response, bytes.len()))
}

/// Sends `case` to `port` as an HTTP/1.1 request with `connection: close` and reads the answer.
pub fn send(port: u16, case: &Case) -> Result<WireResponse> {
    let pause = if case.first_frame_alone { Some((FRAME, Duration::from_millis(200))) } else { None };
    exchange_paced(port, case.method, &case.path, &case.client_headers(), &case.body, pause)
}

/// Sends one HTTP/1.1 request to `127.0.0.1:port` with exactly `headers` (a `content-length` is
/// added when missing and there is a body) and `connection: close`, and reads the answer.
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<WireResponse> {
    exchange_paced(port, method, path, headers, body, None)
}

/// [`exchange`], optionally sending the head and the first `n` body bytes, then waiting, then the rest.
fn exchange_paced(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    pause: Option<(usize, Duration)>,
) -> Result<WireResponse> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("cannot connect to port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && find_header(headers, "content-length").is_none() {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    let split = out.len() + pause.map_or(body.len(), |(n, _)| n.min(body.len()));
    out.extend_from_slice(body);
    let (first, rest) = out.split_at(split.min(out.len()));
    // A request refused early (413) may be answered and closed before all of it was written.
    let mut written = stream.write_all(first);
    if let (Some((_, wait)), Ok(())) = (pause, &written) {
        thread::sleep(wait);
        written = stream.write_all(rest);
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    if answer.is_empty() {
        written.context("writing the request")?;
        read.context("reading the answer")?;
        bail!("the server closed the connection without answering");
    }
    Ok(parse_response(&answer, true)?.0)
}

// ---------------------------------------------------------------------------------------------
// The recording relay between Envoy and a provider

struct RelayShared {
    stopping: AtomicBool,
    /// Bytes each connection carried from the provider back to Envoy.
    transcripts: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    sockets: Mutex<Vec<TcpStream>>,
}

/// A TCP relay that records what the provider answers, to replay it to the harness.
pub struct Relay {
    port: u16,
    shared: Arc<RelayShared>,
    accept_loop: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pipe(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = buf.get(..n).unwrap_or_default();
        // Recorded before it is passed on: once Envoy has the bytes, so does the transcript.
        if let Some(r) = &record {
            lock(r).extend_from_slice(data);
        }
        if to.write_all(data).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    /// Relays connections on a free loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(RelayShared {
            stopping: AtomicBool::new(false),
            transcripts: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept_loop = thread::Builder::new().name("relay-accept".to_owned()).spawn(move || {
            for incoming in listener.incoming() {
                if s.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = incoming else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let transcript = Arc::new(Mutex::new(Vec::new()));
                lock(&s.transcripts).push(transcript.clone());
                let clones = (down.try_clone(), up.try_clone(), down.try_clone(), up.try_clone());
                let (Ok(d1), Ok(u1), Ok(d2), Ok(u2)) = clones else { continue };
                lock(&s.sockets).extend([d2, u2]);
                let _ = thread::Builder::new().name("relay-up".to_owned()).spawn(move || pipe(d1, u1, None));
                let _ = thread::Builder::new()
                    .name("relay-down".to_owned())
                    .spawn(move || pipe(up, down, Some(transcript)));
            }
        })?;
        Ok(Relay { port, shared, accept_loop: Some(accept_loop) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every complete response the provider sent so far, per connection in the order they opened.
    pub fn responses(&self) -> Result<Vec<Vec<WireResponse>>> {
        let mut out = Vec::new();
        for t in lock(&self.shared.transcripts).iter() {
            let bytes = lock(t).clone();
            let mut answers = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let (r, used) = parse_response(bytes.get(at..).unwrap_or_default(), false)
                    .context("the provider's answer could not be parsed")?;
                answers.push(r);
                at += used;
            }
            out.push(answers);
        }
        Ok(out)
    }

    /// The responses sent since `before` (an earlier [`Relay::responses`]), in any connection.
    fn responses_since(&self, before: &[Vec<WireResponse>]) -> Result<Vec<WireResponse>> {
        let now = self.responses()?;
        Ok(now
            .into_iter()
            .enumerate()
            .flat_map(|(i, conn)| {
                let skip = before.get(i).map_or(0, Vec::len);
                conn.into_iter().skip(skip)
            })
            .collect())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let woke = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        if let Some(h) = self.accept_loop.take() {
            if woke {
                let _ = h.join();
            }
        }
        for s in lock(&self.shared.sockets).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Envoy side

/// A running scenario: mock providers, a recording relay in front of each, Envoy. Cases run one
/// after another on one rig share its Envoy: a case whose outcome depends on state an earlier one
/// left in Envoy (shared data such as cooldowns) needs a rig of its own.
pub struct EnvoyRig {
    pub env: Env,
    pub envoy: Envoy,
    pub providers: Vec<MockUpstream>,
    relays: Vec<Relay>,
}

/// What one case did in Envoy, and the provider's answer as sent (to replay in the harness).
#[derive(Debug, Clone)]
pub struct EnvoyRun {
    pub outcome: Outcome,
    pub answer: Option<WireResponse>,
    /// Envoy's answer to the client, as received.
    pub client: WireResponse,
}

impl EnvoyRig {
    pub fn start(env: Env) -> Result<EnvoyRig> {
        let providers = env.clusters().iter().map(|name| MockUpstream::start(name)).collect::<Result<Vec<_>>>()?;
        let relays = providers.iter().map(|p| Relay::start(p.port())).collect::<Result<Vec<_>>>()?;
        let ports: Vec<u16> = relays.iter().map(Relay::port).collect();
        let envoy = Envoy::start(&env.envoy_yaml(&ports)?)?;
        Ok(EnvoyRig { env, envoy, providers, relays })
    }

    /// Runs `case`, which must be of this rig's scenario. Not for concurrent use: each case must
    /// find the providers idle.
    pub fn run(&self, case: &Case) -> Result<EnvoyRun> {
        if case.env != self.env {
            bail!("case {} runs in {:?}, the rig is {:?}", case.name, case.env, self.env);
        }
        let before: Vec<Vec<Vec<WireResponse>>> = self.relays.iter().map(Relay::responses).collect::<Result<_>>()?;
        let counters_before = self.counters()?;
        for p in &self.providers {
            p.clear();
            p.set_behavior(case.upstream.clone());
        }
        let client = send(self.envoy.port(), case)?;
        let mut seen = Vec::new();
        let mut answers = Vec::new();
        for ((p, relay), before) in self.providers.iter().zip(&self.relays).zip(&before) {
            let requests = p.requests();
            // The relay recorded each answer before Envoy had it; nothing is in flight now.
            let sent = relay.responses_since(before)?;
            if sent.len() != requests.len() {
                bail!(
                    "{} received {} requests but answered {} through the relay",
                    p.name(),
                    requests.len(),
                    sent.len()
                );
            }
            seen.extend(requests.into_iter().map(|r| (p.name().to_owned(), r)));
            answers.extend(sent);
        }
        if seen.len() > 1 {
            bail!("Envoy sent the request to providers {} times: {:?}", seen.len(), seen);
        }
        let upstream = seen.pop().map(|(cluster, r)| UpstreamSeen {
            cluster,
            method: r.method.clone(),
            path: r.path.clone(),
            authority: r.header("host").map(str::to_owned),
            content_length: r.header("content-length").map(str::to_owned),
            switchyard_headers: switchyard_pairs(&r.headers),
            body: Bytes(r.body.clone()),
        });
        let outcome = Outcome {
            status: Some(client.status),
            content_type: client.header("content-type").map(str::to_owned),
            headers: switchyard_pairs(&client.headers),
            trailers: if self.env.client_sees_trailers() { switchyard_pairs(&client.trailers) } else { Vec::new() },
            body: Bytes(mask_times(&client.body())),
            upstream,
            counters: self.counters_since(&counters_before)?,
        };
        Ok(EnvoyRun { outcome, answer: answers.pop(), client })
    }

    /// The filter's counters (`wasmcustom.` stats, the prefix removed).
    fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let body = self.envoy.admin_get("/stats?format=json&type=Counters&filter=%5Ewasmcustom%5C.")?;
        let v: serde_json::Value = serde_json::from_str(&body).context("/stats is not JSON")?;
        let stats = v.get("stats").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
        Ok(stats
            .iter()
            .filter_map(|s| {
                let name = s.get("name")?.as_str()?.strip_prefix("wasmcustom.")?;
                Some((name.to_owned(), s.get("value")?.as_u64()?))
            })
            .collect())
    }

    /// The counters that grew since `before`, once they stop moving: a filter may count in its
    /// last callbacks, which run on Envoy's worker just after the client has the answer.
    fn counters_since(&self, before: &BTreeMap<String, u64>) -> Result<Vec<(String, u64)>> {
        let mut now = self.counters()?;
        for _ in 0..50 {
            thread::sleep(Duration::from_millis(20));
            let again = self.counters()?;
            if again == now {
                break;
            }
            now = again;
        }
        Ok(now
            .into_iter()
            .filter_map(|(k, v)| {
                let grew = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
                (grew > 0).then_some((k, grew))
            })
            .collect())
    }
}

/// Starts the case's scenario and runs the case in it.
pub fn run_envoy(case: &Case) -> Result<EnvoyRun> {
    EnvoyRig::start(case.env)?.run(case)
}

// ---------------------------------------------------------------------------------------------
// The harness side

/// A harness host set up like the scenario's Envoy: plugin, root and VM id `switchyard`, the
/// scenario's clusters, and its plugin configuration (an error if the filter refuses it).
pub fn harness_host(wasm: &[u8], env: Env) -> Result<Host> {
    let host = Host::builder(wasm)
        .plugin_name("switchyard")
        .root_id("switchyard")
        .vm_id("switchyard")
        .clusters(env.clusters())
        .build()?;
    let configured = host.configure(env.plugin_config()?)?;
    if !configured.accepted {
        let logs: Vec<String> = configured.logs.iter().map(|l| l.message.clone()).collect();
        bail!("the filter refused the {} configuration: {logs:?}", env.scenario());
    }
    Ok(host)
}

/// The request headers Envoy's HTTP/1 codec and connection manager hand the filter when a client
/// sends `method` `path` with `headers` and `body` (see [`client_headers`]).
pub fn envoy_request_headers(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<(String, String)> {
    let mut out = vec![
        (":authority".to_owned(), CLIENT_HOST.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":method".to_owned(), method.to_owned()),
        (":scheme".to_owned(), "http".to_owned()),
    ];
    out.extend(client_headers(method, headers, body).into_iter().filter(|(k, _)| k != "host"));
    out.push(("x-forwarded-proto".to_owned(), "http".to_owned()));
    out.push(("x-request-id".to_owned(), REQUEST_ID.to_owned()));
    out
}

/// Plays a request into `s` the way Envoy's HTTP/1 codec delivers it: `headers` (see
/// [`envoy_request_headers`]), the body in frames of at most [`FRAME`] bytes without end of
/// stream, then an empty frame that ends it. Stops early when the filter answers.
pub fn send_request(s: &mut Stream, headers: &[(String, String)], body: &[u8]) -> Result<UpstreamRequest> {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut up = s.send_request_headers(&refs, body.is_empty())?;
    if body.is_empty() {
        return Ok(up);
    }
    for frame in body.chunks(FRAME) {
        up = s.send_request_data(frame, false)?;
        if up.answered.is_some() {
            return Ok(up);
        }
    }
    if !up.complete {
        up = s.send_request_data(&[], true)?;
    }
    Ok(up)
}

/// Plays a provider's answer into `s` the way Envoy's HTTP/1 codec delivers it: the headers
/// without connection headers, each body frame (cut to at most [`FRAME`] bytes) without end of
/// stream, then an empty frame (or the trailers) that ends it.
pub fn send_answer(s: &mut Stream, answer: &WireResponse) -> Result<ClientResponse> {
    let hs: Vec<(&str, &str)> =
        answer.headers.iter().filter(|(k, _)| !hop_by_hop(k)).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let empty = answer.frames.is_empty() && answer.trailers.is_empty();
    let c = s.send_response_headers(answer.status, &hs, empty)?;
    if empty {
        return Ok(c);
    }
    for f in answer.frames.iter().flat_map(|f| f.chunks(FRAME)) {
        s.send_response_data(f, false)?;
    }
    if answer.trailers.is_empty() {
        s.send_response_data(&[], true)
    } else {
        let ts: Vec<(&str, &str)> = answer.trailers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        s.send_response_trailers(&ts)
    }
}

/// The size of the body frames the harness is given (Envoy's first frame of a body is often
/// 64 KiB on loopback). Where the cuts fall must not change the outcome, since switchyard buffers
/// whole bodies; a body past Envoy's buffer limit is the exception (see [`Case::first_frame_alone`]).
pub const FRAME: usize = 64 * 1024;

/// Headers of a connection, not of the message: Envoy's codec consumes them.
fn hop_by_hop(name: &str) -> bool {
    matches!(name, "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "proxy-connection")
}

/// Runs `case` through `host`; `answer` is what the provider answers if the request reaches it.
pub fn run_harness(host: &Host, case: &Case, answer: Option<&WireResponse>) -> Result<Outcome> {
    run_harness_with(host, case, |_| Ok(answer.cloned()))
}

/// Runs `case` through `host` alone: a request that reaches the provider is answered by `provider`
/// (given the case's behaviour), asked over HTTP with the request as forwarded.
pub fn run_harness_against(host: &Host, case: &Case, provider: &MockUpstream) -> Result<Outcome> {
    provider.set_behavior(case.upstream.clone());
    run_harness_with(host, case, |up| ask_provider(provider.port(), up).map(Some))
}

/// Sends the request as the harness forwarded it to a provider on `127.0.0.1:port` and returns its
/// answer as it crossed the wire (pseudo-headers become the request line and `Host`).
pub fn ask_provider(port: u16, up: &UpstreamRequest) -> Result<WireResponse> {
    let hs = up.headers.clone().context("the request was not forwarded")?;
    let method = find_header(&hs, ":method").unwrap_or("GET").to_owned();
    let path = find_header(&hs, ":path").unwrap_or("/").to_owned();
    let mut headers = vec![("host".to_owned(), find_header(&hs, ":authority").unwrap_or(CLIENT_HOST).to_owned())];
    headers.extend(hs.iter().filter(|(k, _)| !k.starts_with(':') && k != "content-length" && !hop_by_hop(k)).cloned());
    if !up.body.is_empty() || method == "POST" {
        headers.push(("content-length".to_owned(), up.body.len().to_string()));
    }
    exchange(port, &method, &path, &headers, &up.body)
}

fn run_harness_with(
    host: &Host,
    case: &Case,
    answer: impl FnOnce(&UpstreamRequest) -> Result<Option<WireResponse>>,
) -> Result<Outcome> {
    let env = case.env;
    let mut s = host.stream()?;
    let headers = envoy_request_headers(case.method, &case.path, &case.headers, &case.body);
    let up = send_request(&mut s, &headers, &case.body)?;
    let seen = up.complete.then(|| {
        let hs = up.headers.clone().unwrap_or_default();
        UpstreamSeen {
            cluster: find_header(&hs, env.route_header()).unwrap_or(env.fallback_cluster()).to_owned(),
            method: find_header(&hs, ":method").unwrap_or_default().to_owned(),
            path: find_header(&hs, ":path").unwrap_or_default().to_owned(),
            authority: find_header(&hs, ":authority").map(str::to_owned),
            content_length: find_header(&hs, "content-length").map(str::to_owned),
            switchyard_headers: switchyard_pairs(&hs),
            body: Bytes(up.body.clone()),
        }
    });
    let answer = if up.answered.is_none() && seen.is_some() { answer(&up)? } else { None };
    let client = match (&up.answered, &seen, &answer) {
        (Some(answered), _, _) => answered.clone(),
        (None, Some(_), Some(a)) => send_answer(&mut s, a)?,
        // Forwarded in the harness but no provider answer to replay (Envoy did not forward it), or
        // held by the filter: no answer reached the client.
        _ => {
            return Ok(Outcome {
                status: None,
                content_type: None,
                headers: Vec::new(),
                trailers: Vec::new(),
                body: Bytes::default(),
                upstream: seen,
                counters: counters(host)?,
            })
        }
    };
    if client.reset {
        bail!("the harness reset the stream: {:?}", client.reset_reason);
    }
    let trailers = if env.client_sees_trailers() {
        switchyard_pairs(&client.trailers.clone().unwrap_or_default())
    } else {
        Vec::new()
    };
    Ok(Outcome {
        status: client.status,
        content_type: client.header("content-type").map(str::to_owned),
        headers: switchyard_pairs(&client.headers),
        trailers,
        body: Bytes(mask_times(&client.body)),
        upstream: seen,
        counters: counters(host)?,
    })
}

/// The host's non-zero counters, sorted (a fresh host per case: all of them are the case's).
fn counters(host: &Host) -> Result<Vec<(String, u64)>> {
    Ok(host
        .metrics()?
        .into_iter()
        .filter_map(|(k, v)| match v {
            MetricValue::Counter(n) if n > 0 => Some((k, n)),
            _ => None,
        })
        .collect())
}

/// The two outcomes of one case and the time each side took.
#[derive(Debug, Clone)]
pub struct Compared {
    pub envoy: Outcome,
    pub harness: Outcome,
    /// Envoy: the request through Envoy (its start-up not counted).
    pub envoy_time: Duration,
    /// Harness: a fresh host (instantiate and configure the compiled module) and the request.
    pub harness_time: Duration,
}

/// Runs `case` on `rig`, then in a fresh harness host with the provider's recorded answer replayed.
pub fn compare(rig: &EnvoyRig, wasm: &[u8], case: &Case) -> Result<Compared> {
    let t = Instant::now();
    let envoy_run = rig.run(case).with_context(|| format!("case {} in Envoy", case.name))?;
    let envoy_time = t.elapsed();
    let t = Instant::now();
    let host = harness_host(wasm, case.env)?;
    let harness = run_harness(&host, case, envoy_run.answer.as_ref())
        .with_context(|| format!("case {} in the harness", case.name))?;
    Ok(Compared { envoy: envoy_run.outcome, harness, envoy_time, harness_time: t.elapsed() })
}

/// Loads the module Envoy loads (`SWITCHYARD_WASM` or the release build) and compiles it for the
/// harness, so that later timings leave compilation out.
pub fn wasm() -> Result<Vec<u8>> {
    let path = envoy::wasm_path()?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::harness::vm::compile(&bytes).map_err(|e| anyhow!("{e:#}"))?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// The scenarios

const CHAT: &str = "/v1/chat/completions";

fn usage(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Behavior {
    Behavior { usage: Some(Usage { prompt, completion, cached, reasoning }), ..Behavior::default() }
}

fn with_headers(mut b: Behavior, headers: &[(&str, &str)]) -> Behavior {
    b.headers.extend(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    b
}

fn demo(name: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case::post(name, Env::Demo, path, body)
}

fn json(name: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case::post(name, Env::JsonConfig, path, body)
}

const EXTRACT: &str =
    r#"{"model":"extract-fields","messages":[{"role":"user","content":"Total of invoice 7?"}],"temperature":0}"#;
const JSON_BODY: &str = r#"{"model":"whatever","messages":[{"role":"user","content":"hi"}]}"#;

/// Every differential scenario, once (the table in `tests/differential.rs` describes them).
pub fn cases() -> Vec<Case> {
    let long =
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#, "lorem ipsum ".repeat(3000));
    let huge = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(2 * 1024 * 1024));
    let big = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(8 * 1024));
    let mut get_models = demo("pass_through_get_strips_upstream_headers", "/v1/models", "")
        .upstream(with_headers(Behavior::default(), &[("x-switchyard-model", "fake")]));
    get_models.method = "GET";
    get_models.headers.clear();
    vec![
        demo("route_extraction_by_model_glob", CHAT, EXTRACT),
        demo(
            "route_fraud_review_by_header",
            CHAT,
            "{\n  \"messages\": [{\"role\": \"user\", \"content\": \"hello \\u00e9\"}],\n  \"model\" : \"gpt-4o\",\n  \"x-vendor-field\": {\"model\": \"keep-me\"}\n}",
        )
        .header("x-team", "risk"),
        demo("route_fraud_review_by_keyword_responses_api", "/v1/responses", r#"{"model":"o-auto","input":"Is this chargeback legit?"}"#)
            .upstream(usage(1000, 1000, 0, 300)),
        demo("route_embeddings_by_path", "/v1/embeddings", r#"{"input":["a","b"],"model":"text-embedding-3-small"}"#)
            .upstream(usage(2000, 0, 0, 0)),
        demo("route_long_context_by_tokens", CHAT, long),
        demo("route_general_by_default", CHAT, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Write a haiku"}]}"#),
        demo("route_completions_api", "/v1/completions", r#"{"model":"extract-sku","prompt":"SKU of item?"}"#)
            .upstream(usage(1000, 1000, 0, 0)),
        demo("pass_through_other_path", "/v1/files", b"\x00\xffnot json {\"model\":\"x\"}".to_vec())
            .header("x-custom", "kept")
            .header("x-switchyard-cluster", "provider_c"),
        get_models,
        demo("bad_json_is_refused", CHAT, r#"{"model": "extract-x", "#),
        demo("missing_model_is_refused", CHAT, r#"{"messages": []}"#),
        demo("invalid_utf8_is_refused", CHAT, b"{\"model\": \"caf\xe9\"}".to_vec()),
        demo("spoofed_route_header_is_ignored", CHAT, EXTRACT)
            .header("x-switchyard-cluster", "provider_c")
            .header("x-switchyard-category", "fraud-review")
            .header("x-switchyard-cost-usd", "0"),
        demo("upstream_cost_header_is_stripped", CHAT, EXTRACT).upstream(with_headers(
            Behavior::default(),
            &[("x-switchyard-cost-usd", "123"), ("x-switchyard-category", "fake")],
        )),
        demo("cost_headers_with_cached_and_reasoning_tokens", CHAT, EXTRACT).upstream(usage(1000, 500, 200, 40)),
        demo("unpriced_model_costs_unknown", CHAT, r#"{"model":"llama-3.1-8b-instruct","messages":[{"role":"user","content":"hi"}]}"#)
            .upstream(usage(10, 5, 0, 0)),
        demo("answer_without_usage_costs_unknown", CHAT, EXTRACT).upstream(Behavior::broken(Broken::NoUsage)),
        demo("upstream_503_passes_unpriced", CHAT, EXTRACT).upstream(Behavior::status(503)),
        demo(
            "stream_with_injected_usage",
            CHAT,
            r#"{"model":"extract-fields","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .upstream(usage(1000, 500, 0, 0)),
        demo(
            "stream_with_requested_usage",
            CHAT,
            r#"{"model":"extract-fields","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .upstream(usage(1000, 500, 200, 0)),
        demo("stream_completions_with_injected_usage", "/v1/completions", r#"{"model":"extract-sku","prompt":"SKU?","stream":true}"#)
            .upstream(Behavior { chunks: Some(5), ..usage(300, 40, 0, 0) }),
        demo("stream_responses_api_is_priced", "/v1/responses", r#"{"model":"o-auto","input":"refund?","stream":true}"#)
            .upstream(usage(1000, 100, 0, 20)),
        Case { first_frame_alone: true, ..demo("body_over_envoy_buffer_limit", CHAT, huge) },
        json("body_over_switchyard_limit", "/llm/v1/chat/completions", big),
        json("json_prefix_default_category_with_query", "/llm/v1/chat/completions?trace=1", JSON_BODY),
        json("json_category_hint_rewrites_path_and_host", "/llm/v1/chat/completions", JSON_BODY)
            .header("x-switchyard-category", "premium")
            .upstream(Behavior { chunks: Some(1), ..usage(10, 5, 0, 0) }),
        json("json_unknown_category_hint_is_refused", "/llm/v1/chat/completions", JSON_BODY)
            .header("x-switchyard-category", "nope"),
        json("json_answer_over_hold_limit_is_unpriced", "/llm/v1/chat/completions", JSON_BODY).upstream(usage(10, 5, 0, 0)),
        json("json_path_without_prefix_passes_through", CHAT, JSON_BODY),
    ]
}

/// What each scenario is about, checked on an outcome (Envoy's or the harness's): a few facts per
/// kind, so that two runs that are equally wrong do not pass a differential test, and so that the
/// harness alone can run the scenarios.
pub fn expect(case: &Case, o: &Outcome) -> Result<()> {
    let header = |n: &str| o.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let body = String::from_utf8_lossy(&o.body.0).into_owned();
    let up = o.upstream.as_ref();
    let n = case.name;
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(anyhow!("{n}: {what}: {o:?}")) };
    let counted = |metric: &str| o.counters.iter().any(|(k, _)| k.ends_with(metric));
    if n.ends_with("_is_refused") || n == "body_over_switchyard_limit" {
        ensure(up.is_none(), "a refused request reached a provider")?;
        ensure(counted("switchyard_refused_total"), "the refusal was not counted")?;
        ensure(o.status.is_some_and(|s| s == 400 || s == 413), "not refused with 400 or 413")?;
        return ensure(header("x-switchyard-error").is_some(), "no x-switchyard-error");
    }
    if n == "body_over_envoy_buffer_limit" {
        ensure(o.status == Some(413) && header("x-switchyard-error").is_none(), "not Envoy's own 413")?;
        return ensure(up.is_none(), "the request reached a provider");
    }
    let Some(up) = up else { return Err(anyhow!("{n}: the request reached no provider: {o:?}")) };
    ensure(o.status.is_some(), "no answer")?;
    if n.starts_with("pass_through") || n == "json_path_without_prefix_passes_through" {
        ensure(o.headers.is_empty(), "x-switchyard-* headers on a pass-through answer")?;
        ensure(up.body.0 == case.body, "the body did not pass byte for byte")?;
        return ensure(up.switchyard_headers.is_empty(), "x-switchyard-* headers went upstream");
    }
    ensure(header("x-switchyard-category").is_some(), "no category")?;
    ensure(counted("switchyard_requests_total"), "the request was not counted")?;
    ensure(
        up.switchyard_headers.iter().any(|(k, v)| k == case.env.route_header() && *v == up.cluster),
        "route header",
    )?;
    if n == "upstream_503_passes_unpriced" {
        return ensure(o.status == Some(503) && header("x-switchyard-cost-usd").is_none(), "503 priced or changed");
    }
    if n.starts_with("stream_") {
        ensure(o.content_type.as_deref().unwrap_or("").starts_with("text/event-stream"), "not a stream")?;
        ensure(o.trailers.iter().any(|(k, _)| k == "x-switchyard-cost-usd"), "no cost trailer")?;
    } else {
        ensure(header("x-switchyard-cost-usd").is_some(), "no cost header")?;
    }
    if n == "stream_with_injected_usage" {
        ensure(!body.contains("usage"), "usage the client did not ask for")?;
    }
    if n == "stream_with_requested_usage" {
        ensure(body.contains("\"switchyard\":{") && body.contains("\"cost\":"), "no cost in the usage chunk")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_masked() {
        let body = br#"{"switchyard":{"upstream_ms":12,"ttft_ms":0,"total_ms":900,"cost_usd":"1"}}"#;
        assert_eq!(
            String::from_utf8(mask_times(body)).unwrap(),
            r#"{"switchyard":{"upstream_ms":<ms>,"ttft_ms":<ms>,"total_ms":<ms>,"cost_usd":"1"}}"#
        );
    }

    #[test]
    fn chunked_answers_parse_with_frames_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-a: 1\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 2\r\n\r\n";
        let (r, used) = parse_response(wire, false).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(r.frames, vec![b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(r.trailers, vec![("x-t".to_owned(), "2".to_owned())]);
        assert_eq!(r.header("x-a"), Some("1"));
        let wire = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nhi";
        assert_eq!(parse_response(wire, false).unwrap().0.body(), b"hi");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi", false).is_err());
    }

    #[test]
    fn configuration_block_is_replaced_and_read_back() {
        let yaml = "a:\n  configuration:\n    \"@type\": x\n    value:\n      k: 1\n  next: 2\n";
        let out = replace_configuration(yaml, "{\n  \"k\": 1\n}\n").unwrap();
        assert!(out.contains("  next: 2"), "{out}");
        assert!(!out.contains("k: 1"), "{out}");
        assert_eq!(string_value_config(&out).unwrap(), "{\n  \"k\": 1\n}\n");
    }
}
