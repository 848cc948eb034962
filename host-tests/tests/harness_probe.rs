//! Runs the probe module (a filter the harness was not written against) through the harness and
//! checks each hostcall answers as Envoy does, or fails the test loudly where Envoy's answer is not
//! modelled.

// Test code: helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use switchyard_host_tests::harness::{locate, Host, HttpCallResponse, LogLevel};

fn probe() -> Vec<u8> {
    locate::probe_wasm().unwrap()
}

fn host_with(config: &str) -> Host {
    let host = Host::new(&probe()).unwrap();
    assert!(host.configure(config).unwrap().accepted);
    host
}

fn host() -> Host {
    host_with("probe")
}

fn headers(scenario: &str) -> Vec<(&str, &str)> {
    vec![(":method", "POST"), (":path", "/p?q=1"), (":authority", "example"), ("x-probe", scenario)]
}

#[test]
fn configure_reports_rejection_and_vm_config() {
    let host = Host::builder(&probe()).vm_config("vm-cfg").build().unwrap();
    assert!(host.logged("probe vm started with \"vm-cfg\""));
    let c = host.configure("reject").unwrap();
    assert!(!c.accepted);
    assert!(c.logs.iter().any(|l| l.message.contains("rejects")));
    assert!(host.configure("fine").unwrap().accepted);
}

#[test]
fn shared_queue_round_trip_and_ready_notification() {
    let host = host();
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("queue"), b"").unwrap();
    assert_eq!(
        up.header("x-probe-result"),
        Some("enqueue=Ok(());first=item-1;empty=true;unknown=NotFound;missing=None")
    );
    // Each enqueue notifies the registering root context; the second item is still there for it.
    assert!(host.logged("ready: [\"item-2\"]"), "{:?}", host.logs());
}

#[test]
fn properties_follow_envoy() {
    let host = Host::builder(&probe()).plugin_name("probe-plugin").root_id("probe-root").vm_id("").build().unwrap();
    assert!(host.configure("x").unwrap().accepted);
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("properties"), b"").unwrap();
    assert_eq!(
        up.header("x-probe-result"),
        Some("name=probe-plugin;root=probe-root;vm=none;path=/p?q=1;method=POST;hdr=properties;url_path=/p;state=v1;set=Ok(())")
    );
    assert_eq!(s.filter_state("probe_state").unwrap(), Some(b"v1".to_vec()));
    // After the request headers continued, Envoy no longer has them: request.path is NotFound (1).
    let client = s.respond(200, &[], b"ok").unwrap();
    assert_eq!(client.header("x-probe-request-path-status"), Some("1"));
    // In the access-log phase the request headers are readable again.
    assert!(host.logged("on_log stream 2 scenario properties path /p?q=1"));
    assert_eq!(s.filter_state("probe_state").unwrap(), Some(b"v1".to_vec()));
}

#[test]
fn unmodelled_property_fails_loudly_unless_supplied() {
    let host = host();
    let err = host.stream().unwrap().request(&headers("property-unmodelled"), b"").unwrap_err();
    assert!(format!("{err:#}").contains("xds.cluster_name"), "{err:#}");

    let host = Host::builder(&probe()).property(&["xds", "cluster_name"], "openai").build().unwrap();
    host.configure("x").unwrap();
    assert!(host.stream().unwrap().request(&headers("property-unmodelled"), b"").unwrap().complete);
}

#[test]
fn metrics_of_each_type() {
    let host = host();
    let up = host.stream().unwrap().request(&headers("metrics"), b"").unwrap();
    assert_eq!(
        up.header("x-probe-result"),
        Some(
            "inc1=Ok(());inc0=Err(BadArgument);dec=Err(BadArgument);g_up=Ok(());g_down=Ok(());rec_h=Ok(());\
             rec_c=Ok(());get_c=Ok(11);get_g=Ok(3);get_h=Err(BadArgument);get_unknown=Err(NotFound)"
        )
    );
    assert_eq!(host.counter("probe_hits"), Some(11));
    assert_eq!(host.gauge("probe_level"), Some(3));
    assert_eq!(host.histogram("probe_sizes"), Some(vec![42, 7]));
    assert_eq!(host.counter("probe_requests"), Some(1));
}

