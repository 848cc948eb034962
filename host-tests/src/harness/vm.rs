//! One VM: a wasmtime instance of the module plus the per-VM state the hostcalls read and write
//! (Envoy's `Context` objects, reduced to what a proxy-wasm module can observe).
//!
//! Envoy runs one VM per worker thread. Each [`Vm`] here has its own wasmtime `Store`, so its
//! linear memory, its contexts, its metric ids and its pending HTTP calls are its own; what workers
//! share lives in [`SharedStore`]. The engine and compiled modules are
//! cached per process (compiling is the slow part and is a pure function of the bytes); no host
//! state is.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash as _, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context as _, Result};
use wasmtime::{Caller, Engine, Instance, Linker, Memory, Module, Store, TypedFunc};

use super::abi::{LogLevel, MetricKind};
use super::host::HostConfig;
use super::shared::SharedStore;

/// A map keyed by small integers (context ids, metric ids), looked up on most hostcalls: hashed
/// with one multiply per word instead of SipHash.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`].
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A header map as Envoy keeps it: ordered entries, lower-case keys, pseudo-headers first.
///
/// The entries are shared until changed: the harness keeps a map's state at several points of a
/// stream (what the filter sees, what went on, what the access log reads), and a copy that nobody
/// changes costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap(pub Rc<Vec<(String, String)>>);

impl HeaderMap {
    /// Builds a map from test input, lower-casing keys like Envoy's codecs do.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut map = Self::default();
        for (k, v) in pairs {
            map.add(k, v);
        }
        map
    }

    /// First value of `key` (Envoy returns only the first of repeated headers).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// A map of entries the caller no longer needs, added in their order with
    /// [`HeaderMap::add_owned`] (a new map: nothing is copied on the way).
    pub fn from_owned(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let pairs = pairs.into_iter();
        let mut map = HeaderMap(Rc::new(Vec::with_capacity(pairs.size_hint().0)));
        for (key, value) in pairs {
            map.add_owned(key, value);
        }
        map
    }

    /// The entries, to change them (copied first if another copy of the map shares them).
    pub fn entries_mut(&mut self) -> &mut Vec<(String, String)> {
        Rc::make_mut(&mut self.0)
    }

    /// `addCopy`: appends, keeping pseudo-headers ahead of regular ones.
    pub fn add(&mut self, key: &str, value: &str) {
        self.add_owned(key.to_owned(), value.to_owned());
    }

    /// [`HeaderMap::add`] of strings the caller no longer needs.
    pub fn add_owned(&mut self, mut key: String, value: String) {
        key.make_ascii_lowercase();
        let entries = self.entries_mut();
        if key.starts_with(':') {
            let at = entries.iter().take_while(|(k, _)| k.starts_with(':')).count();
            entries.insert(at, (key, value));
        } else {
            entries.push((key, value));
        }
    }

    /// `remove`: drops every entry of `key`.
    pub fn remove(&mut self, key: &str) {
        if self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            self.entries_mut().retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        }
    }

    /// `setCopy`: removes every entry of `key`, then adds the new value.
    pub fn replace(&mut self, key: &str, value: &str) {
        self.replace_owned(key.to_owned(), value.to_owned());
    }

    /// [`HeaderMap::replace`] of strings the caller no longer needs.
    pub fn replace_owned(&mut self, key: String, value: String) {
        self.remove(&key);
        self.add_owned(key, value);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Envoy's `byteSize`: the sum of key and value lengths.
    pub fn byte_size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Who may touch a header map right now, mirroring Envoy's header pointers.
#[derive(Debug, Clone, Default)]
pub enum MapAccess {
    /// Envoy's pointer is null: reads of a value and writes answer `BadArgument`, reading all pairs
    /// gives an empty map.
    #[default]
    Unavailable,
    /// The map is held by the filter (inside its callback or while it pauses the stream).
    Live(HeaderMap),
    /// Envoy still points at the map but it has already been sent on; a write would be accepted by
    /// Envoy and silently lost, so the harness fails the test instead.
    Sent(HeaderMap),
}

impl MapAccess {
    /// The map, if any view of it is readable.
    pub fn readable(&self) -> Option<&HeaderMap> {
        match self {
            Self::Unavailable => None,
            Self::Live(m) | Self::Sent(m) => Some(m),
        }
    }
}

/// A local reply requested with `proxy_send_local_response`.
#[derive(Debug, Clone)]
pub struct LocalReplySpec {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub grpc_status: i32,
}

/// What a callback asked Envoy to do once it returns (Envoy defers these "after VM call" actions).
#[derive(Debug, Clone, Default)]
pub struct Actions {
    pub continue_request: bool,
    pub continue_response: bool,
    pub reset: Option<String>,
    pub local_reply: Option<LocalReplySpec>,
}

impl Actions {
    pub fn is_empty(&self) -> bool {
        !self.continue_request && !self.continue_response && self.reset.is_none() && self.local_reply.is_none()
    }
}

/// Request/response state of one HTTP stream context, as the hostcalls see it.
#[derive(Debug, Default)]
pub struct StreamState {
    pub req_headers: MapAccess,
    /// Request headers detached by `proxy_continue_stream(HttpRequest)`, waiting to be forwarded.
    pub continued_req_headers: Option<HeaderMap>,
    pub req_trailers: MapAccess,
    pub req_body: Option<Vec<u8>>,
    pub req_body_eos: bool,
    pub resp_headers: MapAccess,
    pub resp_trailers: MapAccess,
    pub resp_body: Option<Vec<u8>>,
    pub resp_body_eos: bool,
    /// Trailers a body callback added at end of stream (Envoy's `addDecodedTrailers`).
    pub added_req_trailers: Option<HeaderMap>,
    pub added_resp_trailers: Option<HeaderMap>,
    /// What the access-log phase (`proxy_on_log`) reads: each map as it was when it stopped being
    /// readable (forwarded, replaced by a local reply, or still held at the end of the stream).
    pub log_req_headers: Option<HeaderMap>,
    pub log_resp_headers: Option<HeaderMap>,
    pub log_resp_trailers: Option<HeaderMap>,
    pub in_log_phase: bool,
    /// Filter state written with `proxy_set_property`, keyed by the raw path (without `wasm.`).
    pub filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub actions: Actions,
    pub route_cache_clears: u32,
    pub response_code: Option<u32>,
    pub response_code_details: Option<String>,
    pub upstream_address: Option<String>,
    /// Property values a test set for this stream only.
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    /// `proxy_on_done` returned false: the module owes a `proxy_done`.
    pub pending_done: bool,
    pub done_called: bool,
}

/// An HTTP call a module dispatched with `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallRequest {
    /// Worker (VM index) that dispatched it.
    pub worker: usize,
    /// Token returned to the module.
    pub token: u32,
    /// Context that made the call (the effective context at the time).
    pub context_id: u32,
    /// Cluster (upstream) name.
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub timeout_ms: u32,
}

