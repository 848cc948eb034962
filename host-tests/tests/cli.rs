//! `switchyard-host`, the operator's check before a rollout, run as a program: a small configuration
//! and a JSONL file of three requests (two categories and a bad body), in the readable report and
//! with `--json`; a refused configuration exits 2 with switchyard's message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use switchyard_host_tests::harness::locate;

const CONFIG: &str = r#"{
  "upstreams": {
    "openai": {"cluster": "provider_a"},
    "anthropic": {"cluster": "provider_b", "host": "api.anthropic.com"}
  },
  "models": {
    "gpt-4o-mini": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.60},
    "claude-sonnet-4-5": {"input_usd_per_1m": 3, "output_usd_per_1m": 15}
  },
  "categories": [
    {"name": "fraud-review", "when": {"header": {"name": "x-team", "equals": "risk"}},
     "candidates": [{"upstream": "anthropic", "model": "claude-sonnet-4-5"}]},
    {"name": "general", "candidates": [{"upstream": "openai", "model": "gpt-4o-mini"}]}
  ],
  "default_category": "general"
}"#;

const REQUESTS: &str = r#"# two categories and a bad body
{"headers": {"x-team": "risk"}, "body": {"model": "auto",  "messages": [{"role": "user", "content": "refund?"}]}}
{"path": "/v1/chat/completions", "body": {"model":"auto","messages":[{"role":"user","content":"hi"}]}}

{"body_text": "{\"model\": \"auto\", "}
"#;

/// A fresh directory with the config and the requests.
fn files(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    std::fs::write(dir.join("requests.jsonl"), REQUESTS).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let wasm = locate::switchyard_wasm_path().expect(
        "switchyard.wasm not found: build it with `cargo build --release --target wasm32-wasip1 -p switchyard-filter`",
    );
    Command::new(env!("CARGO_BIN_EXE_switchyard-host"))
        .arg("--wasm")
        .arg(wasm)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn prints_the_route_decision_for_each_request() {
    let dir = files("human");
    let out = run(&dir, &["--config", "config.json", "--jsonl", "requests.jsonl", "--answer-usage", "1000,200"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let blocks: Vec<&str> = stdout.split("\n\n").filter(|b| !b.trim().is_empty()).collect();
    assert_eq!(blocks.len(), 3, "{stdout}");

    let fraud = blocks[0];
    assert!(fraud.starts_with("#1 POST /v1/chat/completions"), "{fraud}");
    assert!(
        fraud.contains("routed    category fraud-review, upstream anthropic, model auto -> claude-sonnet-4-5"),
        "{fraud}"
    );
    assert!(fraud.contains("cluster   provider_b"), "{fraud}");
    assert!(fraud.contains("upstream  POST /v1/chat/completions (host api.anthropic.com)"), "{fraud}");
    // The body as sent upstream: only `model` changed, the client's spacing kept.
    assert!(
        fraud.contains(
            r#"body      {"model": "claude-sonnet-4-5",  "messages": [{"role": "user", "content": "refund?"}]}"#
        ),
        "{fraud}"
    );
    // 1000 in × 3 + 200 out × 15 per million = 0.006 USD.
    assert!(fraud.contains("x-switchyard-cost-usd: 0.006\n"), "{fraud}");
    assert!(fraud.contains("x-switchyard-input-tokens: 1000"), "{fraud}");

    let general = blocks[1];
    assert!(general.contains("routed    category general, upstream openai, model auto -> gpt-4o-mini"), "{general}");
    assert!(general.contains("cluster   provider_a"), "{general}");
    assert!(general.contains(r#"body      {"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#));
    // 1000 × 0.15 + 200 × 0.60 per million = 0.00027 USD.
    assert!(general.contains("x-switchyard-cost-usd: 0.00027"), "{general}");

    let bad = blocks[2];
    assert!(bad.starts_with("#3 POST /v1/chat/completions"), "{bad}");
    assert!(bad.contains("refused   400 invalid_json: request body is not valid JSON"), "{bad}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn json_lines_carry_the_same_decisions() {
    let dir = files("json");
    let out = run(&dir, &["--config", "config.json", "--jsonl", "requests.jsonl", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");

    assert_eq!(lines[0]["decision"], "routed");
    assert_eq!(lines[0]["cluster"], "provider_b");
    assert_eq!(lines[0]["upstream_request"]["authority"], "api.anthropic.com");
    assert_eq!(lines[0]["upstream_request"]["headers"]["x-switchyard-cluster"], "provider_b");
    assert_eq!(lines[0]["answer"]["headers"]["x-switchyard-category"], "fraud-review");
    assert_eq!(lines[0]["answer"]["headers"]["x-switchyard-cost-status"], "ok");

    assert_eq!(lines[1]["cluster"], "provider_a");
    assert_eq!(
        lines[1]["upstream_request"]["body"],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#
    );
    assert_eq!(lines[1]["upstream_request"]["body_changed"], true);
    assert_eq!(lines[1]["answer"]["headers"]["x-switchyard-model"], "gpt-4o-mini");

    assert_eq!(lines[2]["decision"], "refused");
    assert_eq!(lines[2]["refusal"]["status"], 400);
    assert_eq!(lines[2]["refusal"]["body"]["error"]["code"], "invalid_json");
    assert!(lines[2].get("upstream_request").is_none());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_refused_configuration_exits_2_with_switchyards_message() {
    let dir = files("refused");
    std::fs::write(dir.join("bad.json"), CONFIG.replace(r#""upstream": "openai""#, r#""upstream": "nowhere""#))
        .unwrap();
    let out = run(&dir, &["--config", "bad.json", "--jsonl", "requests.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("categories[1].candidates[0].upstream: unknown upstream `nowhere`"), "{stderr}");
    assert!(out.stdout.is_empty());
    std::fs::remove_dir_all(dir).ok();
}