#[test]
fn http_call_answers_and_resumes_the_request() {
    let host = host();
    host.on_http_call(|call| {
        assert_eq!(call.cluster, "backend");
        assert_eq!(call.header(":path"), Some("/lookup"));
        assert_eq!(call.body, b"question");
        assert_eq!(call.trailers, vec![("x-trailer".to_owned(), "t".to_owned())]);
        assert_eq!(call.timeout_ms, 5000);
        Some(HttpCallResponse::Response {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"answer".to_vec(),
            trailers: vec![("x-t".into(), "tv".into())],
        })
    });
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("http-call"), b"").unwrap();
    assert!(up.complete);
    assert_eq!(up.header("x-probe-call"), Some("status=200;body=answer;trailers=1;x-t=tv"));
    assert_eq!(host.http_calls().len(), 1);
}

#[test]
fn http_call_failure_then_local_reply_from_the_callback() {
    let host = host();
    host.queue_http_call_response(HttpCallResponse::reset());
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("http-call"), b"").unwrap();
    assert!(!up.forwarded());
    let answered = up.answered.clone().unwrap();
    assert_eq!(answered.status, Some(503));
    assert_eq!(answered.body_str(), "call failed");
    assert_eq!(answered.header("x-probe"), Some("call-failed"));
    assert!(answered.complete);
    assert!(host.logged("failed: Ok(\"11:reset\")"), "{:?}", host.logs());
}

#[test]
fn http_call_without_an_answer_fails_loudly() {
    let host = host();
    let err = host.stream().unwrap().request(&headers("http-call"), b"").unwrap_err();
    assert!(format!("{err:#}").contains("has no answer"), "{err:#}");
}

#[test]
fn http_call_bad_arguments() {
    let host = Host::builder(&probe()).clusters(&["backend"]).build().unwrap();
    host.configure("x").unwrap();
    let up = host.stream().unwrap().request(&headers("http-call-bad"), b"").unwrap();
    assert_eq!(up.header("x-probe-result"), Some("no_authority=Err(BadArgument);unknown_cluster=Err(BadArgument)"));
}

#[test]
fn unmodelled_call_fails_loudly() {
    let host = host();
    let err = host.stream().unwrap().request(&headers("grpc"), b"").unwrap_err();
    assert!(format!("{err:#}").contains("proxy_grpc_cancel is not modelled"), "{err:#}");
    // Envoy stops calling a VM that trapped; so does the harness.
    let err = host.stream().unwrap().request(&headers("metrics"), b"").unwrap_err();
    assert!(format!("{err:#}").contains("failed earlier"), "{err:#}");
}

#[test]
fn paused_body_is_buffered_and_rewritten() {
    let host = host();
    let mut s = host.stream().unwrap();
    let mut h = headers("buffer-body");
    h.push(("content-length", "9"));
    let up = s.request_chunks(&h, &[b"abc", b"def", b"ghi"]).unwrap();
    assert!(up.complete);
    assert_eq!(up.body_str(), "rewritten:abcdefghi");
    assert_eq!(up.chunks.len(), 1);
    assert_eq!(up.header("x-probe-body-len"), Some("9"));
    assert_eq!(up.header("content-length"), None);
    assert!(up.route_cache_cleared);
    for line in ["size=3 eos=false", "size=6 eos=false", "size=9 eos=true"] {
        assert!(host.logged(&format!("request body {line}")), "{line}: {:?}", host.logs());
    }
}

#[test]
fn paused_body_over_the_buffer_limit_gets_413() {
    let host = Host::builder(&probe()).buffer_limit(5).build().unwrap();
    host.configure("x").unwrap();
    let mut s = host.stream().unwrap();
    let up = s.request_chunks(&headers("buffer-body"), &[b"abc", b"def", b"ghi"]).unwrap();
    let answered = up.answered.clone().unwrap();
    assert_eq!(answered.status, Some(413));
    assert_eq!(answered.body_str(), "Payload Too Large");
    assert_eq!(answered.local_reply.unwrap().details, "request_payload_too_large");
    assert!(!up.forwarded());
    // The local reply went through the filter's own response callbacks.
    assert!(host.logged("response headers status=413"));
}