impl HttpCallRequest {
    /// First value of a request header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// The response of an HTTP call while `proxy_on_http_call_response` runs.
#[derive(Debug, Clone, Default)]
pub struct CallResponseData {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Worker (VM index) that logged it.
    pub worker: usize,
    pub level: LogLevel,
    pub message: String,
}

/// Wall and monotonic clock of a host, advanced only by the test.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub unix_nanos: u64,
    pub monotonic_nanos: u64,
}

/// The data of one wasmtime store: everything the hostcalls of one VM can reach.
pub struct VmState {
    pub worker: usize,
    pub config: Arc<HostConfig>,
    pub shared: Arc<SharedStore>,
    pub logs: Arc<Mutex<Vec<LogEntry>>>,
    pub clock: Arc<Mutex<Clock>>,
    pub memory: Option<Memory>,
    pub alloc: Option<Rc<TypedFunc<i32, i32>>>,
    pub root_context_id: u32,
    pub next_context_id: u32,
    pub current_context: u32,
    pub effective_context: Option<u32>,
    /// The plugin configuration, readable only during `proxy_on_configure`.
    pub plugin_config: Option<Vec<u8>>,
    pub tick_period_ms: u32,
    /// Monotonic time of the last tick (or of setting the period): the next tick is one period on.
    pub tick_anchor_nanos: u64,
    /// State of the deterministic generator behind WASI `random_get`.
    pub rng: u64,
    pub streams: IdMap<u32, StreamState>,
    pub next_http_token: u32,
    pub pending_http_calls: Vec<HttpCallRequest>,
    pub call_response: Option<CallResponseData>,
    pub call_status: (u32, String),
    /// Metric id → (kind, name, slot in the shared stats store); ids carry the kind in their low
    /// two bits like Envoy's.
    pub metric_ids: IdMap<u32, (MetricKind, String, usize)>,
    pub next_metric_seq: u32,
    pub route_cache_clears_root: u32,
}

