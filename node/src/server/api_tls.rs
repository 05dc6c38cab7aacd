//! HTTPS on the public API port (`--api-tls`):
//!
//! - `auto`: a certificate from the cluster CA for the node's advertised name and address,
//!   `localhost` and every `--api-san`, asked of an [`ApiCertificateIssuer`] (the cluster
//!   CA) and asked again at two thirds of its life;
//! - bring your own (`--api-tls-cert FILE --api-tls-key FILE`): reloaded on SIGHUP and when
//!   either file changes; a new pair that does not load (half-written, key not matching)
//!   is logged and the pair in service stays;
//! - `off`: plain HTTP.
//!
//! Without a choice, a node whose API listens on a loopback address serves plain HTTP (its
//! traffic never leaves the machine: the `panal up` demo) and any other node serves `auto`.
//! New connections take the current certificate (the [`TlsConfig`] watch); open ones keep
//! theirs.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::ServerConfig;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::server::config::{ApiTlsArgs, ApiTlsMode};
use crate::server::listen::TlsConfig;
use crate::server::tls::config::provider as crypto_provider;

/// How often the bring-your-own files are checked for a change.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a failed renewal of the `auto` certificate waits before trying again.
const RENEW_RETRY: Duration = Duration::from_secs(30);
const FIRST_ISSUE_RETRY: Duration = Duration::from_millis(500);

/// Marks requests that reached the API over TLS (the session cookie is then `Secure`).
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// The names a certificate for the API must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCertificateRequest {
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// A certificate issued for the API, with its key and validity.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Who signs the `auto` certificate: the cluster CA (a manager holding its key, or one
/// asked over the peer port).
pub trait ApiCertificateIssuer: Send + Sync {
    /// A certificate for `request`'s names, signed by the cluster CA, with a new key.
    fn issue<'a>(&'a self, request: &'a ApiCertificateRequest) -> BoxFuture<'a, Result<IssuedCertificate>>;

    /// What to serve until the first certificate is issued.
    fn interim(&self) -> Arc<ServerConfig>;

    /// Resolves when certificates issued so far should be replaced before their time (the
    /// CA was rotated). Default: never.
    fn replaced(&self) -> BoxFuture<'_, ()> {
        Box::pin(futures::future::pending())
    }
}

/// What the API port serves, decided from the flags before anything is written.
#[derive(Debug)]
pub enum ApiTlsPlan {
    Off,
    Auto(ApiCertificateRequest),
    /// Bring your own, with the pair as loaded at start.
    Files {
        files: KeyPairFiles,
        loaded: Arc<CertifiedKey>,
    },
}

