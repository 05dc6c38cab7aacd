//! Node-level system metrics: the [`Sampler`] that reads CPU, memory, load, the current process's own usage and
//! the process counts (via [`super::procs`]) from a proc root, producing one [`NodeSample`] per call.
//!
//! Sources, all under the sampler's proc root (normally `/proc`):
//!
//! - `stat`: `cpu_busy_pct` from the aggregate `cpu` line, as the share of non-idle ticks in the ticks elapsed
//!   since the previous successful sample (the first sample covers the time since boot); `cpu_count` is the
//!   number of `cpuN` lines, i.e. online CPUs;
//! - `meminfo`: `mem_used_bytes = MemTotal - MemAvailable` (without `MemAvailable`, before Linux 3.14:
//!   `MemFree + Buffers + Cached`);
//! - `loadavg`: the three load averages, rounded to the two decimals the kernel prints;
//! - `self/stat`, `self/fd`: this process's resident set (pages × page size), CPU time (`utime + stime` over
//!   clock ticks per second) and number of open file descriptors;
//! - `panal_procs` or `[pid]/stat`: [`super::procs::read`].

use std::fs;
use std::path::{Path, PathBuf};

use procfs::{FromRead, FromReadSI, KernelStats, LoadAverage, Meminfo};
use serde::{Deserialize, Serialize};

use super::procs::{self, ProcSource, ProcessCounts, ProcsError};
use super::ring::Stamped;

/// One sample of the node's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// When the sample was taken, as given by the caller (ms since the Unix epoch).
    pub ts_ms: i64,
    /// 1 for a sampler's first sample, then +1 per successful sample.
    pub seq: u64,
    /// Busy share of all CPUs since the previous sample, 0..=100.
    pub cpu_busy_pct: f64,
    pub cpu_count: u32,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_available_bytes: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    /// Resident set size of this process.
    pub process_rss_bytes: u64,
    /// User + system CPU time of this process since it started.
    pub process_cpu_seconds: f64,
    pub process_open_fds: u64,
    pub processes: ProcessCounts,
    pub source: ProcSource,
    /// HTTP requests this node answered since the previous sample (filled in by the
    /// collector; absent from samples of older nodes).
    #[serde(default)]
    pub requests: RequestStats,
}

/// Requests answered over the interval before a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    pub per_second: f64,
    /// Mean time to the response's head, in milliseconds (0 without requests).
    pub mean_latency_ms: f64,
}

impl Stamped for NodeSample {
    fn ts_ms(&self) -> i64 {
        self.ts_ms
    }

    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Cumulative CPU ticks of the aggregate `cpu` line of `/proc/stat`. `guest` and `guest_nice` are left out:
/// the kernel already includes them in `user` and `nice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTicks {
    fn fields(&self) -> [u64; 8] {
        [self.user, self.nice, self.system, self.idle, self.iowait, self.irq, self.softirq, self.steal]
    }
}

impl From<&procfs::CpuTime> for CpuTicks {
    fn from(t: &procfs::CpuTime) -> Self {
        Self {
            user: t.user,
            nice: t.nice,
            system: t.system,
            idle: t.idle,
            iowait: t.iowait.unwrap_or(0),
            irq: t.irq.unwrap_or(0),
            softirq: t.softirq.unwrap_or(0),
            steal: t.steal.unwrap_or(0),
        }
    }
}

/// Percentage of the ticks elapsed from `prev` to `cur` that were not idle (`idle` and `iowait` are idle).
/// Each counter's delta saturates at 0, since `iowait` can go backwards; no elapsed ticks gives 0.
pub fn cpu_busy_pct(prev: &CpuTicks, cur: &CpuTicks) -> f64 {
    let d = |p: u64, c: u64| c.saturating_sub(p);
    let total = prev.fields().iter().zip(cur.fields()).fold(0u64, |sum, (&p, c)| sum.saturating_add(d(p, c)));
    let idle = d(prev.idle, cur.idle).saturating_add(d(prev.iowait, cur.iowait));
    if total == 0 {
        return 0.0;
    }
    // Precision loss above 2^53 ticks is irrelevant for a percentage.
    let pct = total.saturating_sub(idle) as f64 / total as f64 * 100.0;
    pct.clamp(0.0, 100.0)
}

/// Takes [`NodeSample`]s from a proc root, keeping the previous CPU ticks and the sequence number.
#[derive(Debug)]
pub struct Sampler {
    proc_root: PathBuf,
    prev_cpu: CpuTicks,
    seq: u64,
    page_size: u64,
    ticks_per_second: u64,
}

