//! `panal start`: brings a node up — creating a cluster, joining one, or recovering from
//! the data directory — then serves the api and peer ports until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panal_actors::cluster::{ClusterCommand, ClusterConfig, JoinRole, JoinToken};
use panal_actors::{Command, PanalApp, Replica};
use panal_raft::{NodeInfo, ReplicaConfig};
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::cli::StartArgs;
use crate::error::{Error, Result};
use crate::identity::{self, NodeIdentity, PendingJoin};
use crate::peer::{self, ActivateRequest, JoinAdmission, JoinRequest};

/// Default peer port, used when `--join` names a host without one.
const DEFAULT_PEER_PORT: u16 = 7701;

pub async fn run(args: StartArgs) -> Result<()> {
    let data_dir = args.data_dir.clone();
    identity::check_writable(&data_dir)?;
    let existing = identity::load(&data_dir)?;
    if let Some(id) = &existing {
        if args.init || args.join.is_some() {
            return Err(Error::Fatal(format!(
                "{} already holds node {} ({}) of cluster {}; --init and --join are for the first start only. Start without them to restart this node.",
                data_dir.display(), id.node_id, id.name, id.cluster_id
            )));
        }
    } else {
        if !args.init && args.join.is_none() {
            return Err(Error::Fatal(format!(
                "{} holds no node yet: pass --init to create a cluster or --join ADDR --token TOKEN to join one",
                data_dir.display()
            )));
        }
        if data_dir.join("raft-log.db").exists() || data_dir.join("state.db").exists() {
            return Err(Error::Fatal(format!(
                "{} holds Raft files but no node.json (an interrupted --init or --join?); remove the directory and start again",
                data_dir.display()
            )));
        }
    }
    let token: Option<JoinToken> = match &args.token {
        Some(t) if args.join.is_some() => Some(t.parse().map_err(|e: String| Error::Fatal(format!("--token: {e}")))?),
        _ => None,
    };

    // Listen before writing anything, so a port in use fails cleanly.
    let api_listener = bind(&args.api_addr, "api").await?;
    let peer_listener = bind(&args.peer_addr, "peer").await?;
    // The mesh listener is opened by ractor_cluster later; check its port now.
    let mesh_listen: SocketAddr = bind(&args.mesh_addr, "mesh").await?.local_addr()?;
    let name = args.name.clone().or_else(|| existing.as_ref().map(|i| i.name.clone())).unwrap_or_else(hostname);
    let node = NodeInfo {
        name: name.clone(),
        api_addr: advertised(&args, &api_listener.local_addr()?),
        peer_addr: advertised(&args, &peer_listener.local_addr()?),
        mesh_addr: advertised_str(&args, &args.mesh_addr),
    };

    let (identity, replica, fresh_init) = match existing {
        Some(identity) => {
            let replica = open_replica(&args, &identity, node.clone()).await?;
            tracing::info!(node_id = identity.node_id, name = %identity.name, cluster = %identity.cluster_id, "restarting from the data dir");
            (identity, replica, None)
        }
        None if args.init => {
            let (identity, replica, config, password) = init(&args, node.clone()).await?;
            (identity, replica, Some((config, password)))
        }
        None => {
            let join_addr = with_default_port(args.join.as_deref().unwrap_or_default());
            let token = token.expect("clap requires --token with --join");
            let admission = request_admission(&join_addr, &token, &node).await?;
            let identity = NodeIdentity {
                node_id: admission.node_id,
                name: name.clone(),
                cluster_id: admission.cluster_id.clone(),
                cluster_secret: admission.cluster_secret.clone(),
                pending_join: Some(PendingJoin { via: join_addr, voter: admission.role == JoinRole::Manager }),
            };
            identity::save(&data_dir, &identity)?;
            let replica = open_replica(&args, &identity, node.clone()).await?;
            (identity, replica, None)
        }
    };

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .map_err(|e| Error::Fatal(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| Error::Fatal(format!("cannot install the metrics recorder: {e}")))?;
    crate::api::describe_metrics();
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let services = panal_actors::services::ServiceContext::new(name.clone(), replica.clone());
    let pool_size =
        args.pool_size.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    panal_actors::services::start_services(services.clone(), pool_size, Default::default())
        .await
        .map_err(|e| Error::Fatal(format!("cannot start the services: {e}")))?;
    panal_actors::metrics::collector::start(
        services.hub.clone(),
        args.proc_root.clone(),
        Duration::from_millis(args.metrics_interval_ms),
    )
    .await
    .map_err(|e| Error::Fatal(format!("cannot start the metrics collector: {e}")))?;
    crate::mesh::start(mesh_listen, &identity.cluster_secret, replica.clone()).await?;

    let caught_up = Arc::new(AtomicBool::new(false));
    let state = AppState {
        replica: replica.clone(),
        node_name: name.clone().into(),
        caught_up: caught_up.clone(),
        jwt_keys: Default::default(),
        gateway: Arc::new(crate::gateway::Gateway::new(args.balance, Duration::from_millis(args.call_timeout_ms))),
        services,
        chaos: args.chaos,
        metrics,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Fatal(e.to_string()))?,
    };
    let shutdown = shutdown_signal();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_server = serve(api_listener, api::router(state), stop_rx.clone());
    let peer_server = serve(peer_listener, peer::router(replica.clone()), stop_rx.clone());

    if let Some(pending) = identity.pending_join.clone() {
        let replica = replica.clone();
        let data_dir = data_dir.clone();
        let mut identity = identity.clone();
        let node = node.clone();
        tokio::spawn(async move {
            activate_until_done(&replica, &pending, identity.node_id, node).await;
            identity.pending_join = None;
            if let Err(e) = identity::save(&data_dir, &identity) {
                tracing::error!(error = %e, "could not record the completed join");
            }
        });
    }
    tokio::spawn(track_readiness(replica.clone(), caught_up));
    tokio::spawn(panal_actors::catalog::drive_time(replica.clone()));
    if let Some((config, password)) = fresh_init {
        print_init_banner(&config, &password, &node);
    }
    tracing::info!(node_id = identity.node_id, name = %name, api = %node.api_addr, peer = %node.peer_addr, "node is serving");

    let servers = tokio::spawn(async move { tokio::join!(api_server, peer_server) });
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), servers).await;
    replica.shutdown().await;
    Ok(())
}

