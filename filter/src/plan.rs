//! The failover plan and the record of its attempts, as they travel between switchyard's roles.
//!
//! With failover on, the front filter decides the order of candidates once (`encode` into the
//! `x-switchyard-plan` request header); Envoy's router retries through the internal attempt
//! listener, where the attempt role takes plan entry N for attempt N. Each attempt's answer names
//! its candidate (`x-switchyard-candidate`) and, when it should fail over, carries the
//! `x-switchyard-failover` marker that the route's retry policy matches. The ledger role appends
//! `candidate:status` for every attempt to filter state, which the front reads to build
//! `x-switchyard-attempts` and `x-switchyard-failover-from`. These are plain string formats; the
//! host glue moves them.

use crate::config::Config;

/// Request header: the plan, `category;i,j,k` (indexes into the category's candidates).
pub const PLAN_HEADER: &str = "x-switchyard-plan";
/// Response header: which plan candidate (index into the category's candidates) answered.
pub const CANDIDATE_HEADER: &str = "x-switchyard-candidate";
/// Response header the route's retry policy matches: this answer should fail over.
pub const FAILOVER_HEADER: &str = "x-switchyard-failover";
/// Filter state the ledger writes: `i:status,j:status`.
pub const LEDGER_PROPERTY: &str = "switchyard_attempts";
/// Envoy's attempt counter header (`include_request_attempt_count`), 1 for the first attempt.
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";

pub fn encode(category: usize, plan: &[usize]) -> String {
    let list: Vec<String> = plan.iter().map(usize::to_string).collect();
    format!("{category};{}", list.join(","))
}

pub fn decode(value: &str) -> Option<(usize, Vec<usize>)> {
    let (category, list) = value.split_once(';')?;
    let plan = list.split(',').map(|i| i.trim().parse().ok()).collect::<Option<Vec<usize>>>()?;
    Some((category.trim().parse().ok()?, plan))
}

/// One attempt as the ledger saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub candidate: usize,
    /// The answer's status, or [`SKIPPED`].
    pub status: u32,
}

/// The status of an attempt the attempt role skipped because its candidate was cooling: the
/// provider was never asked. Written `cooling` in the ledger, headers and metric labels.
pub const SKIPPED: u32 = 0;

impl Attempt {
    /// The status as headers and metric labels show it: `429`, `503`, ... or `cooling`.
    pub fn outcome(&self) -> String {
        if self.status == SKIPPED {
            "cooling".to_owned()
        } else {
            self.status.to_string()
        }
    }
}

pub fn ledger_append(existing: Option<&str>, attempt: Attempt) -> String {
    let entry = format!("{}:{}", attempt.candidate, attempt.outcome());
    match existing.filter(|e| !e.is_empty()) {
        Some(existing) => format!("{existing},{entry}"),
        None => entry,
    }
}

/// The ledger's attempts, oldest first; entries that do not parse are skipped.
pub fn ledger_parse(value: &str) -> Vec<Attempt> {
    value
        .split(',')
        .filter_map(|entry| {
            let (candidate, status) = entry.split_once(':')?;
            let status = match status.trim() {
                "cooling" => SKIPPED,
                other => other.parse().ok().filter(|s| *s != SKIPPED)?,
            };
            Some(Attempt { candidate: candidate.trim().parse().ok()?, status })
        })
        .collect()
}

/// `upstream/model` of a category's candidate, for headers and metrics.
pub fn candidate_name(config: &Config, category: usize, candidate: usize) -> Option<String> {
    let cand = config.categories.get(category)?.candidates.get(candidate)?;
    let upstream = &config.upstreams.get(cand.upstream)?.name;
    let model = &config.models.get(cand.model)?.provider_model;
    Some(format!("{upstream}/{model}"))
}

/// `x-switchyard-failover-from`: the attempts that failed before the answer, as
/// `upstream/model=status`, comma-separated; `None` when the first attempt answered.
pub fn failover_from(config: &Config, category: usize, failed: &[Attempt]) -> Option<String> {
    let names: Vec<String> = failed
        .iter()
        .filter_map(|a| Some(format!("{}={}", candidate_name(config, category, a.candidate)?, a.outcome())))
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plans_round_trip() {
        assert_eq!(encode(3, &[0, 2]), "3;0,2");
        assert_eq!(decode("3;0,2"), Some((3, vec![0, 2])));
        assert_eq!(decode(" 1 ; 4 "), Some((1, vec![4])));
        for bad in ["", "3", "3;", "x;1", "1;a", "1;1,,2"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn ledger_records_in_order() {
        let first = ledger_append(None, Attempt { candidate: 0, status: 429 });
        let both = ledger_append(Some(&first), Attempt { candidate: 1, status: 200 });
        assert_eq!(both, "0:429,1:200");
        assert_eq!(
            ledger_parse(&both),
            vec![Attempt { candidate: 0, status: 429 }, Attempt { candidate: 1, status: 200 }]
        );
        assert_eq!(ledger_parse("garbage,2:503,:"), vec![Attempt { candidate: 2, status: 503 }]);
        assert_eq!(ledger_append(Some(""), Attempt { candidate: 1, status: 200 }), "1:200");
        let skipped = ledger_append(None, Attempt { candidate: 0, status: SKIPPED });
        assert_eq!(skipped, "0:cooling");
        assert_eq!(
            ledger_parse(&ledger_append(Some(&skipped), Attempt { candidate: 1, status: 200 })),
            vec![Attempt { candidate: 0, status: SKIPPED }, Attempt { candidate: 1, status: 200 }]
        );
        assert_eq!(ledger_parse("0:0"), vec![]);
    }

    #[test]
    fn failover_from_names_upstream_and_model() {
        let config = crate::config::from_value(json!({
            "upstreams": {"a": {"cluster": "ca"}, "b": {"cluster": "cb"}},
            "models": {"m1": {}, "m2": {"provider_model": "vendor/m2"}},
            "categories": [{"name": "k", "candidates": [{"upstream": "a", "model": "m1"}, {"upstream": "b", "model": "m2"}]}],
            "default_category": "k"
        }))
        .unwrap();
        let failed = [Attempt { candidate: 0, status: 429 }, Attempt { candidate: 1, status: 503 }];
        assert_eq!(failover_from(&config, 0, &failed).as_deref(), Some("a/m1=429,b/vendor/m2=503"));
        assert_eq!(failover_from(&config, 0, &[]), None);
        assert_eq!(candidate_name(&config, 0, 9), None);
    }
}
