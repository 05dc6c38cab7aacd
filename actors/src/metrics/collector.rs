//! The collector: an actor that takes one [`NodeSample`] per interval, keeps the last hour
//! in this node's ring buffer, publishes the figures as Prometheus gauges, and wakes the
//! cluster view's live streams. Samples are per-node facts: nothing here goes through Raft.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::ring::Ring;
use super::system::{NodeSample, RequestStats, Sampler};

/// The `service` label of the collector's restarts in `panal_actor_restarts_total`.
pub const COLLECTOR_SERVICE: &str = "metrics_collector";

/// Samples kept per node: one hour at the default interval of one second.
pub const RING_CAPACITY: usize = 3600;

/// This node's samples, shared by the collector and the metrics service's workers.
pub struct MetricsHub {
    ring: RwLock<Ring<NodeSample>>,
    /// Tells live streams that a sample was taken.
    pub taken: tokio::sync::watch::Sender<u64>,
    /// HTTP requests answered since the last sample, recorded by the API layer.
    pub requests: RequestCounter,
}

/// Requests and their summed latency since the counter was last taken.
#[derive(Debug, Default)]
pub struct RequestCounter {
    count: AtomicU64,
    micros: AtomicU64,
}

impl RequestCounter {
    pub fn record(&self, latency: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The rate and mean latency over `elapsed_ms`, starting the count afresh.
    pub fn take(&self, elapsed_ms: i64) -> RequestStats {
        let count = self.count.swap(0, Ordering::Relaxed);
        let micros = self.micros.swap(0, Ordering::Relaxed);
        if count == 0 || elapsed_ms <= 0 {
            return RequestStats::default();
        }
        RequestStats {
            per_second: count as f64 * 1000.0 / elapsed_ms as f64,
            mean_latency_ms: micros as f64 / count as f64 / 1000.0,
        }
    }
}

impl std::fmt::Debug for MetricsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHub").finish_non_exhaustive()
    }
}

impl Default for MetricsHub {
    fn default() -> Self {
        Self {
            ring: RwLock::new(Ring::new(RING_CAPACITY)),
            taken: tokio::sync::watch::channel(0).0,
            requests: RequestCounter::default(),
        }
    }
}

impl MetricsHub {
    pub fn latest(&self) -> Option<NodeSample> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).latest().cloned()
    }

    /// Samples in `[from, to]`, at most one per `step_ms`.
    pub fn range(&self, from_ms: i64, to_ms: i64, step_ms: i64) -> Vec<NodeSample> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).range(from_ms, to_ms, step_ms)
    }

    /// Samples taken after `ts_ms` (for live streams and their reconnects).
    pub fn after(&self, ts_ms: i64) -> Vec<NodeSample> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).iter().filter(|s| s.ts_ms > ts_ms).cloned().collect()
    }

    fn push(&self, sample: NodeSample) {
        let seq = sample.seq;
        self.ring.write().unwrap_or_else(|p| p.into_inner()).push(sample);
        self.taken.send_replace(seq);
    }
}

/// HELP text of the series [`record`] sets and of the collector's failure counter.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "panal_node_cpu_busy_ratio",
        "Share of the node's CPU time not idle since the previous sample (0 to 1)."
    );
    describe_gauge!("panal_node_cpus", "CPUs of the node.");
    describe_gauge!("panal_node_memory_total_bytes", "Memory of the node (MemTotal).");
    describe_gauge!("panal_node_memory_used_bytes", "Memory of the node in use (MemTotal - MemAvailable).");
    describe_gauge!("panal_node_memory_available_bytes", "Memory of the node available for new work (MemAvailable).");
    describe_gauge!("panal_node_load1", "Load average of the node over 1 minute.");
    describe_gauge!("panal_node_load5", "Load average of the node over 5 minutes.");
    describe_gauge!("panal_node_load15", "Load average of the node over 15 minutes.");
    describe_gauge!("panal_process_resident_memory_bytes", "Resident memory of this panal process.");
    describe_counter!(
        "panal_process_cpu_seconds_total",
        "CPU time (user + system) this panal process used since it started, in whole seconds."
    );
    describe_gauge!("panal_process_open_fds", "Open file descriptors of this panal process.");
    describe_gauge!(
        "panal_node_processes",
        "Processes on the node, from /proc/panal_procs (source=module) or a scan of /proc (source=scan)."
    );
    describe_gauge!("panal_node_threads", "Threads of every process on the node.");
    describe_gauge!("panal_node_processes_by_state", "Processes on the node by scheduler state.");
    describe_counter!("panal_metrics_sample_failures_total", "Samples of the node's statistics that failed.");
}

