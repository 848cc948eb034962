//! Tests of the mock upstream itself (every endpoint, streaming, knobs, broken modes, exact request
//! recording) and a smoke test of the Envoy driver with a plain proxy config (no wasm).

// The helpers below are test code too: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_host_tests::envoy::{http_agent, Envoy};
use switchyard_host_tests::mock::{
    reply_text, Behavior, Chaos, ChaosCounts, MockUpstream, RecordedRequest, Usage, DEFAULT_CHUNKS,
};

/// An answer as a test sees it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `data:` payloads of an SSE body, in order.
    fn sse_data(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
            .map(str::to_owned)
            .collect()
    }
}

fn send(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let agent = http_agent();
    let response = match body {
        Some(body) => {
            let mut request = agent.post(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.header("content-type", "application/json").send(body)
        }
        None => {
            assert_eq!(method, "GET");
            let mut request = agent.get(url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        }
    };
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let headers =
        response.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let body = response.body_mut().read_to_string().unwrap();
    Answer { status, headers, body }
}

fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    send("POST", url, Some(body), headers)
}

/// Sends raw bytes and reads until the server closes (or 5 s pass); returns what arrived.
fn raw_exchange(mock: &MockUpstream, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(mock.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut received = Vec::new();
    let mut buf = [0; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

fn raw_post(path: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Extract the invoice number."}]}"#;

#[test]
fn chat_completion_answers_with_the_requested_model_and_usage() {
    let mock = MockUpstream::start("alpha").unwrap();
    let answer = post(&format!("{}/v1/chat/completions", mock.url()), CHAT, &[]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-mock-upstream"), Some("alpha"));
    assert_eq!(answer.header("x-mock-model"), Some("gpt-4o-mini"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], reply_text("alpha", "gpt-4o-mini"));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let expected = Usage::for_request_body(CHAT.len());
    assert_eq!(body["usage"]["prompt_tokens"], expected.prompt);
    assert_eq!(body["usage"]["completion_tokens"], expected.completion);
    assert_eq!(body["usage"]["total_tokens"], expected.total());
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(mock.hits(), 1);
}

#[test]
fn completions_embeddings_and_responses_have_their_openai_shapes() {
    let mock = MockUpstream::start("beta").unwrap();
    let base = format!("{}/v1", mock.url());

    let completion = post(&format!("{base}/completions"), r#"{"model":"davinci","prompt":"Say hi"}"#, &[]).json();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["model"], "davinci");
    assert_eq!(completion["choices"][0]["text"], reply_text("beta", "davinci"));
    assert!(completion["usage"]["prompt_tokens"].as_u64().unwrap() >= 1);

    let embeddings =
        post(&format!("{base}/embeddings"), r#"{"model":"text-embedding-3-small","input":["a","b"]}"#, &[]).json();
    assert_eq!(embeddings["object"], "list");
    assert_eq!(embeddings["model"], "text-embedding-3-small");
    let data = embeddings["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(embeddings["usage"]["prompt_tokens"], embeddings["usage"]["total_tokens"]);

    let body = r#"{"model":"o4-mini","input":"Review this claim for fraud."}"#;
    let response = post(&format!("{base}/responses"), body, &[("x-mock-usage", "100,40,30,25")]).json();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "o4-mini");
    assert_eq!(response["output"][0]["content"][0]["text"], reply_text("beta", "o4-mini"));
    assert_eq!(
        response["usage"],
        json!({
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 30},
            "output_tokens": 40,
            "output_tokens_details": {"reasoning_tokens": 25},
            "total_tokens": 140,
        })
    );
    assert_eq!(mock.hits(), 3);
}

#[test]
fn other_paths_echo_and_the_path_keeps_its_query() {
    let mock = MockUpstream::start("gamma").unwrap();
    let answer = send("GET", &format!("{}/v1/models?limit=2", mock.url()), None, &[("x-trace", "t1")]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-mock-upstream"), Some("gamma"));
    assert_eq!(answer.json(), json!({"mock": "gamma", "method": "GET", "path": "/v1/models?limit=2"}));
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.method, "GET");
    assert_eq!(recorded.path, "/v1/models?limit=2");
    assert_eq!(recorded.header("X-Trace"), Some("t1"));
    assert!(recorded.headers.iter().all(|(name, _)| name == &name.to_ascii_lowercase()));
}

#[test]
fn streaming_without_include_usage_has_no_usage_chunk() {
    let mock = MockUpstream::start("delta").unwrap();
    let body = r#"{"model":"m1","stream":true,"messages":[]}"#;
    let answer = post(&format!("{}/v1/chat/completions", mock.url()), body, &[("x-mock-chunks", "4")]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.header("x-mock-model"), Some("m1"));
    let data = answer.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    // role chunk, 4 content chunks, finish chunk
    assert_eq!(chunks.len(), 6);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "m1"));
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, reply_text("delta", "m1"));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn streaming_with_include_usage_ends_with_a_usage_chunk() {
    let mock = MockUpstream::start("epsilon").unwrap();
    let body = r#"{"model":"m2","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let answer = post(&format!("{}/v1/chat/completions", mock.url()), body, &[("x-mock-usage", "50,7,10,3")]);
    let data = answer.sse_data();
    assert_eq!(data.len(), 1 + DEFAULT_CHUNKS as usize + 1 + 1 + 1);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({
            "prompt_tokens": 50,
            "completion_tokens": 7,
            "total_tokens": 57,
            "prompt_tokens_details": {"cached_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 3},
        })
    );
    // Like OpenAI, the other chunks carry `"usage": null`.
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first.get("usage"), Some(&Value::Null));
}

#[test]
fn completions_and_responses_stream_too() {
    let mock = MockUpstream::start("zeta").unwrap();
    let completion = post(
        &format!("{}/v1/completions", mock.url()),
        r#"{"model":"c1","prompt":"x","stream":true,"stream_options":{"include_usage":true}}"#,
        &[],
    );
    let data = completion.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["object"], "text_completion");
    assert!(usage["usage"]["completion_tokens"].as_u64().is_some());

    let responses = post(&format!("{}/v1/responses", mock.url()), r#"{"model":"r1","input":"x","stream":true}"#, &[]);
    assert!(responses.body.starts_with("event: response.created\n"));
    let events: Vec<Value> = responses.sse_data().iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["model"], "r1");
    assert!(last["response"]["usage"]["output_tokens"].as_u64().is_some());
    let text: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(text, reply_text("zeta", "r1"));
}

#[test]
fn streamed_chunks_are_spaced_by_the_chunk_delay() {
    let mock = MockUpstream::start("eta").unwrap();
    let body = r#"{"model":"m","stream":true}"#;
    let mut stream = TcpStream::connect(mock.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sent = Instant::now();
    stream
        .write_all(&raw_post("/v1/chat/completions", body, "x-mock-chunks: 3\r\nx-mock-chunk-delay-ms: 100\r\n"))
        .unwrap();
    let mut received = Vec::new();
    let mut first_data = None;
    let mut done = None;
    let mut buf = [0; 4096];
    while done.is_none() {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before [DONE]");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received);
        if first_data.is_none() && text.contains("data: {") {
            first_data = Some(sent.elapsed());
        }
        if text.contains("data: [DONE]") {
            done = Some(sent.elapsed());
        }
    }
    let (first, last) = (first_data.unwrap(), done.unwrap());
    // 6 events (role, 3 content, finish, [DONE]) → 5 gaps of 100 ms.
    assert!(last - first >= Duration::from_millis(450), "first {first:?}, last {last:?}");
    assert!(first < Duration::from_millis(300), "first chunk came late: {first:?}");
}

#[test]
fn delay_knob_holds_the_headers() {
    let mock = MockUpstream::start("theta").unwrap();
    let start = Instant::now();
    let answer = post(&format!("{}/v1/chat/completions", mock.url()), CHAT, &[("x-mock-delay-ms", "200")]);
    assert_eq!(answer.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn status_knob_answers_an_openai_error_with_retry_after() {
    let mock = MockUpstream::start("iota").unwrap();
    let answer = post(
        &format!("{}/v1/chat/completions", mock.url()),
        CHAT,
        &[
            ("x-mock-status", "429"),
            ("x-mock-retry-after", "7"),
            ("x-mock-header", "x-ratelimit-remaining-requests: 0"),
        ],
    );
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(answer.header("x-mock-upstream"), Some("iota"));
    let body = answer.json();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("429"));

    let server_error = post(&format!("{}/v1/chat/completions", mock.url()), CHAT, &[("x-mock-status", "503")]);
    assert_eq!(server_error.status, 503);
    assert_eq!(server_error.json()["error"]["type"], "server_error");
}

#[test]
fn a_bad_knob_is_answered_with_400() {
    let mock = MockUpstream::start("kappa").unwrap();
    let answer = post(&format!("{}/v1/chat/completions", mock.url()), CHAT, &[("x-mock-broken", "sideways")]);
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"]["message"].as_str().unwrap().contains("sideways"));
}

#[test]
fn programmatic_behaviors_default_then_one_shot_queue() {
    let mock = MockUpstream::start("lambda").unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    mock.set_behavior(Behavior {
        usage: Some(Usage { prompt: 11, completion: 22, cached: 0, reasoning: 0 }),
        ..Behavior::default()
    });
    mock.push_behavior(Behavior { status: Some(429), retry_after: Some("1".into()), ..Behavior::default() });
    mock.push_behavior(Behavior::status(500));

    let first = post(&url, CHAT, &[]);
    assert_eq!((first.status, first.header("retry-after")), (429, Some("1")));
    assert_eq!(post(&url, CHAT, &[]).status, 500);
    let third = post(&url, CHAT, &[]);
    assert_eq!(third.status, 200);
    assert_eq!(third.json()["usage"]["prompt_tokens"], 11);
    // Request headers override the stacked behaviors.
    let fourth = post(&url, CHAT, &[("x-mock-usage", "1,2")]);
    assert_eq!(fourth.json()["usage"]["completion_tokens"], 2);
    assert_eq!(mock.hits(), 4);

    mock.clear();
    assert_eq!(mock.hits(), 0);
    assert_eq!(post(&url, CHAT, &[]).json()["usage"]["prompt_tokens"], 11);
    mock.reset();
    assert_eq!(post(&url, CHAT, &[]).json()["usage"]["prompt_tokens"], Usage::for_request_body(CHAT.len()).prompt);
}

#[test]
fn control_endpoints_drive_a_mock_over_http() {
    let mock = MockUpstream::start("mu").unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    let control = |path: &str, body: &str| post(&format!("{}/_mock/{path}", mock.url()), body, &[]);

    assert_eq!(control("behavior", r#"{"headers": [["x-default", "yes"]]}"#).status, 200);
    assert_eq!(control("push", r#"{"status": 429, "retry_after": "2"}"#).status, 200);
    assert_eq!(control("push", r#"{"nonsense": 1}"#).status, 400);

    let limited = post(&url, CHAT, &[]);
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("2")));
    assert_eq!(limited.header("x-default"), Some("yes"));
    let fine = post(&url, CHAT, &[]);
    assert_eq!((fine.status, fine.header("x-default")), (200, Some("yes")));

    let hits = send("GET", &format!("{}/_mock/hits", mock.url()), None, &[]).json();
    assert_eq!(hits, json!({"hits": 2}));
    let listed: Vec<RecordedRequest> =
        serde_json::from_str(&send("GET", &format!("{}/_mock/requests", mock.url()), None, &[]).body).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].body, CHAT.as_bytes());
    assert_eq!(listed, mock.requests());

    assert_eq!(control("reset", "").status, 200);
    assert_eq!(mock.hits(), 0);
    assert_eq!(post(&url, CHAT, &[]).header("x-default"), None);
}

#[test]
fn requests_are_recorded_byte_for_byte() {
    let mock = MockUpstream::start("nu").unwrap();
    // Odd spacing, key order, escapes and non-ASCII must survive as sent.
    let body =
        "{ \"stream\":false ,\"model\" : \"m\",\n \"messages\":[{\"content\":\"caf\u{e9} \\u00e9 \\\"q\\\"\"}] }";
    let answer = post(&format!("{}/v1/chat/completions?api-version=1", mock.url()), body, &[("x-one", "1")]);
    assert_eq!(answer.status, 200);
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.body, body.as_bytes());
    assert_eq!(recorded.path, "/v1/chat/completions?api-version=1");
    assert_eq!(recorded.model().as_deref(), Some("m"));
    assert_eq!(recorded.body_json().unwrap()["stream"], false);
    assert_eq!(recorded.header("content-length"), Some(body.len().to_string().as_str()));

    // A chunked request body is recorded de-chunked, and keep-alive serves a second request.
    let mut stream = TcpStream::connect(mock.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: m\r\ntransfer-encoding: chunked\r\n\r\n\
              9\r\n{\"model\":\r\n8;ext=1\r\n\"e\",\"inp\r\n8\r\nut\":\"x\"}\r\n0\r\n\r\n",
        )
        .unwrap();
    stream.write_all(&raw_post("/v1/other", "{}", "")).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].body, br#"{"model":"e","input":"x"}"#);
    assert_eq!(requests[1].header("transfer-encoding"), Some("chunked"));
    assert_eq!(requests[2].path, "/v1/other");
}

#[test]
fn broken_invalid_json_and_truncated() {
    let mock = MockUpstream::start("xi").unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());

    let invalid = post(&url, CHAT, &[("x-mock-broken", "invalid-json")]);
    assert_eq!(invalid.status, 200);
    assert!(serde_json::from_str::<Value>(&invalid.body).is_err());

    let truncated = post(&url, CHAT, &[("x-mock-broken", "truncated")]);
    assert_eq!(truncated.status, 200);
    assert!(!truncated.body.is_empty());
    assert!(serde_json::from_str::<Value>(&truncated.body).is_err());

    let stream_body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let invalid_stream = post(&url, stream_body, &[("x-mock-broken", "invalid-json")]);
    let data = invalid_stream.sse_data();
    assert!(data.iter().any(|d| d != "[DONE]" && serde_json::from_str::<Value>(d).is_err()));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    let truncated_stream = post(&url, stream_body, &[("x-mock-broken", "truncated")]);
    let data = truncated_stream.sse_data();
    assert!(!data.is_empty());
    assert!(!data.iter().any(|d| d == "[DONE]" || d.contains("\"prompt_tokens\"")));
}

#[test]
fn broken_no_usage_leaves_usage_out() {
    let mock = MockUpstream::start("omicron").unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    let plain = post(&url, CHAT, &[("x-mock-broken", "no-usage")]).json();
    assert_eq!(plain["object"], "chat.completion");
    assert!(plain.get("usage").is_none());
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let streamed = post(&url, body, &[("x-mock-broken", "no-usage")]);
    let data = streamed.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(!data.iter().any(|d| d.contains("usage")));
}

#[test]
fn broken_resets_close_the_connection() {
    let mock = MockUpstream::start("pi").unwrap();
    let before =
        raw_exchange(&mock, &raw_post("/v1/chat/completions", CHAT, "x-mock-broken: reset-before-headers\r\n"));
    assert!(before.is_empty(), "{}", String::from_utf8_lossy(&before));

    let mid = raw_exchange(&mock, &raw_post("/v1/chat/completions", CHAT, "x-mock-broken: reset-mid-body\r\n"));
    let text = String::from_utf8_lossy(&mid);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
    assert!(!body.is_empty() && body.len() < length, "got {} of {length} bytes", body.len());

    let stream_body = r#"{"model":"m","stream":true}"#;
    let mid_stream =
        raw_exchange(&mock, &raw_post("/v1/chat/completions", stream_body, "x-mock-broken: reset-mid-body\r\n"));
    let text = String::from_utf8_lossy(&mid_stream);
    assert!(text.contains("transfer-encoding: chunked") && text.contains("data: {"));
    assert!(!text.contains("[DONE]") && !text.ends_with("0\r\n\r\n"));
    assert_eq!(mock.hits(), 3);
}

#[test]
fn dropping_the_mock_closes_idle_connections() {
    let mock = MockUpstream::start("rho").unwrap();
    let addr = mock.addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /x HTTP/1.1\r\nhost: m\r\n\r\n").unwrap();
    let mut buf = [0; 4096];
    assert!(stream.read(&mut buf).unwrap() > 0);
    let start = Instant::now();
    drop(mock);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

#[test]
fn without_recording_the_mock_only_counts() {
    let mock = MockUpstream::start("tau").unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    post(&url, CHAT, &[]);
    mock.set_recording(false);
    for _ in 0..3 {
        assert_eq!(post(&url, CHAT, &[]).status, 200);
    }
    assert_eq!(mock.hits(), 4);
    assert!(mock.requests().is_empty(), "turning recording off forgets what was kept");
    assert!(mock.last_request().is_none());
    assert_eq!(send("GET", &format!("{}/_mock/hits", mock.url()), None, &[]).json(), json!({"hits": 4}));
    assert_eq!(send("GET", &format!("{}/_mock/requests", mock.url()), None, &[]).json(), json!([]));
    // reset and clear zero the count; recording stays off.
    mock.reset();
    assert_eq!(mock.hits(), 0);
    post(&url, CHAT, &[]);
    assert_eq!((mock.hits(), mock.requests().len()), (1, 0));
    mock.clear();
    assert_eq!(mock.hits(), 0);
    mock.set_recording(true);
    post(&url, CHAT, &[]);
    assert_eq!((mock.hits(), mock.requests().len()), (1, 1));
}

#[test]
fn chaos_specs_parse_and_bad_ones_are_refused() {
    let chaos: Chaos = "429=0.10, 503=0.02,reset-before-headers=0.005,slow=0.05:300,stall=0.001:6000,\
                        retry-after-ms=1-9,retry-after-1s=0.25,seed=7"
        .parse()
        .unwrap();
    assert_eq!(chaos.statuses, vec![(429, 0.10), (503, 0.02)]);
    assert_eq!(chaos.reset_before_headers, 0.005);
    assert_eq!((chaos.slow, chaos.stall), ((0.05, 300), (0.001, 6000)));
    assert_eq!((chaos.retry_after_ms, chaos.retry_after_1s, chaos.seed), ((1, 9), 0.25, 7));
    assert_eq!("".parse::<Chaos>().unwrap(), Chaos::default());
    for bad in [
        "429=1.5",
        "429=0.7,503=0.4",
        "slow=0.5",
        "slow=0.6:10,stall=0.6:10",
        "retry-after-ms=9-1",
        "teapot=0.1",
        "99=0.1",
        "429",
        "seed=x",
    ] {
        assert!(bad.parse::<Chaos>().is_err(), "{bad} was accepted");
    }
}

#[test]
fn chaos_draws_a_fault_for_every_request() {
    let mock = MockUpstream::start("upsilon").unwrap();
    mock.set_recording(false);
    mock.set_chaos(Some("429=0.3,503=0.1,retry-after-ms=5-10,retry-after-1s=0.2,seed=3".parse().unwrap()));
    let url = format!("{}/v1/chat/completions", mock.url());
    let mut seen: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut one_second = 0;
    for _ in 0..400 {
        let answer = post(&url, CHAT, &[]);
        *seen.entry(answer.status).or_default() += 1;
        if answer.status == 429 {
            match (answer.header("retry-after"), answer.header("retry-after-ms")) {
                (Some("1"), None) => one_second += 1,
                (None, Some(ms)) => assert!((5..=10).contains(&ms.parse::<u32>().unwrap()), "{ms}"),
                other => panic!("429 with {other:?}"),
            }
            assert_eq!(answer.json()["error"]["code"], "rate_limit_exceeded");
        }
    }
    let (limited, failed, fine) = (seen[&429], seen[&503], seen[&200]);
    assert_eq!(limited + failed + fine, 400);
    assert!((80..=160).contains(&limited), "{seen:?}");
    assert!((20..=70).contains(&failed), "{seen:?}");
    let counts = mock.chaos_counts();
    assert_eq!(counts.draws, 400);
    assert_eq!(counts.statuses.get(&429), Some(&limited));
    assert_eq!(counts.statuses.get(&503), Some(&failed));
    assert_eq!(counts.retry_after_1s, one_second);
    assert!(one_second > 0 && one_second < limited / 2, "{one_second} of {limited}");
    let listed: ChaosCounts =
        serde_json::from_str(&send("GET", &format!("{}/_mock/chaos", mock.url()), None, &[]).body).unwrap();
    assert_eq!(listed, counts);
    // The same seed and name give the same draws in the same order; another name gives others.
    let fresh = |name: &str| {
        let m = MockUpstream::start(name).unwrap();
        m.set_chaos(Some("429=0.3,503=0.1,seed=3".parse().unwrap()));
        m
    };
    let statuses = |m: &MockUpstream| {
        (0..40).map(|_| post(&format!("{}/v1/embeddings", m.url()), CHAT, &[]).status).collect::<Vec<_>>()
    };
    let (psi, twin, phi) = (fresh("psi"), fresh("psi"), fresh("phi"));
    let first = statuses(&psi);
    assert_eq!(first, statuses(&twin));
    assert_ne!(first, statuses(&phi));
}

#[test]
fn chaos_resets_slows_and_stalls_and_request_headers_still_win() {
    let mock = MockUpstream::start("chi").unwrap();
    mock.set_chaos(Some("reset-before-headers=1".parse().unwrap()));
    let reset = raw_exchange(&mock, &raw_post("/v1/chat/completions", CHAT, ""));
    assert!(reset.is_empty(), "{}", String::from_utf8_lossy(&reset));
    // A request's own knobs override the drawn fault field by field.
    let asked = raw_exchange(&mock, &raw_post("/v1/chat/completions", CHAT, "x-mock-broken: no-usage\r\n"));
    assert!(String::from_utf8_lossy(&asked).starts_with("HTTP/1.1 200 OK"));

    // A slow answer waits 300-600 ms here.
    mock.set_chaos(Some("slow=1:600".parse().unwrap()));
    let url = format!("{}/v1/chat/completions", mock.url());
    let start = Instant::now();
    assert_eq!(post(&url, CHAT, &[]).status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    let start = Instant::now();
    assert_eq!(post(&url, CHAT, &[("x-mock-delay-ms", "0")]).status, 200);
    assert!(start.elapsed() < Duration::from_millis(250), "{:?}", start.elapsed());

    mock.set_chaos(Some("stall=1:250,429=1".parse().unwrap()));
    let start = Instant::now();
    let stalled = post(&url, CHAT, &[]);
    assert_eq!(stalled.status, 429);
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(post(&url, CHAT, &[("x-mock-status", "200"), ("x-mock-delay-ms", "0")]).status, 200);

    let counts = mock.chaos_counts();
    assert_eq!((counts.reset_before_headers, counts.slow, counts.stall), (2, 2, 2));
    // reset() keeps the chaos setting but zeroes its counts; set_chaos(None) ends it.
    mock.reset();
    assert_eq!(mock.chaos_counts(), ChaosCounts::default());
    assert_eq!(post(&url, CHAT, &[("x-mock-delay-ms", "0")]).status, 429);
    mock.set_chaos(None);
    assert_eq!(post(&url, CHAT, &[]).status, 200);
}

#[test]
fn the_binary_serves_with_chaos_and_without_recording() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "omega=127.0.0.1:0", "--no-record", "--chaos=503=1,seed=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    let answer = post(&format!("{url}/v1/chat/completions"), CHAT, &[]);
    let requests = send("GET", &format!("{url}/_mock/requests"), None, &[]).json();
    let chaos = send("GET", &format!("{url}/_mock/chaos"), None, &[]).json();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(answer.status, 503, "{line}");
    assert_eq!(requests, json!([]));
    assert_eq!(chaos["statuses"]["503"], 1);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "x=127.0.0.1:0", "--chaos", "503=2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("503=2"));
}

/// A plain proxy (no wasm): every request goes to the cluster `mock`.
const PLAIN_PROXY: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: mock}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: mock
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: mock
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: MOCK_PORT}}}
"#;

#[test]
fn envoy_proxies_to_the_mock() {
    let mock = MockUpstream::start("sigma").unwrap();
    let envoy = Envoy::start(&PLAIN_PROXY.replace("MOCK_PORT", &mock.port().to_string())).unwrap();
    assert_ne!(envoy.port(), 0);
    assert_eq!(envoy.listener_port("main").unwrap(), envoy.port());
    assert!(envoy.listener_port("nope").is_err());

    let answer = post(
        &format!("{}/v1/chat/completions", envoy.base_url()),
        CHAT,
        &[("x-mock-status", "429"), ("x-mock-retry-after", "3")],
    );
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("3"));
    assert_eq!(answer.header("x-mock-upstream"), Some("sigma"));
    let answer = post(&format!("{}/v1/chat/completions", envoy.base_url()), CHAT, &[]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["model"], "gpt-4o-mini");

    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.body, CHAT.as_bytes());
    assert!(recorded.header("x-request-id").is_some(), "Envoy adds x-request-id");
    assert_eq!(envoy.stat("cluster.mock.upstream_rq_completed"), Some(2));
    assert_eq!(envoy.stat("cluster.mock.upstream_rq_429"), Some(1));
    assert!(envoy.stats_prometheus().contains("envoy_cluster_upstream_rq_completed{envoy_cluster_name=\"mock\"} 2"));
    assert!(envoy.log().contains("starting main dispatch loop"));
}

#[test]
fn envoy_refuses_an_invalid_config_and_the_log_says_why() {
    let log = Envoy::start_expect_failure(&PLAIN_PROXY.replace("type: STATIC", "type: NOT_A_TYPE")).unwrap();
    assert!(log.contains("NOT_A_TYPE"), "{log}");
    let error = Envoy::start(&PLAIN_PROXY.replace("MOCK_PORT", "not-a-port")).err().unwrap();
    assert!(format!("{error:#}").contains("not-a-port"), "{error:#}");
    let fine = Envoy::start_expect_failure(&PLAIN_PROXY.replace("MOCK_PORT", "1")).err().unwrap();
    assert!(format!("{fine:#}").contains("expected to be refused"), "{fine:#}");
}
