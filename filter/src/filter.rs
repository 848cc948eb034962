//! The host glue: proxy-wasm contexts that feed Envoy's callbacks into the decision core.
//!
//! This is the only module (with `metrics`) that talks to Envoy. Every hostcall goes through
//! `proxy_wasm::hostcalls` and a failed call becomes a logged error, never a panic: a panic would
//! take down the VM for every request on the worker. A request's life is the `Stage` enum, and
//! `Stage::action` is the one place where it turns into the `Action` Envoy sees.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};

use crate::answer::{self, Priced, StreamedAnswer, Timing};
use crate::config::{self, Candidate, Config, Role, CATEGORY_HINT_HEADER};
use crate::cooldown::{self, CasMismatch, Cooldowns, SharedStore};
use crate::failover::{AttemptStream, LedgerStream};
use crate::headers::Headers;
use crate::metrics::{self, Metrics};
use crate::plan;
use crate::request::{self, Endpoint};
use crate::route::{self, Decision, Refusal, UsageChunk};
use crate::text::{decimal, needs_json_escape, push_decimal, push_json_string};

/// The prefix of every header switchyard owns; clients and upstreams may not send these.
pub(crate) const OWN_PREFIX: &str = "x-switchyard-";
/// Filter state with a request's figures, for the access log: `%FILTER_STATE(wasm.switchyard:PLAIN)%`.
const ACCESS_LOG_PROPERTY: &str = "switchyard";

pub(crate) fn log(level: LogLevel, message: &str) {
    // Logging is best effort: there is nowhere else to report a failure to log.
    let _ = hostcalls::log(level, message);
}

