//! A few hundred requests of the soak test (`make soak` sends a million): the driver, the scenario
//! and the classification keep working, and nothing is lost under the same faults.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use switchyard_host_tests::soak::{self, SoakOptions};

#[test]
fn a_short_soak_loses_nothing() {
    // The soak's faults without the stalls, which would only add their 5 s per-try timeout.
    let chaos_spec =
        "429=0.10,503=0.02,reset-before-headers=0.005,slow=0.05:300,retry-after-ms=5-10,retry-after-1s=0.0005";
    let options = SoakOptions {
        requests: 400,
        warmup: 40,
        concurrency: 8,
        timeout: Duration::from_secs(30),
        cut_rate: 0.01,
        chaos: chaos_spec.parse().unwrap(),
        chaos_spec: chaos_spec.to_owned(),
        envoy_workers: 2,
        sample_every: Duration::from_secs(3600),
        settle: Duration::from_millis(200),
        progress: false,
        ..SoakOptions::default()
    };
    let report = soak::run(&options).unwrap();
    let markdown = report.markdown();
    assert!(report.passed(), "{}\n{}\n{markdown}", report.summary(), report.examples().join("\n"));
    assert_eq!(report.sent(), 400);
    assert!(report.classes_add_up(), "{markdown}");
    assert!(report.ok() > 200, "{}", report.summary());
    for section in ["## Result", "## Latency", "## Memory", "## What Envoy counted", "## What the mock providers saw"] {
        assert!(markdown.contains(section), "no {section}:\n{markdown}");
    }
    assert!(markdown.contains("| downstream requests (`http.llm.downstream_rq_total`) | 400 |"), "{markdown}");
}
