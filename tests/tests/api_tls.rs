//! HTTPS on the public API port (issue 14 part B): a certificate of the cluster CA
//! (`--api-tls auto`), one of your own (`--api-tls-cert/--api-tls-key`, reloaded on SIGHUP),
//! or plain HTTP (`--api-tls off`). Trusting clients get answers, others are refused, and
//! plain HTTP to a TLS port is served nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use panal::tooling::client::Trust;
use panal_tests::{poll, ApiTransport, Client, Cluster};
use reqwest::Method;

/// A certificate authority of the test's own, standing for a company CA.
struct OwnCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, as clients are given it (`--ca-file`).
    file: PathBuf,
}

impl OwnCa {
    fn new(dir: &Path) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test company CA");
        let cert = params.self_signed(&key).unwrap();
        let file = dir.join("company-ca.pem");
        std::fs::write(&file, cert.pem()).unwrap();
        OwnCa { issuer: rcgen::Issuer::new(params, key), file }
    }

    /// Writes a new certificate for `names` and its key to `cert`/`key`; returns its DER.
    fn issue(&self, names: &[&str], cert: &Path, key: &Path) -> Vec<u8> {
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let pair = rcgen::KeyPair::generate().unwrap();
        let issued = params.signed_by(&pair, &self.issuer).unwrap();
        std::fs::write(key, pair.serialize_pem()).unwrap();
        std::fs::write(cert, issued.pem()).unwrap();
        issued.der().to_vec()
    }
}

/// The certificate node `url` presents to a new connection (trusting `ca`), DER.
async fn presented_certificate(url: &str, ca: &Path) -> Option<Vec<u8>> {
    let trust = Trust::from_pem_file(ca).unwrap();
    let http = trust.http_client(reqwest::Client::builder().tls_info(true).timeout(Duration::from_secs(5))).unwrap();
    let resp = http.get(format!("{url}/health")).send().await.ok()?;
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

/// What a plain-HTTP request to `ip:7700` gets back before the connection ends.
fn plain_http_answer(ip: &str) -> Vec<u8> {
    let mut tcp = TcpStream::connect((ip, 7700)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    tcp.write_all(format!("GET /health HTTP/1.1\r\nhost: {ip}\r\n\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    answer
}

fn hangup(cluster: &Cluster, i: usize) {
    let pid = cluster.launcher.nodes[i].pid().expect("running");
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

#[tokio::test]
async fn own_certificate_is_served_to_trusting_clients_and_reloaded_on_sighup() {
    let files = tempfile::tempdir().unwrap();
    let ca = OwnCa::new(files.path());
    let (cert, key) = (files.path().join("api.pem"), files.path().join("api.key"));
    let mut cluster = Cluster::prepare(ApiTransport::OwnCa(ca.file.clone()), &[]);
    let ip = cluster.planned_ip(0);
    let first = ca.issue(&[&ip], &cert, &key);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    cluster.launcher.config.node_args.extend(["--api-tls-cert".into(), cert_arg, "--api-tls-key".into(), key_arg]);
    cluster.init().await;
    let url = cluster.nodes[0].api();
    assert!(url.starts_with("https://"), "{url}");

    // A client given the CA gets answers; one without it is refused at the handshake.
    let trusting = cluster.client().pinned(0);
    assert_eq!(trusting.send(Method::GET, "/health", &panal_tests::Body::None, &[]).await.unwrap().status, 200);
    let stranger = Client::new(&[url.as_str()]).unwrap();
    let refused = stranger.send(Method::GET, "/health", &panal_tests::Body::None, &[]).await.unwrap_err();
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
    // Plain HTTP to the TLS port: no HTTP answer at all.
    let answer = plain_http_answer(&ip);
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was served: {:?}", String::from_utf8_lossy(&answer));
    assert_eq!(presented_certificate(&url, &ca.file).await.as_deref(), Some(first.as_slice()));

    // A keep-alive connection opened before the reload keeps working through it.
    let admin = cluster.admin().await.pinned(0);
    admin.cluster_status().await.unwrap();

    // New pair + SIGHUP: new connections get the new certificate.
    let second = ca.issue(&[&ip, "api.panal.test"], &cert, &key);
    hangup(&cluster, 0);
    poll("the new certificate presented", || async {
        presented_certificate(&url, &ca.file).await.as_deref() == Some(second.as_slice())
    })
    .await;
    admin.cluster_status().await.unwrap();

    // A broken pair (a key that is not the certificate's) is refused; the second stays.
    let log = cluster.nodes[0].log.clone();
    let broken = files.path().join("other.key");
    ca.issue(&[&ip], &files.path().join("other.pem"), &broken);
    std::fs::copy(&broken, &key).unwrap();
    hangup(&cluster, 0);
    poll("the broken pair logged", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("the previous one stays in service")
    })
    .await;
    assert_eq!(presented_certificate(&url, &ca.file).await.as_deref(), Some(second.as_slice()));
    assert_eq!(admin.send(Method::GET, "/health", &panal_tests::Body::None, &[]).await.unwrap().status, 200);

    // Files replaced without a signal are picked up too (watched for changes).
    let third = ca.issue(&[&ip], &cert, &key);
    poll("the changed files picked up", || async {
        presented_certificate(&url, &ca.file).await.as_deref() == Some(third.as_slice())
    })
    .await;
}

#[tokio::test]
async fn api_tls_off_serves_plain_http() {
    let cluster = Cluster::start(1, 0, &["--api-tls", "off"]).await;
    let url = cluster.nodes[0].api();
    assert!(url.starts_with("http://"), "{url}");
    let answer = plain_http_answer(&cluster.nodes[0].ip);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn a_certificate_without_its_key_stops_the_start_with_a_clear_error() {
    let out = panal_tests::run_panal(&["start", "--init", "--api-tls-cert", "/tmp/nowhere.pem"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-tls-key"), "{stderr}");
}

#[tokio::test]
async fn auto_serves_a_cluster_ca_certificate_that_trusting_clients_accept() {
    // Two managers and a worker: the worker holds no CA key, so its API certificate is
    // signed by a manager over the peer port.
    let cluster = Cluster::start_with(ApiTransport::ClusterCa, 2, 1, &[]).await;
    let url = cluster.nodes[0].api();
    assert!(url.starts_with("https://"), "{url}");
    for i in 0..cluster.nodes.len() {
        let trusting = cluster.client().pinned(i);
        assert_eq!(trusting.send(Method::GET, "/health", &panal_tests::Body::None, &[]).await.unwrap().status, 200);
    }
    let ca = panal::server::api_tls::ca_bundle_path(&cluster.nodes[0].data_dir);
    assert!(presented_certificate(&url, &ca).await.is_some());
    let stranger = Client::new(&[url.as_str()]).unwrap();
    let refused = stranger.send(Method::GET, "/health", &panal_tests::Body::None, &[]).await.unwrap_err();
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
    let answer = plain_http_answer(&cluster.nodes[0].ip);
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was served: {:?}", String::from_utf8_lossy(&answer));
}
