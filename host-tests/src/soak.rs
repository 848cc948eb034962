//! The soak test (`make soak`, the `soak` binary): a long run of mixed traffic through a real Envoy
//! running switchyard with failover, while the mock providers fail on purpose, to show that no
//! request is ever lost or left hanging and that memory stays flat.
//!
//! Tests prove each fault on its own; a soak finds what only shows after a million requests with
//! every fault at once: a leak in the VM or in Envoy, a request that never ends, a stream cut that
//! nobody asked for, a cooldown race. So it runs `envoy/soak/envoy.yaml` (five categories, three
//! candidates each, over three providers) with [`MockUpstream`]s that count instead of recording
//! and draw a [`Chaos`] fault for every attempt, and sends chat completions, completions, Responses
//! API requests and embeddings, streamed and not, from client threads that keep their connections
//! alive. The client is a small HTTP/1.1 reader of its own, so that it knows exactly where an
//! answer stopped (before the status line, in the head, in the body) and never retries anything.
//!
//! Every request ends in exactly one class: **OK** (200 and a whole, valid answer from the candidate
//! the headers name), **clear error** (4xx/5xx with a whole body: switchyard's 429 when every
//! candidate is cooling, a provider's error once failover ran out, an Envoy local reply),
//! **injected cut** (the client asked the provider to reset mid-answer with `x-mock-broken:
//! reset-mid-body`, and the answer stopped), **lost** (a timeout, a refused or closed connection, a
//! cut or broken answer nobody injected) or **wrong** (routed to the wrong category, a response whose
//! headers name another candidate than the one that answered, a cut that was asked for but did not
//! happen). Lost and wrong must be zero. The figures and what Envoy and the mocks counted go into a
//! markdown report ([`SoakReport::markdown`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::envoy::{self, Envoy, EnvoyOptions};
use crate::mock::{reply_pieces, Chaos, ChaosCounts, MockUpstream, SplitMix64, DEFAULT_CHUNKS};
use crate::scenario;

/// The faults of the full soak: per attempt, 10% rate limits, 2% server errors, 0.5% resets before
/// the headers, 5% slow answers (150-300 ms before the headers, streamed events 15-30 ms apart) and
/// 0.02% stalls past the per-try timeout; a 429 asks for 5-10 ms (`retry-after-ms`), one in 2,000
/// for a whole second (`Retry-After: 1`).
pub const DEFAULT_CHAOS: &str = "429=0.10,503=0.02,reset-before-headers=0.005,slow=0.05:300,stall=0.0002:5500,\
                                 retry-after-ms=5-10,retry-after-1s=0.0005";

/// The provider mocks, in the order of the scenario's clusters `provider_a`, `provider_b`, `provider_c`.
const PROVIDERS: [(&str, &str); 3] = [("provider_a", "openai"), ("provider_b", "anthropic"), ("provider_c", "mistral")];

/// How to run a soak.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Requests to send after the warm-up.
    pub requests: u64,
    /// Stop sending after this long, even if fewer requests were sent.
    pub max_duration: Option<Duration>,
    /// Client threads, each with one keep-alive connection.
    pub concurrency: usize,
    /// Requests sent before the measured run (same mix, same faults).
    pub warmup: u64,
    /// Longest time a request may take, from sending to its last byte, before it counts as hung.
    pub timeout: Duration,
    /// Share of requests that ask their provider to reset mid-answer (`x-mock-broken: reset-mid-body`).
    pub cut_rate: f64,
    /// The providers' faults; `seed` is replaced by [`SoakOptions::seed`].
    pub chaos: Chaos,
    /// The chaos spec as given (for the report).
    pub chaos_spec: String,
    /// Seed of the request mix and of the faults.
    pub seed: u64,
    /// Envoy worker threads.
    pub envoy_workers: u32,
    /// The scenario under `envoy/` to run.
    pub scenario: String,
    /// How often to sample memory and progress during the run.
    pub sample_every: Duration,
    /// How long to let Envoy settle before the memory figures at the end (half that after the
    /// warm-up).
    pub settle: Duration,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            requests: 1_000_000,
            max_duration: None,
            concurrency: 64,
            warmup: 5_000,
            timeout: Duration::from_secs(90),
            cut_rate: 0.01,
            chaos: DEFAULT_CHAOS.parse().unwrap_or_default(),
            chaos_spec: DEFAULT_CHAOS.to_owned(),
            seed: 1,
            envoy_workers: 2,
            scenario: "soak".to_owned(),
            sample_every: Duration::from_secs(30),
            settle: Duration::from_secs(2),
            progress: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The request mix.

/// The OpenAI endpoints the soak sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Api {
    Chat,
    Completions,
    Responses,
    Embeddings,
}

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Responses => "/v1/responses",
            Api::Embeddings => "/v1/embeddings",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completions => "completions",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
        }
    }
}

/// One request to send, with what its answer must look like.
struct Planned {
    api: Api,
    stream: bool,
    /// The category the scenario's rules must choose.
    category: &'static str,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    include_usage: bool,
    /// The client asked the provider to reset mid-answer.
    cut: bool,
    /// Content chunks the provider is asked for (streams), else the default.
    chunks: u32,
    /// Inputs of an embeddings request.
    inputs: usize,
    /// The whole HTTP/1.1 request.
    bytes: Vec<u8>,
}

impl Planned {
    fn shape(&self) -> String {
        format!("{}{}", self.api.name(), if self.stream { " stream" } else { "" })
    }
}

const WORDS: [&str; 40] = [
    "invoice",
    "total",
    "shipment",
    "weather",
    "report",
    "summary",
    "customer",
    "order",
    "please",
    "review",
    "the",
    "of",
    "and",
    "quarterly",
    "numbers",
    "table",
    "list",
    "items",
    "draft",
    "email",
    "meeting",
    "notes",
    "plan",
    "budget",
    "travel",
    "policy",
    "update",
    "status",
    "question",
    "answer",
    "delivery",
    "warehouse",
    "contract",
    "renewal",
    "pricing",
    "forecast",
    "team",
    "schedule",
    "release",
    "backlog",
];

/// `lo..=hi` words of neutral text (no rule's keyword among them).
fn words(rng: &mut SplitMix64, lo: u64, hi: u64) -> String {
    let n = rng.in_range(lo, hi);
    let mut text = String::new();
    for i in 0..n {
        if i > 0 {
            text.push(' ');
        }
        let pick = usize::try_from(rng.next_u64() % WORDS.len() as u64).unwrap_or(0);
        text.push_str(WORDS.get(pick).copied().unwrap_or("word"));
    }
    text
}

/// Sets `key` in a JSON object.
fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(object) = object.as_object_mut() {
        object.insert(key.to_owned(), value);
    }
}

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    let i = usize::try_from(rng.next_u64() % items.len().max(1) as u64).unwrap_or(0);
    items.get(i).copied().unwrap_or("")
}

/// Draws the next request: its category, endpoint, streaming, body and knobs.
fn plan(rng: &mut SplitMix64, cut_rate: f64) -> Planned {
    let roll = rng.next_f64();
    let category = match roll {
        r if r < 0.40 => "general",
        r if r < 0.60 => "extraction",
        r if r < 0.78 => "fraud-review",
        r if r < 0.90 => "embeddings",
        r if r < 0.93 => "long-context",
        _ => "general",
    };
    let api = if category == "embeddings" {
        Api::Embeddings
    } else {
        match rng.next_f64() {
            r if r < 0.70 => Api::Chat,
            r if r < 0.90 => Api::Responses,
            _ => Api::Completions,
        }
    };
    let stream = api != Api::Embeddings && rng.next_f64() < 0.5;
    let include_usage = stream && api != Api::Responses && rng.next_f64() < 0.5;
    let chunks = if stream { u32::try_from(rng.in_range(1, 12)).unwrap_or(DEFAULT_CHUNKS) } else { DEFAULT_CHUNKS };
    let cut = rng.next_f64() < cut_rate;

    let mut headers: Vec<(&str, String)> = Vec::new();
    let extract_model = matches!(category, "extraction") && (api == Api::Completions || rng.next_f64() < 0.5);
    let model = if extract_model {
        pick(rng, &["extract-fields", "extract-invoice"]).to_owned()
    } else if api == Api::Embeddings {
        "text-embedding-3-small".to_owned()
    } else {
        pick(rng, &["gpt-4o", "gpt-4o-mini", "claude-3-5", "my-app-model"]).to_owned()
    };
    let json_mode = category == "extraction" && !extract_model;
    let user_text = match category {
        "fraud-review" => {
            if rng.next_f64() < 0.3 {
                headers.push(("x-team", "risk".to_owned()));
                words(rng, 5, 40)
            } else {
                let keyword = pick(rng, &["chargeback", "fraud", "stolen card"]);
                format!("{} {keyword} {}", words(rng, 2, 20), words(rng, 2, 20))
            }
        }
        // At least 16,000 bytes of text: a token estimate of 4,000 or more.
        "long-context" => words(rng, 2_400, 3_200),
        _ => words(rng, 5, 60),
    };
    let inputs = usize::try_from(rng.in_range(1, 4)).unwrap_or(1);
    let mut body = match api {
        Api::Chat => {
            let mut messages = Vec::new();
            if rng.next_f64() < 0.5 {
                messages.push(json!({"role": "system", "content": "You are a careful assistant."}));
            }
            messages.push(json!({"role": "user", "content": user_text}));
            let mut body = json!({"model": model, "messages": messages, "temperature": 0.2});
            if json_mode {
                set(&mut body, "response_format", json!({"type": "json_object"}));
            }
            body
        }
        Api::Completions => json!({"model": model, "prompt": user_text, "max_tokens": 64}),
        Api::Responses => {
            let mut body = json!({"model": model, "input": user_text});
            if json_mode {
                set(&mut body, "text", json!({"format": {"type": "json_object"}}));
            }
            body
        }
        Api::Embeddings => {
            let input: Vec<String> = (0..inputs).map(|_| words(rng, 3, 30)).collect();
            json!({"model": model, "input": input})
        }
    };
    if stream {
        set(&mut body, "stream", json!(true));
        if include_usage {
            set(&mut body, "stream_options", json!({"include_usage": true}));
        }
        headers.push(("x-mock-chunks", chunks.to_string()));
    }
    if cut {
        headers.push(("x-mock-broken", "reset-mid-body".to_owned()));
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut bytes = format!(
        "POST {} HTTP/1.1\r\nhost: soak.local\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        api.path(),
        body.len()
    );
    for (name, value) in &headers {
        let _ = write!(bytes, "{name}: {value}\r\n");
    }
    bytes.push_str("\r\n");
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(&body);
    Planned {
        api,
        stream,
        category,
        include_usage,
        cut,
        chunks,
        inputs: if api == Api::Embeddings { inputs } else { 0 },
        bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// The client: HTTP/1.1 over one keep-alive connection, with a deadline per request.

/// A socket whose reads fail with `TimedOut` once the request's deadline has passed.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client deadline passed"));
        }
        self.stream.set_read_timeout(Some(left))?;
        match self.stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "client deadline passed"))
            }
            other => other,
        }
    }
}

