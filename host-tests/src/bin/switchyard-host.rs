//! `switchyard-host`: runs requests through the real `switchyard.wasm` in the wasmtime harness, with
//! a given plugin configuration, and prints what switchyard decides for each — the check an operator
//! makes before rolling a configuration change out to Envoy.
//!
//! ```text
//! switchyard-host --config FILE [--wasm PATH] [--request FILE | --jsonl FILE]
//!                 [--answer-usage IN,OUT[,CACHED[,REASONING]] | --respond FILE] [--json]
//! ```
//!
//! - `--config FILE`: the plugin configuration as JSON (what goes into the `StringValue`).
//! - `--wasm PATH`: the module; default `$SWITCHYARD_WASM`, else the workspace's release build
//!   (`target/wasm32-wasip1/release/switchyard.wasm`).
//! - `--request FILE`: one request as a JSON object; `--jsonl FILE`: one per line (`-` reads standard
//!   input, the default; blank lines and lines starting with `#` are skipped). A request:
//!   `{"method": "POST", "path": "/v1/chat/completions", "headers": {"x-team": "risk"},
//!   "body": {...}}` — `method` defaults to `POST`, `path` to `/v1/chat/completions`; give the body
//!   as JSON in `body` (sent exactly as written in the file) or as text in `body_text`.
//! - Each forwarded request is answered by a canned provider answer so that the response headers can
//!   be shown: the project's mock provider answering the request as forwarded (status 200, the
//!   OpenAI shape of the endpoint, SSE when the request streams), reporting the usage given with
//!   `--answer-usage` (default: a quarter of the body length in, 12 out). `--respond FILE` gives the
//!   answer instead: `{"status": 200, "headers": {...}, "body": {...}}`, or `"body_text": "..."`, or
//!   `"events": ["data: {...}\n\n", ...]` for a stream (one body frame per event).
//! - `--json`: one JSON object per request on its own line, instead of the readable report.
//!
//! For each request it prints what switchyard decided — `routed` (category, upstream, model, the
//! route header's cluster, the `:path` and `:authority` sent upstream and the rewritten body),
//! `refused` (switchyard's status and error), or `passed` (not inspected: Envoy's route decides) —
//! and, for forwarded requests, the `x-switchyard-*` response headers and trailers the client would
//! get. Latency figures are 0: the harness's clock does not move.
//!
//! Exit status: 0 when every request ran, 1 on a usage, file or harness error (or a request line
//! that is not a request), 2 when switchyard refuses the configuration (its messages are printed).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Map, Value};
use switchyard_host_tests::differential::{self, WireResponse};
use switchyard_host_tests::harness::{locate, Host, LogLevel};
use switchyard_host_tests::mock::{Behavior, MockUpstream, Usage};

const USAGE: &str = "usage: switchyard-host --config FILE [--wasm PATH] [--request FILE | --jsonl FILE]
                       [--answer-usage IN,OUT[,CACHED[,REASONING]] | --respond FILE] [--json]

