//! State that Envoy keeps outside any one VM and shares between its worker threads: the shared-data
//! key-value store with compare-and-swap, shared queues, and the stats store behind metrics.
//!
//! One [`SharedStore`] belongs to one [`Host`](super::Host) and is handed to each of its VMs, the way
//! Envoy's workers each run their own VM over one process-wide store. Nothing here is global: two
//! hosts in two parallel tests never see each other's data.
//!
//! The rules follow proxy-wasm-cpp-host as Envoy embeds it: data is namespaced by VM id; every write
//! takes a fresh non-zero CAS from one counter; a write with `cas == 0` is unconditional; a write with
//! a non-zero CAS to an existing key must match its current CAS (a write to a missing key ignores the
//! CAS). Queues are named per VM id, a second registration of a name returns the same id and moves
//! the `proxy_on_queue_ready` notifications to the new registrant.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, Result};

use super::abi::{MetricKind, Status};

/// The value of one metric as the stats store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter's running total.
    Counter(u64),
    /// A gauge's current value.
    Gauge(u64),
    /// The values recorded into a histogram, in order: the first [`HISTOGRAM_VALUES_KEPT`].
    Histogram(Vec<u64>),
}

/// How many values of one histogram the store keeps. Envoy's histograms take constant memory
/// (buckets); a store that kept every value would grow for as long as a benchmark or a soak runs,
/// and its growing (copying, fresh pages) would be counted against the module.
pub const HISTOGRAM_VALUES_KEPT: usize = 1 << 16;

