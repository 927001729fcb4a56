//! `ferrite-ambassador`: parses flags, sets up logging, runs the proxy.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// A TCP proxy to the backends listed under a store key, followed live.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The store key listing the backends: a directory of `ip:port` values
    /// (as ferrite-registrator writes them) or one comma-separated value.
    #[arg(env = "FERRITE_AMBASSADOR_KEY")]
    key: String,

    /// Address to accept connections on.
    #[arg(long, env = "FERRITE_AMBASSADOR_LISTEN", default_value = "0.0.0.0:10000")]
    listen: SocketAddr,

    /// Client URLs of the store, comma-separated.
    #[arg(
        long,
        env = "FERRITE_AMBASSADOR_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    etcd_endpoints: Vec<String>,

    /// Milliseconds to wait for one backend to accept before trying the next.
    #[arg(long, env = "FERRITE_AMBASSADOR_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    connect_timeout_ms: u64,

    /// Milliseconds a connection waits for a backend when the store lists
    /// none (a backend moving), before it is closed.
    #[arg(long, env = "FERRITE_AMBASSADOR_BACKEND_WAIT_MS", default_value_t = 3000)]
    backend_wait_ms: u64,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = ferrite_ambassador::Config {
        etcd_endpoints: args.etcd_endpoints,
        key: args.key,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        backend_wait: Duration::from_millis(args.backend_wait_ms),
    };
    let ready = || {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    };
    ferrite_ambassador::run(config, listener, ferrite_daemon::shutdown_signal(), ready).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("ferrite-ambassador", serve(args))
}
