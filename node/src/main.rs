//! The `panal` binary: parses the command line and runs the chosen command.

use clap::Parser;
use panal::server::start;
use panal::tooling::{admin, bench, cli, drill, health, service, top, up};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // Every HTTP client and TLS port in the process uses aws-lc (reqwest has no provider
    // of its own).
    panal_raft::install_crypto_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PANAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(start::DEFAULT_LOG));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    panal::server::memory::limit_arenas();
    // SQLite work runs on the blocking pool; a bounded pool keeps memory flat under load
    // (each extra thread costs a stack and a malloc arena) without limiting throughput on
    // small machines.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(16).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, cli::Command::Up(_) | cli::Command::Backup(_)) {
        // They write secrets (admin password, logs, backups): readable by this user only.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Start(args) => start::run(*args).await,
            cli::Command::Up(args) => up::run(args).await,
            cli::Command::Node(cmd) => admin::node(cmd).await,
            cli::Command::Service(cmd) => service::run(cmd).await,
            cli::Command::Token(cmd) => admin::token(cmd).await,
            cli::Command::Ca(cmd) => admin::ca(cmd).await,
            cli::Command::Status(args) => admin::status(args).await,
            cli::Command::Top(args) => {
                top::run(args.admin, std::time::Duration::from_secs(args.every.max(1)), args.once).await
            }
            cli::Command::Backup(args) => admin::backup(args).await,
            cli::Command::Restore(args) => start::restore(args.file, args.start).await,
            cli::Command::Bench(cmd) => bench::run(cmd).await,
            cli::Command::Drill(args) => drill::run(args).await,
            cli::Command::Health(args) => health::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
