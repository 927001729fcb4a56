//! What applying a config will do, as data: built from a [`CloudConfig`]
//! without touching the machine, so every key's effect is unit-tested.
//! [`crate::apply`] carries a plan out.

use crate::config::{CloudConfig, Lines, Unit, User};
use crate::substitute::Addresses;

/// Ferrite's store (etcd's place): `coreos.etcd`/`etcd2` land in its drop-in.
pub const STORE_UNIT: &str = "ferrite-store.service";
/// Ferrite's scheduler (fleet's place).
pub const FLEET_UNIT: &str = "ferrite-fleetd.service";
/// Ferrite's updater (update_engine's and locksmithd's place).
pub const UPDATE_UNIT: &str = "ferrite-update.service";
/// The drop-in coreos-cloudinit writes for a daemon's settings.
pub const DAEMON_DROP_IN: &str = "20-cloudinit.conf";
/// Where `coreos.update` is written.
pub const UPDATE_CONF: &str = "/etc/coreos/update.conf";
/// Read as the starting point when `/etc/coreos/update.conf` does not exist.
pub const DEFAULT_UPDATE_CONF: &str = "/usr/share/coreos/update.conf";
/// The name SSH keys are filed under in `~/.ssh/authorized_keys.d`.
pub const SSH_KEYS_NAME: &str = "ferrite-cloudinit";

/// A file to have on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// Absolute path on the machine.
    pub path: String,
    /// Its whole content.
    pub content: Vec<u8>,
    /// Its mode.
    pub mode: u32,
    /// `user[:group]` (names or ids), when not the writer's.
    pub owner: Option<String>,
    /// Where the user data asks for it; `None` for files Ferrite writes.
    pub origin: Option<Lines>,
}

impl FileWrite {
    /// A file of Ferrite's own (no owner, not from the user data).
    pub fn new(path: impl Into<String>, content: impl Into<Vec<u8>>, mode: u32) -> FileWrite {
        FileWrite { path: path.into(), content: content.into(), mode, owner: None, origin: None }
    }
}

/// SSH keys to authorize for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeys {
    /// The user.
    pub user: String,
    /// The keys.
    pub keys: Vec<String>,
    /// The line of the `ssh_authorized_keys` that gives them; `None` for
    /// keys from metadata.
    pub line: Option<usize>,
}

/// A file whose `KEY=value` lines are merged rather than replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// Absolute path on the machine.
    pub path: String,
    /// Read when `path` does not exist yet.
    pub fallback: Option<String>,
    /// The variables to set.
    pub vars: Vec<(String, String)>,
}

/// What to do with one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStep {
    /// The unit's name.
    pub name: String,
    /// In `/run` (gone at reboot) rather than `/etc`.
    pub runtime: bool,
    /// The unit file to write, if any.
    pub content: Option<String>,
    /// Drop-ins to write: (file name, content).
    pub drop_ins: Vec<(String, String)>,
    /// Mask (`true`), make sure a runtime mask is gone (`false` for runtime
    /// units), or leave alone (`None`).
    pub mask: Option<bool>,
    /// Enable it.
    pub enable: bool,
    /// The manager command to run on it afterwards.
    pub command: Option<String>,
    /// Where the user data asks for it; `None` for Ferrite's own steps.
    pub origin: Option<Lines>,
}

impl UnitStep {
    /// A `.network`, `.netdev` or `.link` unit, which goes to networkd.
    pub fn is_network(&self) -> bool {
        is_network_unit(&self.name)
    }

    /// Where the unit file goes.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir(), self.name)
    }

    /// Where a drop-in goes.
    pub fn drop_in_path(&self, drop_in: &str) -> String {
        format!("{}/{}.d/{drop_in}", self.dir(), self.name)
    }

    fn dir(&self) -> String {
        let base = if self.runtime { "/run/systemd" } else { "/etc/systemd" };
        let group = if self.is_network() { "network" } else { "system" };
        format!("{base}/{group}")
    }
}

/// Whether a unit command does something only to a running unit
/// (`try-restart`, `reload-or-try-restart`): on a unit that does not exist
/// it has nothing to do, so it is skipped rather than sent to systemd,
/// which would answer NoSuchUnit.
pub fn only_if_running(command: &str) -> bool {
    matches!(command, "try-restart" | "reload-or-try-restart")
}

/// Whether `name` is a networkd unit.
pub fn is_network_unit(name: &str) -> bool {
    matches!(name.rsplit_once('.').map(|(_, ext)| ext), Some("network" | "netdev" | "link"))
}

