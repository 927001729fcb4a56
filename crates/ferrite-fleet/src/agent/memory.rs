//! An in-memory [`UnitManager`]: unit files and running units kept in
//! memory, every call recorded, changes announced. It stands in for
//! systemd where many agents are simulated in one process (the scale
//! benchmark) and in tier-1 tests; it is never what a machine runs.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use crate::agent::{SystemdState, UnitManager};
use crate::unit_file::{UnitFile, UnitHash};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;

#[derive(Debug, Default)]
struct Inner {
    files: BTreeMap<String, UnitFile>,
    running: BTreeSet<String>,
    calls: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MemoryUnits {
    inner: Arc<Mutex<Inner>>,
    changed: broadcast::Sender<()>,
}

impl Default for MemoryUnits {
    fn default() -> MemoryUnits {
        MemoryUnits::new()
    }
}

impl MemoryUnits {
    pub fn new() -> MemoryUnits {
        MemoryUnits { inner: Arc::default(), changed: broadcast::channel(64).0 }
    }

    pub fn running(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().running.clone()
    }

    pub fn files(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().files.keys().cloned().collect()
    }

    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    fn record(&self, call: String, change: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.lock().unwrap();
        inner.calls.push(call);
        change(&mut inner);
        drop(inner);
        let _ = self.changed.send(());
    }
}

impl UnitManager for MemoryUnits {
    type Error = Infallible;

    async fn local_units(&self) -> Result<BTreeMap<String, UnitHash>, Infallible> {
        Ok(self.inner.lock().unwrap().files.iter().map(|(n, f)| (n.clone(), f.hash())).collect())
    }

    async fn load(&self, unit: &str, file: &UnitFile) -> Result<(), Infallible> {
        self.record(format!("load {unit}"), |i| {
            i.files.insert(unit.to_owned(), file.clone());
        });
        Ok(())
    }

    async fn unload(&self, unit: &str) -> Result<(), Infallible> {
        self.record(format!("unload {unit}"), |i| {
            i.files.remove(unit);
            i.running.remove(unit);
        });
        Ok(())
    }

    async fn reload(&self) -> Result<(), Infallible> {
        self.record("reload".to_owned(), |_| {});
        Ok(())
    }

    async fn start(&self, unit: &str) -> Result<(), Infallible> {
        self.record(format!("start {unit}"), |i| {
            i.running.insert(unit.to_owned());
        });
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<(), Infallible> {
        self.record(format!("stop {unit}"), |i| {
            i.running.remove(unit);
        });
        Ok(())
    }

    async fn states(&self, units: &[String]) -> Result<BTreeMap<String, SystemdState>, Infallible> {
        let inner = self.inner.lock().unwrap();
        Ok(units
            .iter()
            .filter(|u| inner.files.contains_key(*u))
            .map(|u| {
                let running = inner.running.contains(u);
                let state = SystemdState {
                    load_state: "loaded".into(),
                    active_state: if running { "active" } else { "inactive" }.into(),
                    sub_state: if running { "running" } else { "dead" }.into(),
                };
                (u.clone(), state)
            })
            .collect())
    }

    fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        // A lagged receiver still means "something changed".
        tokio_stream::wrappers::BroadcastStream::new(self.changed.subscribe()).map(|_| ())
    }
}
