//! `panal start`: brings a node up — creating a cluster, joining one, or recovering from
//! the data directory — then serves the api and peer ports until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use panal_actors::cluster::{self, ClusterConfig, JoinRole, JoinToken};
use panal_actors::{PanalApp, Replica};
use panal_raft::{NodeInfo, ReplicaConfig};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::server::api::{self, AppState};
use crate::server::bootstrap;
use crate::server::config::{PeerTls, StartArgs};
use crate::server::identity::{self, NodeIdentity, PendingJoin};
use crate::server::peer::{self, ActivateRequest, JoinAdmission, JoinRequest};
use crate::server::tls;

/// Log filter without `PANAL_LOG`. openraft logs every failed replication attempt to an
/// unreachable peer (about ten WARN/ERROR lines a second per peer); the replica logs one
/// WARN "node X unreachable since T" and one INFO when it is back instead.
pub const DEFAULT_LOG: &str =
    "info,openraft=error,openraft::replication=off,openraft::engine::handler::replication_handler=off";

pub async fn run(args: StartArgs) -> Result<()> {
    run_seeded(args, None).await
}

/// `panal restore FILE --init …`: like `start --init`, on top of the state in `backup`.
pub async fn restore(backup: PathBuf, args: StartArgs) -> Result<()> {
    if !args.init {
        return Err(Error::Fatal(
            "restore creates a new cluster from the backup: pass --init (other nodes then join it as usual)".into(),
        ));
    }
    if !backup.is_file() {
        return Err(Error::Fatal(format!("{} is not a file", backup.display())));
    }
    run_seeded(args, Some(backup)).await
}

