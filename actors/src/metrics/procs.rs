//! Process counts by scheduler state, from the optional `panal_procs` kernel module or from a scan of
//! `/proc`.
//!
//! This module owns [`ProcessCounts`] (the JSON object `/proc/panal_procs` prints), the parser for that file,
//! the equivalent userspace [`scan`] of `/proc/[pid]/stat`, [`read`] (module first, scan as fallback), the
//! error type [`ProcsError`] shared by the `metrics` modules and the small `/proc` file helpers they use.
//!
//! The scan counts exactly what `kernel-module/panal_procs.c` counts (see its README):
//!
//! - `total`: numeric entries of `/proc` (thread-group leaders, kernel threads and zombies included) whose
//!   `stat` could be read;
//! - the state fields: the state letter of `/proc/[pid]/stat` (the group leader's, which is what the module's
//!   `task_state_index(p)` yields): `R` running, `S` sleeping, `D` disk_sleep, `T` stopped, `t` traced,
//!   `Z` zombie, `X` dead, `I` idle. `x` (the pre-4.14 spelling of a dead task) also counts as dead. `P` (parked
//!   kthread) and any other letter count towards `total` only, so the state fields may sum to less than `total`;
//! - `threads`: the sum of field 20 (`num_threads`) of every `stat` read, i.e. the number of entries of every
//!   `/proc/[pid]/task`. The kernel derives both from the same thread list the module walks; the field costs no
//!   extra syscall and is read atomically with the state letter;
//! - `kernel_version`: `<root>/sys/kernel/osrelease` without its newline (`uname -r`);
//! - `collected_ns`: like the module, `CLOCK_REALTIME` (Rust's `SystemTime::now()`) in ns since the Unix epoch,
//!   taken right after the scan. It is wall-clock time, so it is *not* monotonic: it follows clock steps.
//!
//! A process that exits while the scan runs (`ENOENT`/`ESRCH` on its `stat`) is skipped, as the module would
//! not see it either. Any other error fails the scan.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use procfs::process::Stat;
use procfs::{FromRead, ProcError};
use serde::{Deserialize, Serialize};

/// Where the kernel module publishes its counts.
pub const MODULE_PATH: &str = "/proc/panal_procs";
/// The module's file name, relative to a proc root (`<root>/panal_procs`).
pub const MODULE_FILE: &str = "panal_procs";

/// `ESRCH` is 3 on every Linux architecture (asm-generic/errno-base.h); std has no `ErrorKind` for it.
const ESRCH: i32 = 3;
/// The module prints one short line; anything longer than this is not its output.
const MODULE_MAX_BYTES: u64 = 64 * 1024;

/// Process and thread counts by scheduler state: the object `/proc/panal_procs` prints, field for field and in
/// the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCounts {
    pub total: u64,
    pub running: u64,
    pub sleeping: u64,
    pub disk_sleep: u64,
    pub stopped: u64,
    pub traced: u64,
    pub zombie: u64,
    pub dead: u64,
    pub idle: u64,
    pub threads: u64,
    pub kernel_version: String,
    /// `CLOCK_REALTIME` in ns since the Unix epoch, taken right after counting.
    pub collected_ns: u64,
}

/// Which source produced a [`ProcessCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcSource {
    /// `/proc/panal_procs`, from the kernel module.
    Module,
    /// A userspace scan of `/proc/[pid]/stat`.
    Scan,
}

/// Why process counts or a node sample could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("invalid {MODULE_PATH} JSON: {0}")]
    ModuleJson(#[from] serde_json::Error),
}

impl ProcsError {
    pub(super) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    pub(super) fn parse(path: &Path, reason: impl Into<String>) -> Self {
        Self::Parse { path: path.to_path_buf(), reason: reason.into() }
    }

    /// Wraps a procfs parser error; its internal errors carry a "please report this bug" banner that is not
    /// useful for malformed input, so only their message is kept.
    pub(super) fn procfs(path: &Path, err: ProcError) -> Self {
        match err {
            ProcError::InternalError(e) => Self::parse(path, e.msg),
            other => Self::parse(path, other.to_string()),
        }
    }
}