impl VmState {
    /// The context hostcalls act on: the effective context if set, else the one being called.
    pub fn context_id(&self) -> u32 {
        self.effective_context.unwrap_or(self.current_context)
    }

    /// The stream the current context is, if it is one.
    pub fn stream(&mut self) -> Option<&mut StreamState> {
        let id = self.context_id();
        self.streams.get_mut(&id)
    }

    /// Appends a log line to the host's capture.
    pub fn log(&self, level: LogLevel, message: String) -> Result<()> {
        if level < self.config.log_level {
            // Envoy's logger drops lines below its level.
            return Ok(());
        }
        self.logs.lock().map_err(|_| anyhow!("log capture lock poisoned"))?.push(LogEntry {
            worker: self.worker,
            level,
            message,
        });
        Ok(())
    }

    pub fn now(&self) -> Result<Clock> {
        Ok(*self.clock.lock().map_err(|_| anyhow!("clock lock poisoned"))?)
    }
}

/// Process-wide engine: compiled code is shareable and immutable; host state is never here.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // `SWITCHYARD_WASM_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf report` names the
        // module's functions (for profiling the benchmarks); otherwise wasmtime's defaults.
        if std::env::var_os("SWITCHYARD_WASM_PERFMAP").is_some_and(|v| v == "1") {
            let mut config = wasmtime::Config::new();
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            if let Ok(engine) = Engine::new(&config) {
                return engine;
            }
        }
        Engine::default()
    })
}

/// Compiles `bytes`, reusing an earlier compilation of the same bytes in this process. Parallel
/// tests asking for the same module wait for one compilation instead of each compiling it.
pub fn compile(bytes: &[u8]) -> Result<Module> {
    type Slot = Arc<Mutex<Option<Module>>>;
    static CACHE: OnceLock<Mutex<HashMap<(u64, usize), Slot>>> = OnceLock::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let key = (hasher.finish(), bytes.len());
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| anyhow!("module cache poisoned"))?
        .entry(key)
        .or_default()
        .clone();
    let mut slot = slot.lock().map_err(|_| anyhow!("module cache slot poisoned"))?;
    if let Some(m) = slot.as_ref() {
        return Ok(m.clone());
    }
    let module = match load_compiled(key) {
        Some(m) => m,
        None => {
            let m = Module::new(engine(), bytes).map_err(anyhow::Error::from).context("compiling the wasm module")?;
            store_compiled(key, &m);
            m
        }
    };
    *slot = Some(module.clone());
    Ok(module)
}

/// Where compiled modules are kept between test runs: compiling a large module with a debug build
/// of Cranelift takes tens of seconds, loading the result takes milliseconds.
fn compiled_path(key: (u64, usize)) -> Option<std::path::PathBuf> {
    let dir = super::locate::target_dirs().into_iter().next()?.join("switchyard-harness-cache");
    Some(dir.join(format!("{:016x}-{}.cwasm", key.0, key.1)))
}

fn load_compiled(key: (u64, usize)) -> Option<Module> {
    let path = compiled_path(key)?;
    let bytes = std::fs::read(path).ok()?;
    // SAFETY: the file is one this function's sibling wrote with `Module::serialize` for this
    // engine; wasmtime still checks its header (version, target, settings) and refuses a mismatch,
    // in which case the module is compiled again.
    unsafe { Module::deserialize(engine(), bytes) }.ok()
}

