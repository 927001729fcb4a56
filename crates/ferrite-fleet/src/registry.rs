//! The cluster's scheduling state in the store, under fleet's key prefix
//! (`/_coreos.com/fleet/` by default), through the one etcd client.
//!
//! Keys and values are fleet's where fleet defined them, so a registry can
//! be read with `etcdctl` the way fleet's always could:
//!
//! | key | value |
//! |---|---|
//! | `unit/<sha1>` | `{"Raw":"<unit file>"}`, written once, never changed |
//! | `job/<name>/object` | `{"Name":"<name>","UnitHash":[20 bytes]}` |
//! | `job/<name>/target-state` | `inactive`, `loaded` or `launched` |
//! | `job/<name>/target` | id of the machine the engine placed it on |
//! | `job/<name>/job-state` | id of the machine that started it |
//! | `machines/<id>/object` | the machine's JSON, with the agent TTL |
//! | `machines/<id>/metadata/<key>` | metadata set through the API |
//! | `states/<name>/<machine>` | what systemd reports of the unit there |
//! | `lease/engine-leader` | `{"MachineID":"<id>","Version":1}`, with a TTL |
//! | `engine/version` | `1` |
//!
//! What Ferrite changes, to fix fleet's load on the store: one key of its
//! own, `plan/<machine>/<name>` (`{"hash":"<sha1>","targetState":"..."}`),
//! where the engine writes what each machine should run, global units
//! included, so an agent watches only its own plan instead of reading every
//! job every few seconds; and `job-state` and `states/` carry no TTL, so a
//! machine's only heartbeat is its own object (one write per machine, not
//! one per unit). When a machine's object expires the engine moves its
//! units and removes its states and plan.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrite_etcd_api::v2::{ErrorCode, Node};
use ferrite_etcd_client::{Client, DeleteOptions, Error as EtcdError, GetOptions, SetOptions};
use serde::{Deserialize, Serialize};

use crate::unit_file::{UnitFile, UnitFileError, UnitHash};

/// The desired state of a unit (fleet's job states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    Inactive,
    Loaded,
    Launched,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Inactive => "inactive",
            TargetState::Loaded => "loaded",
            TargetState::Launched => "launched",
        }
    }

    /// fleet's `ParseJobState`.
    pub fn parse(s: &str) -> Result<TargetState, RegistryError> {
        match s {
            "inactive" => Ok(TargetState::Inactive),
            "loaded" => Ok(TargetState::Loaded),
            "launched" => Ok(TargetState::Launched),
            other => Err(RegistryError::JobState(other.to_owned())),
        }
    }
}

impl std::fmt::Display for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("invalid value {0:?} for JobState")]
    JobState(String),
    #[error("{key}: cannot decode {value:?}: {reason}")]
    Decode { key: String, value: String, reason: String },
    #[error("{key}: stored unit file does not parse: {source}")]
    UnitFile { key: String, source: UnitFileError },
    #[error("job does not exist")]
    NoSuchJob,
}

/// A unit submitted to the cluster, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub name: String,
    pub hash: UnitHash,
    pub unit: UnitFile,
    pub target_state: TargetState,
    /// Where the engine placed it (never for global units).
    pub target: Option<String>,
    /// The machine that last started it.
    pub job_state: Option<String>,
}

/// fleet's machine object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "PublicIP", default)]
    pub public_ip: String,
    #[serde(rename = "Metadata", default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "Capabilities", default)]
    pub capabilities: Option<BTreeMap<String, bool>>,
    #[serde(rename = "Version", default)]
    pub version: String,
}

/// What systemd reports of a unit on one machine (fleet's
/// `unitStateModel`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStateRecord {
    pub name: String,
    pub machine_id: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnitStateModel {
    load_state: String,
    active_state: String,
    sub_state: String,
    machine_state: Option<MachineRef>,
    unit_hash: String,
}

#[derive(Serialize, Deserialize)]
struct MachineRef {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "PublicIP", default)]
    public_ip: String,
    #[serde(rename = "Metadata", default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(rename = "Capabilities", default)]
    capabilities: Option<BTreeMap<String, bool>>,
    #[serde(rename = "Version", default)]
    version: String,
}

#[derive(Serialize, Deserialize)]
struct UnitModel {
    #[serde(rename = "Raw")]
    raw: String,
}

