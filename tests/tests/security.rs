//! Hostile input against a real node (issue 13): login floods, mesh junk, slowloris, idle
//! connection piles, secrets at rest and token lifetimes. Memory is the node's RSS, read
//! from /proc/PID/status.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use panal_tests::{poll, Call, Cluster};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The node's resident memory in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("node status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// Samples the node's RSS every 20 ms until stopped; returns the peak in MiB.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut peak = 0f64;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak.max(rss_mib(pid))
    })
}

/// 2,000 wrong logins from 16 concurrent clients. The first 200 failures are free (so
/// the hashing pool really works under load), then the throttle locks the account and the
/// address: 429s. Memory stays within 50 MiB of idle during and after, and the right
/// password works once the lockout ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_flood_keeps_memory_bounded_and_locks_out() {
    let c = Cluster::start(1, 0, &["--login-free-failures", "200", "--login-max-lockout", "4"]).await;
    let pid = c.launcher.nodes[0].pid().unwrap();
    let idle = rss_mib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(pid, stop.clone());
    let url = format!("{}/api/v1/auth/login", c.nodes[0].api());
    let next = Arc::new(AtomicU64::new(0));
    let counts: Vec<(u64, u64, u64, u64)> = futures::future::join_all((0..16).map(|_| {
        let (http, url, next) = (c.http.clone(), url.clone(), next.clone());
        async move {
            let (mut unauthorized, mut throttled, mut overloaded, mut retry_after) = (0, 0, 0, 0);
            while next.fetch_add(1, Ordering::Relaxed) < 2000 {
                let r = http
                    .post(&url)
                    .json(&json!({"username": "admin", "password": "not-the-password"}))
                    .send()
                    .await
                    .expect("login request");
                match r.status().as_u16() {
                    401 => unauthorized += 1,
                    429 => {
                        throttled += 1;
                        let secs: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                        retry_after = retry_after.max(secs);
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "too_many_attempts");
                    }
                    503 => {
                        overloaded += 1;
                        assert!(r.headers().contains_key("retry-after"));
                    }
                    other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
                }
            }
            (unauthorized, throttled, overloaded, retry_after)
        }
    }))
    .await;
    let during_peak = {
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    };
    let unauthorized: u64 = counts.iter().map(|c| c.0).sum();
    let throttled: u64 = counts.iter().map(|c| c.1).sum();
    let overloaded: u64 = counts.iter().map(|c| c.2).sum();
    let retry_after = counts.iter().map(|c| c.3).max().unwrap();
    eprintln!(
        "login flood: idle {idle:.1} MiB, peak {during_peak:.1} MiB; 401 {unauthorized}, 429 {throttled}, 503 {overloaded}"
    );
    assert!(unauthorized >= 200, "the free failures were checked: {unauthorized}");
    assert!(throttled > 0, "429s seen");
    assert!(during_peak - idle < 50.0, "RSS during the flood: idle {idle:.1} MiB, peak {during_peak:.1} MiB");

    // A correct password during the lockout still waits…
    let right = json!({"username": "admin", "password": c.password});
    let r = c.send(0, Call::new("POST", "/api/v1/auth/login").json(right.clone())).await;
    assert_eq!(r.status, 429, "{}", r.text);
    // …and works once it is over.
    assert!(retry_after <= 4, "Retry-After {retry_after} within --login-max-lockout");
    tokio::time::sleep(Duration::from_secs(retry_after + 1)).await;
    let r = c.send(0, Call::new("POST", "/api/v1/auth/login").json(right)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = rss_mib(pid);
    eprintln!("login flood: after {after:.1} MiB");
    assert!(after - idle < 50.0, "RSS after the flood: idle {idle:.1} MiB, after {after:.1} MiB");
    // Idle hashing threads give their blocks back (3 s each, one after the other).
    tokio::time::sleep(Duration::from_secs(14)).await;
    let rested = rss_mib(pid);
    eprintln!("login flood: rested {rested:.1} MiB");
    assert!(rested - idle < 50.0, "RSS at rest: idle {idle:.1} MiB, rested {rested:.1} MiB");
}

