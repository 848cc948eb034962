//! Runs N whole 2 KB request lifecycles (the request, then its non-streaming answer) through a
//! module in the wasmtime harness, as `wasm/request_2k_non_streaming_whole_lifecycle` does, and
//! nothing else: a fixed amount of work for counting instructions (`benches/instructions.sh` runs
//! it under callgrind twice, with two values of N, and divides the difference), which unlike
//! timings do not move with what else the machine does.
//!
//! usage: lifecycles switchyard|floor N

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use switchyard_benches::{chat_body, CHAT_ANSWER, REQUEST_HEADERS};
use switchyard_host_tests::differential::DEMO_CONFIG;
use switchyard_host_tests::harness::{locate, Host};

/// The host's allocator, as in the criterion benchmark (benches/benches/wasm.rs).
#[global_allocator]
static HOST_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn host(module: &str) -> Host {
    let (path, config) = match module {
        "switchyard" => (locate::switchyard_wasm_path(), DEMO_CONFIG),
        "floor" => (locate::release_wasm("switchyard_floor.wasm"), ""),
        other => panic!("unknown module {other:?}: switchyard or floor"),
    };
    let wasm = std::fs::read(path.expect("the module is built: run `make bench-wasm`")).unwrap();
    let host = Host::builder(&wasm).plugin_name(module).root_id(module).vm_id(module).build().unwrap();
    assert!(host.configure(config).unwrap().accepted);
    host
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, module, n] = args.as_slice() else {
        eprintln!("usage: lifecycles switchyard|floor N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a number");
    let host = host(module);
    let body = chat_body(2 * 1024);
    for _ in 0..n {
        let mut s = host.stream().unwrap();
        assert!(s.push_request(&REQUEST_HEADERS, black_box(&body)).unwrap());
        assert!(s.push_response(200, &[("content-type", "application/json")], &[CHAT_ANSWER]).unwrap());
    }
}