async fn bind(addr: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(" — another process uses it; stop it or choose another --{what}-addr")
        } else {
            String::new()
        };
        Error::Fatal(format!("cannot listen on {addr} ({what} port): {e}{hint}"))
    })
}

async fn serve(listener: TcpListener, router: axum::Router, mut stop: tokio::sync::watch::Receiver<bool>) {
    let res = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "server stopped");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "panal".into())
}

fn advertised(args: &StartArgs, bound: &SocketAddr) -> String {
    advertised_str(args, &bound.to_string())
}

fn advertised_str(args: &StartArgs, listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "0"));
    let host = match &args.advertise {
        Some(h) => h.clone(),
        None if host == "0.0.0.0" || host == "[::]" || host.is_empty() => hostname(),
        None => host.to_string(),
    };
    format!("{host}:{port}")
}

fn with_default_port(addr: &str) -> String {
    let addr = addr.trim().trim_start_matches("http://").trim_end_matches('/');
    if addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PEER_PORT}")
    }
}

fn replica_config(args: &StartArgs, identity: &NodeIdentity, node: NodeInfo) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::new(identity.node_id, node, args.data_dir.clone(), identity.cluster_secret.clone());
    cfg.heartbeat_ms = args.heartbeat_ms;
    cfg.election_timeout_ms = args.election_timeout_ms;
    cfg.snapshot_every = args.snapshot_every;
    cfg.keep_after_snapshot = args.keep_after_snapshot;
    cfg
}

async fn open_replica(args: &StartArgs, identity: &NodeIdentity, node: NodeInfo) -> Result<Replica> {
    if args.heartbeat_ms == 0 || args.election_timeout_ms <= args.heartbeat_ms {
        return Err(Error::Fatal(
            "--election-timeout-ms must be greater than --heartbeat-ms (and both above 0)".into(),
        ));
    }
    Replica::open(replica_config(args, identity, node), PanalApp)
        .await
        .map_err(|e| Error::Fatal(format!("cannot open the replica: {e}")))
}