struct Connection {
    reader: BufReader<DeadlineStream>,
    served: u64,
}

/// How the body of an answer ended.
#[derive(Debug, PartialEq, Eq)]
enum BodyEnd {
    Complete,
    /// The connection closed before the body's end (chunked: no last chunk; else short).
    Closed,
    TimedOut,
    Garbled(String),
}

/// An answer whose status line and head arrived.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    end: BodyEnd,
    first_byte: Duration,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why no answer arrived.
#[derive(Debug)]
enum NoAnswer {
    Connect(String),
    Write(String),
    /// The connection closed before a whole head arrived.
    Closed {
        got_bytes: bool,
    },
    TimedOut,
    Garbled(String),
}

enum Exchange {
    Answered(Response),
    NoAnswer { why: NoAnswer, reused: bool },
}

struct Client {
    addr: SocketAddr,
    timeout: Duration,
    connection: Option<Connection>,
    /// Keep-alive connections found closed by Envoy before they were reused.
    stale: u64,
    connections_opened: u64,
}

const MAX_LINE: u64 = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

impl Client {
    fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client { addr, timeout, connection: None, stale: 0, connections_opened: 0 }
    }

    /// Whether the idle connection was closed by the other side (or has unexpected bytes).
    fn idle_connection_is_dead(connection: &Connection) -> bool {
        if !connection.reader.buffer().is_empty() {
            return true;
        }
        let stream = &connection.reader.get_ref().stream;
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut probe = [0_u8; 1];
        let dead = match stream.peek(&mut probe) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        stream.set_nonblocking(false).is_err() || dead
    }

    fn exchange(&mut self, request: &[u8]) -> (Exchange, Duration) {
        let start = Instant::now();
        let deadline = start + self.timeout;
        if let Some(connection) = &self.connection {
            if Client::idle_connection_is_dead(connection) {
                self.stale += 1;
                self.connection = None;
            }
        }
        let reused = self.connection.is_some();
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => match TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    self.connections_opened += 1;
                    Connection {
                        reader: BufReader::with_capacity(16 * 1024, DeadlineStream { stream, deadline }),
                        served: 0,
                    }
                }
                Err(e) => {
                    return (Exchange::NoAnswer { why: NoAnswer::Connect(e.to_string()), reused }, start.elapsed())
                }
            },
        };
        connection.reader.get_mut().deadline = deadline;
        if let Err(e) = connection.reader.get_mut().stream.write_all(request) {
            return (Exchange::NoAnswer { why: NoAnswer::Write(e.to_string()), reused }, start.elapsed());
        }
        let exchange = read_response(&mut connection.reader, start);
        let keep = match &exchange {
            Exchange::Answered(response) => {
                response.end == BodyEnd::Complete
                    && !response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            }
            Exchange::NoAnswer { .. } => false,
        };
        if keep {
            connection.served += 1;
            self.connection = Some(connection);
        }
        let exchange = match exchange {
            Exchange::NoAnswer { why, .. } => Exchange::NoAnswer { why, reused },
            answered => answered,
        };
        (exchange, start.elapsed())
    }
}

enum Line {
    Text(String),
    Closed { partial: bool },
    TimedOut,
    Error(String),
}