fn store_compiled(key: (u64, usize), module: &Module) {
    let (Some(path), Ok(bytes)) = (compiled_path(key), module.serialize()) else {
        return;
    };
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Write then rename, so a parallel test process never reads half a file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

// Shared handles: cloning a `TypedFunc` clones its registered type, which costs more than a call
// into the module does.
type Cb1 = Rc<TypedFunc<i32, ()>>;
type Cb2 = Rc<TypedFunc<(i32, i32), ()>>;
type Cb2r = Rc<TypedFunc<(i32, i32), i32>>;
type Cb3r = Rc<TypedFunc<(i32, i32, i32), i32>>;
type Cb5 = Rc<TypedFunc<(i32, i32, i32, i32, i32), ()>>;

/// The callbacks a module may export; a missing one means "continue" like in Envoy.
pub struct Exports {
    pub on_context_create: Option<Cb2>,
    pub on_vm_start: Option<Cb2r>,
    pub on_configure: Option<Cb2r>,
    pub on_tick: Option<Cb1>,
    pub on_queue_ready: Option<Cb2>,
    pub on_request_headers: Option<Cb3r>,
    pub on_request_body: Option<Cb3r>,
    pub on_request_trailers: Option<Cb2r>,
    pub on_response_headers: Option<Cb3r>,
    pub on_response_body: Option<Cb3r>,
    pub on_response_trailers: Option<Cb2r>,
    pub on_http_call_response: Option<Cb5>,
    pub on_done: Option<Rc<TypedFunc<i32, i32>>>,
    pub on_log: Option<Cb1>,
    pub on_delete: Option<Cb1>,
}

fn typed<P, R>(store: &mut Store<VmState>, instance: &Instance, name: &str) -> Result<Option<Rc<TypedFunc<P, R>>>>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    let f = instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("export {name} has a signature ABI 0.2.1 does not define"))?;
    Ok(Some(Rc::new(f)))
}

/// A running VM.
pub struct Vm {
    pub store: Store<VmState>,
    pub exports: Exports,
    /// Set when a call trapped: Envoy marks the VM failed and stops calling it.
    pub failed: Option<String>,
}

impl Vm {
    /// Instantiates `module`, runs its start function and checks its ABI version.
    pub fn instantiate(module: &Module, linker: &Linker<VmState>, state: VmState) -> Result<Self> {
        let mut store = Store::new(module.engine(), state);
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(anyhow::Error::from)
            .context("instantiating the module (a missing import means Envoy would reject it too)")?;
        if instance.get_func(&mut store, "proxy_abi_version_0_2_1").is_none() {
            bail!("the module does not export proxy_abi_version_0_2_1: only ABI 0.2.1 is supported");
        }
        let memory = instance.get_memory(&mut store, "memory").context("the module exports no memory")?;
        let alloc = match typed::<i32, i32>(&mut store, &instance, "proxy_on_memory_allocate")? {
            Some(f) => f,
            None => typed::<i32, i32>(&mut store, &instance, "malloc")?
                .context("the module exports neither proxy_on_memory_allocate nor malloc")?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        let exports = Exports {
            on_context_create: typed(&mut store, &instance, "proxy_on_context_create")?,
            on_vm_start: typed(&mut store, &instance, "proxy_on_vm_start")?,
            on_configure: typed(&mut store, &instance, "proxy_on_configure")?,
            on_tick: typed(&mut store, &instance, "proxy_on_tick")?,
            on_queue_ready: typed(&mut store, &instance, "proxy_on_queue_ready")?,
            on_request_headers: typed(&mut store, &instance, "proxy_on_request_headers")?,
            on_request_body: typed(&mut store, &instance, "proxy_on_request_body")?,
            on_request_trailers: typed(&mut store, &instance, "proxy_on_request_trailers")?,
            on_response_headers: typed(&mut store, &instance, "proxy_on_response_headers")?,
            on_response_body: typed(&mut store, &instance, "proxy_on_response_body")?,
            on_response_trailers: typed(&mut store, &instance, "proxy_on_response_trailers")?,
            on_http_call_response: typed(&mut store, &instance, "proxy_on_http_call_response")?,
            on_done: typed(&mut store, &instance, "proxy_on_done")?,
            on_log: typed(&mut store, &instance, "proxy_on_log")?,
            on_delete: typed(&mut store, &instance, "proxy_on_delete")?,
        };
        let mut vm = Self { store, exports, failed: None };
        // Envoy calls _initialize when exported, else _start.
        let start = if instance.get_func(&mut vm.store, "_initialize").is_some() { "_initialize" } else { "_start" };
        if let Some(f) = typed::<(), ()>(&mut vm.store, &instance, start)? {
            let r = f.call(&mut vm.store, ());
            vm.check(r, start)?;
        }
        Ok(vm)
    }

    /// Runs `f` as a callback on `context`: resets the effective context, and turns a trap into
    /// an error that carries the module's last log lines.
    pub fn call<T>(
        &mut self,
        context: u32,
        what: &str,
        f: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<T>,
    ) -> Result<T> {
        if let Some(reason) = &self.failed {
            bail!("{what}: the VM failed earlier and Envoy would no longer call it: {reason}");
        }
        self.store.data_mut().current_context = context;
        self.store.data_mut().effective_context = None;
        let r = f(&mut self.store);
        self.store.data_mut().effective_context = None;
        self.check(r, what)
    }

    fn check<T>(&mut self, r: wasmtime::Result<T>, what: &str) -> Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = anyhow::Error::from(e);
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                let tail = self.recent_logs(8);
                let msg = format!("{what} trapped: {}{tail}", chain.join(": "));
                self.failed = Some(msg.clone());
                Err(anyhow!(msg))
            }
        }
    }

    fn recent_logs(&self, n: usize) -> String {
        let Ok(logs) = self.store.data().logs.lock() else {
            return String::new();
        };
        let mine: Vec<&LogEntry> = logs.iter().filter(|l| l.worker == self.store.data().worker).collect();
        let skip = mine.len().saturating_sub(n);
        let lines: Vec<String> = mine.iter().skip(skip).map(|l| format!("\n  [{:?}] {}", l.level, l.message)).collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!("\nlast log lines of worker {}:{}", self.store.data().worker, lines.concat())
        }
    }
}

