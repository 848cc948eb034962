//! The host glue of failover: switchyard's attempt and ledger roles.
//!
//! With failover on, the front filter routes a classified request, with its plan, to an
//! in-process attempt listener, and Envoy's router retries that hop while the answers carry the
//! failover marker (`docs/failover-mechanism.md` has the Envoy configuration and why). Each try
//! runs `AttemptStream`: it takes plan entry N for attempt N, skips it at once if it is cooling
//! (no provider contacted), otherwise sends the request to that candidate's cluster with only
//! `model` changed, marks answers that should fail over, and starts cooldowns from 429s.
//! `LedgerStream`, an upstream filter on the attempts cluster, writes down every attempt's
//! candidate and status, including the ones the router discards, for the front's headers.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::config::Config;
use crate::filter::{cooling_until, log, now_ms, remove_header, set_header, start_cooldown, OWN_PREFIX};
use crate::headers::Headers;
use crate::metrics::Metrics;
use crate::plan::{self, Attempt, ATTEMPT_COUNT_HEADER, CANDIDATE_HEADER, FAILOVER_HEADER, PLAN_HEADER};
use crate::request;
use crate::route;

/// Where one attempt stands.
enum Step {
    Idle,
    /// Not a planned request: passed on untouched.
    PassThrough,
    /// Sent to candidate `index` of `category`; waiting for the body to rewrite `model`.
    Sending {
        category: usize,
        index: usize,
    },
    /// Answered by switchyard itself (skipped or no candidate left).
    Answered,
}

/// One attempt of a failover plan, in the internal attempt listener.
pub struct AttemptStream {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    step: Step,
}

impl AttemptStream {
    pub fn new(config: Option<Rc<Config>>, metrics: Rc<Metrics>) -> Self {
        AttemptStream { config, metrics, step: Step::Idle }
    }

    fn reply(&mut self, status: u32, index: Option<usize>, marker: Option<&str>, message: &str) -> Action {
        let index = index.map(|i| i.to_string());
        let mut headers = vec![("content-type", "application/json"), ("x-switchyard-error", "attempt")];
        if let Some(index) = &index {
            headers.push((CANDIDATE_HEADER, index));
        }
        if let Some(marker) = marker {
            headers.push((FAILOVER_HEADER, marker));
        }
        let body = serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": "no_candidate"}})
            .to_string();
        if let Err(status) = hostcalls::send_http_response(status, headers, Some(body.as_bytes())) {
            log(LogLevel::Error, &format!("switchyard: cannot send attempt reply: {status:?}"));
        }
        self.step = Step::Answered;
        Action::Pause
    }
}

impl Context for AttemptStream {}

