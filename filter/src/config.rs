//! The plugin configuration: parsed as written, then compiled into validated types.
//!
//! The configuration arrives as bytes from Envoy: either a JSON document (the plugin configuration
//! is a `google.protobuf.StringValue`) or the protobuf wire bytes of a `google.protobuf.Struct`
//! (the operator wrote native YAML). Both become one JSON value, which serde reads into the `Raw*`
//! structs below with unknown fields refused. `compile` then checks every cross-reference, compiles
//! regexes and globs, and turns prices into exact integers. Every problem it finds is reported with
//! the path of the offending field, all at once, so an operator fixes a config in one go. What the
//! compiled config means at request time is decided in `classify`; this module only validates.

use std::collections::{BTreeMap, HashMap};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;

use crate::keywords::Keywords;
use crate::pbstruct;
use crate::rules::{Glob, HeaderTest, Rule, TextMatch, TextPattern, TextSource};

/// Header the Envoy route reads (`cluster_header`) unless the config names another.
pub const DEFAULT_ROUTE_HEADER: &str = "x-switchyard-cluster";
/// Largest request body switchyard inspects unless the config says otherwise (Envoy's default
/// per-connection buffer limit is the same 1 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024;
/// Largest non-streaming answer switchyard holds to price it unless the config says otherwise
/// (Envoy's default per-connection buffer limit on clusters is the same 1 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// The request header a client may use to pick a category, when `allow_category_hint` is on.
pub const CATEGORY_HINT_HEADER: &str = "x-switchyard-category";
/// Upper bound on a price, in USD per million tokens: anything above is a typo.
const MAX_USD_PER_MILLION: f64 = 100_000.0;
/// Largest regex program a rule may compile to; keeps a bad pattern from eating the VM's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// As written
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    route_header: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    max_request_bytes: Option<Count>,
    #[serde(default)]
    max_response_bytes: Option<Count>,
    #[serde(default)]
    allow_category_hint: bool,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    #[serde(default)]
    litellm_prices: Option<Value>,
    #[serde(default)]
    categories: Vec<RawCategory>,
    #[serde(default)]
    default_category: String,
    #[serde(default)]
    failover: Option<RawFailover>,
}

