//! Gives the memory the allocator holds but no longer uses back to the system.
//!
//! glibc's malloc keeps freed memory in its arenas for reuse and returns only the top of
//! the heap: after a burst (the demo load, a snapshot, a benchmark) a node idles holding
//! memory it does not use. Measured on a follower of `panal up --demo`: 14.5 MB anonymous,
//! 5.7 MB after one trim. A trim every few seconds returns it; under load, freed memory is
//! reused before the next trim and little is released. Fewer arenas fragment less (see
//! [`limit_arenas`]). musl's allocator returns memory itself: nothing to do there.

use std::time::Duration;

/// Caps glibc's malloc at one arena per core (at least two) instead of its default of
/// eight per core. Each arena keeps its own free memory and fragments on its own, so a
/// node whose threads each got an arena idles holding more. Measured on `panal up --demo`
/// with `MALLOC_ARENA_MAX=2`: 0.3-0.5 MB less resident per node after the load, and the
/// same req/s in `panal bench http` (2 cores). Called before the runtime starts threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        set_arena_max(libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX));
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: libc::c_int) {
    // SAFETY: mallopt takes no pointers and only changes a tunable under the allocator's
    // own lock; an arena cap applies to arenas created from then on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// How often the allocator is trimmed.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Trims the allocator every [`TRIM_EVERY`], for the life of the node.
pub async fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        // Off the runtime: a trim walks the arenas (tens of microseconds on a node's heap).
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases free memory under the
    // allocator's own locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
