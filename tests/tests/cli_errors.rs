//! Bad input at start-up and on the peer port: a clear error, a non-zero exit, and
//! nothing written.

use panal_tests::{fresh_subnet, run_panal, ClientError, Cluster};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().map(|e| (e.file_name().to_string_lossy().to_string(), e.metadata().unwrap().len())).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn start_refuses_bad_input_and_writes_nothing() {
    let mut c = Cluster::start(1, 0, &[]).await;
    let (a, b) = fresh_subnet();
    let ip = format!("127.{a}.{b}.9");
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("d");
    let data_s = data.display().to_string();
    let addrs = [
        "--api-addr".to_string(),
        format!("{ip}:7700"),
        "--peer-addr".into(),
        format!("{ip}:7701"),
        "--mesh-addr".into(),
        format!("{ip}:7702"),
    ];
    let base: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let start = |extra: &[&str]| {
        let mut args = vec!["start", "--data-dir", &data_s];
        args.extend_from_slice(&base);
        args.extend_from_slice(extra);
        run_panal(&args, &[])
    };

    let o = start(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pass --init"), "{}", stderr(&o));

    let o = start(&["--join", &c.nodes[0].peer(), "--token", "garbage"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("malformed join token"), "{}", stderr(&o));
    assert!(!data.join("node.json").exists());

    let o = start(&["--join", &c.nodes[0].peer(), "--token", "PANAL-1-deadbeef-0123456789abcdef-manager"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("carries no CA fingerprint"), "{}", stderr(&o));
    assert!(!data.join("node.json").exists(), "a refused join writes no identity");

    let tokens = c.admin().await.join_tokens().await.unwrap();
    let wrong_secret = tokens.manager.replace("-manager", "").rsplit_once('-').unwrap().0.to_string() + "-00ff-manager";
    let o = start(&["--join", &c.nodes[0].peer(), "--token", &wrong_secret]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("secret is wrong"), "{}", stderr(&o));

    // Port in use: the running node's api port.
    let used = format!("{}:7700", c.nodes[0].ip);
    let o = run_panal(
        &["start", "--data-dir", &data_s, "--init", "--api-addr", &used, "--peer-addr", &format!("{ip}:7701")],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot listen on") && stderr(&o).contains("api port"), "{}", stderr(&o));
    assert!(!data.join("node.json").exists() && !data.join("raft-log.db").exists());

    let o = run_panal(&["start", "--data-dir", "/proc/panal-cannot-write-here", "--init"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not usable"), "{}", stderr(&o));

    // A second --init on a data dir that has a cluster.
    c.stop(0);
    let existing = c.nodes[0].data_dir.clone();
    let before = listing(&existing);
    let o = run_panal(
        &[
            "start",
            "--data-dir",
            &existing.display().to_string(),
            "--init",
            "--api-addr",
            &format!("{ip}:7700"),
            "--peer-addr",
            &format!("{ip}:7701"),
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already holds node"), "{}", stderr(&o));
    assert_eq!(listing(&existing), before, "nothing written");
    c.restart(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_rpc_without_the_cluster_key_is_rejected() {
    let c = Cluster::start(1, 0, &[]).await;
    let url = c.nodes[0].peer_url("/raft/append");
    let member = c.peer_http(0);
    let r = member.post(&url).body(vec![1, 2, 3]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = member.post(&url).header("x-panal-peer-key", "0".repeat(64)).body(vec![1, 2, 3]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // In the one error shape, like every refusal.
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    assert_eq!(v["error"]["message"], "missing or wrong cluster key", "{v}");
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(log.contains("rejected peer request"), "rejections are logged");
    // The node is unaffected.
    let (s, _) = c.put(0, "still", "fine").await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_use_the_one_json_shape() {
    let c = Cluster::start(1, 0, &[]).await;
    let api = c.nodes[0].api();
    let check = |r: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(r.status().as_u16(), status);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    };
    check(c.http.get(format!("{api}/api/v1/nope")).send().await.unwrap(), 404, "not_found").await;
    check(c.http.delete(format!("{api}/health")).send().await.unwrap(), 405, "method_not_allowed").await;
    check(c.http.get(format!("{api}/api/v1/cluster/status")).send().await.unwrap(), 401, "invalid_token").await;
    check(
        c.http.get(format!("{api}/api/v1/cluster/status")).bearer_auth("a.b").send().await.unwrap(),
        401,
        "invalid_token",
    )
    .await;
    let login = |body: &'static str| {
        c.http.post(format!("{api}/api/v1/auth/login")).header("content-type", "application/json").body(body).send()
    };
    check(login("{bad").await.unwrap(), 400, "malformed_json").await;
    check(login(r#"{"username":"admin","password":"wrong"}"#).await.unwrap(), 401, "invalid_credentials").await;
    // The typed client decodes the same shape into its error.
    match c.client().login("admin", "wrong").await {
        Err(ClientError::Api { status: 401, error, .. }) => {
            assert_eq!(error.code, "invalid_credentials");
            assert!(error.request_id.is_some_and(|id| !id.is_empty()));
        }
        other => panic!("a wrong password is a 401 API error: {other:?}"),
    }
    let big = "x".repeat(3 * 1024 * 1024);
    let r =
        c.http.put(format!("{api}/api/v1/cluster/kv/big")).bearer_auth(c.token().await).body(big).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
}
