//! What is registered, kept in step with Docker and the store.
//!
//! The bridge holds the services of every running container it has seen
//! (its desired state). A store write that fails marks the bridge
//! unsynced; [`Bridge::retry`] writes the whole desired state again (and
//! the pending deletions), so an unreachable store is caught up once it
//! answers.

use std::collections::{BTreeMap, BTreeSet};

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use bollard::Docker;

use crate::registry::{parse_id, Registry};
use crate::service::{self, Service, Settings};

#[derive(Debug)]
pub struct Bridge {
    docker: Docker,
    registry: Registry,
    settings: Settings,
    cleanup: bool,
    /// Container id → its services.
    services: BTreeMap<String, Vec<Service>>,
    /// Keys to delete that the store did not confirm.
    pending_deletes: BTreeSet<String>,
    /// A write failed: the store may lack registrations.
    unsynced: bool,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Bridge {
    pub fn new(docker: Docker, registry: Registry, settings: Settings, cleanup: bool) -> Bridge {
        Bridge {
            docker,
            registry,
            settings,
            cleanup,
            services: BTreeMap::new(),
            pending_deletes: BTreeSet::new(),
            unsynced: false,
        }
    }

    /// The Docker handle to use from now on (after a reconnect).
    pub fn set_docker(&mut self, docker: Docker) {
        self.docker = docker;
    }

    /// True when some registration or deletion waits for the store.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Every service the bridge holds.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().flatten()
    }

    /// A container started: inspect it and register its services.
    pub async fn add(&mut self, id: &str) {
        if self.services.contains_key(id) {
            return;
        }
        let container = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(container = short(id), error = %ferrite_daemon::error_chain(&e), "cannot inspect container");
                return;
            }
        };
        if !container.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            tracing::debug!(container = short(id), "not running; ignored");
            return;
        }
        let found = service::services(&container, &self.settings);
        if found.is_empty() {
            tracing::info!(container = short(id), "ignored: no published ports");
        }
        for service in &found {
            self.pending_deletes.remove(&service.key(self.registry.prefix()));
            match self.registry.register(service).await {
                Ok(()) => {
                    tracing::info!(container = short(id), service = %service.id, key = %service.key(self.registry.prefix()), value = %service.value(), "added")
                }
                Err(e) => {
                    tracing::warn!(service = %service.id, error = %ferrite_daemon::error_chain(&e), "register failed; will retry");
                    self.unsynced = true;
                }
            }
        }
        self.services.insert(id.to_owned(), found);
    }

    /// A container died: deregister its services.
    pub async fn remove(&mut self, id: &str) {
        let Some(services) = self.services.remove(id) else { return };
        for service in services {
            let key = service.key(self.registry.prefix());
            self.delete(&key, short(id)).await;
        }
    }

    async fn delete(&mut self, key: &str, container: &str) {
        match self.registry.delete(key).await {
            Ok(()) => {
                self.pending_deletes.remove(key);
                tracing::info!(container, %key, "removed");
            }
            Err(e) => {
                tracing::warn!(%key, error = %ferrite_daemon::error_chain(&e), "deregister failed; will retry");
                self.pending_deletes.insert(key.to_owned());
                self.unsynced = true;
            }
        }
    }

    /// Lists running containers: registers new ones, registers known ones
    /// again (restoring what the store lost), and deregisters those no
    /// longer running. With `cleanup`, also deletes this host's keys in the
    /// store that belong to no running container (left by a registrator
    /// that was killed). Fails only when Docker cannot be listed.
    pub async fn sync(&mut self) -> Result<(), bollard::errors::Error> {
        let listed = self.docker.list_containers(None::<ListContainersOptions>).await?;
        let running: BTreeSet<String> = listed.into_iter().filter_map(|c| c.id).collect();
        tracing::info!(containers = running.len(), "syncing");
        let gone: Vec<String> = self.services.keys().filter(|id| !running.contains(*id)).cloned().collect();
        for id in gone {
            tracing::info!(container = short(&id), "no longer running");
            self.remove(&id).await;
        }
        for id in &running {
            if !self.services.contains_key(id) {
                self.add(id).await;
            }
        }
        self.write_all().await;
        if self.cleanup {
            self.remove_dangling().await;
        }
        Ok(())
    }

    /// Writes every registration again with a fresh TTL (`-ttl-refresh`).
    pub async fn refresh(&mut self) {
        let mut failed = false;
        for service in self.services.values().flatten() {
            match self.registry.refresh(service).await {
                Ok(()) => tracing::debug!(service = %service.id, "refreshed"),
                Err(e) => {
                    tracing::warn!(service = %service.id, error = %ferrite_daemon::error_chain(&e), "refresh failed");
                    failed = true;
                }
            }
        }
        self.unsynced |= failed;
    }

    /// Writes the whole desired state, and the pending deletions.
    pub async fn retry(&mut self) {
        self.unsynced = false;
        self.write_all().await;
        let pending: Vec<String> = self.pending_deletes.iter().cloned().collect();
        for key in pending {
            self.delete(&key, "-").await;
        }
        if !self.unsynced {
            tracing::info!("the store has every registration again");
        }
    }

    async fn write_all(&mut self) {
        let mut failed = false;
        for service in self.services.values().flatten() {
            if let Err(e) = self.registry.register(service).await {
                tracing::warn!(service = %service.id, error = %ferrite_daemon::error_chain(&e), "register failed; will retry");
                failed = true;
            }
        }
        self.unsynced |= failed;
    }

    async fn remove_dangling(&mut self) {
        let stored = match self.registry.list().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %ferrite_daemon::error_chain(&e), "cleanup: cannot list the store");
                self.unsynced = true;
                return;
            }
        };
        let ours: BTreeSet<String> = self.services.values().flatten().map(|s| s.key(self.registry.prefix())).collect();
        for entry in stored {
            let Some((host, _container)) = parse_id(&entry.id) else { continue };
            if host != self.settings.hostname || ours.contains(&entry.key) {
                continue;
            }
            tracing::info!(key = %entry.key, "dangling: no running container has it");
            self.delete(&entry.key, "-").await;
        }
    }
}
