//! `panal up --demo`, the README's main command: a local cluster with demo data that stops
//! on SIGTERM and comes back with its data from the same directory.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use panal_actors::catalog::BookQuery;
use panal_actors::energy::DeviceKind;
use panal_actors::prediction::ForecastQuery;
use panal_tests::{panal_bin, Client, Consistency, DEADLINE};

/// A base port whose 3 nodes' ports (base + 10·i + 0..3) are all free on 127.0.0.1.
fn free_base_port() -> u16 {
    // Distinct per test process and per call, so parallel tests never pick the same range.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = 20_000 + (std::process::id() % 1000) as u16 * 10 + call * 1_000;
    (0..200)
        .map(|k| start.wrapping_add(k * 37) % 30_000 + 20_000)
        .find(|&base| {
            (0..3).all(|i| (0..3).all(|p| std::net::TcpListener::bind(("127.0.0.1", base + 10 * i + p)).is_ok()))
        })
        .expect("a free port range")
}

/// A running `panal up`, stopped (SIGTERM, which stops its nodes) when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Runs `panal up ARGS` and collects its stdout until the banner's last line; the
/// receiver gets the lines printed after it.
fn up_with(dir: &Path, base: u16, args: &[&str], env: &[(&str, &str)]) -> (Up, Vec<String>, mpsc::Receiver<String>) {
    let mut cmd = Command::new(panal_bin());
    cmd.args(["up", "--dir", &dir.display().to_string(), "--base-port", &base.to_string()]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let child = Up(child);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE * 2;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no banner from panal up: {lines:#?}"));
        let done = line.starts_with("Ctrl-C");
        lines.push(line);
        if done {
            return (child, lines, rx);
        }
    }
}

fn up(dir: &Path, base: u16) -> (Up, Vec<String>) {
    let (up, lines, _) = up_with(dir, base, &["--demo"], &[]);
    (up, lines)
}

/// Reads lines from `panal up` until one satisfies `want`; returns it.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no line {what} from panal up; saw {seen:#?}"));
        if want(&line) {
            return line;
        }
        seen.push(line);
    }
}

/// Runs a line of the banner in `sh` from `cwd`, with `TOKEN` set when given.
fn sh(line: &str, cwd: &Path, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", line.trim()]).current_dir(cwd).env_remove("PANAL_PASSWORD").env_remove("PANAL_URL");
    // The banner's commands must not depend on `panal` being on PATH.
    cmd.env("PATH", "/usr/bin:/bin");
    if let Some(t) = token {
        cmd.env("TOKEN", t);
    }
    cmd.output().unwrap()
}