#[derive(Serialize, Deserialize)]
struct JobModel {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "UnitHash")]
    unit_hash: [u8; 20],
}

/// One entry of a machine's plan: what the engine wants it to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    #[serde(with = "hex_hash")]
    pub hash: UnitHash,
    pub target_state: TargetState,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::unit_file::UnitHash;

    pub fn serialize<S: Serializer>(hash: &UnitHash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(hash)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnitHash, D::Error> {
        let text = String::deserialize(d)?;
        UnitHash::from_hex(&text).ok_or_else(|| serde::de::Error::custom(format!("not a SHA-1: {text:?}")))
    }
}

/// The engine lease's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    #[serde(rename = "MachineID")]
    pub machine_id: String,
    #[serde(rename = "Version")]
    pub version: u32,
}

/// The lease as read: its holder and the index that guards renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub value: LeaseValue,
    pub index: u64,
    pub ttl: Option<i64>,
}

/// fleet's registry on an etcd v2 store.
#[derive(Debug, Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &str) -> Result<T, RegistryError> {
    serde_json::from_str(value).map_err(|e| RegistryError::Decode {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("registry values always encode")
}

fn is(e: &EtcdError, code: ErrorCode) -> bool {
    e.is(code)
}

/// The last segment of a node's key.
fn base(node: &Node) -> &str {
    node.key.rsplit('/').next().unwrap_or_default()
}

fn children(node: &Node) -> &[Node] {
    node.nodes.as_deref().unwrap_or_default()
}

impl Registry {
    pub fn new(client: Client, prefix: &str) -> Registry {
        let prefix = format!("/{}", prefix.trim_matches('/'));
        Registry { client, prefix }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `<prefix>/<parts...>`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push('/');
            key.push_str(part);
        }
        key
    }

    // ---- units and jobs ------------------------------------------------

    /// fleet's `CreateUnit`: stores the file under its hash (once), the job
    /// object, then the desired state. An existing job is replaced.
    pub async fn create_unit(&self, name: &str, unit: &UnitFile, target: TargetState) -> Result<(), RegistryError> {
        let hash = unit.hash();
        let raw = encode(&UnitModel { raw: unit.serialize() });
        let create_only = SetOptions { prev_exist: Some(false), ..SetOptions::default() };
        match self.client.set(&self.key(&["unit", &hash.to_string()]), &raw, &create_only).await {
            Ok(_) => {}
            Err(e) if is(&e, ErrorCode::NodeExist) => {}
            Err(e) => return Err(e.into()),
        }
        let object = encode(&JobModel { name: name.to_owned(), unit_hash: hash.0 });
        self.client.set(&self.key(&["job", name, "object"]), &object, &SetOptions::default()).await?;
        self.set_target_state(name, target).await
    }

    pub async fn set_target_state(&self, name: &str, target: TargetState) -> Result<(), RegistryError> {
        self.client.set(&self.key(&["job", name, "target-state"]), target.as_str(), &SetOptions::default()).await?;
        Ok(())
    }

    /// fleet's `DestroyUnit`: the job goes; its unit file stays.
    pub async fn destroy_unit(&self, name: &str) -> Result<(), RegistryError> {
        let options = DeleteOptions { recursive: true, dir: true, ..DeleteOptions::default() };
        match self.client.delete(&self.key(&["job", name]), &options).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Err(RegistryError::NoSuchJob),
            Err(e) => Err(e.into()),
        }
    }

    /// A unit file by hash.
    pub async fn unit_file(&self, hash: &UnitHash) -> Result<Option<UnitFile>, RegistryError> {
        let key = self.key(&["unit", &hash.to_string()]);
        match self.client.get(&key, &GetOptions { quorum: true, ..GetOptions::default() }).await {
            Ok(response) => Ok(Some(self.parse_unit_node(response.node())?)),
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn parse_unit_node(&self, node: &Node) -> Result<UnitFile, RegistryError> {
        let value = node.value.as_deref().unwrap_or_default();
        let model: UnitModel = decode(&node.key, value)?;
        UnitFile::parse(&model.raw).map_err(|source| RegistryError::UnitFile { key: node.key.clone(), source })
    }

    /// Every job, sorted by name, with its unit file. A job whose unit file
    /// is missing is skipped with a warning, as fleet does.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, RegistryError> {
        let recursive = GetOptions { recursive: true, sorted: true, quorum: true };
        let jobs = match self.client.get(&self.key(&["job"]), &recursive).await {
            Ok(response) => response.event.node,
            Err(e) if is(&e, ErrorCode::KeyNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let files = match self.client.get(&self.key(&["unit"]), &recursive).await {
            Ok(response) => response.event.node,
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Node::default(),
            Err(e) => return Err(e.into()),
        };
        let mut by_hash = BTreeMap::new();
        for node in children(&files) {
            if let Some(hash) = UnitHash::from_hex(base(node)) {
                by_hash.insert(hash, node);
            }
        }
        let mut out = Vec::new();
        for job in children(&jobs) {
            match self.parse_job(job, |hash| by_hash.get(hash).map(|n| self.parse_unit_node(n)).transpose())? {
                Some(record) => out.push(record),
                None => tracing::warn!(job = %base(job), "No Unit found in Registry for Job({})", base(job)),
            }
        }
        Ok(out)
    }

    /// One job, or `None`.
    pub async fn job(&self, name: &str) -> Result<Option<JobRecord>, RegistryError> {
        let recursive = GetOptions { recursive: true, sorted: true, quorum: true };
        let job = match self.client.get(&self.key(&["job", name]), &recursive).await {
            Ok(response) => response.event.node,
            Err(e) if is(&e, ErrorCode::KeyNotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let object = children(&job).iter().find(|n| base(n) == "object");
        let Some(object) = object else { return Ok(None) };
        let model: JobModel = decode(&object.key, object.value.as_deref().unwrap_or_default())?;
        let file = self.unit_file(&UnitHash(model.unit_hash)).await?;
        self.parse_job(&job, |_| Ok(file.clone()))
    }

    /// A job directory into a record; `file` finds the unit by hash.
    fn parse_job(
        &self,
        job: &Node,
        file: impl Fn(&UnitHash) -> Result<Option<UnitFile>, RegistryError>,
    ) -> Result<Option<JobRecord>, RegistryError> {
        let mut object = None;
        let (mut target_state, mut target, mut job_state) = (None, None, None);
        for child in children(job) {
            let value = child.value.clone().unwrap_or_default();
            match base(child) {
                "object" => object = Some(decode::<JobModel>(&child.key, &value)?),
                "target-state" => target_state = Some(TargetState::parse(&value)?),
                "target" if !value.is_empty() => target = Some(value),
                "job-state" if !value.is_empty() => job_state = Some(value),
                _ => {}
            }
        }
        let Some(object) = object else { return Ok(None) };
        let hash = UnitHash(object.unit_hash);
        let Some(unit) = file(&hash)? else { return Ok(None) };
        Ok(Some(JobRecord {
            name: base(job).to_owned(),
            hash,
            unit,
            target_state: target_state.unwrap_or(TargetState::Inactive),
            target,
            job_state,
        }))
    }

    /// The engine places a job: create-only, so two engines cannot both.
    pub async fn schedule(&self, name: &str, machine: &str) -> Result<bool, RegistryError> {
        let options = SetOptions { prev_exist: Some(false), ..SetOptions::default() };
        match self.client.set(&self.key(&["job", name, "target"]), machine, &options).await {
            Ok(_) => Ok(true),
            Err(e) if is(&e, ErrorCode::NodeExist) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The engine takes a job off `machine` (only if it is still there).
    pub async fn unschedule(&self, name: &str, machine: &str) -> Result<(), RegistryError> {
        for key in ["target", "job-state"] {
            let options = DeleteOptions { prev_value: Some(machine.to_owned()), ..DeleteOptions::default() };
            match self.client.delete(&self.key(&["job", name, key]), &options).await {
                Ok(_) => {}
                Err(e) if is(&e, ErrorCode::KeyNotFound) || is(&e, ErrorCode::TestFailed) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The agent records that it started a unit.
    pub async fn set_job_state(&self, name: &str, machine: &str) -> Result<(), RegistryError> {
        self.client.set(&self.key(&["job", name, "job-state"]), machine, &SetOptions::default()).await?;
        Ok(())
    }

    /// The agent records that it stopped a unit (if it was the one).
    pub async fn clear_job_state(&self, name: &str, machine: &str) -> Result<(), RegistryError> {
        let options = DeleteOptions { prev_value: Some(machine.to_owned()), ..DeleteOptions::default() };
        match self.client.delete(&self.key(&["job", name, "job-state"]), &options).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::KeyNotFound) || is(&e, ErrorCode::TestFailed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- machines ------------------------------------------------------

    /// Registers or refreshes a machine: its object with `ttl`. `create`
    /// refuses to take over a live machine of the same id (fleet's
    /// duplicate machine id check).
    pub async fn put_machine(&self, state: &MachineState, ttl: Duration, create: bool) -> Result<bool, RegistryError> {
        let options = SetOptions { ttl: Some(ttl), prev_exist: Some(!create), ..SetOptions::default() };
        match self.client.set(&self.key(&["machines", &state.id, "object"]), &encode(state), &options).await {
            Ok(_) => Ok(true),
            Err(e) if is(&e, ErrorCode::NodeExist) || is(&e, ErrorCode::KeyNotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn remove_machine(&self, id: &str) -> Result<(), RegistryError> {
        match self.client.delete(&self.key(&["machines", id, "object"]), &DeleteOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Live machines sorted by id, metadata merged as fleet does: API
    /// metadata wins over the machine's own, and an empty value removes
    /// the key.
    pub async fn machines(&self) -> Result<Vec<MachineState>, RegistryError> {
        let recursive = GetOptions { recursive: true, sorted: true, quorum: true };
        let root = match self.client.get(&self.key(&["machines"]), &recursive).await {
            Ok(response) => response.event.node,
            Err(e) if is(&e, ErrorCode::KeyNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for dir in children(&root) {
            let mut state: Option<MachineState> = None;
            let mut dynamic = BTreeMap::new();
            for child in children(dir) {
                match base(child) {
                    "object" => state = Some(decode(&child.key, child.value.as_deref().unwrap_or_default())?),
                    "metadata" => {
                        for entry in children(child) {
                            dynamic.insert(base(entry).to_owned(), entry.value.clone().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            if let Some(mut state) = state.filter(|s| !s.id.is_empty()) {
                for (key, value) in dynamic {
                    if value.is_empty() {
                        state.metadata.remove(&key);
                    } else {
                        state.metadata.insert(key, value);
                    }
                }
                out.push(state);
            }
        }
        Ok(out)
    }

    /// API metadata of a machine; `None` removes the key (stored as "").
    pub async fn set_machine_metadata(&self, id: &str, key: &str, value: Option<&str>) -> Result<(), RegistryError> {
        let path = self.key(&["machines", id, "metadata", key]);
        self.client.set(&path, value.unwrap_or_default(), &SetOptions::default()).await?;
        Ok(())
    }

    // ---- unit states ---------------------------------------------------

    pub async fn put_unit_state(&self, state: &UnitStateRecord) -> Result<(), RegistryError> {
        let model = UnitStateModel {
            load_state: state.load_state.clone(),
            active_state: state.active_state.clone(),
            sub_state: state.sub_state.clone(),
            machine_state: Some(MachineRef {
                id: state.machine_id.clone(),
                public_ip: String::new(),
                metadata: None,
                capabilities: None,
                version: String::new(),
            }),
            unit_hash: state.hash.clone(),
        };
        let key = self.key(&["states", &state.name, &state.machine_id]);
        self.client.set(&key, &encode(&model), &SetOptions::default()).await?;
        Ok(())
    }

    /// Removes one machine's state of a unit (and the unit's directory
    /// when it was the last).
    pub async fn remove_unit_state(&self, name: &str, machine: &str) -> Result<(), RegistryError> {
        match self.client.delete(&self.key(&["states", name, machine]), &DeleteOptions::default()).await {
            Ok(_) => {}
            Err(e) if is(&e, ErrorCode::KeyNotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let dir = DeleteOptions { dir: true, ..DeleteOptions::default() };
        match self.client.delete(&self.key(&["states", name]), &dir).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::DirNotEmpty) || is(&e, ErrorCode::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every unit state, sorted by unit name, then machine.
    pub async fn unit_states(&self) -> Result<Vec<UnitStateRecord>, RegistryError> {
        let recursive = GetOptions { recursive: true, sorted: true, quorum: true };
        let root = match self.client.get(&self.key(&["states"]), &recursive).await {
            Ok(response) => response.event.node,
            Err(e) if is(&e, ErrorCode::KeyNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for unit in children(&root) {
            for entry in children(unit) {
                let model: UnitStateModel = decode(&entry.key, entry.value.as_deref().unwrap_or_default())?;
                out.push(UnitStateRecord {
                    name: base(unit).to_owned(),
                    machine_id: model.machine_state.map(|m| m.id).unwrap_or_else(|| base(entry).to_owned()),
                    load_state: model.load_state,
                    active_state: model.active_state,
                    sub_state: model.sub_state,
                    hash: model.unit_hash,
                });
            }
        }
        Ok(out)
    }

    // ---- per-machine plans (Ferrite's) --------------------------------

    pub async fn put_plan(&self, machine: &str, name: &str, entry: &PlanEntry) -> Result<(), RegistryError> {
        self.client.set(&self.key(&["plan", machine, name]), &encode(entry), &SetOptions::default()).await?;
        Ok(())
    }

    pub async fn remove_plan(&self, machine: &str, name: &str) -> Result<(), RegistryError> {
        match self.client.delete(&self.key(&["plan", machine, name]), &DeleteOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a machine's whole plan (the machine is gone).
    pub async fn remove_machine_plan(&self, machine: &str) -> Result<(), RegistryError> {
        let options = DeleteOptions { recursive: true, dir: true, ..DeleteOptions::default() };
        match self.client.delete(&self.key(&["plan", machine]), &options).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A plan directory's entries by unit name.
    pub fn parse_plan(dir: Option<&Node>) -> Result<BTreeMap<String, PlanEntry>, RegistryError> {
        let mut out = BTreeMap::new();
        for entry in dir.map(children).unwrap_or_default() {
            out.insert(base(entry).to_owned(), decode(&entry.key, entry.value.as_deref().unwrap_or_default())?);
        }
        Ok(out)
    }

    /// Every machine's plan, by machine.
    pub async fn plans(&self) -> Result<BTreeMap<String, BTreeMap<String, PlanEntry>>, RegistryError> {
        let recursive = GetOptions { recursive: true, sorted: true, quorum: true };
        let root = match self.client.get(&self.key(&["plan"]), &recursive).await {
            Ok(response) => response.event.node,
            Err(e) if is(&e, ErrorCode::KeyNotFound) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.into()),
        };
        children(&root).iter().map(|dir| Ok((base(dir).to_owned(), Self::parse_plan(Some(dir))?))).collect()
    }

    /// One machine's plan and the index it was read at (to watch on from).
    pub async fn plan(&self, machine: &str) -> Result<(BTreeMap<String, PlanEntry>, u64), RegistryError> {
        let recursive = GetOptions { recursive: true, sorted: true, quorum: true };
        match self.client.get(&self.key(&["plan", machine]), &recursive).await {
            Ok(response) => Ok((Self::parse_plan(Some(response.node()))?, response.etcd_index())),
            Err(EtcdError::Api(e)) if e.code() == Some(ErrorCode::KeyNotFound) => Ok((BTreeMap::new(), e.index)),
            Err(e) => Err(e.into()),
        }
    }

    // ---- the engine lease ----------------------------------------------

    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, RegistryError> {
        let key = self.key(&["lease", name]);
        match self.client.get(&key, &GetOptions { quorum: true, ..GetOptions::default() }).await {
            Ok(response) => {
                let node = response.node();
                let text = node.value.clone().unwrap_or_default();
                // fleet reads a value that is not JSON as a bare machine id.
                let value = serde_json::from_str(&text).unwrap_or(LeaseValue { machine_id: text, version: 0 });
                Ok(Some(Lease { value, index: node.modified_index, ttl: Some(node.ttl).filter(|t| *t > 0) }))
            }
            Err(e) if is(&e, ErrorCode::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a free lease; `None` when someone holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        machine: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let value = LeaseValue { machine_id: machine.to_owned(), version: 1 };
        let options = SetOptions { ttl: Some(ttl), prev_exist: Some(false), ..SetOptions::default() };
        match self.client.set(&self.key(&["lease", name]), &encode(&value), &options).await {
            Ok(response) => Ok(Some(Lease { value, index: response.node().modified_index, ttl: None })),
            Err(e) if is(&e, ErrorCode::NodeExist) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews (or steals) a lease last written at `index`; `None` when it
    /// changed hands meanwhile.
    pub async fn renew_lease(
        &self,
        name: &str,
        machine: &str,
        index: u64,
        ttl: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let value = LeaseValue { machine_id: machine.to_owned(), version: 1 };
        let options = SetOptions { ttl: Some(ttl), prev_index: Some(index), ..SetOptions::default() };
        match self.client.set(&self.key(&["lease", name]), &encode(&value), &options).await {
            Ok(response) => Ok(Some(Lease { value, index: response.node().modified_index, ttl: None })),
            Err(e) if is(&e, ErrorCode::TestFailed) || is(&e, ErrorCode::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn release_lease(&self, name: &str, index: u64) -> Result<(), RegistryError> {
        let options = DeleteOptions { prev_index: Some(index), ..DeleteOptions::default() };
        match self.client.delete(&self.key(&["lease", name]), &options).await {
            Ok(_) => Ok(()),
            Err(e) if is(&e, ErrorCode::TestFailed) || is(&e, ErrorCode::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// fleet's engine version check: sets `engine/version` to 1 when absent
    /// or older; `false` when a newer engine owns the cluster.
    pub async fn claim_engine_version(&self) -> Result<bool, RegistryError> {
        const OURS: u32 = 1;
        let key = self.key(&["engine", "version"]);
        let current = match self.client.get(&key, &GetOptions { quorum: true, ..GetOptions::default() }).await {
            Ok(response) => response.node().value.clone().unwrap_or_default(),
            Err(e) if is(&e, ErrorCode::KeyNotFound) => String::new(),
            Err(e) => return Err(e.into()),
        };
        let version: u32 = current.parse().unwrap_or(0);
        if version > OURS {
            return Ok(false);
        }
        if version < OURS {
            let options = if current.is_empty() {
                SetOptions { prev_exist: Some(false), ..SetOptions::default() }
            } else {
                SetOptions { prev_value: Some(current), ..SetOptions::default() }
            };
            match self.client.set(&key, &OURS.to_string(), &options).await {
                Ok(_) => {}
                Err(e) if is(&e, ErrorCode::NodeExist) || is(&e, ErrorCode::TestFailed) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_objects_carry_the_hash_as_twenty_numbers() {
        let unit =
            UnitFile::parse("[Service]\nExecStart=/bin/bash -c \"while true; do echo Hello, World!; sleep 1; done\"\n")
                .unwrap();
        let json = encode(&JobModel { name: "hello.service".into(), unit_hash: unit.hash().0 });
        assert_eq!(
            json,
            r#"{"Name":"hello.service","UnitHash":[55,80,179,233,243,150,42,86,199,88,41,41,66,110,154,187,1,39,84,207]}"#
        );
        let raw = encode(&UnitModel { raw: unit.serialize() });
        assert_eq!(
            raw,
            r#"{"Raw":"[Service]\nExecStart=/bin/bash -c \"while true; do echo Hello, World!; sleep 1; done\"\n"}"#
        );
    }

    #[test]
    fn unit_states_are_fleets_model() {
        let model = UnitStateModel {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            machine_state: Some(MachineRef {
                id: "m1".into(),
                public_ip: String::new(),
                metadata: None,
                capabilities: None,
                version: String::new(),
            }),
            unit_hash: "3750b3e9f3962a56c7582929426e9abb012754cf".into(),
        };
        assert_eq!(
            encode(&model),
            r#"{"loadState":"loaded","activeState":"active","subState":"running","machineState":{"ID":"m1","PublicIP":"","Metadata":null,"Capabilities":null,"Version":""},"unitHash":"3750b3e9f3962a56c7582929426e9abb012754cf"}"#
        );
    }

    #[test]
    fn plan_entries_name_the_hash_in_hex() {
        let entry = PlanEntry { hash: UnitHash([0xab; 20]), target_state: TargetState::Launched };
        let json = encode(&entry);
        assert_eq!(json, format!(r#"{{"hash":"{}","targetState":"launched"}}"#, "ab".repeat(20)));
        assert_eq!(decode::<PlanEntry>("k", &json).unwrap(), entry);
    }

    #[test]
    fn target_states_parse_with_fleets_message() {
        assert_eq!(TargetState::parse("launched").unwrap(), TargetState::Launched);
        assert_eq!(TargetState::parse("running").unwrap_err().to_string(), "invalid value \"running\" for JobState");
    }
}
