//! Changing switchyard's configuration in a running Envoy 1.40, the two ways Envoy offers without a
//! restart (the scenario in `envoy/reload/`): the whole listener over LDS, or only the wasm filter
//! over ECDS, each read from a file that is replaced by a rename as Envoy's docs ask.
//!
//! What is proven, against the project's mock providers and fresh client connections:
//! - a configuration switchyard refuses (an unknown upstream, a JSON syntax error; with
//!   `failure_policy: FAIL_OPEN` too) is refused by Envoy as a whole: Envoy configures a throwaway
//!   copy of the VM with the new plugin configuration first, `on_configure` fails there, and the
//!   update is rejected before anything serves with it. Requests keep being routed by the previous
//!   configuration (same category, cluster and model, not a pass-through), the rejection shows in
//!   the stats and switchyard's message with the field path in Envoy's log;
//! - a valid update afterwards is applied, so the test would notice a reload that did nothing;
//! - an invalid configuration on the very first load does not stop Envoy: the LDS listener is
//!   missing, the ECDS listener answers every request with a 500 and nothing reaches a provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_host_tests::envoy::{self, Envoy, EnvoyOptions, KEEP_DIR_VAR};
use switchyard_host_tests::scenario::Scenario;

const CHAT: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"auto","messages":[{"role":"user","content":"hello"}]}"#;

/// Listener `llm` comes over LDS, listener `llm-ecds` gets its switchyard filter over ECDS.
const LDS: Source = Source { dir: "lds", file: "listener.yaml", listener: "llm" };
const ECDS: Source = Source { dir: "ecds", file: "switchyard.yaml", listener: "llm-ecds" };

/// What each configuration routes a request without a hint to, and a premium one to.
const BULK_BEFORE: &str = "200 bulk via provider_b as beta-small";
const BULK_AFTER: &str = "200 bulk via provider_a as alpha-large";
const PREMIUM: &str = "200 premium via provider_a as alpha-large";

const UNKNOWN_UPSTREAM: &str =
    "switchyard configuration is invalid: categories[1].candidates[0].upstream: unknown upstream `nowhere`";
const TRAILING_COMMA: &str = "switchyard configuration is not valid JSON: trailing comma at line ";
const WASM_REFUSED: &str = "Unable to create Wasm plugin switchyard";

#[derive(Clone, Copy)]
struct Source {
    dir: &'static str,
    file: &'static str,
    listener: &'static str,
}

impl Source {
    /// The file as shipped in `envoy/reload/`, with port 0 and the absolute wasm path.
    fn shipped(&self) -> String {
        let path = envoy::workspace_root().join("envoy/reload").join(self.dir).join(self.file);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let wasm = envoy::wasm_path().unwrap();
        text.replace("port_value: 10003 ", "port_value: 0 ")
            .replace("filename: target/wasm32-wasip1/release/switchyard.wasm", &format!("filename: {}", wasm.display()))
    }

    /// The stat prefix of this source's subscription.
    fn stats(&self) -> &'static str {
        if self.dir == "lds" {
            "listener_manager.lds"
        } else {
            "extension_config_discovery.http_filter.switchyard"
        }
    }
}

/// `text` with `from` replaced once; fails the test if `from` is not there.
fn edit(text: &str, from: &str, to: &str) -> String {
    let edited = text.replacen(from, to, 1);
    assert_ne!(edited, text, "`{from}` not found");
    edited
}

fn versioned(text: &str, version: &str) -> String {
    edit(text, "version_info: \"1\"", &format!("version_info: \"{version}\""))
}

/// `bulk`'s candidate in the shipped configuration, and after [`bulk_moved`].
const BULK_ON_BETA: &str = r#""upstream": "beta", "model": "beta-small""#;
const BULK_ON_ALPHA: &str = r#""upstream": "alpha", "model": "alpha-large""#;

