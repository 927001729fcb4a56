//! The agent's units on a real machine: files in fleet's units directory
//! (`/run/fleet/units/` by default), linked into systemd for this boot
//! only, started and stopped through systemd's D-Bus API, their states
//! read in one call and followed through systemd's change signals.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferrite_systemd::{Systemd, UnitCommand};
use futures::{Stream, StreamExt as _};

use super::{SystemdState, UnitManager};
use crate::unit_file::{UnitFile, UnitHash};
use crate::unit_name;

#[derive(Debug, thiserror::Error)]
pub enum SystemdUnitsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Systemd(#[from] ferrite_systemd::Error),
}

/// systemd, with the agent's unit files in `directory`.
#[derive(Debug, Clone)]
pub struct SystemdUnits {
    systemd: Systemd,
    directory: PathBuf,
    /// The directory's units and hashes, read once, then kept up to date
    /// by `load` and `unload`, so a state change costs no file reads.
    known: Arc<Mutex<Option<BTreeMap<String, UnitHash>>>>,
}

impl SystemdUnits {
    /// Creates `directory` (0755) if needed.
    pub fn new(systemd: Systemd, directory: &Path) -> Result<SystemdUnits, SystemdUnitsError> {
        std::fs::create_dir_all(directory)
            .map_err(|source| SystemdUnitsError::Io { path: directory.to_owned(), source })?;
        Ok(SystemdUnits { systemd, directory: directory.to_owned(), known: Arc::default() })
    }

    fn path(&self, unit: &str) -> PathBuf {
        self.directory.join(unit)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SystemdUnitsError + '_ {
    move |source| SystemdUnitsError::Io { path: path.to_owned(), source }
}

/// Writes `text` to `path` atomically: a temporary file beside it, synced,
/// then renamed over it.
fn write_atomically(path: &Path, text: &str) -> Result<(), SystemdUnitsError> {
    let temporary = path.with_extension("fleet-tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(text.as_bytes()).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

impl UnitManager for SystemdUnits {
    type Error = SystemdUnitsError;

    async fn local_units(&self) -> Result<BTreeMap<String, UnitHash>, SystemdUnitsError> {
        if let Some(known) = self.known.lock().expect("unit cache lock").as_ref() {
            return Ok(known.clone());
        }
        let mut out = BTreeMap::new();
        let entries = std::fs::read_dir(&self.directory).map_err(io(&self.directory))?;
        for entry in entries {
            let entry = entry.map_err(io(&self.directory))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !unit_name::recognized_type(&name) {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).map_err(io(&entry.path()))?;
            match UnitFile::parse(&text) {
                Ok(file) => {
                    out.insert(name, file.hash());
                }
                Err(e) => tracing::warn!(unit = name, error = %e, "ignoring an unreadable unit file"),
            }
        }
        *self.known.lock().expect("unit cache lock") = Some(out.clone());
        Ok(out)
    }

    async fn load(&self, unit: &str, file: &UnitFile) -> Result<(), SystemdUnitsError> {
        self.local_units().await?;
        let path = self.path(unit);
        write_atomically(&path, &file.serialize())?;
        if let Some(known) = self.known.lock().expect("unit cache lock").as_mut() {
            known.insert(unit.to_owned(), file.hash());
        }
        let path_text = path.to_string_lossy().into_owned();
        self.systemd.link(&[&path_text], true).await?;
        if file.options().iter().any(|o| o.section == "Install") {
            if let Err(e) = self.systemd.enable_forced(&[&path_text], true).await {
                let _ = std::fs::remove_file(&path);
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn unload(&self, unit: &str) -> Result<(), SystemdUnitsError> {
        self.systemd.enqueue(UnitCommand::Stop, unit).await?;
        self.systemd.disable(&[unit], true).await?;
        self.systemd.reset_failed(unit).await?;
        self.local_units().await?;
        if let Some(known) = self.known.lock().expect("unit cache lock").as_mut() {
            known.remove(unit);
        }
        let path = self.path(unit);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    async fn reload(&self) -> Result<(), SystemdUnitsError> {
        Ok(self.systemd.reload().await?)
    }

    async fn start(&self, unit: &str) -> Result<(), SystemdUnitsError> {
        self.systemd.enqueue(UnitCommand::Start, unit).await?;
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdUnitsError> {
        self.systemd.enqueue(UnitCommand::Stop, unit).await?;
        Ok(())
    }

    async fn states(&self, units: &[String]) -> Result<BTreeMap<String, SystemdState>, SystemdUnitsError> {
        let names: Vec<&str> = units.iter().map(String::as_str).collect();
        Ok(self
            .systemd
            .states(&names)
            .await?
            .into_iter()
            .map(|(name, s)| (name, SystemdState { load_state: s.load, active_state: s.active, sub_state: s.sub }))
            .collect())
    }

    fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        // systemd's signals are drained on a task of their own, at once:
        // zbus stops reading the bus while a signal stream's queue is full,
        // and a method reply the agent awaits would then never arrive. The
        // agent only needs to know that something changed, so the task
        // coalesces signals into one pending wake-up.
        let systemd = self.systemd.clone();
        let directory = self.directory.clone();
        let changed = Arc::new(tokio::sync::Notify::new());
        let drain = {
            let changed = Arc::clone(&changed);
            tokio::spawn(async move {
                let stream = match systemd.unit_changes().await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow systemd's unit changes; states publish on resync only");
                        return;
                    }
                };
                tokio::pin!(stream);
                while let Some(name) = stream.next().await {
                    // Only this agent's units matter.
                    if directory.join(&name).exists() {
                        changed.notify_one();
                    }
                }
            })
        };
        futures::stream::unfold((changed, AbortOnDrop(drain)), |(changed, drain)| async move {
            changed.notified().await;
            Some(((), (changed, drain)))
        })
    }
}

/// Stops the signal-draining task when the agent drops its change stream.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