// ---- memory helpers used by the hostcalls ----

/// Why a hostcall could not touch guest memory; mapped to `InvalidMemoryAccess` / `EFAULT`.
#[derive(Debug)]
pub struct BadPointer;

fn memory(caller: &Caller<'_, VmState>) -> Result<Memory> {
    caller.data().memory.context("the module has no memory")
}

fn offset(ptr: i32) -> usize {
    // Pointers and sizes are wasm32 `usize`s carried in i32s: reinterpret, never sign-extend.
    ptr as u32 as usize
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub fn read(caller: &Caller<'_, VmState>, ptr: i32, len: i32) -> Result<std::result::Result<Vec<u8>, BadPointer>> {
    let mem = memory(caller)?;
    let start = offset(ptr);
    let Some(end) = start.checked_add(offset(len)) else {
        return Ok(Err(BadPointer));
    };
    Ok(mem.data(caller).get(start..end).map(<[u8]>::to_vec).ok_or(BadPointer))
}

/// Writes raw bytes at `ptr`.
pub fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> Result<std::result::Result<(), BadPointer>> {
    let mem = memory(caller)?;
    let start = offset(ptr);
    let Some(end) = start.checked_add(bytes.len()) else {
        return Ok(Err(BadPointer));
    };
    match mem.data_mut(caller).get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(Ok(()))
        }
        None => Ok(Err(BadPointer)),
    }
}

/// Allocates `bytes.len()` bytes inside the module and copies `bytes` there.
pub fn alloc_copy(caller: &mut Caller<'_, VmState>, bytes: &[u8]) -> Result<i32> {
    let alloc = caller.data().alloc.clone().context("the module has no allocator")?;
    let size = i32::try_from(bytes.len()).context("buffer larger than wasm32 memory")?;
    let ptr = alloc.call(&mut *caller, size).map_err(anyhow::Error::from).context("calling the module's allocator")?;
    if ptr == 0 {
        bail!("the module's allocator returned null for {} bytes", bytes.len());
    }
    write(caller, ptr, bytes)?.map_err(|_| anyhow!("the module's allocator returned an invalid pointer"))?;
    Ok(ptr)
}

/// Envoy's `copyToPointerSize`: empty data writes a null pointer and zero size.
pub fn copy_out(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<std::result::Result<(), BadPointer>> {
    let ptr = if bytes.is_empty() { 0 } else { alloc_copy(caller, bytes)? };
    let size = u32::try_from(bytes.len()).context("buffer larger than wasm32 memory")?;
    if write(caller, ptr_ptr, &(ptr as u32).to_le_bytes())?.is_err() {
        return Ok(Err(BadPointer));
    }
    write(caller, size_ptr, &size.to_le_bytes())
}
