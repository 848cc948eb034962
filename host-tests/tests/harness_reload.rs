//! A configuration update that switchyard refuses leaves the previous configuration serving
//! (Envoy keeps the old listener when `on_configure` fails; the VM keeps its old config).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use switchyard_host_tests::harness::{locate, Host};

fn config(cluster: &str) -> String {
    format!(
        r#"{{"upstreams": {{"u": {{"cluster": "{cluster}"}}}}, "models": {{"m": {{}}}},
            "categories": [{{"name": "all", "candidates": [{{"upstream": "u", "model": "m"}}]}}],
            "default_category": "all"}}"#
    )
}

fn routed_to(host: &Host) -> String {
    let headers = [(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "x"), (":scheme", "http")];
    let mut s = host.stream().unwrap();
    let up = s.request(&headers, br#"{"model":"x"}"#).unwrap();
    up.header("x-switchyard-cluster").unwrap().to_owned()
}

#[test]
fn a_refused_reload_keeps_the_previous_configuration() {
    let wasm = std::fs::read(locate::switchyard_wasm_path().expect("switchyard.wasm is built (make wasm)")).unwrap();
    let host = Host::new(&wasm).unwrap();
    assert!(host.configure(config("first")).unwrap().accepted);
    assert_eq!(routed_to(&host), "first");

    let refused = host.configure(r#"{"upstreams": {}, "categories": [], "default_category": "nope"}"#).unwrap();
    assert!(!refused.accepted);
    assert!(host.logged("switchyard configuration is invalid"), "{:?}", host.logs());
    assert_eq!(routed_to(&host), "first", "the previous configuration still serves");

    assert!(host.configure(config("second")).unwrap().accepted);
    assert_eq!(routed_to(&host), "second");
}