/// 60 mesh connections each announcing a 16 MiB frame and sending junk: refused before
/// anything large is buffered; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mesh_junk_is_refused_before_authentication() {
    let c = Cluster::start(1, 0, &[]).await;
    let pid = c.launcher.nodes[0].pid().unwrap();
    let idle = rss_mib(pid);
    let mesh = format!("{}:7702", c.nodes[0].ip);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(pid, stop.clone());
    let junk = Arc::new(vec![0x5au8; 1024 * 1024]);
    let senders: Vec<_> = (0..60)
        .map(|_| {
            let (mesh, junk) = (mesh.clone(), junk.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(&mesh) else { return 0usize };
                let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
                let mut sent = 0;
                if s.write_all(&(16u64 * 1024 * 1024).to_be_bytes()).is_ok() {
                    for _ in 0..15 {
                        if s.write_all(&junk).is_err() {
                            break;
                        }
                        sent += junk.len();
                    }
                }
                sent
            })
        })
        .collect();
    let sent: usize = senders.into_iter().map(|t| t.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!("mesh flood: idle {idle:.1} MiB, peak {peak:.1} MiB, {} MiB accepted by the socket", sent >> 20);
    assert!(peak - idle < 50.0, "RSS during the mesh flood: idle {idle:.1} MiB, peak {peak:.1} MiB");
    let r = c.send(0, Call::new("GET", "/api/v1/auth/ping")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    // With peer TLS (the default) the junk never gets past the TLS handshake.
    let refused = ["handshake frame too large", "authenticating", "refused in the TLS handshake"];
    assert!(refused.iter().any(|r| log.contains(r)), "refusals are logged");
}

/// Sends a request's headers one byte a second; returns how long the server kept the
/// connection open.
fn slowloris(addr: &str) -> Duration {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = [0u8; 1024];
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "still open after a minute");
        if s.write_all(b"X").is_err() {
            return started.elapsed();
        }
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(1) {
            match s.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {} // a 408 or similar before closing
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
        }
    }
}

