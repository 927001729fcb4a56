//! The agent: registers this machine, keeps its heartbeat, makes systemd
//! run what the machine's plan says and publishes what systemd reports.
//!
//! It follows its plan with one watch on `plan/<machine id>` and systemd's
//! own change notifications through [`UnitManager::changes`], so an idle
//! agent does no work: no polling of the store, no polling of systemd.
//! A full pass also runs every [`AgentSettings::resync`] as a safety net.

pub mod memory;
pub mod reconcile;
pub mod systemd;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use ferrite_etcd_client::{WatchEvent, WatchOptions};
use futures::{Stream, StreamExt};

use crate::registry::{MachineState, Registry, RegistryError, TargetState, UnitStateRecord};
use crate::unit_file::{UnitFile, UnitHash};
use reconcile::{reconcile, Local, Task};

/// What systemd reports of a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdState {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
}

/// Refreshes the machine object's TTL (re-creating it if it expired).
async fn heartbeat(registry: &Registry, settings: &AgentSettings) -> Result<(), RegistryError> {
    if !registry.put_machine(&settings.machine, settings.ttl, false).await? {
        registry.put_machine(&settings.machine, settings.ttl, true).await?;
    }
    Ok(())
}

/// Heartbeats every half TTL, for good.
async fn heartbeat_loop(registry: Registry, settings: AgentSettings) {
    let mut tick = tokio::time::interval(settings.ttl / 2);
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(&registry, &settings).await {
            tracing::warn!(error = %e, "machine heartbeat failed");
        }
    }
}

