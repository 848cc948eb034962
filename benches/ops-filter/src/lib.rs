//! The floor filter (benches/floor-filter) plus the operations named in its plugin configuration,
//! for `benches/ops.sh`: what each kind of work switchyard asks of Envoy per request costs Envoy's
//! CPU, measured as the difference to the bare floor under the same load.
//!
//! The configuration is a comma-separated list of operations:
//!
//! | operation | what it does per request |
//! |---|---|
//! | `clock20` | 20 clock reads: hostcalls that only cross into Envoy and back |
//! | `counters10` | 10 counter increments |
//! | `histograms4` | 4 histogram records |
//! | `request_headers` | reads every request header (one hostcall, a buffer handed back) |
//! | `response_headers` | reads every response header |
//! | `rewrite_response_headers` | reads every response header and writes the map back with 5 more |
//! | `set_headers8` | sets 8 response headers one by one (each replaces any header of its name) |
//! | `add_headers8` | adds 8 response headers one by one (appended, nothing replaced) |
//! | `rewrite_body` | writes the request body back over itself and removes `content-length` |
//! | `hold_answer` | holds the response headers until the body is whole, reads it, adds 3 headers |
//! | `shared_data` | reads one shared-data key |
//! | `filter_state` | writes a 300-byte filter-state value |
//! | `compute` | hashes the request body 5 times inside the VM (how fast V8 runs the module's code) |
//!
//! Built with `cargo build --release --target wasm32-wasip1 -p switchyard-ops-filter`; on the host
//! it compiles to an empty library.

#[cfg(target_arch = "wasm32")]
mod ops {
    use std::cell::RefCell;
    use std::rc::Rc;

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

    const ROUTE_HEADER: &str = "x-switchyard-cluster";
    const CLUSTER: &str = "provider_c";

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(OpsRoot::default()) });
    }}

    /// The operations to add, and the metric ids they use (defined once per VM).
    #[derive(Default)]
    struct Ops {
        names: Vec<String>,
        counters: RefCell<Vec<u32>>,
        histograms: RefCell<Vec<u32>>,
    }

    impl Ops {
        fn has(&self, name: &str) -> bool {
            self.names.iter().any(|n| n == name)
        }

        fn ids(cache: &RefCell<Vec<u32>>, kind: MetricType, prefix: &str, n: usize) -> Vec<u32> {
            let mut ids = cache.borrow_mut();
            if ids.is_empty() {
                for i in 0..n {
                    if let Ok(id) = hostcalls::define_metric(kind, &format!("{prefix}{i}")) {
                        ids.push(id);
                    }
                }
            }
            ids.clone()
        }
    }

    #[derive(Default)]
    struct OpsRoot {
        ops: Rc<Ops>,
    }

    impl Context for OpsRoot {}

    impl RootContext for OpsRoot {
        fn on_configure(&mut self, size: usize) -> bool {
            let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size).ok().flatten();
            let text = String::from_utf8_lossy(config.as_deref().unwrap_or_default()).into_owned();
            let names = text.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
            self.ops = Rc::new(Ops { names, ..Ops::default() });
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(OpsStream { ops: Rc::clone(&self.ops) }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct OpsStream {
        ops: Rc<Ops>,
    }

    impl Context for OpsStream {}

    /// FNV-1a over `data`, `rounds` times.
    fn hash(data: &[u8], rounds: usize) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..rounds {
            for byte in data {
                h = (h ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }

    impl HttpContext for OpsStream {
        fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            if self.ops.has("request_headers") {
                std::hint::black_box(hostcalls::get_map(MapType::HttpRequestHeaders).ok());
            }
            if end_of_stream {
                self.set_http_request_header(ROUTE_HEADER, Some(CLUSTER));
                return Action::Continue;
            }
            Action::Pause
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self.get_http_request_body(0, body_size).unwrap_or_default();
            let ops = Rc::clone(&self.ops);
            if ops.has("compute") {
                std::hint::black_box(hash(&body, 5));
            }
            if ops.has("clock20") {
                for _ in 0..20 {
                    let _ = std::hint::black_box(hostcalls::get_current_time());
                }
            }
            if ops.has("counters10") {
                for id in Ops::ids(&ops.counters, MetricType::Counter, "ops_counter_", 10) {
                    let _ = hostcalls::increment_metric(id, 1);
                }
            }
            if ops.has("shared_data") {
                let _ = std::hint::black_box(hostcalls::get_shared_data("ops.shared"));
            }
            if ops.has("rewrite_body") {
                let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &body);
                self.set_http_request_header("content-length", None);
            }
            self.set_http_request_header(ROUTE_HEADER, Some(CLUSTER));
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            let ops = Rc::clone(&self.ops);
            if ops.has("response_headers") {
                std::hint::black_box(hostcalls::get_map(MapType::HttpResponseHeaders).ok());
            }
            if ops.has("rewrite_response_headers") {
                let mut headers = hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default();
                headers.extend((0..5).map(|i| (format!("x-ops-{i}"), "value".to_owned())));
                let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let _ = hostcalls::set_map(MapType::HttpResponseHeaders, pairs);
            }
            if ops.has("set_headers8") {
                for i in 0..8 {
                    let _ =
                        hostcalls::set_map_value(MapType::HttpResponseHeaders, &format!("x-ops-{i}"), Some("value"));
                }
            }
            if ops.has("add_headers8") {
                for i in 0..8 {
                    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, &format!("x-ops-{i}"), "value");
                }
            }
            if ops.has("hold_answer") && !end_of_stream {
                return Action::Pause;
            }
            Action::Continue
        }

        fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            let ops = Rc::clone(&self.ops);
            if ops.has("hold_answer") {
                if !end_of_stream {
                    return Action::Pause;
                }
                std::hint::black_box(self.get_http_response_body(0, body_size));
                for i in 0..3 {
                    self.set_http_response_header(&format!("x-ops-held-{i}"), Some("1"));
                }
            }
            if end_of_stream {
                if ops.has("histograms4") {
                    for id in Ops::ids(&ops.histograms, MetricType::Histogram, "ops_histogram_", 4) {
                        let _ = hostcalls::record_metric(id, 12);
                    }
                }
                if ops.has("filter_state") {
                    let value = [b'x'; 300];
                    let _ = hostcalls::set_property(vec!["ops"], Some(&value));
                }
            }
            Action::Continue
        }
    }
}