#[test]
fn header_pause_without_allow_on_headers_stop_iteration_holds_the_body() {
    let host = Host::builder(&probe()).allow_on_headers_stop_iteration(false).build().unwrap();
    host.configure("x").unwrap();
    let mut s = host.stream().unwrap();
    let up = s.request_chunks(&headers("hold-all"), &[b"abc", b"def"]).unwrap();
    assert!(up.held());
    assert!(!up.forwarded());
    assert!(!host.logged("request body"), "no body callback while all iteration is stopped");

    let host = self::host();
    let mut s = host.stream().unwrap();
    let up = s.request_chunks(&headers("hold-all"), &[b"abc"]).unwrap();
    // With the flag, the body callback runs while the headers are held, and may still change them.
    assert!(up.complete);
    assert_eq!(up.header("x-probe-late"), Some("1"));
    assert!(host.logged("late request header status=0"));

    // Once a body callback continued, the headers went upstream. Envoy still accepts a write to
    // them (and drops it); the harness fails the test instead.
    let host = self::host();
    let err = host.stream().unwrap().request_chunks(&headers("hold-all"), &[b"abc", b"def"]).unwrap_err();
    assert!(format!("{err:#}").contains("changed after they were sent on"), "{err:#}");
}

#[test]
fn the_access_log_reads_held_headers_as_the_filter_left_them() {
    let host = host();
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("rewrite-then-reply"), b"").unwrap();
    assert!(!up.forwarded());
    assert_eq!(s.client().unwrap().status, Some(403));
    let id = s.context_id();
    assert!(
        host.logged(&format!("on_log stream {id} scenario rewrite-then-reply path /rewritten")),
        "{:?}",
        host.logs()
    );
}

#[test]
fn local_reply_goes_through_the_response_callbacks() {
    let host = host();
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("local-reply"), b"body").unwrap();
    let client = up.answered.unwrap();
    assert_eq!(client.status, Some(403));
    assert_eq!(client.body_str(), "denied by probe");
    assert_eq!(client.header("content-type"), Some("text/plain"));
    assert_eq!(client.header("content-length"), Some("15"));
    assert_eq!(client.header("x-probe"), Some("denied"));
    assert!(client.header("x-probe-request-path-status").is_some());
    assert!(host.logged("response headers status=403"));
    assert!(s.finished().unwrap());
    assert!(s.respond(200, &[], b"").is_err());
}

#[test]
fn response_headers_held_until_the_body_completes() {
    let host = host();
    let mut s = host.stream().unwrap();
    assert!(s.request(&headers("hold-response"), b"").unwrap().complete);
    let c = s.send_response_headers(200, &[("content-type", "text/event-stream")], false).unwrap();
    assert!(c.headers.is_empty());
    assert!(s.response_headers_held().unwrap());
    let c = s.send_response_data(b"data: 1\n\n", false).unwrap();
    assert!(c.headers.is_empty() && c.chunks.is_empty());
    let c = s.send_response_data(b"data: 2\n\n", true).unwrap();
    assert_eq!(c.status, Some(200));
    assert_eq!(c.header("x-probe-body-len"), Some("18"));
    assert_eq!(c.chunks, vec![b"data: 1\n\ndata: 2\n\n".to_vec()]);
    assert!(c.complete);
}