/// SIGTERMs `panal up` and checks it stopped every node (their API ports are free again).
fn stop(mut up: Up, base: u16) {
    let ok = Command::new("kill").args(["-TERM", &up.0.id().to_string()]).status().unwrap().success();
    assert!(ok);
    assert!(up.0.wait().unwrap().success());
    for i in 0..3 {
        assert!(std::net::TcpListener::bind(("127.0.0.1", base + 10 * i)).is_ok(), "node {i} still listens");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_demo_serves_demo_data_on_every_node_and_restarts_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let (child, banner) = up(dir.path(), base);
    let text = banner.join("\n");
    assert!(text.contains("Demo data loaded: 10 books, 720 meter readings"), "{text}");
    assert!(text.contains("Manager token: PANAL-2-") && text.contains("Admin user: admin"), "{text}");
    let urls: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", base + 10 * i)).collect();
    for url in &urls {
        assert!(text.contains(url.as_str()), "{url} in {text}");
    }

    let api = Client::new(&urls).unwrap().with_consistency(Consistency::Linearizable);
    let all = BookQuery { limit: Some(100), ..Default::default() };
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(api.pinned(i).list_books(&all).await.unwrap().items.len(), 10, "books on {url}");
    }
    let carol = api.new_session();
    carol.pinned(2).login("carol", "carol-demo-pass").await.expect("carol logs in");
    let devices = carol.pinned(1).list_devices(&Default::default()).await.unwrap();
    let meter = devices.items.iter().find(|d| d.kind == DeviceKind::Meter).unwrap().id;
    let day_ahead = ForecastQuery { horizon: Some("24h".into()), interval: None };
    let forecast = carol.pinned(0).device_forecast(meter, &day_ahead).await;
    assert!(forecast.is_ok(), "30 days of readings are enough for a forecast: {forecast:?}");

    // Issue 19 items 8 and 14: the banner's commands work as pasted, without `panal` on
    // PATH and from another directory; the battery chart advice is a command.
    let elsewhere = tempfile::tempdir().unwrap();
    let command = |needle: &str| {
        banner.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` line in {text}")).clone()
    };
    let node_ls = sh(&command(" node ls "), elsewhere.path(), None);
    let out = String::from_utf8_lossy(&node_ls.stdout);
    assert!(node_ls.status.success(), "{}\n{}", command(" node ls "), String::from_utf8_lossy(&node_ls.stderr));
    assert_eq!(out.matches("manager").count(), 3, "{out}");
    let top = sh(&format!("{} --once", command(" top ")), elsewhere.path(), None);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    let token_line = command("TOKEN=$(");
    let token = sh(&format!("{}; printf %s \"$TOKEN\"", token_line.trim()), elsewhere.path(), None);
    let token = String::from_utf8_lossy(&token.stdout).to_string();
    assert!(token.len() > 20, "the banner's login line gives a token: {token:?}");
    let chart = sh(&command("chart.svg"), elsewhere.path(), Some(&token));
    assert!(chart.status.success(), "{}", String::from_utf8_lossy(&chart.stderr));
    let svg =
        std::fs::read_to_string(elsewhere.path().join("battery.svg")).expect("the chart command writes battery.svg");
    assert!(svg.contains("<svg"), "{svg:.200}");
    // The banner points a browser at the console (where the chart needs no token).
    let console = command("Web console: ");
    let console_url = console.split_whitespace().nth(2).unwrap_or_default().to_string();
    assert_eq!(console_url, format!("{}/ui/", urls[0]), "{console}");
    let page = reqwest::get(&console_url).await.unwrap();
    assert_eq!(page.status(), 200, "{console_url}");
    stop(child, base);

    // The same directory: the same cluster and its data, the demo not loaded twice.
    let (child, banner) = up(dir.path(), base);
    let text = banner.join("\n");
    assert!(text.contains("Demo data already present (10 books)"), "{text}");
    let q = BookQuery { q: Some("Dispossessed".into()), ..Default::default() };
    let dispossessed = api.pinned(1).list_books(&q).await.unwrap();
    assert_eq!(dispossessed.items[0].stock, 11, "bob's paid order still holds one copy");
    stop(child, base);
}

/// Issue 15: `panal up` supervises its nodes; issue 19 item 9: admin commands find a local
/// cluster's password, take a bare host:port and get past a dead node.
#[tokio::test(flavor = "multi_thread")]
async fn up_restarts_a_killed_node_and_the_cli_finds_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let password = "chosen-by-the-operator";
    let (up, banner, rx) = up_with(dir.path(), base, &[], &[("PANAL_ADMIN_PASSWORD", password)]);
    let text = banner.join("\n");
    assert!(text.contains(&format!("password: {password}")), "PANAL_ADMIN_PASSWORD is honoured: {text}");
    let urls: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + 10 * i)).collect();
    let api = Client::new(&urls).unwrap();
    api.login("admin", password).await.expect("the operator's password works");

    // Every node is on the status line.
    let status = wait_line(&rx, "status", |l| l.starts_with("status:"));
    for n in ["node1:", "node2:", "node3:"] {
        assert!(status.contains(n), "{status}");
    }

    // kill -9 node2: reported, reaped, restarted, ready again.
    let pids = banner.iter().find(|l| l.contains("pids:")).expect("the banner lists the pids");
    let pid: u32 = pids
        .split("node2=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let exited = wait_line(&rx, "about node2's exit", |l| l.starts_with("node2 exited"));
    assert!(exited.contains("restarting it in"), "{exited}");
    wait_line(&rx, "about node2's restart", |l| l.starts_with("restarted node2"));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the killed node was reaped (no <defunct>)");
    panal_tests::poll("node2 to be ready again", || async { api.is_ready(1, Duration::from_secs(1)).await }).await;

    // The CLI: no password given (read from the up dir), a bare host:port.
    let up_dir = dir.path().display().to_string();
    let ls = |args: &[&str]| {
        let mut cmd = Command::new(panal_bin());
        cmd.args(["node", "ls"]).args(args);
        cmd.env_remove("PANAL_PASSWORD").env_remove("PANAL_URL").env_remove("PANAL_UP_DIR").output().unwrap()
    };
    let o = ls(&["--node", &urls[1], "--up-dir", &up_dir]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches("manager").count(), 3);
    // A dead address first: the up dir's other nodes are tried.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let o = ls(&["--node", &dead, "--up-dir", &up_dir]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing to fall back on: the error names the address and suggests what to do.
    let o = ls(&["--node", &dead, "--password", password, "--up-dir", "/nonexistent"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&dead) && err.contains("hint:"), "{err}");
    assert!(!err.contains("builder error"), "{err}");
    drop(up);
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_stop_when_their_launcher_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let (up, _) = up(dir.path(), base);
    // SIGKILL: no chance for `panal up` to stop its nodes itself.
    assert!(Command::new("kill").args(["-KILL", &up.0.id().to_string()]).status().unwrap().success());
    panal_tests::poll("every node to stop after its launcher died", || async {
        (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + 10 * i)).is_ok())
    })
    .await;
}
