//! A proxy-wasm ABI 0.2.1 host on wasmtime that runs a filter module the way Envoy 1.40 does, for
//! fast tests: milliseconds per request instead of an Envoy process per test.
//!
//! A [`Host`] is one simulated Envoy: one VM per worker over one shared-data store, a clock the test
//! moves, and a responder for the HTTP calls the filter dispatches. A [`Stream`] plays one request:
//! the test sends the client's frames and the upstream's, and reads back what the upstream and the
//! client received ([`UpstreamRequest`], [`ClientResponse`]), plus logs, metrics, shared data and
//! filter state. Benchmarks use [`Stream::push_request`] and [`Stream::push_response`], the same
//! flow without those views. There is no global host state, so tests run in parallel.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use switchyard_host_tests::harness::Host;
//! let wasm = std::fs::read("target/wasm32-wasip1/release/switchyard.wasm")?;
//! let host = Host::new(&wasm)?;
//! assert!(host.configure(br#"{}"#)?.accepted);
//! let mut s = host.stream()?;
//! let up = s.request(&[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "x")], b"{}")?;
//! if up.complete {
//!     let client = s.respond(200, &[("content-type", "application/json")], b"{}")?;
//!     println!("{:?}", client.headers);
//! }
//! # Ok(()) }
//! ```
//!
//! Where Envoy's behaviour matters the harness models it (see [`flow`] and [`hostcalls`]); where it
//! cannot know it (gRPC, unmodelled properties, a write Envoy would accept and silently drop) the
//! test fails with an error naming the call rather than getting a guess.

pub mod abi;
pub mod flow;
pub mod host;
pub mod hostcalls;
pub mod locate;
pub mod properties;
pub mod shared;
pub mod stream;
pub mod vm;

pub use abi::{LogLevel, Status};
pub use host::{Configured, Host, HostBuilder, HttpCallResponse};
pub use shared::MetricValue;
pub use stream::{ClientResponse, LocalReply, Stream, UpstreamRequest};
pub use vm::{HttpCallRequest, LogEntry};