Runs each request through switchyard.wasm with the given plugin configuration (JSON) and prints
the route decision: category, cluster, the path and body sent upstream, or switchyard's own error;
then the x-switchyard-* headers the client would get for a canned provider answer.

  --config FILE         plugin configuration, JSON
  --wasm PATH           the module (default: $SWITCHYARD_WASM, else target/wasm32-wasip1/release/switchyard.wasm)
  --request FILE        one request: {\"method\":\"POST\",\"path\":\"/v1/chat/completions\",
                        \"headers\":{\"x-team\":\"risk\"},\"body\":{...}}  (or \"body_text\":\"...\")
  --jsonl FILE          one request per line; `-` is standard input (the default)
  --answer-usage U      usage the canned answer reports: IN,OUT[,CACHED[,REASONING]] tokens
  --respond FILE        the answer instead: {\"status\":200,\"headers\":{...},\"body\":{...}}
                        (or \"body_text\":\"...\", or \"events\":[\"data: ...\\n\\n\", ...])
  --json                one JSON object per request and line

exit status: 0 ran every request, 1 error, 2 configuration refused";

struct Args {
    config: PathBuf,
    wasm: Option<PathBuf>,
    input: Input,
    usage: Option<Usage>,
    respond: Option<PathBuf>,
    json: bool,
}

enum Input {
    One(PathBuf),
    Lines(Option<PathBuf>),
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let mut config = None;
    let mut wasm = None;
    let mut input = None;
    let mut usage = None;
    let mut respond = None;
    let mut json = false;
    let mut args = args;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| anyhow!("{name} needs a value\n\n{USAGE}")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--config" => config = Some(PathBuf::from(value()?)),
            "--wasm" => wasm = Some(PathBuf::from(value()?)),
            "--request" | "--jsonl" if input.is_some() => bail!("give one of --request and --jsonl\n\n{USAGE}"),
            "--request" => input = Some(Input::One(PathBuf::from(value()?))),
            "--jsonl" => {
                let v = value()?;
                input = Some(Input::Lines((v != "-").then(|| PathBuf::from(v))));
            }
            "--answer-usage" => {
                let v = value()?;
                usage = Some(v.parse::<Usage>().with_context(|| format!("--answer-usage {v}"))?);
            }
            "--respond" => respond = Some(PathBuf::from(value()?)),
            "--json" => json = true,
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let config = config.ok_or_else(|| anyhow!("--config is required\n\n{USAGE}"))?;
    if usage.is_some() && respond.is_some() {
        bail!("give one of --answer-usage and --respond\n\n{USAGE}");
    }
    Ok(Some(Args { config, wasm, input: input.unwrap_or(Input::Lines(None)), usage, respond, json }))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard-host: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<ExitCode> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let config = std::fs::read(&args.config).with_context(|| format!("cannot read {}", args.config.display()))?;
    let wasm_path = match &args.wasm {
        Some(p) => p.clone(),
        None => locate::switchyard_wasm_path().ok_or_else(|| {
            anyhow!(
                "no switchyard.wasm: give --wasm, set SWITCHYARD_WASM, or build it with \
                 `cargo build --release --target wasm32-wasip1 -p switchyard-filter`"
            )
        })?,
    };
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    let answer = match &args.respond {
        Some(p) => Some(read_answer(p)?),
        None => None,
    };
    let requests = read_requests(&args.input)?;

    let host = Host::builder(&wasm).plugin_name("switchyard").root_id("switchyard").vm_id("switchyard").build()?;
    let configured = host.configure(&config)?;
    if !configured.accepted {
        eprintln!("switchyard refused the configuration {}:", args.config.display());
        for line in configured.logs.iter().filter(|l| l.level >= LogLevel::Warn) {
            eprintln!("  {}", line.message);
        }
        return Ok(ExitCode::from(2));
    }
    let route_header = serde_json::from_slice::<Value>(&config)
        .ok()
        .and_then(|c| c.get("route_header").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "x-switchyard-cluster".to_owned());
    let provider = if answer.is_none() {
        let mock = MockUpstream::start("provider")?;
        mock.set_behavior(Behavior { usage: args.usage, ..Behavior::default() });
        Some(mock)
    } else {
        None
    };

    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (n, request) in requests.into_iter().enumerate() {
        let index = n + 1;
        let report = match request {
            Ok(r) => run_one(&host, &r, &route_header, answer.as_ref(), provider.as_ref())
                .map(|rep| (r, rep))
                .map_err(|e| anyhow!("{e:#}")),
            Err(e) => Err(e),
        };
        match report {
            Ok((r, rep)) if args.json => {
                writeln!(out, "{}", report_json(index, &r, &rep))?;
            }
            Ok((r, rep)) => write_human(&mut out, index, &r, &rep)?,
            Err(e) => {
                failed = true;
                if args.json {
                    writeln!(out, "{}", json!({"request": index, "error": format!("{e:#}")}))?;
                } else {
                    writeln!(out, "#{index} error: {e:#}\n")?;
                }
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// One request from the input.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The raw text of top-level member `key` of a JSON object (the object is known to be valid JSON).
fn raw_member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let b = text.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while b.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    // End (exclusive) of the string starting at `i` (a quote).
    let string_end = |mut i: usize| -> Option<usize> {
        i += 1;
        loop {
            match b.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
    };
    let value_end = |mut i: usize| -> Option<usize> {
        match b.get(i)? {
            b'"' => string_end(i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match b.get(i)? {
                        b'"' => {
                            i = string_end(i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while b.get(i).is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace()) {
                    i += 1;
                }
                Some(i)
            }
        }
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        skip_ws(&mut i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let kend = string_end(i)?;
        let name: String = serde_json::from_str(text.get(i..kend)?).ok()?;
        i = kend;
        skip_ws(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let vend = value_end(i)?;
        if name == key {
            return text.get(i..vend);
        }
        i = vend;
        skip_ws(&mut i);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn parse_request(text: &str) -> Result<Request> {
    let v: Value = serde_json::from_str(text).context("not JSON")?;
    let obj = v.as_object().context("a request is a JSON object")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "method" | "path" | "headers" | "body" | "body_text") {
            bail!("unknown request field `{k}` (expected method, path, headers, body, body_text)");
        }
    }
    let method = match obj.get("method") {
        None => "POST".to_owned(),
        Some(m) => m.as_str().context("`method` must be a string")?.to_ascii_uppercase(),
    };
    let path = match obj.get("path") {
        None => "/v1/chat/completions".to_owned(),
        Some(p) => {
            p.as_str().filter(|p| p.starts_with('/')).context("`path` must be a string starting with /")?.to_owned()
        }
    };
    let mut headers = Vec::new();
    if let Some(h) = obj.get("headers") {
        for (k, v) in h.as_object().context("`headers` must be an object of strings")? {
            let v = v.as_str().with_context(|| format!("header `{k}` must be a string"))?;
            headers.push((k.to_ascii_lowercase(), v.to_owned()));
        }
    }
    let body = match (obj.get("body"), obj.get("body_text")) {
        (Some(_), Some(_)) => bail!("give one of `body` and `body_text`"),
        (Some(_), None) => raw_member(text, "body").context("cannot find the body's text")?.as_bytes().to_vec(),
        (None, Some(t)) => t.as_str().context("`body_text` must be a string")?.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    Ok(Request { method, path, headers, body })
}

fn read_requests(input: &Input) -> Result<Vec<Result<Request>>> {
    match input {
        Input::One(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            Ok(vec![parse_request(text.trim()).with_context(|| format!("{}", p.display()))])
        }
        Input::Lines(p) => {
            let reader: Box<dyn BufRead> = match p {
                Some(p) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
                )),
                None => Box::new(std::io::BufReader::new(std::io::stdin())),
            };
            let mut out = Vec::new();
            for (n, line) in reader.lines().enumerate() {
                let line = line?;
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                out.push(parse_request(t).with_context(|| format!("line {}", n + 1)));
            }
            Ok(out)
        }
    }
}

fn read_answer(p: &PathBuf) -> Result<WireResponse> {
    let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
    let obj = v.as_object().context("--respond: the answer is a JSON object")?;
    let status = match obj.get("status") {
        None => 200,
        Some(s) => s.as_u64().and_then(|s| u16::try_from(s).ok()).context("--respond: bad `status`")?,
    };
    let mut headers = Vec::new();
    if let Some(h) = obj.get("headers") {
        for (k, v) in h.as_object().context("--respond: `headers` must be an object")? {
            headers
                .push((k.to_ascii_lowercase(), v.as_str().context("--respond: header values are strings")?.to_owned()));
        }
    }
    let frames: Vec<Vec<u8>> = match (obj.get("body"), obj.get("body_text"), obj.get("events")) {
        (Some(_), None, None) => vec![raw_member(&text, "body").context("--respond: body")?.as_bytes().to_vec()],
        (None, Some(t), None) => vec![t.as_str().context("--respond: `body_text` is a string")?.as_bytes().to_vec()],
        (None, None, Some(e)) => e
            .as_array()
            .context("--respond: `events` is a list of strings")?
            .iter()
            .map(|x| x.as_str().map(|s| s.as_bytes().to_vec()).context("--respond: `events` is a list of strings"))
            .collect::<Result<_>>()?,
        (None, None, None) => Vec::new(),
        _ => bail!("--respond: give one of `body`, `body_text` and `events`"),
    };
    let has = |headers: &[(String, String)], name: &str| headers.iter().any(|(k, _)| k == name);
    if !has(&headers, "content-type") {
        let ct = if obj.contains_key("events") { "text/event-stream" } else { "application/json" };
        headers.push(("content-type".to_owned(), ct.to_owned()));
    }
    if !has(&headers, "content-length") && !obj.contains_key("events") {
        headers.push(("content-length".to_owned(), frames.iter().map(Vec::len).sum::<usize>().to_string()));
    }
    Ok(WireResponse { status, headers, frames, trailers: Vec::new(), chunked: obj.contains_key("events") })
}

/// What happened to one request.
struct Report {
    decision: &'static str,
    /// The request as forwarded upstream.
    upstream: Option<Forwarded>,
    /// The client's answer: switchyard's own (refused), or the one for the canned provider answer.
    client: Option<Answer>,
}

struct Forwarded {
    method: String,
    path: String,
    authority: String,
    cluster: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    trailers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn run_one(
    host: &Host,
    r: &Request,
    route_header: &str,
    answer: Option<&WireResponse>,
    provider: Option<&MockUpstream>,
) -> Result<Report> {
    let headers = differential::envoy_request_headers(&r.method, &r.path, &r.headers, &r.body);
    let mut s = host.stream()?;
    let up = differential::send_request(&mut s, &headers, &r.body)?;
    if let Some(a) = &up.answered {
        return Ok(Report {
            decision: "refused",
            upstream: None,
            client: Some(Answer {
                status: a.status.unwrap_or(0),
                headers: a.headers.clone(),
                trailers: Vec::new(),
                body: a.body.clone(),
            }),
        });
    }
    if !up.complete {
        return Ok(Report { decision: "held", upstream: None, client: None });
    }
    let hs = up.headers.clone().unwrap_or_default();
    let forwarded = Forwarded {
        method: header(&hs, ":method").unwrap_or_default().to_owned(),
        path: header(&hs, ":path").unwrap_or_default().to_owned(),
        authority: header(&hs, ":authority").unwrap_or_default().to_owned(),
        cluster: header(&hs, route_header).map(str::to_owned),
        headers: hs.clone(),
        body: up.body.clone(),
    };
    // Client-sent route headers are removed on every request, so one on the way up is switchyard's.
    let decision = if forwarded.cluster.is_some() { "routed" } else { "passed" };
    let reply = match (answer, provider) {
        (Some(a), _) => a.clone(),
        (None, Some(p)) => differential::ask_provider(p.port(), &up)?,
        (None, None) => bail!("no answer to give"),
    };
    let c = differential::send_answer(&mut s, &reply)?;
    Ok(Report {
        decision,
        upstream: Some(forwarded),
        client: Some(Answer {
            status: c.status.unwrap_or(0),
            headers: c.headers.clone(),
            trailers: c.trailers.clone().unwrap_or_default(),
            body: c.body.clone(),
        }),
    })
}

fn switchyard_only(h: &[(String, String)]) -> Vec<(String, String)> {
    h.iter().filter(|(k, _)| k.starts_with("x-switchyard-")).cloned().collect()
}

fn object(pairs: &[(String, String)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(m)
}

fn model_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok()?.get("model")?.as_str().map(str::to_owned)
}

fn report_json(index: usize, r: &Request, rep: &Report) -> Value {
    let mut v = json!({
        "request": index,
        "method": r.method,
        "path": r.path,
        "decision": rep.decision,
    });
    let Some(m) = v.as_object_mut() else { return v };
    if let Some(f) = &rep.upstream {
        m.insert("cluster".to_owned(), json!(f.cluster));
        m.insert(
            "upstream_request".to_owned(),
            json!({
                "method": f.method,
                "path": f.path,
                "authority": f.authority,
                "headers": object(&switchyard_only(&f.headers)),
                "body_changed": f.body != r.body,
                "body": String::from_utf8_lossy(&f.body),
            }),
        );
    }
    if let Some(a) = &rep.client {
        let body: Value = serde_json::from_slice(&a.body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&a.body)));
        let key = if rep.decision == "refused" { "refusal" } else { "answer" };
        let mut ans = json!({
            "status": a.status,
            "headers": object(&switchyard_only(&a.headers)),
        });
        if let Some(o) = ans.as_object_mut() {
            if rep.decision == "refused" {
                o.insert("body".to_owned(), body);
            } else if !a.trailers.is_empty() {
                o.insert("trailers".to_owned(), object(&switchyard_only(&a.trailers)));
            }
        }
        m.insert(key.to_owned(), ans);
    }
    v
}

fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 4096;
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX {
        return text.into_owned();
    }
    let cut = (0..=MAX).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}... ({} bytes in all)", text.get(..cut).unwrap_or_default(), bytes.len())
}

fn write_human(out: &mut impl Write, index: usize, r: &Request, rep: &Report) -> Result<()> {
    writeln!(out, "#{index} {} {}", r.method, r.path)?;
    match (rep.decision, &rep.upstream, &rep.client) {
        ("refused", _, Some(a)) => {
            let err: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            let code = err.pointer("/error/code").and_then(Value::as_str).unwrap_or("?");
            let message =
                err.pointer("/error/message").and_then(Value::as_str).map_or_else(|| shown(&a.body), str::to_owned);
            writeln!(out, "  refused   {} {code}: {message}", a.status)?;
        }
        ("held", _, _) => writeln!(out, "  held      switchyard neither forwarded nor answered the request")?,
        (decision, Some(f), client) => {
            let resp = client.as_ref().map(|a| a.headers.clone()).unwrap_or_default();
            if decision == "routed" {
                writeln!(
                    out,
                    "  routed    category {}, upstream {}, model {} -> {}",
                    header(&resp, "x-switchyard-category").unwrap_or("?"),
                    header(&resp, "x-switchyard-upstream").unwrap_or("?"),
                    model_of(&r.body).unwrap_or_else(|| "?".to_owned()),
                    model_of(&f.body).unwrap_or_else(|| "?".to_owned()),
                )?;
                writeln!(out, "  cluster   {}", f.cluster.as_deref().unwrap_or("?"))?;
            } else {
                writeln!(out, "  passed    not inspected by switchyard: Envoy's route picks the cluster")?;
            }
            writeln!(out, "  upstream  {} {} (host {})", f.method, f.path, f.authority)?;
            if f.body == r.body {
                writeln!(out, "  body      unchanged ({} bytes)", f.body.len())?;
            } else {
                writeln!(out, "  body      {}", shown(&f.body))?;
            }
            if let Some(a) = client {
                let hs = switchyard_only(&a.headers);
                let ts = switchyard_only(&a.trailers);
                writeln!(
                    out,
                    "  answer    {}{}",
                    a.status,
                    if hs.is_empty() { ", no x-switchyard-* headers" } else { "" }
                )?;
                for (k, v) in hs {
                    writeln!(out, "    {k}: {v}")?;
                }
                if !ts.is_empty() {
                    writeln!(out, "  trailers")?;
                    for (k, v) in ts {
                        writeln!(out, "    {k}: {v}")?;
                    }
                }
            }
        }
        _ => writeln!(out, "  (no outcome)")?,
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_member_keeps_the_text_as_written() {
        let t = r#"{"path":"/v1/x", "body" : {"model" : "a", "s":"}\"]"} , "z":1}"#;
        assert_eq!(raw_member(t, "body"), Some(r#"{"model" : "a", "s":"}\"]"}"#));
        assert_eq!(raw_member(t, "z"), Some("1"));
        assert_eq!(raw_member(t, "path"), Some(r#""/v1/x""#));
        assert_eq!(raw_member(t, "nope"), None);
    }

    #[test]
    fn requests_parse_with_defaults() {
        let r = parse_request(r#"{"body_text":"{bad"}"#).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body.as_slice()),
            ("POST", "/v1/chat/completions", b"{bad".as_slice())
        );
        assert!(parse_request(r#"{"bdy":1}"#).is_err());
        assert!(parse_request(r#"{"body":{},"body_text":""}"#).is_err());
    }
}
