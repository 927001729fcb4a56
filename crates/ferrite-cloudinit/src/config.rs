//! The typed cloud-config, built from a validated, normalized tree. Pure:
//! no I/O.

use crate::decode::{decode_content, DecodeError};
use crate::schema::{self, Field, Kind};
use crate::yaml::{Node, ScalarKind, Value};

/// A cloud-config, as coreos-cloudinit understands one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudConfig {
    /// Where the top-level keys are.
    pub lines: Lines,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `ssh_authorized_keys`, for the user `core`.
    pub ssh_authorized_keys: Vec<String>,
    /// `users`.
    pub users: Vec<User>,
    /// `write_files`, contents decoded.
    pub write_files: Vec<WriteFile>,
    /// `manage_etc_hosts` (only `localhost` is valid).
    pub manage_etc_hosts: Option<String>,
    /// `coreos.*`.
    pub coreos: CoreOs,
}

/// `coreos.*`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreOs {
    /// `coreos.etcd` as `ETCD_*` variables, in coreos-cloudinit's order.
    pub etcd: Vec<(&'static str, String)>,
    /// `coreos.etcd2` as `ETCD_*` variables.
    pub etcd2: Vec<(&'static str, String)>,
    /// `coreos.fleet` as `FLEET_*` variables.
    pub fleet: Vec<(&'static str, String)>,
    /// `coreos.locksmith` as `LOCKSMITHD_*` / `REBOOT_WINDOW_*` variables.
    pub locksmith: Vec<(&'static str, String)>,
    /// `coreos.update` as update.conf keys (`REBOOT_STRATEGY`, `GROUP`, `SERVER`).
    pub update: Vec<(&'static str, String)>,
    /// `coreos.oem` as os-release keys.
    pub oem: Vec<(&'static str, String)>,
    /// Whether a `coreos.flannel` section was given (nothing is applied).
    pub flannel: bool,
    /// `coreos.units`.
    pub units: Vec<Unit>,
}

/// Where an item of a list (a user, a file, a unit) and each of its keys
/// are in the document, so what goes wrong later can name its line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines {
    /// The item's line.
    pub item: usize,
    /// Each key's line.
    pub keys: Vec<(String, usize)>,
}

impl Lines {
    /// The lines of a mapping node and its keys.
    pub fn of(node: &Node) -> Lines {
        Lines { item: node.line, keys: node.entries().iter().map(|(k, v)| (k.clone(), v.line)).collect() }
    }

    /// The line of `key` (`-` and `_` alike), or the item's when it is absent.
    pub fn key(&self, key: &str) -> usize {
        let key = key.replace('-', "_");
        self.keys.iter().find(|(k, _)| *k == key).map_or(self.item, |(_, line)| *line)
    }
}

/// `users[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct User {
    pub lines: Lines,
    pub name: String,
    pub passwd: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub gecos: Option<String>,
    pub homedir: Option<String>,
    pub no_create_home: bool,
    pub primary_group: Option<String>,
    pub groups: Vec<String>,
    pub no_user_group: bool,
    pub system: bool,
    pub no_log_init: bool,
    pub shell: Option<String>,
}

/// `write_files[]`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute path on the machine.
    pub path: String,
    /// The decoded content.
    pub content: Vec<u8>,
    /// The mode (0644 when not given).
    pub mode: u32,
    /// `user`, `user:group` or numeric ids, when given.
    pub owner: Option<String>,
    /// Where it is in the document.
    pub lines: Lines,
}

/// `coreos.units[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Unit {
    pub lines: Lines,
    pub name: String,
    pub mask: bool,
    pub enable: bool,
    pub runtime: bool,
    pub content: Option<String>,
    pub command: Option<String>,
    pub drop_ins: Vec<DropIn>,
}

/// `coreos.units[].drop_ins[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DropIn {
    pub name: String,
    pub content: String,
}

/// A tree the validator let through that still cannot become a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `write_files[].content` cannot be decoded.
    #[error("line {line}: content of {path} cannot be decoded")]
    Content {
        /// The file.
        path: String,
        /// The line of its content.
        line: usize,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// `write_files[].permissions` is not octal.
    #[error("line {line}: permissions {value:?} of {path} are not an octal mode")]
    Permissions {
        /// The file.
        path: String,
        /// The line.
        line: usize,
        /// The value given.
        value: String,
    },
}

fn text(node: &Node, key: &str) -> Option<String> {
    node.get(key).and_then(Node::text).filter(|t| !t.is_empty()).map(str::to_owned)
}

fn flag(node: &Node, key: &str) -> bool {
    matches!(
        node.get(key).map(|n| &n.value),
        Some(Value::Scalar(crate::yaml::Scalar { kind: ScalarKind::Bool(true), .. }))
    )
}

