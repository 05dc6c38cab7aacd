//! `panal service ls|ps|inspect|scale|update` and `panal node update`: orchestration from
//! the command line, over the admin API of any node.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use panal_actors::orchestration::{Availability, Constraint, Mode};

use crate::error::{Error, Result};
use crate::tooling::client::{AdminArgs, Client, NodeUpdate, ServiceUpdate, ServiceView, TaskView};

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
                let update = ServiceUpdate { mode: Some(Mode::Replicated), replicas: Some(n), ..Default::default() };
                client.update_service(&service, &update).await?;
                println!("{service} scaled to {n}");
            }
        }
        ServiceCommand::Update(a) => {
            let update = ServiceUpdate {
                mode: a.mode.as_deref().map(|m| if m == "global" { Mode::Global } else { Mode::Replicated }),
                replicas: a.replicas,
                constraint_add: constraints("--constraint-add", a.constraint_add)?,
                constraint_rm: constraints("--constraint-rm", a.constraint_rm)?,
                max_per_node: a.max_per_node,
                workers: a.workers,
                restart: a.restart,
                rebalance: a.rebalance,
                update_parallelism: a.update_parallelism,
                update_delay_ms: a.update_delay,
            };
            let view = Client::admin(&a.admin).await?.update_service(&a.service, &update).await?;
            print!("{}", service_table(&[view]));
        }
    }
    Ok(())
}

/// Placement constraints as typed (`node.labels.cpu==big`), refused here when malformed.
fn constraints(flag: &str, exprs: Vec<String>) -> Result<Vec<Constraint>> {
    exprs.into_iter().map(|e| Constraint::try_from(e).map_err(|why| Error::Fatal(format!("{flag}: {why}")))).collect()
}

pub async fn node_update(a: NodeUpdateArgs) -> Result<()> {
    let mut label_add = BTreeMap::new();
    for l in &a.label_add {
        let (k, v) = l.split_once('=').ok_or_else(|| Error::Fatal(format!("--label-add {l:?}: expected KEY=VALUE")))?;
        label_add.insert(k.to_string(), v.to_string());
    }
    let availability = a.availability.as_deref().map(str::parse::<Availability>).transpose().map_err(Error::Fatal)?;
    let update = NodeUpdate { availability, label_add, label_rm: a.label_rm };
    let out = Client::admin(&a.admin).await?.update_node(a.id, &update).await?;
    let labels: Vec<String> = out.settings.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "node {} ({}): availability {}, labels [{}]",
        a.id,
        out.name,
        out.settings.availability,
        labels.join(", ")
    );
    Ok(())
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn service_table(rows: &[ServiceView]) -> String {
    let mut out = format!("{:<12} {:<11} {:<9} {:<8} {}\n", "NAME", "MODE", "REPLICAS", "PENDING", "CONSTRAINTS");
    for r in rows {
        let (mode, desired) = match r.spec.mode {
            Mode::Global => ("global", r.assigned),
            Mode::Replicated => ("replicated", r.spec.replicas as usize),
        };
        let constraints: Vec<String> = r.spec.constraints.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "{:<12} {:<11} {:<9} {:<8} {}\n",
            r.name,
            mode,
            format!("{}/{desired}", r.running),
            r.pending,
            if constraints.is_empty() { "-".into() } else { constraints.join(", ") }
        ));
    }
    out
}

pub fn task_table(rows: &[TaskView]) -> String {
    let mut out = format!(
        "{:<6} {:<6} {:<9} {:<9} {:<4} {:<25} {}\n",
        "SLOT", "NODE", "DESIRED", "CURRENT", "GEN", "SINCE", "ERROR"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<6} {:<6} {:<9} {:<9} {:<4} {:<25} {}\n",
            r.slot,
            or_dash(r.node_id),
            r.desired_state,
            r.current_state,
            or_dash(r.generation),
            r.since,
            or_dash(r.error.as_deref())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use panal_actors::orchestration::ServiceSpec;
    use panal_actors::services::Service;

    use super::*;

    #[test]
    fn tables_show_running_over_desired_and_pending_reasons() {
        let constraint = Constraint::try_from("node.labels.cpu==big".to_string()).unwrap();
        let spec =
            ServiceSpec { mode: Mode::Replicated, replicas: 3, constraints: vec![constraint], ..Default::default() };
        let services = [ServiceView { name: "catalog".into(), spec, assigned: 2, running: 2, pending: 1 }];
        let table = service_table(&services);
        assert!(
            table.lines().nth(1).unwrap().contains("catalog      replicated  2/3       1        node.labels.cpu==big"),
            "{table}"
        );
        let tasks = [TaskView {
            service: Service::Catalog,
            slot: 0,
            node_id: None,
            desired_state: "pending".into(),
            current_state: "pending".into(),
            error: Some("no node satisfies node.labels.cpu==big".into()),
            since: "2026-01-01T00:00:00Z".into(),
            workers: None,
            generation: None,
        }];
        assert!(task_table(&tasks).contains("pending   pending   -    2026-01-01T00:00:00Z      no node satisfies"));
    }
}