impl ApiTlsPlan {
    /// Checks the flags against the address the API listens on: a bring-your-own pair is
    /// loaded now (a broken one stops the start), the `auto` names are validated.
    /// `advertised_host` is the host other nodes and clients are told.
    pub fn from_flags(args: &ApiTlsArgs, bound: SocketAddr, advertised_host: &str) -> Result<Self> {
        let mode = match (&args.api_tls_cert, &args.api_tls_key) {
            (Some(cert), Some(key)) => {
                if !args.api_san.is_empty() {
                    return Err(Error::Fatal(
                        "--api-san names extra names of the `auto` certificate; with --api-tls-cert put them in your certificate".into(),
                    ));
                }
                let files = KeyPairFiles { cert: cert.clone(), key: key.clone() };
                let loaded = files.load().map_err(Error::Fatal)?;
                return Ok(ApiTlsPlan::Files { files, loaded });
            }
            (None, None) => args.api_tls.unwrap_or_else(|| default_mode(bound.ip())),
            // clap requires both; this keeps a direct caller honest.
            _ => return Err(Error::Fatal("--api-tls-cert and --api-tls-key go together".into())),
        };
        match mode {
            ApiTlsMode::Off if !args.api_san.is_empty() => Err(Error::Fatal(
                "--api-san names extra names of the `auto` certificate: it needs --api-tls auto".into(),
            )),
            ApiTlsMode::Off => Ok(ApiTlsPlan::Off),
            ApiTlsMode::Auto => Ok(ApiTlsPlan::Auto(certificate_request(bound.ip(), advertised_host, &args.api_san)?)),
        }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, ApiTlsPlan::Off)
    }

    /// Starts serving the plan: `None` for plain HTTP, else the TLS settings the API
    /// listener takes each connection's from, kept current by a background task (file
    /// reloads, renewals). `auto` needs the cluster CA.
    pub async fn start(self, issuer: Option<Arc<dyn ApiCertificateIssuer>>) -> Result<Option<TlsConfig>> {
        match self {
            ApiTlsPlan::Off => {
                // `systemctl reload` sends SIGHUP whatever the mode: it must not stop the node.
                if let Some(mut hangup) = hangups() {
                    tokio::spawn(async move {
                        while hangup.recv().await.is_some() {
                            tracing::info!("SIGHUP: the API serves plain HTTP, no certificate to reload");
                        }
                    });
                }
                Ok(None)
            }
            ApiTlsPlan::Files { files, loaded } => {
                let (tx, rx) = watch::channel(Arc::new(server_config(loaded)?));
                let stamp = files.stamp();
                tokio::spawn(keep_files_loaded(files, tx, stamp));
                Ok(Some(rx))
            }
            ApiTlsPlan::Auto(request) => {
                let issuer = issuer.ok_or_else(|| {
                    Error::Fatal("--api-tls auto needs the cluster CA, which this node does not have; serve your own certificate (--api-tls-cert/--api-tls-key) or pass --api-tls off".into())
                })?;
                // A node that is still joining cannot have a certificate signed yet: it
                // serves the interim one (its node certificate) until then.
                let (tx, rx) = watch::channel(issuer.interim());
                tokio::spawn(async move {
                    let issued = loop {
                        match issuer.issue(&request).await.and_then(|i| Ok((server_config(i.key.clone())?, i))) {
                            Ok((config, issued)) => {
                                tx.send_replace(Arc::new(config));
                                break issued;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "the API certificate is not issued yet; asking again");
                                tokio::time::sleep(FIRST_ISSUE_RETRY).await;
                            }
                        }
                    };
                    tracing::info!(names = ?request.dns_names, addresses = ?request.ip_addresses, "the API serves HTTPS with a certificate from the cluster CA");
                    keep_renewed(issuer, request, tx, issued).await
                });
                Ok(Some(rx))
            }
        }
    }
}

/// `auto` unless the API is reachable from this machine only.
pub fn default_mode(bound: IpAddr) -> ApiTlsMode {
    if bound.is_loopback() {
        ApiTlsMode::Off
    } else {
        ApiTlsMode::Auto
    }
}

