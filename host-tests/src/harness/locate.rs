//! Finding the wasm modules the harness tests load: the probe module built from
//! `host-tests/probe-module` and the real `switchyard.wasm`.
//!
//! The probe is found through `SWITCHYARD_PROBE_WASM`, else built once per test process with
//! `cargo build --release --target wasm32-wasip1 -p switchyard-probe-module` (into
//! `CARGO_TARGET_DIR` when set, else the workspace `target/`). `switchyard.wasm` is never built
//! here: it comes from `SWITCHYARD_WASM` or the workspace's release output, and its absence is
//! reported to the caller so a test can say why it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, Context as _, Result};

/// The workspace root (the parent of `host-tests/`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or_else(|| here.to_path_buf())
}

/// Target directories to look in, in order.
pub fn target_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        dirs.push(if dir.is_absolute() { dir } else { workspace_root().join(dir) });
    }
    dirs.push(workspace_root().join("target"));
    dirs
}

/// `file` in a target directory's `wasm32-wasip1/release`, if it was built there.
pub fn release_wasm(file: &str) -> Option<PathBuf> {
    target_dirs().into_iter().map(|d| d.join("wasm32-wasip1").join("release").join(file)).find(|p| p.is_file())
}

const PROBE_FILE: &str = "switchyard_probe_module.wasm";

fn build_probe() -> std::result::Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SWITCHYARD_PROBE_WASM") {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", "wasm32-wasip1", "-p", "switchyard-probe-module"])
        .status();
    let built = release_wasm(PROBE_FILE);
    match (status, built) {
        (Ok(s), Some(path)) if s.success() => Ok(path),
        (status, _) => Err(format!(
            "the probe module is missing: set SWITCHYARD_PROBE_WASM to its path, or make \
             `cargo build --release --target wasm32-wasip1 -p switchyard-probe-module` work \
             (needs `rustup target add wasm32-wasip1`); the build said: {status:?}"
        )),
    }
}

/// The probe module's bytes (built on first use in this process).
pub fn probe_wasm() -> Result<Vec<u8>> {
    static PATH: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let path = PATH.get_or_init(build_probe).clone().map_err(|e| anyhow!(e))?;
    std::fs::read(&path).with_context(|| format!("reading the probe module at {}", path.display()))
}

/// Where `switchyard.wasm` is, if it was built: `SWITCHYARD_WASM`, else the release output.
pub fn switchyard_wasm_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_WASM") {
        return Some(PathBuf::from(path));
    }
    release_wasm("switchyard.wasm")
}
