//! Differential tests: each scenario below is defined once, as data, and run both in a real Envoy
//! 1.40 (switchyard.wasm in front of the mock providers, through a relay that records the provider's
//! answer) and in the wasmtime harness (same module, same plugin configuration bytes, the provider's
//! recorded answer replayed byte for byte). The observable outcomes must be equal: the client's
//! status, content type, `x-switchyard-*` response headers and (where the listener passes them)
//! trailers, the body the client received (streams: the data events concatenated), and what the
//! provider received — cluster, method, path, `Host`, `content-length`, `x-switchyard-*` headers
//! and the body byte for byte — and the counters the filter moved. Latency figures are compared for
//! presence only (the harness's clock is frozen). See `switchyard_host_tests::differential` for how the runs are made fair.
//!
//! Scenarios (`demo` = `envoy/demo/envoy.yaml`, 6 categories; `json` = `envoy/json-config/envoy.yaml`):
//!
//! | scenario | Envoy file | what it covers |
//! |---|---|---|
//! | `route_extraction_by_model_glob` | demo | category `extraction` → provider_a, `model` spliced, cost headers |
//! | `route_fraud_review_by_header` | demo | `x-team: risk` → provider_b; odd whitespace and unknown fields kept |
//! | `route_fraud_review_by_keyword_responses_api` | demo | keyword rule on `/v1/responses` |
//! | `route_embeddings_by_path` | demo | `/v1/embeddings` → provider_c, input-only pricing |
//! | `route_long_context_by_tokens` | demo | a 36 KB prompt → `long-context` |
//! | `route_general_by_default` | demo | no rule matches → `general` |
//! | `route_completions_api` | demo | `/v1/completions` → `extraction` |
//! | `pass_through_other_path` | demo | `/v1/files`, binary body: byte-identical, no `x-switchyard-*` |
//! | `pass_through_get_strips_upstream_headers` | demo | `GET /v1/models`, upstream's `x-switchyard-model` removed |
//! | `bad_json_is_refused` | demo | 400 `invalid_json`, nothing forwarded |
//! | `missing_model_is_refused` | demo | 400 `missing_model` |
//! | `invalid_utf8_is_refused` | demo | 400 `invalid_utf8` |
//! | `spoofed_route_header_is_ignored` | demo | client `x-switchyard-cluster`/`-category`/`-cost-usd` removed |
//! | `upstream_cost_header_is_stripped` | demo | provider's `x-switchyard-cost-usd` replaced by switchyard's |
//! | `cost_headers_with_cached_and_reasoning_tokens` | demo | usage 1000/500/200 cached/40 reasoning |
//! | `unpriced_model_costs_unknown` | demo | `llama-*` → `experimental`, cost `unknown` / `unpriced` |
//! | `answer_without_usage_costs_unknown` | demo | cost `unknown` / `no-usage` |
//! | `upstream_503_passes_unpriced` | demo | error answers pass untouched, routing headers only |
//! | `stream_with_injected_usage` | demo | `include_usage` added upstream, usage chunk and `"usage":null` removed, trailers |
//! | `stream_with_requested_usage` | demo | usage chunk gets `usage.cost` and `switchyard` member |
//! | `stream_completions_with_injected_usage` | demo | the same for `/v1/completions` |
//! | `stream_responses_api_is_priced` | demo | `response.completed` priced, events unchanged |
//! | `body_over_envoy_buffer_limit` | demo | 2 MiB body, its first 64 KiB sent alone: Envoy's own plain 413 (switchyard still counts its refusal) |
//! | `body_over_switchyard_limit` | json | 8 KiB body > `max_request_bytes` 4096: switchyard's 413 |
//! | `json_prefix_default_category_with_query` | json | `/llm` prefix dropped, query kept, `bulk` |
//! | `json_category_hint_rewrites_path_and_host` | json | hint → `premium`, `base_path` and `host` rewrites |
//! | `json_unknown_category_hint_is_refused` | json | 400 `unknown_category` |
//! | `json_answer_over_hold_limit_is_unpriced` | json | answer > `max_response_bytes` 256: `too-large` |
//! | `json_path_without_prefix_passes_through` | json | `/v1/...` without the prefix is not inspected |
//!
//! The scenarios themselves are data in `switchyard_host_tests::differential::cases` (the
//! harness-only run in `tests/harness_switchyard.rs` uses the same list). One test per Envoy file
//! runs its scenarios on one Envoy, one after another, each in a fresh harness host; the tests run
//! in parallel. Each prints how long the Envoy part and the harness part took
//! (`cargo test --test differential -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use switchyard_host_tests::differential::{self, cases, Env, EnvoyRig, DEMO_CONFIG};
use switchyard_host_tests::scenario::Scenario;

