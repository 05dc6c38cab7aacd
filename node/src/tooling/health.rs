//! `panal health`: one HTTP GET, exit status 0 iff the answer is 200. For container
//! health checks in images without curl (the `FROM scratch` image in swarm/).

use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};
use crate::tooling::client::Client;

#[derive(Debug, Args, Clone)]
pub struct HealthArgs {
    /// URL to probe; `/ready` is 200 once the node knows a leader and has caught up.
    #[arg(long, env = "PANAL_HEALTH_URL", default_value = "http://127.0.0.1:7700/ready")]
    pub url: String,
    /// Give up after this many milliseconds.
    #[arg(long, env = "PANAL_HEALTH_TIMEOUT_MS", default_value_t = 3000)]
    pub timeout_ms: u64,
}

pub async fn run(args: HealthArgs) -> Result<()> {
    let with_scheme = if args.url.contains("://") { args.url.clone() } else { format!("http://{}", args.url) };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| Error::Fatal(format!("{}: {e}", args.url)))?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let base = url.origin().ascii_serialization();
    let client = Client::with_timeout(&[base], Duration::from_millis(args.timeout_ms))?;
    let answer = client.send(reqwest::Method::GET, &path, &crate::tooling::client::Body::None, &[]).await?;
    if answer.status != 200 {
        return Err(Error::Fatal(format!("{}: {}", args.url, answer.status)));
    }
    println!("{}: {}", args.url, answer.status);
    Ok(())
}
