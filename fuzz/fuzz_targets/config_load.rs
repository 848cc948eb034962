//! Config loader: arbitrary bytes to `config::load` and `load_as` for each role, as Envoy hands
//! them over (JSON text, or the wire bytes of a `google.protobuf.Struct`). When the bytes are JSON,
//! the same document is also encoded as a Struct and loaded that way, so JSON-shaped mutations reach
//! the Struct path too. A config that loads must be usable as it is: every index it holds is valid,
//! and a request routed with it is decided without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{self, Config, ConfigError, Role};
use switchyard::headers::Headers;
use switchyard::request;
use switchyard::route;
use switchyard_fuzz::encode_struct;

const ROLES: [Role; 3] = [Role::Front, Role::Attempt, Role::Ledger];

const BODIES: [&[u8]; 3] = [
    br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"system","content":"You review fraud."},{"role":"user","content":"Is this a chargeback? 4111-1111-1111-1111"}],"tools":[{"type":"function","function":{"name":"f"}}],"metadata":{"team":"ops"},"user":"human-7"}"#,
    br#"{"model":"extract-fields","response_format":{"type":"json_object"},"prompt":"x"}"#,
    br#"{"model":"text-embedding-3-small","input":["a","b"]}"#,
];

fuzz_target!(|data: &[u8]| {
    check(data, config::load(data), Role::Front);
    for role in ROLES {
        check(data, config::load_as(data, role), role);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(bytes) = encode_struct(&value) {
            for role in ROLES {
                check(&bytes, config::load_as(&bytes, role), role);
            }
        }
    }
});

fn check(bytes: &[u8], loaded: Result<Config, ConfigError>, default_role: Role) {
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            // Every refusal explains itself.
            assert!(!error.to_string().is_empty());
            if let ConfigError::Invalid(problems) = &error {
                assert!(!problems.is_empty(), "an invalid config with no problem listed");
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                assert_ne!(default_role, Role::Ledger, "the ledger needs no settings: {error}");
            }
            return;
        }
    };
    if config.role == Role::Ledger {
        assert!(config.categories.is_empty() && config.upstreams.is_empty() && config.models.is_empty());
        return;
    }
    assert!(!config.categories.is_empty() && !config.upstreams.is_empty());
    assert!(config.default_category < config.categories.len(), "default category out of range");
    assert!(config.max_request_bytes > 0 && config.max_response_bytes > 0);
    assert!(
        config.path_prefix.is_empty() || (config.path_prefix.starts_with('/') && !config.path_prefix.ends_with('/'))
    );
    assert!(config.route_header.bytes().all(|b| !b.is_ascii_uppercase()) && !config.route_header.is_empty());
    for category in &config.categories {
        assert!(!category.candidates.is_empty(), "category `{}` has no candidate", category.name);
        assert_eq!(config.category_index(&category.name).map(|i| &config.categories[i].name), Some(&category.name));
        for candidate in &category.candidates {
            assert!(candidate.upstream < config.upstreams.len(), "candidate upstream out of range");
            assert!(candidate.model < config.models.len(), "candidate model out of range");
        }
    }
    for model in &config.models {
        assert!(!model.provider_model.is_empty());
    }
    for upstream in &config.upstreams {
        if let Some(base) = &upstream.base_path {
            assert!(base.starts_with('/') && !base.ends_with('/'), "base path `{base}`");
        }
    }
    if let Some(failover) = &config.failover {
        let policy = failover.cooldown;
        assert!(policy.min_ms <= policy.max_ms);
        assert!(failover.statuses.iter().all(|s| (400..=599).contains(s)) && !failover.statuses.is_empty());
    }
    // The compiled rules run: a few requests on every endpoint, with every category as a hint.
    let headers = Headers::from_pairs(&[("x-team", "risk"), ("x-tier", "gold")]);
    for (i, body) in BODIES.iter().enumerate() {
        for suffix in ["/chat/completions", "/completions", "/embeddings", "/responses"] {
            let path = format!("{}/v1{suffix}", config.path_prefix);
            let target = request::target(&config.path_prefix, &path).expect("a well-formed path is recognised");
            let hint = config.categories.get(i).map(|c| c.name.as_str());
            for hint in [None, hint] {
                if let Ok(d) = route::decide(&config, &path, &target, &headers, hint, body, &route::never_cooling, 0) {
                    assert!(d.category < config.categories.len());
                    if let Some(out) = d.body {
                        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok());
                    }
                }
            }
        }
    }
}