#[test]
fn streamed_response_arrives_chunk_by_chunk() {
    let host = host();
    let mut s = host.stream().unwrap();
    s.request(&headers("plain"), b"").unwrap();
    let c = s.respond_stream(200, &[], &[b"a", b"b", b"c"]).unwrap();
    assert_eq!(c.chunks, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert!(c.complete);
}

#[test]
fn response_header_write_after_headers_were_sent_is_refused() {
    let host = host();
    let mut s = host.stream().unwrap();
    s.request(&headers("late-header"), b"").unwrap();
    let c = s.respond(200, &[], b"original").unwrap();
    // Envoy dropped its response header pointer when the headers continued: BadArgument (2).
    assert_eq!(c.body_str(), "late-header-status=2");
    assert_eq!(c.header("x-late"), None);
}

#[test]
fn local_reply_after_response_headers_were_sent_resets_the_stream() {
    let host = host();
    let mut s = host.stream().unwrap();
    s.request(&headers("reply-late"), b"").unwrap();
    let c = s.respond(200, &[], b"original").unwrap();
    assert!(c.reset);
    assert!(!c.complete);
    assert_eq!(c.status, Some(200));
}

#[test]
fn close_stream_resets() {
    let host = host();
    let mut s = host.stream().unwrap();
    let up = s.request(&headers("close"), b"").unwrap();
    let answered = up.answered.unwrap();
    assert!(answered.reset);
    assert_eq!(answered.reset_reason.as_deref(), Some("wasm_close_stream"));
}

#[test]
fn ticks_follow_the_clock() {
    let host = host_with("tick");
    assert_eq!(host.tick_period(0), Some(Duration::from_secs(1)));
    let t0 = host.now().unwrap();
    host.advance(Duration::from_millis(3500)).unwrap();
    assert_eq!(host.counter("probe_ticks"), Some(3));
    assert_eq!(host.now().unwrap().duration_since(t0).unwrap(), Duration::from_millis(3500));
    let (last, _) = host.shared_data("probe-last-tick").unwrap().unwrap();
    let last: u128 = String::from_utf8(last).unwrap().parse().unwrap();
    let expected = (t0 + Duration::from_secs(3)).duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(last, expected, "the third tick ran at t0 + 3 s");
    host.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(host.counter("probe_ticks"), Some(4));
}

#[test]
fn root_context_http_call_from_a_tick() {
    let host = host_with("tick-call");
    host.queue_http_call_response(HttpCallResponse::new(200, &[], "pong"));
    host.advance(Duration::from_secs(1)).unwrap();
    assert!(host.logged("root call 1 answered: headers=1 body=4 status=200"), "{:?}", host.logs());
}

#[test]
fn two_vms_share_data_with_compare_and_swap() {
    let host = Host::builder(&probe()).workers(2).build().unwrap();
    assert!(host.configure("x").unwrap().accepted);
    let set = |worker: usize, scenario: &str, value: &str, cas: &str| {
        let mut s = host.stream_on(worker).unwrap();
        let mut h = headers(scenario);
        h.push(("x-probe-value", value));
        h.push(("x-probe-cas", cas));
        s.request(&h, b"").unwrap().header("x-probe-result").unwrap().to_owned()
    };
    let r = set(0, "shared-set", "v1", "0");
    assert!(r.starts_with("old=none;cas=0;result=Ok"), "{r}");
    // Worker 1 sees what worker 0 wrote, with its CAS.
    let r = set(1, "shared-get", "", "0");
    let cas1: u32 = r.split("cas=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert_eq!(r, format!("old=v1;cas={cas1};result=read"));
    // Worker 0 writes again; worker 1's CAS is now stale.
    set(0, "shared-set", "v2", "0");
    let r = set(1, "shared-cas", "v3", &cas1.to_string());
    assert!(r.ends_with("result=Err(CasMismatch)"), "{r}");
    let (value, cas2) = host.shared_data("probe-key").unwrap().unwrap();
    assert_eq!(value, b"v2");
    let r = set(1, "shared-cas", "v3", &cas2.to_string());
    assert!(r.ends_with("result=Ok(())"), "{r}");
    assert_eq!(host.shared_data("probe-key").unwrap().unwrap().0, b"v3");
    // Metrics are one stats store too.
    assert_eq!(host.counter("probe_requests"), Some(5));
}

#[test]
fn log_level_filters_like_envoy() {
    let host = Host::builder(&probe()).log_level(LogLevel::Warn).build().unwrap();
    host.configure("x").unwrap();
    let up = host.stream().unwrap().request(&headers("log-level"), b"").unwrap();
    assert_eq!(up.header("x-probe-result"), Some("Ok(Warn)"));
    assert!(host.logs().is_empty(), "info lines are dropped at warn: {:?}", host.logs());
}

#[test]
fn interleaved_streams_on_one_worker() {
    let host = host();
    host.on_http_call(|_| Some(HttpCallResponse::new(200, &[], "x")));
    let mut a = host.stream().unwrap();
    let mut b = host.stream().unwrap();
    a.send_request_headers(&headers("buffer-body"), false).unwrap();
    b.send_request_headers(&headers("buffer-body"), false).unwrap();
    a.send_request_data(b"aa", false).unwrap();
    let ub = b.send_request_data(b"b", true).unwrap();
    assert_eq!(ub.body_str(), "rewritten:b");
    let ua = a.send_request_data(b"a", true).unwrap();
    assert_eq!(ua.body_str(), "rewritten:aaa");
}
