//! `panal health`: one HTTP GET, exit status 0 iff the answer is 200. For container
//! health checks in images without curl (the `FROM scratch` image in swarm/).

use std::time::Duration;

use clap::Args;

use crate::error::{Error, Result};

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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
        .map_err(|e| Error::Fatal(e.to_string()))?;
    let resp = http.get(&args.url).send().await.map_err(|e| Error::Fatal(format!("{}: {e}", args.url)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::OK {
        println!("{}: {status}", args.url);
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(Error::Fatal(format!("{}: {status} {}", args.url, body.trim())))
}
