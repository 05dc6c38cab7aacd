//! `panal bench metrics`: what one sample of the node's statistics costs, with the machine
//! running 100, 1,000 and 5,000 extra idle processes.
//!
//! For each process count it times, side by side in one run: the process count from a scan
//! of `/proc/[pid]/stat` ([`procs::scan`]), the same count read from `/proc/panal_procs`
//! when the kernel module is loaded ([`procs::read`] taking the module path), and a full
//! sample ([`Sampler::sample`]: CPU, memory, load, this process, and the process count from
//! whichever source the collector would use). The module can only be loaded in
//! `scripts/kmod-test.sh --bench`'s qemu guest; elsewhere its columns say so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use panal_actors::metrics::procs::{self, ProcSource};
use panal_actors::metrics::system::Sampler;

use super::report::{Report, Table};
use crate::error::{Error, Result};

/// The aims, reported beside the figures (never asserted).
const AIM_RATIO_AT: usize = 1000;
const AIM_MODULE_SPEEDUP: f64 = 10.0;
const AIM_FULL_SAMPLE_MS: f64 = 1.0;

#[derive(Debug, Args)]
pub struct MetricsBench {
    /// Idle processes (`sleep 3600`) added for each run, comma-separated; runs go from the
    /// smallest to the largest, reusing the processes already started.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub processes: Vec<usize>,
    /// Timed samples per source and run (after one untimed warm-up).
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Where the statistics are read, as `panal start --proc-root`.
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Median and 99th percentile (nearest rank) of one operation's timings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Timing {
    pub median_ms: f64,
    pub p99_ms: f64,
    pub iterations: usize,
}

impl Timing {
    /// `None` for no samples.
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        Some(Self {
            median_ms: ms(nearest_rank(&samples, 0.50)?),
            p99_ms: ms(nearest_rank(&samples, 0.99)?),
            iterations: samples.len(),
        })
    }
}

/// The smallest value with at least `p` of the sorted values at or below it.
fn nearest_rank<T>(sorted: &[T], p: f64) -> Option<&T> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1)
}

/// One run: the figures at one number of idle processes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub idle_processes: usize,
    /// Processes on the machine as the last scan counted them (idle ones included).
    pub processes: u64,
    pub threads: u64,
    pub scan: Timing,
    /// `None` when `/proc/panal_procs` does not exist (module not loaded).
    pub module: Option<Timing>,
    pub full_sample: Timing,
    pub full_sample_source: ProcSource,
}

impl Row {
    /// Module median over scan median.
    fn module_over_scan(&self) -> Option<f64> {
        self.module.map(|m| m.median_ms / self.scan.median_ms.max(f64::MIN_POSITIVE))
    }
}

pub async fn run(args: MetricsBench) -> Result<Report> {
    if args.iterations == 0 {
        return Err(Error::Fatal("--iterations must be at least 1".into()));
    }
    // The runs are blocking /proc reads and process spawns: on a thread of their own, which
    // a signal stops between two steps, so that the idle processes are always reaped.
    let stop = Arc::new(AtomicBool::new(false));
    let mut task = tokio::task::spawn_blocking({
        let stop = stop.clone();
        let (proc_root, mut counts, iterations) = (args.proc_root.clone(), args.processes.clone(), args.iterations);
        counts.sort_unstable();
        counts.dedup();
        move || measure(&proc_root, &counts, iterations, &stop)
    });
    let joined = tokio::select! {
        r = &mut task => r,
        _ = crate::server::start::shutdown_signal() => {
            stop.store(true, Ordering::Relaxed);
            task.await
        }
    };
    let (rows, kernel) = joined.map_err(|e| Error::Fatal(format!("the benchmark thread failed: {e}")))??;

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let counts: Vec<String> = args.processes.iter().map(|n| n.to_string()).collect();
    Ok(Report {
        title: "Cost of one metrics sample".into(),
        command: format!(
            "panal bench metrics --processes {} (in the qemu guest: scripts/kmod-test.sh --bench)",
            counts.join(",")
        ),
        method: format!(
            "Kernel {kernel}, {cpus} CPUs, {} timed samples per cell, times in ms: process counts by a scan of \
             /proc, by a read of /proc/panal_procs (when the module is loaded), and a full sample (everything the \
             collector does), with that many idle processes spawned by the benchmark.",
            args.iterations
        ),
        tables: vec![table(&rows)],
        notes: summary(&rows, &args.proc_root),
        data: serde_json::json!({
            "kernel": kernel,
            "cpus": cpus,
            "iterations": args.iterations,
            "proc_root": args.proc_root,
            "rows": rows,
        }),
    })
}

