//! Admin commands (`panal node …`, `panal token …`, `panal status`, `panal backup`): log in
//! to any node through the [client](crate::tooling::client) and print the answer.

use crate::error::{Error, Result};
use crate::tooling::cli::{AdminArgs, CaCommand, NodeCommand, TokenCommand};
use crate::tooling::client::{Client, NodeRow};
use panal_actors::services::ServiceHealth;

/// `panal backup`: downloads the state and writes it next to FILE, then renames it, so a
/// failed backup never leaves a truncated file under the final name.
pub async fn backup(args: crate::tooling::cli::BackupArgs) -> Result<()> {
    let client = Client::admin(&args.admin).await?;
    let (bytes, index) = client.backup().await?;
    let tmp = args.file.with_extension("partial");
    let io = |e: std::io::Error| Error::Fatal(format!("cannot write {}: {e}", args.file.display()));
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &args.file).map_err(io)?;
    let index = index.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
    println!("backup of {} at index {index}: {} ({} bytes)", client.current_node(), args.file.display(), bytes.len());
    Ok(())
}

pub async fn node(cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Ls(args) => {
            let rows = Client::admin(&args).await?.cluster_nodes().await?;
            print!("{}", node_table(&rows));
        }
        NodeCommand::Promote { id, admin } => {
            Client::admin(&admin).await?.promote(id).await?;
            println!("node {id} is now a manager");
        }
        NodeCommand::Demote { id, admin } => {
            Client::admin(&admin).await?.demote(id).await?;
            println!("node {id} is now a worker");
        }
        NodeCommand::Update(args) => crate::tooling::service::node_update(args).await?,
        NodeCommand::Rm { id, admin } => {
            Client::admin(&admin).await?.remove_node(id).await?;
            println!("node {id} removed");
        }
    }
    Ok(())
}

pub fn node_table(rows: &[NodeRow]) -> String {
    let mut out = format!(
        "{:<4} {:<16} {:<8} {:<10} {:<7} {:<22} {:<10} {:<8} {:<13} {}\n",
        "ID", "NAME", "ROLE", "STATE", "LEADER", "API", "REACHABLE", "APPLIED", "AVAILABILITY", "LABELS"
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for r in rows {
        out.push_str(&format!(
            "{:<4} {:<16} {:<8} {:<10} {:<7} {:<22} {:<10} {:<8} {:<13} {}\n",
            r.id,
            r.name,
            r.role,
            opt(r.state.clone()),
            opt(r.leader.map(|l| l.to_string())),
            r.api_addr,
            if r.reachable { "yes" } else { "NO" },
            opt(r.applied_index.map(|i| i.to_string())),
            r.availability,
            if r.labels.is_empty() {
                "-".to_string()
            } else {
                r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
            },
        ));
    }
    out
}

pub async fn token(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Show { role, admin } => {
            let tokens = Client::admin(&admin).await?.join_tokens().await?;
            println!("{}", tokens.for_role(&role));
        }
        TokenCommand::Rotate { role, admin } if role == "jwt" => {
            let out = Client::admin(&admin).await?.rotate_signing_key().await?;
            println!("new signing key: {}", out.kid);
        }
        TokenCommand::Rotate { role, admin } => {
            println!("{}", Client::admin(&admin).await?.rotate_join_token(&role).await?);
        }
    }
    Ok(())
}

pub async fn ca(cmd: CaCommand) -> Result<()> {
    let when = |secs: Option<u64>| match secs {
        Some(at) => {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let left = at.saturating_sub(now);
            format!("in {} d {} h {} min (unix time {at})", left / 86_400, left % 86_400 / 3600, left % 3600 / 60)
        }
        None => "-".into(),
    };
    match cmd {
        CaCommand::Show(admin) => {
            let ca = Client::admin(&admin).await?.cluster_ca().await?;
            let Some(fingerprint) = &ca.fingerprint else {
                println!("this cluster runs without peer TLS (--peer-tls off): no CA");
                return Ok(());
            };
            println!("CA fingerprint (SHA-256 of its key): {fingerprint}");
            println!("CA expires:   {}", when(ca.ca_not_after));
            if let Some(previous) = &ca.previous_fingerprint {
                println!("rotation under way: the old CA {previous} is still trusted");
                let pending: Vec<String> = ca.pending_nodes.iter().map(u64::to_string).collect();
                println!("  members without a certificate from the new CA yet: {}", pending.join(", "));
            }
            println!(
                "node certificate: {}   expires: {}   issued by: {}",
                ca.node_subject.as_deref().unwrap_or("-"),
                when(ca.node_not_after),
                ca.node_issuer_fingerprint.as_deref().unwrap_or("-")
            );
        }
        CaCommand::Rotate(admin) => {
            let rotated = Client::admin(&admin).await?.rotate_ca().await?;
            println!("new CA: {}", rotated.fingerprint);
            println!(
                "old CA: {} (trusted until every member holds a certificate from the new one)",
                rotated.previous_fingerprint
            );
            println!("Join tokens now carry the new fingerprint (`panal token show`). Follow the progress with `panal ca show`,");
            println!("then give clients the new bundle with `panal ca export FILE`.");
        }
        CaCommand::Export { file, admin } => {
            let ca = Client::admin(&admin).await?.cluster_ca().await?;
            let pem =
                ca.ca_pem.ok_or_else(|| Error::Fatal("this cluster runs without peer TLS: no CA to export".into()))?;
            std::fs::write(&file, pem).map_err(|e| Error::Fatal(format!("cannot write {}: {e}", file.display())))?;
            println!("wrote the CA certificate to {}", file.display());
        }
    }
    Ok(())
}

pub async fn status(args: AdminArgs) -> Result<()> {
    let client = Client::admin(&args).await?;
    let status = client.cluster_status().await?;
    let nodes = client.cluster_nodes().await?;
    println!(
        "leader: {}   term: {}   this node: {} ({})",
        match &status.leader {
            None => "NONE (no quorum?)".to_string(),
            Some(l) => format!("{} (id {})", l.name, l.id),
        },
        status.node.term,
        status.node.name,
        status.node.state,
    );
    print!("{}", node_table(&nodes));
    if !status.services.is_empty() {
        let line: Vec<String> = status
            .services
            .iter()
            .map(|(service, h)| match h {
                ServiceHealth::Running { workers } => format!("{}: running ({workers} workers)", service.name()),
                ServiceHealth::Failed { reason, .. } => format!("{}: FAILED ({reason})", service.name()),
            })
            .collect();
        println!("services on this node: {}", line.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_table_shows_absent_values_as_dashes() {
        let rows = [NodeRow {
            id: 2,
            name: "node2".into(),
            role: panal_raft::MemberRole::Worker,
            state: None,
            leader: None,
            api_addr: "127.0.0.1:7710".into(),
            reachable: false,
            applied_index: None,
            term: None,
            availability: Default::default(),
            labels: Default::default(),
            services: None,
        }];
        let table = node_table(&rows);
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("2    node2") && line.contains(" NO ") && line.ends_with('-'), "{table}");
    }
}
