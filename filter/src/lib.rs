//! switchyard: an Envoy proxy-wasm filter that routes OpenAI-format LLM requests by category.
//!
//! The decision core (`config`, `request`, `rules`, `keywords`, `route`, `pbstruct`) is plain Rust over plain
//! data and is tested natively; `filter` is the thin layer that connects it to Envoy's callbacks.
//! The `.wasm` entry point registers the root context and nothing else. Unsafe code is denied
//! but in two places: `text::utf8` takes bytes it has checked are all ASCII as a `str`, and
//! `headers` makes the one hostcall the SDK's version of could panic on (reading a header map).

#![deny(unsafe_code)]

pub mod answer;
pub mod config;
pub mod cooldown;
pub mod cost;
pub mod failover;
pub mod filter;
pub mod headers;
pub mod keywords;
pub mod metrics;
pub mod pbstruct;
pub mod plan;
pub mod request;
pub mod route;
pub mod rules;
pub mod sse;
#[cfg(test)]
mod testing;
pub mod text;
pub mod usage;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::<filter::Root>::default()
    });
}}