/// Creates the cluster: identity, secrets, signing key and admin account, replicated by
/// this node's own one-member Raft group.
async fn init(args: &StartArgs, node: NodeInfo) -> Result<(NodeIdentity, Replica, ClusterConfig, String)> {
    let config = ClusterConfig {
        cluster_id: identity::random_hex(8),
        cluster_secret: identity::random_hex(32),
        manager_secret: identity::random_hex(16),
        worker_secret: identity::random_hex(16),
    };
    let password = match std::env::var("PANAL_ADMIN_PASSWORD") {
        Ok(p) if p.len() >= 8 => p,
        Ok(_) => return Err(Error::Fatal("PANAL_ADMIN_PASSWORD must be at least 8 characters".into())),
        Err(_) => identity::random_hex(12),
    };
    let identity = NodeIdentity {
        node_id: 1,
        name: node.name.clone(),
        cluster_id: config.cluster_id.clone(),
        cluster_secret: config.cluster_secret.clone(),
        pending_join: None,
    };
    let replica = open_replica(args, &identity, node).await?;
    replica.initialize().await.map_err(|e| Error::Fatal(format!("cannot initialise Raft: {e}")))?;
    replica.wait_for_leader(Instant::now() + Duration::from_secs(30)).await?;
    let hash = panal_actors::auth::hash_password(&password)?;
    let command = Command::Cluster(ClusterCommand::Init {
        config: config.clone(),
        jwt_key: identity::random_hex(32),
        admin_password_hash: hash,
    });
    let out = replica.write(&command, None, Duration::from_secs(30)).await?;
    out.response?;
    // Written last: a data dir with node.json is a complete node.
    identity::save(&args.data_dir, &identity)?;
    Ok((identity, replica, config, password))
}

fn print_init_banner(config: &ClusterConfig, password: &str, node: &NodeInfo) {
    let from_env = std::env::var("PANAL_ADMIN_PASSWORD").is_ok();
    println!("Cluster {} initialised; this node ({}) is its first manager.", config.cluster_id, node.name);
    if from_env {
        println!("Admin user: admin (password from PANAL_ADMIN_PASSWORD)");
    } else {
        println!("Admin user: admin   password: {password}   (shown once)");
    }
    println!("Join a manager: panal start --join {} --token {}", node.peer_addr, config.token(JoinRole::Manager));
    println!("Join a worker:  panal start --join {} --token {}", node.peer_addr, config.token(JoinRole::Worker));
}

async fn request_admission(join_addr: &str, token: &JoinToken, node: &NodeInfo) -> Result<JoinAdmission> {
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| Error::Fatal(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http
            .post(format!("http://{join_addr}/join"))
            .json(&JoinRequest { token: token.to_string(), node: node.clone() })
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                return r
                    .json()
                    .await
                    .map_err(|e| Error::Fatal(format!("{join_addr} sent an unreadable admission: {e}")));
            }
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline => {}
            Ok(r) => {
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let message = body["error"]["message"].as_str().unwrap_or("no details").to_string();
                return Err(Error::Fatal(format!("{join_addr} refused the join ({status}): {message}")));
            }
            Err(e) if Instant::now() < deadline && e.is_connect() => {}
            Err(e) => return Err(Error::Fatal(format!("cannot reach {join_addr} to join: {e}"))),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks the cluster to add this node, retrying until it is a member (the leader may be
/// changing, or the node may have crashed between admission and activation).
async fn activate_until_done(replica: &Replica, pending: &PendingJoin, node_id: u64, node: NodeInfo) {
    let req = ActivateRequest { node_id, node, voter: pending.voter };
    let mut pause = Duration::from_millis(200);
    loop {
        if replica
            .members()
            .iter()
            .any(|(id, _, role)| *id == node_id && (!pending.voter || *role == panal_raft::MemberRole::Manager))
        {
            tracing::info!("joined the cluster");
            return;
        }
        match replica
            .peer_client()
            .call_json::<_, serde_json::Value>(&pending.via, "/join/activate", &req, Duration::from_secs(300))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, via = %pending.via, "join activation failed; retrying")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Sets `caught_up` once a leader is known and this node has applied the commit index the
/// leader reported (a read index) after start-up.
async fn track_readiness(replica: Replica, caught_up: Arc<AtomicBool>) {
    loop {
        if let Ok(index) = replica.read_index(Duration::from_secs(2)).await {
            if replica.wait_applied(index, Duration::from_secs(30)).await.is_ok() {
                caught_up.store(true, Ordering::Release);
                tracing::info!(index, "caught up with the leader");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
