//! The host glue: proxy-wasm contexts that feed Envoy's callbacks into the decision core.
//!
//! This is the only module that talks to Envoy. Every hostcall goes through
//! `proxy_wasm::hostcalls` and a failed call becomes a logged error, never a panic: a panic would
//! take down the VM for every request on the worker. A request's life is the `Stage` enum, and
//! `Stage::action` is the one place where it turns into the `Action` Envoy sees.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, Status};

use crate::config::{self, Config, CATEGORY_HINT_HEADER};
use crate::request::{self, Endpoint};
use crate::route::{self, Decision, Refusal};

/// The prefix of every header switchyard owns; clients and upstreams may not send these.
const OWN_PREFIX: &str = "x-switchyard-";

fn log(level: LogLevel, message: &str) {
    // Logging is best effort: there is nowhere else to report a failure to log.
    let _ = hostcalls::log(level, message);
}

/// One per plugin configuration (and per worker): holds the compiled config.
#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
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
        match config::load(&bytes) {
            Ok(config) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "switchyard: configuration loaded: {} categories, {} upstreams, {} models",
                        config.categories.len(),
                        config.upstreams.len(),
                        config.models.len()
                    ),
                );
                self.config = Some(Rc::new(config));
                true
            }
            Err(err) => {
                // A rejected reload keeps the previous configuration in `self.config`.
                log(LogLevel::Error, &err.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Envoy only creates streams once `on_configure` succeeded; without a config (never
        // expected) the stream passes everything through rather than fail.
        Some(Box::new(Stream { config: self.config.clone(), stage: Stage::Idle }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
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
    Routed(Routed),
    /// Answered by switchyard itself; the local reply is on its way.
    Refused,
}

struct Pending {
    path: String,
    endpoint: Endpoint,
    query: String,
    headers: Vec<(String, String)>,
    hint: Option<String>,
}

struct Routed {
    category: usize,
    upstream: usize,
    model: usize,
}

/// What the stage means for Envoy's filter iteration, given the callback that asks.
#[derive(Clone, Copy)]
enum Callback {
    RequestHeaders,
    RequestBody { end_of_stream: bool },
}

impl Stage {
    fn action(&self, callback: Callback) -> Action {
        match (self, callback) {
            // Hold headers (needs `allow_on_headers_stop_iteration`) and body until decided.
            (Stage::Inspecting(_), Callback::RequestHeaders) => Action::Pause,
            (Stage::Inspecting(_), Callback::RequestBody { end_of_stream: false }) => Action::Pause,
            // A local reply is being sent: nothing more of the request goes anywhere.
            (Stage::Refused, _) => Action::Pause,
            _ => Action::Continue,
        }
    }
}

/// One HTTP stream.
pub struct Stream {
    config: Option<Rc<Config>>,
    stage: Stage,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            self.stage = Stage::PassThrough;
            return Action::Continue;
        };
        let headers = match hostcalls::get_map(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                log(LogLevel::Error, &format!("switchyard: cannot read request headers: {status:?}"));
                self.stage = Stage::PassThrough;
                return Action::Continue;
            }
        };
        let hint =
            if config.allow_category_hint { header(&headers, CATEGORY_HINT_HEADER).map(str::to_owned) } else { None };
        // Client-sent switchyard headers and the route header never reach routing or upstream.
        let mut kept = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            if name.starts_with(OWN_PREFIX) || name == config.route_header {
                self.remove_header(MapType::HttpRequestHeaders, &name);
            } else {
                kept.push((name, value));
            }
        }

        let method = header(&kept, ":method").unwrap_or_default();
        let path = header(&kept, ":path").unwrap_or_default().to_owned();
        let target = (method == "POST").then(|| request::target(&config.path_prefix, &path)).flatten();
        self.stage = match target {
            None => Stage::PassThrough,
            Some(_) if end_of_stream => {
                self.refuse(&Refusal::invalid_request("empty_body", request::BodyError::Empty.to_string()));
                Stage::Refused
            }
            Some(t) => {
                let (endpoint, query) = (t.endpoint, t.query.to_owned());
                Stage::Inspecting(Pending { path, endpoint, query, headers: kept, hint })
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
            let outcome =
                route::decide(&config, &pending.path, &target, &pending.headers, pending.hint.as_deref(), &body);
            self.stage = match outcome {
                Ok(decision) => self.apply(&config, &decision, body_size),
                Err(refusal) => {
                    self.refuse(&refusal);
                    Stage::Refused
                }
            };
        }
        self.stage.action(Callback::RequestBody { end_of_stream })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if matches!(self.stage, Stage::Refused) {
            return Action::Continue;
        }
        // Upstreams may not speak for switchyard.
        if let Ok(headers) = hostcalls::get_map(MapType::HttpResponseHeaders) {
            for (name, _) in headers.iter().filter(|(name, _)| name.starts_with(OWN_PREFIX)) {
                self.remove_header(MapType::HttpResponseHeaders, name);
            }
        }
        if let (Stage::Routed(routed), Some(config)) = (&self.stage, &self.config) {
            let category = config.categories.get(routed.category).map_or("", |c| c.name.as_str());
            let upstream = config.upstreams.get(routed.upstream).map_or("", |u| u.name.as_str());
            let model = config.models.get(routed.model).map_or("", |m| m.provider_model.as_str());
            for (name, value) in [
                ("x-switchyard-category", category),
                ("x-switchyard-upstream", upstream),
                ("x-switchyard-model", model),
                ("x-switchyard-attempts", "1"),
            ] {
                self.set_header(MapType::HttpResponseHeaders, name, value);
            }
        }
        Action::Continue
    }
}

impl Stream {
    /// Applies a routing decision to the paused request and returns the new stage.
    fn apply(&self, config: &Config, decision: &Decision, body_size: usize) -> Stage {
        let upstream = config.upstreams.get(decision.candidate.upstream);
        if let Some(upstream) = upstream {
            self.set_header(MapType::HttpRequestHeaders, &config.route_header, &upstream.cluster);
            if let Some(host) = &upstream.host {
                self.set_header(MapType::HttpRequestHeaders, ":authority", host);
            }
        }
        if let Some(path) = &decision.path {
            self.set_header(MapType::HttpRequestHeaders, ":path", path);
        }
        if let Some(body) = &decision.body {
            if let Err(status) = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, body) {
                log(LogLevel::Error, &format!("switchyard: cannot rewrite request body: {status:?}"));
            }
            self.set_header(MapType::HttpRequestHeaders, "content-length", &body.len().to_string());
        }
        Stage::Routed(Routed {
            category: decision.category,
            upstream: decision.candidate.upstream,
            model: decision.candidate.model,
        })
    }

    /// Answers the client with an OpenAI-style error instead of forwarding the request.
    fn refuse(&self, refusal: &Refusal) {
        log(LogLevel::Debug, &format!("switchyard: refusing request: {} {}", refusal.status, refusal.message));
        let body = refusal.body();
        let headers = vec![("content-type", "application/json"), ("x-switchyard-error", refusal.code)];
        if let Err(status) = hostcalls::send_http_response(refusal.status, headers, Some(body.as_bytes())) {
            log(LogLevel::Error, &format!("switchyard: cannot send local reply: {status:?}"));
        }
    }

    fn set_header(&self, map: MapType, name: &str, value: &str) {
        if let Err(status) = hostcalls::set_map_value(map, name, Some(value)) {
            log_header_failure("set", name, status);
        }
    }

    fn remove_header(&self, map: MapType, name: &str) {
        if let Err(status) = hostcalls::remove_map_value(map, name) {
            log_header_failure("remove", name, status);
        }
    }
}

fn log_header_failure(what: &str, name: &str, status: Status) {
    log(LogLevel::Error, &format!("switchyard: cannot {what} header {name}: {status:?}"));
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