/// The names of the `auto` certificate: the advertised host, the address the API is bound
/// to (unless it is every address), `localhost` and the loopback addresses (a client on the
/// node itself), and `extra` (`--api-san`).
pub fn certificate_request(bound: IpAddr, advertised_host: &str, extra: &[String]) -> Result<ApiCertificateRequest> {
    let mut request = ApiCertificateRequest { dns_names: Vec::new(), ip_addresses: Vec::new() };
    let bound_ip = (!bound.is_unspecified()).then(|| bound.to_string());
    let defaults = [Some(advertised_host.to_string()), bound_ip, Some("localhost".into())];
    let loopback = [IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
    let names = defaults
        .into_iter()
        .flatten()
        .map(|n| (n, "--advertise"))
        .chain(extra.iter().map(|n| (n.clone(), "--api-san")));
    for (name, flag) in names {
        let name = name.trim().trim_start_matches('[').trim_end_matches(']').to_string();
        if let Ok(ip) = name.parse::<IpAddr>() {
            if !request.ip_addresses.contains(&ip) {
                request.ip_addresses.push(ip);
            }
        } else if DnsName::try_from(name.as_str()).is_ok() {
            let name = name.to_ascii_lowercase();
            if !request.dns_names.contains(&name) {
                request.dns_names.push(name);
            }
        } else {
            return Err(Error::Fatal(format!("{flag} {name:?} is neither a host name nor an IP address")));
        }
    }
    for ip in loopback {
        if !request.ip_addresses.contains(&ip) {
            request.ip_addresses.push(ip);
        }
    }
    Ok(request)
}

/// The TLS settings serving `key`: HTTP/1.1, no client certificates (clients authenticate
/// with bearer tokens or the console's cookie).
pub fn server_config(key: Arc<CertifiedKey>) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Fatal(format!("TLS settings: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A bring-your-own certificate chain and key, as PEM files.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a file looked like when last read: a change of any part means it was replaced.
type FileStamp = Vec<Option<(SystemTime, u64, u64)>>;

impl KeyPairFiles {
    /// Loads the pair: the chain (leaf first) and a key that is the leaf's.
    pub fn load(&self) -> std::result::Result<Arc<CertifiedKey>, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<std::result::Result<_, _>>())
            .map_err(|e| format!("cannot read the certificate {}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{} holds no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("cannot read the private key {}: {e}", self.key.display()))?;
        let certified = CertifiedKey::from_der(chain, key, &crypto_provider())
            .map_err(|e| format!("{} and {} are not a pair: {e}", self.cert.display(), self.key.display()))?;
        Ok(Arc::new(certified))
    }

    fn stamp(&self) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        [&self.cert, &self.key]
            .iter()
            .map(|p: &&PathBuf| {
                let meta = std::fs::metadata(p.as_path()).ok()?;
                Some((meta.modified().ok()?, meta.len(), meta.ino()))
            })
            .collect()
    }

    /// Loads the pair again and puts it in service; an invalid pair leaves the one in service.
    fn reload(&self, into: &watch::Sender<Arc<ServerConfig>>) -> std::result::Result<(), String> {
        let key = self.load()?;
        let config = server_config(key).map_err(|e| e.to_string())?;
        into.send_replace(Arc::new(config));
        Ok(())
    }
}

/// SIGHUP, which asks for the API certificate to be loaded or issued again.
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).map_err(|e| tracing::warn!(error = %e, "cannot handle SIGHUP")).ok()
}

/// Reloads the pair on SIGHUP and whenever a file changes.
async fn keep_files_loaded(files: KeyPairFiles, into: watch::Sender<Arc<ServerConfig>>, mut seen: FileStamp) {
    let mut hangup = hangups();
    let mut tick = tokio::time::interval(FILE_CHECK_EVERY);
    loop {
        let asked = tokio::select! {
            Some(()) = async { hangup.as_mut()?.recv().await } => true,
            _ = tick.tick() => false,
        };
        let stamp = files.stamp();
        if !asked && stamp == seen {
            continue;
        }
        // A pair that failed is tried again on the next change or SIGHUP, not every tick.
        seen = stamp;
        match files.reload(&into) {
            Ok(()) => tracing::info!(cert = %files.cert.display(), "reloaded the API certificate"),
            Err(e) => {
                tracing::error!(error = %e, "the new API certificate does not load; the previous one stays in service")
            }
        }
    }
}

/// How long after `now` a certificate valid from `not_before` to `not_after` is renewed:
/// at two thirds of its life.
pub fn renew_in(now: SystemTime, not_before: SystemTime, not_after: SystemTime) -> Duration {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    let at = not_before + life * 2 / 3;
    at.duration_since(now).unwrap_or_default()
}