impl Sampler {
    /// A sampler reading from `proc_root` (`/proc` in production, a fixture tree in tests).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            prev_cpu: CpuTicks::default(),
            seq: 0,
            page_size: procfs::page_size(),
            ticks_per_second: procfs::ticks_per_second(),
        }
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Reads everything once. On error nothing changes: the next sample's CPU share and `seq` follow on from
    /// the last successful sample.
    pub fn sample(&mut self, ts_ms: i64) -> Result<NodeSample, ProcsError> {
        let root = self.proc_root.as_path();

        let path = root.join("stat");
        let stat = <KernelStats as FromReadSI>::from_read(&procs::read_file(&path)?[..], procfs::current_system_info())
            .map_err(|e| ProcsError::procfs(&path, e))?;
        let cpu = CpuTicks::from(&stat.total);
        let cpu_busy_pct = cpu_busy_pct(&self.prev_cpu, &cpu);
        let cpu_count = u32::try_from(stat.cpu_time.len()).unwrap_or(u32::MAX);

        let (mem_total_bytes, mem_available_bytes) = read_meminfo(&root.join("meminfo"))?;

        let path = root.join("loadavg");
        let load = LoadAverage::from_read(&procs::read_file(&path)?[..]).map_err(|e| ProcsError::procfs(&path, e))?;

        let path = root.join("self/stat");
        let me = procs::parse_stat(&path, &procs::read_file(&path)?)?;
        let process_cpu_seconds = if self.ticks_per_second == 0 {
            0.0
        } else {
            me.utime.saturating_add(me.stime) as f64 / self.ticks_per_second as f64
        };

        let process_open_fds = count_open_fds(root)?;

        let (processes, source) = procs::read(root);
        let processes = processes?;

        self.prev_cpu = cpu;
        self.seq = self.seq.saturating_add(1);
        Ok(NodeSample {
            ts_ms,
            seq: self.seq,
            cpu_busy_pct,
            cpu_count,
            mem_total_bytes,
            mem_used_bytes: mem_total_bytes.saturating_sub(mem_available_bytes),
            mem_available_bytes,
            load1: load_value(load.one),
            load5: load_value(load.five),
            load15: load_value(load.fifteen),
            process_rss_bytes: me.rss.saturating_mul(self.page_size),
            process_cpu_seconds,
            process_open_fds,
            processes,
            source,
            requests: RequestStats::default(),
        })
    }
}

