//! The Docker engine the system tier runs containers on.
//!
//! CI machines are not booted by systemd, so `docker.service` never starts;
//! when the engine does not answer, `dockerd` is started here in its own
//! session (so it outlives this command, like a service would) with its log
//! in `/var/log/ferrite-dockerd.log`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const LOG: &str = "/var/log/ferrite-dockerd.log";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns once `docker info` answers, starting `dockerd` if needed.
pub fn ensure_engine() -> Result<()> {
    if engine_answers() {
        return Ok(());
    }
    super::step("starting the Docker engine (dockerd)");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG)
        .with_context(|| format!("cannot open {LOG}"))?;
    Command::new("setsid")
        .arg("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone().with_context(|| format!("cannot duplicate {LOG}"))?)
        .stderr(log)
        .spawn()
        .context("cannot start dockerd")?;
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if engine_answers() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("dockerd did not answer within {}s; see {LOG}", START_TIMEOUT.as_secs())
}

fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