/// Milliseconds on Envoy's clock.
pub(crate) fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One per plugin configuration (and per worker): holds the compiled config.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log(LogLevel::Error, &format!("switchyard: cannot read plugin configuration: {status:?}"));
                return false;
            }
        };
        // The plugin's root_id names the role when the configuration does not.
        let root_id = hostcalls::get_property(vec!["plugin_root_id"]).ok().flatten().unwrap_or_default();
        let role = match root_id.as_slice() {
            b"switchyard_attempt" => Role::Attempt,
            b"switchyard_ledger" => Role::Ledger,
            _ => Role::Front,
        };
        match config::load_as(&bytes, role) {
            Ok(config) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "switchyard: configuration loaded ({:?}): {} categories, {} upstreams, {} models",
                        config.role,
                        config.categories.len(),
                        config.upstreams.len(),
                        config.models.len()
                    ),
                );
                self.config = Some(Rc::new(config));
                // Per-route metric ids are cached by the configuration's indexes: a new
                // configuration starts a new cache (streams in flight keep theirs).
                self.metrics = Rc::new(Metrics::default());
                // The VM's memory, now and every few seconds (`switchyard_vm_memory_bytes`).
                self.report_memory();
                if let Err(status) = hostcalls::set_tick_period(MEMORY_REPORT_PERIOD) {
                    log(LogLevel::Warn, &format!("switchyard: cannot set a tick period: {status:?}"));
                }
                true
            }
            Err(err) => {
                // A rejected reload keeps the previous configuration in `self.config`.
                log(LogLevel::Error, &err.to_string());
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.report_memory();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Envoy only creates streams once `on_configure` succeeded; without a config (never
        // expected) the stream passes everything through rather than fail.
        match self.config.as_ref().map(|c| c.role) {
            Some(Role::Attempt) => {
                return Some(Box::new(AttemptStream::new(self.config.clone(), Rc::clone(&self.metrics))))
            }
            Some(Role::Ledger) => return Some(Box::new(LedgerStream)),
            _ => {}
        }
        Some(Box::new(Stream {
            config: self.config.clone(),
            metrics: Rc::clone(&self.metrics),
            started_ms: 0,
            stage: Stage::Idle,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// How often each root context reports its VM's memory.
const MEMORY_REPORT_PERIOD: Duration = Duration::from_secs(5);

impl Root {
    fn report_memory(&self) {
        if let Some(bytes) = vm_memory_bytes() {
            self.metrics.gauge(metrics::VM_MEMORY, bytes);
        }
    }
}

/// The size of the VM's linear memory (it only grows): what the VM holds for its requests, its
/// configuration and its allocator's free space.
#[cfg(target_arch = "wasm32")]
fn vm_memory_bytes() -> Option<u64> {
    let pages = u64::try_from(core::arch::wasm32::memory_size(0)).ok()?;
    pages.checked_mul(65_536)
}

#[cfg(not(target_arch = "wasm32"))]
fn vm_memory_bytes() -> Option<u64> {
    None
}

/// Where a request is in its life.
enum Stage {
    /// Headers not seen yet.
    Idle,
    /// Not an inspected endpoint: forwarded untouched.
    PassThrough,
    /// Waiting for the whole body of an inspected request.
    Inspecting(Pending),
    /// Sent upstream to a candidate.
    Routed(Box<Routed>),
    /// Answered by switchyard itself; the local reply is on its way.
    Refused,
}

struct Pending {
    path: String,
    endpoint: Endpoint,
    query: String,
    headers: Headers,
    hint: Option<String>,
}

struct Routed {
    category: usize,
    upstream: usize,
    model: usize,
    usage_chunk: UsageChunk,
    forwarded_ms: u64,
    upstream_ms: Option<u64>,
    ttft_ms: Option<u64>,
    answer: Answer,
    /// Figures recorded once, when the answer is complete (or the stream ends early).
    finished: bool,
    /// Candidates tried (1 without failover).
    attempts: usize,
}

/// What switchyard is doing with the upstream's answer.
enum Answer {
    /// Response headers not seen yet.
    Awaiting,
    /// A non-streaming answer whose headers are held until its body is whole, to be priced.
    Held,
    /// A streamed answer, followed event by event.
    Streaming(StreamedAnswer),
    /// An answer switchyard does not price (an error status, or too large to hold).
    Passing,
}

/// What the stage means for Envoy's filter iteration, given the callback that asks.
#[derive(Clone, Copy)]
enum Callback {
    RequestHeaders,
    RequestBody { end_of_stream: bool },
    ResponseHeaders,
    ResponseBody { end_of_stream: bool },
}

impl Stage {
    fn action(&self, callback: Callback) -> Action {
        match (self, callback) {
            // Hold headers (needs `allow_on_headers_stop_iteration`) and body until decided.
            (Stage::Inspecting(_), Callback::RequestHeaders) => Action::Pause,
            (Stage::Inspecting(_), Callback::RequestBody { end_of_stream: false }) => Action::Pause,
            // Hold a priced answer's headers, and buffer its body, until the body is whole.
            (Stage::Routed(r), Callback::ResponseHeaders) if matches!(r.answer, Answer::Held) => Action::Pause,
            (Stage::Routed(r), Callback::ResponseBody { end_of_stream: false }) if matches!(r.answer, Answer::Held) => {
                Action::Pause
            }
            // A local reply is being sent: nothing more of the request goes anywhere.
            (Stage::Refused, Callback::RequestHeaders | Callback::RequestBody { .. }) => Action::Pause,
            _ => Action::Continue,
        }
    }
}

/// One HTTP stream.
pub struct Stream {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    started_ms: u64,
    stage: Stage,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            self.stage = Stage::PassThrough;
            return Action::Continue;
        };
        self.started_ms = now_ms();
        let mut headers = match Headers::read(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                log(LogLevel::Error, &format!("switchyard: cannot read request headers: {status:?}"));
                self.stage = Stage::PassThrough;
                return Action::Continue;
            }
        };
        let hint = if config.allow_category_hint { headers.get(CATEGORY_HINT_HEADER).map(str::to_owned) } else { None };
        // Client-sent switchyard headers and the route header never reach routing or upstream.
        headers.retain(|name, _| {
            let own = name.starts_with(OWN_PREFIX) || name == config.route_header;
            if own {
                remove_header(MapType::HttpRequestHeaders, name);
            }
            !own
        });

        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default().to_owned();
        let target = (method == "POST").then(|| request::target(&config.path_prefix, &path)).flatten();
        self.stage = match target {
            None => Stage::PassThrough,
            Some(_) if end_of_stream => {
                self.refuse(&Refusal::invalid_request("empty_body", request::BodyError::Empty.to_string()));
                Stage::Refused
            }
            Some(t) => {
                let (endpoint, query) = (t.endpoint, t.query.to_owned());
                Stage::Inspecting(Pending { path, endpoint, query, headers, hint })
            }
        };
        self.stage.action(Callback::RequestHeaders)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Stage::Inspecting(pending), Some(config)) = (&self.stage, self.config.clone()) else {
            return self.stage.action(Callback::RequestBody { end_of_stream });
        };
        if body_size > config.max_request_bytes {
            self.refuse(&Refusal::too_large(config.max_request_bytes));
            self.stage = Stage::Refused;
        } else if end_of_stream {
            let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
                Ok(body) => body.unwrap_or_default(),
                Err(status) => {
                    log(LogLevel::Error, &format!("switchyard: cannot read request body: {status:?}"));
                    Vec::new()
                }
            };
            let target = request::Target { endpoint: pending.endpoint, query: &pending.query };
            let now = now_ms();
            let cooling = |c: Candidate| cooling_until(&config, c, now);
            let outcome = route::decide(
                &config,
                &pending.path,
                &target,
                &pending.headers,
                pending.hint.as_deref(),
                &body,
                &cooling,
                now,
            );
            self.stage = match outcome {
                Ok(decision) => self.apply(&config, &decision, body_size, now),
                Err(refusal) => {
                    self.refuse(&refusal);
                    Stage::Refused
                }
            };
        }
        self.stage.action(Callback::RequestBody { end_of_stream })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if matches!(self.stage, Stage::Refused) {
            return Action::Continue;
        }
        // Upstreams may not speak for switchyard: their `x-switchyard-*` headers go.
        let headers = Headers::read(MapType::HttpResponseHeaders).unwrap_or_default();
        let strip_own = |headers: &Headers| {
            for (name, _) in headers.iter().filter(|(name, _)| name.starts_with(OWN_PREFIX)) {
                remove_header(MapType::HttpResponseHeaders, name);
            }
        };
        let (Stage::Routed(routed), Some(config)) = (&mut self.stage, self.config.clone()) else {
            strip_own(&headers);
            return Action::Continue;
        };
        let now = now_ms();
        let upstream_ms = now.saturating_sub(routed.forwarded_ms);
        routed.upstream_ms = Some(upstream_ms);
        let status = headers.get(":status").and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        let mut attempts = 1;
        let mut failed_over_from = None;
        if config.failover.is_some() {
            // The attempt role named the candidate that answered; the ledger recorded the others.
            let answered = headers.get(plan::CANDIDATE_HEADER).and_then(|v| v.parse::<usize>().ok());
            if let Some(cand) = answered.and_then(|i| config.categories.get(routed.category)?.candidates.get(i)) {
                routed.upstream = cand.upstream;
                routed.model = cand.model;
            }
            let ledger = hostcalls::get_property(vec![plan::LEDGER_PROPERTY]).ok().flatten().unwrap_or_default();
            let entries = plan::ledger_parse(&String::from_utf8_lossy(&ledger));
            attempts = entries.len().max(1);
            let failed = entries.get(..entries.len().saturating_sub(1)).unwrap_or_default();
            failed_over_from = plan::failover_from(&config, routed.category, failed);
            count_failovers(&self.metrics, &config, routed.category, &entries);
            if headers.get(plan::FAILOVER_HEADER).is_some() {
                // Every candidate failed or was skipped: answer like a rate limit, with the time
                // the soonest candidate is free again.
                let refusal = all_cooling_refusal(&config, routed.category, now);
                strip_own(&headers);
                self.stage = Stage::Refused;
                self.refuse(&refusal);
                return Action::Pause;
            }
        } else if status == 429 {
            // Without failover, a rate limit still steers the next requests elsewhere.
            if let Some(cand) = config
                .categories
                .get(routed.category)
                .and_then(|c| c.candidates.iter().find(|c| c.upstream == routed.upstream && c.model == routed.model))
            {
                start_cooldown(&config, &self.metrics, *cand, &headers, &cooldown::Policy::default());
            }
        }
        let names = RouteNames::of(&config, routed);
        let (attempts_text, upstream_ms_text) = (decimal(attempts as u64), decimal(upstream_ms));
        let ours = [
            ("x-switchyard-category", names.category),
            ("x-switchyard-upstream", names.upstream),
            ("x-switchyard-model", names.model),
            ("x-switchyard-attempts", attempts_text.as_str()),
            ("x-switchyard-upstream-ms", upstream_ms_text.as_str()),
        ];
        let failover = failed_over_from.as_deref().map(|from| ("x-switchyard-failover-from", from));
        routed.attempts = attempts;
        let class = status_class(status);
        self.metrics.route(metrics::RESPONSES, names.route(), Some(("status_class", class)), 1);
        self.metrics.route_histogram(metrics::UPSTREAM_LATENCY, names.route(), None, upstream_ms);

        let streaming = headers.get("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
        let price = config.models.get(routed.model).map(|m| m.price).unwrap_or_default();
        routed.answer = if streaming {
            if matches!(routed.usage_chunk, UsageChunk::Injected | UsageChunk::ClientAsked) {
                // switchyard may change the stream's length.
                remove_header(MapType::HttpResponseHeaders, "content-length");
            }
            Answer::Streaming(StreamedAnswer::new(routed.usage_chunk, price, config.max_response_bytes))
        } else if (200..300).contains(&status) && !end_of_stream {
            Answer::Held
        } else {
            Answer::Passing
        };
        // The upstream's own headers are gone: adding costs Envoy less than replacing, and far
        // less than writing the whole map again. A held answer's headers wait in Envoy for the
        // priced body; its cost figures are added to them then (`deliver`).
        strip_own(&headers);
        for (name, value) in ours.iter().chain(&failover) {
            add_header(MapType::HttpResponseHeaders, name, value);
        }
        let passing = matches!(routed.answer, Answer::Passing);
        if end_of_stream && (200..300).contains(&status) {
            self.deliver(Carry::Headers, &Priced::NoUsage);
        } else if end_of_stream || passing {
            // Error answers are not priced, but their duration still counts.
            self.finish(None);
        }
        self.stage.action(Callback::ResponseHeaders)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else { return Action::Continue };
        let Stage::Routed(routed) = &mut self.stage else {
            return Action::Continue;
        };
        let started_ms = self.started_ms;
        // Where the figures go, and what the answer cost, once it is complete.
        let outcome = match &mut routed.answer {
            Answer::Held if body_size > config.max_response_bytes => {
                // Too large to hold: release what is buffered and let the rest stream.
                routed.answer = Answer::Passing;
                Some((Carry::Headers, Priced::TooLarge))
            }
            Answer::Held if end_of_stream => {
                let body = read_buffer(BufferType::HttpResponseBody, body_size);
                let price = config.models.get(routed.model).map(|m| m.price).unwrap_or_default();
                Some((Carry::Headers, answer::price_body(&body, &price)))
            }
            Answer::Streaming(stream) => {
                let forwarded_ms = routed.forwarded_ms;
                let ttft = *routed.ttft_ms.get_or_insert_with(|| now_ms().saturating_sub(forwarded_ms));
                let upstream_ms = routed.upstream_ms.unwrap_or(0);
                let chunk = read_buffer(BufferType::HttpResponseBody, body_size);
                // The clock is read for the first chunk (time to first token) and for a usage
                // chunk switchyard annotates, not for every chunk.
                let timing = || Timing { upstream_ms, ttft_ms: ttft, total_ms: now_ms().saturating_sub(started_ms) };
                if let Some(replacement) = stream.push_with(&chunk, end_of_stream, &timing) {
                    if let Err(status) = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &replacement)
                    {
                        log(LogLevel::Error, &format!("switchyard: cannot rewrite a stream chunk: {status:?}"));
                    }
                }
                end_of_stream.then(|| (Carry::NewTrailers, stream.priced()))
            }
            _ => None,
        };
        if let Some((carry, priced)) = outcome {
            self.deliver(carry, &priced);
        }
        self.stage.action(Callback::ResponseBody { end_of_stream })
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // The body ended without an end-of-stream body callback: finish what is in flight.
        let Some(config) = self.config.clone() else { return Action::Continue };
        let Stage::Routed(routed) = &mut self.stage else { return Action::Continue };
        let outcome = match &routed.answer {
            Answer::Held => {
                let body = read_buffer(BufferType::HttpResponseBody, config.max_response_bytes);
                let price = config.models.get(routed.model).map(|m| m.price).unwrap_or_default();
                Some((Carry::Headers, answer::price_body(&body, &price)))
            }
            Answer::Streaming(stream) => Some((Carry::Trailers, stream.priced())),
            _ => None,
        };
        if let Some((carry, priced)) = outcome {
            self.deliver(carry, &priced);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // A stream cut short (client gone, upstream reset) still counts, with what is known.
        let priced = match &self.stage {
            Stage::Routed(routed) if !routed.finished => match &routed.answer {
                Answer::Streaming(stream) => stream.priced(),
                _ => Priced::NoUsage,
            },
            _ => return,
        };
        self.finish(Some(&priced));
    }
}

/// Where an answer's cost and token figures go: the held headers of a whole answer, or the
/// trailers of a streamed one (sent where the downstream protocol carries trailers).
#[derive(Clone, Copy)]
enum Carry {
    Headers,
    /// Trailers Envoy starts for the filter at the stream's last body chunk: the upstream sent
    /// none, so the figures are added, not replaced (a replace looks each name up first).
    NewTrailers,
    /// The upstream's own trailers, which may hold names of ours: replaced.
    Trailers,
}

/// Names of a routed request's category, upstream and model, for headers and metrics.
struct RouteNames<'c> {
    category: &'c str,
    upstream: &'c str,
    model: &'c str,
    index: [usize; 3],
}