/// Every run, idle processes stopped on every exit path. Returns the rows and the kernel version.
fn measure(proc_root: &Path, counts: &[usize], iterations: usize, stop: &AtomicBool) -> Result<(Vec<Row>, String)> {
    let module_file = proc_root.join(procs::MODULE_FILE);
    let mut idle = IdleProcesses(Vec::new());
    let mut rows = Vec::new();
    let mut kernel = String::new();
    for &count in counts {
        idle.grow_to(count, stop)?;
        eprintln!("{} idle processes running; timing {iterations} samples of each source", idle.0.len());

        let scan_failed = |e: procs::ProcsError| Error::Fatal(format!("scan: {e}"));
        let mut last = procs::scan(proc_root).map_err(scan_failed)?;
        let scan = time(iterations, stop, || {
            last = procs::scan(proc_root).map_err(scan_failed)?;
            Ok(())
        })?;

        let module = if module_file.exists() {
            Some(time(iterations, stop, || match procs::read(proc_root) {
                (Ok(_), ProcSource::Module) => Ok(()),
                // `read` falls back to the scan when the module's file is unreadable.
                _ => Err(Error::Fatal(format!("{} exists but cannot be read or parsed", module_file.display()))),
            })?)
        } else {
            None
        };

        let mut sampler = Sampler::new(proc_root);
        let mut source = ProcSource::Scan;
        let full_sample = time(iterations, stop, || {
            let sample = sampler.sample(0).map_err(|e| Error::Fatal(format!("full sample: {e}")))?;
            source = sample.source;
            Ok(())
        })?;

        kernel = last.kernel_version.clone();
        rows.push(Row {
            idle_processes: idle.0.len(),
            processes: last.total,
            threads: last.threads,
            scan,
            module,
            full_sample,
            full_sample_source: source,
        });
    }
    Ok((rows, kernel))
}

/// Runs `op` once untimed (warm caches), then `iterations` times timed.
fn time(iterations: usize, stop: &AtomicBool, mut op: impl FnMut() -> Result<()>) -> Result<Timing> {
    op()?;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        interrupted(stop)?;
        let started = Instant::now();
        op()?;
        samples.push(started.elapsed());
    }
    Timing::of(samples).ok_or_else(|| Error::Fatal("no timed samples".into()))
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(Error::Fatal("interrupted; idle processes stopped".into()));
    }
    Ok(())
}

/// `sleep 3600` children: killed and reaped when dropped, whatever ended the benchmark.
struct IdleProcesses(Vec<Child>);

impl IdleProcesses {
    fn grow_to(&mut self, count: usize, stop: &AtomicBool) -> Result<()> {
        while self.0.len() < count {
            interrupted(stop)?;
            let child = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    Error::Fatal(format!(
                        "cannot start idle process {} of {count} (`sleep 3600`): {e}; \
                         check ulimit -u, kernel.pid_max and kernel.threads-max",
                        self.0.len() + 1
                    ))
                })?;
            self.0.push(child);
        }
        Ok(())
    }
}

