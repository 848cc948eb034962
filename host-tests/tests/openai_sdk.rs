//! The README's "Reading cost in your app" Python snippet, run with the real `openai` package from
//! PyPI against the demo Envoy: what the README shows is what works.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::Command;

use switchyard_host_tests::envoy::workspace_root;
use switchyard_host_tests::scenario::Scenario;

#[test]
fn readme_python_snippet_reads_cost_with_the_openai_sdk() {
    let root = workspace_root();
    let snippet = std::fs::read_to_string(root.join("examples/read_cost.py")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains(snippet.trim()), "README.md must show examples/read_cost.py verbatim");

    let python = root.join(".venv/bin/python");
    let has_openai = Command::new(&python).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    assert!(has_openai, "the openai package is missing from .venv: run `make envoy` (it installs it)");

    let s = Scenario::start("demo", 3).unwrap();
    let out = Command::new(&python)
        .arg(root.join("examples/read_cost.py"))
        .env("SWITCHYARD_BASE_URL", format!("{}/v1", s.envoy.base_url()))
        .env_remove("OPENAI_BASE_URL")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // The mock reports a quarter of the request body length as input tokens and 12 output tokens.
    let sent = s.provider("provider_a").unwrap().requests();
    assert_eq!(sent.len(), 2);
    let input = |i: usize| (sent[i].body.len() / 4) as u64;
    let cost = |input: u64| {
        let femtos = u128::from(input) * 150_000_000 + 12 * 600_000_000;
        format!("0.{:015}", femtos).trim_end_matches('0').to_owned()
    };
    assert!(stdout.contains("category: extraction model: gpt-4o-mini"), "{stdout}");
    assert!(stdout.contains(&format!("cost USD: {} tokens in/out: {} 12", cost(input(0)), input(0))), "{stdout}");
    assert!(
        stdout.contains(&format!("stream cost USD: {} tokens in/out: {} 12", cost(input(1)), input(1))),
        "{stdout}"
    );
    assert!(stdout.contains("hello from provider_a as gpt-4o-mini"), "{stdout}");
}