fn read_line(reader: &mut impl BufRead) -> Line {
    let mut line = Vec::new();
    match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
        Ok(0) => Line::Closed { partial: false },
        Ok(_) if line.last() != Some(&b'\n') => {
            if line.len() as u64 >= MAX_LINE {
                Line::Error("line too long".to_owned())
            } else {
                Line::Closed { partial: true }
            }
        }
        Ok(_) => {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            Line::Text(String::from_utf8_lossy(&line).into_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Line::TimedOut,
        Err(e) if is_closed(&e) => Line::Closed { partial: !line.is_empty() },
        Err(e) => Line::Error(e.to_string()),
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn read_head_lines(reader: &mut impl BufRead) -> Result<Vec<(String, String)>, NoAnswer> {
    let mut headers = Vec::new();
    loop {
        match read_line(reader) {
            Line::Text(line) if line.is_empty() => return Ok(headers),
            Line::Text(line) => {
                let Some((name, value)) = line.split_once(':') else {
                    return Err(NoAnswer::Garbled(format!("bad header line `{line}`")));
                };
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            Line::Closed { .. } => return Err(NoAnswer::Closed { got_bytes: true }),
            Line::TimedOut => return Err(NoAnswer::TimedOut),
            Line::Error(e) => return Err(NoAnswer::Garbled(e)),
        }
    }
}

fn read_response(reader: &mut BufReader<DeadlineStream>, start: Instant) -> Exchange {
    let no = |why| Exchange::NoAnswer { why, reused: false };
    let status_line = match read_line(reader) {
        Line::Text(line) => line,
        Line::Closed { partial } => return no(NoAnswer::Closed { got_bytes: partial }),
        Line::TimedOut => return no(NoAnswer::TimedOut),
        Line::Error(e) => return no(NoAnswer::Garbled(e)),
    };
    let first_byte = start.elapsed();
    let status = match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(status)) if status_line.starts_with("HTTP/1.") => status,
        _ => return no(NoAnswer::Garbled(format!("bad status line `{status_line}`"))),
    };
    let headers = match read_head_lines(reader) {
        Ok(headers) => headers,
        Err(why) => return no(why),
    };
    let mut response =
        Response { status, headers, body: Vec::new(), trailers: Vec::new(), end: BodyEnd::Complete, first_byte };
    let chunked = response.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = response.header("content-length").map(str::parse::<usize>);
    response.end = if chunked {
        read_chunked(reader, &mut response.body, &mut response.trailers)
    } else {
        match length {
            Some(Ok(length)) if length <= MAX_BODY => read_exact_body(reader, length, &mut response.body),
            Some(_) => BodyEnd::Garbled("bad content-length".to_owned()),
            None if status == 204 || status == 304 => BodyEnd::Complete,
            None => read_to_close(reader, &mut response.body),
        }
    };
    Exchange::Answered(response)
}

fn body_error(e: &io::Error) -> BodyEnd {
    if e.kind() == io::ErrorKind::TimedOut {
        BodyEnd::TimedOut
    } else if is_closed(e) {
        BodyEnd::Closed
    } else {
        BodyEnd::Garbled(e.to_string())
    }
}

fn read_exact_body(reader: &mut impl Read, length: usize, body: &mut Vec<u8>) -> BodyEnd {
    let mut limited = reader.take(length as u64);
    match limited.read_to_end(body) {
        Ok(n) if n == length => BodyEnd::Complete,
        Ok(_) => BodyEnd::Closed,
        Err(e) => body_error(&e),
    }
}

fn read_to_close(reader: &mut impl Read, body: &mut Vec<u8>) -> BodyEnd {
    match reader.take(MAX_BODY as u64).read_to_end(body) {
        Ok(_) => BodyEnd::Complete,
        Err(e) => body_error(&e),
    }
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>, trailers: &mut Vec<(String, String)>) -> BodyEnd {
    loop {
        let size_line = match read_line(reader) {
            Line::Text(line) => line,
            Line::Closed { .. } => return BodyEnd::Closed,
            Line::TimedOut => return BodyEnd::TimedOut,
            Line::Error(e) => return BodyEnd::Garbled(e),
        };
        let size = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return BodyEnd::Garbled(format!("bad chunk size `{size_line}`"));
        };
        if size == 0 {
            return match read_head_lines(reader) {
                Ok(lines) => {
                    trailers.extend(lines);
                    BodyEnd::Complete
                }
                Err(NoAnswer::TimedOut) => BodyEnd::TimedOut,
                Err(NoAnswer::Closed { .. }) => BodyEnd::Closed,
                Err(other) => BodyEnd::Garbled(format!("{other:?}")),
            };
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return BodyEnd::Garbled("body too large".to_owned());
        }
        let end = read_exact_body(reader, size, body);
        if end != BodyEnd::Complete {
            return end;
        }
        let mut crlf = [0_u8; 2];
        if let Err(e) = reader.read_exact(&mut crlf) {
            return body_error(&e);
        }
        if &crlf != b"\r\n" {
            return BodyEnd::Garbled("chunk longer than its size".to_owned());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Classification.

/// The one class each request ends in.
#[derive(Debug)]
enum Outcome {
    Ok,
    ClearError(String),
    InjectedCut(String),
    Lost(String),
    Wrong(String),
}

/// The provider mock behind a switchyard upstream name.
fn provider_of(upstream: &str) -> Option<&'static str> {
    PROVIDERS.iter().find(|(_, name)| *name == upstream).map(|(provider, _)| *provider)
}

/// SSE `data:` payloads and `event:` names of a stream body, in order.
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    for block in body.split("\n\n").map(|b| b.trim_matches(|c| c == '\r' || c == '\n')).filter(|b| !b.is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        events.push((name, data));
    }
    events
}

/// Checks a 200's body against what the request asked and the provider that answered; `Err` says
/// what is wrong with it.
fn check_answer(planned: &Planned, response: &Response) -> Result<(), String> {
    let provider = response.header("x-mock-upstream").ok_or("no x-mock-upstream header")?;
    let model = response.header("x-mock-model").ok_or("no x-mock-model header")?;
    let expected = reply_pieces(provider, model, planned.chunks).concat();
    let text = std::str::from_utf8(&response.body).map_err(|_| "body is not UTF-8".to_owned())?;
    if !planned.stream {
        let body: Value = serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))?;
        let got = match planned.api {
            Api::Chat => body.pointer("/choices/0/message/content").and_then(Value::as_str),
            Api::Completions => body.pointer("/choices/0/text").and_then(Value::as_str),
            Api::Responses => body.pointer("/output/0/content/0/text").and_then(Value::as_str),
            Api::Embeddings => {
                let data = body.get("data").and_then(Value::as_array).map_or(0, Vec::len);
                if data != planned.inputs {
                    return Err(format!("{data} embeddings for {} inputs", planned.inputs));
                }
                return if body.get("model").and_then(Value::as_str) == Some(model) {
                    Ok(())
                } else {
                    Err("embeddings of another model".to_owned())
                };
            }
        };
        if got != Some(expected.as_str()) {
            return Err(format!("text {got:?}, expected {expected:?}"));
        }
        if body.get("usage").is_none() {
            return Err("no usage".to_owned());
        }
        return Ok(());
    }
    let events = sse_events(text);
    if planned.api == Api::Responses {
        let last = events.last().and_then(|(name, _)| name.as_deref());
        if last != Some("response.completed") {
            return Err(format!("stream ends with event {last:?}, not response.completed"));
        }
        let mut got = String::new();
        for (name, data) in &events {
            let event: Value = serde_json::from_str(data).map_err(|e| format!("event {name:?} is not JSON: {e}"))?;
            if name.as_deref() == Some("response.output_text.delta") {
                got.push_str(event.get("delta").and_then(Value::as_str).unwrap_or(""));
            }
        }
        return if got == expected { Ok(()) } else { Err(format!("streamed text {got:?}, expected {expected:?}")) };
    }
    let Some(((_, done), chunks)) = events.split_last() else {
        return Err("empty stream".to_owned());
    };
    if done != "[DONE]" {
        return Err("stream does not end with data: [DONE]".to_owned());
    }
    let mut got = String::new();
    let mut usage_chunks = 0;
    for (_, data) in chunks {
        let chunk: Value = serde_json::from_str(data).map_err(|e| format!("chunk is not JSON ({e}): {data}"))?;
        let piece = match planned.api {
            Api::Chat => chunk.pointer("/choices/0/delta/content"),
            _ => chunk.pointer("/choices/0/text"),
        };
        got.push_str(piece.and_then(Value::as_str).unwrap_or(""));
        match chunk.get("usage") {
            None => {}
            Some(Value::Object(_)) => usage_chunks += 1,
            Some(_) if planned.include_usage => {}
            Some(other) => return Err(format!("usage {other} in a stream that did not ask for it")),
        }
    }
    if got != expected {
        return Err(format!("streamed text {got:?}, expected {expected:?}"));
    }
    match (planned.include_usage, usage_chunks) {
        (true, 1) | (false, 0) => Ok(()),
        (asked, n) => Err(format!("{n} usage chunks (usage asked for: {asked})")),
    }
}

/// Checks the routing headers of an answer from a provider: the category the rules must choose,
/// and the candidate that answered.
fn check_routing(planned: &Planned, response: &Response) -> Result<(), String> {
    if let Some(category) = response.header("x-switchyard-category") {
        if category != planned.category {
            return Err(format!("category {category}, expected {}", planned.category));
        }
    }
    if let (Some(provider), Some(upstream)) =
        (response.header("x-mock-upstream"), response.header("x-switchyard-upstream"))
    {
        if provider_of(upstream) != Some(provider) {
            return Err(format!("x-switchyard-upstream {upstream} but {provider} answered"));
        }
    }
    if let (Some(model), Some(named)) = (response.header("x-mock-model"), response.header("x-switchyard-model")) {
        if model != named {
            return Err(format!("x-switchyard-model {named} but {model} answered"));
        }
    }
    Ok(())
}

fn error_kind(response: &Response) -> String {
    let status = response.status;
    if let Some(code) = response.header("x-switchyard-error") {
        return format!("{status} switchyard `{code}`");
    }
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    let code = json.as_ref().and_then(|j| j.pointer("/error/code")).and_then(Value::as_str);
    if response.header("x-mock-upstream").is_some() {
        return format!("{status} from the last candidate (`{}`), failover exhausted", code.unwrap_or("?"));
    }
    if let Some(code) = code {
        return format!("{status} `{code}`");
    }
    let text = String::from_utf8_lossy(&response.body);
    let text = text.trim();
    if text.is_empty() {
        format!("{status} (empty body)")
    } else {
        let short: String = text.chars().take(100).collect();
        format!("{status} Envoy: {short}")
    }
}

