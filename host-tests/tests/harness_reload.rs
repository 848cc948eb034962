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

/// Two categories in the given order, both sending to upstream `u` and model `m`; `first` takes
/// requests for model `a`, the other the rest.
fn two_categories(first: &str, second: &str) -> String {
    format!(
        r#"{{"upstreams": {{"u": {{"cluster": "c"}}}}, "models": {{"m": {{}}}},
            "categories": [
              {{"name": "{first}", "when": {{"model": {{"equals": "a"}}}}, "candidates": [{{"upstream": "u", "model": "m"}}]}},
              {{"name": "{second}", "candidates": [{{"upstream": "u", "model": "m"}}]}}],
            "default_category": "{second}"}}"#
    )
}

fn requests_counted(host: &Host, category: &str) -> u64 {
    host.counter(&format!("category=.={category};.;upstream=.=u;.;model=.=m;.;switchyard_requests_total")).unwrap_or(0)
}

#[test]
fn metrics_after_a_reload_carry_the_new_configuration_s_names() {
    // Metric ids are cached by the configuration's indexes: after a reload that reorders the
    // categories, index 0 names another category, and the counts must follow the names.
    let wasm = std::fs::read(locate::switchyard_wasm_path().expect("switchyard.wasm is built (make wasm)")).unwrap();
    let host = Host::new(&wasm).unwrap();
    let headers = [(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "x"), (":scheme", "http")];
    let send = |model: &str| {
        let mut s = host.stream().unwrap();
        let body = format!(r#"{{"model":"{model}"}}"#);
        assert!(s.request(&headers, body.as_bytes()).unwrap().forwarded());
    };
    assert!(host.configure(two_categories("alpha", "beta")).unwrap().accepted);
    send("a");
    assert_eq!((requests_counted(&host, "alpha"), requests_counted(&host, "beta")), (1, 0));

    assert!(host.configure(two_categories("beta", "alpha")).unwrap().accepted);
    send("a"); // now category 0, named beta
    send("b"); // category 1, named alpha
    send("b");
    assert_eq!((requests_counted(&host, "alpha"), requests_counted(&host, "beta")), (3, 1));
}