impl<'c> RouteNames<'c> {
    fn of(config: &'c Config, routed: &Routed) -> Self {
        RouteNames {
            category: config.categories.get(routed.category).map_or("", |c| c.name.as_str()),
            upstream: config.upstreams.get(routed.upstream).map_or("", |u| u.name.as_str()),
            model: config.models.get(routed.model).map_or("", |m| m.provider_model.as_str()),
            index: [routed.category, routed.upstream, routed.model],
        }
    }

    fn route(&self) -> metrics::Route<'c> {
        metrics::Route { category: self.category, upstream: self.upstream, model: self.model, index: self.index }
    }
}

fn status_class(status: u32) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

impl Stream {
    /// Applies a routing decision to the paused request and returns the new stage.
    fn apply(&self, config: &Config, decision: &Decision, body_size: usize, now: u64) -> Stage {
        let upstream = config.upstreams.get(decision.candidate.upstream);
        if let Some(upstream) = upstream {
            // The client's route header, if any, went with the request headers: add, not replace.
            add_header(MapType::HttpRequestHeaders, &config.route_header, &upstream.cluster);
            if let (Some(host), None) = (&upstream.host, &config.failover) {
                set_header(MapType::HttpRequestHeaders, ":authority", host);
            }
        }
        if let Some(failover) = &config.failover {
            // The attempt role rewrites path and host per candidate; the front hands it the plan.
            add_header(
                MapType::HttpRequestHeaders,
                plan::PLAN_HEADER,
                &plan::encode(decision.category, &decision.plan),
            );
            let retries =
                if decision.stream && !failover.streaming { 0 } else { decision.plan.len().saturating_sub(1) };
            set_header(MapType::HttpRequestHeaders, "x-envoy-max-retries", decimal(retries as u64).as_str());
        } else if let Some(path) = &decision.path {
            set_header(MapType::HttpRequestHeaders, ":path", path);
        }
        if let Some(body) = &decision.body {
            if let Err(status) = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, body) {
                log(LogLevel::Error, &format!("switchyard: cannot rewrite request body: {status:?}"));
            }
            set_header(MapType::HttpRequestHeaders, "content-length", decimal(body.len() as u64).as_str());
        }
        let routed = Routed {
            category: decision.category,
            upstream: decision.candidate.upstream,
            model: decision.candidate.model,
            usage_chunk: decision.usage_chunk,
            forwarded_ms: now,
            upstream_ms: None,
            ttft_ms: None,
            answer: Answer::Awaiting,
            finished: false,
            attempts: 1,
        };
        let names = RouteNames::of(config, &routed);
        self.metrics.route(metrics::REQUESTS, names.route(), None, 1);
        Stage::Routed(Box::new(routed))
    }

    /// Puts a complete answer's cost, token and time figures where `carry` says, then records them.
    fn deliver(&mut self, carry: Carry, priced: &Priced) {
        let now = now_ms();
        let cost = priced.cost_text();
        let (map, write): (MapType, fn(MapType, &str, &str)) = match carry {
            // The upstream's `x-switchyard-*` headers were removed with its response headers.
            Carry::Headers => (MapType::HttpResponseHeaders, add_header),
            Carry::NewTrailers => (MapType::HttpResponseTrailers, add_header),
            Carry::Trailers => (MapType::HttpResponseTrailers, set_header),
        };
        write(map, "x-switchyard-cost-usd", &cost);
        write(map, "x-switchyard-cost-status", priced.status());
        write(map, "x-switchyard-total-ms", decimal(now.saturating_sub(self.started_ms)).as_str());
        if let Some(usage) = priced.usage() {
            write(map, "x-switchyard-input-tokens", decimal(usage.input).as_str());
            write(map, "x-switchyard-output-tokens", decimal(usage.output).as_str());
            if usage.cached_input > 0 {
                write(map, "x-switchyard-cached-input-tokens", decimal(usage.cached_input).as_str());
            }
            if usage.reasoning > 0 {
                write(map, "x-switchyard-reasoning-tokens", decimal(usage.reasoning).as_str());
            }
        }
        if let (Carry::Trailers | Carry::NewTrailers, Stage::Routed(routed)) = (carry, &self.stage) {
            if let Some(ttft) = routed.ttft_ms {
                write(map, "x-switchyard-ttft-ms", decimal(ttft).as_str());
            }
        }
        self.finish_at(Some((priced, &cost)), now);
    }

    /// Records a complete answer's cost, tokens and latency in metrics and in the access log's
    /// filter state; `None` for answers that are not priced (error statuses). Runs once per request.
    fn finish(&mut self, priced: Option<&Priced>) {
        let cost = priced.map(Priced::cost_text);
        self.finish_at(priced.zip(cost.as_deref()), now_ms());
    }

    /// [`Stream::finish`] at `now` (ms on Envoy's clock), with the answer's cost text.
    fn finish_at(&mut self, priced: Option<(&Priced, &str)>, now: u64) {
        let Some(config) = self.config.clone() else { return };
        let Stage::Routed(routed) = &mut self.stage else { return };
        if routed.finished {
            return;
        }
        routed.finished = true;
        let total_ms = now.saturating_sub(self.started_ms);
        let duration_ms = now.saturating_sub(routed.forwarded_ms);
        let names = RouteNames::of(&config, routed);
        let route = names.route();
        let m = &self.metrics;
        m.route_histogram(metrics::REQUEST_DURATION, route, None, duration_ms);
        if let Some(ttft) = routed.ttft_ms {
            m.route_histogram(metrics::TIME_TO_FIRST_TOKEN, route, None, ttft);
        }
        // One filter-state entry for the access log (`%FILTER_STATE(wasm.switchyard:PLAIN)%`), a
        // JSON object: one hostcall, not one per figure.
        let mut state = JsonObject::with_capacity(320);
        state.text("category", names.category);
        state.text("upstream", names.upstream);
        state.text("model", names.model);
        state.number("attempts", Some(routed.attempts as u64));
        state.number("upstream_ms", routed.upstream_ms);
        state.number("ttft_ms", routed.ttft_ms);
        state.number("total_ms", Some(total_ms));
        if let Some((priced, cost_text)) = priced {
            if let Some(usage) = priced.usage() {
                for (kind, tokens) in [
                    ("input", usage.input),
                    ("output", usage.output),
                    ("cached_input", usage.cached_input),
                    ("reasoning", usage.reasoning),
                ] {
                    m.route(metrics::TOKENS, route, Some(("token_type", kind)), tokens);
                    if tokens > 0 || matches!(kind, "input" | "output") {
                        m.route_histogram(metrics::TOKEN_USAGE, route, Some(("token_type", kind)), tokens);
                    }
                }
                state.number("input_tokens", Some(usage.input));
                state.number("output_tokens", Some(usage.output));
                state.number("cached_input_tokens", Some(usage.cached_input));
                state.number("reasoning_tokens", Some(usage.reasoning));
            }
            match priced {
                Priced::Cost(_, cost) => m.route(metrics::COST, route, None, cost.nanos_rounded()),
                other => m.route(metrics::UNPRICED, route, Some(("reason", other.status())), 1),
            }
            state.text("cost_usd", cost_text);
            state.text("cost_status", priced.status());
        }
        let state = state.finish();
        if let Err(status) = hostcalls::set_property(vec![ACCESS_LOG_PROPERTY], Some(state.as_bytes())) {
            log(LogLevel::Debug, &format!("switchyard: cannot set filter state: {status:?}"));
        }
    }

    /// Answers the client with an OpenAI-style error instead of forwarding the request.
    fn refuse(&self, refusal: &Refusal) {
        log(LogLevel::Debug, &format!("switchyard: refusing request: {} {}", refusal.status, refusal.message));
        self.metrics.count(metrics::REFUSED, &[("code", refusal.code)], 1);
        let body = refusal.body();
        let retry_after = refusal.retry_after.map(|s| s.to_string());
        let mut headers = vec![("content-type", "application/json"), ("x-switchyard-error", refusal.code)];
        if let Some(secs) = &retry_after {
            headers.push(("retry-after", secs));
        }
        if let Err(status) = hostcalls::send_http_response(refusal.status, headers, Some(body.as_bytes())) {
            log(LogLevel::Error, &format!("switchyard: cannot send local reply: {status:?}"));
        }
    }
}