/// Publishes a sample as gauges (names in base units; labels bounded).
fn record(s: &NodeSample) {
    use metrics::gauge;
    gauge!("panal_node_cpu_busy_ratio").set(s.cpu_busy_pct / 100.0);
    gauge!("panal_node_cpus").set(f64::from(s.cpu_count));
    gauge!("panal_node_memory_total_bytes").set(s.mem_total_bytes as f64);
    gauge!("panal_node_memory_used_bytes").set(s.mem_used_bytes as f64);
    gauge!("panal_node_memory_available_bytes").set(s.mem_available_bytes as f64);
    gauge!("panal_node_load1").set(s.load1);
    gauge!("panal_node_load5").set(s.load5);
    gauge!("panal_node_load15").set(s.load15);
    gauge!("panal_process_resident_memory_bytes").set(s.process_rss_bytes as f64);
    // A counter, so that `rate()` applies; the recorder's counters are integers, whole
    // seconds are precise enough over an alerting window.
    metrics::counter!("panal_process_cpu_seconds_total").absolute(s.process_cpu_seconds.max(0.0) as u64);
    gauge!("panal_process_open_fds").set(s.process_open_fds as f64);
    let source = match s.source {
        super::procs::ProcSource::Module => "module",
        super::procs::ProcSource::Scan => "scan",
    };
    let p = &s.processes;
    gauge!("panal_node_processes", "source" => source).set(p.total as f64);
    gauge!("panal_node_threads", "source" => source).set(p.threads as f64);
    for (state, n) in [
        ("running", p.running),
        ("sleeping", p.sleeping),
        ("disk_sleep", p.disk_sleep),
        ("stopped", p.stopped),
        ("traced", p.traced),
        ("zombie", p.zombie),
        ("dead", p.dead),
        ("idle", p.idle),
    ] {
        gauge!("panal_node_processes_by_state", "state" => state, "source" => source).set(n as f64);
    }
}

pub struct Collector;

pub struct CollectorArgs {
    pub hub: Arc<MetricsHub>,
    pub proc_root: PathBuf,
    pub interval: Duration,
}

pub struct CollectorState {
    hub: Arc<MetricsHub>,
    sampler: Option<Sampler>,
    /// When the request counter was last taken.
    requests_since_ms: i64,
}

/// Local-only message: take a sample now.
#[derive(ractor_cluster::RactorMessage)]
pub struct Tick;

impl Actor for Collector {
    type Msg = Tick;
    type State = CollectorState;
    type Arguments = CollectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Tick>,
        args: CollectorArgs,
    ) -> Result<CollectorState, ActorProcessingErr> {
        myself.send_interval(args.interval, || Tick);
        let _ = myself.send_message(Tick);
        Ok(CollectorState {
            hub: args.hub,
            sampler: Some(Sampler::new(args.proc_root)),
            requests_since_ms: crate::time::wall_ms(),
        })
    }

    async fn handle(&self, _: ActorRef<Tick>, _: Tick, state: &mut CollectorState) -> Result<(), ActorProcessingErr> {
        // Reading /proc is blocking file I/O: off the async threads, the sampler with it.
        let Some(mut sampler) = state.sampler.take() else { return Ok(()) };
        let (sampler, result) = tokio::task::spawn_blocking(move || {
            let result = sampler.sample(crate::time::wall_ms());
            (sampler, result)
        })
        .await?;
        state.sampler = Some(sampler);
        match result {
            Ok(mut sample) => {
                sample.requests = state.hub.requests.take(sample.ts_ms - state.requests_since_ms);
                state.requests_since_ms = sample.ts_ms;
                record(&sample);
                state.hub.push(sample);
            }
            Err(e) => {
                metrics::counter!("panal_metrics_sample_failures_total").increment(1);
                tracing::warn!(error = %e, "could not sample the node's statistics");
            }
        }
        Ok(())
    }
}

/// Starts the collector and restarts it if it ever stops, for the life of the node.
pub async fn start(hub: Arc<MetricsHub>, proc_root: PathBuf, interval: Duration) -> Result<(), ActorProcessingErr> {
    let args = move || CollectorArgs { hub: hub.clone(), proc_root: proc_root.clone(), interval };
    let (_, mut handle) = Actor::spawn(None, Collector, args()).await?;
    tokio::spawn(async move {
        loop {
            let _ = handle.await;
            metrics::counter!("panal_actor_restarts_total", "service" => COLLECTOR_SERVICE).increment(1);
            tracing::warn!("the metrics collector stopped; restarting it");
            tokio::time::sleep(Duration::from_secs(1)).await;
            match Actor::spawn(None, Collector, args()).await {
                Ok((_, h)) => handle = h,
                Err(e) => {
                    tracing::error!(error = %e, "cannot restart the metrics collector");
                    return;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_counter_gives_rate_and_mean_latency_then_starts_afresh() {
        let counter = RequestCounter::default();
        assert_eq!(counter.take(1000), RequestStats::default(), "no requests: zero, not NaN");
        for ms in [10, 20, 30, 40] {
            counter.record(Duration::from_millis(ms));
        }
        let stats = counter.take(2000);
        assert_eq!(stats.per_second, 2.0);
        assert_eq!(stats.mean_latency_ms, 25.0);
        assert_eq!(counter.take(1000), RequestStats::default(), "taken counts are gone");
        counter.record(Duration::from_millis(5));
        assert_eq!(counter.take(0), RequestStats::default(), "no time elapsed: no rate");
    }
}
