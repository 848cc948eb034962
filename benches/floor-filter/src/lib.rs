//! The floor for any body-inspecting proxy-wasm filter, for the end-to-end benchmark
//! (`benches/e2e.sh`): it holds the request headers, lets Envoy buffer the whole request body,
//! copies the body into the VM once, sets the route header to a fixed cluster and lets the request
//! go. It reads nothing and decides nothing, so whatever switchyard costs above it is the price of
//! parsing, classifying, rewriting and pricing.
//!
//! Built with `cargo build --release --target wasm32-wasip1 -p switchyard-floor-filter`, it is
//! `target/wasm32-wasip1/release/switchyard_floor.wasm`. The code only exists for `wasm32`: on the
//! host it compiles to an empty library.

#[cfg(target_arch = "wasm32")]
mod floor {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel};

    /// The header the benchmark's Envoy route reads with `cluster_header` (the same as switchyard's).
    const ROUTE_HEADER: &str = "x-switchyard-cluster";
    /// The cluster every request goes to.
    const CLUSTER: &str = "provider_c";

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
    }}

    struct FloorRoot;

    impl Context for FloorRoot {}

    impl RootContext for FloorRoot {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Floor))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Floor;

    impl Context for Floor {}

    impl HttpContext for Floor {
        fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
            if end_of_stream {
                // No body to wait for.
                self.set_http_request_header(ROUTE_HEADER, Some(CLUSTER));
                return Action::Continue;
            }
            // Hold the headers (needs `allow_on_headers_stop_iteration: true`) until the body is in.
            Action::Pause
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            if !end_of_stream {
                // Envoy keeps buffering; the whole body is handed over at the end.
                return Action::Pause;
            }
            // The one copy of the body into the VM that any filter reading the body pays.
            let body = self.get_http_request_body(0, body_size);
            std::hint::black_box(body.as_ref().map(Vec::len));
            // Changing a request header clears the route cache: the route is chosen again with it.
            self.set_http_request_header(ROUTE_HEADER, Some(CLUSTER));
            Action::Continue
        }
    }
}