/// A flat JSON object written straight into a string: the access log's figures, without building a
/// `serde_json::Value` on every request.
struct JsonObject(String);

impl JsonObject {
    fn with_capacity(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        JsonObject(out)
    }

    /// Keys are switchyard's own plain names: written as they are, with no escaping to look for.
    fn key(&mut self, key: &'static str) {
        debug_assert!(!key.bytes().any(needs_json_escape), "{key:?} needs escaping");
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    fn text(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_json_string(&mut self.0, value);
    }

    /// A number, or `null` when absent.
    fn number(&mut self, key: &'static str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(n) => push_decimal(&mut self.0, n),
            None => self.0.push_str("null"),
        }
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Envoy's shared data, seen by every worker's VM: where cooldowns live.
pub(crate) struct EnvoyShared;

impl SharedStore for EnvoyShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => (value, cas.unwrap_or(0)),
            Err(_) => (None, 0),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let cas = (cas != 0).then_some(cas);
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|_| CasMismatch)
    }
}

/// Until when a candidate is cooling down after a rate limit, if it still is.
pub(crate) fn cooling_until(config: &Config, candidate: Candidate, now: u64) -> Option<u64> {
    let upstream = &config.upstreams.get(candidate.upstream)?.name;
    let model = &config.models.get(candidate.model)?.provider_model;
    Cooldowns::new(&EnvoyShared).until(upstream, model, now)
}

