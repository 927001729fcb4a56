//! `ferrite-registrator`: parses registrator's flags, sets up logging,
//! runs the event loop.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferrite_registrator::registry::RegistryUri;
use ferrite_registrator::service::Settings;

/// Registers every published container port in the store
/// (`<prefix>/<service>/<hostname>:<container>:<port>` = `ip:port`).
/// Takes registrator's flags, with one dash or two.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The store and key prefix: `etcd://host:port/prefix`.
    registry_uri: String,

    /// IP registered for published ports (default: the hostname's address).
    #[arg(long)]
    ip: Option<String>,

    /// Register the container's IP and exposed port instead of the host's.
    #[arg(long)]
    internal: bool,

    /// TTL of the keys in seconds (0: none); needs -ttl-refresh.
    #[arg(long, default_value_t = 0)]
    ttl: u64,

    /// How often to reset the TTLs, in seconds.
    #[arg(long = "ttl-refresh", default_value_t = 0)]
    ttl_refresh: u64,

    /// How often to list every container again, in seconds (0: never).
    #[arg(long, default_value_t = 0)]
    resync: u64,

    /// Delete this host's keys that no running container has (left by a
    /// registrator that was killed).
    #[arg(long)]
    cleanup: bool,

    /// Only register containers that set SERVICE_NAME.
    #[arg(long)]
    explicit: bool,

    /// Tags added to every service, comma-separated.
    #[arg(long, default_value = "")]
    tags: String,

    /// The first part of service ids (default: this host's name).
    #[arg(long)]
    hostname: Option<String>,

    /// Docker's API socket.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
}

const GO_FLAGS: &[&str] =
    &["ip", "internal", "ttl", "ttl-refresh", "resync", "cleanup", "explicit", "tags", "hostname", "docker-host"];

fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").context("cannot read the hostname")?;
    Ok(name.trim().to_owned())
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let registry = RegistryUri::parse(&args.registry_uri)?;
    let (ttl, ttl_refresh) = ferrite_registrator::check_ttl(args.ttl, args.ttl_refresh)?;
    let hostname = match args.hostname {
        Some(h) => h,
        None => host_name()?,
    };
    let hostname_ip = ferrite_registrator::resolve_hostname(&hostname).await;
    let config = ferrite_registrator::Config {
        docker_socket: args.docker_host,
        registry,
        service: Settings {
            hostname,
            hostname_ip,
            host_ip: args.ip,
            internal: args.internal,
            explicit: args.explicit,
            force_tags: args.tags,
            ttl,
        },
        ttl_refresh,
        resync: (args.resync > 0).then(|| std::time::Duration::from_secs(args.resync)),
        cleanup: args.cleanup,
    };
    tracing::info!(
        endpoints = %config.registry.endpoints.join(","),
        prefix = %config.registry.prefix,
        hostname = %config.service.hostname,
        "starting"
    );
    let ready = || {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    };
    ferrite_registrator::run(config, ferrite_daemon::shutdown_signal(), ready).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse_from(ferrite_registrator::go_style_args(std::env::args_os(), GO_FLAGS));
    ferrite_daemon::init_tracing("info");
    ferrite_daemon::run("ferrite-registrator", serve(args))
}
