//! Peer TLS (issue 14): a cluster forms with mutual TLS by default, strangers are refused
//! on the peer and mesh ports (plain TCP, TLS without a certificate, a certificate from
//! another cluster's CA), a node with another cluster's token cannot join, and node
//! certificates are renewed without a restart.

use std::sync::Arc;
use std::time::Duration;

use panal::server::tls::{ca, CaMaterial};
use panal_tests::{fresh_subnet, poll, poll_some, run_panal, ApiTransport, Cluster};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn read(node: &panal_tests::Node, file: &str) -> String {
    std::fs::read_to_string(node.data_dir.join("tls").join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client trusting the cluster CA in `bundle`, presenting `cert` (PEM certificate
/// and key) if given.
fn client_config(bundle: &str, cert: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).map(Result::unwrap).collect();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
        }
        None => builder.with_no_client_auth(),
    }
}

/// A certificate for 127.0.0.1 from a CA of another cluster: (cert, key).
fn foreign_certificate() -> (String, String) {
    let foreign = CaMaterial::generate("f00d").unwrap();
    let (key, csr) = ca::node_request(&["127.0.0.1".into()]).unwrap();
    (foreign.issue(&csr, 1, Duration::from_secs(3600)).unwrap(), key)
}

/// The peer key of the cluster (the second factor), from a node's identity file.
fn peer_key(node: &panal_tests::Node) -> String {
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.data_dir.join("node.json")).unwrap()).unwrap();
    panal_raft_peer_key(identity["cluster_secret"].as_str().unwrap())
}

fn panal_raft_peer_key(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("panal-peer-v1:{secret}").as_bytes()))
}