fn classify(planned: &Planned, exchange: &Exchange) -> Outcome {
    let response = match exchange {
        Exchange::NoAnswer { why, reused } => {
            let connection = if *reused { "reused" } else { "new" };
            return match why {
                NoAnswer::Closed { got_bytes: false } if planned.cut => {
                    Outcome::InjectedCut("connection closed before the status line".to_owned())
                }
                NoAnswer::Closed { got_bytes: true } if planned.cut => {
                    Outcome::InjectedCut("connection closed in the response head".to_owned())
                }
                NoAnswer::Closed { got_bytes } => Outcome::Lost(format!(
                    "connection closed before a whole head ({connection} connection, bytes received: {got_bytes})"
                )),
                NoAnswer::TimedOut => Outcome::Lost("timed out before the response head".to_owned()),
                NoAnswer::Connect(e) => Outcome::Lost(format!("connect failed: {e}")),
                NoAnswer::Write(e) => Outcome::Lost(format!("request write failed ({connection} connection): {e}")),
                NoAnswer::Garbled(e) => Outcome::Lost(format!("garbled response head: {e}")),
            };
        }
        Exchange::Answered(response) => response,
    };
    if let Err(why) = check_routing(planned, response) {
        return Outcome::Wrong(why);
    }
    let status = response.status;
    match (status, &response.end) {
        (200, BodyEnd::Complete) => match (check_answer(planned, response), planned.cut) {
            (Ok(()), false) => Outcome::Ok,
            (Ok(()), true) => Outcome::Wrong("a reset was asked for, but a whole answer arrived".to_owned()),
            (Err(_), true) => Outcome::InjectedCut("200, body ended cleanly but incomplete".to_owned()),
            (Err(why), false) => Outcome::Lost(format!("200 with a broken body: {why}")),
        },
        (200, BodyEnd::Closed) if planned.cut => Outcome::InjectedCut("200, body cut off".to_owned()),
        (200, BodyEnd::Closed) => Outcome::Lost("200 cut off, no reset injected".to_owned()),
        // A held (not streamed) answer whose provider reset mid-body: Envoy answers 502 itself.
        (502, BodyEnd::Complete) if planned.cut && response.header("x-mock-upstream").is_none() => {
            Outcome::InjectedCut(format!("answered {}", error_kind(response)))
        }
        (400..=599, BodyEnd::Complete) => {
            let kind = error_kind(response);
            if status == 429
                && response.header("retry-after").is_none()
                && response.header("x-switchyard-error").is_some()
            {
                return Outcome::Wrong(format!("{kind} without Retry-After"));
            }
            Outcome::ClearError(kind)
        }
        (_, BodyEnd::TimedOut) => Outcome::Lost(format!("{status}, timed out in the body")),
        (_, BodyEnd::Closed) => Outcome::Lost(format!("{status} cut off")),
        (_, BodyEnd::Garbled(why)) => Outcome::Lost(format!("{status}, garbled body framing: {why}")),
        (_, BodyEnd::Complete) => Outcome::Wrong(format!("unexpected status {status}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Tallies.

/// What one phase (warm-up or the measured run) produced.
#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    clear_errors: BTreeMap<String, u64>,
    cuts: BTreeMap<String, u64>,
    lost: BTreeMap<String, u64>,
    wrong: BTreeMap<String, u64>,
    /// Examples of lost and wrong requests: shape, cut asked, outcome, status and start of the body.
    examples: Vec<String>,
    /// `shape → (sent, ok)`.
    shapes: BTreeMap<String, (u64, u64)>,
    /// `category → (sent, ok)`.
    categories: BTreeMap<String, (u64, u64)>,
    /// `x-switchyard-attempts` of OK answers.
    attempts: BTreeMap<String, u64>,
    /// Status codes of every answer whose head arrived (cut ones included).
    statuses: BTreeMap<u16, u64>,
    /// OK answers priced (`x-switchyard-cost-status: ok`, in headers or stream trailers).
    priced: u64,
    cut_asked: u64,
    latency_plain_ok: Vec<u32>,
    latency_stream_ok: Vec<u32>,
    first_byte_stream_ok: Vec<u32>,
    latency_errors: Vec<u32>,
    latency_cuts: Vec<u32>,
    latency_all: Vec<u32>,
    stale_connections: u64,
    connections_opened: u64,
}

const MAX_EXAMPLES: usize = 20;

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Tally {
    fn record(&mut self, planned: &Planned, exchange: &Exchange, outcome: Outcome, elapsed: Duration) {
        self.sent += 1;
        let shape = self.shapes.entry(planned.shape()).or_default();
        shape.0 += 1;
        let category = self.categories.entry(planned.category.to_owned()).or_default();
        category.0 += 1;
        if planned.cut {
            self.cut_asked += 1;
        }
        let us = micros(elapsed);
        self.latency_all.push(us);
        if let Exchange::Answered(response) = exchange {
            *self.statuses.entry(response.status).or_default() += 1;
        }
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                if let Some(s) = self.shapes.get_mut(&planned.shape()) {
                    s.1 += 1;
                }
                if let Some(c) = self.categories.get_mut(planned.category) {
                    c.1 += 1;
                }
                if let Exchange::Answered(response) = exchange {
                    let attempts = response.header("x-switchyard-attempts").unwrap_or("?").to_owned();
                    *self.attempts.entry(attempts).or_default() += 1;
                    let cost =
                        response.header("x-switchyard-cost-status").or(response.trailer("x-switchyard-cost-status"));
                    if cost == Some("ok") {
                        self.priced += 1;
                    }
                    if planned.stream {
                        self.latency_stream_ok.push(us);
                        self.first_byte_stream_ok.push(micros(response.first_byte));
                    } else {
                        self.latency_plain_ok.push(us);
                    }
                }
            }
            Outcome::ClearError(kind) => {
                *self.clear_errors.entry(kind).or_default() += 1;
                self.latency_errors.push(us);
            }
            Outcome::InjectedCut(how) => {
                let how = format!("{}: {how}", if planned.stream { "streamed" } else { "not streamed" });
                *self.cuts.entry(how).or_default() += 1;
                self.latency_cuts.push(us);
            }
            Outcome::Lost(why) => {
                self.example(planned, exchange, &format!("lost: {why}"), elapsed);
                *self.lost.entry(why).or_default() += 1;
            }
            Outcome::Wrong(why) => {
                self.example(planned, exchange, &format!("wrong: {why}"), elapsed);
                *self.wrong.entry(why).or_default() += 1;
            }
        }
    }

    fn example(&mut self, planned: &Planned, exchange: &Exchange, what: &str, elapsed: Duration) {
        if self.examples.len() >= MAX_EXAMPLES {
            return;
        }
        let seen = match exchange {
            Exchange::Answered(r) => {
                let body: String = String::from_utf8_lossy(&r.body).chars().take(300).collect();
                let headers: Vec<String> =
                    r.headers.iter().filter(|(n, _)| n.starts_with("x-")).map(|(n, v)| format!("{n}: {v}")).collect();
                format!("status {} ({:?}), headers [{}], body {body:?}", r.status, r.end, headers.join("; "))
            }
            Exchange::NoAnswer { why, reused } => format!("no answer: {why:?}, reused connection: {reused}"),
        };
        let request: String = String::from_utf8_lossy(&planned.bytes).chars().take(400).collect();
        self.examples.push(format!(
            "{what} after {:.1} ms — {} (category {}, cut asked: {}) — {seen} — request {request:?}",
            elapsed.as_secs_f64() * 1000.0,
            planned.shape(),
            planned.category,
            planned.cut
        ));
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (into, from) in [
            (&mut self.clear_errors, other.clear_errors),
            (&mut self.cuts, other.cuts),
            (&mut self.lost, other.lost),
            (&mut self.wrong, other.wrong),
            (&mut self.attempts, other.attempts),
        ] {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        }
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (into, from) in [(&mut self.shapes, other.shapes), (&mut self.categories, other.categories)] {
            for (k, (sent, ok)) in from {
                let entry = into.entry(k).or_default();
                entry.0 += sent;
                entry.1 += ok;
            }
        }
        for example in other.examples {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(example);
            }
        }
        self.priced += other.priced;
        self.cut_asked += other.cut_asked;
        self.latency_plain_ok.extend(other.latency_plain_ok);
        self.latency_stream_ok.extend(other.latency_stream_ok);
        self.first_byte_stream_ok.extend(other.first_byte_stream_ok);
        self.latency_errors.extend(other.latency_errors);
        self.latency_cuts.extend(other.latency_cuts);
        self.latency_all.extend(other.latency_all);
        self.stale_connections += other.stale_connections;
        self.connections_opened += other.connections_opened;
    }

    fn clear_error_total(&self) -> u64 {
        self.clear_errors.values().sum()
    }

    fn cut_total(&self) -> u64 {
        self.cuts.values().sum()
    }

    fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    fn wrong_total(&self) -> u64 {
        self.wrong.values().sum()
    }
}

/// Progress shared by the client threads and the sampler.
#[derive(Default)]
struct Progress {
    next: AtomicU64,
    done: AtomicU64,
    lost: AtomicU64,
    stop: AtomicBool,
}

