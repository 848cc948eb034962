//! switchyard's test host: a mock OpenAI-compatible upstream the project owns, a driver that runs a
//! real Envoy with switchyard.wasm in its filter chain, and helpers shared by the end-to-end tests.

pub mod cli;
pub mod differential;
pub mod envoy;
pub mod harness;
pub mod mock;
pub mod scenario;
pub mod soak;