/// `bulk` names an upstream that does not exist.
fn unknown_upstream(text: &str) -> String {
    edit(text, BULK_ON_BETA, r#""upstream": "nowhere", "model": "beta-small""#)
}

/// The JSON document has a trailing comma (Envoy passes the string through untouched).
fn trailing_comma(text: &str) -> String {
    edit(text, r#""default_category": "bulk""#, r#""default_category": "bulk","#)
}

/// `failure_policy: FAIL_OPEN` on the plugin, at the indentation of its sibling fields.
fn fail_open(text: &str) -> String {
    let line = text.lines().find(|l| l.trim() == "allow_on_headers_stop_iteration: true").unwrap();
    let indent = &line[..line.len() - line.trim_start().len()];
    edit(text, &format!("{line}\n"), &format!("{line}\n{indent}failure_policy: FAIL_OPEN\n"))
}

/// `bulk` moves to the other provider and model.
fn bulk_moved(text: &str) -> String {
    edit(text, BULK_ON_BETA, BULK_ON_ALPHA)
}

/// The scenario's dynamic files, in a temporary directory removed on drop.
struct DynamicFiles {
    dir: PathBuf,
}

impl DynamicFiles {
    fn new(lds: &str, ecds: &str) -> DynamicFiles {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!("switchyard-reload-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let files = DynamicFiles { dir: std::env::temp_dir().join(name) };
        for (source, text) in [(LDS, lds), (ECDS, ecds)] {
            fs::create_dir_all(files.dir.join(source.dir)).unwrap();
            fs::write(files.path(source), text).unwrap();
        }
        files
    }

    fn path(&self, source: Source) -> PathBuf {
        self.dir.join(source.dir).join(source.file)
    }

    /// Replaces the file the way Envoy's file-based config sources want it: written beside it under
    /// another name, then renamed over it (the rename into the watched directory triggers the reload,
    /// and Envoy never reads a half-written file).
    fn swap(&self, source: Source, text: &str) {
        let next = self.dir.join(source.dir).join(".next.yaml");
        fs::write(&next, text).unwrap();
        fs::rename(&next, self.path(source)).unwrap();
    }
}

impl Drop for DynamicFiles {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_DIR_VAR).is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `envoy/reload/envoy.yaml` running with its dynamic files in a temporary directory.
struct Reload {
    scenario: Scenario,
    files: DynamicFiles,
}

impl Reload {
    fn start(lds: &str, ecds: &str) -> Reload {
        let files = DynamicFiles::new(lds, ecds);
        let dir = format!("{}/", files.dir.display());
        let scenario = Scenario::start_edited("reload", 2, EnvoyOptions::default(), |yaml| {
            assert!(yaml.contains("path: envoy/reload/lds/") && yaml.contains("path: envoy/reload/ecds/"));
            yaml.replace("envoy/reload/", &dir)
        })
        .expect("the reload scenario starts");
        Reload { scenario, files }
    }

    fn envoy(&self) -> &Envoy {
        &self.scenario.envoy
    }

    fn swap(&self, source: Source, text: &str) {
        self.files.swap(source, text);
    }

    /// The port `listener` is bound to now, asked of the admin API (a listener that came over LDS
    /// may appear after Envoy started).
    fn port(&self, listener: &str) -> Option<u16> {
        let body = self.envoy().admin_get("/listeners?format=json").ok()?;
        let value: Value = serde_json::from_str(&body).ok()?;
        value["listener_statuses"]
            .as_array()?
            .iter()
            .find(|status| status["name"] == listener)?
            .pointer("/local_address/socket_address/port_value")?
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
    }

    /// Sends the chat request on a new connection to `listener` and says how it was routed.
    fn route(&self, listener: &str, headers: &[(&str, &str)]) -> String {
        let port = self.port(listener).unwrap_or_else(|| panic!("no listener `{listener}`"));
        // A new agent is a new connection: what a new client gets, whatever earlier ones were given.
        let mut request = envoy::http_agent()
            .post(&format!("http://127.0.0.1:{port}{CHAT}"))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(BODY).unwrap();
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let summary = summary(status, header);
        let body = response.body_mut().read_to_string().unwrap();
        if status == 500 {
            assert_eq!(body, "", "Envoy's own 500 has no body");
        }
        summary
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy().stat(name).unwrap_or_else(|| panic!("Envoy has no stat {name}"))
    }

    /// Waits until the counter reaches `value` (a file update is read on Envoy's main thread shortly
    /// after the rename).
    fn wait_for_stat(&self, name: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.envoy().stat(name) != Some(value) {
            let prefix = name.rsplit_once('.').map_or(name, |(prefix, _)| prefix);
            assert!(
                Instant::now() < deadline,
                "{name} is {:?}, not {value}: {:?}",
                self.envoy().stat(name),
                self.envoy().stats_matching(prefix)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A text readout such as `listener_manager.lds.version_text` (the version of the config in use).
    fn text_stat(&self, name: &str) -> Option<String> {
        let body = self.envoy().admin_get("/stats?format=json&filter=version_text").ok()?;
        let value: Value = serde_json::from_str(&body).ok()?;
        value["stats"].as_array()?.iter().find(|s| s["name"] == name)?["value"].as_str().map(str::to_owned)
    }

    fn version(&self, source: Source) -> Option<String> {
        self.text_stat(&format!("{}.version_text", source.stats()))
    }

    /// Envoy's log from byte `mark` on.
    fn log_since(&self, mark: usize) -> String {
        self.envoy().log().get(mark..).unwrap_or_default().to_owned()
    }

    /// Waits until the log from `mark` on contains `needle` (worker threads log a moment later).
    fn wait_for_log_since(&self, mark: usize, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_since(mark);
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "`{needle}` not in Envoy's log since the update:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a new connection to `listener` is routed as `expected` (an accepted listener
    /// update reaches the workers a moment after the main thread counts it).
    fn wait_for_route(&self, listener: &str, headers: &[(&str, &str)], expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let route = self.route(listener, headers);
            if route == expected {
                return;
            }
            assert!(Instant::now() < deadline, "{listener} still routes `{route}`, expected `{expected}`");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces `source`'s file with `text`, which switchyard must refuse, and checks that Envoy
    /// rejected the update (the `rejected`-th so far) with `message` in its log, and that the
    /// configuration before it still routes, on new connections and on `kept`.
    fn refuse(&self, source: Source, text: &str, rejected: u64, message: &str, kept: &mut KeptConnection) {
        let mark = self.envoy().log().len();
        let successes = self.stat(&format!("{}.update_success", source.stats()));
        self.swap(source, text);
        self.wait_for_stat(&format!("{}.update_rejected", source.stats()), rejected);
        assert_eq!(self.stat(&format!("{}.update_success", source.stats())), successes);
        assert_eq!(self.version(source).as_deref(), Some("1"), "the version in use is still the first");

        let envoy_says = match source.dir {
            "lds" => format!("lds: listener 'llm' config rejected: {WASM_REFUSED}"),
            _ => format!("Filesystem config update rejected: {WASM_REFUSED}"),
        };
        let log = self.wait_for_log_since(mark, &envoy_says);
        assert!(
            log.contains(&format!("wasm log switchyard switchyard: {message}")),
            "switchyard's message missing:\n{log}"
        );

        for _ in 0..3 {
            assert_eq!(self.route(source.listener, &[]), BULK_BEFORE, "the previous configuration routes");
        }
        assert_eq!(self.route(source.listener, &[("x-tier", "premium")]), PREMIUM);
        assert_eq!(kept.route(&[]), BULK_BEFORE, "a connection opened before the update is undisturbed");
    }
}

/// `"<status> <category> via <provider> as <model>"`, `-` for what is missing: a pass-through
/// would read `200 - via provider_a as auto`.
fn summary(status: u16, header: impl Fn(&str) -> Option<String>) -> String {
    let or_dash = |name: &str| header(name).unwrap_or_else(|| "-".to_owned());
    format!(
        "{status} {} via {} as {}",
        or_dash("x-switchyard-category"),
        or_dash("x-mock-upstream"),
        or_dash("x-mock-model")
    )
}

/// One HTTP/1.1 connection kept open across configuration updates.
struct KeptConnection {
    reader: BufReader<TcpStream>,
}

impl KeptConnection {
    fn open(port: u16) -> KeptConnection {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        KeptConnection { reader: BufReader::new(stream) }
    }

    fn route(&mut self, headers: &[(&str, &str)]) -> String {
        let mut request = format!(
            "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            BODY.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(BODY);
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();

        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            panic!("no status line on the kept connection: {status_line:?}");
        });
        let mut response_headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            response_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let header = |name: &str| response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let length: usize = header("content-length").expect("answers here have a content-length").parse().unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        summary(status, header)
    }
}

/// Listener `llm` in Envoy's config dump: (the switchyard configuration of the listener in use,
/// the error of the last refused update). The dump's `version_info` is left out: for a listener
/// read from a file, Envoy 1.40 keeps the first one there across updates (`version_text` is right).
fn dumped_listener(envoy: &Envoy) -> (String, Option<String>) {
    let dump = envoy.admin_get("/config_dump?resource=dynamic_listeners").unwrap();
    let dump: Value = serde_json::from_str(&dump).unwrap();
    let listener = dump["configs"].as_array().unwrap().iter().find(|c| c["name"] == "llm").unwrap();
    let filter = &listener["active_state"]["listener"]["filter_chains"][0]["filters"][0]["typed_config"];
    let config = filter["http_filters"][0]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap();
    (config.to_owned(), listener.pointer("/error_state/details").and_then(Value::as_str).map(str::to_owned))
}

fn assert_first_routing(r: &Reload, source: Source) {
    assert_eq!(r.route(source.listener, &[]), BULK_BEFORE);
    assert_eq!(r.route(source.listener, &[("x-tier", "premium")]), PREMIUM);
    assert_eq!(r.version(source).as_deref(), Some("1"));
}

#[test]
fn a_listener_update_switchyard_refuses_is_rejected_and_the_previous_config_keeps_routing() {
    let (lds, ecds) = (LDS.shipped(), ECDS.shipped());
    let r = Reload::start(&lds, &ecds);
    assert_first_routing(&r, LDS);
    assert_eq!(r.stat("listener_manager.lds.update_success"), 1);
    let port = r.port("llm").unwrap();
    let mut kept = KeptConnection::open(port);
    assert_eq!(kept.route(&[]), BULK_BEFORE);

    r.refuse(LDS, &versioned(&unknown_upstream(&lds), "2"), 1, UNKNOWN_UPSTREAM, &mut kept);
    r.refuse(LDS, &versioned(&trailing_comma(&lds), "3"), 2, TRAILING_COMMA, &mut kept);
    // Failing open is about a VM that breaks while serving; it does not let a refused config in.
    r.refuse(LDS, &versioned(&fail_open(&unknown_upstream(&lds)), "4"), 3, UNKNOWN_UPSTREAM, &mut kept);

    let (active, error) = dumped_listener(r.envoy());
    assert!(active.contains(BULK_ON_BETA), "{active}");
    assert_eq!(error.as_deref(), Some(WASM_REFUSED));
    assert_eq!(r.port("llm"), Some(port), "the listener was never replaced");
    assert_eq!(r.stat("listener_manager.listener_modified"), 0);
    assert_eq!(r.stat("listener_manager.total_listeners_active"), 2);

    // A valid update is applied: new connections are routed by it.
    r.swap(LDS, &versioned(&bulk_moved(&lds), "5"));
    r.wait_for_stat("listener_manager.lds.update_success", 2);
    assert_eq!(r.version(LDS).as_deref(), Some("5"));
    r.wait_for_route("llm", &[], BULK_AFTER);
    assert_eq!(r.route("llm", &[("x-tier", "premium")]), PREMIUM);
    assert_eq!(r.stat("listener_manager.lds.update_rejected"), 3);
    assert_eq!(r.stat("listener_manager.listener_in_place_updated"), 1);
    assert_eq!(r.port("llm"), Some(port), "an in-place update keeps the socket");
    let (active, error) = dumped_listener(r.envoy());
    assert!(active.contains(BULK_ON_ALPHA), "{active}");
    assert_eq!(error, None, "an accepted update clears the error");
    // A connection accepted before the update keeps the filter chain it was accepted on until
    // Envoy drains it (`--drain-time-s`, 600 s by default).
    assert_eq!(kept.route(&[]), BULK_BEFORE);
    // The ECDS listener was not touched by any of this.
    assert_eq!(r.route("llm-ecds", &[]), BULK_BEFORE);
}

#[test]
fn a_filter_update_over_ecds_switchyard_refuses_is_rejected_and_the_previous_config_keeps_routing() {
    let (lds, ecds) = (LDS.shipped(), ECDS.shipped());
    let r = Reload::start(&lds, &ecds);
    assert_first_routing(&r, ECDS);
    let prefix = ECDS.stats();
    assert_eq!(r.stat(&format!("{prefix}.update_success")), 1);
    let mut kept = KeptConnection::open(r.port("llm-ecds").unwrap());
    assert_eq!(kept.route(&[]), BULK_BEFORE);

    r.refuse(ECDS, &versioned(&unknown_upstream(&ecds), "2"), 1, UNKNOWN_UPSTREAM, &mut kept);
    r.refuse(ECDS, &versioned(&trailing_comma(&ecds), "3"), 2, TRAILING_COMMA, &mut kept);
    assert_eq!(r.stat(&format!("{prefix}.config_fail")), 2);

    // Envoy 1.40's config dump shows the refused filter config as the ECDS entry (version "3",
    // trailing comma and all), although it serves version 1: read the stats above, not the dump.
    let dump = r.envoy().admin_get("/config_dump?resource=ecds_filters").unwrap();
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["configs"][0]["version_info"], "3", "{dump}");

    // A valid update is applied, to the next request on every connection.
    r.swap(ECDS, &versioned(&bulk_moved(&ecds), "4"));
    r.wait_for_stat(&format!("{prefix}.update_success"), 2);
    assert_eq!(r.version(ECDS).as_deref(), Some("4"));
    r.wait_for_route("llm-ecds", &[], BULK_AFTER);
    assert_eq!(r.route("llm-ecds", &[("x-tier", "premium")]), PREMIUM);
    assert_eq!(kept.route(&[]), BULK_AFTER);
    assert_eq!(r.stat(&format!("{prefix}.update_rejected")), 2);
    // The LDS listener has its own copy of the configuration.
    assert_eq!(r.route("llm", &[]), BULK_BEFORE);
}

#[test]
fn an_invalid_first_config_leaves_the_lds_listener_out_and_the_ecds_listener_failing_closed() {
    let (lds, ecds) = (LDS.shipped(), ECDS.shipped());
    let r = Reload::start(&unknown_upstream(&lds), &unknown_upstream(&ecds));
    // Envoy runs (the driver saw /ready answer 200), with switchyard's message in its log.
    let log = r.envoy().log();
    assert!(log.matches(UNKNOWN_UPSTREAM).count() >= 2, "{log}");
    assert_eq!(r.stat("listener_manager.lds.update_rejected"), 1);
    assert_eq!(r.stat(&format!("{}.update_rejected", ECDS.stats())), 1);

    // LDS: the listener does not exist.
    assert_eq!(r.port("llm"), None);
    assert_eq!(r.stat("listener_manager.total_listeners_active"), 1);
    // ECDS: the listener is up, and every request on it gets Envoy's 500; none reaches a provider.
    assert_eq!(r.route("llm-ecds", &[]), "500 - via - as -");
    assert_eq!(r.route("llm-ecds", &[("x-tier", "premium")]), "500 - via - as -");
    let port = r.port("llm-ecds").unwrap();
    let health = envoy::http_agent().get(&format!("http://127.0.0.1:{port}/healthz")).call().unwrap();
    assert_eq!(health.status(), 500, "requests switchyard would not inspect fail too");
    assert_eq!(r.scenario.total_hits(), 0);

    // The first valid configuration brings both into service.
    r.swap(LDS, &versioned(&lds, "2"));
    r.swap(ECDS, &versioned(&ecds, "2"));
    r.wait_for_stat("listener_manager.lds.update_success", 1);
    r.wait_for_stat(&format!("{}.update_success", ECDS.stats()), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.port("llm").is_none() {
        assert!(Instant::now() < deadline, "listener llm never appeared");
        thread::sleep(Duration::from_millis(20));
    }
    r.wait_for_route("llm", &[], BULK_BEFORE);
    r.wait_for_route("llm-ecds", &[], BULK_BEFORE);
    assert_eq!(r.route("llm-ecds", &[("x-tier", "premium")]), PREMIUM);
}