/// Parses the text of `/proc/panal_procs`. Every field is required; unknown extra fields are ignored so that a
/// newer module stays readable.
pub fn parse_module_json(text: &str) -> Result<ProcessCounts, ProcsError> {
    Ok(serde_json::from_str(text)?)
}

/// Counts processes by scanning `<proc_root>/[pid]/stat`, with the module's semantics (see the module docs).
pub fn scan(proc_root: &Path) -> Result<ProcessCounts, ProcsError> {
    let kernel_version = read_kernel_version(proc_root)?;
    let mut counts = ProcessCounts {
        total: 0,
        running: 0,
        sleeping: 0,
        disk_sleep: 0,
        stopped: 0,
        traced: 0,
        zombie: 0,
        dead: 0,
        idle: 0,
        threads: 0,
        kernel_version,
        collected_ns: 0,
    };
    let entries = fs::read_dir(proc_root).map_err(|e| ProcsError::io(proc_root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ProcsError::io(proc_root, e))?;
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_pid) {
            continue;
        }
        let path = entry.path().join("stat");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(ProcsError::io(&path, e)),
        };
        let stat = parse_stat(&path, &bytes)?;
        counts.total = counts.total.saturating_add(1);
        if let Some(field) = state_field(&mut counts, stat.state) {
            *field = field.saturating_add(1);
        }
        counts.threads = counts.threads.saturating_add(u64::try_from(stat.num_threads).unwrap_or(0));
    }
    counts.collected_ns = realtime_ns();
    Ok(counts)
}

/// Counts from the kernel module if `<proc_root>/panal_procs` exists and parses, else from [`scan`].
pub fn read(proc_root: &Path) -> (Result<ProcessCounts, ProcsError>, ProcSource) {
    if let Some(counts) = read_module(&proc_root.join(MODULE_FILE)) {
        return (Ok(counts), ProcSource::Module);
    }
    (scan(proc_root), ProcSource::Scan)
}

/// The state letter `<proc_root>/<pid>/stat` shows, or `None` if that process is gone or unreadable.
pub fn task_state(proc_root: &Path, pid: u32) -> Option<char> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let bytes = fs::read(&path).ok()?;
    parse_stat(&path, &bytes).ok().map(|stat| stat.state)
}

/// The counter a state letter increments, mirroring `panal_count()` in panal_procs.c over the letters of
/// `task_index_to_char()` ("RSDTtXZPI"). `P` and letters the module has no field for count in `total` only.
fn state_field(counts: &mut ProcessCounts, state: char) -> Option<&mut u64> {
    Some(match state {
        'R' => &mut counts.running,
        'S' => &mut counts.sleeping,
        'D' => &mut counts.disk_sleep,
        'T' => &mut counts.stopped,
        't' => &mut counts.traced,
        'Z' => &mut counts.zombie,
        'X' | 'x' => &mut counts.dead,
        'I' => &mut counts.idle,
        _ => return None,
    })
}

fn read_module(path: &Path) -> Option<ProcessCounts> {
    let mut text = String::new();
    fs::File::open(path).ok()?.take(MODULE_MAX_BYTES).read_to_string(&mut text).ok()?;
    parse_module_json(&text).ok()
}

/// `utsname()->release` as the module emits it: the bytes up to the first NUL, each byte one char (the module
/// escapes bytes outside printable ASCII as `\u00XX`, which decodes to the same char).
fn read_kernel_version(proc_root: &Path) -> Result<String, ProcsError> {
    let path = proc_root.join("sys/kernel/osrelease");
    let bytes = fs::read(&path).map_err(|e| ProcsError::io(&path, e))?;
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
    Ok(bytes.iter().map(|&b| char::from(b)).collect())
}