/// Runs every scenario of `env` on one Envoy (in table order) and in the harness; reports every
/// scenario where the two differ, or whose outcome is not the one it means.
fn check(env: Env) {
    let wasm = differential::wasm().unwrap();
    let t = Instant::now();
    let rig = EnvoyRig::start(env).unwrap();
    let start_time = t.elapsed();
    let (mut envoy_time, mut harness_time) = (Duration::ZERO, Duration::ZERO);
    let mut failures = Vec::new();
    let env_cases: Vec<_> = cases().into_iter().filter(|c| c.env == env).collect();
    for case in &env_cases {
        let name = case.name;
        let c = match differential::compare(&rig, &wasm, case) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("scenario {name}: {e:#}"));
                continue;
            }
        };
        envoy_time += c.envoy_time;
        harness_time += c.harness_time;
        println!("{name}: Envoy {:?}, harness {:?}", c.envoy_time, c.harness_time);
        if c.harness != c.envoy {
            failures.push(format!(
                "scenario {name}: the harness and Envoy differ; the harness is wrong\n harness: {:?}\n   Envoy: {:?}",
                c.harness, c.envoy
            ));
        } else if let Err(e) = differential::expect(case, &c.envoy) {
            failures.push(format!("scenario {name}: {e:#}"));
        }
    }
    println!(
        "{} {} scenarios: Envoy start {start_time:?}, requests through Envoy {envoy_time:?}, harness {harness_time:?}",
        env_cases.len(),
        env.scenario()
    );
    assert!(env_cases.len() >= 5, "too few {} scenarios", env.scenario());
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn demo_scenarios_agree_in_envoy_and_the_harness() {
    check(Env::Demo);
}

#[test]
fn json_config_scenarios_agree_in_envoy_and_the_harness() {
    check(Env::JsonConfig);
}

#[test]
fn scenarios_are_unique_and_listed_above() {
    let mut names: Vec<&str> = cases().iter().map(|c| c.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate scenario names");
    assert!(n >= 12);
    let listed: Vec<&str> =
        include_str!("differential.rs").lines().filter_map(|l| l.strip_prefix("//! | `")?.split('`').next()).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, names, "the table at the top of this file must list every scenario");
}

/// The JSON the demo runs with in these tests is what Envoy makes of the demo's native YAML.
#[test]
fn demo_json_config_is_the_demo_yaml_config() {
    let s = Scenario::start("demo", 3).unwrap();
    let dump: serde_json::Value = serde_json::from_str(&s.envoy.admin_get("/config_dump").unwrap()).unwrap();
    let mut found = Vec::new();
    find_wasm_configuration(&dump, &mut found);
    // The listener appears more than once in the dump (static and active); its filter is one.
    found.dedup();
    assert_eq!(found.len(), 1, "{found:?}");
    let from_yaml = normalise(&found[0]);
    let ours = normalise(&serde_json::from_str(DEMO_CONFIG).unwrap());
    assert_eq!(ours, from_yaml);
}

fn find_wasm_configuration(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(config), Some(_)) = (m.get("configuration"), m.get("vm_config")) {
                if let Some(value) = config.get("value") {
                    out.push(value.clone());
                }
            }
            m.values().for_each(|x| find_wasm_configuration(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| find_wasm_configuration(x, out)),
        _ => {}
    }
}

/// Numbers as f64 (Struct values are doubles; Envoy may print `0.60` as a string).
fn normalise(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::String(s) => match s.parse::<f64>() {
            Ok(f) if s.chars().all(|c| c.is_ascii_digit() || c == '.') => serde_json::json!(f),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), normalise(x))).collect()),
        _ => v.clone(),
    }
}
