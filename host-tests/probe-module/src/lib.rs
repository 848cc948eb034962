//! A proxy-wasm filter the harness has never been written against: it exercises hostcalls that
//! switchyard does not use (shared queues, properties, HTTP call variants, ticks, each metric type,
//! shared-data CAS, late header writes, an unmodelled call) so the harness tests can check it
//! answers them like Envoy or fails loudly.
//!
//! A request chooses what to probe with its `x-probe` header; results come back as request headers
//! the upstream sees (`x-probe-result`, ...), response headers or bodies, and log lines. The code
//! only exists for `wasm32`: on the host it compiles to an empty library.

#[cfg(target_arch = "wasm32")]
mod probe;
