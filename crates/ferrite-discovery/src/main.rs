//! `ferrite-discovery`: parses flags, sets up logging, runs the service.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// The cluster discovery service (the discovery.etcd.io protocol).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "FERRITE_DISCOVERY_LISTEN_ADDR", default_value = "127.0.0.1:8087")]
    listen_addr: SocketAddr,

    /// Client URLs of the backing store (ferrite-store or etcd with
    /// --enable-v2), comma-separated.
    #[arg(
        long,
        env = "FERRITE_DISCOVERY_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    etcd_endpoints: Vec<String>,

    /// Base URL announced in token URLs, e.g. https://discovery.example.
    /// Defaults to http://<listen address>.
    #[arg(long, env = "FERRITE_DISCOVERY_HOST")]
    host: Option<String>,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
    let config = ferrite_discovery::Config { etcd_endpoints: args.etcd_endpoints, host: args.host };
    ferrite_discovery::run(config, listener, ferrite_daemon::shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("ferrite-discovery", serve(args))
}