/// Sends `count` requests (or until `until`) from `concurrency` threads.
fn drive(
    addr: SocketAddr,
    options: &SoakOptions,
    seed: u64,
    count: u64,
    until: Option<Instant>,
    progress: &Progress,
) -> Tally {
    let tallies = Mutex::new(Tally::default());
    // Each thread's generator starts from a scrambled seed: seeds that differ by a little would
    // give streams that are the same numbers shifted by a few places.
    let mut seeder = SplitMix64::new(seed);
    thread::scope(|scope| {
        for _ in 0..options.concurrency {
            let tallies = &tallies;
            let thread_seed = seeder.next_u64();
            scope.spawn(move || {
                let mut rng = SplitMix64::new(thread_seed);
                let mut client = Client::new(addr, options.timeout);
                let mut tally = Tally::default();
                loop {
                    if progress.stop.load(Ordering::Relaxed) || until.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                    if progress.next.fetch_add(1, Ordering::Relaxed) >= count {
                        break;
                    }
                    let planned = plan(&mut rng, options.cut_rate);
                    let (exchange, elapsed) = client.exchange(&planned.bytes);
                    let outcome = classify(&planned, &exchange);
                    if matches!(outcome, Outcome::Lost(_) | Outcome::Wrong(_)) {
                        progress.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.record(&planned, &exchange, outcome, elapsed);
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
                tally.stale_connections = client.stale;
                tally.connections_opened = client.connections_opened;
                if let Ok(mut all) = tallies.lock() {
                    all.merge(tally);
                }
            });
        }
    });
    tallies.into_inner().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What the OS and Envoy's admin say.

/// Memory and CPU of Envoy at one moment.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Since the measured run started (negative phases are reported by name instead).
    at: Duration,
    done: u64,
    rss_kb: u64,
    hwm_kb: u64,
    /// V8 wasm linear memories found in `/proc/<pid>/smaps`: count, accessible size, resident.
    wasm_memories: usize,
    wasm_size_kb: u64,
    wasm_rss_kb: u64,
    /// `switchyard_vm_memory_bytes` as Envoy's stats report it (every series), if published.
    vm_gauge: Vec<(String, f64)>,
    /// tcmalloc's figures (`server.memory_allocated`, `server.memory_heap_size`).
    heap_allocated: u64,
    heap_size: u64,
    envoy_cpu_ticks: u64,
}

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next().map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// V8 reserves 8 GiB (plus guards) of address space per wasm memory and makes its first pages
/// accessible as the memory grows: each memory is a `rw-p` mapping directly followed by a large
/// `---p` reservation. Returns (memories, accessible kB, resident kB).
fn wasm_memories(pid: u32) -> (usize, u64, u64) {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    // (start, end, perms, rss_kb)
    let mut maps: Vec<(u64, u64, String, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
                maps.push((start, end, fields.next().unwrap_or("").to_owned(), 0));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("Rss:") {
            if let Some(last) = maps.last_mut() {
                last.3 = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    let mut found = (0, 0, 0);
    for pair in maps.windows(2) {
        if let [(start, end, perms, rss), (next_start, next_end, next_perms, _)] = pair {
            if perms == "rw-p" && next_perms == "---p" && end == next_start && next_end - next_start >= 4 << 30 {
                found.0 += 1;
                found.1 += (end - start) / 1024;
                found.2 += rss;
            }
        }
    }
    found
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// (busy, total) clock ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let get = |i: usize| cpu.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Prometheus text as `(series, value)`, histograms left out; `series` is `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut histograms = Vec::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some("histogram" | "summary")) = (parts.next(), parts.next()) {
                histograms.push(name.to_owned());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let base = name.split('{').next().unwrap_or(name);
        if histograms.iter().any(|h| base.starts_with(h.as_str())) {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            series.insert(name.strip_suffix("{}").unwrap_or(name).to_owned(), value);
        }
    }
    series
}

/// The value of label `label` in a series `name{a="1",b="2"}`.
fn label<'a>(series: &'a str, label: &str) -> Option<&'a str> {
    let labels = series.split_once('{')?.1.strip_suffix('}')?;
    let needle = format!("{label}=\"");
    let start = labels.find(&needle)? + needle.len();
    let rest = labels.get(start..)?;
    rest.get(..rest.find('"')?)
}

fn metric_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// Stats and memory of one moment, for differences between two moments.
struct Snapshot {
    series: BTreeMap<String, f64>,
    sample: Sample,
}

fn sample(envoy: &Envoy, at: Duration, done: u64) -> Snapshot {
    let pid = envoy.pid();
    let series = parse_prometheus(&envoy.stats_prometheus());
    let (wasm_memories, wasm_size_kb, wasm_rss_kb) = wasm_memories(pid);
    let vm_gauge = series
        .iter()
        .filter(|(name, _)| metric_name(name) == "switchyard_vm_memory_bytes")
        .map(|(name, value)| (name.clone(), *value))
        .collect();
    let stat = |name: &str| series.get(name).copied().unwrap_or(0.0) as u64;
    let sample = Sample {
        at,
        done,
        rss_kb: proc_status_kb(pid, "VmRSS"),
        hwm_kb: proc_status_kb(pid, "VmHWM"),
        wasm_memories,
        wasm_size_kb,
        wasm_rss_kb,
        vm_gauge,
        heap_allocated: stat("envoy_server_memory_allocated"),
        heap_size: stat("envoy_server_memory_heap_size"),
        envoy_cpu_ticks: cpu_ticks(&pid.to_string()),
    };
    Snapshot { series, sample }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Everything a soak measured.
pub struct SoakReport {
    options: SoakOptions,
    started_utc: String,
    machine: Vec<String>,
    load_start: String,
    load_end: String,
    warmup: Tally,
    run: Tally,
    run_time: Duration,
    total_time: Duration,
    memory: Vec<(String, Sample)>,
    timeline: Vec<Sample>,
    /// Counter differences over the measured run.
    counters: BTreeMap<String, f64>,
    /// Gauges at the end.
    end_series: BTreeMap<String, f64>,
    /// Per provider: (name, hits, faults drawn) over the whole soak (warm-up included).
    providers: Vec<(String, u64, ChaosCounts)>,
    /// CPU ticks over the measured run: Envoy, this process (clients and mocks), the machine
    /// (busy, total).
    cpu_envoy: u64,
    cpu_driver: u64,
    cpu_machine: (u64, u64),
    envoy_alive: bool,
    envoy_ready: bool,
    log_summary: Vec<String>,
    log_panics: usize,
}

impl SoakReport {
    /// No request lost, hung or wrong, in the warm-up or the run; Envoy still up.
    pub fn passed(&self) -> bool {
        self.lost() == 0 && self.wrong() == 0 && self.envoy_alive && self.envoy_ready && self.log_panics == 0
    }

    /// Requests sent in the measured run.
    pub fn sent(&self) -> u64 {
        self.run.sent
    }

    /// Whole, valid answers in the measured run.
    pub fn ok(&self) -> u64 {
        self.run.ok
    }

    /// Lost or hung requests, warm-up included.
    pub fn lost(&self) -> u64 {
        self.run.lost_total() + self.warmup.lost_total()
    }

    /// Wrongly routed or labelled answers, warm-up included.
    pub fn wrong(&self) -> u64 {
        self.run.wrong_total() + self.warmup.wrong_total()
    }

    /// The classes of the measured run add up to the requests sent.
    pub fn classes_add_up(&self) -> bool {
        let r = &self.run;
        r.ok + r.clear_error_total() + r.cut_total() + r.lost_total() + r.wrong_total() == r.sent
    }

    /// Examples of lost or wrong requests (at most 20 per phase).
    pub fn examples(&self) -> Vec<String> {
        self.warmup.examples.iter().chain(&self.run.examples).cloned().collect()
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let r = &self.run;
        format!(
            "soak: {} sent in {:.0} s ({:.0} req/s): {} OK, {} clear errors, {} injected cuts, {} lost/hung, {} wrong \
             (warm-up: {} sent, {} lost, {} wrong) — {}",
            r.sent,
            self.run_time.as_secs_f64(),
            r.sent as f64 / self.run_time.as_secs_f64().max(1e-9),
            r.ok,
            r.clear_error_total(),
            r.cut_total(),
            r.lost_total(),
            r.wrong_total(),
            self.warmup.sent,
            self.warmup.lost_total(),
            self.warmup.wrong_total(),
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

fn now_utc() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02} UTC")
}

fn machine_description() -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = thread::available_parallelism().map_or(0, usize::from);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let envoy_version = envoy::envoy_binary()
        .ok()
        .and_then(|binary| std::process::Command::new(binary).arg("--version").output().ok())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let envoy_version = envoy_version.split("version:").nth(1).unwrap_or(&envoy_version).trim().to_owned();
    let wasm = envoy::wasm_path().ok().and_then(|p| fs::metadata(p).ok()).map_or(0, |m| m.len());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(envoy::workspace_root())
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    vec![
        format!("{cores} cores ({model}), {:.1} GiB, Linux {}", mem_kb as f64 / 1024.0 / 1024.0, kernel.trim()),
        format!("Envoy {envoy_version}"),
        format!("switchyard at {commit}; `switchyard.wasm` {} bytes", group(wasm)),
    ]
}

/// Scans Envoy's log: (summary lines of warnings and errors by message, panics).
fn scan_log(log: &str) -> (Vec<String>, usize) {
    let mut by_message: BTreeMap<String, u64> = BTreeMap::new();
    let mut panics = 0;
    for line in log.lines() {
        if line.contains("panicked") {
            panics += 1;
        }
        let level = ["[warning]", "[error]", "[critical]"].into_iter().find(|level| line.contains(level));
        if let Some(level) = level {
            let message = line.rsplit_once("] ").map_or(line, |(_, m)| m);
            let message: String = message.chars().take(140).collect();
            *by_message.entry(format!("{level} {message}")).or_default() += 1;
        }
    }
    let mut lines: Vec<String> = by_message.into_iter().map(|(m, n)| format!("{n} × {m}")).collect();
    lines.truncate(15);
    (lines, panics)
}

/// Runs the soak: providers, Envoy, warm-up, the measured run, and the figures.
pub fn run(options: &SoakOptions) -> anyhow::Result<SoakReport> {
    if options.concurrency == 0 {
        bail!("concurrency must be at least 1");
    }
    let started = Instant::now();
    let started_utc = now_utc();
    let load_start = loadavg();
    let mut chaos = options.chaos.clone();
    chaos.seed = options.seed;
    let providers = PROVIDERS
        .iter()
        .map(|(name, _)| {
            let mock = MockUpstream::start(name)?;
            mock.set_recording(false);
            mock.set_chaos(Some(chaos.clone()));
            Ok(mock)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ports: Vec<u16> = providers.iter().map(MockUpstream::port).collect();
    let yaml = scenario::render(&options.scenario, &ports)?;
    let envoy = Envoy::start_with(
        &yaml,
        EnvoyOptions {
            concurrency: options.envoy_workers,
            log_level: "warn".to_owned(),
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        },
    )
    .context("Envoy with the soak scenario")?;
    let addr: SocketAddr = ([127, 0, 0, 1], envoy.port()).into();
    let say = |text: String| {
        if options.progress {
            eprintln!("{text}");
        }
    };
    say(format!(
        "soak: Envoy {} (admin {}, pid {}), providers on {ports:?}; warm-up {} requests",
        addr,
        envoy.admin_url(),
        envoy.pid(),
        options.warmup
    ));

    let mut memory = vec![("Envoy started, no traffic yet".to_owned(), sample(&envoy, Duration::ZERO, 0).sample)];
    let warmup_progress = Progress::default();
    let warmup = drive(addr, options, options.seed.wrapping_add(0x5eed), options.warmup, None, &warmup_progress);
    thread::sleep(options.settle / 2);
    // From here on the mocks count the measured run only (chaos settings and draws carry on).
    for provider in &providers {
        provider.reset();
    }
    let at_warmup = sample(&envoy, Duration::ZERO, 0);
    memory.push((format!("after the warm-up ({} requests)", group(warmup.sent)), at_warmup.sample.clone()));
    say(format!(
        "soak: warm-up done: {} OK of {}, {} lost/wrong; sending {} requests from {} threads",
        warmup.ok,
        warmup.sent,
        warmup.lost_total() + warmup.wrong_total(),
        options.requests,
        options.concurrency
    ));

    let progress = Progress::default();
    let run_start = Instant::now();
    let until = options.max_duration.map(|d| run_start + d);
    let self_ticks_start = cpu_ticks("self");
    let machine_start = machine_ticks();
    let timeline = Mutex::new(Vec::new());
    let run = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut last = Instant::now();
            while !progress.stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(200));
                if last.elapsed() < options.sample_every {
                    continue;
                }
                last = Instant::now();
                let done = progress.done.load(Ordering::Relaxed);
                let now = sample(&envoy, run_start.elapsed(), done).sample;
                if options.progress {
                    eprintln!(
                        "soak: {:>6.0} s  {:>9} done ({:.0}/s)  lost/wrong {}  Envoy RSS {:.1} MiB  wasm memories {:.1} MiB \
                         resident  load {}",
                        now.at.as_secs_f64(),
                        group(done),
                        done as f64 / now.at.as_secs_f64().max(1e-9),
                        progress.lost.load(Ordering::Relaxed),
                        now.rss_kb as f64 / 1024.0,
                        now.wasm_rss_kb as f64 / 1024.0,
                        loadavg()
                    );
                }
                if let Ok(mut timeline) = timeline.lock() {
                    timeline.push(now);
                }
            }
        });
        let tally = drive(addr, options, options.seed, options.requests, until, &progress);
        progress.stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        tally
    });
    let run_time = run_start.elapsed();
    let cpu_driver = cpu_ticks("self").saturating_sub(self_ticks_start);
    let machine_end = machine_ticks();
    let load_end = loadavg();
    thread::sleep(options.settle);
    let at_end = sample(&envoy, run_time, run.sent);
    memory
        .push((format!("at the end ({} after the last answer)", seconds_text(options.settle)), at_end.sample.clone()));
    let counters = at_end
        .series
        .iter()
        .map(|(name, value)| (name.clone(), value - at_warmup.series.get(name).copied().unwrap_or(0.0)))
        .collect();
    let envoy_alive = fs::read_to_string(format!("/proc/{}/stat", envoy.pid()))
        .map(|stat| !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    let envoy_ready = envoy.admin_get("/ready").is_ok();
    let (log_summary, log_panics) = scan_log(&envoy.log());
    let providers_seen = providers.iter().map(|p| (p.name().to_owned(), p.hits() as u64, p.chaos_counts())).collect();
    let timeline = timeline.into_inner().unwrap_or_default();
    let cpu_envoy = at_end.sample.envoy_cpu_ticks.saturating_sub(at_warmup.sample.envoy_cpu_ticks);
    drop(envoy);
    drop(providers);
    Ok(SoakReport {
        options: options.clone(),
        started_utc,
        machine: machine_description(),
        load_start,
        load_end,
        warmup,
        run,
        run_time,
        total_time: started.elapsed(),
        memory,
        timeline,
        counters,
        end_series: at_end.series,
        providers: providers_seen,
        cpu_envoy,
        cpu_driver,
        cpu_machine: (machine_end.0.saturating_sub(machine_start.0), machine_end.1.saturating_sub(machine_start.1)),
        envoy_alive,
        envoy_ready,
        log_summary,
        log_panics,
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.3}%", part as f64 * 100.0 / whole as f64)
    }
}