/// A `/proc` entry name that is a pid: ASCII digits only (`str::parse` would also accept a leading `+`).
fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// The process went away between listing `/proc` and reading its file.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH)
}

/// Reads a whole `/proc` file.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, ProcsError> {
    fs::read(path).map_err(|e| ProcsError::io(path, e))
}

/// Parses a `/proc/[pid]/stat` line with procfs. procfs slices the line around the first `(` and the last `)`
/// without bounds checks, so the shape is checked first (same lossy decoding and trimming as procfs does).
pub(super) fn parse_stat(path: &Path, bytes: &[u8]) -> Result<Stat, ProcsError> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim();
    let shape_ok = match (line.find('('), line.rfind(')')) {
        (Some(open), Some(close)) => {
            open >= 1 && line.is_char_boundary(open - 1) && close > open && line.get(close + 2..).is_some()
        }
        _ => false,
    };
    if !shape_ok {
        return Err(ProcsError::parse(path, "not a stat line: expected `pid (comm) state ...`"));
    }
    Stat::from_read(bytes).map_err(|e| ProcsError::procfs(path, e))
}

/// `CLOCK_REALTIME` in ns since the Unix epoch (0 before it, saturating in the year 2554).
fn realtime_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    const MODULE_FIXTURE: &str = include_str!("fixtures/panal_procs.json");
    const SCAN_FIXTURE: &str = include_str!("fixtures/proc_scan.json");

    macro_rules! fixture {
        ($path:literal) => {
            ($path, include_str!(concat!("fixtures/proc/", $path)))
        };
    }

    /// The committed fake proc tree (`fixtures/proc/`), file by file.
    const FAKE_PROC: &[(&str, &str)] = &[
        fixture!("1/stat"),
        fixture!("2/stat"),
        fixture!("3/stat"),
        fixture!("4/stat"),
        fixture!("10/stat"),
        fixture!("11/stat"),
        fixture!("12/stat"),
        fixture!("13/stat"),
        fixture!("14/stat"),
        fixture!("15/stat"),
        fixture!("16/stat"),
        fixture!("17/stat"),
        fixture!("18/stat"),
        fixture!("19/stat"),
        fixture!("20/stat"),
        fixture!("21/stat"),
        fixture!("22/stat"),
        fixture!("+23/stat"),
        fixture!("24x/stat"),
        fixture!("self/stat"),
        fixture!("sys/kernel/osrelease"),
        fixture!("stat"),
        fixture!("meminfo"),
        fixture!("loadavg"),
    ];

    /// The fake tree's expected counts (see the comm and state of each `fixtures/proc/*/stat`).
    pub(crate) fn fake_counts() -> ProcessCounts {
        ProcessCounts {
            // 1-4 and 10-22; not `4242` (no stat: exited), `+23`, `24x`, `self`, `sys`.
            total: 17,
            running: 1,    // 10
            sleeping: 5,   // 1, 2, 11 "a) b", 16 "(x) Z 1", 20 ""
            disk_sleep: 1, // 12
            stopped: 1,    // 13
            traced: 1,     // 14
            zombie: 1,     // 15
            dead: 2,       // 17 X, 18 x
            idle: 2,       // 3, 4; 19 P, 21 K, 22 W: total only
            threads: 30,   // 13 single-threaded + 8 + 2 + 3 + 4
            kernel_version: "6.1.0-56-amd64".into(),
            collected_ns: 0,
        }
    }

    /// A copy of the fake proc tree in a fresh temporary directory, removed on drop.
    pub(crate) struct FakeProc {
        pub(crate) root: PathBuf,
    }

    impl FakeProc {
        pub(crate) fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let root = std::env::temp_dir().join(format!(
                "panal-metrics-{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                realtime_ns()
            ));
            let fake = Self { root };
            for (path, text) in FAKE_PROC {
                fake.write(path, text.as_bytes());
            }
            // Listed but without a stat: a process that exited between readdir and open.
            fs::create_dir_all(fake.root.join("4242")).unwrap();
            for fd in 0..4 {
                fake.write(&format!("self/fd/{fd}"), b"");
            }
            fake
        }

        pub(crate) fn write(&self, path: &str, bytes: &[u8]) {
            let path = self.root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn without_time(mut counts: ProcessCounts) -> ProcessCounts {
        counts.collected_ns = 0;
        counts
    }

    #[test]
    fn parses_module_fixture() {
        let counts = parse_module_json(MODULE_FIXTURE).unwrap();
        assert_eq!(
            counts,
            ProcessCounts {
                total: 62,
                running: 1,
                sleeping: 18,
                disk_sleep: 1,
                stopped: 1,
                traced: 1,
                zombie: 2,
                dead: 0,
                idle: 38,
                threads: 66,
                kernel_version: "6.1.0-56-amd64".into(),
                collected_ns: 1_795_425_997_110_106_760,
            }
        );
        // The guest's busybox scan captured with it agrees on every count.
        let scan: serde_json::Map<String, serde_json::Value> = serde_json::from_str(SCAN_FIXTURE).unwrap();
        let module = serde_json::to_value(&counts).unwrap();
        for (key, value) in &scan {
            assert_eq!(Some(value), module.get(key), "{key}");
        }
    }

    #[test]
    fn module_json_is_strict_about_fields_and_types_but_tolerates_new_ones() {
        let err = parse_module_json("").unwrap_err().to_string();
        assert!(err.starts_with("invalid /proc/panal_procs JSON: "), "{err}");
        assert!(parse_module_json("{}").is_err());
        assert!(parse_module_json(SCAN_FIXTURE).is_err(), "kernel_version and collected_ns are required");
        assert!(parse_module_json(&MODULE_FIXTURE.replace("\"total\":62", "\"total\":-1")).is_err());
        assert!(parse_module_json(&MODULE_FIXTURE.replace("\"total\":62", "\"total\":\"62\"")).is_err());
        assert!(parse_module_json(&format!("{MODULE_FIXTURE} {{}}")).is_err(), "trailing data");
        let newer = MODULE_FIXTURE.replace("\"threads\":66,", "\"threads\":66,\"parked\":3,");
        assert_eq!(parse_module_json(&newer).unwrap(), parse_module_json(MODULE_FIXTURE).unwrap());
        // Escapes as the module writes them.
        let escaped = MODULE_FIXTURE.replace("6.1.0-56-amd64", r#"6.1\"\\\u001f\u00e9"#);
        assert_eq!(parse_module_json(&escaped).unwrap().kernel_version, "6.1\"\\\u{1f}\u{e9}");
    }

    #[test]
    fn scan_of_fake_tree_counts_every_state_letter() {
        let fake = FakeProc::new();
        let before = realtime_ns();
        let counts = scan(&fake.root).unwrap();
        assert!(counts.collected_ns >= before);
        assert_eq!(without_time(counts), fake_counts());
    }

    #[test]
    fn task_state_reads_the_letter_after_the_last_paren() {
        let fake = FakeProc::new();
        assert_eq!(task_state(&fake.root, 11), Some('S'), "comm `a) b`");
        assert_eq!(task_state(&fake.root, 16), Some('S'), "comm `(x) Z 1`");
        assert_eq!(task_state(&fake.root, 20), Some('S'), "empty comm");
        assert_eq!(task_state(&fake.root, 14), Some('t'));
        assert_eq!(task_state(&fake.root, 4242), None, "no stat");
        assert_eq!(task_state(&fake.root, 999_999), None, "no such pid");
    }

    #[test]
    fn scan_handles_comm_with_newline_and_invalid_utf8() {
        let fake = FakeProc::new();
        let tail =
            " R 1 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 6 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        fake.write("30/stat", [b"30 (bad\xff\nname)".as_slice(), tail.as_bytes()].concat().as_slice());
        let counts = scan(&fake.root).unwrap();
        let expected = fake_counts();
        assert_eq!(counts.total, expected.total + 1);
        assert_eq!(counts.running, expected.running + 1);
        assert_eq!(counts.threads, expected.threads + 6);
    }

    #[test]
    fn scan_fails_on_malformed_stat_and_missing_root() {
        let fake = FakeProc::new();
        fake.write("31/stat", b"31 (truncated");
        assert!(matches!(scan(&fake.root), Err(ProcsError::Parse { .. })));
        let missing = fake.root.join("nope");
        let err = scan(&missing).unwrap_err();
        assert!(matches!(err, ProcsError::Io { .. }));
        assert!(err.to_string().starts_with(&format!("cannot read {}", missing.display())), "{err}");
        fs::remove_file(fake.root.join("sys/kernel/osrelease")).unwrap();
        assert!(matches!(scan(&fake.root), Err(ProcsError::Io { .. })));
    }

    #[test]
    fn kernel_version_matches_the_module_encoding() {
        let fake = FakeProc::new();
        fake.write("sys/kernel/osrelease", b"6.1.0-\xe9x\n");
        assert_eq!(read_kernel_version(&fake.root).unwrap(), "6.1.0-\u{e9}x");
        fake.write("sys/kernel/osrelease", b"6.1\0junk\n");
        assert_eq!(read_kernel_version(&fake.root).unwrap(), "6.1");
        fake.write("sys/kernel/osrelease", b"");
        assert_eq!(read_kernel_version(&fake.root).unwrap(), "");
    }

    #[test]
    fn read_prefers_the_module_and_falls_back_to_the_scan() {
        let fake = FakeProc::new();
        let (counts, source) = read(&fake.root);
        assert_eq!(source, ProcSource::Scan);
        assert_eq!(without_time(counts.unwrap()), fake_counts());

        fake.write(MODULE_FILE, MODULE_FIXTURE.as_bytes());
        let (counts, source) = read(&fake.root);
        assert_eq!(source, ProcSource::Module);
        assert_eq!(counts.unwrap(), parse_module_json(MODULE_FIXTURE).unwrap());

        for garbage in [&b""[..], b"{\"total\":1}", b"\xff\xfe", b"not json"] {
            fake.write(MODULE_FILE, garbage);
            let (counts, source) = read(&fake.root);
            assert_eq!(source, ProcSource::Scan);
            assert_eq!(without_time(counts.unwrap()), fake_counts());
        }
    }

    /// Keys of the top-level JSON object in `text`, in the order they appear.
    fn keys_in_order(text: &str) -> Vec<String> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
        let mut keys: Vec<String> = map.keys().cloned().collect();
        keys.sort_by_key(|k| text.find(&format!("\"{k}\":")));
        keys
    }

    #[test]
    fn scan_output_has_the_module_schema() {
        let fake = FakeProc::new();
        let scanned = serde_json::to_string(&scan(&fake.root).unwrap()).unwrap();
        let module_keys = keys_in_order(MODULE_FIXTURE);
        let scan_keys = keys_in_order(&scanned);
        assert_eq!(
            module_keys.iter().collect::<BTreeSet<_>>(),
            scan_keys.iter().collect::<BTreeSet<_>>(),
            "same key set"
        );
        assert_eq!(module_keys, scan_keys, "same key order");
        assert_eq!(serde_json::to_string(&ProcSource::Module).unwrap(), "\"module\"");
        assert_eq!(serde_json::to_string(&ProcSource::Scan).unwrap(), "\"scan\"");
    }

    #[test]
    fn stat_parser_never_panics() {
        let path = Path::new("x/stat");
        let valid = "77 (é) ö)ü) R 1 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(parse_stat(path, valid.as_bytes()).unwrap().state, 'R');
        let bytes = valid.as_bytes();
        for end in 0..=bytes.len() {
            let _ = parse_stat(path, &bytes[..end]);
            let _ = parse_stat(path, &bytes[end..]);
        }
        for odd in
            ["(", ")", ")(", "()", "1 (", "1 ()", "1 () ", "(x) R", "é(x) R 1", "1 (x)é R", "1 (x)\u{1F600}", "  "]
        {
            assert!(parse_stat(path, odd.as_bytes()).is_err(), "{odd:?}");
        }
    }

    /// Kills and reaps the children on every exit path, assertion failures included.
    struct Reaper(Vec<Child>);

    impl Drop for Reaper {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Polls until `pid` shows state `want`, up to `deadline`; returns the last state seen.
    fn await_state(proc_root: &Path, pid: u32, want: char, deadline: Instant) -> Option<char> {
        loop {
            let state = task_state(proc_root, pid);
            if state == Some(want) || Instant::now() >= deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn quiet(cmd: &mut Command) -> &mut Command {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null())
    }

    #[test]
    fn live_scan_sees_own_zombie_and_stopped_children() {
        let proc_root = Path::new("/proc");
        let mut reaper = Reaper(Vec::new());
        reaper.0.push(quiet(Command::new("sh").args(["-c", "exit 0"])).spawn().unwrap());
        reaper.0.push(quiet(Command::new("sleep").arg("30")).spawn().unwrap());
        let (zombie, stopped) = (reaper.0[0].id(), reaper.0[1].id());
        let status = quiet(Command::new("kill").args(["-STOP", &stopped.to_string()])).status().unwrap();
        assert!(status.success(), "kill -STOP {stopped}: {status}");

        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(await_state(proc_root, zombie, 'Z', deadline), Some('Z'), "pid {zombie}");
        assert_eq!(await_state(proc_root, stopped, 'T', deadline), Some('T'), "pid {stopped}");

        let counts = scan(proc_root).unwrap();
        assert!(counts.zombie >= 1, "{counts:?}");
        assert!(counts.stopped >= 1, "{counts:?}");
        assert!(counts.threads >= counts.total, "{counts:?}");
        assert_eq!(task_state(proc_root, zombie), Some('Z'));
        assert_eq!(task_state(proc_root, stopped), Some('T'));
        assert_eq!(counts.kernel_version, fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim_end());
    }

    #[test]
    fn live_num_threads_equals_task_dir_entries() {
        // Other tests start and stop threads in this process, so retry until a quiet moment.
        let (stops, workers): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| {
                let (stop, wait) = std::sync::mpsc::channel::<()>();
                (stop, std::thread::spawn(move || wait.recv().is_err()))
            })
            .unzip();
        let path = PathBuf::from(format!("/proc/{}/stat", std::process::id()));
        let task_dir = path.with_file_name("task");
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut field, mut entries) = (0, 0);
        while Instant::now() < deadline {
            field = parse_stat(&path, &fs::read(&path).unwrap()).unwrap().num_threads;
            entries = i64::try_from(fs::read_dir(&task_dir).unwrap().count()).unwrap();
            if field == entries {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(stops);
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(field, entries);
        assert!(field >= 4, "main, 3 workers: {field}");
    }

    #[test]
    fn live_module_agrees_with_scan_when_loaded() {
        let proc_root = Path::new("/proc");
        let Some(first) = read_module(&proc_root.join(MODULE_FILE)) else {
            eprintln!("{MODULE_PATH} absent: nothing to compare");
            return;
        };
        // The system keeps changing between two reads; like scripts/kmod-test.sh, accept a scan equal to
        // either neighbouring module read, within a few attempts.
        let mut last = None;
        for _ in 0..50 {
            let before = read_module(&proc_root.join(MODULE_FILE)).unwrap();
            let scanned = without_time(scan(proc_root).unwrap());
            let after = read_module(&proc_root.join(MODULE_FILE)).unwrap();
            if scanned == without_time(before.clone()) || scanned == without_time(after.clone()) {
                assert_eq!(first.kernel_version, scanned.kernel_version);
                return;
            }
            last = Some((before, scanned, after));
        }
        panic!("module and scan never agreed: {last:?}");
    }
}
