//! `proxy_get_property`: the attributes Envoy exposes to a module, reduced to the ones the harness
//! can answer exactly, plus filter state written with `proxy_set_property`.
//!
//! Envoy resolves a path through its CEL activation: `plugin_name`, `plugin_root_id` and
//! `plugin_vm_id` always; `request.*` attributes derived from headers only while Envoy still holds
//! the request header map (inside the header callback, while the filter pauses the request, or in
//! the access-log phase) and `response.*` likewise; then filter state `wasm.<name>`; else
//! `NotFound`. Values are serialised like Envoy's: strings as bytes, integers as 8 little-endian
//! bytes, maps as header pairs.
//!
//! Attributes Envoy has but the harness cannot know (connection details, `xds.*`, metadata, request
//! sizes and times, ...) fail the test, unless the test supplied a value with
//! [`HostBuilder::property`](super::HostBuilder::property) or
//! [`Stream::set_property`](super::Stream::set_property).

use anyhow::{bail, Result};

use super::abi::{self, Status};
use super::vm::{HeaderMap, VmState};

/// Top-level names Envoy answers that the harness does not model.
const UNMODELLED: &[&str] = &[
    "connection",
    "source",
    "destination",
    "metadata",
    "filter_state",
    "upstream_filter_state",
    "xds",
    "node",
    "connection_id",
    "route_name",
    "route_metadata",
    "cluster_name",
    "cluster_metadata",
    "listener_direction",
    "listener_metadata",
    "upstream_host_metadata",
];

fn split(path: &[u8]) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    path.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

fn found(bytes: impl Into<Vec<u8>>) -> Result<std::result::Result<Vec<u8>, Status>> {
    Ok(Ok(bytes.into()))
}

fn not_found() -> Result<std::result::Result<Vec<u8>, Status>> {
    Ok(Err(Status::NotFound))
}

fn map_value(map: &HeaderMap, rest: &[String]) -> Result<std::result::Result<Vec<u8>, Status>> {
    match rest {
        [] => found(abi::serialize_pairs(&map.0)?),
        [name] => match map.get(name) {
            Some(v) => found(v.as_bytes()),
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// Resolves a `\0`-separated property path for the current context.
pub fn get(s: &mut VmState, raw: &[u8]) -> Result<std::result::Result<Vec<u8>, Status>> {
    let path = split(raw);
    let Some(top) = path.first().cloned() else {
        return not_found();
    };
    let rest: Vec<String> = path.get(1..).map(<[String]>::to_vec).unwrap_or_default();

    // Values the test supplied win: first for this stream, then for the host.
    if let Some(stream) = s.stream() {
        if let Some(v) = stream.properties.get(&path) {
            return found(v.clone());
        }
    }
    if let Some(v) = s.config.properties.get(&path) {
        return found(v.clone());
    }

    match top.as_str() {
        "plugin_name" if rest.is_empty() => return found(s.config.plugin_name.as_bytes()),
        "plugin_root_id" if rest.is_empty() => return found(s.config.root_id.as_bytes()),
        "plugin_vm_id" if rest.is_empty() => return found(s.config.vm_id.as_bytes()),
        _ => {}
    }

    // Everything else needs a stream (Envoy's root context has no stream info).
    let Some(stream) = s.stream() else {
        return not_found();
    };

    match top.as_str() {
        "request" => {
            let headers = if stream.in_log_phase {
                stream.log_req_headers.clone()
            } else {
                stream.req_headers.readable().cloned()
            };
            let Some(field) = rest.first() else {
                bail!("property `request` as a whole is not modelled by the harness");
            };
            let header_field = |name: &str| -> Result<std::result::Result<Vec<u8>, Status>> {
                match headers.as_ref().and_then(|h| h.get(name)) {
                    Some(v) => found(v.as_bytes()),
                    None => not_found(),
                }
            };
            match field.as_str() {
                "path" => header_field(":path"),
                "host" => header_field(":authority"),
                "scheme" => header_field(":scheme"),
                "method" => header_field(":method"),
                "referer" => header_field("referer"),
                "useragent" => header_field("user-agent"),
                "id" => header_field("x-request-id"),
                "url_path" | "query" => {
                    let Some(p) = headers.as_ref().and_then(|h| h.get(":path")) else {
                        return not_found();
                    };
                    let (path, query) = p.split_once('?').unwrap_or((p, ""));
                    found(if field == "url_path" { path } else { query }.as_bytes())
                }
                "headers" => match headers {
                    Some(h) => map_value(&h, rest.get(1..).unwrap_or_default()),
                    None => not_found(),
                },
                other => bail!(
                    "property request.{other} is provided by Envoy but not modelled by the harness; \
                     supply it with HostBuilder::property or Stream::set_property"
                ),
            }
        }
        "response" => {
            let Some(field) = rest.first() else {
                bail!("property `response` as a whole is not modelled by the harness");
            };
            let headers = if stream.in_log_phase {
                stream.log_resp_headers.clone()
            } else {
                stream.resp_headers.readable().cloned()
            };
            match field.as_str() {
                "code" => match stream.response_code {
                    Some(code) => found(i64::from(code).to_le_bytes()),
                    None => not_found(),
                },
                "code_details" => match &stream.response_code_details {
                    Some(d) => found(d.as_bytes()),
                    None => not_found(),
                },
                "headers" => match headers {
                    Some(h) => map_value(&h, rest.get(1..).unwrap_or_default()),
                    None => not_found(),
                },
                "trailers" => {
                    let t = if stream.in_log_phase {
                        stream.log_resp_trailers.clone()
                    } else {
                        stream.resp_trailers.readable().cloned()
                    };
                    match t {
                        Some(h) => map_value(&h, rest.get(1..).unwrap_or_default()),
                        None => not_found(),
                    }
                }
                other => bail!(
                    "property response.{other} is provided by Envoy but not modelled by the harness; \
                     supply it with HostBuilder::property or Stream::set_property"
                ),
            }
        }
        "upstream" => match rest.first().map(String::as_str) {
            Some("address") => match &stream.upstream_address {
                Some(a) => found(a.as_bytes()),
                None => not_found(),
            },
            Some("port") => match stream.upstream_address.as_ref().and_then(|a| a.rsplit_once(':')) {
                Some((_, port)) => match port.parse::<i64>() {
                    Ok(p) => found(p.to_le_bytes()),
                    Err(_) => bail!("upstream address has no numeric port"),
                },
                None => not_found(),
            },
            other => bail!(
                "property upstream.{} is provided by Envoy but not modelled by the harness; \
                 supply it with HostBuilder::property or Stream::set_property",
                other.unwrap_or("")
            ),
        },
        name if UNMODELLED.contains(&name) => bail!(
            "property {} is provided by Envoy but not modelled by the harness; supply it with \
             HostBuilder::property or Stream::set_property",
            path.join(".")
        ),
        _ => {
            // Filter state written by proxy_set_property (Envoy keys it `wasm.<path>`).
            match stream.filter_state.get(top.as_bytes()) {
                Some(v) if rest.is_empty() => found(v.clone()),
                _ => not_found(),
            }
        }
    }
}
