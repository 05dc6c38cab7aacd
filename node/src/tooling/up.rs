//! `panal up`: a local cluster of node processes of this same binary on 127.0.0.1 (through
//! the [launcher](crate::tooling::launcher)), supervised until Ctrl-C: a node that exits
//! by itself is reaped, reported and restarted with backoff.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::tooling::cli::UpArgs;
use crate::tooling::client::Client;
use crate::tooling::launcher::{LaunchConfig, LocalCluster};

/// First restart delay; doubled per crash in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A node up this long has recovered: its next crash starts the backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often the status line is printed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Restart bookkeeping of one node.
#[derive(Debug, Clone, Default)]
struct Supervision {
    /// Crashes in a row (reset once the node stays up [`STABLE_AFTER`]).
    crashes: u32,
    started: Option<Instant>,
    /// When the node is due to be started again.
    restart_at: Option<Instant>,
}

impl Supervision {
    /// Records an exit at `now`; returns the delay before the restart.
    fn exited(&mut self, now: Instant) -> Duration {
        if self.started.is_some_and(|s| now.duration_since(s) >= STABLE_AFTER) {
            self.crashes = 0;
        }
        let delay = FIRST_BACKOFF.saturating_mul(1 << self.crashes.min(5)).min(MAX_BACKOFF);
        self.crashes += 1;
        self.started = None;
        self.restart_at = Some(now + delay);
        delay
    }
}

/// The exact command to run this binary (absolute path, quoted if needed), for the banner.
fn exe_command(exe: &Path) -> String {
    shell_quote(&exe.display().to_string())
}

fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub async fn run(args: UpArgs) -> Result<()> {
    let mut config = LaunchConfig::base_port(&args.dir, args.base_port)?;
    config.node_args = args.node_args.clone();
    config.password = std::env::var("PANAL_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let dir = std::path::absolute(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let mut cluster = LocalCluster::up(config, args.nodes as usize, args.workers as usize).await?;
    let client = cluster.admin_client().await?;
    print_banner(&args, &dir, &cluster, &client).await?;

    let mut supervision =
        vec![Supervision { started: Some(Instant::now()), ..Default::default() }; cluster.nodes.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut next_status = Instant::now() + STATUS_EVERY;
    // SIGTERM too: a signal ends this process without running destructors, so the nodes
    // must be stopped here or they would outlive it.
    let stop = crate::server::start::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let now = Instant::now();
                for (i, status) in cluster.reap() {
                    if status.success() {
                        // Stopped on purpose (SIGTERM): left down until started by hand.
                        println!("{} stopped ({status}); it stays down. Start it again by hand with:\n  {}",
                            cluster.nodes[i].name, start_command(&cluster, i));
                        continue;
                    }
                    let delay = supervision[i].exited(now);
                    println!("{} exited ({status}); restarting it in {}s (crash {} in a row; log: {})",
                        cluster.nodes[i].name, delay.as_secs(), supervision[i].crashes, cluster.nodes[i].log.display());
                }
                for (i, s) in supervision.iter_mut().enumerate() {
                    if s.restart_at.is_some_and(|t| now >= t) {
                        s.restart_at = None;
                        match cluster.restart(i) {
                            Ok(()) => {
                                s.started = Some(now);
                                println!("restarted {} (pid {})", cluster.nodes[i].name, cluster.nodes[i].pid().unwrap_or(0));
                            }
                            Err(e) => {
                                let delay = s.exited(now);
                                println!("cannot restart {}: {e}; trying again in {}s", cluster.nodes[i].name, delay.as_secs());
                            }
                        }
                    }
                }
                if now >= next_status {
                    next_status = now + STATUS_EVERY;
                    println!("status: {}", status_line(&cluster, &client, &supervision).await);
                }
            }
        }
    }
    println!("stopping…");
    cluster.stop().await;
    Ok(())
}

/// The shell command that starts node `i` again from its data dir (not supervised).
fn start_command(cluster: &LocalCluster, i: usize) -> String {
    let args: Vec<String> = cluster.arguments(i, &["start"], &[]).iter().map(|a| shell_quote(a)).collect();
    format!(
        "{} {} >> {} 2>&1 &",
        exe_command(&cluster.config.exe),
        args.join(" "),
        shell_quote(&cluster.nodes[i].log.display().to_string())
    )
}

/// One entry per node: its Raft state and applied index as the cluster reports it, or why
/// it is not there (process down and when it restarts, or unreachable).
async fn status_line(cluster: &LocalCluster, client: &Client, supervision: &[Supervision]) -> String {
    let rows = client.cluster_nodes().await.unwrap_or_default();
    let now = Instant::now();
    let entries: Vec<String> = cluster
        .nodes
        .iter()
        .zip(supervision)
        .map(|(node, s)| {
            let row = rows.iter().find(|r| r.name == node.name);
            if !node.is_running() {
                if let Some(r) = row.filter(|r| r.reachable) {
                    return format!("{}:{}(not supervised)", r.name, r.state.as_deref().unwrap_or("?"));
                }
                if s.restart_at.is_none() {
                    return format!("{}:STOPPED", node.name);
                }
                let when = s.restart_at.map(|t| t.saturating_duration_since(now).as_secs()).unwrap_or(0);
                return format!("{}:DOWN(restart in {when}s)", node.name);
            }
            match row {
                Some(r) if r.reachable => format!(
                    "{}:{}@{}",
                    r.name,
                    r.state.as_deref().unwrap_or("?"),
                    r.applied_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
                ),
                Some(r) => format!("{}:unreachable", r.name),
                None if rows.is_empty() => format!("{}:no-answer", node.name),
                None => format!("{}:not-a-member", node.name),
            }
        })
        .collect();
    entries.join("  ")
}