/// Starts (or extends) a candidate's cooldown from a rate-limited answer's headers.
pub(crate) fn start_cooldown(
    config: &Config,
    metrics: &Metrics,
    candidate: Candidate,
    headers: &Headers,
    policy: &cooldown::Policy,
) {
    let (Some(upstream), Some(model)) = (config.upstreams.get(candidate.upstream), config.models.get(candidate.model))
    else {
        return;
    };
    let now = now_ms();
    let wait = policy.cooldown(cooldown::parse(headers, now));
    let until = now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    Cooldowns::new(&EnvoyShared).start(&upstream.name, &model.provider_model, until);
    metrics.count(metrics::COOLDOWNS, &[("upstream", &upstream.name), ("model", &model.provider_model)], 1);
}

/// switchyard's 429 when no candidate of a category can answer now.
fn all_cooling_refusal(config: &Config, category: usize, now: u64) -> Refusal {
    let chain = config.categories.get(category);
    let soonest = chain
        .into_iter()
        .flat_map(|c| c.candidates.iter())
        .filter_map(|c| cooling_until(config, *c, now))
        .min()
        .unwrap_or(now);
    Refusal::all_cooling(chain.map_or("", |c| c.name.as_str()), soonest.saturating_sub(now))
}

/// Counts each failover of a request: from which candidate to which, on what status.
fn count_failovers(metrics: &Metrics, config: &Config, category: usize, attempts: &[plan::Attempt]) {
    let name = |a: &plan::Attempt| plan::candidate_name(config, category, a.candidate).unwrap_or_default();
    let category_name = config.categories.get(category).map_or("", |c| c.name.as_str());
    for pair in attempts.windows(2) {
        if let [from, to] = pair {
            let status = from.outcome();
            let labels =
                [("category", category_name), ("from", &name(from)), ("to", &name(to)), ("status", status.as_str())];
            metrics.count(metrics::FAILOVERS, &labels, 1);
        }
    }
}