impl MetricValue {
    /// `proxy_record_metric`: a counter adds the value, a gauge takes it, a histogram keeps it.
    pub fn record(&mut self, value: u64) {
        match self {
            MetricValue::Counter(n) => *n = n.saturating_add(value),
            MetricValue::Gauge(n) => *n = value,
            MetricValue::Histogram(values) => {
                if values.len() < HISTOGRAM_VALUES_KEPT {
                    values.push(value);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    /// (worker, root context id) that registered the queue last and is told when items arrive.
    owner: (usize, u32),
}

#[derive(Debug, Default)]
struct Inner {
    data: HashMap<(String, String), (Vec<u8>, u32)>,
    next_cas: u32,
    queue_ids: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    next_queue: u32,
    /// (worker, root context, queue id) notifications not yet delivered.
    queue_ready: Vec<(usize, u32, u32)>,
    /// Metric name → its slot in `metric_values` (Envoy's stats store hands out the stat itself,
    /// so an update by id never searches names).
    metrics: BTreeMap<String, usize>,
    metric_values: Vec<MetricValue>,
}

/// Shared data, queues and metrics for all VMs of one host.
#[derive(Debug, Default)]
pub struct SharedStore {
    inner: Mutex<Inner>,
}

impl SharedStore {
    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| anyhow!("shared store lock poisoned by an earlier failure"))
    }

    /// `proxy_get_shared_data`: the value and its CAS, or `NotFound`.
    pub fn get(&self, vm_id: &str, key: &str) -> Result<std::result::Result<(Vec<u8>, u32), Status>> {
        let inner = self.lock()?;
        Ok(inner.data.get(&(vm_id.to_owned(), key.to_owned())).cloned().ok_or(Status::NotFound))
    }

    /// `proxy_set_shared_data` with Envoy's CAS rules.
    pub fn set(&self, vm_id: &str, key: &str, value: &[u8], cas: u32) -> Result<Status> {
        let mut inner = self.lock()?;
        let next = next_cas(&mut inner);
        match inner.data.get_mut(&(vm_id.to_owned(), key.to_owned())) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Ok(Status::CasMismatch);
                }
                *entry = (value.to_vec(), next);
            }
            None => {
                inner.data.insert((vm_id.to_owned(), key.to_owned()), (value.to_vec(), next));
            }
        }
        Ok(Status::Ok)
    }

    /// `proxy_register_shared_queue`: creates or reopens a queue and makes the caller its owner.
    pub fn register_queue(&self, vm_id: &str, name: &str, owner: (usize, u32)) -> Result<u32> {
        let mut inner = self.lock()?;
        let key = (vm_id.to_owned(), name.to_owned());
        let id = match inner.queue_ids.get(&key) {
            Some(id) => *id,
            None => {
                inner.next_queue = inner.next_queue.wrapping_add(1).max(1);
                let id = inner.next_queue;
                inner.queue_ids.insert(key, id);
                id
            }
        };
        inner.queues.entry(id).or_default().owner = owner;
        Ok(id)
    }

    /// `proxy_resolve_shared_queue`.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<Option<u32>> {
        let inner = self.lock()?;
        Ok(inner.queue_ids.get(&(vm_id.to_owned(), name.to_owned())).copied())
    }

    /// `proxy_enqueue_shared_queue`; schedules `proxy_on_queue_ready` for the owner.
    pub fn enqueue(&self, id: u32, value: &[u8]) -> Result<Status> {
        let mut inner = self.lock()?;
        let Some(queue) = inner.queues.get_mut(&id) else {
            return Ok(Status::NotFound);
        };
        queue.items.push_back(value.to_vec());
        let (worker, root) = queue.owner;
        inner.queue_ready.push((worker, root, id));
        Ok(Status::Ok)
    }

    /// `proxy_dequeue_shared_queue`: the oldest item, `Empty`, or `NotFound`.
    pub fn dequeue(&self, id: u32) -> Result<std::result::Result<Vec<u8>, Status>> {
        let mut inner = self.lock()?;
        let Some(queue) = inner.queues.get_mut(&id) else {
            return Ok(Err(Status::NotFound));
        };
        Ok(queue.items.pop_front().ok_or(Status::Empty))
    }

    /// Takes the queue-ready notifications that are waiting to be delivered.
    pub fn take_queue_ready(&self) -> Result<Vec<(usize, u32, u32)>> {
        let mut inner = self.lock()?;
        Ok(std::mem::take(&mut inner.queue_ready))
    }

    /// Makes sure a metric exists (Envoy's stats store returns the existing stat for a known name)
    /// and gives its slot, for [`SharedStore::update_metric`].
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> Result<usize> {
        let mut inner = self.lock()?;
        let slot = match inner.metrics.get(name) {
            Some(slot) => *slot,
            None => {
                let slot = inner.metric_values.len();
                inner.metric_values.push(match kind {
                    MetricKind::Counter => MetricValue::Counter(0),
                    MetricKind::Gauge => MetricValue::Gauge(0),
                    MetricKind::Histogram => MetricValue::Histogram(Vec::new()),
                });
                inner.metrics.insert(name.to_owned(), slot);
                slot
            }
        };
        let existing = inner.metric_values.get(slot).ok_or_else(|| anyhow!("metric {name:?} has no value"))?;
        let same = matches!(
            (kind, existing),
            (MetricKind::Counter, MetricValue::Counter(_))
                | (MetricKind::Gauge, MetricValue::Gauge(_))
                | (MetricKind::Histogram, MetricValue::Histogram(_))
        );
        if !same {
            return Err(anyhow!(
                "metric {name:?} defined as {kind:?} but it already exists as {existing:?}: \
                 Envoy's behaviour for a name reused across types is not modelled"
            ));
        }
        Ok(slot)
    }

    /// Applies `f` to the stored value of the metric [`SharedStore::define_metric`] gave `slot`.
    pub fn update_metric<T>(&self, slot: usize, f: impl FnOnce(&mut MetricValue) -> Result<T>) -> Result<T> {
        let mut inner = self.lock()?;
        let value = inner.metric_values.get_mut(slot).ok_or_else(|| anyhow!("metric slot {slot} has no value"))?;
        f(value)
    }

    /// The value of a metric by name.
    pub fn metric(&self, name: &str) -> Result<Option<MetricValue>> {
        let inner = self.lock()?;
        Ok(inner.metrics.get(name).and_then(|slot| inner.metric_values.get(*slot)).cloned())
    }

    /// All metrics by name.
    pub fn metrics(&self) -> Result<BTreeMap<String, MetricValue>> {
        let inner = self.lock()?;
        let value = |slot: &usize| inner.metric_values.get(*slot).cloned();
        Ok(inner.metrics.iter().filter_map(|(name, slot)| Some((name.clone(), value(slot)?))).collect())
    }

    /// Reads shared data from the test side: the value and its CAS.
    pub fn peek(&self, vm_id: &str, key: &str) -> Result<Option<(Vec<u8>, u32)>> {
        Ok(self.get(vm_id, key)?.ok())
    }
}

