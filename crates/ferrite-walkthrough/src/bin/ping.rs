//! `ferrite-ping`: answers `hello from <hostname>` over HTTP, on every path.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// Answers hello over HTTP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, env = "PING_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    let answer = format!("hello from {hostname}\n");
    let app = axum::Router::new().fallback(move || std::future::ready(answer.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "answering hello");
    axum::serve(listener, app).with_graceful_shutdown(ferrite_daemon::shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("ferrite-ping", serve(args))
}
