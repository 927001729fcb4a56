//! `ferrite-fleetd`: reads fleet's configuration, then runs this machine's
//! agent, engine and API with systemd as the unit manager. SIGHUP reloads
//! the configuration, as fleet's daemon does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferrite_fleet::agent::systemd::SystemdUnits;
use ferrite_fleet::fleetd::{self, ApiListener, Stop};
use tokio::signal::unix::{signal, SignalKind};

/// fleet's daemon: places units across the cluster and runs them here.
#[derive(Debug, Parser)]
#[command(name = "fleetd", version)]
struct Args {
    /// Path to the configuration file (default /etc/fleet/fleet.conf, if present).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Serve the API on this unix socket (unless systemd passes sockets).
    #[arg(long, env = "FLEET_API_SOCKET", default_value = "/var/run/fleet.sock")]
    api_socket: PathBuf,
    /// Also serve the API on this TCP address (fleet's tests use port 54728).
    #[arg(long, env = "FLEET_API_TCP")]
    api_tcp: Option<std::net::SocketAddr>,
    /// Where this machine's id is.
    #[arg(long, default_value = "/etc/machine-id")]
    machine_id_file: PathBuf,
}

/// The API's listeners: `--api-socket` and `--api-tcp`.
async fn bind(args: &Args) -> anyhow::Result<Vec<ApiListener>> {
    let _ = std::fs::remove_file(&args.api_socket);
    if let Some(parent) = args.api_socket.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut listeners = vec![ApiListener::Unix(
        tokio::net::UnixListener::bind(&args.api_socket)
            .with_context(|| format!("cannot listen on {}", args.api_socket.display()))?,
    )];
    if let Some(addr) = args.api_tcp {
        listeners.push(ApiListener::Tcp(
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?,
        ));
    }
    Ok(listeners)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let (hangup, terminate) = (signal(SignalKind::hangup()), signal(SignalKind::terminate()));
    let (mut hangup, mut terminate) =
        (hangup.context("cannot handle SIGHUP")?, terminate.context("cannot handle SIGTERM")?);
    let (signals_tx, signals) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                _ = hangup.recv() => Stop::Reload,
                _ = terminate.recv() => Stop::Shutdown,
                _ = tokio::signal::ctrl_c() => Stop::Shutdown,
            };
            tracing::info!(?why, "signal received");
            if signals_tx.send(Some(why)).is_err() || why == Stop::Shutdown {
                return;
            }
        }
    });
    let config_path = args.config.clone();
    let load = || {
        let env = std::env::vars().filter(|(k, _)| k.starts_with("FLEET_")).collect();
        fleetd::load_config(config_path.as_deref(), &env, &args.machine_id_file)
    };
    // A configuration that does not load stops the start before anything binds.
    load()?;
    let listeners = match fleetd::activated_listeners()? {
        Some(passed) => {
            tracing::info!(count = passed.len(), "serving the API on the sockets systemd passed");
            passed
        }
        None => bind(&args).await?,
    };
    let systemd = ferrite_systemd::Systemd::system().await?;
    let units =
        |config: &ferrite_fleet::config::Config| Ok(SystemdUnits::new(systemd.clone(), &config.units_directory)?);
    let ready = || {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    };
    fleetd::serve(load, listeners, units, ready, signals).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("fleetd", serve(args))
}