/// Which part switchyard plays in the Envoy config (see `docs/failover-mechanism.md`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The client-facing filter: classifies, routes, prices (and plans failover).
    #[default]
    Front,
    /// One attempt of a failover plan, in the internal attempt listener.
    Attempt,
    /// The upstream filter on the attempts cluster that records each attempt's outcome.
    Ledger,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    #[serde(default)]
    statuses: Option<Vec<Count>>,
    #[serde(default)]
    streaming: Option<bool>,
    #[serde(default)]
    cooldown_default_ms: Option<Count>,
    #[serde(default)]
    cooldown_min_ms: Option<Count>,
    #[serde(default)]
    cooldown_max_ms: Option<Count>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    cluster: String,
    #[serde(default)]
    base_path: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default)]
    provider_model: Option<String>,
    #[serde(default)]
    litellm_model: Option<String>,
    #[serde(default)]
    input_usd_per_1m: Option<Number>,
    #[serde(default)]
    output_usd_per_1m: Option<Number>,
    #[serde(default)]
    cached_input_usd_per_1m: Option<Number>,
    #[serde(default)]
    reasoning_usd_per_1m: Option<Number>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    name: String,
    #[serde(default)]
    when: Option<RawRule>,
    candidates: Vec<RawCandidate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCandidate {
    upstream: String,
    model: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawRule {
    All(Vec<RawRule>),
    Any(Vec<RawRule>),
    Not(Box<RawRule>),
    Header(RawHeaderRule),
    Path(RawTextMatch),
    Model(RawTextMatch),
    User(RawTextMatch),
    Metadata(RawMetadataRule),
    Text(RawTextRule),
    Tokens(RawTokens),
    JsonMode(bool),
    Tools(bool),
    Stream(bool),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTextMatch {
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    matches: Option<String>,
    #[serde(default)]
    one_of: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRule {
    name: String,
    #[serde(default)]
    present: Option<bool>,
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    matches: Option<String>,
    #[serde(default)]
    one_of: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadataRule {
    key: String,
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    matches: Option<String>,
    #[serde(default)]
    one_of: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTextRule {
    #[serde(rename = "in")]
    source: TextSource,
    #[serde(default)]
    matches: Option<String>,
    #[serde(default)]
    keywords: Option<Vec<String>>,
    #[serde(default)]
    case_sensitive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    #[serde(default)]
    min: Option<Count>,
    #[serde(default)]
    max: Option<Count>,
}

/// A number as written in JSON, or as a string. Envoy's YAML-to-Struct conversion turns numbers
/// that do not round-trip through a double unchanged (`0.30`, `1e3`) into strings, so a config
/// written as native YAML must be read leniently.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Number;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number (or a string holding one)")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Number, E> {
                v.trim().parse().map(Number).map_err(|_| E::custom(format!("`{v}` is not a number")))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// A whole number >= 0, as written in JSON, as a whole double (YAML via Struct), or as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number >= 0")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v).map(Count).map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Count, E> {
                const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
                if v.fract() == 0.0 && (0.0..=EXACT).contains(&v) {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    return Ok(Count(v as u64));
                }
                Err(E::custom(format!("{v} is not a whole number >= 0")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Count, E> {
                v.trim().parse().map(Count).map_err(|_| E::custom(format!("`{v}` is not a whole number >= 0")))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled
// ---------------------------------------------------------------------------------------------

/// A validated configuration, ready for the request path.
#[derive(Debug)]
pub struct Config {
    pub role: Role,
    pub route_header: String,
    /// Path prefix in front of `/v1/...` (empty, or starts with `/` and has no trailing `/`).
    pub path_prefix: String,
    pub max_request_bytes: usize,
    /// Non-streaming answers up to this size are held to put their cost in the headers.
    pub max_response_bytes: usize,
    pub allow_category_hint: bool,
    pub upstreams: Vec<Upstream>,
    pub models: Vec<Model>,
    pub categories: Vec<Category>,
    pub default_category: usize,
    /// Which parts of a request the rules read: the request path skips the rest.
    pub needs: Needs,
    /// Failover across a category's candidates; `None`: the first available candidate only.
    pub failover: Option<Failover>,
}

/// When and how a request goes on to the next candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    /// Answer statuses that send the request to the next candidate.
    pub statuses: Vec<u32>,
    /// Whether streaming requests fail over too (before their first byte reaches the client).
    pub streaming: bool,
    pub cooldown: crate::cooldown::Policy,
}

/// Statuses that fail over unless the config lists others: rate limited, overloaded (529 is
/// Anthropic's), unavailable (also Envoy's own answer when a provider refuses the connection) and
/// gateway timeout (Envoy's answer when a provider is silent past the per-try timeout).
pub const DEFAULT_FAILOVER_STATUSES: [u32; 4] = [429, 503, 504, 529];

/// What the rules of a config read from a request; parts nobody reads are not extracted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub text: bool,
    pub tokens: bool,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub cluster: String,
    /// Replaces the `/v1` part of the request path when set (e.g. `/openai/v1`, `/v1beta/openai`).
    pub base_path: Option<String>,
    /// Replaces `:authority` when set.
    pub host: Option<String>,
}

#[derive(Debug)]
pub struct Model {
    pub name: String,
    /// The name sent to the provider in the request's `model` field.
    pub provider_model: String,
    pub price: Price,
}

/// Prices of one model; `None` where the config gave none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: Option<UsdPerMillion>,
    pub output: Option<UsdPerMillion>,
    pub cached_input: Option<UsdPerMillion>,
    pub reasoning: Option<UsdPerMillion>,
}

/// A price in USD per million tokens, held exactly as an integer count of nano-dollars per million
/// tokens, so that costs summed over many answers do not drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsdPerMillion(u64);

impl UsdPerMillion {
    /// Nano-dollars (1e-9 USD) per million tokens.
    pub fn nanos(self) -> u64 {
        self.0
    }

    fn from_usd(usd: f64) -> Result<Self, String> {
        if !usd.is_finite() || usd < 0.0 {
            return Err(format!("price must be a number >= 0, got {usd}"));
        }
        if usd > MAX_USD_PER_MILLION {
            return Err(format!("price {usd} USD per 1M tokens is above the sanity limit of {MAX_USD_PER_MILLION}"));
        }
        // Bounded above, so the product fits easily in u64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let nanos = (usd * 1e9).round() as u64;
        Ok(Self(nanos))
    }
}

#[derive(Debug)]
pub struct Category {
    pub name: String,
    pub rule: Option<Rule>,
    pub candidates: Vec<Candidate>,
}

/// One place a category's requests can go: an upstream and a model, as indexes into the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub upstream: usize,
    pub model: usize,
}

impl Config {
    pub fn category_index(&self, name: &str) -> Option<usize> {
        self.categories.iter().position(|c| c.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One thing wrong with a configuration, at a field path such as `categories[1].candidates[0].model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Why a configuration was refused: every problem found, each with its field path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("switchyard configuration is empty")]
    Empty,
    #[error("switchyard configuration is not valid JSON: {0}")]
    Json(String),
    #[error("switchyard configuration is neither JSON nor a protobuf Struct: {0}")]
    Struct(#[from] pbstruct::StructError),
    #[error("switchyard configuration is invalid: {}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| if p.path.is_empty() { p.message.clone() } else { format!("{}: {}", p.path, p.message) })
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Loads a configuration from the plugin configuration bytes Envoy passes (JSON or Struct).
pub fn load(bytes: &[u8]) -> Result<Config, ConfigError> {
    load_as(bytes, Role::Front)
}

/// Like `load`, with the role to take when the configuration names none (switchyard derives it
/// from the plugin's `root_id`, so one YAML anchor can hold the configuration of every role).
pub fn load_as(bytes: &[u8], default_role: Role) -> Result<Config, ConfigError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let value = match first {
        // The ledger needs no settings at all.
        None if default_role == Role::Ledger => Value::Object(serde_json::Map::new()),
        None => return Err(ConfigError::Empty),
        Some(b'{') => serde_json::from_slice::<Value>(bytes).map_err(|e| ConfigError::Json(e.to_string()))?,
        Some(_) => pbstruct::decode_struct(bytes)?,
    };
    from_value_as(value, default_role)
}

/// Compiles a configuration already in JSON form.
pub fn from_value(value: Value) -> Result<Config, ConfigError> {
    from_value_as(value, Role::Front)
}

fn from_value_as(value: Value, default_role: Role) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::Invalid(vec![Problem { path, message: e.into_inner().to_string() }])
    })?;
    compile(raw, default_role)
}

fn compile(raw: RawConfig, default_role: Role) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let role = raw.role.unwrap_or(default_role);
    if role == Role::Ledger {
        return ledger(raw);
    }
    let failover = raw.failover.as_ref().map(|f| compile_failover(f, &mut problems));

    let route_header = raw.route_header.unwrap_or_else(|| DEFAULT_ROUTE_HEADER.to_owned());
    if !is_header_name(&route_header) {
        problems.add("route_header", format!("`{route_header}` is not a valid lowercase HTTP header name"));
    }
    let route_header = route_header.to_ascii_lowercase();

    let path_prefix = raw.path_prefix.unwrap_or_default();
    let path_prefix = path_prefix.trim_end_matches('/').to_owned();
    if !path_prefix.is_empty() && (!path_prefix.starts_with('/') || path_prefix.contains(['?', '#', ' '])) {
        problems.add("path_prefix", format!("`{path_prefix}` must start with `/` and contain no `?`, `#` or spaces"));
    }

    let max_request_bytes = raw.max_request_bytes.map_or(DEFAULT_MAX_REQUEST_BYTES, |c| c.0);
    if max_request_bytes == 0 {
        problems.add("max_request_bytes", "must be greater than 0");
    }
    let max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    let max_response_bytes = raw.max_response_bytes.map_or(DEFAULT_MAX_RESPONSE_BYTES, |c| c.0);
    if max_response_bytes == 0 {
        problems.add("max_response_bytes", "must be greater than 0");
    }
    let max_response_bytes = usize::try_from(max_response_bytes).unwrap_or(usize::MAX);
    let litellm = litellm_book(raw.litellm_prices, &mut problems);

    // Upstreams.
    let mut upstream_index = HashMap::new();
    let mut upstreams = Vec::new();
    if raw.upstreams.is_empty() {
        problems.add("upstreams", "at least one upstream is required");
    }
    for (name, up) in raw.upstreams {
        let path = format!("upstreams.{name}");
        check_name(&mut problems, &path, &name);
        if up.cluster.trim().is_empty() {
            problems.add(format!("{path}.cluster"), "must name an Envoy cluster");
        }
        let base_path = up.base_path.map(|b| b.trim_end_matches('/').to_owned());
        if let Some(base) = &base_path {
            if !base.starts_with('/') || base.contains(['?', '#', ' ']) {
                problems.add(
                    format!("{path}.base_path"),
                    format!("`{base}` must start with `/` and contain no `?`, `#` or spaces"),
                );
            }
        }
        if let Some(host) = &up.host {
            if host.is_empty() || host.contains(['/', ' ', '\r', '\n']) {
                problems.add(format!("{path}.host"), format!("`{host}` is not a valid host[:port]"));
            }
        }
        upstream_index.insert(name.clone(), upstreams.len());
        upstreams.push(Upstream { name, cluster: up.cluster, base_path, host: up.host });
    }

    // Models and prices.
    let mut model_index = HashMap::new();
    let mut models = Vec::new();
    for (name, model) in raw.models {
        let path = format!("models.{name}");
        if name.is_empty() {
            problems.add("models", "a model name must not be empty");
        }
        let mut price = |field: &str, value: Option<Number>| {
            value.and_then(|Number(usd)| match UsdPerMillion::from_usd(usd) {
                Ok(p) => Some(p),
                Err(message) => {
                    problems.add(format!("{path}.{field}"), message);
                    None
                }
            })
        };
        let explicit = Price {
            input: price("input_usd_per_1m", model.input_usd_per_1m),
            output: price("output_usd_per_1m", model.output_usd_per_1m),
            cached_input: price("cached_input_usd_per_1m", model.cached_input_usd_per_1m),
            reasoning: price("reasoning_usd_per_1m", model.reasoning_usd_per_1m),
        };
        let provider_model = model.provider_model.unwrap_or_else(|| name.clone());
        if provider_model.is_empty() {
            problems.add(format!("{path}.provider_model"), "must not be empty");
        }
        let listed =
            litellm_price(&litellm, &name, &provider_model, model.litellm_model.as_deref(), &path, &mut problems);
        // Prices written in `models` win over the LiteLLM list, field by field.
        let price = Price {
            input: explicit.input.or(listed.input),
            output: explicit.output.or(listed.output),
            cached_input: explicit.cached_input.or(listed.cached_input),
            reasoning: explicit.reasoning.or(listed.reasoning),
        };
        model_index.insert(name.clone(), models.len());
        models.push(Model { name, provider_model, price });
    }

    // Categories.
    let mut needs = Needs::default();
    let mut categories = Vec::new();
    if raw.categories.is_empty() {
        problems.add("categories", "at least one category is required");
    }
    for (i, cat) in raw.categories.into_iter().enumerate() {
        let path = format!("categories[{i}]");
        check_name(&mut problems, &format!("{path}.name"), &cat.name);
        if categories.iter().any(|c: &Category| c.name == cat.name) {
            problems.add(format!("{path}.name"), format!("category `{}` is declared twice", cat.name));
        }
        if cat.candidates.is_empty() {
            problems.add(format!("{path}.candidates"), "at least one candidate is required");
        }
        let mut candidates = Vec::new();
        for (j, cand) in cat.candidates.iter().enumerate() {
            let cpath = format!("{path}.candidates[{j}]");
            let upstream = upstream_index.get(&cand.upstream).copied();
            if upstream.is_none() {
                problems.add(format!("{cpath}.upstream"), format!("unknown upstream `{}`", cand.upstream));
            }
            let model = model_index.get(&cand.model).copied();
            if model.is_none() {
                problems.add(
                    format!("{cpath}.model"),
                    format!("unknown model `{}` (declare it under `models`)", cand.model),
                );
            }
            if let (Some(upstream), Some(model)) = (upstream, model) {
                let candidate = Candidate { upstream, model };
                if candidates.contains(&candidate) {
                    problems.add(cpath, "the same upstream and model are listed twice");
                } else {
                    candidates.push(candidate);
                }
            }
        }
        let rule = cat.when.map(|r| compile_rule(r, &format!("{path}.when"), &mut problems, &mut needs));
        categories.push(Category { name: cat.name, rule, candidates });
    }

    let default_category = categories.iter().position(|c| c.name == raw.default_category);
    if raw.default_category.is_empty() {
        problems.add("default_category", "is required: the category for requests no rule matches");
    } else if default_category.is_none() {
        problems.add("default_category", format!("unknown category `{}`", raw.default_category));
    }

    match default_category {
        Some(default_category) if problems.0.is_empty() => Ok(Config {
            role,
            route_header,
            path_prefix,
            max_request_bytes,
            max_response_bytes,
            allow_category_hint: raw.allow_category_hint,
            upstreams,
            models,
            categories,
            default_category,
            needs,
            failover,
        }),
        _ => Err(ConfigError::Invalid(problems.0)),
    }
}

/// The ledger only records attempts: it takes no other settings.
fn ledger(raw: RawConfig) -> Result<Config, ConfigError> {
    let bare = raw.route_header.is_none()
        && raw.path_prefix.is_none()
        && raw.upstreams.is_empty()
        && raw.models.is_empty()
        && raw.categories.is_empty()
        && raw.default_category.is_empty()
        && raw.failover.is_none();
    if !bare {
        return Err(ConfigError::Invalid(vec![Problem {
            path: "role".to_owned(),
            message: "the ledger role takes no other settings".to_owned(),
        }]));
    }
    Ok(Config {
        role: Role::Ledger,
        route_header: DEFAULT_ROUTE_HEADER.to_owned(),
        path_prefix: String::new(),
        max_request_bytes: 0,
        max_response_bytes: 0,
        allow_category_hint: false,
        upstreams: Vec::new(),
        models: Vec::new(),
        categories: Vec::new(),
        default_category: 0,
        needs: Needs::default(),
        failover: None,
    })
}

fn compile_failover(raw: &RawFailover, problems: &mut Problems) -> Failover {
    let statuses = match &raw.statuses {
        None => DEFAULT_FAILOVER_STATUSES.to_vec(),
        Some(list) => {
            if list.is_empty() {
                problems.add("failover.statuses", "must list at least one status");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, Count(status))| {
                    if (400..=599).contains(status) {
                        u32::try_from(*status).ok()
                    } else {
                        problems.add(format!("failover.statuses[{i}]"), format!("{status} is not a 4xx or 5xx status"));
                        None
                    }
                })
                .collect()
        }
    };
    let defaults = crate::cooldown::Policy::default();
    let ms = |value: Option<Count>, default: u64| value.map_or(default, |Count(v)| v);
    let cooldown = crate::cooldown::Policy {
        default_ms: ms(raw.cooldown_default_ms, defaults.default_ms),
        min_ms: ms(raw.cooldown_min_ms, defaults.min_ms),
        max_ms: ms(raw.cooldown_max_ms, defaults.max_ms),
    };
    if cooldown.min_ms > cooldown.max_ms {
        problems.add(
            "failover",
            format!("cooldown_min_ms ({}) is above cooldown_max_ms ({})", cooldown.min_ms, cooldown.max_ms),
        );
    }
    Failover { statuses, streaming: raw.streaming.unwrap_or(true), cooldown }
}

/// LiteLLM's community price list (`model_prices_and_context_window.json`), or any subset of it:
/// an object keyed by model name, given inline or as a string holding the JSON.
fn litellm_book(value: Option<Value>, problems: &mut Problems) -> serde_json::Map<String, Value> {
    match value {
        None => serde_json::Map::new(),
        Some(Value::Object(map)) => map,
        Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                problems.add("litellm_prices", "must be a JSON object keyed by model name");
                serde_json::Map::new()
            }
            Err(e) => {
                problems.add("litellm_prices", format!("is not valid JSON: {e}"));
                serde_json::Map::new()
            }
        },
        Some(_) => {
            problems.add("litellm_prices", "must be an object keyed by model name (or a string holding one)");
            serde_json::Map::new()
        }
    }
}

/// The LiteLLM entry's prices for a model: looked up by `litellm_model` when given (it must
/// exist), else by the provider model name, else by the model's name in `models`. Only entries a
/// model uses are read, so the rest of a full LiteLLM file may hold anything.
fn litellm_price(
    book: &serde_json::Map<String, Value>,
    name: &str,
    provider_model: &str,
    litellm_model: Option<&str>,
    path: &str,
    problems: &mut Problems,
) -> Price {
    let found = match litellm_model {
        Some(key) => match book.get_key_value(key) {
            Some(entry) => Some(entry),
            None => {
                problems.add(format!("{path}.litellm_model"), format!("`{key}` is not in `litellm_prices`"));
                None
            }
        },
        None => book.get_key_value(provider_model).or_else(|| book.get_key_value(name)),
    };
    let Some((key, entry)) = found else { return Price::default() };
    let mut per_token = |field: &str| -> Option<UsdPerMillion> {
        let value = entry.get(field)?;
        let parsed = Number::deserialize(value)
            .map_err(|e| e.to_string())
            .and_then(|Number(usd_per_token)| UsdPerMillion::from_usd(usd_per_token * 1e6));
        match parsed {
            Ok(price) => Some(price),
            Err(message) => {
                problems.add(format!("litellm_prices.{key}.{field}"), message);
                None
            }
        }
    };
    Price {
        input: per_token("input_cost_per_token"),
        output: per_token("output_cost_per_token"),
        cached_input: per_token("cache_read_input_token_cost"),
        reasoning: per_token("output_cost_per_reasoning_token"),
    }
}

/// Names appear in headers, metric names and log lines: keep them to a safe alphabet.
fn check_name(problems: &mut Problems, path: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        problems.add(path, format!("`{name}` must be 1-64 characters of letters, digits, `-`, `_` or `.`"));
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

fn compile_regex(pattern: &str, case_insensitive: bool, path: &str, problems: &mut Problems) -> Option<Regex> {
    match RegexBuilder::new(pattern).case_insensitive(case_insensitive).size_limit(REGEX_SIZE_LIMIT).build() {
        Ok(re) => Some(re),
        Err(e) => {
            problems.add(path, format!("invalid regex: {}", e.to_string().replace('\n', " ")));
            None
        }
    }
}

fn compile_text_match(raw: RawTextMatch, path: &str, problems: &mut Problems) -> TextMatch {
    let set =
        [raw.equals.is_some(), raw.prefix.is_some(), raw.glob.is_some(), raw.matches.is_some(), raw.one_of.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
    if set != 1 {
        problems.add(path, "exactly one of `equals`, `prefix`, `glob`, `matches`, `one_of` is required");
    }
    if let Some(v) = raw.equals {
        TextMatch::Equals(v)
    } else if let Some(v) = raw.prefix {
        TextMatch::Prefix(v)
    } else if let Some(v) = raw.glob {
        TextMatch::Glob(Glob::new(&v))
    } else if let Some(v) = raw.matches {
        let path = format!("{path}.matches");
        compile_regex(&v, false, &path, problems).map_or(TextMatch::Never, TextMatch::Regex)
    } else if let Some(v) = raw.one_of {
        if v.is_empty() {
            problems.add(format!("{path}.one_of"), "must list at least one value");
        }
        TextMatch::OneOf(v)
    } else {
        TextMatch::Never
    }
}

fn compile_rule(raw: RawRule, path: &str, problems: &mut Problems, needs: &mut Needs) -> Rule {
    let mut list = |rules: Vec<RawRule>, kind: &str, problems: &mut Problems| {
        if rules.is_empty() {
            problems.add(format!("{path}.{kind}"), "must list at least one rule");
        }
        rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile_rule(r, &format!("{path}.{kind}[{i}]"), problems, needs))
            .collect::<Vec<_>>()
    };
    match raw {
        RawRule::All(rules) => Rule::All(list(rules, "all", problems)),
        RawRule::Any(rules) => Rule::Any(list(rules, "any", problems)),
        RawRule::Not(rule) => Rule::Not(Box::new(compile_rule(*rule, &format!("{path}.not"), problems, needs))),
        RawRule::Header(h) => {
            let hpath = format!("{path}.header");
            if !is_header_name(&h.name) {
                problems.add(format!("{hpath}.name"), format!("`{}` is not a valid HTTP header name", h.name));
            }
            let name = h.name.to_ascii_lowercase();
            if name.starts_with("x-switchyard-") {
                problems.add(
                    format!("{hpath}.name"),
                    "`x-switchyard-*` headers are removed from client requests; use `allow_category_hint` instead",
                );
            }
            let text =
                RawTextMatch { equals: h.equals, prefix: h.prefix, glob: h.glob, matches: h.matches, one_of: h.one_of };
            let has_text = text.equals.is_some()
                || text.prefix.is_some()
                || text.glob.is_some()
                || text.matches.is_some()
                || text.one_of.is_some();
            let test = match (h.present, has_text) {
                (Some(present), false) => HeaderTest::Present(present),
                (None, true) => HeaderTest::Text(compile_text_match(text, &hpath, problems)),
                _ => {
                    problems.add(
                        &hpath,
                        "exactly one of `present`, `equals`, `prefix`, `glob`, `matches`, `one_of` is required",
                    );
                    HeaderTest::Present(false)
                }
            };
            Rule::Header { name, test }
        }
        RawRule::Path(m) => Rule::Path(compile_text_match(m, &format!("{path}.path"), problems)),
        RawRule::Model(m) => Rule::Model(compile_text_match(m, &format!("{path}.model"), problems)),
        RawRule::User(m) => Rule::User(compile_text_match(m, &format!("{path}.user"), problems)),
        RawRule::Metadata(m) => {
            let mpath = format!("{path}.metadata");
            if m.key.is_empty() {
                problems.add(format!("{mpath}.key"), "must not be empty");
            }
            let text =
                RawTextMatch { equals: m.equals, prefix: m.prefix, glob: m.glob, matches: m.matches, one_of: m.one_of };
            Rule::Metadata { key: m.key, test: compile_text_match(text, &mpath, problems) }
        }
        RawRule::Text(t) => {
            needs.text = true;
            let tpath = format!("{path}.text");
            let pattern = match (t.matches, t.keywords) {
                (Some(pattern), None) => {
                    compile_regex(&pattern, !t.case_sensitive, &format!("{tpath}.matches"), problems)
                        .map(TextPattern::Regex)
                }
                (None, Some(words)) => {
                    if words.is_empty() || words.iter().any(String::is_empty) {
                        problems.add(format!("{tpath}.keywords"), "must list at least one non-empty keyword");
                    }
                    let alternation = words.iter().map(|w| regex::escape(w)).collect::<Vec<_>>().join("|");
                    compile_regex(&alternation, !t.case_sensitive, &format!("{tpath}.keywords"), problems).map(|re| {
                        match Keywords::new(&words, !t.case_sensitive, re.clone()) {
                            Some(keywords) => TextPattern::Keywords(keywords),
                            None => TextPattern::Regex(re),
                        }
                    })
                }
                _ => {
                    problems.add(&tpath, "exactly one of `matches` or `keywords` is required");
                    None
                }
            };
            match pattern {
                Some(pattern) => Rule::Text { source: t.source, pattern },
                None => Rule::Never,
            }
        }
        RawRule::Tokens(t) => {
            needs.tokens = true;
            let min = t.min.map_or(0, |c| c.0);
            let max = t.max.map_or(u64::MAX, |c| c.0);
            if t.min.is_none() && t.max.is_none() {
                problems.add(format!("{path}.tokens"), "at least one of `min` or `max` is required");
            }
            if min > max {
                problems.add(format!("{path}.tokens"), format!("`min` ({min}) is greater than `max` ({max})"));
            }
            Rule::Tokens { min, max }
        }
        RawRule::JsonMode(b) => Rule::JsonMode(b),
        RawRule::Tools(b) => Rule::Tools(b),
        RawRule::Stream(b) => Rule::Stream(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn base() -> Value {
        json!({
            "upstreams": {
                "cheap": {"cluster": "provider_a"},
                "premium": {"cluster": "provider_b", "base_path": "/openai/v1", "host": "api.example.com"}
            },
            "models": {
                "small": {"input_usd_per_1m": 0.15, "output_usd_per_1m": 0.6, "cached_input_usd_per_1m": 0.075},
                "large": {"provider_model": "large-2025", "input_usd_per_1m": 2.5, "output_usd_per_1m": 10}
            },
            "categories": [
                {"name": "extraction", "when": {"model": {"equals": "extract-fields"}},
                 "candidates": [{"upstream": "cheap", "model": "small"}]},
                {"name": "general", "candidates": [{"upstream": "premium", "model": "large"}]}
            ],
            "default_category": "general"
        })
    }

    fn problems(value: Value) -> Vec<Problem> {
        match from_value(value) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn one_problem(value: Value) -> (String, String) {
        let p = problems(value);
        assert_eq!(p.len(), 1, "{p:?}");
        (p[0].path.clone(), p[0].message.clone())
    }

    #[test]
    fn valid_config_compiles_with_defaults() {
        let c = from_value(base()).unwrap();
        assert_eq!(c.route_header, "x-switchyard-cluster");
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.max_request_bytes, 1024 * 1024);
        assert!(!c.allow_category_hint);
        assert_eq!(c.categories[c.default_category].name, "general");
        let large = &c.models[c.categories[1].candidates[0].model];
        assert_eq!(large.provider_model, "large-2025");
        assert_eq!(large.price.input, Some(UsdPerMillion(2_500_000_000)));
        assert_eq!(large.price.cached_input, None);
        let up = &c.upstreams[c.categories[1].candidates[0].upstream];
        assert_eq!(up.base_path.as_deref(), Some("/openai/v1"));
        assert_eq!(c.needs, Needs::default());
    }

    #[test]
    fn prices_are_exact_integers() {
        assert_eq!(UsdPerMillion::from_usd(0.075).unwrap().nanos(), 75_000_000);
        assert_eq!(UsdPerMillion::from_usd(0.1).unwrap().nanos(), 100_000_000);
        assert_eq!(UsdPerMillion::from_usd(15.0).unwrap().nanos(), 15_000_000_000);
    }

    #[test]
    fn unknown_field_names_its_path() {
        let mut v = base();
        v["categories"][0]["candidates"][0]["weight"] = json!(2);
        let (path, msg) = one_problem(v);
        assert_eq!(path, "categories[0].candidates[0].weight");
        assert!(msg.contains("unknown field `weight`"), "{msg}");

        let mut v = base();
        v["upstreams"]["cheap"]["clustr"] = json!("x");
        let (path, msg) = one_problem(v);
        assert_eq!(path, "upstreams.cheap.clustr");
        assert!(msg.contains("unknown field `clustr`"), "{msg}");

        let mut v = base();
        v["colour"] = json!("blue");
        let (path, msg) = one_problem(v);
        assert_eq!(path, "colour");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
    }

    #[test]
    fn unknown_rule_kind_names_its_path() {
        let mut v = base();
        v["categories"][0]["when"] = json!({"all": [{"stream": true}, {"colour": "red"}]});
        let (path, msg) = one_problem(v);
        assert_eq!(path, "categories[0].when.all[1]");
        assert!(msg.contains("unknown variant `colour`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let mut v = base();
        v["max_request_bytes"] = json!("big");
        let (path, _) = one_problem(v);
        assert_eq!(path, "max_request_bytes");
    }

    #[test]
    fn dangling_references_are_reported_together() {
        let mut v = base();
        v["categories"][0]["candidates"] =
            json!([{"upstream": "nowhere", "model": "small"}, {"upstream": "cheap", "model": "ghost"}]);
        v["default_category"] = json!("missing");
        let p = problems(v);
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["categories[0].candidates[0].upstream", "categories[0].candidates[1].model", "default_category"]
        );
        assert_eq!(p[0].message, "unknown upstream `nowhere`");
        assert_eq!(p[1].message, "unknown model `ghost` (declare it under `models`)");
        assert_eq!(p[2].message, "unknown category `missing`");
    }

    #[test]
    fn empty_candidates_rejected() {
        let mut v = base();
        v["categories"][1]["candidates"] = json!([]);
        assert_eq!(one_problem(v), ("categories[1].candidates".into(), "at least one candidate is required".into()));
    }

    #[test]
    fn duplicate_candidate_and_category_rejected() {
        let mut v = base();
        v["categories"][0]["candidates"] =
            json!([{"upstream": "cheap", "model": "small"}, {"upstream": "cheap", "model": "small"}]);
        assert_eq!(one_problem(v).1, "the same upstream and model are listed twice");
        let mut v = base();
        v["categories"][1]["name"] = json!("extraction");
        v["default_category"] = json!("extraction");
        assert_eq!(one_problem(v), ("categories[1].name".into(), "category `extraction` is declared twice".into()));
    }

    #[test]
    fn invalid_regex_names_its_path() {
        let mut v = base();
        v["categories"][0]["when"] =
            json!({"any": [{"stream": true}, {"text": {"in": "last_user", "matches": "(unclosed"}}]});
        let (path, msg) = one_problem(v);
        assert_eq!(path, "categories[0].when.any[1].text.matches");
        assert!(msg.starts_with("invalid regex:"), "{msg}");

        let mut v = base();
        v["categories"][0]["when"] = json!({"header": {"name": "x-team", "matches": "[z-a]"}});
        let (path, _) = one_problem(v);
        assert_eq!(path, "categories[0].when.header.matches");
    }

    #[test]
    fn match_needs_exactly_one_test() {
        let mut v = base();
        v["categories"][0]["when"] = json!({"model": {"equals": "a", "glob": "b*"}});
        assert_eq!(
            one_problem(v),
            (
                "categories[0].when.model".into(),
                "exactly one of `equals`, `prefix`, `glob`, `matches`, `one_of` is required".into()
            )
        );
        let mut v = base();
        v["categories"][0]["when"] = json!({"header": {"name": "x-team"}});
        assert_eq!(one_problem(v).0, "categories[0].when.header");
        let mut v = base();
        v["categories"][0]["when"] = json!({"text": {"in": "all"}});
        assert_eq!(
            one_problem(v),
            ("categories[0].when.text".into(), "exactly one of `matches` or `keywords` is required".into())
        );
        let mut v = base();
        v["categories"][0]["when"] = json!({"text": {"in": "everywhere", "keywords": ["a"]}});
        let (path, msg) = one_problem(v);
        assert_eq!(path, "categories[0].when.text.in");
        assert!(msg.contains("unknown variant `everywhere`"), "{msg}");
    }

    #[test]
    fn numbers_may_be_strings_as_envoy_yaml_makes_them() {
        let mut v = base();
        v["models"]["small"]["input_usd_per_1m"] = json!("0.30");
        v["max_request_bytes"] = json!("2048");
        v["categories"][0]["when"] = json!({"tokens": {"min": 10.0, "max": "20"}});
        let c = from_value(v).unwrap();
        assert_eq!(c.models.iter().find(|m| m.name == "small").unwrap().price.input.unwrap().nanos(), 300_000_000);
        assert_eq!(c.max_request_bytes, 2048);
        let mut v = base();
        v["models"]["small"]["input_usd_per_1m"] = json!("cheap");
        assert_eq!(one_problem(v), ("models.small.input_usd_per_1m".into(), "`cheap` is not a number".into()));
        let mut v = base();
        v["max_request_bytes"] = json!(1.5);
        assert_eq!(one_problem(v), ("max_request_bytes".into(), "1.5 is not a whole number >= 0".into()));
    }

    #[test]
    fn litellm_price_list_fills_missing_prices() {
        let mut v = base();
        v["models"]["small"] = json!({"provider_model": "gpt-4o-mini", "output_usd_per_1m": 0.5});
        v["models"]["large"] = json!({"litellm_model": "anthropic/claude-x"});
        v["litellm_prices"] = json!({
            "sample_spec": {"max_tokens": "set to max tokens", "input_cost_per_token": "not a number here"},
            "gpt-4o-mini": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7,
                            "cache_read_input_token_cost": 7.5e-8, "litellm_provider": "openai", "mode": "chat"},
            "anthropic/claude-x": {"input_cost_per_token": "3e-06", "output_cost_per_token": 1.5e-5,
                                   "output_cost_per_reasoning_token": 1.5e-5}
        });
        let c = from_value(v).unwrap();
        let small = c.models.iter().find(|m| m.name == "small").unwrap();
        assert_eq!(small.price.input.unwrap().nanos(), 150_000_000);
        assert_eq!(small.price.output.unwrap().nanos(), 500_000_000, "explicit price wins");
        assert_eq!(small.price.cached_input.unwrap().nanos(), 75_000_000);
        assert_eq!(small.price.reasoning, None);
        let large = c.models.iter().find(|m| m.name == "large").unwrap();
        assert_eq!(large.price.input.unwrap().nanos(), 3_000_000_000);
        assert_eq!(large.price.reasoning.unwrap().nanos(), 15_000_000_000);

        // The same list as a JSON string.
        let mut v = base();
        v["models"]["small"] = json!({});
        v["litellm_prices"] = json!(r#"{"small": {"input_cost_per_token": 1e-6}}"#);
        let c = from_value(v).unwrap();
        assert_eq!(c.models.iter().find(|m| m.name == "small").unwrap().price.input.unwrap().nanos(), 1_000_000_000);
    }

    #[test]
    fn litellm_errors_name_their_path() {
        let mut v = base();
        v["models"]["small"] = json!({"litellm_model": "missing"});
        assert_eq!(
            one_problem(v),
            ("models.small.litellm_model".into(), "`missing` is not in `litellm_prices`".into())
        );
        let mut v = base();
        v["litellm_prices"] = json!({"small": {"input_cost_per_token": -1}});
        assert_eq!(one_problem(v).0, "litellm_prices.small.input_cost_per_token");
        let mut v = base();
        v["litellm_prices"] = json!("{not json");
        assert!(one_problem(v).1.starts_with("is not valid JSON"));
        let mut v = base();
        v["litellm_prices"] = json!([1]);
        assert_eq!(one_problem(v).0, "litellm_prices");
    }

    #[test]
    fn failover_section_and_roles() {
        let mut v = base();
        v["failover"] = json!({"statuses": [429, 529], "cooldown_default_ms": 2000, "streaming": false});
        let c = from_value(v).unwrap();
        let f = c.failover.unwrap();
        assert_eq!((f.statuses, f.streaming, f.cooldown.default_ms), (vec![429, 529], false, 2000));
        assert_eq!(c.role, Role::Front);

        let mut v = base();
        v["failover"] = json!({});
        assert_eq!(from_value(v).unwrap().failover.unwrap().statuses, vec![429, 503, 504, 529]);
        let mut v = base();
        v["failover"] = json!({"statuses": [200]});
        assert_eq!(one_problem(v).0, "failover.statuses[0]");
        let mut v = base();
        v["failover"] = json!({"cooldown_min_ms": 10, "cooldown_max_ms": 5});
        assert_eq!(one_problem(v).0, "failover");

        let mut v = base();
        v["role"] = json!("attempt");
        assert_eq!(from_value(v).unwrap().role, Role::Attempt);
        assert_eq!(from_value(json!({"role": "ledger"})).unwrap().role, Role::Ledger);
        assert_eq!(load_as(b"{}", Role::Ledger).unwrap().role, Role::Ledger);
        assert_eq!(load_as(b"", Role::Ledger).unwrap().role, Role::Ledger);
        assert_eq!(load_as(&serde_json::to_vec(&base()).unwrap(), Role::Attempt).unwrap().role, Role::Attempt);
        assert_eq!(one_problem(json!({"role": "ledger", "upstreams": {"u": {"cluster": "c"}}})).0, "role");
        assert!(one_problem(json!({"role": "judge"})).1.contains("unknown variant `judge`"));
    }

    #[test]
    fn bad_values_rejected() {
        let mut v = base();
        v["models"]["small"]["input_usd_per_1m"] = json!(-1);
        assert_eq!(one_problem(v).0, "models.small.input_usd_per_1m");
        let mut v = base();
        v["models"]["small"]["output_usd_per_1m"] = json!(1e9);
        assert!(one_problem(v).1.contains("sanity limit"));
        let mut v = base();
        v["categories"][0]["when"] = json!({"tokens": {"min": 10, "max": 5}});
        assert_eq!(one_problem(v), ("categories[0].when.tokens".into(), "`min` (10) is greater than `max` (5)".into()));
        let mut v = base();
        v["categories"][0]["name"] = json!("has space");
        assert_eq!(one_problem(v).0, "categories[0].name");
        let mut v = base();
        v["route_header"] = json!("bad header");
        assert_eq!(one_problem(v).0, "route_header");
        let mut v = base();
        v["path_prefix"] = json!("llm");
        assert_eq!(one_problem(v).0, "path_prefix");
        let mut v = base();
        v["upstreams"]["cheap"]["base_path"] = json!("v1");
        assert_eq!(one_problem(v).0, "upstreams.cheap.base_path");
        let mut v = base();
        v["categories"][0]["when"] = json!({"all": []});
        assert_eq!(one_problem(v), ("categories[0].when.all".into(), "must list at least one rule".into()));
        let mut v = base();
        v["categories"][0]["when"] = json!({"header": {"name": "x-switchyard-cluster", "present": true}});
        assert_eq!(one_problem(v).0, "categories[0].when.header.name");
        let mut v = base();
        v["upstreams"] = json!({});
        v["categories"] = json!([]);
        let paths: Vec<_> = problems(v).into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["upstreams", "categories", "default_category"]);
    }

    #[test]
    fn needs_follow_the_rules() {
        let mut v = base();
        v["categories"][0]["when"] =
            json!({"not": {"any": [{"tokens": {"max": 100}}, {"text": {"in": "system", "keywords": ["fraud"]}}]}});
        let c = from_value(v).unwrap();
        assert_eq!(c.needs, Needs { text: true, tokens: true });
    }

    #[test]
    fn load_reads_json_and_struct_bytes_alike() {
        let json_bytes = serde_json::to_vec(&base()).unwrap();
        let from_json = load(&json_bytes).unwrap();
        let struct_bytes = crate::pbstruct::encode::encode_struct(&base()).unwrap();
        let from_struct = load(&struct_bytes).unwrap();
        assert_eq!(format!("{from_json:?}"), format!("{from_struct:?}"));
    }

    #[test]
    fn load_errors_are_clear() {
        assert_eq!(load(b"  ").unwrap_err(), ConfigError::Empty);
        assert!(matches!(load(b"{\"upstreams\": ").unwrap_err(), ConfigError::Json(_)));
        assert!(matches!(load(b"\xff\xff").unwrap_err(), ConfigError::Struct(_)));
        let err = load(br#"{"upstreams": {}, "models": {}, "categories": [], "default_category": "x", "extra": 1}"#)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("switchyard configuration is invalid: extra: unknown field `extra`"),
            "{err}"
        );
    }
}
