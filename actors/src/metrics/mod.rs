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