/// `(p50, p90, p99, p99.9, max)` in ms.
fn quantiles(values: &mut [u32]) -> Option<[f64; 5]> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
    };
    Some([at(0.50), at(0.90), at(0.99), at(0.999), values.last().copied().unwrap_or(0) as f64 / 1000.0])
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

impl SoakReport {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.counters
            .iter()
            .filter(|(series, _)| {
                metric_name(series) == name && labels.iter().all(|(k, v)| label(series, k) == Some(*v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    fn counter_by(&self, name: &str, by: &str, labels: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (series, value) in &self.counters {
            if metric_name(series) == name && labels.iter().all(|(k, v)| label(series, k) == Some(*v)) {
                *out.entry(label(series, by).unwrap_or("").to_owned()).or_insert(0.0) += value;
            }
        }
        out
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.end_series
            .iter()
            .filter(|(series, _)| {
                metric_name(series) == name && labels.iter().all(|(k, v)| label(series, k) == Some(*v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let r = &self.run;
        let o = &self.options;
        let secs = self.run_time.as_secs_f64().max(1e-9);
        let _ = writeln!(md, "# Soak test\n");
        let _ = writeln!(
            md,
            "One run of `make soak` (the `soak` binary, `host-tests/src/soak.rs`) on {}: {} requests in {}, {} in all \
             with start-up and warm-up. Result: **{}**.\n",
            self.started_utc,
            group(r.sent),
            duration_text(self.run_time),
            duration_text(self.total_time),
            if self.passed() { "PASS — no request lost, hung or wrong" } else { "FAIL" }
        );
        let _ = writeln!(
            md,
            "Set-up: Envoy with switchyard and failover (`envoy/{}/envoy.yaml`: five categories, two or three candidates \
             each over three providers, `--concurrency {}`, log level `warn`) in front of three in-process mock \
             providers that only count requests and draw a fault for every attempt (`--chaos {}`). {} client threads, one \
             keep-alive HTTP/1.1 connection each, send a seeded mix (seed {}) of chat completions, Responses API requests, \
             completions and embeddings, half of them streamed, over every category; {:.1}% of the requests ask their \
             provider to reset mid-answer (`x-mock-broken: reset-mid-body`, replayed on every attempt). Each request may \
             take {} s before it counts as hung. A warm-up of {} requests with the same mix comes first; Envoy's counters \
             below are differences over the measured run.\n",
            o.scenario,
            o.envoy_workers,
            o.chaos_spec,
            o.concurrency,
            o.seed,
            o.cut_rate * 100.0,
            o.timeout.as_secs(),
            group(self.warmup.sent),
        );

        let _ = writeln!(md, "## Machine and load\n");
        for line in &self.machine {
            let _ = writeln!(md, "- {line}");
        }
        let (busy, total) = self.cpu_machine;
        let envoy_share = self.cpu_envoy as f64 / total.max(1) as f64;
        let driver_share = self.cpu_driver as f64 / total.max(1) as f64;
        let busy_share = busy as f64 / total.max(1) as f64;
        let cores = thread::available_parallelism().map_or(1, usize::from) as f64;
        let _ = writeln!(
            md,
            "- load average (1, 5, 15 min) at the start {}, at the end {}\n\
             - CPU during the measured run (share of all {cores:.0} cores): machine busy {:.0}%, Envoy {:.0}%, the soak \
             process (clients and mocks) {:.0}%, other work {:.0}%\n\
             - Envoy CPU per request: {:.0} µs (all three switchyard roles, the internal listener, retries)\n",
            self.load_start,
            self.load_end,
            busy_share * 100.0,
            envoy_share * 100.0,
            driver_share * 100.0,
            (busy_share - envoy_share - driver_share).max(0.0) * 100.0,
            self.cpu_envoy as f64 * 10_000.0 / r.sent.max(1) as f64,
        );

        let _ = writeln!(md, "## Result\n");
        let _ = writeln!(md, "| class | requests | share |\n|---|--:|--:|");
        let rows = [
            ("sent", r.sent),
            ("answered OK (200, whole and valid)", r.ok),
            ("answered with a clear error (4xx/5xx, whole body)", r.clear_error_total()),
            ("injected cut (reset asked for, answer stopped)", r.cut_total()),
            ("**lost or hung** (must be 0)", r.lost_total()),
            ("**wrong** (misrouted, mislabelled, cut not honoured; must be 0)", r.wrong_total()),
        ];
        for (name, n) in rows {
            let _ = writeln!(md, "| {name} | {} | {} |", group(n), percent(n, r.sent));
        }
        let _ = writeln!(
            md,
            "\nThe classes add up to the requests sent: {}. Throughput {:.0} requests/s. OK answers priced \
             (`x-switchyard-cost-status: ok`, header or stream trailer): {} of {}. Requests that asked for a reset: {}. \
             Warm-up: {} sent, {} OK, {} lost, {} wrong.\n",
            if self.classes_add_up() { "yes" } else { "**no**" },
            r.sent as f64 / secs,
            group(r.priced),
            group(r.ok),
            group(r.cut_asked),
            group(self.warmup.sent),
            group(self.warmup.ok),
            self.warmup.lost_total(),
            self.warmup.wrong_total(),
        );
        let lists: [(&str, &BTreeMap<String, u64>); 4] = [
            ("Clear errors by kind", &r.clear_errors),
            ("Injected cuts by what the client saw", &r.cuts),
            ("Lost or hung, by what the client saw", &r.lost),
            ("Wrong answers", &r.wrong),
        ];
        for (title, map) in lists {
            if map.is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {title}\n\n| kind | requests |\n|---|--:|");
            for (kind, n) in map {
                let _ = writeln!(md, "| {} | {} |", kind.replace('|', "\\|"), group(*n));
            }
            md.push('\n');
        }
        if r.cuts.keys().any(|how| how.contains("answered 502")) {
            let _ = writeln!(
                md,
                "switchyard holds a non-streamed answer until it is complete (to price it), so when its provider resets \
                 mid-body nothing has reached the client yet, and Envoy answers its own 502 instead of breaking the \
                 connection: the client gets a clear error. A streamed answer has started, so the stream breaks off.\n"
            );
        }
        let examples = self.examples();
        if !examples.is_empty() {
            let _ = writeln!(md, "### Examples of lost or wrong requests\n");
            for example in examples {
                let _ = writeln!(md, "- {}", example.replace('|', "\\|"));
            }
            md.push('\n');
        }
        let _ = writeln!(md, "### By request shape and category\n\n| shape | sent | OK |\n|---|--:|--:|");
        for (shape, (sent, ok)) in &r.shapes {
            let _ = writeln!(md, "| {shape} | {} | {} ({}) |", group(*sent), group(*ok), percent(*ok, *sent));
        }
        let _ = writeln!(md, "\n| category | sent | OK |\n|---|--:|--:|");
        for (category, (sent, ok)) in &r.categories {
            let _ = writeln!(md, "| {category} | {} | {} ({}) |", group(*sent), group(*ok), percent(*ok, *sent));
        }
        let _ = writeln!(
            md,
            "\nCandidates tried for the OK answers (`x-switchyard-attempts`):\n\n| attempts | answers |\n|---|--:|"
        );
        for (attempts, n) in &r.attempts {
            let _ = writeln!(md, "| {attempts} | {} |", group(*n));
        }

        let _ = writeln!(md, "\n## Latency\n\nClient-side, from writing the request to the answer's last byte (first byte: the status line).\n");
        let _ = writeln!(
            md,
            "| answers | count | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n|---|--:|--:|--:|--:|--:|--:|"
        );
        let mut groups = [
            ("not streamed, OK", r.latency_plain_ok.clone()),
            ("streamed, OK: first byte", r.first_byte_stream_ok.clone()),
            ("streamed, OK: whole stream", r.latency_stream_ok.clone()),
            ("clear errors", r.latency_errors.clone()),
            ("injected cuts", r.latency_cuts.clone()),
            ("every request", r.latency_all.clone()),
        ];
        for (name, values) in &mut groups {
            let count = values.len();
            if let Some([p50, p90, p99, p999, max]) = quantiles(values) {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {p50:.2} | {p90:.2} | {p99:.2} | {p999:.2} | {max:.1} |",
                    group(count as u64)
                );
            }
        }
        let _ = writeln!(
            md,
            "\nThe faults set the tail: a slow attempt holds its headers {}-{} ms (and spaces a stream's events a tenth of that \
             apart), a stall holds them {} ms until Envoy's 5 s per-try timeout moves on, each failover adds an attempt, and \
             an injected cut reaches the client only when Envoy closes the connections behind it (HTTP/1.1 delayed close, \
             1 s per connection: the internal listener's and the client's).\n",
            o.chaos.slow.1 / 2,
            o.chaos.slow.1,
            o.chaos.stall.1
        );

        let _ = writeln!(md, "## Memory\n");
        let _ = writeln!(
            md,
            "*wasm memories* are V8's linear memories of the switchyard VMs, read from `/proc/<envoy>/smaps` (each is a \
             `rw-p` mapping followed by V8's 8 GiB reservation; Envoy's stats have no figure for them: its `wasm.*` stats \
             only count VMs). *VM memory gauge* is switchyard's own `switchyard_vm_memory_bytes`, when published. *heap* is \
             tcmalloc's `server.memory_allocated` / `server.memory_heap_size`.\n"
        );
        let _ = writeln!(
            md,
            "| when | Envoy RSS MiB | RSS peak MiB | wasm memories | wasm size MiB | wasm resident MiB | VM memory gauge | heap allocated MiB | heap size MiB |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for (when, s) in &self.memory {
            let _ = writeln!(
                md,
                "| {when} | {} | {} | {} | {} | {} | {} | {} | {} |",
                mib(s.rss_kb),
                mib(s.hwm_kb),
                s.wasm_memories,
                mib(s.wasm_size_kb),
                mib(s.wasm_rss_kb),
                gauge_text(&s.vm_gauge),
                mib(s.heap_allocated / 1024),
                mib(s.heap_size / 1024),
            );
        }
        let wasm_stats: Vec<String> = self
            .end_series
            .iter()
            .filter(|(name, value)| name.contains("wasm") && **value != 0.0)
            .map(|(name, value)| format!("`{name}` {value}"))
            .collect();
        let _ = writeln!(
            md,
            "\nWhat Envoy's stats say about wasm at the end (non-zero `wasm` series): {}.",
            if wasm_stats.is_empty() { "none".to_owned() } else { wasm_stats.join(", ") }
        );
        if !self.timeline.is_empty() {
            let _ = writeln!(
                md,
                "\nDuring the run:\n\n| s | requests done | req/s so far | Envoy RSS MiB | wasm resident MiB | VM memory gauge | heap allocated MiB |\n|--:|--:|--:|--:|--:|--:|--:|"
            );
            for s in &self.timeline {
                let _ = writeln!(
                    md,
                    "| {:.0} | {} | {:.0} | {} | {} | {} | {} |",
                    s.at.as_secs_f64(),
                    group(s.done),
                    s.done as f64 / s.at.as_secs_f64().max(1e-9),
                    mib(s.rss_kb),
                    mib(s.wasm_rss_kb),
                    gauge_text(&s.vm_gauge),
                    mib(s.heap_allocated / 1024),
                );
            }
        }

        let _ = writeln!(md, "\n## What Envoy counted (over the measured run)\n");
        let _ = writeln!(md, "| counter | value |\n|---|--:|");
        let attempts = [("envoy_cluster_name", "switchyard_attempts")];
        let llm = [("envoy_http_conn_manager_prefix", "llm")];
        let mut rows: Vec<(String, f64)> = vec![(
            "downstream requests (`http.llm.downstream_rq_total`)".to_owned(),
            self.counter("envoy_http_downstream_rq_total", &llm),
        )];
        for (class, n) in self.counter_by("envoy_http_downstream_rq_xx", "envoy_response_code_class", &llm) {
            rows.push((format!("downstream answers {class}xx"), n));
        }
        rows.extend([
            (
                "downstream resets sent (`downstream_rq_tx_reset`)".to_owned(),
                self.counter("envoy_http_downstream_rq_tx_reset", &llm),
            ),
            (
                "downstream resets received (`downstream_rq_rx_reset`)".to_owned(),
                self.counter("envoy_http_downstream_rq_rx_reset", &llm),
            ),
            ("downstream connections".to_owned(), self.counter("envoy_http_downstream_cx_total", &llm)),
            (
                "requests still active at the end (gauge `downstream_rq_active`)".to_owned(),
                self.gauge("envoy_http_downstream_rq_active", &llm),
            ),
            ("`switchyard_requests_total`".to_owned(), self.counter("switchyard_requests_total", &[])),
        ]);
        for (class, n) in self.counter_by("switchyard_responses_total", "status_class", &[]) {
            rows.push((format!("`switchyard_responses_total{{status_class=\"{class}\"}}`"), n));
        }
        rows.push(("`switchyard_failovers_total`".to_owned(), self.counter("switchyard_failovers_total", &[])));
        for (status, n) in self.counter_by("switchyard_failovers_total", "status", &[]) {
            rows.push((format!("  … on status `{status}`"), n));
        }
        rows.push(("`switchyard_cooldowns_total`".to_owned(), self.counter("switchyard_cooldowns_total", &[])));
        for (code, n) in self.counter_by("switchyard_refused_total", "code", &[]) {
            rows.push((format!("`switchyard_refused_total{{code=\"{code}\"}}`"), n));
        }
        for (reason, n) in self.counter_by("switchyard_unpriced_total", "reason", &[]) {
            rows.push((format!("`switchyard_unpriced_total{{reason=\"{reason}\"}}`"), n));
        }
        for stat in [
            "upstream_rq_total",
            "upstream_rq_retry",
            "upstream_rq_retry_success",
            "upstream_rq_retry_limit_exceeded",
            "upstream_rq_retry_overflow",
            "upstream_rq_per_try_timeout",
            "upstream_rq_timeout",
            "upstream_rq_rx_reset",
            "upstream_rq_tx_reset",
            "upstream_cx_destroy_remote_with_active_rq",
        ] {
            rows.push((
                format!("attempts cluster `{stat}`"),
                self.counter(&format!("envoy_cluster_{stat}"), &attempts),
            ));
        }
        for (provider, _) in PROVIDERS {
            let cluster = [("envoy_cluster_name", provider)];
            rows.push((format!("`{provider}` requests"), self.counter("envoy_cluster_upstream_rq_total", &cluster)));
            for (code, n) in self.counter_by("envoy_cluster_upstream_rq", "envoy_response_code", &cluster) {
                rows.push((format!("  … answered {code}"), n));
            }
            for stat in [
                "upstream_rq_rx_reset",
                "upstream_cx_destroy_remote_with_active_rq",
                "upstream_rq_per_try_timeout",
                "upstream_cx_total",
            ] {
                rows.push((format!("  … `{stat}`"), self.counter(&format!("envoy_cluster_{stat}"), &cluster)));
            }
        }
        for (name, value) in rows {
            let _ = writeln!(md, "| {name} | {} |", group(value.max(0.0) as u64));
        }
        let _ = writeln!(
            md,
            "\n`switchyard_failovers_total` on `503` counts the providers' 503s and also the attempt role's own 503 for \
             a candidate that started cooling after the request's plan was made (skipped without contacting the \
             provider)."
        );
        if r.clear_errors.keys().any(|kind| kind.starts_with("504 Envoy")) {
            let _ = writeln!(
                md,
                "Envoy's 504 (`upstream request timeout`) is its answer when an attempt stalls past the 5 s per-try \
                 timeout and the plan has no candidate left: a plan holds only the candidates that were not cooling when \
                 the request arrived (a stall on the only candidate not cooling gives this 504 after 5.0 s, with \
                 switchyard's routing headers)."
            );
        }
        let _ = writeln!(
            md,
            "\nEnvoy at the end: process alive {}, `/ready` {}. Log (level `warn`): {} panics{}",
            if self.envoy_alive { "yes" } else { "**no**" },
            if self.envoy_ready { "200" } else { "**not ready**" },
            self.log_panics,
            if self.log_summary.is_empty() {
                ", no warnings or errors.".to_owned()
            } else {
                "; warnings and errors by message:".to_owned()
            }
        );
        for line in &self.log_summary {
            let _ = writeln!(md, "- `{}`", line.replace('`', "'"));
        }

        let _ = writeln!(md, "\n## What the mock providers saw\n");
        let _ = writeln!(md, "| provider | attempts received | 429 | of which `Retry-After: 1` | 503 | reset before headers | slow | stalled |\n|---|--:|--:|--:|--:|--:|--:|--:|");
        let mut all = ChaosCounts::default();
        let mut hits = 0;
        for (name, n, counts) in &self.providers {
            let _ = writeln!(md, "{}", chaos_row(name, *n, counts));
            all.add(counts);
            hits += n;
        }
        let _ = writeln!(md, "{}", chaos_row("all", hits, &all));
        let _ = writeln!(
            md,
            "\nAttempts per request sent: {:.3}. Client connections opened (warm-up included): {}; keep-alive \
             connections found closed by Envoy before reuse: {}.\n",
            hits as f64 / r.sent.max(1) as f64,
            group(r.connections_opened + self.warmup.connections_opened),
            group(r.stale_connections + self.warmup.stale_connections),
        );

        let _ = writeln!(md, "## Cross-checks\n");
        let client_class = |class: u16| -> u64 {
            r.statuses.iter().filter(|(status, _)| **status / 100 == class).map(|(_, n)| *n).sum()
        };
        let envoy_class = |class: u16| {
            self.counter_by("envoy_http_downstream_rq_xx", "envoy_response_code_class", &llm)
                .get(&class.to_string())
                .copied()
                .unwrap_or(0.0) as u64
        };
        let switchyard_429s: u64 =
            r.clear_errors.iter().filter(|(kind, _)| kind.starts_with("429 switchyard")).map(|(_, n)| *n).sum();
        let streamed_cuts: u64 = r.cuts.iter().filter(|(how, _)| how.starts_with("streamed")).map(|(_, n)| *n).sum();
        let provider_requests: u64 = PROVIDERS
            .iter()
            .map(|(p, _)| self.counter("envoy_cluster_upstream_rq_total", &[("envoy_cluster_name", p)]) as u64)
            .sum();
        let checks: Vec<(String, u64, u64)> = vec![
            (
                "requests sent = OK + clear errors + injected cuts + lost + wrong".to_owned(),
                r.sent,
                r.ok + r.clear_error_total() + r.cut_total() + r.lost_total() + r.wrong_total(),
            ),
            (
                "requests sent = Envoy's `downstream_rq_total`".to_owned(),
                r.sent,
                self.counter("envoy_http_downstream_rq_total", &llm) as u64,
            ),
            (
                "client's 2xx (OK and streams cut after their 200) = Envoy's `downstream_rq_2xx`".to_owned(),
                client_class(2),
                envoy_class(2),
            ),
            ("client's 4xx = Envoy's `downstream_rq_4xx`".to_owned(), client_class(4), envoy_class(4)),
            ("client's 5xx = Envoy's `downstream_rq_5xx`".to_owned(), client_class(5), envoy_class(5)),
            (
                "switchyard's 429s seen by the client = `switchyard_refused_total`".to_owned(),
                switchyard_429s,
                self.counter("switchyard_refused_total", &[]) as u64,
            ),
            (
                "streams cut, seen by the client = Envoy's `downstream_rq_tx_reset`".to_owned(),
                streamed_cuts,
                self.counter("envoy_http_downstream_rq_tx_reset", &llm) as u64,
            ),
            ("attempts the mocks received = Envoy's provider `upstream_rq_total`".to_owned(), hits, provider_requests),
            (
                "requests active in Envoy at the end = 0".to_owned(),
                self.gauge("envoy_http_downstream_rq_active", &llm) as u64,
                0,
            ),
        ];
        let _ = writeln!(md, "| check | left | right | holds |\n|---|--:|--:|---|");
        for (check, left, right) in checks {
            let _ = writeln!(
                md,
                "| {check} | {} | {} | {} |",
                group(left),
                group(right),
                if left == right { "yes" } else { "**no**" }
            );
        }
        md.push('\n');

        let _ = writeln!(md, "## Choices\n");
        let _ = writeln!(
            md,
            "- **Every attempt draws its own fault**: the mock draws for each request it receives, so a failover retry \
             gets a fresh draw (a rate-limited first candidate may be followed by a failing second one).\n\
             - **Retry-After of the injected 429s**: `retry-after-ms` between {} and {} ms, and one 429 in {:.0} says \
             `Retry-After: 1`. Every 429 starts a cooldown that every worker honours, and with one attempt in ten \
             rate-limited the share of time a candidate spends cooling grows with throughput × wait: in a trial run at \
             about 1,800 requests/s, waits of 5-50 ms left more than half of the requests with switchyard's 429 (all of \
             their category's candidates cooling), and waits of seconds would refuse nearly everything. The default waits of 5-10 ms \
             keep most traffic flowing while still exercising cooldowns on every worker, plans that leave cooling \
             candidates out, attempts that skip a candidate which started cooling mid-request, and switchyard's 429 when \
             a whole category cools. The scenario's `cooldown_min_ms` is 5 ms, so the waits are kept as asked. A \
             `Retry-After: 1` cools its candidate for a whole second on every worker: in trial runs, one in 500 429s saying \
             so took the share of switchyard's 429s from under 8% to about 20%.\n\
             - **Resets mid-answer are chosen by the client** (`x-mock-broken: reset-mid-body`), so the client knows \
             which stopped answers were injected and which would be lost.\n\
             - **Stalls** outlast the scenario's 5 s `per_try_timeout` (a production value for streamed first bytes; \
             shorter than a non-streaming LLM answer may need), so Envoy's per-try timeout and the failover after it \
             run too.",
            o.chaos.retry_after_ms.0,
            o.chaos.retry_after_ms.1,
            if o.chaos.retry_after_1s > 0.0 { 1.0 / o.chaos.retry_after_1s } else { f64::INFINITY },
        );
        md
    }
}

fn chaos_row(name: &str, hits: u64, c: &ChaosCounts) -> String {
    let status = |code: u16| group(c.statuses.get(&code).copied().unwrap_or(0));
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        group(hits),
        status(429),
        group(c.retry_after_1s),
        status(503),
        group(c.reset_before_headers),
        group(c.slow),
        group(c.stall)
    )
}

fn gauge_text(series: &[(String, f64)]) -> String {
    match series {
        [] => "–".to_owned(),
        [(_, value)] => format!("{:.2} MiB", value / 1024.0 / 1024.0),
        many => {
            let sum: f64 = many.iter().map(|(_, v)| v).sum();
            let max = many.iter().map(|(_, v)| *v).fold(0.0, f64::max);
            format!("{} series: sum {:.2} MiB, max {:.2} MiB", many.len(), sum / 1048576.0, max / 1048576.0)
        }
    }
}

/// `2 s`, `0.2 s`.
fn seconds_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_series_and_labels_parse() {
        let text =
            "# TYPE a counter\na{x=\"1\",y=\"two\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 2\ng{} 4.5\n";
        let series = parse_prometheus(text);
        assert_eq!(series.len(), 2);
        assert_eq!(series.get("g"), Some(&4.5));
        let (name, _) = series.iter().next().unwrap();
        assert_eq!(label(name, "y"), Some("two"));
        assert_eq!(label(name, "z"), None);
        assert_eq!(metric_name(name), "a");
    }

    #[test]
    fn sse_events_keep_names_and_data() {
        let events = sse_events("event: a\ndata: {\"x\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(events, vec![(Some("a".to_owned()), "{\"x\":1}".to_owned()), (None, "[DONE]".to_owned())]);
    }

    #[test]
    fn the_mix_covers_every_category_and_shape() {
        let mut rng = SplitMix64::new(3);
        let mut categories = std::collections::BTreeSet::new();
        let mut shapes = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let planned = plan(&mut rng, 0.01);
            categories.insert(planned.category);
            shapes.insert(planned.shape());
            let text = String::from_utf8_lossy(&planned.bytes);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let body: Value = serde_json::from_str(body).unwrap();
            if planned.category == "long-context" {
                assert!(body.to_string().len() > 16_000);
            }
        }
        assert_eq!(categories.len(), 5, "{categories:?}");
        assert_eq!(shapes.len(), 7, "{shapes:?}");
    }

    #[test]
    fn quantiles_and_grouping() {
        let mut values: Vec<u32> = (1..=1000).map(|v| v * 1000).collect();
        assert_eq!(quantiles(&mut values), Some([500.0, 900.0, 990.0, 999.0, 1000.0]));
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
    }
}
