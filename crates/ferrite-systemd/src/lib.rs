//! The one systemd client of the project: typed calls to the service
//! manager (`org.freedesktop.systemd1`) over D-Bus.
//!
//! Unit commands wait for their job: the client subscribes to the
//! manager's `JobRemoved` signal before asking, so a job that finishes at
//! once is not missed, and returns the job's result (`done`, `failed`,
//! `dependency`, ...). Only this crate speaks D-Bus.

use std::fmt;

pub mod units;

use futures::StreamExt as _;
use zbus::zvariant::{OwnedObjectPath, Value};

/// Proxies for the D-Bus interfaces used, as zbus declares them.
pub mod proxy {
    use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};

    /// A change an install operation made: (type, file, destination).
    pub type Change = (String, String, String);

    /// `org.freedesktop.systemd1.Manager`.
    #[zbus::proxy(
        interface = "org.freedesktop.systemd1.Manager",
        default_service = "org.freedesktop.systemd1",
        default_path = "/org/freedesktop/systemd1"
    )]
    pub trait Manager {
        /// Ask for signals (`JobRemoved`) to be sent to this client.
        fn subscribe(&self) -> zbus::Result<()>;
        /// `systemctl daemon-reload`.
        fn reload(&self) -> zbus::Result<()>;
        /// Starts a unit; returns the job.
        fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// Stops a unit.
        fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// Restarts a unit.
        fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// Restarts a unit if it runs.
        fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// Reloads a unit.
        fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// Reloads a unit, or restarts it when it cannot reload.
        fn reload_or_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// Reloads or restarts a unit if it runs.
        fn reload_or_try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
        /// The object of a loaded unit.
        fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
        /// The object of a unit, loading it if needed.
        fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
        /// `systemctl enable [--runtime]`.
        fn enable_unit_files(&self, files: &[&str], runtime: bool, force: bool) -> zbus::Result<(bool, Vec<Change>)>;
        /// `systemctl disable [--runtime]`.
        fn disable_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<Change>>;
        /// `systemctl link [--runtime] [--force]`.
        fn link_unit_files(&self, files: &[&str], runtime: bool, force: bool) -> zbus::Result<Vec<Change>>;
        /// `systemctl reset-failed UNIT`.
        fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
        /// The listed units' states, loaded or not (`systemctl list-units NAMES`).
        fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<crate::units::ListedUnit>>;
        /// `systemctl mask [--runtime]`.
        fn mask_unit_files(&self, files: &[&str], runtime: bool, force: bool) -> zbus::Result<Vec<Change>>;
        /// `systemctl unmask [--runtime]`.
        fn unmask_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<Change>>;
        /// `systemd-run`: a transient unit with the given properties.
        fn start_transient_unit(
            &self,
            name: &str,
            mode: &str,
            properties: &[(&str, Value<'_>)],
            aux: &[(&str, Vec<(&str, Value<'_>)>)],
        ) -> zbus::Result<OwnedObjectPath>;
        /// A job finished.
        #[zbus(signal)]
        fn job_removed(&self, id: u32, job: ObjectPath<'_>, unit: &str, result: &str) -> zbus::Result<()>;
    }

    /// `org.freedesktop.systemd1.Unit`.
    #[zbus::proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
    pub trait Unit {
        /// `active`, `inactive`, `failed`, ...
        #[zbus(property)]
        fn active_state(&self) -> zbus::Result<String>;
        /// `running`, `exited`, `dead`, ...
        #[zbus(property)]
        fn sub_state(&self) -> zbus::Result<String>;
        /// `loaded`, `not-found`, `masked`, ...
        #[zbus(property)]
        fn load_state(&self) -> zbus::Result<String>;
        /// `enabled`, `disabled`, `static`, ...
        #[zbus(property)]
        fn unit_file_state(&self) -> zbus::Result<String>;
    }
}

/// A failed call, naming what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The system bus cannot be reached.
    #[error("cannot connect to the system bus")]
    Connect(#[source] Box<zbus::Error>),
    /// The manager refused or failed a call.
    #[error("{call} {unit}")]
    Call {
        /// The method.
        call: &'static str,
        /// The unit (or other argument).
        unit: String,
        /// The D-Bus error.
        #[source]
        source: Box<zbus::Error>,
    },
    /// A job ended with another result than `done`.
    #[error("{command} {unit}: job {result}")]
    Job {
        /// The command.
        command: UnitCommand,
        /// The unit.
        unit: String,
        /// systemd's result: `failed`, `canceled`, `timeout`, `dependency`, `skipped`.
        result: String,
    },
    /// The signal stream ended before the job did.
    #[error("{command} {unit}: the manager went away before the job ended")]
    Lost {
        /// The command.
        command: UnitCommand,
        /// The unit.
        unit: String,
    },
}

/// The commands `systemctl` (and cloud-config's `command:`) gives a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitCommand {
    /// `start`
    Start,
    /// `stop`
    Stop,
    /// `restart`
    Restart,
    /// `reload`
    Reload,
    /// `try-restart`
    TryRestart,
    /// `reload-or-restart`
    ReloadOrRestart,
    /// `reload-or-try-restart`
    ReloadOrTryRestart,
}

impl UnitCommand {
    /// Every command with its `systemctl` name.
    pub const ALL: [(UnitCommand, &'static str); 7] = [
        (UnitCommand::Start, "start"),
        (UnitCommand::Stop, "stop"),
        (UnitCommand::Restart, "restart"),
        (UnitCommand::Reload, "reload"),
        (UnitCommand::TryRestart, "try-restart"),
        (UnitCommand::ReloadOrRestart, "reload-or-restart"),
        (UnitCommand::ReloadOrTryRestart, "reload-or-try-restart"),
    ];

    /// The command named `name` (`systemctl`'s spelling).
    pub fn parse(name: &str) -> Option<UnitCommand> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }

    /// `systemctl`'s spelling.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(c, _)| *c == self).map_or("", |(_, n)| n)
    }
}

impl fmt::Display for UnitCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A unit's states, as `systemctl show` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `LoadState`.
    pub load: String,
    /// `ActiveState`.
    pub active: String,
    /// `SubState`.
    pub sub: String,
}

/// A connection to the service manager.
#[derive(Debug, Clone)]
pub struct Systemd {
    connection: zbus::Connection,
    manager: proxy::ManagerProxy<'static>,
}

fn call<'a>(call: &'static str, unit: &'a str) -> impl FnOnce(zbus::Error) -> Error + 'a {
    move |source| Error::Call { call, unit: unit.to_owned(), source: Box::new(source) }
}

impl Systemd {
    /// Connects to the system bus.
    pub async fn system() -> Result<Systemd, Error> {
        let connection = zbus::Connection::system().await.map_err(|e| Error::Connect(Box::new(e)))?;
        Systemd::on(connection).await
    }

    /// Uses an existing connection (a test's private bus, for one), and
    /// subscribes it to the manager's signals, which job waits need.
    pub async fn on(connection: zbus::Connection) -> Result<Systemd, Error> {
        let manager = proxy::ManagerProxy::new(&connection).await.map_err(|e| Error::Connect(Box::new(e)))?;
        match manager.subscribe().await {
            Ok(()) => {}
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("AlreadySubscribed") => {}
            Err(source) => {
                return Err(Error::Call { call: "Subscribe", unit: String::new(), source: Box::new(source) })
            }
        }
        Ok(Systemd { connection, manager })
    }

    /// `systemctl daemon-reload`.
    pub async fn reload(&self) -> Result<(), Error> {
        self.manager.reload().await.map_err(call("Reload", ""))
    }

    /// Runs `command` on `unit` (job mode `replace`) and waits for the job;
    /// Ok when it ended `done` (or had nothing to do).
    pub async fn run(&self, command: UnitCommand, unit: &str) -> Result<(), Error> {
        let mut removed = self.manager.receive_job_removed().await.map_err(call("JobRemoved", unit))?;
        let job = self.enqueue(command, unit).await?;
        self.wait(&mut removed, &job, command, unit).await
    }

    /// Queues `command` on `unit` and returns its job without waiting
    /// (`systemctl --no-block`): for callers ordered before the unit, whose
    /// job cannot run until they finish.
    pub async fn enqueue(&self, command: UnitCommand, unit: &str) -> Result<OwnedObjectPath, Error> {
        let mode = "replace";
        match command {
            UnitCommand::Start => self.manager.start_unit(unit, mode).await,
            UnitCommand::Stop => self.manager.stop_unit(unit, mode).await,
            UnitCommand::Restart => self.manager.restart_unit(unit, mode).await,
            UnitCommand::Reload => self.manager.reload_unit(unit, mode).await,
            UnitCommand::TryRestart => self.manager.try_restart_unit(unit, mode).await,
            UnitCommand::ReloadOrRestart => self.manager.reload_or_restart_unit(unit, mode).await,
            UnitCommand::ReloadOrTryRestart => self.manager.reload_or_try_restart_unit(unit, mode).await,
        }
        .map_err(|source| Error::Call {
            call: "unit command",
            unit: format!("{command} {unit}"),
            source: Box::new(source),
        })
    }

    async fn wait(
        &self,
        removed: &mut proxy::JobRemovedStream,
        job: &OwnedObjectPath,
        command: UnitCommand,
        unit: &str,
    ) -> Result<(), Error> {
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.job.as_str() != job.as_str() {
                continue;
            }
            tracing::debug!(unit, %command, result = args.result, "job removed");
            return match args.result {
                "done" | "skipped" => Ok(()),
                other => Err(Error::Job { command, unit: unit.to_owned(), result: other.to_owned() }),
            };
        }
        Err(Error::Lost { command, unit: unit.to_owned() })
    }

    /// `systemctl enable [--runtime]`; returns whether links changed.
    pub async fn enable(&self, units: &[&str], runtime: bool) -> Result<bool, Error> {
        let (_, changes) = self
            .manager
            .enable_unit_files(units, runtime, false)
            .await
            .map_err(call("EnableUnitFiles", &units.join(" ")))?;
        Ok(!changes.is_empty())
    }

    /// `systemctl mask [--runtime]`; returns whether links changed.
    pub async fn mask(&self, units: &[&str], runtime: bool) -> Result<bool, Error> {
        let changes = self
            .manager
            .mask_unit_files(units, runtime, true)
            .await
            .map_err(call("MaskUnitFiles", &units.join(" ")))?;
        Ok(!changes.is_empty())
    }

    /// `systemctl unmask [--runtime]`; returns whether links changed.
    pub async fn unmask(&self, units: &[&str], runtime: bool) -> Result<bool, Error> {
        let changes =
            self.manager.unmask_unit_files(units, runtime).await.map_err(call("UnmaskUnitFiles", &units.join(" ")))?;
        Ok(!changes.is_empty())
    }

    /// A unit's load, active and sub states (loading it if needed).
    pub async fn state(&self, unit: &str) -> Result<UnitState, Error> {
        let path = self.manager.load_unit(unit).await.map_err(call("LoadUnit", unit))?;
        let proxy = proxy::UnitProxy::builder(&self.connection)
            .path(path)
            .map_err(call("Unit", unit))?
            .build()
            .await
            .map_err(call("Unit", unit))?;
        Ok(UnitState {
            load: proxy.load_state().await.map_err(call("LoadState", unit))?,
            active: proxy.active_state().await.map_err(call("ActiveState", unit))?,
            sub: proxy.sub_state().await.map_err(call("SubState", unit))?,
        })
    }

    /// `systemd-run --unit NAME --wait`-like: runs `argv` as a transient
    /// oneshot service and waits for it to finish; Ok when it exited 0.
    pub async fn run_transient(&self, name: &str, argv: &[&str]) -> Result<(), Error> {
        let mut removed = self.manager.receive_job_removed().await.map_err(call("JobRemoved", name))?;
        let exec: Vec<(String, Vec<String>, bool)> = vec![(
            argv.first().copied().unwrap_or_default().to_owned(),
            argv.iter().map(|a| (*a).to_owned()).collect(),
            false,
        )];
        let properties: Vec<(&str, Value<'_>)> = vec![
            ("Type", Value::from("oneshot")),
            ("RemainAfterExit", Value::from(true)),
            ("ExecStart", Value::from(exec)),
        ];
        let job = self
            .manager
            .start_transient_unit(name, "replace", &properties, &[])
            .await
            .map_err(call("StartTransientUnit", name))?;
        self.wait(&mut removed, &job, UnitCommand::Start, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_their_names() {
        for (command, name) in UnitCommand::ALL {
            assert_eq!(UnitCommand::parse(name), Some(command));
            assert_eq!(command.to_string(), name);
        }
        assert_eq!(UnitCommand::parse("launch"), None);
    }
}
