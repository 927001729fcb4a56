//! `ferrite-fleetd`: reads fleet's configuration, then runs this machine's
//! agent, engine and API with systemd as the unit manager.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferrite_fleet::agent::systemd::SystemdUnits;
use ferrite_fleet::config::{self, DEFAULT_CONFIG_FILE};
use ferrite_fleet::fleetd::{self, ApiListener};

/// fleet's daemon: places units across the cluster and runs them here.
#[derive(Debug, Parser)]
#[command(name = "fleetd", version)]
struct Args {
    /// Path to the configuration file (default /etc/fleet/fleet.conf, if present).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Serve the API on this unix socket.
    #[arg(long, env = "FLEET_API_SOCKET", default_value = "/var/run/fleet.sock")]
    api_socket: PathBuf,
    /// Also serve the API on this TCP address (fleet's tests use port 54728).
    #[arg(long, env = "FLEET_API_TCP")]
    api_tcp: Option<std::net::SocketAddr>,
    /// Where this machine's id is.
    #[arg(long, default_value = "/etc/machine-id")]
    machine_id_file: PathBuf,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let path = args.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        default.exists().then_some(default)
    });
    let text = match &path {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("Unable to use config file {}", p.display()))?)
        }
        None => None,
    };
    let path_text = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let env = std::env::vars().filter(|(k, _)| k.starts_with("FLEET_")).collect();
    let loaded = config::load(text.as_deref().map(|t| (path_text.as_str(), t)), &env)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = loaded.config;
    let id = fleetd::machine_id(&args.machine_id_file)?;
    let machine = fleetd::machine_state(&config, id);

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
    let systemd = ferrite_systemd::Systemd::system().await?;
    let units = SystemdUnits::new(systemd, &config.units_directory)?;
    let ready = || {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    };
    fleetd::run(config, machine, listeners, units, ready, ferrite_daemon::shutdown_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("fleetd", serve(args))
}
