//! `panal up --demo`, the README's main command: a local cluster with demo data that stops
//! on SIGTERM and comes back with its data from the same directory.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use panal_tests::{panal_bin, DEADLINE};
use serde_json::Value;

/// Reads right after the demo was loaded through other nodes must see all of it.
const LINEARIZABLE: (&str, &str) = ("x-panal-consistency", "linearizable");

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

/// Runs `panal up` and collects its stdout until the banner's last line.
fn up(dir: &std::path::Path, base: u16) -> (Up, Vec<String>) {
    let mut child = Command::new(panal_bin())
        .args(["up", "--demo", "--dir", &dir.display().to_string(), "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
            return (child, lines);
        }
    }
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
    assert!(text.contains("Manager token: PANAL-1-") && text.contains("Admin user: admin"), "{text}");
    let urls: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", base + 10 * i)).collect();
    for url in &urls {
        assert!(text.contains(url.as_str()), "{url} in {text}");
    }

    let http = reqwest::Client::new();
    for url in &urls {
        let books: Value = http
            .get(format!("{url}/api/v1/books?limit=100"))
            .header(LINEARIZABLE.0, LINEARIZABLE.1)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(books["items"].as_array().unwrap().len(), 10, "books on {url}");
    }
    let login: Value = http
        .post(format!("{}/api/v1/auth/login", urls[2]))
        .json(&serde_json::json!({"username": "carol", "password": "carol-demo-pass"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().expect("carol logs in").to_string();
    let devices: Value = http
        .get(format!("{}/api/v1/devices", urls[1]))
        .bearer_auth(&token)
        .header(LINEARIZABLE.0, LINEARIZABLE.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let meter = devices["items"].as_array().unwrap().iter().find(|d| d["kind"] == "meter").unwrap()["id"].clone();
    let forecast = http
        .get(format!("{}/api/v1/devices/{meter}/forecast?horizon=24h", urls[0]))
        .bearer_auth(&token)
        .header(LINEARIZABLE.0, LINEARIZABLE.1)
        .send()
        .await
        .unwrap();
    assert_eq!(forecast.status(), 200, "30 days of readings are enough for a forecast");
    stop(child, base);

    // The same directory: the same cluster and its data, the demo not loaded twice.
    let (child, banner) = up(dir.path(), base);
    let text = banner.join("\n");
    assert!(text.contains("Demo data already present (10 books)"), "{text}");
    let dispossessed: Value = http
        .get(format!("{}/api/v1/books?q=Dispossessed", urls[1]))
        .header(LINEARIZABLE.0, LINEARIZABLE.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dispossessed["items"][0]["stock"], 11, "bob's paid order still holds one copy");
    stop(child, base);
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