fn strings(node: &Node, key: &str) -> Vec<String> {
    node.get(key)
        .map(|list| list.items().iter().filter_map(Node::text).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A section's keys as `NAME=value` pairs, in the schema's order, leaving out
/// absent, mistyped and zero values (coreos-cloudinit's `IsZero`), values
/// printed as Go's `%v` prints them.
fn env_section(section: Option<&Node>, fields: &'static [Field]) -> Vec<(&'static str, String)> {
    let Some(section) = section else { return Vec::new() };
    let mut vars = Vec::new();
    for field in fields {
        let (Some(env), Some(node)) = (field.env, section.get(field.name)) else { continue };
        let Value::Scalar(scalar) = &node.value else { continue };
        let value = match (field.kind, scalar.kind) {
            (_, ScalarKind::Null) => continue,
            (Kind::Str, _) if !scalar.text.is_empty() => scalar.text.clone(),
            (Kind::Bool, ScalarKind::Bool(true)) => "true".to_owned(),
            (Kind::Int, ScalarKind::Int(n)) if n != 0 => n.to_string(),
            (Kind::Float, ScalarKind::Int(n)) if n != 0 => n.to_string(),
            (Kind::Float, ScalarKind::Float(f)) if f != 0.0 => f.to_string(),
            _ => continue,
        };
        vars.push((env, value));
    }
    vars
}

impl CloudConfig {
    /// Builds the config from a normalized tree (see
    /// [`crate::validate::validate_cloud_config`]).
    pub fn from_tree(root: &Node) -> Result<CloudConfig, ConfigError> {
        let coreos = root.get("coreos");
        let section = |name: &str| coreos.and_then(|c| c.get(name)).filter(|n| matches!(n.value, Value::Map(_)));
        let mut config = CloudConfig {
            lines: Lines::of(root),
            hostname: text(root, "hostname"),
            ssh_authorized_keys: strings(root, "ssh_authorized_keys"),
            manage_etc_hosts: text(root, "manage_etc_hosts"),
            ..CloudConfig::default()
        };
        config.coreos.etcd = env_section(section("etcd"), schema::ETCD);
        config.coreos.etcd2 = env_section(section("etcd2"), schema::ETCD2);
        config.coreos.fleet = env_section(section("fleet"), schema::FLEET);
        config.coreos.locksmith = env_section(section("locksmith"), schema::LOCKSMITH);
        config.coreos.update = env_section(section("update"), schema::UPDATE);
        config.coreos.oem = env_section(section("oem"), schema::OEM);
        config.coreos.flannel = section("flannel").is_some();
        if let Some(users) = root.get("users") {
            for user in users.items().iter().filter(|u| matches!(u.value, Value::Map(_))) {
                config.users.push(User {
                    lines: Lines::of(user),
                    name: text(user, "name").unwrap_or_default(),
                    passwd: text(user, "passwd"),
                    ssh_authorized_keys: strings(user, "ssh_authorized_keys"),
                    gecos: text(user, "gecos"),
                    homedir: text(user, "homedir"),
                    no_create_home: flag(user, "no_create_home"),
                    primary_group: text(user, "primary_group"),
                    groups: strings(user, "groups"),
                    no_user_group: flag(user, "no_user_group"),
                    system: flag(user, "system"),
                    no_log_init: flag(user, "no_log_init"),
                    shell: text(user, "shell"),
                });
            }
        }
        if let Some(files) = root.get("write_files") {
            for file in files.items().iter().filter(|f| matches!(f.value, Value::Map(_))) {
                config.write_files.push(write_file(file)?);
            }
        }
        if let Some(units) = section_list(coreos, "units") {
            for unit in units.iter().filter(|u| matches!(u.value, Value::Map(_))) {
                let drop_ins = unit
                    .get("drop_ins")
                    .map(|d| {
                        d.items()
                            .iter()
                            .map(|d| DropIn {
                                name: text(d, "name").unwrap_or_default(),
                                content: text(d, "content").unwrap_or_default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                config.coreos.units.push(Unit {
                    lines: Lines::of(unit),
                    name: text(unit, "name").unwrap_or_default(),
                    mask: flag(unit, "mask"),
                    enable: flag(unit, "enable"),
                    runtime: flag(unit, "runtime"),
                    content: text(unit, "content"),
                    command: text(unit, "command"),
                    drop_ins,
                });
            }
        }
        Ok(config)
    }
}

fn section_list<'a>(coreos: Option<&'a Node>, name: &str) -> Option<&'a [Node]> {
    coreos.and_then(|c| c.get(name)).map(Node::items)
}

fn write_file(file: &Node) -> Result<WriteFile, ConfigError> {
    let path = text(file, "path").unwrap_or_default();
    let encoding = text(file, "encoding").unwrap_or_default();
    let content_node = file.get("content");
    let raw = content_node.and_then(Node::bytes).unwrap_or_default();
    let content = decode_content(raw, &encoding).map_err(|source| ConfigError::Content {
        path: path.clone(),
        line: content_node.map_or(file.line, |c| c.line),
        source,
    })?;
    let mode = match text(file, "permissions") {
        None => 0o644,
        Some(value) => u32::from_str_radix(&value, 8).map_err(|_| ConfigError::Permissions {
            path: path.clone(),
            line: file.get("permissions").map_or(file.line, |p| p.line),
            value: value.clone(),
        })?,
    };
    Ok(WriteFile { path, content, mode, owner: text(file, "owner"), lines: Lines::of(file) })
}