fn read_buffer(buffer: BufferType, size: usize) -> Vec<u8> {
    match hostcalls::get_buffer(buffer, 0, size) {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(status) => {
            log(LogLevel::Error, &format!("switchyard: cannot read {buffer:?}: {status:?}"));
            Vec::new()
        }
    }
}

pub(crate) fn set_header(map: MapType, name: &str, value: &str) {
    if let Err(status) = hostcalls::set_map_value(map, name, Some(value)) {
        log_header_failure("set", name, status);
    }
}

/// Appends a header the map is known not to have (Envoy's `addCopy`: no search for one to replace).
pub(crate) fn add_header(map: MapType, name: &str, value: &str) {
    if let Err(status) = hostcalls::add_map_value(map, name, value) {
        log_header_failure("add", name, status);
    }
}

pub(crate) fn remove_header(map: MapType, name: &str) {
    if let Err(status) = hostcalls::remove_map_value(map, name) {
        log_header_failure("remove", name, status);
    }
}

fn log_header_failure(what: &str, name: &str, status: Status) {
    log(LogLevel::Error, &format!("switchyard: cannot {what} header {name}: {status:?}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_object_is_json_that_reads_back_the_same() {
        let awkward = "a \"quoted\" \\ name\nwith\ttabs, \u{1} control, ü and 🚀";
        let mut object = JsonObject::with_capacity(8);
        object.text("category", awkward);
        object.number("attempts", Some(0));
        object.number("ttft_ms", None);
        object.number("total_ms", Some(u64::MAX));
        object.text("cost_usd", "0.00045");
        let text = object.finish();
        let read: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            read,
            serde_json::json!({
                "category": awkward, "attempts": 0, "ttft_ms": null, "total_ms": u64::MAX, "cost_usd": "0.00045"
            })
        );
        assert!(text.starts_with(r#"{"category":"a \"quoted\" \\ name\nwith\ttabs, \u0001 control"#), "{text}");
        assert_eq!(JsonObject::with_capacity(0).finish(), "{}");
    }
}
