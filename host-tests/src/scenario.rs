//! Runs a scenario from `envoy/<name>/envoy.yaml` for real: mock providers plus Envoy with switchyard.
//!
//! The scenario files are the ones operators read and `make run` starts, with fixed ports. A test
//! runs the same file with every port replaced: admin and listeners on port 0 (the driver finds
//! them), each `provider_x` cluster pointed at a fresh mock upstream, and the wasm path made
//! absolute. So a test proves the documented config, not a copy of it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::envoy::{self, Envoy, EnvoyOptions};
use crate::mock::MockUpstream;

/// A running scenario: Envoy and its mock providers (stopped on drop).
pub struct Scenario {
    pub envoy: Envoy,
    pub providers: Vec<MockUpstream>,
    agent: ureq::Agent,
}

/// The scenario's YAML with fixed ports: admin/listener ports (9901-9999, 10000-10099) become 0,
/// `port_value: 1800N` becomes the port of provider N (1-based), the wasm file an absolute path.
pub fn render(name: &str, provider_ports: &[u16]) -> anyhow::Result<String> {
    let path = envoy::workspace_root().join("envoy").join(name).join("envoy.yaml");
    let mut yaml = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    for port in (9901..10000).chain(10000..10100) {
        yaml = yaml.replace(&format!("port_value: {port} "), "port_value: 0 ");
    }
    for (i, port) in provider_ports.iter().enumerate() {
        yaml = yaml.replace(&format!("port_value: {} ", 18001 + i), &format!("port_value: {port} "));
    }
    let wasm = envoy::wasm_path()?;
    yaml = yaml
        .replace("filename: target/wasm32-wasip1/release/switchyard.wasm", &format!("filename: {}", wasm.display()));
    Ok(yaml)
}

impl Scenario {
    /// Starts `envoy/<name>/envoy.yaml` with `providers` mock upstreams named `provider_a`, `provider_b`, ...
    pub fn start(name: &str, providers: usize) -> anyhow::Result<Scenario> {
        Scenario::start_with(name, providers, EnvoyOptions::default())
    }

    pub fn start_with(name: &str, providers: usize, options: EnvoyOptions) -> anyhow::Result<Scenario> {
        Scenario::start_edited(name, providers, options, |yaml| yaml)
    }

    /// Starts the scenario with its rendered YAML changed by `edit` first (a test's variation on
    /// the documented file, e.g. a shorter timeout).
    pub fn start_edited(
        name: &str,
        providers: usize,
        options: EnvoyOptions,
        edit: impl FnOnce(String) -> String,
    ) -> anyhow::Result<Scenario> {
        let providers =
            (0..providers).map(|i| MockUpstream::start(&provider_name(i))).collect::<anyhow::Result<Vec<_>>>()?;
        let ports: Vec<u16> = providers.iter().map(MockUpstream::port).collect();
        let envoy = Envoy::start_with(&edit(render(name, &ports)?), options)?;
        Ok(Scenario { envoy, providers, agent: envoy::http_agent() })
    }

    /// The mock upstream behind cluster `provider_x`.
    pub fn provider(&self, name: &str) -> anyhow::Result<&MockUpstream> {
        match self.providers.iter().find(|p| p.name() == name) {
            Some(p) => Ok(p),
            None => bail!("no provider named {name}"),
        }
    }

    /// Total requests the providers received.
    pub fn total_hits(&self) -> usize {
        self.providers.iter().map(MockUpstream::hits).sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.envoy.base_url())
    }

    /// POSTs `body` to `path` through Envoy with extra `headers`; non-2xx answers are answers.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<Answer> {
        let mut request = self.agent.post(&self.url(path)).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::read(request.send(body)?)
    }

    /// POSTs `body` over a raw HTTP/1.1 socket (`extra_headers`: complete `name: value\r\n` lines)
    /// and reads the answer line by line as it arrives, each line with the time since the request
    /// was sent: for checking that a stream really streams. The body lines are the raw chunked
    /// encoding (chunk sizes, data lines, trailers).
    pub fn stream_raw(&self, path: &str, body: &str, extra_headers: &str) -> anyhow::Result<RawAnswer> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.envoy.port()))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
            body.len()
        )?;
        let start = Instant::now();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => lines.push((start.elapsed(), line)),
            }
        }
        Ok(RawAnswer { head, lines })
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
        let mut request = self.agent.get(&self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::read(request.call()?)
    }
}

fn provider_name(i: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(i % 26).unwrap_or(0));
    format!("provider_{letter}")
}

/// An answer read from a raw socket: the status line and headers as text, then every body line
/// with the time it arrived.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub head: String,
    pub lines: Vec<(Duration, String)>,
}

impl RawAnswer {
    /// The `data:` payloads, in order.
    pub fn data(&self) -> Vec<String> {
        self.lines.iter().filter_map(|(_, l)| l.strip_prefix("data: ").map(|d| d.trim_end().to_owned())).collect()
    }

    /// When each `data:` line arrived.
    pub fn data_times(&self) -> Vec<Duration> {
        self.lines.iter().filter(|(_, l)| l.starts_with("data: ")).map(|(t, _)| *t).collect()
    }
}

/// What a client received: status, headers (lowercase names) and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn read(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Answer> {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_vec()?;
        Ok(Answer { status, headers, body })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("answer is not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
