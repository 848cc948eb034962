//! switchyard's Envoy stats: names, labels, and the hostcalls that define and update them.
//!
//! The proxy-wasm ABI has no labels: a metric is a flat name. switchyard encodes each label into
//! the name the way Istio does (`category=.=fraud;.;`), in front of the metric's own name, so
//! that Envoy's `stats_tags` (one regex per label, listed in the README and in
//! `envoy/demo/envoy.yaml`) turn them into Prometheus labels and leave the bare metric name:
//! `switchyard_requests_total{category="fraud",upstream="anthropic",model="claude-sonnet-4-5"}`.
//! Without those `stats_tags` the stats still exist, with the labels inside their names.
//!
//! Metric ids are per VM and defined on first use. A per-route metric's id is cached by what names
//! it (the metric, the route's indexes in the configuration, the extra label), so the hot path
//! neither formats nor hashes the full name; one `Metrics` therefore serves one configuration (the
//! root context starts a new one with each configuration it loads). A failed hostcall only costs the
//! data point, never the request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// The labels every per-route metric carries, with the indexes in the configuration that name them.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub category: &'a str,
    pub upstream: &'a str,
    pub model: &'a str,
    /// Category, upstream and model indexes: within one configuration, the same as the names.
    pub index: [usize; 3],
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

/// The metric ids one VM has defined for one configuration.
#[derive(Default)]
pub struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
    route_ids: RefCell<HashMap<RouteMetric, u32, BuildHasherDefault<WordHasher>>>,
}

/// What names a per-route metric within one configuration. The metric's base name and its extra
/// label are `'static` strings, known by address and length (equal pairs are equal texts; the same
/// text at two addresses only costs a second cache entry for the same id).
#[derive(Clone, Copy, PartialEq, Eq)]
struct RouteMetric {
    base: (usize, usize),
    index: [usize; 3],
    extra_key: (usize, usize),
    extra_value: (usize, usize),
}

impl Hash for RouteMetric {
    /// The words that tell metrics apart in practice: the base name's and the extra label value's
    /// addresses and the route's indexes packed into one word (equal keys still compare every
    /// field). The derived hash writes the index array as bytes, which [`WordHasher`] takes one
    /// byte at a time.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [category, upstream, model] = self.index;
        let route = (category << 20) ^ (upstream << 10) ^ model;
        for word in [self.base.0, route, self.extra_value.0] {
            state.write_usize(word);
        }
    }
}

fn identity(text: &'static str) -> (usize, usize) {
    (text.as_ptr() as usize, text.len())
}

impl RouteMetric {
    fn new(base: &'static str, index: [usize; 3], extra: Option<(&'static str, &'static str)>) -> Self {
        let (extra_key, extra_value) = extra.map_or(((0, 0), (0, 0)), |(k, v)| (identity(k), identity(v)));
        RouteMetric { base: identity(base), index, extra_key, extra_value }
    }
}

/// A multiply-rotate hasher for keys made of machine words (the cache above): a few instructions
/// per word where SipHash would cost more than the hostcall it saves.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

/// A metric's id from `ids`, or defined under `name(&key)` and remembered on first use.
fn cached<K: Eq + Hash, S: BuildHasher>(
    ids: &RefCell<HashMap<K, u32, S>>,
    key: K,
    kind: MetricType,
    name: impl FnOnce(&K) -> String,
) -> Option<u32> {
    if let Some(id) = ids.borrow().get(&key) {
        return Some(*id);
    }
    let id = hostcalls::define_metric(kind, &name(&key)).ok()?;
    ids.borrow_mut().insert(key, id);
    Some(id)
}

/// Adds `by` to the counter `id` names; a zero adds nothing and defines nothing.
fn increment(by: u64, id: impl FnOnce() -> Option<u32>) {
    if by == 0 {
        return;
    }
    if let Some(id) = id() {
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
}

fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}

impl Metrics {
    fn id(&self, kind: MetricType, name: String) -> Option<u32> {
        cached(&self.ids, name, kind, String::clone)
    }

    pub fn count(&self, base: &str, labels: &[(&str, &str)], by: u64) {
        increment(by, || self.id(MetricType::Counter, stat_name(base, labels)));
    }

    pub fn record(&self, base: &str, labels: &[(&str, &str)], value: u64) {
        record(self.id(MetricType::Histogram, stat_name(base, labels)), value);
    }

    /// Sets a gauge. Every worker's VM reports under the same name: the value is the last report.
    pub fn gauge(&self, base: &str, value: u64) {
        record(self.id(MetricType::Gauge, stat_name(base, &[])), value);
    }

    /// The id of a per-route metric, defined on first use.
    fn route_id(
        &self,
        kind: MetricType,
        base: &'static str,
        route: Route<'_>,
        extra: Option<(&'static str, &'static str)>,
    ) -> Option<u32> {
        let key = RouteMetric::new(base, route.index, extra);
        cached(&self.route_ids, key, kind, |_| stat_name(base, &route.labels(extra.as_slice())))
    }

    /// Adds `by` to a per-route counter, labelled with the route and `extra`.
    pub fn route(&self, base: &'static str, route: Route<'_>, extra: Option<(&'static str, &'static str)>, by: u64) {
        increment(by, || self.route_id(MetricType::Counter, base, route, extra));
    }

    /// Records `value` in a per-route histogram, labelled with the route and `extra`.
    pub fn route_histogram(
        &self,
        base: &'static str,
        route: Route<'_>,
        extra: Option<(&'static str, &'static str)>,
        value: u64,
    ) {
        record(self.route_id(MetricType::Histogram, base, route, extra), value);
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