impl HttpContext for AttemptStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else { return Action::Continue };
        let headers = Headers::read(MapType::HttpRequestHeaders).unwrap_or_default();
        let attempt = headers.get(ATTEMPT_COUNT_HEADER).and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
        let planned = headers.get(PLAN_HEADER).and_then(plan::decode);
        // Neither reaches the provider.
        remove_header(MapType::HttpRequestHeaders, ATTEMPT_COUNT_HEADER);
        remove_header(MapType::HttpRequestHeaders, PLAN_HEADER);
        let Some((category, order)) = planned else {
            self.step = Step::PassThrough;
            return Action::Continue;
        };
        let Some(&index) = order.get(attempt.saturating_sub(1)) else {
            // Past the plan: no marker, or the router would spend its remaining retries here.
            return self.reply(503, None, None, "switchyard: every candidate of this category was tried");
        };
        let Some(candidate) = config.categories.get(category).and_then(|c| c.candidates.get(index)).copied() else {
            return self.reply(503, None, None, "switchyard: the failover plan names no configured candidate");
        };
        if cooling_until(&config, candidate, now_ms()).is_some() {
            // Started cooling after the plan was made: skip it without contacting the provider.
            return self.reply(503, Some(index), Some(SKIP_MARKER), "switchyard: candidate is cooling down");
        }
        if let Some(upstream) = config.upstreams.get(candidate.upstream) {
            set_header(MapType::HttpRequestHeaders, &config.route_header, &upstream.cluster);
            if let Some(host) = &upstream.host {
                set_header(MapType::HttpRequestHeaders, ":authority", host);
            }
            let path = headers.get(":path").unwrap_or_default();
            if let Some(target) = request::target(&config.path_prefix, path) {
                if let Some(new_path) = route::upstream_path(&config, candidate, path, &target) {
                    set_header(MapType::HttpRequestHeaders, ":path", &new_path);
                }
            }
        }
        self.step = Step::Sending { category, index };
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Step::Sending { category, index }, Some(config)) = (&self.step, &self.config) else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let model = config
            .categories
            .get(*category)
            .and_then(|c| c.candidates.get(*index))
            .and_then(|c| config.models.get(c.model))
            .map(|m| m.provider_model.as_str());
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
        // The front already checked the body; a body that no longer parses goes on as it is.
        if let (Some(model), Ok(parsed)) = (model, request::parse(&body)) {
            if parsed.model.value != model {
                let rewritten = route::splice(&body, parsed.model.span.clone(), model);
                if let Err(status) = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &rewritten) {
                    log(LogLevel::Error, &format!("switchyard: cannot rewrite attempt body: {status:?}"));
                }
                set_header(MapType::HttpRequestHeaders, "content-length", &rewritten.len().to_string());
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Step::Sending { category, index }, Some(config)) = (&self.step, self.config.clone()) else {
            return Action::Continue;
        };
        let (category, index) = (*category, *index);
        let headers = Headers::read(MapType::HttpResponseHeaders).unwrap_or_default();
        for (name, _) in headers.iter().filter(|(name, _)| name.starts_with(OWN_PREFIX)) {
            remove_header(MapType::HttpResponseHeaders, name);
        }
        set_header(MapType::HttpResponseHeaders, CANDIDATE_HEADER, &index.to_string());
        let status = headers.get(":status").and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        let Some(failover) = &config.failover else { return Action::Continue };
        if failover.statuses.contains(&status) {
            set_header(MapType::HttpResponseHeaders, FAILOVER_HEADER, &status.to_string());
        }
        let asked_to_wait = headers.get("retry-after").is_some() || headers.get("retry-after-ms").is_some();
        if status == 429 || (failover.statuses.contains(&status) && asked_to_wait) {
            if let Some(candidate) = config.categories.get(category).and_then(|c| c.candidates.get(index)) {
                start_cooldown(&config, &self.metrics, *candidate, &headers, &failover.cooldown);
            }
        }
        Action::Continue
    }
}

/// The failover marker of the attempt role's reply for a candidate it skipped as cooling.
const SKIP_MARKER: &str = "skip";

/// The upstream filter on the attempts cluster: appends each attempt's `candidate:status` to the
/// request's filter state, where the front reads it.
pub struct LedgerStream;

impl Context for LedgerStream {}

impl HttpContext for LedgerStream {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Only response headers are read here: request headers are not reliably readable on an
        // upstream filter's response path.
        let headers = Headers::read(MapType::HttpResponseHeaders).unwrap_or_default();
        let status = headers.get(":status").and_then(|s| s.parse::<u32>().ok());
        let candidate = headers.get(CANDIDATE_HEADER).and_then(|s| s.parse::<usize>().ok());
        // The attempt role's own reply for a cooling candidate is not the provider's status.
        let skipped = headers.get(FAILOVER_HEADER) == Some(SKIP_MARKER);
        let status = if skipped { Some(plan::SKIPPED) } else { status };
        if let (Some(status), Some(candidate)) = (status, candidate) {
            let existing = hostcalls::get_property(vec![plan::LEDGER_PROPERTY]).ok().flatten();
            let existing = existing.as_deref().map(String::from_utf8_lossy);
            let record = plan::ledger_append(existing.as_deref(), Attempt { candidate, status });
            if let Err(status) = hostcalls::set_property(vec![plan::LEDGER_PROPERTY], Some(record.as_bytes())) {
                log(LogLevel::Warn, &format!("switchyard: cannot record attempt: {status:?}"));
            }
        }
        Action::Continue
    }
}
