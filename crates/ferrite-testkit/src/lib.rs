//! Support for Ferrite's system tests: real daemons on this machine.
//!
//! - [`free_port`]: loopback ports no other test in this process holds.
//! - [`Process`]: a child process whose output goes to a log file, killed
//!   and reaped on drop; the log's path is printed when a test fails.
//! - [`Cluster`]: an n-member etcd or ferrite-store cluster started with
//!   etcd's own flags, with the faults a test needs (kill, pause, resume,
//!   restart, add a member).
//! - [`images`]: Docker images from host binaries (no registry) and
//!   containers removed on drop.
//! - [`linearizability`]: records concurrent clients' histories of etcd v2
//!   key operations and checks them for linearizability.
//! - [`systemd_container`]: Docker containers running systemd as PID 1.
//!
//! Everything listens on 127.0.0.1 only. Errors are `anyhow` with context:
//! this is a test harness, and a failure message should say which member,
//! which port and what its log said.

mod cluster;
pub mod images;
pub mod linearizability;
mod ports;
mod process;
pub mod systemd_container;

pub use cluster::{Cluster, ClusterBuilder, Member, ServerKind, HEALTH_TIMEOUT};
pub use ports::free_port;
pub use process::Process;

/// The command for a one-member cluster of `bin` (etcd's flags) on the
/// given loopback ports, for tests that drive a single process by hand
/// (start it, kill it, damage its data directory, start it again).
pub fn solo_member_command(
    bin: &std::path::Path,
    data_dir: &std::path::Path,
    client: u16,
    peer: u16,
) -> std::process::Command {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--name")
        .arg("solo")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("solo={peer_url}")]);
    cmd
}