async fn run_seeded(args: StartArgs, seed: Option<PathBuf>) -> Result<()> {
    let data_dir = args.data_dir.clone();
    identity::check_writable(&data_dir)?;
    protect_data_dir(&data_dir)?;
    let existing = identity::load(&data_dir)?;
    if let Some(id) = &existing {
        if let Some(reason) = identity::removal(&data_dir) {
            return Err(Error::Fatal(format!(
                "{} holds node {} ({}), which was removed from cluster {} ({reason}); it cannot serve again. Wipe the directory and join anew.",
                data_dir.display(), id.node_id, id.name, id.cluster_id
            )));
        }
        let created_with = id.peer_tls.unwrap_or(PeerTls::Off);
        if created_with != args.peer_tls {
            return Err(Error::Fatal(format!(
                "node {} was created with --peer-tls {}, and every member must agree: start it with --peer-tls {}",
                id.node_id,
                created_with.as_str(),
                created_with.as_str()
            )));
        }
        if args.init || args.join.is_some() {
            return Err(Error::Fatal(format!(
                "{} already holds node {} ({}) of cluster {}; --init and --join are for the first start only. Start without them to restart this node.",
                data_dir.display(), id.node_id, id.name, id.cluster_id
            )));
        }
    } else {
        if !args.init && args.join.is_none() && args.bootstrap_expect.is_none() {
            return Err(Error::Fatal(format!(
                "{} holds no node yet: pass --init to create a cluster, --join ADDR --token TOKEN to join one, or --bootstrap-expect N --peers … --cluster-token-file FILE",
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
    let node_tls = match args.peer_tls {
        PeerTls::On => Some(tls::NodeTls::open(tls::TlsDir::new(&data_dir), Duration::from_secs(args.cert_ttl))?),
        PeerTls::Off => None,
    };
    let token: Option<JoinToken> = match join_token_text(&args)? {
        Some(t) if args.join.is_some() => Some(t.parse().map_err(|e: String| Error::Fatal(format!("--token: {e}")))?),
        _ => None,
    };
    if args.join.is_some() && token.is_none() {
        return Err(Error::Fatal("--join needs the join token: --token-file FILE, PANAL_TOKEN or --token".into()));
    }
    configure_auth(&args);
    let open_files = crate::server::listen::raise_open_file_limit();
    let http_limits = crate::server::listen::HttpLimits::from_flags(&args.limits, open_files);
    let bootstrap = match (args.bootstrap_expect, &args.cluster_token_file) {
        (Some(0), _) => return Err(Error::Fatal("--bootstrap-expect must be at least 1".into())),
        (Some(expect), Some(file)) => Some((expect, bootstrap::SharedSecrets::from_file(file)?)),
        _ => None,
    };

    // Listen before writing anything, so a port in use fails cleanly.
    let api_listener = bind(&args.api_addr, "api").await?;
    let peer_listener = bind(&args.peer_addr, "peer").await?;
    let mesh_listener = bind(&args.mesh_addr, "mesh").await?;
    let name = args.name.clone().or_else(|| existing.as_ref().map(|i| i.name.clone())).unwrap_or_else(hostname);
    let node = NodeInfo {
        name: name.clone(),
        api_addr: advertised(&args, &api_listener.local_addr()?),
        peer_addr: advertised(&args, &peer_listener.local_addr()?),
        mesh_addr: advertised_str(&args, &args.mesh_addr),
    };
    let api_host = node.api_addr.rsplit_once(':').map_or(node.api_addr.as_str(), |(host, _)| host);
    let api_tls = crate::server::api_tls::ApiTlsPlan::from_flags(&args.api_tls, api_listener.local_addr()?, api_host)?;

    if let (Some(tls), Some((_, secrets)), None) = (&node_tls, &bootstrap, &existing) {
        // Hellos travel over mutual TLS from the start: a certificate from the derived CA
        // for now (named node 0, a member of nothing), the node's own once it is a member.
        let (key, csr) = tls::ca::node_request(&tls::hosts_of(&node, &[]))?;
        let cert = secrets.ca.issue(&csr, 0, tls.ttl())?;
        tls.install(&cert, &key, &secrets.ca.cert_pem)?;
    }

    // The peer port serves from now on: bootstrap hellos at once, everything else once the
    // replica is open (503 until then, which peers retry).
    let hello = bootstrap::HelloState::new(name.clone());
    let replica_routes: Arc<OnceLock<axum::Router>> = Default::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hello_routes = bootstrap.as_ref().map(|(_, s)| bootstrap::hello_router(hello.clone(), s.hello_key.clone()));
    let peer_server = tokio::spawn(crate::server::listen::serve(
        peer_listener,
        late_router(hello_routes, replica_routes.clone()),
        http_limits,
        node_tls.as_ref().map(|t| t.peer_server()),
        stop_rx.clone(),
        "peer",
    ));

    let (identity, replica, fresh_init) = match existing {
        Some(identity) => {
            let replica = open_replica(&args, &identity, node.clone(), node_tls.as_ref()).await?;
            refuse_taken_address(&replica, &identity, &node).await?;
            tracing::info!(node_id = identity.node_id, name = %identity.name, cluster = %identity.cluster_id, "restarting from the data dir");
            (identity, replica, None)
        }
        None if args.init => {
            let (identity, replica, config, password) =
                init(&args, node.clone(), None, seed.as_deref(), node_tls.as_ref()).await?;
            (identity, replica, Some((config, password)))
        }
        None if bootstrap.is_some() => {
            let (expect, secrets) = bootstrap.as_ref().expect("checked");
            let decision = tokio::select! {
                d = bootstrap::await_decision(secrets, &args.peers, *expect, &hello, node_tls.as_ref().map(|t| t.client())) => d?,
                _ = shutdown_signal() => return Ok(()),
            };
            let (decision, role) = decision;
            match decision {
                bootstrap::Decision::Init => {
                    let (identity, replica, config, password) = init(
                        &args,
                        node.clone(),
                        Some((secrets.config.clone(), secrets.ca.clone())),
                        None,
                        node_tls.as_ref(),
                    )
                    .await?;
                    (identity, replica, Some((config, password)))
                }
                bootstrap::Decision::Join { via } => {
                    let (identity, replica) =
                        join(&args, via, &secrets.token(role), node.clone(), Some(*expect), node_tls.as_ref()).await?;
                    (identity, replica, None)
                }
            }
        }
        None => {
            let join_addr = bootstrap::with_default_port(args.join.as_deref().unwrap_or_default());
            let token = token.expect("clap requires --token with --join");
            let (identity, replica) = join(&args, join_addr, &token, node.clone(), None, node_tls.as_ref()).await?;
            (identity, replica, None)
        }
    };
    hello.set_member_of(&identity.cluster_id);
    let links = crate::server::link::LinkServer::new(replica.clone());
    let _ = replica_routes.set(peer::router(replica.clone(), node_tls.clone(), &links));
    if let Some(tls) = &node_tls {
        tokio::spawn(tls::upkeep(replica.clone(), tls.clone()));
    }

    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .map_err(|e| Error::Fatal(format!("metrics buckets: {e}")))?
        .install_recorder()
        .map_err(|e| Error::Fatal(format!("cannot install the metrics recorder: {e}")))?;
    crate::server::api::describe_metrics();
    panal_actors::metrics::register_zero_series();
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let services = panal_actors::services::ServiceContext::new(name.clone(), replica.clone());
    links.serve_with(services.clone());
    let pool_size =
        args.pool_size.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let supervisor = panal_actors::services::start_services(services.clone(), pool_size, Default::default())
        .await
        .map_err(|e| Error::Fatal(format!("cannot start the services: {e}")))?;
    crate::server::reconciler::start(crate::server::reconciler::Orchestrator {
        replica: replica.clone(),
        supervisor,
        services: services.clone(),
        pool_size,
        node_down_after: Duration::from_millis(args.node_down_after_ms),
    });
    panal_actors::metrics::collector::start(
        services.hub.clone(),
        args.proc_root.clone(),
        Duration::from_millis(args.metrics_interval_ms),
    )
    .await
    .map_err(|e| Error::Fatal(format!("cannot start the metrics collector: {e}")))?;
    let mesh_tls =
        node_tls.as_ref().map(|t| crate::server::mesh::MeshTls { server: t.mesh_server(), client: t.client() });
    let caught_up = Arc::new(AtomicBool::new(false));
    let joining = identity.pending_join.is_some();
    crate::server::mesh::start(
        mesh_listener,
        mesh_limits(&args),
        &identity.cluster_secret,
        replica.clone(),
        mesh_tls,
        joining.then(|| caught_up.clone()),
    )
    .await?;
    let state = AppState::new(api::ApiContext {
        replica: replica.clone(),
        node_name: name.clone().into(),
        caught_up: caught_up.clone(),
        joining,
        key_barrier: Default::default(),
        jwt_keys: Default::default(),
        tokens: Arc::new(panal_actors::services::answers::AtIndex::new("panal_token_cache_total")),
        gateway: Arc::new(crate::server::gateway::Gateway::new(
            args.balance,
            Duration::from_millis(args.call_timeout_ms),
            services.clone(),
        )),
        services,
        chaos: args.chaos,
        metrics,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Fatal(e.to_string()))?,
        tls: node_tls.clone(),
    });
    let shutdown = shutdown_signal();
    let mut api_router = api::cors::wrap(api::router(state), &args.cors_origins);
    // The `auto` certificate's issuer is the cluster CA.
    let issuer = node_tls.clone().map(|tls| {
        Arc::new(tls::ApiIssuer { replica: replica.clone(), tls })
            as Arc<dyn crate::server::api_tls::ApiCertificateIssuer>
    });
    let api_tls = api_tls.start(issuer).await?;
    if api_tls.is_some() {
        api_router = api_router.layer(axum::Extension(crate::server::api_tls::ServedOverTls));
    }
    let api_server =
        crate::server::listen::serve(api_listener, api_router, http_limits, api_tls, stop_rx.clone(), "api");

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
    tokio::spawn(remember_removal(replica.clone(), data_dir.clone()));
    tokio::spawn(panal_actors::catalog::drive_time(replica.clone()));
    tokio::spawn(crate::server::memory::return_freed_memory());
    if let Some((config, password)) = fresh_init {
        print_init_banner(&config, &password, &node, &data_dir);
    }
    tracing::info!(node_id = identity.node_id, name = %name, api = %node.api_addr, peer = %node.peer_addr, "node is serving");

    let servers = tokio::spawn(async move { tokio::join!(api_server, peer_server) });
    tokio::select! {
        _ = shutdown => {}
        _ = launcher_gone() => tracing::warn!("the panal up that started this node is gone; stopping"),
    }
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

/// The join token: --token-file, else PANAL_TOKEN or --token (visible in `ps`).
fn join_token_text(args: &StartArgs) -> Result<Option<String>> {
    match &args.token_file {
        Some(file) => std::fs::read_to_string(file)
            .map(|text| Some(text.lines().next().unwrap_or_default().trim().to_string()))
            .map_err(|e| Error::Fatal(format!("cannot read --token-file {}: {e}", file.display()))),
        None => Ok(args.token.clone()),
    }
}

/// The auth limits of this process, from the flags.
fn configure_auth(args: &StartArgs) {
    let limits = &args.limits;
    let mut hashing = panal_actors::auth::password::HashPoolConfig::default();
    if let Some(threads) = limits.hash_threads {
        hashing.threads = threads.max(1);
    }
    hashing.queue = limits.hash_queue.max(1);
    let login_throttle = panal_actors::auth::throttle::ThrottleConfig {
        free_failures: limits.login_free_failures,
        max: Duration::from_secs(limits.login_max_lockout),
        ..Default::default()
    };
    panal_actors::auth::configure(panal_actors::auth::AuthConfig {
        token_ttl_secs: limits.token_ttl,
        hashing,
        login_throttle,
    });
}

fn mesh_limits(args: &StartArgs) -> crate::server::mesh::MeshLimits {
    crate::server::mesh::MeshLimits {
        max_unauthenticated: usize::try_from(args.limits.mesh_max_unauthenticated).unwrap_or(usize::MAX),
        max_handshake_frame: args.limits.mesh_max_handshake_frame,
        handshake_timeout: Duration::from_secs(args.limits.header_timeout),
    }
}

/// The data directory holds the signing keys, the cluster secret and password hashes:
/// only this user may read it. New files get mode 0600 (the umask), and a directory from
/// an older version is tightened: the directory and its subdirectories 0700, every file 0600.
fn protect_data_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let fail = |e: std::io::Error| Error::Fatal(format!("cannot protect {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(fail)?;
        if meta.is_dir() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
            for entry in std::fs::read_dir(&path).map_err(fail)? {
                pending.push(entry.map_err(fail)?.path());
            }
        } else if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    Ok(())
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

/// The peer port's router: `early` routes (bootstrap hello) at once, the replica's routes
/// once they are set, 503 before.
fn late_router(early: Option<axum::Router>, late: Arc<OnceLock<axum::Router>>) -> axum::Router {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let fallback = move |req: axum::extract::Request| {
        let late = late.clone();
        async move {
            match late.get() {
                Some(routes) => routes.clone().oneshot(req).await.into_response(),
                None => crate::error::error_response("starting", "this node is still starting"),
            }
        }
    };
    early.unwrap_or_default().fallback(fallback)
}

/// Joins through `join_addr` with `token`: admission (node id and cluster secret, saved
/// at once so a crash resumes the join), then the replica; activation runs in the
/// background once the node serves.
async fn join(
    args: &StartArgs,
    join_addr: String,
    token: &JoinToken,
    node: NodeInfo,
    max_managers: Option<usize>,
    node_tls: Option<&tls::NodeTls>,
) -> Result<(NodeIdentity, Replica)> {
    let request = match node_tls {
        Some(_) => {
            let fingerprint = token.ca_fingerprint.as_deref().ok_or_else(|| {
                Error::Fatal(
                    "this join token carries no CA fingerprint (PANAL-1-…): the cluster runs with --peer-tls off, so start this node with --peer-tls off too, or get a current token with `panal token show`".into(),
                )
            })?;
            let (key, csr) = tls::ca::node_request(&tls::hosts_of(&node, &[]))?;
            Some((tls::config::join_client(fingerprint)?, key, csr))
        }
        None => None,
    };
    let admission = request_admission(
        &join_addr,
        token,
        &node,
        request.as_ref().map(|(config, _, csr)| (config, csr.as_str())),
        Duration::from_secs(args.join_timeout),
    )
    .await?;
    match (node_tls, request, &admission.certificate) {
        (Some(tls), Some((_, key, _)), Some(issued)) => tls.install_issued(issued, &key)?,
        (Some(_), _, None) => {
            return Err(Error::Fatal(format!(
                "{join_addr} admitted this node without a certificate (peer TLS off there?)"
            )))
        }
        _ => {}
    }
    let identity = NodeIdentity {
        node_id: admission.node_id,
        name: node.name.clone(),
        cluster_id: admission.cluster_id.clone(),
        cluster_secret: admission.cluster_secret.clone(),
        pending_join: Some(PendingJoin { via: join_addr, voter: admission.role == JoinRole::Manager, max_managers }),
        peer_tls: Some(args.peer_tls),
    };
    identity::save(&args.data_dir, &identity)?;
    let replica = open_replica(args, &identity, node, node_tls).await?;
    Ok((identity, replica))
}

fn replica_config(
    args: &StartArgs,
    identity: &NodeIdentity,
    node: NodeInfo,
    node_tls: Option<&tls::NodeTls>,
) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::new(identity.node_id, node, args.data_dir.clone(), identity.cluster_secret.clone());
    cfg.heartbeat_ms = args.heartbeat_ms;
    cfg.election_timeout_ms = args.election_timeout_ms;
    cfg.snapshot_every = args.snapshot_every;
    cfg.keep_after_snapshot = args.keep_after_snapshot;
    cfg.cluster_id = identity.cluster_id.clone();
    cfg.max_wait = replica_budget(Duration::from_millis(args.call_timeout_ms));
    cfg.peer_tls = node_tls.map(|t| t.client());
    cfg
}

/// The longest a request may wait inside the replica: a little less than the gateway's
/// call timeout, so that the replica's own answer (`no_leader`, `replica_lagging`) reaches
/// the client instead of a `gateway_timeout`.
fn replica_budget(call_timeout: Duration) -> Duration {
    call_timeout.saturating_sub((call_timeout / 4).min(Duration::from_millis(500))).max(Duration::from_millis(50))
}

/// Refuses to restart a node on an address the membership gives another member (a data
/// dir started with another node's flags would take that node's traffic).
async fn refuse_taken_address(replica: &Replica, identity: &NodeIdentity, node: &NodeInfo) -> Result<()> {
    // Raft publishes the membership it recovered a moment after it opened.
    let _ = replica
        .raft()
        .wait(Some(Duration::from_secs(2)))
        .metrics(|m| m.membership_config.membership().nodes().next().is_some(), "recovered membership")
        .await;
    let Some((id, name, what, addr)) = identity::address_owner(identity.node_id, node, &replica.members()) else {
        return Ok(());
    };
    replica.shutdown().await;
    Err(Error::Fatal(format!(
        "this data dir holds node {} ({}), but its {what} address {addr} belongs to member {id} ({name}): start it with its own addresses, or remove node {id} first",
        identity.node_id, identity.name
    )))
}

/// Records a removal in the data dir once the replica learns of it.
async fn remember_removal(replica: Replica, data_dir: PathBuf) {
    let mut removed = replica.removed_watch();
    if removed.wait_for(|r| *r).await.is_ok() {
        if let Err(e) = identity::record_removal(&data_dir, "removed from the membership") {
            tracing::error!(error = %e, "could not record the removal");
        }
    }
}

async fn open_replica(
    args: &StartArgs,
    identity: &NodeIdentity,
    node: NodeInfo,
    node_tls: Option<&tls::NodeTls>,
) -> Result<Replica> {
    if args.heartbeat_ms == 0 || args.election_timeout_ms <= args.heartbeat_ms {
        return Err(Error::Fatal(
            "--election-timeout-ms must be greater than --heartbeat-ms (and both above 0)".into(),
        ));
    }
    Replica::open(replica_config(args, identity, node, node_tls), PanalApp)
        .await
        .map_err(|e| Error::Fatal(format!("cannot open the replica: {e}")))
}

/// Creates the cluster: identity, secrets, signing key and admin account, replicated by
/// this node's own one-member Raft group.
/// `config` is the identity derived from the cluster token under orchestrated bootstrap,
/// else a random one; `seed` a backup whose data the new cluster starts with.
async fn init(
    args: &StartArgs,
    node: NodeInfo,
    derived: Option<(ClusterConfig, tls::CaMaterial)>,
    seed: Option<&std::path::Path>,
    node_tls: Option<&tls::NodeTls>,
) -> Result<(NodeIdentity, Replica, ClusterConfig, String)> {
    let (mut config, derived_ca) = match derived {
        Some((config, ca)) => (config, Some(ca)),
        None => {
            let config = ClusterConfig {
                cluster_id: identity::random_hex(8),
                cluster_secret: identity::random_hex(32),
                manager_secret: identity::random_hex(16),
                worker_secret: identity::random_hex(16),
                ca_fingerprint: None,
            };
            (config, None)
        }
    };
    // The CA: its key stays on this node (and later managers), its certificate is
    // replicated, its fingerprint goes into the join tokens.
    let ca_bundle = match node_tls {
        Some(tls) => {
            let ca = match derived_ca {
                Some(ca) => ca,
                None => tls::CaMaterial::generate(&config.cluster_id)?,
            };
            let (key, csr) = tls::ca::node_request(&tls::hosts_of(&node, &[]))?;
            let cert = ca.issue(&csr, 1, tls.ttl())?;
            tls.install(&cert, &key, &ca.cert_pem)?;
            tls.dir().write_ca_key(&ca.key_pem)?;
            config.ca_fingerprint = Some(ca.fingerprint()?);
            Some(ca.cert_pem)
        }
        None => {
            config.ca_fingerprint = None;
            None
        }
    };
    let password =
        match admin_password_from_env()? {
            Some(p) if p.len() >= 8 => p,
            Some(_) => return Err(Error::Fatal(
                "the admin password (PANAL_ADMIN_PASSWORD or PANAL_ADMIN_PASSWORD_FILE) must be at least 8 characters"
                    .into(),
            )),
            None => identity::random_hex(12),
        };
    let identity = NodeIdentity {
        node_id: 1,
        name: node.name.clone(),
        cluster_id: config.cluster_id.clone(),
        cluster_secret: config.cluster_secret.clone(),
        pending_join: None,
        peer_tls: Some(args.peer_tls),
    };
    if let Some(backup) = seed {
        let restored = panal_raft::StateMachine::<PanalApp>::seed_from_backup(backup, &args.data_dir)
            .map_err(|e| Error::Fatal(format!("cannot restore: {e}")))?;
        // Backups carry no secrets; older ones might: drop them either way.
        panal_actors::auth::strip_secrets(&restored)?;
        panal_actors::cluster::forget_identity(&restored)?;
        panal_actors::orchestration::forget_nodes(&restored)?;
        tracing::info!(backup = %backup.display(), "state restored from the backup");
    }
    let replica = open_replica(args, &identity, node, node_tls).await?;
    replica.initialize().await.map_err(|e| Error::Fatal(format!("cannot initialise Raft: {e}")))?;
    replica.wait_for_leader(Instant::now() + Duration::from_secs(30)).await?;
    let hash = panal_actors::auth::hash_password(&password)?;
    let init = cluster::command::Init {
        config: config.clone(),
        jwt_key: identity::random_hex(32),
        admin_password_hash: hash,
        ca_bundle,
    };
    panal_actors::propose(&replica, init, None, Duration::from_secs(30)).await?;
    if seed.is_some() {
        // Joining nodes must receive the restored state, which is in no log entry.
        replica.snapshot_and_purge().await?;
    }
    // Written last: a data dir with node.json is a complete node.
    identity::save(&args.data_dir, &identity)?;
    Ok((identity, replica, config, password))
}

/// The first admin password: PANAL_ADMIN_PASSWORD, else the first line of the file named by
/// PANAL_ADMIN_PASSWORD_FILE (e.g. a Docker secret), else none (a random one is printed).
fn admin_password_from_env() -> Result<Option<String>> {
    if let Ok(p) = std::env::var("PANAL_ADMIN_PASSWORD") {
        return Ok(Some(p));
    }
    match std::env::var_os("PANAL_ADMIN_PASSWORD_FILE") {
        Some(path) => std::fs::read_to_string(&path)
            .map(|text| Some(text.lines().next().unwrap_or_default().trim().to_string()))
            .map_err(|e| {
                Error::Fatal(format!("cannot read PANAL_ADMIN_PASSWORD_FILE {}: {e}", path.to_string_lossy()))
            }),
        None => Ok(None),
    }
}

/// Secrets (a random admin password, the join tokens) are shown on a terminal once and
/// never written into a log file: without a terminal the password goes to a 0600 file in
/// the data directory and the tokens stay behind `panal token show`.
fn print_init_banner(config: &ClusterConfig, password: &str, node: &NodeInfo, data_dir: &std::path::Path) {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let from_env =
        std::env::var_os("PANAL_ADMIN_PASSWORD").is_some() || std::env::var_os("PANAL_ADMIN_PASSWORD_FILE").is_some();
    println!("Cluster {} initialised; this node ({}) is its first manager.", config.cluster_id, node.name);
    if from_env {
        println!("Admin user: admin (password from PANAL_ADMIN_PASSWORD or PANAL_ADMIN_PASSWORD_FILE)");
    } else if terminal {
        println!("Admin user: admin   password: {password}   (shown once)");
    } else {
        // The umask set by `protect_data_dir` makes it 0600.
        let file = data_dir.join("initial-admin-password");
        match std::fs::write(&file, format!("{password}\n")) {
            Ok(()) => println!("Admin user: admin   password: in {} (read it, then delete it)", file.display()),
            Err(e) => tracing::error!(error = %e, file = %file.display(), "cannot write the initial admin password"),
        }
    }
    if terminal {
        println!(
            "Join a manager: panal start --join {} --token-file FILE   (token: {})",
            node.peer_addr,
            config.token(JoinRole::Manager)
        );
        println!(
            "Join a worker:  panal start --join {} --token-file FILE   (token: {})",
            node.peer_addr,
            config.token(JoinRole::Worker)
        );
    } else {
        println!("Join tokens: run `panal token show` (they are not written to logs)");
    }
}

/// How often a join that keeps failing says so.
const JOIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

async fn request_admission(
    join_addr: &str,
    token: &JoinToken,
    node: &NodeInfo,
    tls: Option<(&rustls::ClientConfig, &str)>,
    join_timeout: Duration,
) -> Result<JoinAdmission> {
    panal_raft::install_crypto_provider();
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    let (http, scheme) = match tls {
        Some((config, _)) => (builder.use_preconfigured_tls(config.clone()), "https"),
        None => (builder, "http"),
    };
    let http = http.build().map_err(|e| Error::Fatal(e.to_string()))?;
    let mode = if tls.is_some() { "on" } else { "off" };
    let started = Instant::now();
    let deadline = started + join_timeout;
    let mut next_progress = started + JOIN_PROGRESS_EVERY;
    let mut last_problem = String::new();
    loop {
        if Instant::now() >= next_progress {
            next_progress += JOIN_PROGRESS_EVERY;
            tracing::warn!(
                "still trying to join through {join_addr} ({} s of {} s): {last_problem}",
                started.elapsed().as_secs(),
                join_timeout.as_secs()
            );
        }
        let resp = http
            .post(format!("{scheme}://{join_addr}/join"))
            .json(&JoinRequest {
                token: token.to_string(),
                node: node.clone(),
                csr_pem: tls.map(|(_, csr)| csr.to_string()),
            })
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                return r
                    .json()
                    .await
                    .map_err(|e| Error::Fatal(format!("{join_addr} sent an unreadable admission: {e}")));
            }
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline => {
                last_problem = format!("{join_addr} answered 503 (starting, or electing a leader)");
            }
            Ok(r) => {
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let message = body["error"]["message"].as_str().unwrap_or("no details").to_string();
                return Err(Error::Fatal(format!("{join_addr} refused the join ({status}): {message}")));
            }
            Err(e) if Instant::now() < deadline && (e.is_connect() || e.is_timeout()) => {
                last_problem = format!("cannot reach {join_addr}: {e}");
            }
            Err(e) => {
                use std::error::Error as _;
                let mut cause = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    cause = format!("{cause}: {s}");
                    source = s.source();
                }
                return Err(Error::Fatal(format!(
                    "gave up joining through {join_addr} after {} s (--join-timeout {} s): {cause}. Every member must run with the same --peer-tls (this node: {mode}); with TLS, the member's CA must match the token's fingerprint",
                    started.elapsed().as_secs(),
                    join_timeout.as_secs()
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks the cluster to add this node, retrying until it is a member (the leader may be
/// changing, or the node may have crashed between admission and activation).
async fn activate_until_done(replica: &Replica, pending: &PendingJoin, node_id: u64, node: NodeInfo) {
    let req = ActivateRequest { node_id, node, voter: pending.voter, max_managers: pending.max_managers };
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
            // With a manager limit the leader may have kept this node a worker on purpose.
            Ok(_) if pending.max_managers.is_some() => {
                tracing::info!("joined the cluster");
                return;
            }
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

/// Environment variable naming the pid of the `panal up` that started this node.
pub const LAUNCHER_PID_ENV: &str = "PANAL_LAUNCHER_PID";

/// Resolves once the `panal up` that started this node has exited (never for nodes started
/// otherwise), so that killing the launcher with SIGKILL does not leave its nodes behind.
async fn launcher_gone() {
    let Some(pid) = std::env::var(LAUNCHER_PID_ENV).ok().and_then(|p| p.parse::<u32>().ok()) else {
        return std::future::pending().await;
    };
    // A killed launcher stays a zombie until its parent reaps it: that counts as gone.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(String::from))
            })
            .is_some_and(|state| state != "Z" && state != "X")
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while alive() {
        tick.tick().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_answers_before_the_gateway_gives_up() {
        assert_eq!(replica_budget(Duration::from_secs(5)), Duration::from_millis(4500));
        assert_eq!(replica_budget(Duration::from_millis(1000)), Duration::from_millis(750));
        assert!(replica_budget(Duration::from_millis(10)) >= Duration::from_millis(50), "never zero");
    }
}
