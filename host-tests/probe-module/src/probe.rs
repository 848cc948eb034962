//! The probe filter itself (see the crate docs).

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

// Raw imports, to observe the status Envoy returns where the SDK would panic on it.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
}

fn raw_replace_status(map: MapType, key: &str, value: &str) -> u32 {
    // SAFETY: pointers and lengths come from live slices for the duration of the call.
    unsafe { proxy_replace_header_map_value(map as u32, key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

fn raw_property_status(path: &[&str]) -> u32 {
    let joined = path.join("\0");
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: as above; a returned buffer is leaked, which is fine for a probe.
    unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) }
}

fn log(msg: &str) {
    let _ = hostcalls::log(LogLevel::Info, msg);
}

fn status_name(s: Status) -> String {
    format!("{s:?}")
}

fn text(bytes: Option<Vec<u8>>) -> String {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|| "none".to_owned())
}

fn metric(kind: MetricType, name: &str) -> u32 {
    hostcalls::define_metric(kind, name).unwrap_or_default()
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

#[derive(Default)]
struct ProbeRoot {
    config: String,
}

impl Context for ProbeRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _trailers: usize) {
        let status =
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten().unwrap_or_default();
        log(&format!("root call {token} answered: headers={headers} body={body} status={status}"));
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let vm = hostcalls::get_buffer(BufferType::VmConfiguration, 0, size).ok().flatten();
        log(&format!("probe vm started with {:?}", text(vm)));
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size).ok().flatten();
        self.config = text(raw);
        if self.config.contains("reject") {
            log("probe rejects its configuration");
            return false;
        }
        let queue = hostcalls::register_shared_queue("probe-queue").unwrap_or_default();
        log(&format!("probe configured: {} (queue {queue})", self.config));
        if self.config.contains("tick") {
            let _ = hostcalls::set_tick_period(Duration::from_millis(1000));
        }
        true
    }

    fn on_tick(&mut self) {
        let id = metric(MetricType::Counter, "probe_ticks");
        let _ = hostcalls::increment_metric(id, 1);
        let now = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let _ = hostcalls::set_shared_data("probe-last-tick", Some(now.to_string().as_bytes()), None);
        if self.config.contains("tick-call") {
            let r = hostcalls::dispatch_http_call(
                "backend",
                vec![(":method", "GET"), (":path", "/tick"), (":authority", "backend")],
                None,
                vec![],
                Duration::from_secs(1),
            );
            log(&format!("tick call dispatched: {r:?}"));
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut items = Vec::new();
        while let Ok(Some(item)) = hostcalls::dequeue_shared_queue(queue_id) {
            items.push(String::from_utf8_lossy(&item).into_owned());
        }
        log(&format!("queue {queue_id} ready: {items:?}"));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp { id: context_id, scenario: String::new(), token: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeHttp {
    id: u32,
    scenario: String,
    token: Option<u32>,
}

impl ProbeHttp {
    fn result(&self, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe-result", Some(value));
    }

    fn header(&self, name: &str) -> String {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten().unwrap_or_default()
    }

    fn property(&self, path: Vec<&str>) -> String {
        text(hostcalls::get_property(path).ok().flatten())
    }

    fn queue(&self) -> Action {
        let Ok(Some(id)) = hostcalls::resolve_shared_queue("", "probe-queue") else {
            self.result("resolve failed");
            return Action::Continue;
        };
        let enq = hostcalls::enqueue_shared_queue(id, Some(b"item-1"));
        let first = text(hostcalls::dequeue_shared_queue(id).ok().flatten());
        let empty = matches!(hostcalls::dequeue_shared_queue(id), Ok(None));
        let unknown = match hostcalls::dequeue_shared_queue(id.wrapping_add(1000)) {
            Err(s) => status_name(s),
            Ok(_) => "ok".to_owned(),
        };
        let missing = hostcalls::resolve_shared_queue("", "missing").ok().flatten();
        let _ = hostcalls::enqueue_shared_queue(id, Some(b"item-2"));
        self.result(&format!("enqueue={enq:?};first={first};empty={empty};unknown={unknown};missing={missing:?}"));
        Action::Continue
    }

    fn properties(&self) -> Action {
        let set = hostcalls::set_property(vec!["probe_state"], Some(b"v1"));
        let value = format!(
            "name={};root={};vm={};path={};method={};hdr={};url_path={};state={};set={set:?}",
            self.property(vec!["plugin_name"]),
            self.property(vec!["plugin_root_id"]),
            self.property(vec!["plugin_vm_id"]),
            self.property(vec!["request", "path"]),
            self.property(vec!["request", "method"]),
            self.property(vec!["request", "headers", "x-probe"]),
            self.property(vec!["request", "url_path"]),
            self.property(vec!["probe_state"]),
        );
        self.result(&value);
        Action::Continue
    }

    fn metrics(&self) -> Action {
        let c = metric(MetricType::Counter, "probe_hits");
        let g = metric(MetricType::Gauge, "probe_level");
        let h = metric(MetricType::Histogram, "probe_sizes");
        let inc1 = hostcalls::increment_metric(c, 1);
        let inc0 = hostcalls::increment_metric(c, 0);
        let dec = hostcalls::increment_metric(c, -1);
        let g_up = hostcalls::increment_metric(g, 5);
        let g_down = hostcalls::increment_metric(g, -2);
        let rec_h = hostcalls::record_metric(h, 42).and(hostcalls::record_metric(h, 7));
        let rec_c = hostcalls::record_metric(c, 10);
        let get_c = hostcalls::get_metric(c);
        let get_g = hostcalls::get_metric(g);
        let get_h = hostcalls::get_metric(h);
        let get_unknown = hostcalls::get_metric(c.wrapping_add(4000));
        self.result(&format!(
            "inc1={inc1:?};inc0={inc0:?};dec={dec:?};g_up={g_up:?};g_down={g_down:?};rec_h={rec_h:?};\
             rec_c={rec_c:?};get_c={get_c:?};get_g={get_g:?};get_h={get_h:?};get_unknown={get_unknown:?}"
        ));
        Action::Continue
    }

    fn call(&mut self) -> Action {
        let r = hostcalls::dispatch_http_call(
            "backend",
            vec![(":method", "POST"), (":path", "/lookup"), (":authority", "backend")],
            Some(b"question"),
            vec![("x-trailer", "t")],
            Duration::from_secs(5),
        );
        match r {
            Ok(token) => {
                self.token = Some(token);
                Action::Pause
            }
            Err(s) => {
                self.result(&format!("dispatch={s:?}"));
                Action::Continue
            }
        }
    }

    fn bad_calls(&self) -> Action {
        let no_authority = hostcalls::dispatch_http_call(
            "backend",
            vec![(":method", "GET"), (":path", "/")],
            None,
            vec![],
            Duration::from_secs(1),
        );
        let unknown_cluster = hostcalls::dispatch_http_call(
            "unknown-cluster",
            vec![(":method", "GET"), (":path", "/"), (":authority", "x")],
            None,
            vec![],
            Duration::from_secs(1),
        );
        self.result(&format!("no_authority={no_authority:?};unknown_cluster={unknown_cluster:?}"));
        Action::Continue
    }

    fn shared(&self) -> Action {
        let value = self.header("x-probe-value");
        let (old, cas) = hostcalls::get_shared_data("probe-key").unwrap_or((None, None));
        let result = match self.scenario.as_str() {
            "shared-set" => format!("{:?}", hostcalls::set_shared_data("probe-key", Some(value.as_bytes()), None)),
            "shared-cas" => {
                let given: u32 = self.header("x-probe-cas").parse().unwrap_or_default();
                format!("{:?}", hostcalls::set_shared_data("probe-key", Some(value.as_bytes()), Some(given)))
            }
            _ => "read".to_owned(),
        };
        self.result(&format!("old={};cas={};result={result}", text(old), cas.unwrap_or_default()));
        Action::Continue
    }
}

impl Context for ProbeHttp {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        if self.token != Some(token) {
            return;
        }
        if headers == 0 {
            let code = hostcalls::get_grpc_status().map(|(c, m)| format!("{c}:{}", m.unwrap_or_default()));
            log(&format!("call {token} failed: {code:?}"));
            let _ = hostcalls::send_http_response(503, vec![("x-probe", "call-failed")], Some(b"call failed"));
            return;
        }
        let status =
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten().unwrap_or_default();
        let body_text = text(hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body).ok().flatten());
        let trailer =
            hostcalls::get_map_value(MapType::HttpCallResponseTrailers, "x-t").ok().flatten().unwrap_or_default();
        let value = format!("status={status};body={body_text};trailers={trailers};x-t={trailer}");
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe-call", Some(&value));
        let _ = hostcalls::resume_http_request();
    }
}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        self.scenario = self.header("x-probe");
        let hits = metric(MetricType::Counter, "probe_requests");
        let _ = hostcalls::increment_metric(hits, 1);
        log(&format!("stream {} scenario {}", self.id, self.scenario));
        match self.scenario.as_str() {
            "queue" => self.queue(),
            "properties" => self.properties(),
            "property-unmodelled" => {
                let _ = hostcalls::get_property(vec!["xds", "cluster_name"]);
                Action::Continue
            }
            "metrics" => self.metrics(),
            "http-call" => self.call(),
            "http-call-bad" => self.bad_calls(),
            "shared-set" | "shared-get" | "shared-cas" => self.shared(),
            "buffer-body" | "hold-all" => Action::Pause,
            "local-reply" => {
                let _ = hostcalls::send_http_response(403, vec![("x-probe", "denied")], Some(b"denied by probe"));
                Action::Pause
            }
            "rewrite-then-reply" => {
                // Changes the held headers, then never lets them go: the access log still reads them.
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some("/rewritten"));
                let _ = hostcalls::send_http_response(403, vec![], Some(b"denied by probe"));
                Action::Pause
            }
            "grpc" => {
                // SAFETY: a plain call with an integer argument.
                let s = unsafe { proxy_grpc_cancel(1) };
                self.result(&format!("grpc_cancel={s}"));
                Action::Continue
            }
            "close" => {
                let _ = hostcalls::reset_http_request();
                Action::Pause
            }
            "log-level" => {
                let level = hostcalls::get_log_level();
                self.result(&format!("{level:?}"));
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        log(&format!("request body size={size} eos={eos}"));
        match self.scenario.as_str() {
            "buffer-body" => {
                if !eos {
                    return Action::Pause;
                }
                let body =
                    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten().unwrap_or_default();
                let len = body.len().to_string();
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-probe-body-len", Some(&len));
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "content-length", None);
                let mut rewritten = b"rewritten:".to_vec();
                rewritten.extend_from_slice(&body);
                let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, &rewritten);
                Action::Continue
            }
            "hold-all" => {
                let status = raw_replace_status(MapType::HttpRequestHeaders, "x-probe-late", "1");
                log(&format!("late request header status={status}"));
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        let status =
            hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status").ok().flatten().unwrap_or_default();
        log(&format!("response headers status={status}"));
        let path_status = raw_property_status(&["request", "path"]);
        let _ = hostcalls::set_map_value(
            MapType::HttpResponseHeaders,
            "x-probe-request-path-status",
            Some(&path_status.to_string()),
        );
        if self.scenario == "hold-response" {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        log(&format!("response body size={size} eos={eos}"));
        match self.scenario.as_str() {
            "hold-response" => {
                if !eos {
                    return Action::Pause;
                }
                let _ =
                    hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-probe-body-len", Some(&size.to_string()));
                Action::Continue
            }
            "late-header" => {
                let status = raw_replace_status(MapType::HttpResponseHeaders, "x-late", "1");
                let _ = hostcalls::set_buffer(
                    BufferType::HttpResponseBody,
                    0,
                    size,
                    format!("late-header-status={status}").as_bytes(),
                );
                Action::Continue
            }
            "reply-late" => {
                let _ = hostcalls::send_http_response(500, vec![], Some(b"too late"));
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        let path = hostcalls::get_map_value(MapType::HttpRequestHeaders, ":path").ok().flatten().unwrap_or_default();
        log(&format!("on_log stream {} scenario {} path {path}", self.id, self.scenario));
    }
}