fn next_cas(inner: &mut Inner) -> u32 {
    inner.next_cas = inner.next_cas.wrapping_add(1);
    if inner.next_cas == 0 {
        inner.next_cas = 1;
    }
    inner.next_cas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_follow_the_metric_kind_and_histograms_stay_bounded() {
        let mut counter = MetricValue::Counter(u64::MAX - 1);
        counter.record(5);
        assert_eq!(counter, MetricValue::Counter(u64::MAX));
        let mut gauge = MetricValue::Gauge(9);
        gauge.record(4);
        assert_eq!(gauge, MetricValue::Gauge(4));
        let mut histogram = MetricValue::Histogram(Vec::new());
        for value in 0..HISTOGRAM_VALUES_KEPT as u64 + 10 {
            histogram.record(value);
        }
        let MetricValue::Histogram(values) = histogram else { panic!("still a histogram") };
        assert_eq!(values.len(), HISTOGRAM_VALUES_KEPT);
        assert_eq!(values.first(), Some(&0));
        assert_eq!(values.last(), Some(&(HISTOGRAM_VALUES_KEPT as u64 - 1)), "the first values, in order");
    }

    #[test]
    fn cas_rules_match_envoy() {
        let store = SharedStore::default();
        assert_eq!(store.get("", "k").unwrap(), Err(Status::NotFound));
        // A CAS on a missing key is ignored.
        assert_eq!(store.set("", "k", b"v1", 77).unwrap(), Status::Ok);
        let (v, cas1) = store.get("", "k").unwrap().unwrap();
        assert_eq!(v, b"v1");
        assert_ne!(cas1, 0);
        assert_eq!(store.set("", "k", b"v2", cas1 + 100).unwrap(), Status::CasMismatch);
        assert_eq!(store.set("", "k", b"v2", cas1).unwrap(), Status::Ok);
        let (_, cas2) = store.get("", "k").unwrap().unwrap();
        assert_ne!(cas1, cas2);
        assert_eq!(store.set("", "k", b"v3", cas1).unwrap(), Status::CasMismatch);
        assert_eq!(store.set("", "k", b"v3", 0).unwrap(), Status::Ok);
        // Another VM id is another namespace.
        assert_eq!(store.get("other", "k").unwrap(), Err(Status::NotFound));
    }

    #[test]
    fn queues_reopen_and_notify_the_last_owner() {
        let store = SharedStore::default();
        let a = store.register_queue("", "q", (0, 1)).unwrap();
        let b = store.register_queue("", "q", (1, 1)).unwrap();
        assert_eq!(a, b);
        assert_eq!(store.resolve_queue("", "q").unwrap(), Some(a));
        assert_eq!(store.resolve_queue("", "nope").unwrap(), None);
        assert_eq!(store.dequeue(a).unwrap(), Err(Status::Empty));
        assert_eq!(store.enqueue(a, b"x").unwrap(), Status::Ok);
        assert_eq!(store.enqueue(a + 1, b"x").unwrap(), Status::NotFound);
        assert_eq!(store.take_queue_ready().unwrap(), vec![(1, 1, a)]);
        assert_eq!(store.dequeue(a).unwrap(), Ok(b"x".to_vec()));
        assert_eq!(store.dequeue(a + 1).unwrap(), Err(Status::NotFound));
    }
}