/// `/proc/loadavg` prints two decimals; `f32 as f64` would show 0.5699999928474426 for 0.57.
fn load_value(v: f32) -> f64 {
    let v = (f64::from(v) * 100.0).round() / 100.0;
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// `(MemTotal, MemAvailable)` in bytes, `MemAvailable` estimated on kernels before 3.14 and capped at the total.
fn read_meminfo(path: &Path) -> Result<(u64, u64), ProcsError> {
    let bytes = procs::read_file(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| ProcsError::parse(path, e.to_string()))?;
    if let Some(line) = text.lines().find(|line| !meminfo_line_is_safe(line)) {
        return Err(ProcsError::parse(path, format!("unexpected line {line:?}")));
    }
    let info = Meminfo::from_read(text.as_bytes()).map_err(|e| ProcsError::procfs(path, e))?;
    let available =
        info.mem_available.unwrap_or_else(|| info.mem_free.saturating_add(info.buffers).saturating_add(info.cached));
    Ok((info.mem_total, available.min(info.mem_total)))
}

/// Whether procfs's meminfo parser can take this line without panicking: it slices off the field's last byte
/// (the `:`) and multiplies the value by its unit unchecked. Lines it rejects with an error pass.
fn meminfo_line_is_safe(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let Some(field) = words.next() else { return true };
    if !field.ends_with(|c: char| c.is_ascii()) {
        return false;
    }
    let Some(Ok(value)) = words.next().map(str::parse::<u64>) else { return true };
    let unit: u64 = match words.next() {
        None | Some("B") => 1,
        Some("KiB" | "kiB" | "kB" | "KB") => 1 << 10,
        Some("MiB" | "miB" | "MB" | "mB") => 1 << 20,
        Some("GiB" | "giB" | "GB" | "gB") => 1 << 30,
        Some(_) => return true,
    };
    value.checked_mul(unit).is_some()
}

/// Entries of `<root>/self/fd`. When that is this very process's live fd table, the directory handle used to
/// list it is one of the entries, and is not counted.
fn count_open_fds(root: &Path) -> Result<u64, ProcsError> {
    let dir = root.join("self/fd");
    let mut count = 0u64;
    for entry in fs::read_dir(&dir).map_err(|e| ProcsError::io(&dir, e))? {
        entry.map_err(|e| ProcsError::io(&dir, e))?;
        count = count.saturating_add(1);
    }
    let listing_is_own = fs::read_link(root.join("self"))
        .is_ok_and(|target| target.to_str().and_then(|s| s.parse::<u32>().ok()) == Some(std::process::id()));
    Ok(if listing_is_own { count.saturating_sub(1) } else { count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use super::procs::tests::{fake_counts, FakeProc};

    fn ticks(user: u64, system: u64, idle: u64, iowait: u64) -> CpuTicks {
        CpuTicks { user, system, idle, iowait, ..CpuTicks::default() }
    }

    #[test]
    fn busy_pct_from_two_snapshots() {
        let prev = ticks(100, 50, 800, 50);
        assert_eq!(cpu_busy_pct(&prev, &ticks(130, 70, 840, 60)), 50.0);
        assert_eq!(cpu_busy_pct(&prev, &ticks(200, 50, 800, 50)), 100.0);
        assert_eq!(cpu_busy_pct(&prev, &ticks(100, 50, 900, 50)), 0.0);
        assert_eq!(cpu_busy_pct(&prev, &prev), 0.0, "no ticks elapsed");
        // Since boot.
        assert_eq!(cpu_busy_pct(&CpuTicks::default(), &ticks(25, 0, 70, 5)), 25.0);
        // iowait went backwards: its delta counts as 0, not as a huge number.
        assert_eq!(cpu_busy_pct(&prev, &ticks(110, 50, 890, 40)), 10.0);
        // Every field counts; the result stays in range even for absurd counters.
        let all = CpuTicks { user: 1, nice: 1, system: 1, idle: 1, iowait: 1, irq: 1, softirq: 1, steal: 1 };
        assert_eq!(cpu_busy_pct(&CpuTicks::default(), &all), 75.0);
        let max = CpuTicks { user: u64::MAX, idle: u64::MAX, ..CpuTicks::default() };
        let pct = cpu_busy_pct(&CpuTicks::default(), &max);
        assert!((0.0..=100.0).contains(&pct), "{pct}");
    }

    #[test]
    fn samples_the_fake_tree() {
        let fake = FakeProc::new();
        let mut sampler = Sampler::new(&fake.root);
        let first = sampler.sample(1_000).unwrap();
        let tps = procfs::ticks_per_second() as f64;
        let mut processes = first.processes.clone();
        processes.collected_ns = 0;
        let boot = ticks(16469, 3572, 115351, 320);
        let boot = CpuTicks { softirq: 32, steal: 13, ..boot };
        assert_eq!(
            NodeSample { processes, ..first.clone() },
            NodeSample {
                ts_ms: 1_000,
                seq: 1,
                cpu_busy_pct: cpu_busy_pct(&CpuTicks::default(), &boot),
                cpu_count: 2,
                mem_total_bytes: 24_684_092 * 1024,
                mem_used_bytes: (24_684_092 - 24_043_300) * 1024,
                mem_available_bytes: 24_043_300 * 1024,
                load1: 0.57,
                load5: 0.14,
                load15: 0.04,
                process_rss_bytes: 2500 * procfs::page_size(),
                process_cpu_seconds: 200.0 / tps,
                process_open_fds: 4,
                processes: fake_counts(),
                source: ProcSource::Scan,
                requests: RequestStats::default(),
            }
        );
        assert!((first.cpu_busy_pct - 100.0 * 20086.0 / 135757.0).abs() < 1e-9, "{}", first.cpu_busy_pct);

        // 100 more ticks, 40 of them busy.
        let stat =
            include_str!("fixtures/proc/stat").replace("cpu  16469 0 3572 115351 320", "cpu  16489 0 3592 115401 330");
        fake.write("stat", stat.as_bytes());
        let second = sampler.sample(2_000).unwrap();
        assert_eq!((second.seq, second.ts_ms), (2, 2_000));
        assert!((second.cpu_busy_pct - 40.0).abs() < 1e-9, "{}", second.cpu_busy_pct);

        let json = serde_json::to_string(&second).unwrap();
        assert_eq!(serde_json::from_str::<NodeSample>(&json).unwrap(), second);
        assert_eq!(Stamped::seq(&second), 2);
        assert_eq!(Stamped::ts_ms(&second), 2_000);
    }

    #[test]
    fn a_failed_sample_changes_nothing() {
        let fake = FakeProc::new();
        let mut sampler = Sampler::new(&fake.root);
        assert_eq!(sampler.sample(1).unwrap().seq, 1);
        let good = fs::read(fake.root.join("loadavg")).unwrap();
        fake.write("loadavg", b"garbage");
        assert!(matches!(sampler.sample(2), Err(ProcsError::Parse { .. })));
        fake.write("loadavg", &good);
        let third = sampler.sample(3).unwrap();
        assert_eq!(third.seq, 2);
        assert_eq!(third.cpu_busy_pct, 0.0, "no ticks since the last successful sample");
    }

    #[test]
    fn meminfo_without_mem_available_is_estimated() {
        let fake = FakeProc::new();
        let meminfo: String = include_str!("fixtures/proc/meminfo")
            .lines()
            .filter(|l| !l.starts_with("MemAvailable"))
            .collect::<Vec<_>>()
            .join("\n");
        fake.write("meminfo", meminfo.as_bytes());
        let sample = Sampler::new(&fake.root).sample(0).unwrap();
        assert_eq!(sample.mem_available_bytes, (23_450_812 + 4904 + 768_408) * 1024);
        assert_eq!(sample.mem_used_bytes, sample.mem_total_bytes - sample.mem_available_bytes);
    }

    #[test]
    fn uses_the_module_file_when_present() {
        let fake = FakeProc::new();
        fake.write(procs::MODULE_FILE, include_str!("fixtures/panal_procs.json").as_bytes());
        let sample = Sampler::new(&fake.root).sample(0).unwrap();
        assert_eq!(sample.source, ProcSource::Module);
        assert_eq!(sample.processes.total, 62);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let stat = include_str!("fixtures/proc/stat");
        let meminfo = include_str!("fixtures/proc/meminfo");
        let loadavg = include_str!("fixtures/proc/loadavg");
        let self_stat = include_str!("fixtures/proc/self/stat");
        let fake = FakeProc::new();
        let mut sampler = Sampler::new(&fake.root);
        let restore = |fake: &FakeProc| {
            for (path, text) in [("stat", stat), ("meminfo", meminfo), ("loadavg", loadavg), ("self/stat", self_stat)] {
                fake.write(path, text.as_bytes());
            }
        };
        for (path, text) in [("stat", stat), ("meminfo", meminfo), ("loadavg", loadavg), ("self/stat", self_stat)] {
            for cut in (0..text.len()).step_by(7) {
                fake.write(path, &text.as_bytes()[..cut]);
                let _ = sampler.sample(0);
            }
            restore(&fake);
        }
        let odd: &[(&str, &str)] = &[
            ("meminfo", "MemTotal: 18446744073709551615 kB\n"),
            ("meminfo", "MemTotalé 1 kB\n"),
            ("meminfo", "MemTotal: 1 GiB\nMemTotal: 99999999999 GiB\n"),
            ("meminfo", "\u{1F600}"),
            ("stat", "cpu  x\n"),
            ("stat", "cpu  18446744073709551615 0 0 0\ncpu0 1 1 1 1\nctxt 1\nbtime 1\nprocesses 1\n"),
            ("loadavg", "NaN inf -inf 1/1 1\n"),
            ("self/stat", "1 (x) R"),
        ];
        for (path, text) in odd {
            fake.write(path, text.as_bytes());
            if let Ok(sample) = sampler.sample(0) {
                assert!(sample.load1.is_finite() && sample.load5.is_finite() && sample.load15.is_finite());
                assert!((0.0..=100.0).contains(&sample.cpu_busy_pct));
            }
            restore(&fake);
        }
        fake.write("meminfo", b"MemTotal: 18446744073709551615 kB\n");
        assert!(matches!(sampler.sample(0), Err(ProcsError::Parse { .. })));
        restore(&fake);
        assert!(sampler.sample(0).is_ok());
        fs::remove_file(fake.root.join("loadavg")).unwrap();
        assert!(matches!(sampler.sample(0), Err(ProcsError::Io { .. })));
    }

    #[test]
    fn live_sample() {
        let mut sampler = Sampler::new("/proc");
        let started = Instant::now();
        let first = sampler.sample(1).unwrap();
        let took = started.elapsed();
        let started = Instant::now();
        let second = sampler.sample(2).unwrap();
        let took_second = started.elapsed();
        println!(
            "one sample: {took:?} (second: {took_second:?}; {} processes, {} threads, source {:?})",
            second.processes.total, second.processes.threads, second.source
        );
        for sample in [&first, &second] {
            assert!(sample.cpu_count >= 1);
            assert!((0.0..=100.0).contains(&sample.cpu_busy_pct));
            assert!(sample.mem_total_bytes > 0 && sample.mem_available_bytes <= sample.mem_total_bytes);
            assert_eq!(sample.mem_used_bytes + sample.mem_available_bytes, sample.mem_total_bytes);
            assert!(sample.process_rss_bytes > 0);
            assert!(sample.process_open_fds >= 1);
            assert!(sample.processes.total >= 1);
        }
        assert_eq!((first.seq, second.seq), (1, 2));
        assert!(second.process_cpu_seconds >= first.process_cpu_seconds);
        // The fd count matches an independent listing (minus that listing's own handle), give or take the fds
        // other tests open meanwhile.
        let listed = fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1;
        assert!(second.process_open_fds.abs_diff(listed) <= 16, "{} vs {listed}", second.process_open_fds);
    }
}
