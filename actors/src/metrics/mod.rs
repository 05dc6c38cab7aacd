//! The metrics service: each node samples its own kernel process statistics and system
//! figures (from `/proc/panal_procs` when the kernel module is loaded, else a scan of
//! `/proc`), keeps the last hour in a ring buffer (per-node facts, not replicated state),
//! and serves them to the cluster view.

pub mod collector;
pub mod ops;
pub mod procs;
pub mod ring;
pub mod system;

/// HELP text of every Prometheus series this crate publishes. Call once the recorder is
/// installed: descriptions given before are lost.
pub fn describe() {
    collector::describe();
    crate::services::describe_metrics();
}

/// Publishes every per-service series at 0 before its first event, for every service (and
/// the collector's restarts): an alert rule such as `increase(panal_actor_restarts_total[5m]) > 0`
/// then has data from start-up instead of nothing until the first restart. Call once at
/// start-up, after the recorder is installed. Adding 0 registers a series without changing
/// a value already counted.
pub fn register_zero_series() {
    use crate::services::Service;
    for service in Service::ALL.map(Service::name) {
        metrics::counter!("panal_actor_restarts_total", "service" => service).increment(0);
        metrics::counter!("panal_service_failures_total", "service" => service).increment(0);
        metrics::counter!("panal_gateway_retries_total", "service" => service).increment(0);
        metrics::gauge!("panal_gateway_in_flight", "service" => service).increment(0.0);
    }
    metrics::counter!("panal_actor_restarts_total", "service" => collector::COLLECTOR_SERVICE).increment(0);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    use crate::services::Service;

    /// Remembers every series registered, with its value cell (a gauge's holds f64 bits).
    #[derive(Default)]
    struct Registered(Mutex<Vec<(Key, Arc<AtomicU64>)>>);

    impl Registered {
        fn cell(&self, key: &Key) -> Arc<AtomicU64> {
            let cell = Arc::new(AtomicU64::new(u64::MAX));
            self.0.lock().unwrap().push((key.clone(), cell.clone()));
            cell
        }

        /// The value of `name{service}`, if registered.
        fn value(&self, name: &str, service: &str) -> Option<u64> {
            let all = self.0.lock().unwrap();
            let found = all
                .iter()
                .find(|(k, _)| k.name() == name && k.labels().any(|l| l.key() == "service" && l.value() == service));
            found.map(|(_, cell)| cell.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Registered {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let cell = self.cell(key);
            cell.store(0, Ordering::Relaxed);
            Counter::from_arc(cell)
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let cell = self.cell(key);
            cell.store(0f64.to_bits(), Ordering::Relaxed);
            Gauge::from_arc(cell)
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn every_service_has_its_series_at_zero_from_the_start() {
        let recorder = Registered::default();
        metrics::with_local_recorder(&recorder, super::register_zero_series);
        for service in Service::ALL.map(Service::name) {
            for counter in ["panal_actor_restarts_total", "panal_service_failures_total", "panal_gateway_retries_total"]
            {
                assert_eq!(recorder.value(counter, service), Some(0), "{counter}{{service={service:?}}}");
            }
            let in_flight = recorder.value("panal_gateway_in_flight", service).map(f64::from_bits);
            assert_eq!(in_flight, Some(0.0), "panal_gateway_in_flight{{service={service:?}}}");
        }
        assert_eq!(recorder.value("panal_actor_restarts_total", "metrics_collector"), Some(0));
    }
}
