//! Admin commands (`panal node …`, `panal token …`, `panal status`, `panal backup`): log in
//! to any node through the [client](crate::tooling::client) and print the answer.

use crate::error::{Error, Result};
use crate::tooling::cli::{AdminArgs, NodeCommand, TokenCommand};
use crate::tooling::client::{Client, NodeRow};

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
            opt(r.availability.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_table_shows_absent_values_as_dashes() {
        let rows = [NodeRow {
            id: 2,
            name: "node2".into(),
            role: "worker".into(),
            state: None,
            leader: None,
            api_addr: "127.0.0.1:7710".into(),
            reachable: false,
            applied_index: None,
            term: None,
            availability: None,
            labels: Default::default(),
        }];
        let table = node_table(&rows);
        let line = table.lines().nth(1).unwrap();
        assert!(line.starts_with("2    node2") && line.contains(" NO ") && line.ends_with('-'), "{table}");
    }
}