/// Slowloris is cut at the header timeout on the api and peer ports; 2,000 idle
/// connections (over a cap of 500) do not stop `/ready` or logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_connections_cannot_exhaust_the_ports() {
    let c = Cluster::start(1, 0, &["--header-timeout", "3", "--idle-timeout", "4", "--max-connections", "500"]).await;
    let ip = c.nodes[0].ip.clone();

    // An idle keep-alive connection is closed after the idle timeout.
    let idle_closed = tokio::task::spawn_blocking({
        let addr = format!("{ip}:7700");
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            let answered = Instant::now();
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            answered.elapsed()
        }
    })
    .await
    .unwrap();
    eprintln!("idle keep-alive connection closed after {:.1} s", idle_closed.as_secs_f64());
    assert!(idle_closed < Duration::from_secs(7), "idle keep-alive connection open {idle_closed:?}");
    for port in [7700, 7701] {
        let open = tokio::task::spawn_blocking({
            let addr = format!("{ip}:{port}");
            move || slowloris(&addr)
        })
        .await
        .unwrap();
        eprintln!("slowloris on port {port}: closed after {:.1} s", open.as_secs_f64());
        assert!(open < Duration::from_secs(6), "port {port}: slowloris kept open {open:?} (header timeout 3 s)");
    }

    // The test process needs a descriptor per connection too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = rustix::process::Rlimit { current: Some(maximum), maximum: Some(maximum) };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).unwrap();
        }
    }
    let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(fds >= 2_300, "2,000 idle connections need more than {fds} open files: raise `ulimit -n`");
    let api = format!("{ip}:7700");
    let idle: Vec<TcpStream> = (0..2000).filter_map(|_| TcpStream::connect(&api).ok()).collect();
    assert!(idle.len() >= 1900, "only {} idle connections opened", idle.len());
    for _ in 0..5 {
        let r = c.http.get(format!("http://{api}/ready")).timeout(Duration::from_secs(5)).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "/ready with 2,000 idle connections open");
    }
    let r = c
        .send(0, Call::new("POST", "/api/v1/auth/login").json(json!({"username": "admin", "password": c.password})))
        .await;
    assert_eq!(r.status, 200, "login with 2,000 idle connections open: {}", r.text);
    drop(idle);
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// A JWT signed with `secret` as key `kid`, as anyone holding the key could make it.
fn forge(kid: &str, secret: &str, uid: i64, iat: i64, exp: i64) -> String {
    let header = b64(json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string().as_bytes());
    let claims = json!({"sub": "admin", "uid": uid, "role": "admin", "jti": format!("forged-{iat}-{exp}"), "iat": iat, "exp": exp});
    let signing_input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = b64(&hmac_sha256(secret.as_bytes(), signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

/// The signing keys in a state database: (kid, secret).
fn signing_keys(db: &std::path::Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut q = db.prepare("SELECT kid, secret FROM jwt_keys ORDER BY created_ms").unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Secrets at rest: modes, logs, backups; and token lifetimes: a rotated-out key stops
/// verifying one token lifetime after its rotation, and over-long tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_at_rest_and_token_lifetimes() {
    let c = Cluster::start(1, 0, &["--token-ttl", "5"]).await;
    let snapshot = c.send(0, Call::new("POST", "/api/v1/cluster/snapshot").token(&login(&c).await)).await;
    assert_eq!(snapshot.status, 200, "{}", snapshot.text);

    // Modes: the directory and every subdirectory 0700, every file 0600.
    let dir = &c.nodes[0].data_dir;
    let mut pending = vec![dir.clone()];
    let mut files = 0;
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
    }
    assert!(files >= 4, "state, log, node.json and a snapshot: {files} files");
    assert!(dir.join("snapshots").is_dir());

    // Logs never hold join tokens.
    let tokens = c.send(0, Call::new("GET", "/api/v1/cluster/tokens").token(&login(&c).await)).await.body;
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    for role in ["manager", "worker"] {
        let t = tokens[role].as_str().unwrap();
        assert!(!log.contains(t), "the {role} join token is in the log");
    }

    // Backups carry no signing key and no cluster secret.
    let keys = signing_keys(&dir.join("state.db"));
    let backup =
        c.http.get(format!("{}/api/v1/admin/backup", c.nodes[0].api())).bearer_auth(login(&c).await).send().await;
    let backup = backup.unwrap().bytes().await.unwrap();
    let text = String::from_utf8_lossy(&backup);
    assert!(text.contains("SQLite format 3"));
    for (_, secret) in &keys {
        assert!(!text.contains(secret.as_str()), "the backup holds a signing key");
    }
    let manager = tokens["manager"].as_str().unwrap();
    let join_secret = manager.rsplit('-').nth(1).unwrap();
    assert!(!text.contains(join_secret), "the backup holds a join secret");

    // Wrong join tokens are throttled per address: 429 after the free failures.
    let wrong = manager.replace(join_secret, &"0".repeat(join_secret.len()));
    let join = c.nodes[0].peer_url("/join");
    let node = json!({"name": "intruder", "api_addr": "x:1", "peer_addr": "x:2", "mesh_addr": "x:3"});
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = c.peer_http(0).post(&join).json(&json!({"token": wrong, "node": node})).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[6], 429, "{statuses:?}");

    // A rejected peer request is logged with its socket address; X-Forwarded-For only as a claim.
    let r = c
        .peer_http(0)
        .post(c.nodes[0].peer_url("/raft/status"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    poll("the rejected peer request in the log", || {
        let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
        let line = log.lines().find(|l| l.contains("rejected peer request")).map(String::from);
        async move { line.is_some_and(|l| l.contains("remote=127.") && l.contains("forwarded_for=203.0.113.9")) }
    })
    .await;

    // Token lifetimes (--token-ttl 5).
    let me = c.send(0, Call::new("GET", "/api/v1/auth/me").token(&login(&c).await)).await;
    let uid = me.body["id"].as_i64().unwrap();
    let (k1, s1) = keys[0].clone();
    let now = now_secs();
    let ok = c.send(0, Call::new("GET", "/api/v1/auth/me").token(&forge(&k1, &s1, uid, now, now + 5))).await;
    assert_eq!(ok.status, 200, "a token forged with the live key is valid (the reason the key must stay secret)");
    let long =
        c.send(0, Call::new("GET", "/api/v1/auth/me").token(&forge(&k1, &s1, uid, now, now + 10 * 365 * 86_400))).await;
    assert_eq!(long.status, 401, "{}", long.text);
    assert!(long.text.contains("lifetime"), "{}", long.text);

    let rotated = c.send(0, Call::new("POST", "/api/v1/auth/keys/rotate").token(&login(&c).await)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let k2 = rotated.body["kid"].as_str().unwrap().to_string();
    let s2 = poll_key(&dir.join("state.db"), &k2).await;
    // Right after the rotation k1's tokens still verify; a lifetime (+ leeway) later none does.
    let now = now_secs();
    let fresh = c.send(0, Call::new("GET", "/api/v1/auth/me").token(&forge(&k1, &s1, uid, now, now + 5))).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    let rotated_at = Instant::now();
    poll("the retired key to stop verifying", || {
        let c = &c;
        let (k1, s1) = (k1.clone(), s1.clone());
        async move {
            let now = now_secs();
            let r = c.send(0, Call::new("GET", "/api/v1/auth/me").token(&forge(&k1, &s1, uid, now, now + 5))).await;
            r.status == 401 && r.text.contains("retired")
        }
    })
    .await;
    assert!(rotated_at.elapsed() >= Duration::from_secs(5), "retired too early: {:?}", rotated_at.elapsed());
    let now = now_secs();
    let current = c.send(0, Call::new("GET", "/api/v1/auth/me").token(&forge(&k2, &s2, uid, now, now + 5))).await;
    assert_eq!(current.status, 200, "{}", current.text);
}

/// A fresh admin token (they live 5 s in this test).
async fn login(c: &Cluster) -> String {
    let r = c
        .send(0, Call::new("POST", "/api/v1/auth/login").json(json!({"username": "admin", "password": c.password})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["access_token"].as_str().unwrap().to_string()
}

async fn poll_key(db: &std::path::Path, kid: &str) -> String {
    panal_tests::poll_some("the rotated key to be applied", || {
        let found = signing_keys(db).into_iter().find(|(k, _)| k == kid).map(|(_, s)| s);
        async move { found }
    })
    .await
}