/// `POST /raft/status` on the peer port over HTTPS with `config`: the status, or the error.
async fn peer_status(peer: &str, config: rustls::ClientConfig, key: &str) -> Result<u16, String> {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let r = http.post(format!("https://{peer}/raft/status")).header("x-panal-peer-key", key).send().await;
    r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// Opens a TLS session with the mesh port and waits for its first bytes: `true` if the
/// session is still open after `wait` (accepted, the node server waits for the peer's
/// handshake), `false` if the node closed it.
async fn mesh_session_stays_open(mesh: &str, config: rustls::ClientConfig, wait: Duration) -> bool {
    let tcp = tokio::net::TcpStream::connect(mesh).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host = mesh.rsplit_once(':').unwrap().0.to_string();
    // The node's certificate is good for its address: a failure here is the node's refusal.
    let mut tls = connector.connect(ServerName::try_from(host).unwrap(), tcp).await.expect("the node's certificate");
    let mut buf = [0u8; 64];
    // TLS 1.3 reports a refused client certificate on the first read.
    !matches!(tokio::time::timeout(wait, tls.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_forms_with_mutual_tls_and_strangers_are_refused() {
    let c = Cluster::start(3, 0, &[]).await;
    let (status, index) = c.put(1, "tls-key", "written through a follower").await;
    assert_eq!(status, 200);
    let (status, body) = c.get(2, "tls-key", "session", index).await;
    assert_eq!((status, body["value"].as_str()), (200, Some("written through a follower")));

    let token = c.admin().await.join_tokens().await.unwrap().manager;
    let bundle = read(&c.nodes[0], "ca.pem");
    let fingerprint = ca::fingerprint(&bundle).unwrap();
    assert!(token.starts_with(&format!("PANAL-2-{fingerprint}-")), "{token}");
    let shown = c.admin().await.pinned(2).cluster_ca().await.unwrap();
    assert_eq!(shown.fingerprint.as_deref(), Some(fingerprint.as_str()), "`panal ca show`");
    assert_eq!(shown.ca_pem.as_deref(), Some(bundle.as_str()), "`panal ca export`");
    assert_eq!(shown.node_subject.as_deref().map(|s| s.contains("node-")), Some(true));
    for (i, node) in c.nodes.iter().enumerate() {
        assert_eq!(read(node, "ca.pem"), bundle, "one CA everywhere");
        let cert = ca::CertSummary::of_pem(&read(node, "node.pem")).unwrap();
        assert_eq!(cert.node_id(), Some(c.node_id(i).await));
    }
    // Managers fetch the CA key from the one that holds it.
    poll("the CA key on every manager", || async { c.nodes.iter().all(|n| n.data_dir.join("tls/ca.key").exists()) })
        .await;

    let peer = c.nodes[0].peer();
    let key = peer_key(&c.nodes[0]);
    let own = (read(&c.nodes[1], "node.pem"), read(&c.nodes[1], "node.key"));
    let (foreign_cert, foreign_key) = foreign_certificate();

    // Plain HTTP on the peer port never gets an HTTP answer.
    let plain = reqwest::Client::new().post(format!("http://{peer}/raft/status")).header("x-panal-peer-key", &key);
    assert!(plain.timeout(Duration::from_secs(5)).send().await.is_err(), "plain HTTP is not served on the peer port");
    // TLS without a certificate: the peer key alone is not enough.
    assert_eq!(peer_status(&peer, client_config(&bundle, None), &key).await, Ok(401));
    // A certificate from another CA fails the handshake.
    let foreign = client_config(&bundle, Some((&foreign_cert, &foreign_key)));
    assert!(peer_status(&peer, foreign, &key).await.is_err(), "a foreign certificate is refused");
    // A member's certificate and the peer key: served (so the refusals above are TLS's).
    assert_eq!(peer_status(&peer, client_config(&bundle, Some((&own.0, &own.1))), &key).await, Ok(200));
    assert_eq!(peer_status(&peer, client_config(&bundle, Some((&own.0, &own.1))), "wrong").await, Ok(401));

    // The mesh port: plain bytes are dropped, TLS without a certificate or with a foreign
    // one is closed in the handshake, a member's certificate gets a session.
    let mesh = format!("{}:7702", c.nodes[0].ip);
    let mut tcp = tokio::net::TcpStream::connect(&mesh).await.unwrap();
    tcp.write_all(&[0, 0, 0, 0, 0, 0, 0, 16, 1, 2, 3, 4]).await.unwrap();
    let mut buf = [0u8; 64];
    let answer = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(
        matches!(answer, Ok(Ok(0)) | Ok(Err(_))) || matches!(answer, Ok(Ok(n)) if buf[0] == 0x15 && n > 0),
        "plain TCP is closed (or answered with a TLS alert): {answer:?}"
    );
    let wait = Duration::from_secs(2);
    assert!(!mesh_session_stays_open(&mesh, client_config(&bundle, None), wait).await, "no certificate");
    let foreign = client_config(&bundle, Some((&foreign_cert, &foreign_key)));
    assert!(!mesh_session_stays_open(&mesh, foreign, wait).await, "a foreign certificate");
    assert!(mesh_session_stays_open(&mesh, client_config(&bundle, Some((&own.0, &own.1))), wait).await, "a member");

    // The cluster still serves after all that.
    assert_eq!(c.put(2, "tls-key-2", "still fine").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_another_clusters_token_cannot_join() {
    let ours = Cluster::start(1, 0, &[]).await;
    let theirs = Cluster::start(1, 0, &[]).await;
    let their_token = theirs.admin().await.join_tokens().await.unwrap().manager;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = fresh_subnet();
    let ip = format!("127.{a}.{b}.9");
    let out = run_panal(
        &[
            "start",
            "--data-dir",
            &dir.path().display().to_string(),
            "--name",
            "intruder",
            "--api-addr",
            &format!("{ip}:7700"),
            "--peer-addr",
            &format!("{ip}:7701"),
            "--mesh-addr",
            &format!("{ip}:7702"),
            "--join",
            &ours.nodes[0].peer(),
            "--join-timeout",
            "3",
        ],
        &[("PANAL_TOKEN", their_token.as_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the join must fail: {stderr}");
    assert!(stderr.contains("fingerprint"), "the message names the CA mismatch: {stderr}");
    assert!(!dir.path().join("node.json").exists(), "nothing was admitted");
    assert_eq!(ours.admin().await.cluster_nodes().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_are_renewed_without_a_restart() {
    let c = Cluster::start(2, 0, &["--cert-ttl", "20"]).await;
    let first: Vec<String> = c.nodes.iter().map(|n| read(n, "node.pem")).collect();
    let life = |pem: &str| {
        let s = ca::CertSummary::of_pem(pem).unwrap();
        s.not_after.duration_since(s.not_before).unwrap()
    };
    assert!(life(&first[1]) <= Duration::from_secs(22), "--cert-ttl is honoured");
    // Renewal falls at 50–80 % of 20 s.
    poll("both nodes renewed their certificate", || async {
        c.nodes.iter().zip(&first).all(|(n, old)| &read(n, "node.pem") != old)
    })
    .await;
    let renewed = ca::CertSummary::of_pem(&read(&c.nodes[1], "node.pem")).unwrap();
    assert_eq!(renewed.node_id(), Some(c.node_id(1).await));
    // The renewed certificates carry the traffic: writes through the follower, both ways.
    for i in 0..2 {
        assert_eq!(c.put(i, &format!("after-renewal-{i}"), "ok").await.0, 200);
    }
    // And outlive the first ones: still serving past their expiry.
    poll("past the first certificates' expiry", || async {
        std::time::SystemTime::now() > ca::CertSummary::of_pem(&first[1]).unwrap().not_after
    })
    .await;
    assert_eq!(c.put(1, "after-expiry", "ok").await.0, 200);
}

/// The fingerprint of the CA that issued a node's certificate (`node.pem` holds the
/// certificate, then its issuer).
fn issuer_of(node: &panal_tests::Node) -> String {
    let chain = ca::certificates(&read(node, "node.pem")).unwrap();
    assert_eq!(chain.len(), 2, "node.pem holds the certificate and its issuer");
    ca::CertSummary::of_der(chain[1].as_ref()).unwrap().fingerprint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ca_rotates_with_writes_flowing_and_the_old_ca_is_then_refused() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut c = Cluster::start(3, 0, &[]).await;
    let old_fp = ca::fingerprint(&read(&c.nodes[0], "ca.pem")).unwrap();
    let leader = c.leader().await;
    // One follower is frozen through the start of the rotation: the old CA must stay
    // trusted until it, too, holds a certificate from the new one.
    let frozen = (0..3).find(|i| *i != leader).unwrap();
    let writers: Vec<usize> = (0..3).filter(|i| *i != frozen).collect();
    let old_cert = (read(&c.nodes[frozen], "node.pem"), read(&c.nodes[frozen], "node.key"));
    let key = peer_key(&c.nodes[leader]);
    let leader_peer = c.nodes[leader].peer();
    let frozen_id = c.node_id(frozen).await;
    c.pause(frozen);

    let done = AtomicBool::new(false);
    let write = async {
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        let mut n = 0;
        while !done.load(Ordering::Relaxed) {
            let i = writers[n % writers.len()];
            let key = format!("rot-{n}");
            match c.put(i, &key, &format!("value {n}")).await {
                (200, index) => acked.push((key, index)),
                (status, _) => failed.push((key, status)),
            }
            n += 1;
        }
        (acked, failed)
    };
    let rotate = async {
        // Some writes before the rotation.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let admin = c.admin().await.pinned(leader);
        let rotated = admin.rotate_ca().await.unwrap();
        assert_eq!(rotated.previous_fingerprint, old_fp);
        assert_ne!(rotated.fingerprint, old_fp);
        let new_fp = rotated.fingerprint;
        // Dual trust: `ca show` names both, the frozen member is pending, and its old
        // certificate is still accepted.
        let shown = poll_some("the running nodes to hold certificates from the new CA", || async {
            let shown = admin.cluster_ca().await.unwrap();
            (shown.pending_nodes == [frozen_id]).then_some(shown)
        })
        .await;
        assert_eq!(shown.fingerprint.as_deref(), Some(new_fp.as_str()));
        assert_eq!(shown.previous_fingerprint.as_deref(), Some(old_fp.as_str()), "`ca show` names both CAs");
        assert_eq!(ca::certificates(shown.ca_pem.as_deref().unwrap()).unwrap().len(), 2, "old + new trusted");
        assert_eq!(shown.node_issuer_fingerprint.as_deref(), Some(new_fp.as_str()));
        let bundle = shown.ca_pem.clone().unwrap();
        let old = client_config(&bundle, Some((&old_cert.0, &old_cert.1)));
        assert_eq!(peer_status(&leader_peer, old, &key).await, Ok(200), "the old CA is trusted during the rotation");
        let token = admin.join_tokens().await.unwrap().manager;
        assert!(token.starts_with(&format!("PANAL-2-{new_fp}-")), "join tokens name the new CA: {token}");
        c.resume(frozen);
        poll_some("the rotation to finish", || async {
            let shown = admin.cluster_ca().await.unwrap();
            shown.previous_fingerprint.is_none().then_some(())
        })
        .await;
        // More writes after the rotation.
        tokio::time::sleep(Duration::from_millis(500)).await;
        done.store(true, Ordering::Relaxed);
        new_fp
    };
    let ((acked, failed), new_fp) = tokio::join!(write, rotate);
    eprintln!("writes during the rotation: {} acknowledged, {} refused {failed:?}", acked.len(), failed.len());
    assert!(acked.len() >= 20, "writes kept flowing: {}", acked.len());
    assert!(failed.is_empty(), "no write failed during the rotation: {failed:?}");

    // Every node trusts the new CA only and holds a certificate from it.
    let new_bundle = poll_some("every node to trust the new CA only", || async {
        let bundles: Vec<String> = c.nodes.iter().map(|n| read(n, "ca.pem")).collect();
        let one = bundles.iter().all(|b| b == &bundles[0] && ca::certificates(b).unwrap().len() == 1);
        one.then(|| bundles[0].clone())
    })
    .await;
    assert_eq!(ca::fingerprint(&new_bundle).unwrap(), new_fp);
    for node in &c.nodes {
        assert_eq!(issuer_of(node), new_fp, "{} holds a certificate from the new CA", node.name);
    }
    // A member's new certificate chains to the new CA alone; the old one is refused.
    let renewed = (read(&c.nodes[frozen], "node.pem"), read(&c.nodes[frozen], "node.key"));
    let new_only = client_config(&new_bundle, Some((&renewed.0, &renewed.1)));
    assert_eq!(peer_status(&leader_peer, new_only, &key).await, Ok(200));
    let old = client_config(&new_bundle, Some((&old_cert.0, &old_cert.1)));
    assert!(peer_status(&leader_peer, old, &key).await.is_err(), "the old CA is no longer trusted");
    let mesh = format!("{}:7702", c.nodes[leader].ip);
    let old = client_config(&new_bundle, Some((&old_cert.0, &old_cert.1)));
    assert!(!mesh_session_stays_open(&mesh, old, Duration::from_secs(2)).await, "nor on the mesh");

    // Every acknowledged write is there, on every node.
    let last = acked.iter().map(|(_, index)| *index).max().unwrap();
    for i in 0..3 {
        for (key, _) in &acked {
            let (status, body) = c.get(i, key, "session", last).await;
            assert_eq!(status, 200, "{key} on {}: {body}", c.nodes[i].name);
        }
    }
    // The cluster keeps working, restarts included (the new files are what it starts from).
    c.stop(frozen);
    c.restart(frozen).await;
    assert_eq!(c.put(frozen, "after-rotation", "ok").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_demoted_manager_deletes_its_copy_of_the_ca_key() {
    let c = Cluster::start(3, 0, &[]).await;
    poll("the CA key on every manager", || async { c.nodes.iter().all(|n| n.data_dir.join("tls/ca.key").exists()) })
        .await;
    let leader = c.leader().await;
    let demoted = (0..3).find(|i| *i != leader).unwrap();
    let id = c.node_id(demoted).await;
    c.admin().await.demote(id).await.unwrap();
    assert_eq!(c.role(id).await.as_deref(), Some("worker"));
    poll("the demoted node to delete its CA key", || async { !c.nodes[demoted].data_dir.join("tls/ca.key").exists() })
        .await;
    for (i, node) in c.nodes.iter().enumerate().filter(|(i, _)| *i != demoted) {
        assert!(node.data_dir.join("tls/ca.key").exists(), "manager {i} keeps its key");
    }
    // The worker still serves writes (signed certificates come from managers).
    assert_eq!(c.put(demoted, "after-demotion", "ok").await.0, 200);
    // Promoted again, it fetches the key back.
    c.admin().await.promote(id).await.unwrap();
    poll("the promoted node to fetch the CA key", || async { c.nodes[demoted].data_dir.join("tls/ca.key").exists() })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_nodes_certificate_is_refused_by_the_remaining_members() {
    let c = Cluster::start(3, 1, &[]).await;
    let removed = 3;
    let id = c.node_id(removed).await;
    let bundle = read(&c.nodes[0], "ca.pem");
    let cert = (read(&c.nodes[removed], "node.pem"), read(&c.nodes[removed], "node.key"));
    let key = peer_key(&c.nodes[0]);
    let served = peer_status(&c.nodes[0].peer(), client_config(&bundle, Some((&cert.0, &cert.1))), &key).await;
    assert_eq!(served, Ok(200), "a member's certificate is served");
    c.admin().await.remove_node(id).await.unwrap();
    for i in 0..3 {
        let peer = c.nodes[i].peer();
        poll("the remaining members to refuse the removed node's certificate", || async {
            peer_status(&peer, client_config(&bundle, Some((&cert.0, &cert.1))), &key).await.is_err()
        })
        .await;
        let mesh = format!("{}:7702", c.nodes[i].ip);
        let config = client_config(&bundle, Some((&cert.0, &cert.1)));
        assert!(!mesh_session_stays_open(&mesh, config, Duration::from_secs(2)).await, "mesh of node {i}");
    }
    // The members' own certificates still work, and so does the cluster.
    let own = (read(&c.nodes[1], "node.pem"), read(&c.nodes[1], "node.key"));
    assert_eq!(peer_status(&c.nodes[0].peer(), client_config(&bundle, Some((&own.0, &own.1))), &key).await, Ok(200));
    assert_eq!(c.put(1, "after-removal", "ok").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_certificate_moves_to_the_new_ca() {
    let c = Cluster::start_with(ApiTransport::ClusterCa, 2, 0, &[]).await;
    let old_file = c.nodes[0].data_dir.parent().unwrap().join("old-ca.pem");
    std::fs::write(&old_file, read(&c.nodes[0], "ca.pem")).unwrap();
    let old_file = old_file.display().to_string();
    let (url, password) = (c.nodes[0].api(), c.password.clone());
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--node", &url, "--ca-file", &old_file]);
        let out = run_panal(&all, &[("PANAL_PASSWORD", &password)]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "panal {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let said = cli(&["ca", "rotate"]);
    let new_fp = said.lines().find_map(|l| l.strip_prefix("new CA: ")).expect(&said).trim().to_string();
    poll("the rotation to finish", || async {
        c.nodes.iter().all(|n| ca::fingerprint(&read(n, "ca.pem")).unwrap() == new_fp)
            && ca::certificates(&read(&c.nodes[0], "ca.pem")).unwrap().len() == 1
    })
    .await;
    // `panal ca show`, still trusting the old CA only: the API's new certificate comes
    // with the new CA cross-signed by the old one.
    poll("`ca show` to name the new CA as the node's issuer", || async {
        let shown = cli(&["ca", "show"]);
        shown.contains(&format!("CA fingerprint (SHA-256 of its key): {new_fp}"))
            && shown.contains(&format!("issued by: {new_fp}"))
            && !shown.contains("rotation under way")
    })
    .await;
    // A client that trusts the new CA alone reaches every node's API.
    let new_bundle = read(&c.nodes[0], "ca.pem");
    for node in &c.nodes {
        poll("the API certificate from the new CA", || async {
            let http = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(new_bundle.as_bytes()).unwrap())
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            http.get(format!("{}/ready", node.api())).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
    }
}
