//! The engine: every fleetd runs one; the one holding the lease in the
//! store places units on machines and writes each machine's plan.
//!
//! A tick: check the engine version, take or renew the lease, and if this
//! machine leads, read the cluster, run [`reconcile::reconcile`] and carry
//! out its actions. Ticks come every reconcile interval and at once when a
//! job or a machine changes in the store (a watch), so a submitted unit is
//! placed without waiting for the interval.

pub mod reconcile;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferrite_etcd_client::WatchOptions;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::registry::{Lease, Registry, RegistryError};
use reconcile::{reconcile, Action, ClusterView};

/// Writes the engine keeps in flight at once.
const CONCURRENT_WRITES: usize = 64;

/// The lease's name in the store, fleet's.
pub const LEASE_NAME: &str = "engine-leader";

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub machine_id: String,
    /// fleet's `engine_reconcile_interval`; the lease lasts five of them.
    pub interval: Duration,
    /// Follow changes with watches (fleet's `disable_watches` turns it off).
    pub watches: bool,
}

/// The engine of one machine.
#[derive(Debug)]
pub struct Engine {
    registry: Registry,
    settings: EngineSettings,
    lease: Option<Lease>,
}

impl Engine {
    pub fn new(registry: Registry, settings: EngineSettings) -> Engine {
        Engine { registry, settings, lease: None }
    }

    fn lease_ttl(&self) -> Duration {
        self.settings.interval * 5
    }

