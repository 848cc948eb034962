//! switchyard's Envoy stats: names, labels, and the hostcalls that define and update them.
//!
//! The proxy-wasm ABI has no labels: a metric is a flat name. switchyard encodes each label into
//! the name the way Istio does (`category=.=fraud;.;`), in front of the metric's own name, so
//! that Envoy's `stats_tags` (one regex per label, listed in the README and in
//! `envoy/demo/envoy.yaml`) turn them into Prometheus labels and leave the bare metric name:
//! `switchyard_requests_total{category="fraud",upstream="anthropic",model="claude-sonnet-4-5"}`.
//! Without those `stats_tags` the stats still exist, with the labels inside their names.
//!
//! Metric ids are per VM and defined on first use; the id is cached by full name. A failed hostcall
//! only costs the data point, never the request.

use std::cell::RefCell;
use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// The labels every per-route metric carries.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub category: &'a str,
    pub upstream: &'a str,
    pub model: &'a str,
}

impl<'a> Route<'a> {
    /// The route's labels followed by `extra`.
    fn labels(self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut labels = vec![("category", self.category), ("upstream", self.upstream), ("model", self.model)];
        labels.extend_from_slice(extra);
        labels
    }
}

/// The full stat name for `base` with `labels`, in the form `stats_tags` take apart.
pub fn stat_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len() + labels.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>());
    for (key, value) in labels {
        name.push_str(key);
        name.push_str("=.=");
        // `;` ends a label value and `.` separates Envoy's name segments in some sinks.
        name.extend(value.chars().map(|c| if c == ';' { '_' } else { c }));
        name.push_str(";.;");
    }
    name.push_str(base);
    name
}

/// The metric ids one VM has defined.
#[derive(Default)]
pub struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
}

impl Metrics {
    fn id(&self, kind: MetricType, name: String) -> Option<u32> {
        if let Some(id) = self.ids.borrow().get(&name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, &name).ok()?;
        self.ids.borrow_mut().insert(name, id);
        Some(id)
    }

    pub fn count(&self, base: &str, labels: &[(&str, &str)], by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.id(MetricType::Counter, stat_name(base, labels)) {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    pub fn record(&self, base: &str, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, stat_name(base, labels)) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Sets a gauge. Every worker's VM reports under the same name: the value is the last report.
    pub fn gauge(&self, base: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, stat_name(base, &[])) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    pub fn route(&self, base: &str, route: Route<'_>, extra: &[(&str, &str)], by: u64) {
        self.count(base, &route.labels(extra), by);
    }

    pub fn route_histogram(&self, base: &str, route: Route<'_>, extra: &[(&str, &str)], value: u64) {
        self.record(base, &route.labels(extra), value);
    }
}

/// Counter: inspected requests routed, by category/upstream/model.
pub const REQUESTS: &str = "switchyard_requests_total";
/// Counter: answers by status class (`2xx`, `4xx`, ...).
pub const RESPONSES: &str = "switchyard_responses_total";
/// Counter: tokens by `token_type` (`input`, `output`, `cached_input`, `reasoning`).
pub const TOKENS: &str = "switchyard_tokens_total";
/// Counter: cost in nano-dollars (1e-9 USD), rounded per answer.
pub const COST: &str = "switchyard_cost_nanousd_total";
/// Counter: answers whose cost is unknown, by `reason` (`unpriced`, `no-usage`, `too-large`).
pub const UNPRICED: &str = "switchyard_unpriced_total";
/// Counter: requests switchyard answered itself, by error `code`.
pub const REFUSED: &str = "switchyard_refused_total";
/// Counter: failovers by `category`, `from` and `to` (`upstream/model`) and trigger `status`.
pub const FAILOVERS: &str = "switchyard_failovers_total";
/// Counter: cooldowns started (or extended) by rate-limited answers, by `upstream` and `model`.
pub const COOLDOWNS: &str = "switchyard_cooldowns_total";
/// Histogram (ms): request forwarded → answer complete (OpenTelemetry `gen_ai.server.request.duration`).
pub const REQUEST_DURATION: &str = "switchyard_gen_ai_server_request_duration_ms";
/// Histogram (ms): request forwarded → first body byte of a streamed answer
/// (OpenTelemetry `gen_ai.server.time_to_first_token`).
pub const TIME_TO_FIRST_TOKEN: &str = "switchyard_gen_ai_server_time_to_first_token_ms";
/// Histogram (ms): request forwarded → response headers.
pub const UPSTREAM_LATENCY: &str = "switchyard_upstream_ms";
/// Gauge (bytes): the size of the reporting VM's linear memory, every few seconds.
pub const VM_MEMORY: &str = "switchyard_vm_memory_bytes";
/// Histogram (tokens per answer) by `token_type` (OpenTelemetry `gen_ai.client.token.usage`).
pub const TOKEN_USAGE: &str = "switchyard_gen_ai_client_token_usage";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_first_in_the_istio_form() {
        assert_eq!(
            stat_name(REQUESTS, &[("category", "fraud"), ("model", "a;b.c")]),
            "category=.=fraud;.;model=.=a_b.c;.;switchyard_requests_total"
        );
        assert_eq!(stat_name(REFUSED, &[]), "switchyard_refused_total");
    }
}
