//! [`Host`]: one simulated Envoy process for one test. It loads a module into one VM per worker
//! (all sharing one [`SharedStore`]), starts and configures them the way Envoy does, answers their
//! HTTP calls from a test-controlled responder, delivers queue notifications and ticks, and owns the
//! clock. Streams are created from it with [`Host::stream`].
//!
//! Start-up follows proxy-wasm-cpp-host: `_initialize` (or `_start`), `proxy_on_context_create` for
//! the root context (id 1), `proxy_on_vm_start`, then `proxy_on_configure` on [`Host::configure`].
//! Asynchronous events (HTTP call answers, `proxy_on_queue_ready`) are delivered when the current
//! test step has finished its synchronous callbacks, in the order they were raised, like an event
//! loop that runs after each downstream event.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};

use super::abi::LogLevel;
use super::flow::Flow;
use super::hostcalls;
use super::shared::{MetricValue, SharedStore};
use super::stream::Stream;
use super::vm::{self, CallResponseData, Clock, HeaderMap, HttpCallRequest, IdMap, LogEntry, Vm, VmState};

/// Settings fixed for the life of a host (what Envoy reads from the plugin and VM configuration).
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub clusters: Option<BTreeSet<String>>,
    pub log_level: LogLevel,
    pub allow_on_headers_stop_iteration: bool,
    pub buffer_limit: usize,
    pub env: Vec<(String, String)>,
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    pub upstream_address: String,
}

/// Builds a [`Host`].
pub struct HostBuilder {
    wasm: Vec<u8>,
    workers: usize,
    config: HostConfig,
    start: SystemTime,
}

impl HostBuilder {
    /// Number of worker VMs (Envoy's `--concurrency`); default 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }
    /// Plugin name (`plugin_name` property); default `switchyard`.
    pub fn plugin_name(mut self, name: &str) -> Self {
        self.config.plugin_name = name.to_owned();
        self
    }
    /// Root id (`plugin_root_id` property); default empty.
    pub fn root_id(mut self, id: &str) -> Self {
        self.config.root_id = id.to_owned();
        self
    }
    /// VM id: namespaces shared data and queues; default empty.
    pub fn vm_id(mut self, id: &str) -> Self {
        self.config.vm_id = id.to_owned();
        self
    }
    /// VM configuration bytes passed to `proxy_on_vm_start`.
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.vm_config = bytes.into();
        self
    }
    /// Clusters Envoy knows: `proxy_http_call` to any other answers `BadArgument`. Without this,
    /// every cluster name is accepted.
    pub fn clusters(mut self, names: &[&str]) -> Self {
        self.config.clusters = Some(names.iter().map(|s| (*s).to_owned()).collect());
        self
    }
    /// Envoy's log level for the wasm logger (`proxy_get_log_level`); lines below it are dropped
    /// like Envoy drops them. Default `Info`, Envoy's default.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.config.log_level = level;
        self
    }
    /// The plugin's `allow_on_headers_stop_iteration`; default true, as switchyard configures it.
    /// When false, `Pause` from a headers callback stops all iteration and body callbacks wait.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.config.allow_on_headers_stop_iteration = allow;
        self
    }
    /// Per-stream buffer limit; default 1 MiB like Envoy's per-connection buffer limit.
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.config.buffer_limit = bytes;
        self
    }
    /// An environment variable visible through WASI `environ_get`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.config.env.push((key.to_owned(), value.to_owned()));
        self
    }
    /// A value for a property path the harness does not model (e.g. `["xds", "cluster_name"]`).
    pub fn property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.config.properties.insert(path.iter().map(|s| (*s).to_owned()).collect(), value.into());
        self
    }
    /// The `upstream.address` a stream reports once its response started; default `127.0.0.1:8000`.
    pub fn upstream_address(mut self, addr: &str) -> Self {
        self.config.upstream_address = addr.to_owned();
        self
    }
    /// Wall-clock time at start; the clock only moves with [`Host::advance`].
    pub fn start_time(mut self, t: SystemTime) -> Self {
        self.start = t;
        self
    }

    /// Compiles (or reuses) the module, instantiates each worker and starts its VM.
    pub fn build(self) -> Result<Host> {
        let module = vm::compile(&self.wasm)?;
        let linker = hostcalls::linker(module.engine())?;
        let config = Arc::new(self.config);
        let shared = Arc::new(SharedStore::default());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let unix_nanos =
            u64::try_from(self.start.duration_since(UNIX_EPOCH).context("start time before 1970")?.as_nanos())?;
        let clock = Arc::new(Mutex::new(Clock { unix_nanos, monotonic_nanos: 1_000_000_000 }));
        let mut vms = Vec::new();
        for worker in 0..self.workers {
            let state = VmState {
                worker,
                config: config.clone(),
                shared: shared.clone(),
                logs: logs.clone(),
                clock: clock.clone(),
                memory: None,
                alloc: None,
                root_context_id: ROOT_CONTEXT_ID,
                next_context_id: ROOT_CONTEXT_ID + 1,
                current_context: ROOT_CONTEXT_ID,
                effective_context: None,
                plugin_config: None,
                tick_period_ms: 0,
                tick_anchor_nanos: 0,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1),
                streams: IdMap::default(),
                next_http_token: 0,
                pending_http_calls: Vec::new(),
                call_response: None,
                call_status: (0, String::new()),
                metric_ids: IdMap::default(),
                next_metric_seq: 0,
                route_cache_clears_root: 0,
            };
            let mut vm =
                Vm::instantiate(&module, &linker, state).with_context(|| format!("starting worker {worker}"))?;
            if let Some(f) = vm.exports.on_context_create.clone() {
                vm.call(ROOT_CONTEXT_ID, "proxy_on_context_create(root)", |s| f.call(s, (ROOT_CONTEXT_ID as i32, 0)))?;
            }
            if let Some(f) = vm.exports.on_vm_start.clone() {
                let size = i32::try_from(config.vm_config.len())?;
                let ok =
                    vm.call(ROOT_CONTEXT_ID, "proxy_on_vm_start", |s| f.call(s, (ROOT_CONTEXT_ID as i32, size)))?;
                if ok == 0 {
                    bail!("worker {worker}: proxy_on_vm_start returned false; Envoy would fail the VM");
                }
            }
            vms.push(vm);
        }
        let inner = HostInner {
            vms,
            config,
            shared,
            logs,
            clock,
            flows: IdMap::default(),
            responder: None,
            queued_responses: VecDeque::new(),
            http_calls: Vec::new(),
        };
        let host = Host { inner: Rc::new(RefCell::new(inner)) };
        host.inner.borrow_mut().settle()?;
        Ok(host)
    }
}

pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// The answer to an HTTP call, given by the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCallResponse {
    /// A response from the cluster (or from Envoy's async client, see [`HttpCallResponse::timeout`]).
    Response { status: u16, headers: Vec<(String, String)>, body: Vec<u8>, trailers: Vec<(String, String)> },
    /// The call failed (connection reset): the module sees zero headers and `proxy_get_status`
    /// answers `BrokenConnection` / `reset`, as in Envoy.
    Reset,
}

impl HttpCallResponse {
    /// A plain response.
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Self::Response {
            status,
            headers: headers.iter().map(|(k, v)| ((*k).to_ascii_lowercase(), (*v).to_owned())).collect(),
            body: body.into(),
            trailers: Vec::new(),
        }
    }
    /// What Envoy's async client hands back when the call's timeout fires: its own 504.
    pub fn timeout() -> Self {
        let body = b"upstream request timeout".to_vec();
        Self::Response {
            status: 504,
            headers: vec![
                ("content-length".to_owned(), body.len().to_string()),
                ("content-type".to_owned(), "text/plain".to_owned()),
            ],
            body,
            trailers: Vec::new(),
        }
    }
    /// A failed call.
    pub fn reset() -> Self {
        Self::Reset
    }
}

type Responder = Box<dyn FnMut(&HttpCallRequest) -> Option<HttpCallResponse>>;

/// Result of [`Host::configure`].
#[derive(Debug, Clone)]
pub struct Configured {
    /// True when every worker's `proxy_on_configure` returned true.
    pub accepted: bool,
    /// Log lines emitted while configuring.
    pub logs: Vec<LogEntry>,
}

pub(crate) struct HostInner {
    pub vms: Vec<Vm>,
    pub config: Arc<HostConfig>,
    pub shared: Arc<SharedStore>,
    pub logs: Arc<Mutex<Vec<LogEntry>>>,
    pub clock: Arc<Mutex<Clock>>,
    pub flows: IdMap<(usize, u32), Flow>,
    responder: Option<Responder>,
    queued_responses: VecDeque<HttpCallResponse>,
    http_calls: Vec<HttpCallRequest>,
}