    /// Whether this machine holds the lease (as of the last tick).
    pub fn is_leader(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.value.machine_id == self.settings.machine_id)
    }

    /// Runs ticks until `shutdown` resolves, then gives up the lease.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let changed = Arc::new(Notify::new());
        let watchers = if self.settings.watches { self.spawn_watchers(&changed) } else { Vec::new() };
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "engine reconcile failed");
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = changed.notified() => {}
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
        for watcher in watchers {
            watcher.abort();
        }
        if let Some(lease) = self.lease.take().filter(|l| l.value.machine_id == self.settings.machine_id) {
            if let Err(e) = self.registry.release_lease(LEASE_NAME, lease.index).await {
                tracing::warn!(error = %e, "could not release the engine lease");
            }
        }
    }

    /// Wakes the loop whenever anything under `job/` or `machines/` changes.
    fn spawn_watchers(&self, changed: &Arc<Notify>) -> Vec<tokio::task::JoinHandle<()>> {
        ["job", "machines"]
            .into_iter()
            .map(|dir| {
                let stream = self
                    .registry
                    .client()
                    .watch_stream(&self.registry.key(&[dir]), WatchOptions { recursive: true, wait_index: None });
                let changed = Arc::clone(changed);
                tokio::spawn(async move {
                    tokio::pin!(stream);
                    while let Some(event) = stream.next().await {
                        if event.is_ok() {
                            changed.notify_one();
                        }
                    }
                })
            })
            .collect()
    }

    /// One tick; returns whether this machine led it.
    pub async fn tick(&mut self) -> Result<bool, RegistryError> {
        if !self.registry.claim_engine_version().await? {
            tracing::debug!("a newer engine owns the cluster; not participating");
            return Ok(false);
        }
        if !self.lead().await? {
            return Ok(false);
        }
        let view = ClusterView {
            jobs: self.registry.jobs().await?,
            machines: self.registry.machines().await?,
            plans: self.registry.plans().await?,
        };
        self.apply_all(reconcile(&view)).await?;
        Ok(true)
    }

    /// Takes or renews the lease. fleet's steal of a lease written by an
    /// older engine version is not needed: there is only version 1.
    async fn lead(&mut self) -> Result<bool, RegistryError> {
        let me = self.settings.machine_id.clone();
        let ttl = self.lease_ttl();
        if let Some(lease) = self.lease.clone().filter(|l| l.value.machine_id == me) {
            match self.registry.renew_lease(LEASE_NAME, &me, lease.index, ttl).await? {
                Some(renewed) => {
                    self.lease = Some(renewed);
                    return Ok(true);
                }
                None => {
                    tracing::warn!("Engine leadership lost, renewal failed");
                    self.lease = None;
                }
            }
        }
        match self.registry.lease(LEASE_NAME).await? {
            None => {
                self.lease = self.registry.acquire_lease(LEASE_NAME, &me, ttl).await?;
                if self.is_leader() {
                    tracing::info!("Engine leadership acquired");
                }
            }
            // Our own lease from before a restart: carry on with it.
            Some(lease) if lease.value.machine_id == me => {
                self.lease = self.registry.renew_lease(LEASE_NAME, &me, lease.index, ttl).await?;
            }
            Some(lease) => self.lease = Some(lease),
        }
        Ok(self.is_leader())
    }

    /// Carries out a pass's actions in three phases, each phase's writes
    /// concurrently (they touch different keys), so a burst of placements
    /// is committed in batches rather than one write after another:
    /// units leave machines, then units are placed, then plans follow.
    async fn apply_all(&self, actions: Vec<Action>) -> Result<(), RegistryError> {
        let (unschedules, rest): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(|a| matches!(a, Action::Unschedule { .. }));
        let (schedules, rest): (Vec<Action>, Vec<Action>) =
            rest.into_iter().partition(|a| matches!(a, Action::Schedule { .. }));
        // Machines are forgotten last, together (one read of the states).
        let (forgets, plans): (Vec<Action>, Vec<Action>) =
            rest.into_iter().partition(|a| matches!(a, Action::ForgetMachine { .. }));
        for phase in [unschedules, schedules, plans] {
            let results: Vec<Result<(), RegistryError>> =
                futures::stream::iter(phase.into_iter().map(|action| self.apply(action)))
                    .buffer_unordered(CONCURRENT_WRITES)
                    .collect()
                    .await;
            results.into_iter().collect::<Result<(), RegistryError>>()?;
        }
        let gone: Vec<String> = forgets
            .into_iter()
            .filter_map(|a| match a {
                Action::ForgetMachine { machine } => Some(machine),
                _ => None,
            })
            .collect();
        self.forget_machines(&gone).await
    }

    async fn apply(&self, action: Action) -> Result<(), RegistryError> {
        match action {
            Action::Unschedule { unit, machine, reason } => {
                tracing::info!(unit, machine, reason, "unscheduling");
                self.registry.unschedule(&unit, &machine).await
            }
            Action::Schedule { unit, machine } => {
                if self.registry.schedule(&unit, &machine).await? {
                    tracing::info!(unit, machine, "scheduled");
                }
                Ok(())
            }
            Action::PutPlan { machine, unit, entry } => self.registry.put_plan(&machine, &unit, &entry).await,
            Action::RemovePlan { machine, unit } => self.registry.remove_plan(&machine, &unit).await,
            Action::ForgetMachine { machine } => self.forget_machines(&[machine]).await,
        }
    }

    /// Removes the plans of machines that are gone and every unit state
    /// they reported, found in one read of the states.
    async fn forget_machines(&self, machines: &[String]) -> Result<(), RegistryError> {
        if machines.is_empty() {
            return Ok(());
        }
        tracing::info!(?machines, "machines gone; removing their plans and unit states");
        let states = self.registry.unit_states().await?;
        let removals: Vec<(Option<String>, String)> = machines
            .iter()
            .map(|m| (None, m.clone()))
            .chain(
                states.into_iter().filter(|s| machines.contains(&s.machine_id)).map(|s| (Some(s.name), s.machine_id)),
            )
            .collect();
        let results: Vec<Result<(), RegistryError>> = futures::stream::iter(removals)
            .map(|(unit, machine)| self.remove_left(unit, machine))
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Removes what a gone machine left: its plan, or a unit's state.
    async fn remove_left(&self, unit: Option<String>, machine: String) -> Result<(), RegistryError> {
        match unit {
            None => self.registry.remove_machine_plan(&machine).await,
            Some(unit) => self.registry.remove_unit_state(&unit, &machine).await,
        }
    }
}