/// How long a burst of announcements may go quiet before the agent acts
/// on it, and the longest it waits for a burst to end.
const SETTLE: Duration = Duration::from_millis(100);
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// Takes further items of `stream` as long as they keep coming within
/// [`SETTLE`] of each other, up to [`SETTLE_AT_MOST`].
async fn settle<S: Stream + Unpin>(stream: &mut S) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < SETTLE_AT_MOST {
        match tokio::time::timeout(SETTLE, stream.next()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// systemd as the agent needs it. The real one speaks D-Bus; tests use a
/// fake that records calls.
pub trait UnitManager: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The unit files this agent wrote earlier (its units directory), with
    /// their hashes: what survives an agent restart.
    fn local_units(&self) -> impl Future<Output = Result<BTreeMap<String, UnitHash>, Self::Error>> + Send;
    /// Writes the unit's file and links it into systemd (runtime).
    fn load(&self, unit: &str, file: &UnitFile) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Stops, unlinks and removes the unit (its failed state reset).
    fn unload(&self, unit: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// daemon-reload.
    fn reload(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn start(&self, unit: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn stop(&self, unit: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// What systemd says of these units now.
    fn states(
        &self,
        units: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, SystemdState>, Self::Error>> + Send;
    /// Yields whenever some unit's state may have changed.
    fn changes(&self) -> impl Stream<Item = ()> + Send + 'static;
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub machine: MachineState,
    /// fleet's `agent_ttl`: the machine object lives this long without a
    /// heartbeat; heartbeats come every half of it.
    pub ttl: Duration,
    /// A full pass this often even when nothing was announced.
    pub resync: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("systemd: {0}")]
    Systemd(#[source] E),
    #[error("unit file {hash} of {unit} is not in the registry")]
    MissingUnitFile { unit: String, hash: UnitHash },
}

/// The agent of one machine.
#[derive(Debug)]
pub struct Agent<M> {
    registry: Registry,
    settings: AgentSettings,
    manager: M,
    /// What the agent itself did to each unit since it started.
    done: BTreeMap<String, TargetState>,
    /// Unit files by hash, fetched once each.
    files: BTreeMap<UnitHash, UnitFile>,
    /// States as last published, to publish only changes.
    published: BTreeMap<String, SystemdState>,
}

impl<M: UnitManager> Agent<M> {
    pub fn new(registry: Registry, settings: AgentSettings, manager: M) -> Agent<M> {
        Agent { registry, settings, manager, done: BTreeMap::new(), files: BTreeMap::new(), published: BTreeMap::new() }
    }

    pub fn manager(&self) -> &M {
        &self.manager
    }

    fn id(&self) -> &str {
        &self.settings.machine.id
    }

    /// Registers the machine, refusing to start while another live machine
    /// has the same id (fleet's duplicate machine id check), retrying with
    /// backoff from 1 s to 60 s.
    pub async fn register(&self) -> Result<(), RegistryError> {
        let mut wait = Duration::from_secs(1);
        loop {
            match self.registry.put_machine(&self.settings.machine, self.settings.ttl, true).await {
                Ok(true) => return Ok(()),
                Ok(false) => tracing::warn!(
                    machine = self.id(),
                    "another live machine is registered with this machine id; retrying in {}s",
                    wait.as_secs()
                ),
                Err(e) => tracing::warn!(error = %e, "registering the machine failed; retrying in {}s", wait.as_secs()),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }

    /// Refreshes the machine object's TTL (re-creating it if it expired).
    pub async fn heartbeat(&self) -> Result<(), RegistryError> {
        heartbeat(&self.registry, &self.settings).await
    }

    /// One pass: read the plan, carry out the tasks, publish states.
    pub async fn reconcile_once(&mut self) -> Result<(), AgentError<M::Error>> {
        let (plan, _) = self.registry.plan(&self.settings.machine.id.clone()).await?;
        self.apply_plan(&plan).await
    }

    async fn apply_plan(
        &mut self,
        plan: &BTreeMap<String, crate::registry::PlanEntry>,
    ) -> Result<(), AgentError<M::Error>> {
        let files = self.manager.local_units().await.map_err(AgentError::Systemd)?;
        let local: BTreeMap<String, Local> = files
            .into_iter()
            .map(|(name, hash)| {
                let state = self.done.get(&name).copied().unwrap_or(TargetState::Inactive);
                (name, Local { hash, state })
            })
            .collect();
        for task in reconcile(plan, &local) {
            self.carry_out(task).await?;
        }
        self.publish().await
    }

    async fn carry_out(&mut self, task: Task) -> Result<(), AgentError<M::Error>> {
        tracing::info!(?task, "agent task");
        let me = self.settings.machine.id.clone();
        match task {
            Task::Unload { unit, .. } => {
                self.registry.clear_job_state(&unit, &me).await?;
                self.done.remove(&unit);
                self.manager.unload(&unit).await.map_err(AgentError::Systemd)?;
            }
            Task::Load { unit, hash, .. } => {
                let file = self.file(&unit, hash).await?;
                self.manager.load(&unit, &file).await.map_err(AgentError::Systemd)?;
                self.done.insert(unit, TargetState::Loaded);
            }
            Task::ReloadUnitFiles => self.manager.reload().await.map_err(AgentError::Systemd)?,
            Task::Stop { unit, .. } => {
                self.registry.clear_job_state(&unit, &me).await?;
                self.done.insert(unit.clone(), TargetState::Loaded);
                self.manager.stop(&unit).await.map_err(AgentError::Systemd)?;
            }
            Task::Start { unit, .. } => {
                self.done.insert(unit.clone(), TargetState::Launched);
                self.registry.set_job_state(&unit, &me).await?;
                self.manager.start(&unit).await.map_err(AgentError::Systemd)?;
            }
        }
        Ok(())
    }

    async fn file(&mut self, unit: &str, hash: UnitHash) -> Result<UnitFile, AgentError<M::Error>> {
        if let Some(file) = self.files.get(&hash) {
            return Ok(file.clone());
        }
        let file = self
            .registry
            .unit_file(&hash)
            .await?
            .ok_or_else(|| AgentError::MissingUnitFile { unit: unit.to_owned(), hash })?;
        self.files.insert(hash, file.clone());
        Ok(file)
    }

    /// Publishes the state of every unit this agent has whose state changed
    /// since last published, and removes states of units it no longer has.
    pub async fn publish(&mut self) -> Result<(), AgentError<M::Error>> {
        let files = self.manager.local_units().await.map_err(AgentError::Systemd)?;
        let names: Vec<String> = files.keys().cloned().collect();
        let states = self.manager.states(&names).await.map_err(AgentError::Systemd)?;
        let me = self.settings.machine.id.clone();
        for (name, hash) in &files {
            let Some(state) = states.get(name) else { continue };
            if self.published.get(name) == Some(state) {
                continue;
            }
            let record = UnitStateRecord {
                name: name.clone(),
                machine_id: me.clone(),
                load_state: state.load_state.clone(),
                active_state: state.active_state.clone(),
                sub_state: state.sub_state.clone(),
                hash: hash.to_string(),
            };
            self.registry.put_unit_state(&record).await?;
            self.published.insert(name.clone(), state.clone());
        }
        let gone: Vec<String> = self.published.keys().filter(|n| !files.contains_key(*n)).cloned().collect();
        for name in gone {
            self.registry.remove_unit_state(&name, &me).await?;
            self.published.remove(&name);
        }
        Ok(())
    }

    /// Runs until `shutdown`: registers, then [`Agent::follow`]s.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError<M::Error>> {
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            registered = self.register() => registered?,
        }
        tracing::info!(machine = self.id(), "machine registered");
        self.follow(shutdown).await;
        self.purge().await
    }

    /// For a registered machine: follows the plan and systemd, heartbeating,
    /// until `shutdown`. The units run on and the machine stays registered
    /// (until its TTL runs out): a clean stop [`Agent::purge`]s after this.
    pub async fn follow(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut plan_index = None;
        let mut plan = BTreeMap::new();
        match self.registry.plan(self.id()).await {
            Ok((read, index)) => {
                plan = read;
                plan_index = Some(index + 1);
            }
            Err(e) => tracing::warn!(error = %e, "reading the plan failed; the watch will catch up"),
        }
        let registry = self.registry.clone();
        let watch = registry.client().watch_stream(
            &self.registry.key(&["plan", self.id()]),
            WatchOptions { recursive: true, wait_index: plan_index },
        );
        tokio::pin!(watch);
        // Changes that arrive together are published together.
        let changes = self.manager.changes().ready_chunks(1024);
        tokio::pin!(changes);
        // The heartbeat runs on its own task: a long pass (hundreds of units
        // loaded at once) must never let the machine's object expire.
        let heartbeat = tokio::spawn(heartbeat_loop(self.registry.clone(), self.settings.clone()));
        let mut resync = tokio::time::interval(self.settings.resync);
        loop {
            if let Err(e) = self.apply_plan(&plan).await {
                tracing::warn!(error = %e, "agent reconcile failed");
            }
            tokio::select! {
                () = &mut shutdown => break,
                _ = resync.tick() => {
                    match self.registry.plan(self.id()).await {
                        Ok((read, _)) => plan = read,
                        Err(e) => tracing::warn!(error = %e, "reading the plan failed"),
                    }
                }
                Some(event) = watch.next() => match event {
                    Ok(WatchEvent::Change(_)) | Ok(WatchEvent::Resync { .. }) => {
                        // A burst of plan changes (the engine placing many
                        // units) becomes one pass: one read, one reload.
                        settle(&mut watch).await;
                        match self.registry.plan(self.id()).await {
                            Ok((read, _)) => plan = read,
                            Err(e) => tracing::warn!(error = %e, "reading the plan failed"),
                        }
                    }
                    Err(_) => continue,
                },
                Some(_) = changes.next() => {
                    settle(&mut changes).await;
                    if let Err(e) = self.publish().await {
                        tracing::warn!(error = %e, "publishing unit states failed");
                    }
                    continue;
                }
            }
        }
        heartbeat.abort();
    }

    /// Unloads every unit and withdraws the machine from the cluster.
    pub async fn purge(&mut self) -> Result<(), AgentError<M::Error>> {
        let empty = BTreeMap::new();
        self.apply_plan(&empty).await?;
        self.registry.remove_machine(self.id()).await?;
        Ok(())
    }
}
