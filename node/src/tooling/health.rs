//! `panal health`: one HTTP GET, exit status 0 iff the answer is 200. For container
//! health checks in images without curl (the `FROM scratch` image in swarm/).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};
use crate::tooling::client::{normalize_address_as, Client, Trust};

#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// URL to probe; `/ready` is 200 once the node knows a leader and has caught up.
    /// Without a scheme: https when a CA is known (--ca-file, or the node's data dir).
    #[arg(long, env = "PANAL_HEALTH_URL", default_value = "127.0.0.1:7700/ready")]
    pub url: String,
    /// CA certificate (PEM) to trust for https. Default: the cluster CA of --data-dir.
    #[arg(long, env = "PANAL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The data dir of the node probed (the container's), whose cluster CA is trusted.
    #[arg(long, env = "PANAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Give up after this many milliseconds.
    #[arg(long, env = "PANAL_HEALTH_TIMEOUT_MS", default_value_t = 3000)]
    pub timeout_ms: u64,
}

pub async fn run(args: HealthArgs) -> Result<()> {
    let trust = match (&args.ca_file, &args.data_dir) {
        (Some(file), _) => Trust::from_pem_file(file)?,
        (None, Some(dir)) => Trust::of_data_dir(dir)?.unwrap_or_default(),
        (None, None) => Trust::default(),
    };
    let (address, path) = match args.url.split_once("://") {
        Some((scheme, rest)) => {
            rest.split_once('/').map_or((args.url.clone(), ""), |(host, path)| (format!("{scheme}://{host}"), path))
        }
        None => args.url.split_once('/').map_or((args.url.clone(), ""), |(host, path)| (host.to_string(), path)),
    };
    let node = normalize_address_as(&address, !trust.is_empty())?;
    let with_scheme = format!("{node}/{path}");
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| Error::Fatal(format!("{}: {e}", args.url)))?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let base = url.origin().ascii_serialization();
    let client = Client::with_trust(&[base], Duration::from_millis(args.timeout_ms), &trust)?;
    let answer = client.send(reqwest::Method::GET, &path, &crate::tooling::client::Body::None, &[]).await?;
    if answer.status != 200 {
        return Err(Error::Fatal(format!("{}: {}", args.url, answer.status)));
    }
    println!("{}: {}", args.url, answer.status);
    Ok(())
}