impl Drop for IdleProcesses {
    fn drop(&mut self) {
        // Every kill first, so that the processes exit in parallel, then every wait.
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// The results as a markdown table.
fn table(rows: &[Row]) -> Table {
    let mut table = Table::new(&[
        "idle processes",
        "processes",
        "scan median",
        "scan p99",
        "module median",
        "module p99",
        "module/scan",
        "full sample median",
        "full sample p99",
        "<full sample source",
    ]);
    for r in rows {
        let (module_median, module_p99) = match r.module {
            Some(m) => (format!("{:.3}", m.median_ms), format!("{:.3}", m.p99_ms)),
            None => ("module not loaded".into(), "-".into()),
        };
        let ratio = r.module_over_scan().map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        let source = match r.full_sample_source {
            ProcSource::Module => "module",
            ProcSource::Scan => "scan",
        };
        table.row(vec![
            r.idle_processes.to_string(),
            r.processes.to_string(),
            format!("{:.3}", r.scan.median_ms),
            format!("{:.3}", r.scan.p99_ms),
            module_median,
            module_p99,
            ratio,
            format!("{:.3}", r.full_sample.median_ms),
            format!("{:.3}", r.full_sample.p99_ms),
            source.into(),
        ]);
    }
    table
}

/// The figures against the aims, from the run closest to 1,000 idle processes.
fn summary(rows: &[Row], proc_root: &Path) -> Vec<String> {
    let Some(near) = rows.iter().min_by_key(|r| r.idle_processes.abs_diff(AIM_RATIO_AT)) else {
        return Vec::new();
    };
    let Some(ratio) = near.module_over_scan() else {
        return vec![format!(
            "module not loaded ({} absent): scan only; scripts/kmod-test.sh --bench measures the module in a qemu guest",
            proc_root.join(procs::MODULE_FILE).display()
        )];
    };
    let mut lines = vec![format!(
        "at {} idle processes the module costs {ratio:.3} of the scan: {:.1}x cheaper (aim: at least {AIM_MODULE_SPEEDUP}x at {AIM_RATIO_AT})",
        near.idle_processes,
        1.0 / ratio.max(f64::MIN_POSITIVE),
    )];
    for r in rows.iter().filter(|r| r.full_sample_source == ProcSource::Module) {
        lines.push(format!(
            "full sample with the module at {} idle processes: median {:.3} ms, p99 {:.3} ms (aim: under {AIM_FULL_SAMPLE_MS} ms)",
            r.idle_processes, r.full_sample.median_ms, r.full_sample.p99_ms
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&hundred, 0.50), Some(&50));
        assert_eq!(nearest_rank(&hundred, 0.99), Some(&99));
        assert_eq!(nearest_rank(&hundred, 1.0), Some(&100));
        assert_eq!(nearest_rank(&hundred, 0.0), Some(&1));
        assert_eq!(nearest_rank(&[7], 0.99), Some(&7));
        assert_eq!(nearest_rank(&[1, 2], 0.50), Some(&1));
        assert_eq!(nearest_rank::<u32>(&[], 0.5), None);

        // Unsorted input of 100 samples: p99 is the second slowest, so one outlier stays out of it.
        let mut samples: Vec<Duration> = (0..98).map(|i| ms(10 + i % 3)).collect();
        samples.extend([ms(500), ms(900)]);
        samples.reverse();
        let t = Timing::of(samples.clone()).unwrap();
        assert_eq!((t.median_ms, t.p99_ms, t.iterations), (11.0, 500.0, 100));
        let one_outlier = samples.iter().map(|&d| if d == ms(500) { ms(10) } else { d }).collect();
        assert_eq!(Timing::of(one_outlier).unwrap().p99_ms, 12.0);
        assert_eq!(Timing::of(Vec::new()), None);
    }

    fn timing(median_ms: f64, p99_ms: f64) -> Timing {
        Timing { median_ms, p99_ms, iterations: 10 }
    }

    fn row(idle: usize, module: Option<Timing>) -> Row {
        Row {
            idle_processes: idle,
            processes: idle as u64 + 60,
            threads: idle as u64 + 90,
            scan: timing(2.0, 4.0),
            module,
            full_sample: timing(if module.is_some() { 0.25 } else { 2.5 }, 3.0),
            full_sample_source: if module.is_some() { ProcSource::Module } else { ProcSource::Scan },
        }
    }

    #[test]
    fn table_and_summary_with_and_without_the_module() {
        let rows = [row(100, Some(timing(0.1, 0.2))), row(1000, Some(timing(0.05, 0.5)))];
        let text = table(&rows).markdown();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let columns = lines[0].matches('|').count();
        assert!(lines.iter().all(|l| l.matches('|').count() == columns), "{text}");
        assert_eq!(lines[3], "| 1000 | 1060 | 2.000 | 4.000 | 0.050 | 0.500 | 0.025 | 0.250 | 3.000 | module |");
        let said = summary(&rows, Path::new("/proc"));
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].starts_with("at 1000 idle processes the module costs 0.025 of the scan: 40.0x cheaper"));
        assert!(said[2].contains("at 1000 idle processes: median 0.250 ms"), "{said:?}");

        let rows = [row(100, None), row(5000, None)];
        let text = table(&rows).markdown();
        assert!(text.lines().all(|l| l.matches('|').count() == columns), "{text}");
        assert!(text.ends_with("| 5000 | 5060 | 2.000 | 4.000 | module not loaded | - | - | 2.500 | 3.000 | scan |\n"));
        let said = summary(&rows, Path::new("/proc"));
        assert_eq!(said.len(), 1);
        assert!(said[0].starts_with("module not loaded (/proc/panal_procs absent)"), "{said:?}");
        assert!(summary(&[], Path::new("/proc")).is_empty());
    }

    #[test]
    fn idle_processes_are_reaped_when_dropped() {
        let stop = AtomicBool::new(false);
        let mut idle = IdleProcesses(Vec::new());
        idle.grow_to(3, &stop).unwrap();
        idle.grow_to(2, &stop).unwrap();
        let pids: Vec<u32> = idle.0.iter().map(Child::id).collect();
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|pid| Path::new(&format!("/proc/{pid}")).exists()));
        drop(idle);
        // Reaped, not zombies: their /proc entries are gone (unless a pid was reused at once).
        for pid in pids {
            assert_ne!(procs::task_state(Path::new("/proc"), pid), Some('Z'), "pid {pid}");
        }
        stop.store(true, Ordering::Relaxed);
        let err = IdleProcesses(Vec::new()).grow_to(1, &stop).unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
    }
}
