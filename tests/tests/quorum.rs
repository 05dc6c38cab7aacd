//! Quorum-correct edges (issue 15): a removed node stops serving, a cluster without quorum
//! answers 503 fast on every route, an isolated leader is not ready, misaddressed peer calls
//! are refused, `/ready` waits for the mesh (even balancing from the first request), an
//! index the cluster never reached is refused at once, a joining node never refuses a valid
//! token, a removal answers what happened, and the operator hears about joins that cannot
//! reach anyone and peers that went away.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use panal_tests::{fresh_subnet, panal_bin, poll, run_panal, Call, Cluster, Reply, DEADLINE};
use serde_json::{json, Value};

/// Election timeout the nodes run with (the default).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(250);
/// What "fast" means for a 503 without quorum: ~2x the election timeout, plus slack for
/// a loaded test machine.
const FAST: Duration = Duration::from_millis(1500);

fn book(title: &str) -> Value {
    json!({"title": title, "author": "Ursula K. Le Guin", "description": "A classic", "price_cents": 1250, "currency": "EUR", "stock": 5})
}

async fn timed(c: &Cluster, i: usize, call: Call) -> (Reply, Duration) {
    let started = Instant::now();
    let r = c.send(i, call).await;
    (r, started.elapsed())
}

async fn ready_status(c: &Cluster, i: usize) -> (u16, Value) {
    match c.http.get(format!("{}/ready", c.nodes[i].api())).timeout(Duration::from_secs(2)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// The peer key of the cluster node `i` belongs to (what `panal_raft::peer_key` derives),
/// read from its identity file.
fn peer_key(c: &Cluster, i: usize) -> (String, String, u64) {
    let identity: Value =
        serde_json::from_slice(&std::fs::read(c.nodes[i].data_dir.join("node.json")).unwrap()).unwrap();
    let secret = identity["cluster_secret"].as_str().unwrap();
    let mut sha = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    use std::io::Write;
    sha.stdin.take().unwrap().write_all(format!("panal-peer-v1:{secret}").as_bytes()).unwrap();
    let out = sha.wait_with_output().unwrap();
    let key = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string();
    (key, identity["cluster_id"].as_str().unwrap().to_string(), identity["node_id"].as_u64().unwrap())
}

/// Waits for `child` to exit; kills it (and fails) when it is still running at `limit`.
fn exit_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_cluster_balances_evenly_refuses_far_indexes_and_misaddressed_calls() {
    let mut c = Cluster::start(3, 0, &["--balance", "round-robin"]).await;

    // Ready means the mesh is connected: the first 3,000 requests split evenly.
    let last = c.nodes.len() - 1;
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..3000 {
        let (status, node) = c.ping(last, "auth").await;
        assert_eq!(status, 200, "{node}");
        *served.entry(node).or_default() += 1;
    }
    println!("3,000 round-robin pings right after /ready: {served:?}");
    assert_eq!(served.len(), 3, "every node served: {served:?}");
    for (node, n) in &served {
        assert!((980..=1020).contains(n), "{node} served {n} of 3000 (want 1000 ± 2%): {served:?}");
    }
    let (status, body) = ready_status(&c, last).await;
    assert_eq!(status, 200);
    assert_eq!(body["services"]["auth"]["state"], "running", "{body}");
    assert_eq!(body["mesh"]["connected"].as_array().unwrap().len(), 2, "{body}");

    // An index the cluster never reached is refused at once, on a follower and the leader,
    // on every route (a service read, the admin key-value read, an authenticated route).
    let token = c.token().await;
    let (_, index) = c.put(0, "k", "v").await;
    let leader = c.leader().await;
    for i in [leader, (leader + 1) % 3] {
        for call in [
            Call::new("GET", "/api/v1/books/1").after(999_999),
            Call::new("GET", "/api/v1/cluster/kv/k").token(&token).after(999_999),
            Call::new("GET", "/api/v1/auth/me").token(&token).after(999_999),
        ] {
            let path = call.path.clone();
            let (r, took) = timed(&c, i, call).await;
            assert_eq!(r.status, 422, "{path} on node {i}: {}", r.text);
            assert_eq!(r.body["error"]["code"], "index_ahead", "{path}: {}", r.text);
            println!("index_ahead for {path} on node {i} in {took:?}");
            assert!(took < Duration::from_millis(100), "{path} on node {i} took {took:?}");
        }
        // A reachable index is served.
        let r = c.send(i, Call::new("GET", "/api/v1/cluster/kv/k").token(&token).after(index)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // A flood of far-ahead indexes pins nothing: normal reads on the same node, sent while
    // it lasts, are all served (issue 13: session reads cannot be used to pin resources).
    let target = (leader + 1) % 3;
    let flood = futures::future::join_all(
        (0..600).map(|_| c.send(target, Call::new("GET", "/api/v1/books").after(99_999_999_999))),
    );
    let normal = async {
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(c.send(target, Call::new("GET", "/api/v1/books?limit=5")).await.status);
        }
        statuses
    };
    let (flooded, normal) = tokio::join!(flood, normal);
    let refused: Vec<(u16, &str)> =
        flooded.iter().filter(|r| r.status != 422).map(|r| (r.status, r.text.as_str())).take(3).collect();
    assert!(refused.is_empty(), "every far-ahead read is refused as index_ahead: {refused:?}");
    assert!(normal.iter().all(|s| *s == 200), "normal reads during the flood: {normal:?}");

    // Peer calls naming another node id or cluster are refused with 409 wrong_node.
    let (key, cluster_id, id) = peer_key(&c, 1);
    let status_call = |target: String, cluster: &str| {
        c.peer_http(1)
            .post(c.nodes[1].peer_url("/raft/status"))
            .header("x-panal-peer-key", &key)
            .header("x-panal-cluster", cluster)
            .header("x-panal-target-node", target)
            .header("content-type", "application/msgpack")
            .body(vec![0xc0]) // MessagePack nil: the empty request
            .send()
    };
    let ok = status_call(id.to_string(), &cluster_id).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let wrong = status_call((id + 40).to_string(), &cluster_id).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 409);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "wrong_node", "{body}");
    let wrong_cluster = status_call(id.to_string(), "not-this-cluster").await.unwrap();
    assert_eq!(wrong_cluster.status().as_u16(), 409);

    // Starting a member's data dir on another member's addresses is refused.
    c.stop(1);
    c.stop(2);
    let n3 = &c.nodes[2];
    let n2 = &c.nodes[1];
    let child = std::process::Command::new(panal_bin())
        .args([
            "start",
            "--data-dir",
            &n3.data_dir.display().to_string(),
            "--name",
            &n3.name,
            "--api-addr",
            &format!("{}:7700", n2.ip),
            "--peer-addr",
            &format!("{}:7701", n2.ip),
            "--mesh-addr",
            &format!("{}:7702", n2.ip),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = exit_within(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "started on another member's addresses: {stderr}");
    assert!(stderr.contains("belongs to member"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_stops_serving_at_once() {
    let c = Cluster::start(2, 1, &[]).await;
    let worker = 2;
    let worker_name = c.nodes[worker].name.clone();
    let worker_id = c.node_id(worker).await;
    let token = c.token().await;
    c.wait_mesh(0).await;

    let r = c.send(0, Call::new("DELETE", format!("/api/v1/cluster/nodes/{worker_id}")).token(&token)).await;
    assert!(r.status < 300, "remove: {}", r.text);
    let removed_at = Instant::now();

    // The removed node says so on /ready and refuses the API (reads included).
    poll("the removed node to report it", || async { ready_status(&c, worker).await.0 == 503 }).await;
    let (_, body) = ready_status(&c, worker).await;
    assert_eq!(body["error"]["code"], "removed", "{body}");
    println!("removed node not ready {:?} after the removal", removed_at.elapsed());
    for call in [
        Call::new("GET", "/api/v1/books"),
        Call::new("GET", "/api/v1/books").header("x-panal-consistency", "stale"),
        Call::new("GET", "/api/v1/cluster/kv/k").token(&token),
        Call::new("GET", "/api/v1/auth/ping"),
    ] {
        let path = call.path.clone();
        let r = c.send(worker, call).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "node_removed", "{path}: {}", r.text);
    }
    // Its peer port refuses Raft traffic.
    let (key, _, _) = peer_key(&c, worker);
    let peer = c
        .peer_http(worker)
        .post(c.nodes[worker].peer_url("/raft/status"))
        .header("x-panal-peer-key", &key)
        .body(vec![0xc0])
        .send()
        .await
        .unwrap();
    assert_eq!(peer.status().as_u16(), 503);

    // The others stop routing to it (its workers left every process group).
    poll("the gateway to stop routing to the removed node", || async {
        let mut hits = 0;
        for _ in 0..30 {
            if c.ping(0, "catalog").await.1 == worker_name {
                hits += 1;
            }
        }
        hits == 0
    })
    .await;
    let listing = c.send(0, Call::new("POST", "/api/v1/books").token(&token).json(book("After removal"))).await;
    assert_eq!(listing.status, 201, "{}", listing.text);
    let id = listing.body["id"].as_i64().unwrap();
    for _ in 0..30 {
        let r = c.send(0, Call::new("GET", format!("/api/v1/books/{id}")).after(listing.index)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_ne!(r.node, worker_name, "a read was served by the removed node");
    }
    let members = c.admin_get(0, "/api/v1/cluster/nodes").await;
    assert!(!members.as_array().unwrap().iter().any(|m| m["id"] == worker_id), "{members}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_every_route_answers_503_fast_and_an_isolated_leader_is_not_ready() {
    let mut c = Cluster::start(3, 0, &["--chaos"]).await;
    let token = c.token().await;
    let (_, index) = c.put(0, "k", "v").await;

    // An isolated leader stops acknowledging and reports not ready within ~the lease.
    let leader = c.leader().await;
    let isolated_at = Instant::now();
    let r = c
        .send(leader, Call::new("POST", "/api/v1/admin/chaos/isolate").token(&token).json(json!({"seconds": 8})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    poll("the isolated leader to report not ready", || async { ready_status(&c, leader).await.0 == 503 }).await;
    let not_ready_after = isolated_at.elapsed();
    println!("isolated leader not ready after {not_ready_after:?}");
    assert!(not_ready_after < Duration::from_secs(1), "{not_ready_after:?}");
    let (r, took) =
        timed(&c, leader, Call::new("PUT", "/api/v1/cluster/kv/k").token(&token).text("text/plain", "x")).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "no_leader", "{}", r.text);
    assert!(took < FAST, "a write on the isolated leader took {took:?}");
    // The majority goes on.
    let survivor = (leader + 1) % 3;
    poll("the majority to accept writes", || async { c.put(survivor, "k", "majority").await.0 == 200 }).await;
    println!("majority accepting writes {:?} after the isolation", isolated_at.elapsed());
    poll("the old leader to rejoin after the isolation", || async { ready_status(&c, leader).await.0 == 200 }).await;

    // A frozen leader: writes through a survivor resume soon after a new leader is elected.
    let leader = c.leader().await;
    let survivor = (leader + 1) % 3;
    c.pause(leader);
    let paused_at = Instant::now();
    let resumed = loop {
        let (status, _) = c.put(survivor, "frozen", "x").await;
        if status == 200 {
            break paused_at.elapsed();
        }
        assert!(paused_at.elapsed() < Duration::from_secs(30), "writes never resumed");
    };
    println!("writes through a survivor resumed {resumed:?} after freezing the leader");
    assert!(resumed < Duration::from_secs(3), "{resumed:?}");
    c.resume(leader);
    poll("the frozen leader to rejoin", || async { ready_status(&c, leader).await.0 == 200 }).await;

    // Two of three managers gone: every route answers 503 fast, never 504.
    let alone = 0;
    c.kill(1);
    c.kill(2);
    let killed_at = Instant::now();
    poll("the survivor to report not ready", || async { ready_status(&c, alone).await.0 == 503 }).await;
    println!("lone survivor not ready {:?} after losing quorum", killed_at.elapsed());
    let cases = [
        ("a write", Call::new("POST", "/api/v1/books").token(&token).json(book("No quorum")), "no_leader"),
        ("an admin write", Call::new("PUT", "/api/v1/cluster/kv/k").token(&token).text("text/plain", "y"), "no_leader"),
        (
            "a linearizable read",
            Call::new("GET", "/api/v1/books").header("x-panal-consistency", "linearizable"),
            "no_leader",
        ),
        (
            "a linearizable admin read",
            Call::new("GET", "/api/v1/cluster/kv/k").token(&token).header("x-panal-consistency", "linearizable"),
            "no_leader",
        ),
        ("a session read past the index", Call::new("GET", "/api/v1/books/1").after(index + 1000), "replica_lagging"),
        (
            "an authenticated session read past the index",
            Call::new("GET", "/api/v1/auth/me").token(&token).after(index + 1000),
            "replica_lagging",
        ),
    ];
    for (what, call, code) in cases {
        let (r, took) = timed(&c, alone, call).await;
        println!("{what} without quorum: {} {} in {took:?}", r.status, r.body["error"]["code"]);
        assert_eq!(r.status, 503, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.text);
        assert!(took < FAST, "{what} took {took:?} (election timeout {ELECTION_TIMEOUT:?})");
    }
    // A stale read is still served from the local replica.
    let r = c
        .send(alone, Call::new("GET", "/api/v1/cluster/kv/k").token(&token).header("x-panal-consistency", "stale"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Status and error code of one raw request (status 0: no answer yet, the node is still
/// starting to listen).
async fn probe(req: reqwest::RequestBuilder) -> (u16, String) {
    match req.timeout(Duration::from_secs(5)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
        }
        Err(_) => (0, String::new()),
    }
}

fn delete_node(id: u64, token: &str) -> Call {
    Call::new("DELETE", format!("/api/v1/cluster/nodes/{id}")).token(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_node_never_refuses_a_valid_token_and_a_removal_answers_what_happened() {
    let mut c = Cluster::start(3, 0, &[]).await;
    let token = c.token().await;
    let login = json!({"username": "admin", "password": c.password});

    // Watch a worker from its first answer on: a token issued elsewhere and the admin's
    // password are accepted, or the node says it cannot serve yet (503) — never a 401.
    let w = c.spawn_join("worker").await;
    let api = c.nodes[w].api();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    loop {
        let (ready, _) = ready_status(&c, w).await;
        let me = probe(c.http.get(format!("{api}/api/v1/auth/me")).bearer_auth(&token)).await;
        let signed_in = probe(c.http.post(format!("{api}/api/v1/auth/login")).json(&login)).await;
        for (what, (status, code)) in [("me", &me), ("login", &signed_in)] {
            assert!(matches!(status, 0 | 200 | 503), "{what} on the joining node: {status} {code} ({seen:?})");
            *seen.entry(format!("{what} {status} {code}")).or_default() += 1;
        }
        if ready == 200 {
            // Ready means it serves: the token issued on another node, at once.
            let r = c.send(w, Call::new("GET", "/api/v1/auth/me").token(&token)).await;
            assert_eq!(r.status, 200, "right after /ready: {}", r.text);
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the joining node never became ready ({seen:?})");
    }
    println!("answers of the joining node until ready ({:?}): {seen:?}", started.elapsed());

    // Removing the leader through a follower answers 200 (the change commits while
    // leadership moves; its retry must not call that a conflict), and again 404.
    let leader = c.leader().await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let leader_id = c.node_id(leader).await;
    let r = c.send(follower, delete_node(leader_id, &token)).await;
    assert_eq!(r.status, 200, "removing the leader: {}", r.text);
    assert_eq!(r.body["removed"], true, "{}", r.text);
    let r = c.send(follower, delete_node(leader_id, &token)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("not_found")), "{}", r.text);

    // A leader asked to remove itself answers 200 too (and serves nothing after).
    let remaining = [follower, 3 - leader - follower];
    let leader = poll_leader_among(&c, &remaining, &token).await;
    let leader_id = c.node_id(leader).await;
    let r = c.send(leader, delete_node(leader_id, &token)).await;
    assert_eq!(r.status, 200, "a leader removing itself: {}", r.text);
    assert_eq!(r.body["removed"], true, "{}", r.text);
    let last = remaining.into_iter().find(|&i| i != leader).unwrap();
    poll("the last manager to lead without the removed ones", || async {
        let r = c.send(last, Call::new("GET", "/api/v1/cluster/nodes").token(&token)).await;
        r.status == 200 && r.body.as_array().is_some_and(|m| m.len() == 2 && !m.iter().any(|n| n["id"] == leader_id))
    })
    .await;
    let r = c.send(last, delete_node(leader_id, &token)).await;
    assert_eq!(r.status, 404, "{}", r.text);
    // The joined worker, too, goes once and is then unknown.
    let worker_id = c.node_id(w).await;
    let r = c.send(last, delete_node(worker_id, &token)).await;
    assert_eq!(r.status, 200, "removing the worker: {}", r.text);
    let r = c.send(last, delete_node(worker_id, &token)).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// The node among `candidates` that leads (from its own status), once one does.
async fn poll_leader_among(c: &Cluster, candidates: &[usize], token: &str) -> usize {
    panal_tests::poll_some("a leader among the remaining managers", || async {
        for &i in candidates {
            let r = c.send(i, Call::new("GET", "/api/v1/cluster/status").token(token)).await;
            if r.status == 200 && r.body["node"]["state"] == "leader" {
                return Some(i);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_to_nowhere_says_so_and_a_lost_peer_is_logged_once() {
    // Nothing listens there: a progress line, then a clear end naming the address.
    let (a, b) = fresh_subnet();
    let ip = format!("127.{a}.{b}.9");
    let nowhere = format!("127.{a}.{b}.200:7701");
    let dir = tempfile::tempdir().unwrap();
    let token = format!("PANAL-2-{}-0123456789abcdef-{}-worker", "ab".repeat(32), "00".repeat(16));
    panal_bin(); // built (if need be) before the clock starts
    let started = Instant::now();
    let out = run_panal(
        &[
            "start",
            "--data-dir",
            &dir.path().display().to_string(),
            "--api-addr",
            &format!("{ip}:7700"),
            "--peer-addr",
            &format!("{ip}:7701"),
            "--mesh-addr",
            &format!("{ip}:7702"),
            "--join",
            &nowhere,
            "--join-timeout",
            "6",
        ],
        &[("PANAL_TOKEN", &token)],
    );
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("still trying to join through {nowhere}")), "a progress line: {text}");
    assert!(text.contains(&format!("gave up joining through {nowhere}")), "{text}");
    assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(30), "gave up after {took:?}");
    assert!(!dir.path().join("node.json").exists());

    // A peer that goes away: one WARN on the leader while it is gone (however many
    // replication attempts fail meanwhile), one INFO when it is back.
    let mut c = Cluster::start(3, 0, &[]).await;
    let leader = c.leader().await;
    let gone = (leader + 1) % 3;
    let name = c.nodes[gone].name.clone();
    let log = c.nodes[leader].log.clone();
    let lines = |needle: String| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().filter(|l| l.contains(&needle)).count()
    };
    let (down, back) = (format!("node {name} unreachable since"), format!("node {name} reachable again after"));
    c.kill(gone);
    poll("the leader to log the lost peer", || async { lines(down.clone()) == 1 }).await;
    c.restart(gone).await;
    poll("the leader to log the peer's return", || async { lines(back.clone()) == 1 }).await;
    assert_eq!(lines(down), 1, "one WARN for the whole outage");
}
