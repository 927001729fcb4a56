//! The running machine: the service manager through `ferrite-systemd`
//! (D-Bus), users through the system's own `useradd` and `usermod`, the
//! hostname in `/etc/hostname` and the kernel.

use std::path::Path;

use ferrite_systemd::{Systemd, UnitCommand};

use crate::apply::{store_hostname, useradd_args, ApplyError, Machine};
use crate::command::run;
use crate::config::User;

/// The live machine.
#[derive(Debug)]
pub struct Live {
    runtime: tokio::runtime::Runtime,
    /// The system bus, connected on first use: applying a config that
    /// names no units (a hostname, users, keys, files) never needs it, so
    /// at boot it does not wait for dbus-daemon to start.
    connection: Option<Systemd>,
    /// Queue unit commands without waiting for their jobs.
    no_block: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        // zbus cleans a connection up with tasks on the runtime it runs on,
        // so the connection must go while that runtime is current.
        let _context = self.runtime.enter();
        self.connection = None;
    }
}

fn unit_error(action: &str, unit: &str, error: ferrite_systemd::Error) -> ApplyError {
    ApplyError::Unit { action: action.to_owned(), unit: unit.to_owned(), detail: ferrite_daemon::error_chain(&error) }
}

impl Live {
    /// The running system, reached through systemd on the system bus once
    /// something needs it. With `no_block`, unit commands are queued and
    /// not waited for (`systemctl --no-block`), as the boot unit needs: the
    /// daemons it configures are ordered after it, so their jobs cannot
    /// run until it has finished.
    pub fn new(no_block: bool) -> Result<Live, ApplyError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ApplyError::Unit {
                action: "start the runtime for".to_owned(),
                unit: "systemd's client".to_owned(),
                detail: e.to_string(),
            })?;
        Ok(Live { runtime, connection: None, no_block })
    }

    fn block_on<T>(
        &mut self,
        call: impl AsyncFnOnce(&Systemd) -> Result<T, ferrite_systemd::Error>,
    ) -> Result<T, ferrite_systemd::Error> {
        if self.connection.is_none() {
            self.connection = Some(self.runtime.block_on(Systemd::system())?);
        }
        let systemd = self.connection.as_ref().expect("connected above");
        self.runtime.block_on(call(systemd))
    }
}

impl Machine for Live {
    /// As coreos-cloudinit did: `/etc/hostname` for the boots to come, the
    /// kernel's for this one. Not through hostnamed: D-Bus-activating it
    /// for one call cost a first boot six seconds under emulation, and it
    /// would write the same file (hostnamectl reads it back as the static
    /// hostname).
    fn set_hostname(&mut self, root: &Path, name: &str) -> Result<bool, ApplyError> {
        let stored = store_hostname(root, name)?;
        if rustix::system::uname().nodename().to_bytes() == name.as_bytes() {
            return Ok(stored);
        }
        rustix::system::sethostname(name.as_bytes()).map_err(|e| ApplyError::File {
            action: "cannot set the running hostname (sethostname) to the one in",
            path: "/etc/hostname".into(),
            source: e.into(),
        })?;
        Ok(true)
    }

    fn create_user(&mut self, _root: &Path, user: &User) -> Result<(), ApplyError> {
        Ok(run("useradd", &useradd_args(user))?)
    }

    fn set_password(&mut self, _root: &Path, name: &str, hash: &str) -> Result<(), ApplyError> {
        Ok(run("usermod", &["--password", hash, name])?)
    }

    fn enable_unit(&mut self, _root: &Path, unit: &str, runtime: bool) -> Result<bool, ApplyError> {
        self.block_on(async |s| s.enable(&[unit], runtime).await).map_err(|e| unit_error("enable", unit, e))
    }

    fn daemon_reload(&mut self) -> Result<(), ApplyError> {
        self.block_on(async |s| s.reload().await).map_err(|e| unit_error("daemon-reload", "", e))
    }

    fn unit_command(&mut self, unit: &str, command: &str) -> Result<(), ApplyError> {
        let Some(parsed) = UnitCommand::parse(command) else {
            return Err(ApplyError::Unit {
                action: command.to_owned(),
                unit: unit.to_owned(),
                detail: "unknown command".to_owned(),
            });
        };
        tracing::info!("{command} {unit}");
        if self.no_block {
            self.block_on(async |s| s.enqueue(parsed, unit).await).map(drop).map_err(|e| unit_error(command, unit, e))
        } else {
            self.block_on(async |s| s.run(parsed, unit).await).map_err(|e| unit_error(command, unit, e))
        }
    }

    fn unit_exists(&mut self, _root: &Path, unit: &str) -> Result<bool, ApplyError> {
        let state = self.block_on(async |s| s.state(unit).await).map_err(|e| unit_error("look up", unit, e))?;
        Ok(state.load != "not-found")
    }

    fn runs_unit_commands(&self) -> bool {
        true
    }

    fn run_script(&mut self, path: &str) -> Result<bool, ApplyError> {
        let name = format!(
            "ferrite-cloudinit-script-{}.service",
            Path::new(path).file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        );
        tracing::info!("running {path} as {name}");
        self.block_on(async |s| s.run_transient(&name, &[path]).await)
            .map_err(|e| unit_error("run script", &name, e))?;
        Ok(true)
    }
}
