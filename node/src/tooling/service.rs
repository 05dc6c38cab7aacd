//! `panal service ls|ps|inspect|scale|update` and `panal node update`: orchestration from
//! the command line, over the admin API of any node.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::tooling::client::AdminArgs;
use crate::tooling::client::Client;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Every service: mode, replicas (running/desired), constraints.
    Ls(AdminArgs),
    /// A service's tasks: slot, node, desired and current state, since, error.
    Ps {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A service's spec and task counts as JSON.
    Inspect {
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set replica counts: `panal service scale catalog=2 prediction=1` (makes them replicated).
    Scale {
        #[arg(required = true, value_name = "SERVICE=N")]
        scales: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a service's spec.
    Update(ServiceUpdateArgs),
}

#[derive(Debug, Args)]
pub struct ServiceUpdateArgs {
    pub service: String,
    #[arg(long)]
    pub replicas: Option<u32>,
    #[arg(long, value_parser = ["global", "replicated"])]
    pub mode: Option<String>,
    /// e.g. node.labels.cpu==big, node.role!=manager (repeatable).
    #[arg(long = "constraint-add", value_name = "EXPR")]
    pub constraint_add: Vec<String>,
    #[arg(long = "constraint-rm", value_name = "EXPR")]
    pub constraint_rm: Vec<String>,
    /// Most tasks per node (0: no limit).
    #[arg(long)]
    pub max_per_node: Option<u32>,
    /// Workers per task (0: the nodes' --pool-size).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Rolling restart: every node running the service replaces its instances (new ones
    /// first), in node id order.
    #[arg(long)]
    pub restart: bool,
    /// Place the tasks afresh over every eligible node.
    #[arg(long)]
    pub rebalance: bool,
    /// Nodes restarting at once.
    #[arg(long)]
    pub update_parallelism: Option<u32>,
    /// Pause between restart batches, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub update_delay: Option<u64>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    pub id: u64,
    #[arg(long, value_parser = ["active", "pause", "drain"])]
    pub availability: Option<String>,
    /// Add or replace a label (repeatable).
    #[arg(long = "label-add", value_name = "KEY=VALUE")]
    pub label_add: Vec<String>,
    /// Remove a label (repeatable).
    #[arg(long = "label-rm", value_name = "KEY")]
    pub label_rm: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

pub async fn run(cmd: ServiceCommand) -> Result<()> {
    match cmd {
        ServiceCommand::Ls(admin) => {
            let rows = Client::admin(&admin).await?.services().await?;
            print!("{}", service_table(&rows));
        }
        ServiceCommand::Ps { service, admin } => {
            let rows = Client::admin(&admin).await?.service_tasks(&service).await?;
            print!("{}", task_table(&rows));
        }
        ServiceCommand::Inspect { service, admin } => {
            let view = Client::admin(&admin).await?.service(&service).await?;
            println!("{}", serde_json::to_string_pretty(&view).unwrap_or_default());
        }
        ServiceCommand::Scale { scales, admin } => {
            let mut changes = Vec::new();
            for s in &scales {
                let (service, n) = s
                    .split_once('=')
                    .ok_or_else(|| Error::Fatal(format!("{s:?}: expected SERVICE=N, e.g. catalog=2")))?;
                let n: u32 = n.parse().map_err(|_| Error::Fatal(format!("{s:?}: N must be a whole number ≥ 0")))?;
                changes.push((service.to_string(), n));
            }
            let client = Client::admin(&admin).await?;
            for (service, n) in changes {
                let body = json!({ "mode": "replicated", "replicas": n });
                client.update_service(&service, &body).await?;
                println!("{service} scaled to {n}");
            }
        }
        ServiceCommand::Update(a) => {
            let mut body = Map::new();
            if let Some(m) = a.mode {
                body.insert("mode".into(), json!(m));
            }
            if let Some(r) = a.replicas {
                body.insert("replicas".into(), json!(r));
            }
            if !a.constraint_add.is_empty() {
                body.insert("constraint_add".into(), json!(a.constraint_add));
            }
            if !a.constraint_rm.is_empty() {
                body.insert("constraint_rm".into(), json!(a.constraint_rm));
            }
            if let Some(m) = a.max_per_node {
                body.insert("max_per_node".into(), json!(m));
            }
            if let Some(w) = a.workers {
                body.insert("workers".into(), json!(w));
            }
            if a.restart {
                body.insert("restart".into(), json!(true));
            }
            if a.rebalance {
                body.insert("rebalance".into(), json!(true));
            }
            if let Some(p) = a.update_parallelism {
                body.insert("update_parallelism".into(), json!(p));
            }
            if let Some(ms) = a.update_delay {
                body.insert("update_delay_ms".into(), json!(ms));
            }
            let view = Client::admin(&a.admin).await?.update_service(&a.service, &Value::Object(body)).await?;
            print!("{}", service_table(&json!([view])));
        }
    }
    Ok(())
}

pub async fn node_update(a: NodeUpdateArgs) -> Result<()> {
    let mut labels = Map::new();
    for l in &a.label_add {
        let (k, v) = l.split_once('=').ok_or_else(|| Error::Fatal(format!("--label-add {l:?}: expected KEY=VALUE")))?;
        labels.insert(k.to_string(), json!(v));
    }
    let mut body = json!({ "label_add": labels, "label_rm": a.label_rm });
    if let Some(av) = a.availability {
        body["availability"] = json!(av);
    }
    let out = Client::admin(&a.admin).await?.update_node(a.id, &body).await?;
    let labels: Vec<String> = out["settings"]["labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    println!(
        "node {} ({}): availability {}, labels [{}]",
        a.id,
        out["name"].as_str().unwrap_or("?"),
        out["settings"]["availability"].as_str().unwrap_or("?"),
        labels.join(", ")
    );
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `NAME MODE REPLICAS CONSTRAINTS`, replicas as running/desired.
pub fn service_table(rows: &Value) -> String {
    let mut out = format!("{:<12} {:<11} {:<9} {:<8} {}\n", "NAME", "MODE", "REPLICAS", "PENDING", "CONSTRAINTS");
    for r in rows.as_array().into_iter().flatten() {
        let spec = &r["spec"];
        let desired = if spec["mode"] == "global" { r["assigned"].clone() } else { spec["replicas"].clone() };
        let constraints: Vec<String> = spec["constraints"].as_array().into_iter().flatten().map(text).collect();
        out.push_str(&format!(
            "{:<12} {:<11} {:<9} {:<8} {}\n",
            text(&r["name"]),
            text(&spec["mode"]),
            format!("{}/{}", text(&r["running"]), text(&desired)),
            text(&r["pending"]),
            if constraints.is_empty() { "-".into() } else { constraints.join(", ") }
        ));
    }
    out
}

/// `SLOT NODE DESIRED CURRENT GEN SINCE ERROR` (GEN: the rolling restart the node is at).
pub fn task_table(rows: &Value) -> String {
    let mut out = format!(
        "{:<6} {:<6} {:<9} {:<9} {:<4} {:<25} {}\n",
        "SLOT", "NODE", "DESIRED", "CURRENT", "GEN", "SINCE", "ERROR"
    );
    for r in rows.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<6} {:<6} {:<9} {:<9} {:<4} {:<25} {}\n",
            text(&r["slot"]),
            text(&r["node_id"]),
            text(&r["desired_state"]),
            text(&r["current_state"]),
            text(&r["generation"]),
            text(&r["since"]),
            text(&r["error"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_running_over_desired_and_pending_reasons() {
        let services = json!([{"name": "catalog", "spec": {"mode": "replicated", "replicas": 3, "constraints": ["node.labels.cpu==big"]},
            "assigned": 2, "running": 2, "pending": 1}]);
        let table = service_table(&services);
        assert!(
            table.lines().nth(1).unwrap().contains("catalog      replicated  2/3       1        node.labels.cpu==big"),
            "{table}"
        );
        let tasks = json!([{"slot": 0, "node_id": null, "desired_state": "pending", "current_state": "pending",
            "since": "2026-01-01T00:00:00Z", "error": "no node satisfies node.labels.cpu==big"}]);
        assert!(task_table(&tasks).contains("pending   pending   -    2026-01-01T00:00:00Z      no node satisfies"));
    }
}
