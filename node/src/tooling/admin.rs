//! Admin commands (`panal node …`, `panal token …`, `panal status`): log in to any node
//! over its public API and print the answer.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::tooling::cli::{AdminArgs, NodeCommand, TokenCommand};

/// An HTTP client logged in as an admin.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub async fn login(args: &AdminArgs) -> Result<Self> {
        let password = args
            .password
            .clone()
            .ok_or_else(|| Error::Fatal("no admin password: pass --password or set PANAL_PASSWORD".into()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(130))
            .build()
            .map_err(|e| Error::Fatal(e.to_string()))?;
        let base = args.url.trim_end_matches('/').to_string();
        let resp = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({ "username": args.user, "password": password }))
            .send()
            .await
            .map_err(|e| Error::Fatal(format!("cannot reach {base}: {e}")))?;
        let body = check(resp).await?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| Error::Fatal("login answer has no access_token".into()))?
            .to_string();
        Ok(Self { http, base, token })
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> Result<Value> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Fatal(format!("cannot reach {}: {e}", self.base)))?;
        check(resp).await
    }

    /// Like `request`, with a JSON body.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.request(method, url).bearer_auth(&self.token).json(body).send().await;
        check(resp.map_err(|e| Error::Fatal(format!("cannot reach {}: {e}", self.base)))?).await
    }
}

/// `panal backup`: downloads the state and writes it next to FILE, then renames it, so a
/// failed backup never leaves a truncated file under the final name.
pub async fn backup(args: crate::tooling::cli::BackupArgs) -> Result<()> {
    let client = AdminClient::login(&args.admin).await?;
    let resp = client
        .http
        .get(format!("{}/api/v1/admin/backup", client.base))
        .bearer_auth(&client.token)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| Error::Fatal(format!("cannot reach {}: {e}", client.base)))?;
    if !resp.status().is_success() {
        check(resp).await?;
        unreachable!("check fails on an error status");
    }
    let index = resp.headers().get("x-panal-index").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
    let bytes = resp.bytes().await.map_err(|e| Error::Fatal(format!("backup download failed: {e}")))?;
    let tmp = args.file.with_extension("partial");
    let io = |e: std::io::Error| Error::Fatal(format!("cannot write {}: {e}", args.file.display()));
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &args.file).map_err(io)?;
    println!("backup of {} at index {index}: {} ({} bytes)", client.base, args.file.display(), bytes.len());
    Ok(())
}

/// Decodes a JSON answer, turning the one error shape into a readable message.
async fn check(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("no details");
        Err(Error::Fatal(format!("{status} {code}: {message}")))
    }
}

pub async fn node(cmd: NodeCommand) -> Result<()> {
    use reqwest::Method;
    match cmd {
        NodeCommand::Ls(args) => {
            let client = AdminClient::login(&args).await?;
            let rows = client.request(Method::GET, "/api/v1/cluster/nodes").await?;
            print!("{}", node_table(&rows));
        }
        NodeCommand::Promote { id, admin } => {
            AdminClient::login(&admin)
                .await?
                .request(Method::POST, &format!("/api/v1/cluster/nodes/{id}/promote"))
                .await?;
            println!("node {id} is now a manager");
        }
        NodeCommand::Demote { id, admin } => {
            AdminClient::login(&admin)
                .await?
                .request(Method::POST, &format!("/api/v1/cluster/nodes/{id}/demote"))
                .await?;
            println!("node {id} is now a worker");
        }
        NodeCommand::Update(args) => crate::tooling::service::node_update(args).await?,
        NodeCommand::Rm { id, admin } => {
            AdminClient::login(&admin).await?.request(Method::DELETE, &format!("/api/v1/cluster/nodes/{id}")).await?;
            println!("node {id} removed");
        }
    }
    Ok(())
}

pub fn node_table(rows: &Value) -> String {
    let mut out = format!(
        "{:<4} {:<16} {:<8} {:<10} {:<7} {:<22} {:<10} {:<8} {:<13} {}\n",
        "ID", "NAME", "ROLE", "STATE", "LEADER", "API", "REACHABLE", "APPLIED", "AVAILABILITY", "LABELS"
    );
    for r in rows.as_array().into_iter().flatten() {
        let opt = |v: &Value| {
            if v.is_null() {
                "-".to_string()
            } else {
                v.to_string().trim_matches('"').to_string()
            }
        };
        out.push_str(&format!(
            "{:<4} {:<16} {:<8} {:<10} {:<7} {:<22} {:<10} {:<8} {:<13} {}\n",
            opt(&r["id"]),
            opt(&r["name"]),
            opt(&r["role"]),
            opt(&r["state"]),
            opt(&r["leader"]),
            opt(&r["api_addr"]),
            if r["reachable"].as_bool() == Some(true) { "yes" } else { "NO" },
            opt(&r["applied_index"]),
            opt(&r["availability"]),
            r["labels"].as_object().map_or("-".into(), |m| {
                let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", opt(v))).collect();
                if pairs.is_empty() {
                    "-".into()
                } else {
                    pairs.join(",")
                }
            }),
        ));
    }
    out
}

pub async fn token(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Show { role, admin } => {
            let tokens =
                AdminClient::login(&admin).await?.request(reqwest::Method::GET, "/api/v1/cluster/tokens").await?;
            println!("{}", tokens[role.as_str()].as_str().unwrap_or_default());
        }
        TokenCommand::Rotate { role, admin } if role == "jwt" => {
            let out =
                AdminClient::login(&admin).await?.request(reqwest::Method::POST, "/api/v1/auth/keys/rotate").await?;
            println!("new signing key: {}", out["kid"].as_str().unwrap_or_default());
        }
        TokenCommand::Rotate { role, admin } => {
            let out = AdminClient::login(&admin)
                .await?
                .request(reqwest::Method::POST, &format!("/api/v1/cluster/tokens/{role}/rotate"))
                .await?;
            println!("{}", out["token"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

pub async fn status(args: AdminArgs) -> Result<()> {
    let client = AdminClient::login(&args).await?;
    let status = client.request(reqwest::Method::GET, "/api/v1/cluster/status").await?;
    let nodes = client.request(reqwest::Method::GET, "/api/v1/cluster/nodes").await?;
    let leader = &status["leader"];
    println!(
        "leader: {}   term: {}   this node: {} ({})",
        if leader.is_null() {
            "NONE (no quorum?)".to_string()
        } else {
            format!("{} (id {})", leader["name"].as_str().unwrap_or("?"), leader["id"])
        },
        status["node"]["term"],
        status["node"]["name"].as_str().unwrap_or("?"),
        status["node"]["state"].as_str().unwrap_or("?"),
    );
    print!("{}", node_table(&nodes));
    if let Some(services) = status["services"].as_object() {
        let line: Vec<String> = services
            .iter()
            .map(|(name, h)| match h["state"].as_str() {
                Some("running") => format!("{name}: running ({} workers)", h["workers"]),
                Some("failed") => format!("{name}: FAILED ({})", h["reason"].as_str().unwrap_or("?")),
                _ => format!("{name}: {h}"),
            })
            .collect();
        println!("services on this node: {}", line.join(", "));
    }
    Ok(())
}