async fn print_banner(args: &UpArgs, dir: &Path, cluster: &LocalCluster, client: &Client) -> Result<()> {
    let panal = exe_command(&cluster.config.exe);
    let up_dir = shell_quote(&dir.display().to_string());
    println!("Panal cluster up: {} managers, {} workers (data in {})", args.nodes, args.workers, dir.display());
    for n in &cluster.nodes {
        println!("  {:<8} {}   (log: {})", n.name, n.api_url, n.log.display());
    }
    println!("Admin user: admin   password: {}   (stored in {}/admin-password)", cluster.password, dir.display());
    let tokens = client.join_tokens().await?;
    println!("Manager token: {}", tokens.manager);
    println!("Worker token:  {}", tokens.worker);
    let url = &cluster.nodes[0].api_url;
    let other = cluster.nodes.last().map(|n| n.api_url.as_str()).unwrap_or(url);
    let login = |user: &str, password: &str| {
        format!("curl -s {url}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"username\":\"{user}\",\"password\":\"{password}\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/'")
    };
    if args.demo {
        let loaded = crate::tooling::demo::load(&cluster.client()?).await?;
        if loaded.fresh {
            println!("Demo data loaded: {} books, {} meter readings, a battery CSV.", loaded.books, loaded.readings);
        } else {
            println!("Demo data already present ({} books).", loaded.books);
        }
        for (user, password, what) in crate::tooling::demo::USERS {
            println!("  user {user:<6} password {password:<16} {what}");
        }
        println!("Web console: {url}/ui/ (the bookshop for any user; sign in as carol for the energy pages and the battery chart, as admin for the cluster)");
        println!("Try:");
        println!("  curl -s '{other}/api/v1/books?q=le+guin'");
        println!("  TOKEN=$({})", login("carol", crate::tooling::demo::USERS[2].1));
        println!(
            "  curl -s '{other}/api/v1/devices/{}/readings?bucket=day' -H \"authorization: Bearer $TOKEN\"",
            loaded.meter_id
        );
        println!(
            "  curl -s '{url}/api/v1/devices/{}/forecast?horizon=24h' -H \"authorization: Bearer $TOKEN\"",
            loaded.meter_id
        );
        // A browser cannot send the bearer token: the console (cookie session) shows the
        // chart; from a shell, fetch it with the token.
        println!(
            "  curl -s '{url}/api/v1/devices/{}/battery/chart.svg' -H \"authorization: Bearer $TOKEN\" -o battery.svg   # or see it in the web console",
            loaded.battery_id
        );
        println!("  curl -s {url}/openapi.json");
    } else {
        println!("Try:");
        println!("  TOKEN=$({})", login("admin", &cluster.password));
        println!("  curl -s -X PUT {url}/api/v1/cluster/kv/hello -H \"authorization: Bearer $TOKEN\" -d world");
        println!("  curl -s {other}/api/v1/cluster/kv/hello -H \"authorization: Bearer $TOKEN\"");
    }
    // The binary's own path: `panal` is not on PATH after `cargo run`. The admin commands
    // find the password and the nodes in the up directory.
    println!("  {panal} node ls --up-dir {up_dir}");
    println!("  {panal} top --up-dir {up_dir}");
    println!(
        "A node that crashes is restarted; `kill <pid>` (SIGTERM) stops one for good (pids: {}).",
        cluster.nodes.iter().map(|n| format!("{}={}", n.name, n.pid().unwrap_or(0))).collect::<Vec<_>>().join(" ")
    );
    println!("Ctrl-C (or SIGTERM) stops every node; `{panal} up --dir {up_dir}` starts the same cluster again.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_crash_and_resets_after_a_stable_run() {
        let t0 = Instant::now();
        let mut s = Supervision { started: Some(t0), ..Default::default() };
        assert_eq!(s.exited(t0), Duration::from_secs(1));
        assert_eq!(s.exited(t0), Duration::from_secs(2));
        assert_eq!(s.exited(t0), Duration::from_secs(4));
        for _ in 0..10 {
            s.exited(t0);
        }
        assert_eq!(s.exited(t0), MAX_BACKOFF);
        s.started = Some(t0);
        assert_eq!(s.exited(t0 + STABLE_AFTER), FIRST_BACKOFF);
    }

    #[test]
    fn banner_paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/home/me/panal/target/release/panal"), "/home/me/panal/target/release/panal");
        assert_eq!(shell_quote("/tmp/my dir/it's"), r"'/tmp/my dir/it'\''s'");
    }
}