/// Asks the issuer for a new `auto` certificate at two thirds of each one's life, and at
/// once on SIGHUP.
async fn keep_renewed(
    issuer: Arc<dyn ApiCertificateIssuer>,
    request: ApiCertificateRequest,
    into: watch::Sender<Arc<ServerConfig>>,
    mut current: IssuedCertificate,
) {
    let mut hangup = hangups();
    loop {
        let due = renew_in(SystemTime::now(), current.not_before, current.not_after);
        tokio::select! {
            _ = tokio::time::sleep(due) => {}
            Some(()) = async { hangup.as_mut()?.recv().await } => tracing::info!("SIGHUP: asking for a new API certificate"),
            () = issuer.replaced() => tracing::info!("the cluster CA changed: asking for a new API certificate"),
        }
        let renewed = match issuer.issue(&request).await {
            Ok(issued) => server_config(issued.key.clone()).map(|config| (issued, config)),
            Err(e) => Err(e),
        };
        match renewed {
            Ok((issued, config)) => {
                into.send_replace(Arc::new(config));
                current = issued;
                tracing::info!("renewed the API certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?RENEW_RETRY, "cannot renew the API certificate");
                tokio::time::sleep(RENEW_RETRY).await;
                // A renewal that was due is asked again at once on the next round.
                if current.not_after <= SystemTime::now() {
                    tracing::error!("the API certificate expired; clients refuse it until renewal succeeds");
                }
            }
        }
    }
}

/// The path a client trusts for a node's data dir: the cluster CA bundle.
pub fn ca_bundle_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.pem")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        tls: ApiTlsArgs,
    }

    fn flags(args: &[&str]) -> std::result::Result<ApiTlsArgs, clap::Error> {
        Flags::try_parse_from(std::iter::once("panal").chain(args.iter().copied())).map(|f| f.tls)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A certificate authority issuing like the cluster CA.
    struct TestCa {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        cert: CertificateDer<'static>,
    }

    impl TestCa {
        fn new() -> Self {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, "test cluster CA");
            let cert = params.self_signed(&key).unwrap();
            TestCa { cert: cert.der().clone(), issuer: rcgen::Issuer::new(params, key) }
        }

        /// A leaf for `names`, as PEM (certificate, key).
        fn leaf_pem(&self, names: &[&str]) -> (String, String) {
            let params =
                rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    impl ApiCertificateIssuer for TestCa {
        fn issue<'a>(&'a self, request: &'a ApiCertificateRequest) -> BoxFuture<'a, Result<IssuedCertificate>> {
            Box::pin(async move {
                let mut names = request.dns_names.clone();
                names.extend(request.ip_addresses.iter().map(IpAddr::to_string));
                let params = rcgen::CertificateParams::new(names).map_err(|e| Error::Internal(e.to_string()))?;
                let key = rcgen::KeyPair::generate().map_err(|e| Error::Internal(e.to_string()))?;
                let cert = params.signed_by(&key, &self.issuer).map_err(|e| Error::Internal(e.to_string()))?;
                let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
                let certified = CertifiedKey::from_der(vec![cert.der().clone()], der, &crypto_provider())
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let now = SystemTime::now();
                Ok(IssuedCertificate {
                    key: Arc::new(certified),
                    not_before: now,
                    not_after: now + Duration::from_secs(90 * 86_400),
                })
            })
        }

        /// A certificate for a name no test asks for, so serving it is visible.
        fn interim(&self) -> Arc<ServerConfig> {
            let (cert, key) = self.leaf_pem(&["interim.invalid"]);
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<std::result::Result<_, _>>().unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            Arc::new(server_config(Arc::new(CertifiedKey::from_der(chain, key, &crypto_provider()).unwrap())).unwrap())
        }
    }

    /// One `GET /` over TLS to `port`, as `server_name`, trusting `roots`: the status line.
    async fn https_get(port: u16, server_name: &str, roots: &[CertificateDer<'static>]) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root.clone()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(format!("GET / HTTP/1.1\r\nhost: {server_name}\r\nconnection: close\r\n\r\n").as_bytes()).await?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await?;
        Ok(answer.lines().next().unwrap_or_default().to_string())
    }

    /// Serves `tls` on a fresh loopback port with a router answering `GET /`.
    async fn serve_on_loopback(tls: Option<TlsConfig>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let limits = crate::server::listen::HttpLimits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 16,
        };
        let (stop_tx, stop) = watch::channel(false);
        std::mem::forget(stop_tx);
        tokio::spawn(crate::server::listen::serve(listener, router, limits, tls, stop, "api"));
        port
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_at_start() {
        let e = flags(&["--api-tls-cert", "c.pem"]).unwrap_err().to_string();
        assert!(e.contains("--api-tls-key"), "{e}");
        let e = flags(&["--api-tls-key", "k.pem"]).unwrap_err().to_string();
        assert!(e.contains("--api-tls-cert"), "{e}");
        let e = flags(&["--api-tls", "off", "--api-tls-cert", "c.pem", "--api-tls-key", "k.pem"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let e = flags(&["--api-tls", "sometimes"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn unreadable_or_mismatched_files_stop_the_start_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let (cert, _) = ca.leaf_pem(&["a.example"]);
        let (_, other_key) = ca.leaf_pem(&["b.example"]);
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), other_key).unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let args = flags(&["--api-tls-cert", c.to_str().unwrap(), "--api-tls-key", k.to_str().unwrap()]).unwrap();
        let e = ApiTlsPlan::from_flags(&args, addr("0.0.0.0:7700"), "n1").unwrap_err().to_string();
        assert!(e.contains("are not a pair"), "{e}");
        let missing = flags(&["--api-tls-cert", "/nonexistent/c.pem", "--api-tls-key", k.to_str().unwrap()]).unwrap();
        let e = ApiTlsPlan::from_flags(&missing, addr("0.0.0.0:7700"), "n1").unwrap_err().to_string();
        assert!(e.contains("cannot read the certificate /nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn the_default_is_https_unless_the_api_listens_on_loopback_only() {
        let none = flags(&[]).unwrap();
        assert!(matches!(ApiTlsPlan::from_flags(&none, addr("127.0.0.1:7700"), "127.0.0.1").unwrap(), ApiTlsPlan::Off));
        assert!(matches!(ApiTlsPlan::from_flags(&none, addr("127.4.5.6:7700"), "127.4.5.6").unwrap(), ApiTlsPlan::Off));
        assert!(matches!(ApiTlsPlan::from_flags(&none, addr("[::1]:7700"), "::1").unwrap(), ApiTlsPlan::Off));
        assert!(ApiTlsPlan::from_flags(&none, addr("0.0.0.0:7700"), "node1").unwrap().is_on());
        assert!(ApiTlsPlan::from_flags(&none, addr("10.0.0.5:7700"), "10.0.0.5").unwrap().is_on());
        let forced = flags(&["--api-tls", "auto"]).unwrap();
        assert!(ApiTlsPlan::from_flags(&forced, addr("127.0.0.1:7700"), "127.0.0.1").unwrap().is_on());
        let off = flags(&["--api-tls", "off"]).unwrap();
        assert!(!ApiTlsPlan::from_flags(&off, addr("10.0.0.5:7700"), "10.0.0.5").unwrap().is_on());
        let san_without_auto = flags(&["--api-tls", "off", "--api-san", "panal.example"]).unwrap();
        let e = ApiTlsPlan::from_flags(&san_without_auto, addr("10.0.0.5:7700"), "x").unwrap_err().to_string();
        assert!(e.contains("--api-san"), "{e}");
    }

    #[test]
    fn the_auto_certificate_names_the_advertised_host_loopback_and_the_extra_names() {
        let extra = vec!["Panal.Example.com".to_string(), "192.0.2.7".to_string(), "[2001:db8::1]".to_string()];
        let request = certificate_request("10.0.0.5".parse().unwrap(), "node1", &extra).unwrap();
        assert_eq!(request.dns_names, ["node1", "localhost", "panal.example.com"]);
        let ips: Vec<String> = request.ip_addresses.iter().map(IpAddr::to_string).collect();
        assert_eq!(ips, ["10.0.0.5", "192.0.2.7", "2001:db8::1", "127.0.0.1", "::1"]);
        let every = certificate_request("0.0.0.0".parse().unwrap(), "10.0.0.5", &[]).unwrap();
        assert_eq!(every.dns_names, ["localhost"]);
        assert!(!every.ip_addresses.iter().any(IpAddr::is_unspecified));
        let e = certificate_request("0.0.0.0".parse().unwrap(), "n1", &["not a name!".into()]).unwrap_err();
        assert!(e.to_string().contains("--api-san \"not a name!\""), "{e}");
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(90 * 86_400);
        assert_eq!(renew_in(start, start, end), Duration::from_secs(60 * 86_400));
        assert_eq!(renew_in(start + Duration::from_secs(86_400), start, end), Duration::from_secs(59 * 86_400));
        assert_eq!(renew_in(end, start, end), Duration::ZERO, "overdue: at once");
    }

    #[tokio::test]
    async fn auto_serves_a_certificate_of_the_cluster_ca_that_only_trusting_clients_accept() {
        let ca = Arc::new(TestCa::new());
        let args = flags(&["--api-tls", "auto", "--api-san", "api.panal.test"]).unwrap();
        let plan = ApiTlsPlan::from_flags(&args, addr("127.0.0.1:0"), "127.0.0.1").unwrap();
        let mut tls = plan.start(Some(ca.clone() as Arc<dyn ApiCertificateIssuer>)).await.unwrap().unwrap();
        // The interim certificate first, the issued one as soon as it is signed.
        tokio::time::timeout(Duration::from_secs(10), tls.changed()).await.unwrap().unwrap();
        let port = serve_on_loopback(Some(tls)).await;
        let roots = [ca.cert.clone()];
        assert_eq!(https_get(port, "127.0.0.1", &roots).await.unwrap(), "HTTP/1.1 200 OK");
        assert_eq!(https_get(port, "api.panal.test", &roots).await.unwrap(), "HTTP/1.1 200 OK");
        // Another CA, even one with the same name as the cluster's, is not trusted.
        let impostor = TestCa::new();
        let refused = https_get(port, "127.0.0.1", std::slice::from_ref(&impostor.cert)).await.unwrap_err();
        assert!(refused.to_string().contains("invalid peer certificate: BadSignature"), "{refused}");
        let wrong_name = https_get(port, "elsewhere.test", &roots).await.unwrap_err();
        assert!(wrong_name.to_string().contains("not valid for name \"elsewhere.test\""), "{wrong_name}");
    }

    #[tokio::test]
    async fn auto_without_the_cluster_ca_stops_the_start() {
        let plan = ApiTlsPlan::from_flags(&flags(&[]).unwrap(), addr("0.0.0.0:7700"), "n1").unwrap();
        let e = plan.start(None).await.unwrap_err().to_string();
        assert!(e.contains("needs the cluster CA"), "{e}");
    }

    #[tokio::test]
    async fn a_new_pair_replaces_the_old_and_a_broken_one_leaves_it_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let files = KeyPairFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        let write = |(cert, key): (String, String)| {
            std::fs::write(&files.cert, cert).unwrap();
            std::fs::write(&files.key, key).unwrap();
        };
        write(ca.leaf_pem(&["first.test"]));
        let (tx, rx) = watch::channel(Arc::new(server_config(files.load().unwrap()).unwrap()));
        let first = rx.borrow().clone();
        write(ca.leaf_pem(&["second.test"]));
        files.reload(&tx).unwrap();
        let second = rx.borrow().clone();
        assert!(!Arc::ptr_eq(&first, &second), "the new pair is in service");
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n").unwrap();
        assert!(files.reload(&tx).is_err());
        assert!(Arc::ptr_eq(&second, &rx.borrow()), "a broken pair changes nothing");
        let port = serve_on_loopback(Some(rx)).await;
        assert_eq!(https_get(port, "second.test", std::slice::from_ref(&ca.cert)).await.unwrap(), "HTTP/1.1 200 OK");
    }
}