/// One simulated Envoy with one VM per worker. Not shared between tests: build one per test.
pub struct Host {
    pub(crate) inner: Rc<RefCell<HostInner>>,
}

impl Host {
    /// A host with one worker and default settings.
    pub fn new(wasm: &[u8]) -> Result<Self> {
        Self::builder(wasm).build()
    }

    /// A builder for other settings.
    pub fn builder(wasm: &[u8]) -> HostBuilder {
        HostBuilder {
            wasm: wasm.to_vec(),
            workers: 1,
            config: HostConfig {
                plugin_name: "switchyard".to_owned(),
                root_id: String::new(),
                vm_id: String::new(),
                vm_config: Vec::new(),
                clusters: None,
                log_level: LogLevel::Info,
                allow_on_headers_stop_iteration: true,
                buffer_limit: 1024 * 1024,
                env: Vec::new(),
                properties: BTreeMap::new(),
                upstream_address: "127.0.0.1:8000".to_owned(),
            },
            start: SystemTime::now(),
        }
    }

    fn inner(&self) -> Result<std::cell::RefMut<'_, HostInner>> {
        self.inner
            .try_borrow_mut()
            .map_err(|_| anyhow!("the host is busy (called from inside an HTTP call responder?)"))
    }

    /// Calls `proxy_on_configure` with `config` on every worker.
    pub fn configure(&self, config: impl AsRef<[u8]>) -> Result<Configured> {
        let config = config.as_ref();
        let mut inner = self.inner()?;
        let before = inner.log_count()?;
        let mut accepted = true;
        for w in 0..inner.vms.len() {
            let vm = inner.vm(w)?;
            vm.store.data_mut().plugin_config = Some(config.to_vec());
            let size = i32::try_from(config.len())?;
            let ok = match vm.exports.on_configure.clone() {
                Some(f) => {
                    vm.call(ROOT_CONTEXT_ID, "proxy_on_configure", |s| f.call(s, (ROOT_CONTEXT_ID as i32, size)))
                }
                None => Ok(1),
            };
            vm.store.data_mut().plugin_config = None;
            accepted &= ok? != 0;
            inner.apply_pending(w)?;
        }
        inner.settle()?;
        let logs = inner.logs_since(before)?;
        Ok(Configured { accepted, logs })
    }

    /// A new HTTP stream on worker 0.
    pub fn stream(&self) -> Result<Stream> {
        self.stream_on(0)
    }

    /// A new HTTP stream on worker `worker`.
    pub fn stream_on(&self, worker: usize) -> Result<Stream> {
        let id = self.inner()?.new_stream(worker)?;
        Ok(Stream::new(self.inner.clone(), worker, id))
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inner.borrow().vms.len()
    }

    /// How many streams the host still keeps a record of: live ones, and finished ones whose
    /// [`Stream`] handle is still held.
    pub fn tracked_streams(&self) -> usize {
        self.inner.borrow().flows.len()
    }

    /// Every log line captured so far, from all workers.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.inner.borrow().logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// True when some captured log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }

    /// The size of a worker VM's linear memory in bytes (it only ever grows, in 64 KiB pages).
    pub fn memory_bytes(&self, worker: usize) -> Result<usize> {
        let mut inner = self.inner()?;
        let vm = inner.vm(worker)?;
        let memory = vm.store.data().memory.context("the VM has no memory")?;
        Ok(memory.data_size(&vm.store))
    }

    /// A metric's value by the name the module defined it with.
    pub fn metric(&self, name: &str) -> Result<Option<MetricValue>> {
        self.inner.borrow().shared.metric(name)
    }

    /// All metrics by name.
    pub fn metrics(&self) -> Result<BTreeMap<String, MetricValue>> {
        self.inner.borrow().shared.metrics()
    }

    /// A counter's value (`None` if undefined or not a counter).
    pub fn counter(&self, name: &str) -> Option<u64> {
        match self.metric(name) {
            Ok(Some(MetricValue::Counter(n))) => Some(n),
            _ => None,
        }
    }

    /// A gauge's value (`None` if undefined or not a gauge).
    pub fn gauge(&self, name: &str) -> Option<u64> {
        match self.metric(name) {
            Ok(Some(MetricValue::Gauge(n))) => Some(n),
            _ => None,
        }
    }

    /// A histogram's recorded values (`None` if undefined or not a histogram).
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        match self.metric(name) {
            Ok(Some(MetricValue::Histogram(v))) => Some(v),
            _ => None,
        }
    }

    /// Shared data under the host's VM id: value and CAS.
    pub fn shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>> {
        let inner = self.inner.borrow();
        inner.shared.peek(&inner.config.vm_id, key)
    }

    /// Writes shared data from the test (unconditionally, as with CAS 0).
    pub fn set_shared_data(&self, key: &str, value: &[u8]) -> Result<()> {
        let inner = self.inner.borrow();
        inner.shared.set(&inner.config.vm_id, key, value, 0)?;
        Ok(())
    }

    /// Answers HTTP calls with `f`; returning `None` falls back to queued responses.
    pub fn on_http_call(&self, f: impl FnMut(&HttpCallRequest) -> Option<HttpCallResponse> + 'static) {
        self.inner.borrow_mut().responder = Some(Box::new(f));
    }

    /// Queues the answer to the next HTTP call that the responder does not answer.
    pub fn queue_http_call_response(&self, response: HttpCallResponse) {
        self.inner.borrow_mut().queued_responses.push_back(response);
    }

    /// Every HTTP call dispatched so far, in order.
    pub fn http_calls(&self) -> Vec<HttpCallRequest> {
        self.inner.borrow().http_calls.clone()
    }

    /// Current wall-clock time of the host.
    pub fn now(&self) -> Result<SystemTime> {
        let nanos = self.inner.borrow().now()?.unix_nanos;
        Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    /// The tick period a worker's root context asked for, if any.
    pub fn tick_period(&self, worker: usize) -> Option<Duration> {
        let inner = self.inner.borrow();
        let ms = inner.vms.get(worker)?.store.data().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Moves the clock forward, calling `proxy_on_tick` on every worker whose tick falls due, at
    /// the time it falls due.
    pub fn advance(&self, by: Duration) -> Result<()> {
        self.inner()?.advance(by)
    }

    /// Calls `proxy_on_tick` once on every worker that set a tick period, without moving the clock.
    /// Returns how many workers ticked.
    pub fn tick(&self) -> Result<usize> {
        let mut inner = self.inner()?;
        let mut n = 0;
        for w in 0..inner.vms.len() {
            if inner.vm(w)?.store.data().tick_period_ms > 0 {
                inner.tick_worker(w)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl HostInner {
    pub fn vm(&mut self, worker: usize) -> Result<&mut Vm> {
        let n = self.vms.len();
        self.vms.get_mut(worker).ok_or_else(|| anyhow!("no worker {worker}: the host has {n}"))
    }

    pub fn now(&self) -> Result<Clock> {
        Ok(*self.clock.lock().map_err(|_| anyhow!("clock lock poisoned"))?)
    }

    fn log_count(&self) -> Result<usize> {
        Ok(self.logs.lock().map_err(|_| anyhow!("log lock poisoned"))?.len())
    }

    fn logs_since(&self, n: usize) -> Result<Vec<LogEntry>> {
        let logs = self.logs.lock().map_err(|_| anyhow!("log lock poisoned"))?;
        Ok(logs.get(n..).map(<[LogEntry]>::to_vec).unwrap_or_default())
    }

    fn new_stream(&mut self, worker: usize) -> Result<u32> {
        let upstream = self.config.upstream_address.clone();
        let vm = self.vm(worker)?;
        let s = vm.store.data_mut();
        let id = s.next_context_id;
        s.next_context_id = id.checked_add(1).context("context ids exhausted")?;
        let state = super::vm::StreamState { upstream_address: None, ..Default::default() };
        s.streams.insert(id, state);
        self.flows.insert((worker, id), Flow::new(upstream));
        Ok(id)
    }

    /// Delivers asynchronous events until none is left: queue notifications and HTTP call answers.
    pub fn settle(&mut self) -> Result<()> {
        for _ in 0..100_000 {
            let ready = self.shared.take_queue_ready()?;
            if !ready.is_empty() {
                for (w, root, queue) in ready {
                    let vm = self.vm(w)?;
                    if let Some(f) = vm.exports.on_queue_ready.clone() {
                        vm.call(root, "proxy_on_queue_ready", |s| f.call(s, (root as i32, queue as i32)))?;
                    }
                    self.apply_pending(w)?;
                }
                continue;
            }
            let next = self.vms.iter().position(|vm| !vm.store.data().pending_http_calls.is_empty());
            let Some(w) = next else {
                return Ok(());
            };
            let call = self.vm(w)?.store.data_mut().pending_http_calls.remove(0);
            self.deliver_http_call(w, call)?;
        }
        bail!("events kept arriving after 100000 deliveries: the module loops on HTTP calls or queues")
    }

    fn answer(&mut self, call: &HttpCallRequest) -> Result<HttpCallResponse> {
        if let Some(f) = self.responder.as_mut() {
            if let Some(r) = f(call) {
                return Ok(r);
            }
        }
        self.queued_responses.pop_front().ok_or_else(|| {
            anyhow!(
                "proxy_http_call to cluster {:?} ({} {}) has no answer: give one with \
                 Host::on_http_call or Host::queue_http_call_response",
                call.cluster,
                call.header(":method").unwrap_or("?"),
                call.header(":path").unwrap_or("?")
            )
        })
    }

    fn deliver_http_call(&mut self, w: usize, call: HttpCallRequest) -> Result<()> {
        self.http_calls.push(call.clone());
        let response = self.answer(&call)?;
        let (data, status) = match response {
            HttpCallResponse::Response { status, headers, body, trailers } => {
                let mut map = HeaderMap::default();
                map.add(":status", &status.to_string());
                for (k, v) in &headers {
                    map.add(k, v);
                }
                let mut t = HeaderMap::default();
                for (k, v) in &trailers {
                    t.add(k, v);
                }
                (Some(CallResponseData { headers: map, body, trailers: t }), (0, String::new()))
            }
            HttpCallResponse::Reset => (None, (11, "reset".to_owned())),
        };
        let (nh, nb, nt) = match &data {
            Some(d) => (d.headers.len(), d.body.len(), d.trailers.len()),
            None => (0, 0, 0),
        };
        let vm = self.vm(w)?;
        let root = vm.store.data().root_context_id;
        vm.store.data_mut().call_response = data;
        vm.store.data_mut().call_status = status;
        let args = (root as i32, call.token as i32, i32::try_from(nh)?, i32::try_from(nb)?, i32::try_from(nt)?);
        let r = match vm.exports.on_http_call_response.clone() {
            Some(f) => vm.call(root, "proxy_on_http_call_response", |s| f.call(s, args)),
            None => Ok(()),
        };
        vm.store.data_mut().call_response = None;
        vm.store.data_mut().call_status = (0, String::new());
        r?;
        self.apply_pending(w)
    }

    pub fn tick_worker(&mut self, w: usize) -> Result<()> {
        let vm = self.vm(w)?;
        let root = vm.store.data().root_context_id;
        if let Some(f) = vm.exports.on_tick.clone() {
            vm.call(root, "proxy_on_tick", |s| f.call(s, root as i32))?;
        }
        self.apply_pending(w)?;
        self.settle()
    }

    fn advance(&mut self, by: Duration) -> Result<()> {
        let by = u64::try_from(by.as_nanos())?;
        let start = self.now()?;
        let target = start.monotonic_nanos.checked_add(by).context("clock overflow")?;
        for _ in 0..1_000_000 {
            // The earliest tick that falls due before the target.
            let mut due: Option<(u64, usize)> = None;
            for (w, vm) in self.vms.iter().enumerate() {
                let s = vm.store.data();
                if s.tick_period_ms == 0 {
                    continue;
                }
                let at = s.tick_anchor_nanos.saturating_add(u64::from(s.tick_period_ms) * 1_000_000);
                if at <= target && due.is_none_or(|(t, _)| at < t) {
                    due = Some((at, w));
                }
            }
            let Some((at, w)) = due else {
                self.set_clock(start, target)?;
                return Ok(());
            };
            self.set_clock(start, at.max(self.now()?.monotonic_nanos))?;
            self.vm(w)?.store.data_mut().tick_anchor_nanos = at;
            self.tick_worker(w)?;
        }
        bail!("more than a million ticks in one advance: use a shorter step")
    }

    fn set_clock(&mut self, start: Clock, monotonic: u64) -> Result<()> {
        let mut c = self.clock.lock().map_err(|_| anyhow!("clock lock poisoned"))?;
        let delta = monotonic.saturating_sub(start.monotonic_nanos);
        c.monotonic_nanos = monotonic;
        c.unix_nanos = start.unix_nanos.saturating_add(delta);
        Ok(())
    }
}