/// Everything applying a config does, in the order it is done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The static hostname to set.
    pub hostname: Option<String>,
    /// Users to create (or, when they exist, whose password to set).
    pub users: Vec<User>,
    /// SSH keys to authorize: (user, keys).
    pub ssh_keys: Vec<SshKeys>,
    /// Files to write, in order.
    pub files: Vec<FileWrite>,
    /// `update.conf`-style merges.
    pub merges: Vec<Merge>,
    /// Write `/etc/hosts` with `127.0.0.1 <hostname>`.
    pub etc_hosts: bool,
    /// `/etc/environment` variables (skipped when `write_files` writes that file).
    pub environment: Vec<(String, String)>,
    /// Units, in order.
    pub units: Vec<UnitStep>,
    /// A script to run once.
    pub script: Option<Vec<u8>>,
    /// Things given that are not applied, for the log.
    pub ignored: Vec<String>,
}

fn drop_in(vars: &[(&'static str, String)]) -> String {
    let mut out = String::from("[Service]\n");
    for (name, value) in vars {
        out.push_str(&format!("Environment=\"{name}={value}\"\n"));
    }
    out
}

fn daemon_settings(name: &str, vars: &[(&'static str, String)]) -> UnitStep {
    UnitStep {
        name: name.to_owned(),
        runtime: true,
        content: None,
        drop_ins: vec![(DAEMON_DROP_IN.to_owned(), drop_in(vars))],
        mask: Some(false),
        enable: false,
        command: None,
        origin: None,
    }
}

fn unit_step(unit: &Unit) -> UnitStep {
    UnitStep {
        name: unit.name.clone(),
        runtime: unit.runtime,
        content: unit.content.clone(),
        drop_ins: unit
            .drop_ins
            .iter()
            .filter(|d| !d.name.is_empty() && !d.content.is_empty())
            .map(|d| (d.name.clone(), d.content.clone()))
            .collect(),
        mask: if unit.mask {
            Some(true)
        } else if unit.runtime {
            Some(false)
        } else {
            None
        },
        enable: unit.enable && !is_network_unit(&unit.name),
        command: unit.command.clone(),
        origin: Some(unit.lines.clone()),
    }
}

/// Plans a config. `addresses` fill `/etc/environment`.
pub fn plan(config: &CloudConfig, addresses: &Addresses) -> Plan {
    let mut plan = Plan { hostname: config.hostname.clone(), ..Plan::default() };
    for user in &config.users {
        if user.name.is_empty() {
            plan.ignored.push("a user without a name".to_owned());
            continue;
        }
        plan.users.push(user.clone());
        if !user.ssh_authorized_keys.is_empty() {
            plan.ssh_keys.push(SshKeys {
                user: user.name.clone(),
                keys: user.ssh_authorized_keys.clone(),
                line: Some(user.lines.key("ssh_authorized_keys")),
            });
        }
    }
    if !config.ssh_authorized_keys.is_empty() {
        plan.ssh_keys.push(SshKeys {
            user: "core".to_owned(),
            keys: config.ssh_authorized_keys.clone(),
            line: Some(config.lines.key("ssh_authorized_keys")),
        });
    }
    for file in &config.write_files {
        plan.files.push(FileWrite {
            path: file.path.clone(),
            content: file.content.clone(),
            mode: file.mode,
            owner: file.owner.clone(),
            origin: Some(file.lines.clone()),
        });
    }
    let coreos = &config.coreos;
    if let Some((_, id)) = coreos.oem.iter().find(|(k, _)| *k == "ID") {
        let get = |key: &str| coreos.oem.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v.as_str());
        let content = format!(
            "ID={id}\nVERSION_ID={}\nNAME={:?}\nHOME_URL={:?}\nBUG_REPORT_URL={:?}\n",
            get("VERSION_ID"),
            get("NAME"),
            get("HOME_URL"),
            get("BUG_REPORT_URL"),
        );
        plan.files.push(FileWrite::new("/etc/oem-release", content, 0o644));
    }
    if !coreos.update.is_empty() {
        plan.merges.push(Merge {
            path: UPDATE_CONF.to_owned(),
            fallback: Some(DEFAULT_UPDATE_CONF.to_owned()),
            vars: coreos.update.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        });
    }
    plan.etc_hosts = config.manage_etc_hosts.as_deref() == Some("localhost");
    if !plan.files.iter().any(|f| crate::validate::clean_path(&f.path) == "/etc/environment") {
        plan.environment = addresses.environment();
    }
    plan.units = coreos.units.iter().filter(|u| !u.name.is_empty()).map(unit_step).collect();
    if coreos.units.iter().any(|u| u.name.is_empty()) {
        plan.ignored.push("a unit without a name".to_owned());
    }
    let store: Vec<_> = coreos.etcd.iter().chain(&coreos.etcd2).cloned().collect();
    if !store.is_empty() {
        plan.units.push(daemon_settings(STORE_UNIT, &store));
    }
    if !coreos.fleet.is_empty() {
        plan.units.push(daemon_settings(FLEET_UNIT, &coreos.fleet));
    }
    if !coreos.locksmith.is_empty() {
        plan.units.push(daemon_settings(UPDATE_UNIT, &coreos.locksmith));
    }
    if !coreos.update.is_empty() || !coreos.locksmith.is_empty() {
        // One daemon updates and coordinates reboots: it rereads update.conf
        // and its drop-in when restarted, and is left alone when not running
        // (at boot, this runs before it starts).
        plan.units.push(UnitStep {
            name: UPDATE_UNIT.to_owned(),
            runtime: false,
            content: None,
            drop_ins: Vec::new(),
            mask: None,
            enable: false,
            command: Some("try-restart".to_owned()),
            origin: None,
        });
    }
    if coreos.flannel {
        plan.ignored.push("coreos.flannel (flannel is not shipped in Ferrite)".to_owned());
    }
    plan
}

/// Adds what a datasource's metadata supplies: its hostname when the
/// config sets none, and its SSH keys for `core`.
pub fn add_metadata(plan: &mut Plan, metadata: &crate::datasource::Metadata) {
    if plan.hostname.is_none() {
        plan.hostname.clone_from(&metadata.hostname);
    }
    if !metadata.ssh_public_keys.is_empty() {
        match plan.ssh_keys.iter_mut().find(|k| k.user == "core") {
            Some(core) => {
                for key in &metadata.ssh_public_keys {
                    if !core.keys.contains(key) {
                        core.keys.push(key.clone());
                    }
                }
            }
            None => plan.ssh_keys.push(SshKeys {
                user: "core".to_owned(),
                keys: metadata.ssh_public_keys.clone(),
                line: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_cloud_config;

    fn plan_of(text: &str) -> Plan {
        let (report, tree) = validate_cloud_config(text);
        assert!(!report.has_errors(), "{report}");
        let config = CloudConfig::from_tree(&tree.unwrap()).unwrap();
        plan(&config, &Addresses { private_ipv4: Some("10.0.0.5".parse().unwrap()), ..Addresses::default() })
    }

    #[test]
    fn the_seed_config_becomes_a_store_drop_in_and_two_starts() {
        let plan = plan_of(
            "#cloud-config\ncoreos:\n  etcd:\n    discovery: https://discovery.etcd.io/abc\n    addr: 10.0.0.5:4001\n    peer-addr: 10.0.0.5:7001\n  units:\n    - name: etcd.service\n      command: start\n    - name: fleet.service\n      command: start\n",
        );
        let names: Vec<_> = plan.units.iter().map(|u| (u.name.as_str(), u.command.as_deref())).collect();
        assert_eq!(names, [("etcd.service", Some("start")), ("fleet.service", Some("start")), (STORE_UNIT, None)]);
        let store = &plan.units[2];
        assert!(store.runtime);
        assert_eq!(store.drop_in_path(DAEMON_DROP_IN), "/run/systemd/system/ferrite-store.service.d/20-cloudinit.conf");
        assert_eq!(
            store.drop_ins[0].1,
            "[Service]\nEnvironment=\"ETCD_ADDR=10.0.0.5:4001\"\nEnvironment=\"ETCD_DISCOVERY=https://discovery.etcd.io/abc\"\nEnvironment=\"ETCD_PEER_ADDR=10.0.0.5:7001\"\n"
        );
        assert_eq!(plan.environment, [("COREOS_PRIVATE_IPV4".to_owned(), "10.0.0.5".to_owned())]);
    }

    #[test]
    fn fleet_locksmith_and_update_reach_ferrite_daemons() {
        let plan = plan_of(
            "#cloud-config\ncoreos:\n  fleet:\n    public-ip: 10.0.0.5\n    verbosity: 2\n    disable_engine: true\n  locksmith:\n    group: web\n  update:\n    reboot-strategy: off\n    group: beta\n",
        );
        let fleet = plan.units.iter().find(|u| u.name == FLEET_UNIT).unwrap();
        assert_eq!(
            fleet.drop_ins[0].1,
            "[Service]\nEnvironment=\"FLEET_DISABLE_ENGINE=true\"\nEnvironment=\"FLEET_PUBLIC_IP=10.0.0.5\"\nEnvironment=\"FLEET_VERBOSITY=2\"\n"
        );
        let update = plan.units.iter().find(|u| u.name == UPDATE_UNIT && u.runtime).unwrap();
        assert_eq!(update.drop_ins[0].1, "[Service]\nEnvironment=\"LOCKSMITHD_GROUP=web\"\n");
        assert!(plan.units.iter().any(|u| u.name == UPDATE_UNIT && u.command.as_deref() == Some("try-restart")));
        assert_eq!(
            plan.merges[0].vars,
            [("REBOOT_STRATEGY".to_owned(), "off".to_owned()), ("GROUP".to_owned(), "beta".to_owned())]
        );
    }

    #[test]
    fn units_follow_coreos_cloudinit_rules() {
        let plan = plan_of(
            "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      mask: true\n    - name: b.service\n      runtime: true\n      enable: true\n      content: x\n    - name: 10-eth.network\n      enable: true\n      content: y\n      command: start\n    - command: start\n",
        );
        assert_eq!(plan.units[0].mask, Some(true));
        assert_eq!(plan.units[1].mask, Some(false));
        assert_eq!(plan.units[1].path(), "/run/systemd/system/b.service");
        assert!(plan.units[1].enable);
        assert!(!plan.units[2].enable, "network units are never enabled");
        assert_eq!(plan.units[2].path(), "/etc/systemd/network/10-eth.network");
        assert_eq!(plan.units.len(), 3);
        assert_eq!(plan.ignored, ["a unit without a name"]);
    }

    #[test]
    fn users_keys_files_oem_hosts() {
        let plan = plan_of(
            "#cloud-config\nssh_authorized_keys: [k1]\nusers:\n  - name: bob\n    ssh-authorized-keys: [k2]\n  - gecos: nameless\nwrite_files:\n  - path: /etc/x\n    permissions: 0600\n    content: hi\nmanage_etc_hosts: localhost\ncoreos:\n  oem:\n    id: qemu\n    name: QEMU\n",
        );
        assert_eq!(plan.users.len(), 1);
        let keys: Vec<_> = plan.ssh_keys.iter().map(|k| (k.user.as_str(), k.keys.join(","), k.line)).collect();
        assert_eq!(keys, [("bob", "k2".to_owned(), Some(5)), ("core", "k1".to_owned(), Some(2))]);
        assert_eq!(plan.files[0].mode, 0o600);
        assert_eq!(plan.files[1].path, "/etc/oem-release");
        assert_eq!(
            String::from_utf8_lossy(&plan.files[1].content),
            "ID=qemu\nVERSION_ID=\nNAME=\"QEMU\"\nHOME_URL=\"\"\nBUG_REPORT_URL=\"\"\n"
        );
        assert!(plan.etc_hosts);
    }

    #[test]
    fn metadata_fills_the_hostname_and_adds_core_keys() {
        let mut plan = plan_of("#cloud-config\nssh_authorized_keys: [k1]\n");
        let metadata = crate::datasource::Metadata {
            hostname: Some("from-metadata".to_owned()),
            ssh_public_keys: vec!["k1".to_owned(), "k2".to_owned()],
            ..Default::default()
        };
        add_metadata(&mut plan, &metadata);
        assert_eq!(plan.hostname.as_deref(), Some("from-metadata"));
        assert_eq!(plan.ssh_keys.len(), 1);
        assert_eq!(
            (plan.ssh_keys[0].user.as_str(), &plan.ssh_keys[0].keys[..]),
            ("core", &["k1".to_owned(), "k2".to_owned()][..])
        );
        let mut named = plan_of("#cloud-config\nhostname: mine\n");
        add_metadata(&mut named, &metadata);
        assert_eq!(named.hostname.as_deref(), Some("mine"), "the config's hostname wins");
    }

    #[test]
    fn writing_etc_environment_replaces_the_merge() {
        let plan = plan_of("#cloud-config\nwrite_files:\n  - path: /etc/environment\n    content: A=1\n");
        assert!(plan.environment.is_empty());
    }
}
