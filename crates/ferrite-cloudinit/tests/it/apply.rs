//! Offline applies (`--root`) to temporary trees: every key lands where a
//! user would look for it, and a second apply changes nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use ferrite_cloudinit::apply::{apply, ApplyError, Machine, Offline};
use ferrite_cloudinit::config::User;
use ferrite_cloudinit::substitute::Addresses;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures").join(name)).unwrap()
}

fn addresses() -> Addresses {
    Addresses {
        private_ipv4: Some("10.0.0.5".parse().unwrap()),
        public_ipv4: Some("203.0.113.5".parse().unwrap()),
        ..Addresses::default()
    }
}

/// A tree with a passwd file naming `core` as the test's own user, so
/// files owned by `core` need no privilege.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::create_dir_all(dir.path().join("home/core")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        format!("root:x:0:0:root:/root:/bin/sh\ncore:x:{uid}:{gid}:Core:/home/core:/bin/bash\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("etc/group"), format!("root:x:0:\nsudo:x:27:\ncore:x:{gid}:\n")).unwrap();
    std::fs::write(dir.path().join("etc/environment"), "# kept\nPATH=/usr/bin\nCOREOS_PRIVATE_IPV4=10.9.9.9\n")
        .unwrap();
    dir
}

/// Every path in the tree with what it is: file content, link target, or dir.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {:o}", meta.mode() & 0o7777));
                walk(root, &path, out);
            } else {
                let content = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                out.insert(rel, format!("{:o} {}:{} {content}", meta.mode() & 0o7777, meta.uid(), meta.gid()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs `ferrite-cloudinit apply --from-file INPUT --root ROOT EXTRA...`
/// with no `COREOS_*` addresses from the environment.
fn apply_file(input: &Path, root: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite-cloudinit"))
        .args(["apply", "--from-file"])
        .arg(input)
        .arg("--root")
        .arg(root)
        .args(extra)
        .env_remove("COREOS_PUBLIC_IPV4")
        .env_remove("COREOS_PRIVATE_IPV4")
        .output()
        .unwrap()
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mode(root: &Path, path: &str) -> u32 {
    std::fs::metadata(root.join(path.trim_start_matches('/'))).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_seed_config_configures_the_store_and_starts_etcd_and_fleet() {
    let dir = tree();
    let root = dir.path();
    let (report, plan) =
        ferrite_cloudinit::prepare(fixture("apply/seed.yaml").as_bytes(), &addresses(), |_| None).unwrap();
    assert!(report.entries.is_empty(), "{report}");
    let mut machine = Offline::default();
    apply(&plan, root, &mut machine).unwrap();
    assert_eq!(
        read(root, "/run/systemd/system/ferrite-store.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"ETCD_ADDR=10.0.0.5:4001\"\nEnvironment=\"ETCD_DISCOVERY=https://discovery.etcd.io/<token>\"\nEnvironment=\"ETCD_PEER_ADDR=10.0.0.5:7001\"\n"
    );
    assert_eq!(
        read(root, "/etc/environment"),
        "# kept\nPATH=/usr/bin\nCOREOS_PRIVATE_IPV4=10.0.0.5\nCOREOS_PUBLIC_IPV4=203.0.113.5\n"
    );
    assert_eq!(machine.skipped, ["daemon-reload", "start etcd.service", "start fleet.service"]);

    let before = snapshot(root);
    let outcome = apply(&plan, root, &mut Offline::default()).unwrap();
    assert_eq!(outcome.changes, Vec::<String>::new());
    assert_eq!(snapshot(root), before);
}

fn rich_plan(root: &Path) -> ferrite_cloudinit::plan::Plan {
    let meta = std::fs::metadata(root).unwrap();
    let config = fixture("apply/rich.yaml").replace("OWNER", &format!("core:{}", meta.gid()));
    let (report, plan) = ferrite_cloudinit::prepare(config.as_bytes(), &addresses(), |_| None).unwrap();
    assert!(report.entries.is_empty(), "{report}");
    plan
}

#[test]
fn a_rich_config_lands_in_the_tree_and_a_second_apply_changes_nothing() {
    let dir = tree();
    let root = dir.path();
    std::fs::create_dir_all(root.join("usr/share/coreos")).unwrap();
    std::fs::write(root.join("usr/share/coreos/update.conf"), "GROUP=stable\nSERVER=http://default\n").unwrap();
    let plan = rich_plan(root);
    let mut machine = Offline::default();
    let outcome = apply(&plan, root, &mut machine).unwrap();
    assert!(!outcome.changes.is_empty());

    assert_eq!(read(root, "/etc/hostname"), "node1\n");
    assert_eq!(read(root, "/etc/hosts"), "127.0.0.1 node1\n");
    assert_eq!(read(root, "/etc/motd"), "Welcome to 10.0.0.5, not $private_ipv4\n");
    assert_eq!(mode(root, "/etc/motd"), 0o600);
    assert_eq!(read(root, "/etc/b64"), "hello\n");
    assert_eq!(mode(root, "/etc/b64"), 0o640);
    assert_eq!(read(root, "/etc/gz"), "hello\n");
    assert_eq!(mode(root, "/etc/gz"), 0o755);
    assert_eq!(read(root, "/var/lib/deep/dir/file"), "x");
    assert_eq!(mode(root, "/var/lib/deep/dir/file"), 0o644);

    let keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIcore core@example\n";
    assert_eq!(read(root, "/home/core/.ssh/authorized_keys.d/ferrite-cloudinit"), keys);
    assert_eq!(read(root, "/home/core/.ssh/authorized_keys"), keys);
    assert_eq!(mode(root, "/home/core/.ssh/authorized_keys"), 0o600);
    assert_eq!(mode(root, "/home/core/.ssh"), 0o700);

    assert_eq!(
        read(root, "/run/systemd/system/ferrite-store.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"ETCD_ADVERTISE_CLIENT_URLS=http://203.0.113.5:2379\"\nEnvironment=\"ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379\"\n"
    );
    assert_eq!(
        read(root, "/run/systemd/system/ferrite-fleetd.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"FLEET_METADATA=region=test\"\nEnvironment=\"FLEET_PUBLIC_IP=10.0.0.5\"\n"
    );
    assert_eq!(read(root, "/etc/coreos/update.conf"), "GROUP=beta\nSERVER=http://default\nREBOOT_STRATEGY=etcd-lock\n");

    assert!(read(root, "/etc/systemd/system/hello.service").contains("ExecStart=/bin/sh -c 'echo hello > /run/hello'"));
    assert_eq!(read(root, "/etc/systemd/system/hello.service.d/10-env.conf"), "[Service]\nEnvironment=GREETING=hi\n");
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/multi-user.target.wants/hello.service")).unwrap(),
        Path::new("/etc/systemd/system/hello.service")
    );
    assert_eq!(read(root, "/run/systemd/system/runtime.service"), "[Service]\nExecStart=/bin/true\n");
    assert_eq!(std::fs::read_link(root.join("etc/systemd/system/masked.service")).unwrap(), Path::new("/dev/null"));
    assert_eq!(read(root, "/etc/systemd/network/10-eth.network"), "[Match]\nName=eth9\n");
    assert_eq!(
        machine.skipped,
        [
            "daemon-reload",
            "restart systemd-networkd.service",
            "start hello.service",
            "try-restart ferrite-update.service"
        ]
    );

    let before = snapshot(root);
    let mut again = Offline::default();
    let outcome = apply(&plan, root, &mut again).unwrap();
    assert_eq!(outcome.changes, Vec::<String>::new());
    assert_eq!(snapshot(root), before);
    assert_eq!(
        again.skipped,
        ["start hello.service", "try-restart ferrite-update.service"],
        "no reload, no networkd restart"
    );
}

#[test]
fn unmasking_a_runtime_unit_removes_only_a_mask() {
    let dir = tree();
    let root = dir.path();
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    std::os::unix::fs::symlink("/dev/null", root.join("run/systemd/system/a.service")).unwrap();
    let config = "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      runtime: true\n";
    let (_, plan) = ferrite_cloudinit::prepare(config.as_bytes(), &Addresses::default(), |_| None).unwrap();
    let outcome = apply(&plan, root, &mut Offline::default()).unwrap();
    assert_eq!(outcome.changes, ["a.service unmasked"]);
    assert!(std::fs::symlink_metadata(root.join("run/systemd/system/a.service")).is_err());
}

/// systemd-networkd starts beside cloud-config, not after it: a network
/// file that write_files changes restarts it, as a network unit does; a
/// file elsewhere, or one already as written, does not.
#[test]
fn a_network_file_from_write_files_restarts_networkd() {
    let dir = tree();
    let root = dir.path();
    let config = "#cloud-config\nwrite_files:\n  - path: /etc/systemd/network/20-static.network\n    \
                  content: |\n      [Match]\n      Name=eth0\n  - path: /etc/motd\n    content: hi\n";
    let (_, plan) = ferrite_cloudinit::prepare(config.as_bytes(), &Addresses::default(), |_| None).unwrap();
    let mut machine = Offline::default();
    apply(&plan, root, &mut machine).unwrap();
    assert_eq!(machine.skipped, ["restart systemd-networkd.service"]);
    let mut again = Offline::default();
    apply(&plan, root, &mut again).unwrap();
    assert_eq!(again.skipped, Vec::<String>::new());

    let config = "#cloud-config\nwrite_files:\n  - path: /etc/systemd/network.conf\n    content: x\n";
    let (_, plan) = ferrite_cloudinit::prepare(config.as_bytes(), &Addresses::default(), |_| None).unwrap();
    let mut machine = Offline::default();
    apply(&plan, root, &mut machine).unwrap();
    assert_eq!(machine.skipped, Vec::<String>::new());
}

#[test]
fn a_config_with_mistakes_is_refused_whole_and_the_tree_is_untouched() {
    let dir = tree();
    let root = dir.path();
    let before = snapshot(root);
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/validate/several-mistakes.yaml");
    let output = apply_file(&input, root, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout, std::fs::read_to_string(input.with_extension("report")).unwrap());
    assert_eq!(stdout.matches(": error: ").count(), 4);
    assert_eq!(snapshot(root), before);
}

/// A valid config the tree cannot take (a missing group, owner and unit, a
/// path under a file) is refused before the first change: every problem
/// with its line, exit 1, and the hostname, users and files it would have
/// set first are not there. Offline, unit commands are only recorded, so
/// the unit `start` names need not exist.
#[test]
fn a_config_the_tree_cannot_take_changes_nothing() {
    let dir = tree();
    let root = dir.path();
    let before = snapshot(root);
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/apply/not-on-this-target.yaml");
    let output = apply_file(&input, root, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        std::fs::read_to_string(input.with_extension("report")).unwrap()
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing applied"));
    assert_eq!(snapshot(root), before);

    // Once the tree has what the config needs, the same plan applies.
    std::fs::write(root.join("etc/group"), format!("{}nosuchgroup:x:2000:\n", read(root, "/etc/group"))).unwrap();
    std::fs::write(root.join("etc/passwd"), format!("{}mallory:x:2001:2001::/:/bin/sh\n", read(root, "/etc/passwd")))
        .unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd/system")).unwrap();
    std::fs::write(root.join("usr/lib/systemd/system/nothere.service"), "[Install]\nWantedBy=multi-user.target\n")
        .unwrap();
    let fixed = std::fs::read_to_string(&input)
        .unwrap()
        .replace("/etc/passwd/oops", "/etc/oops")
        .replace("mallory:core", "")
        // Keys for a user the fake makes would need chown to another uid.
        .replace("    ssh_authorized_keys: [ssh-ed25519 AAAAbob bob@example]\n", "");
    let (_, plan) = ferrite_cloudinit::prepare(fixed.as_bytes(), &Addresses::default(), |_| None).unwrap();
    let mut machine = FakeUsers::default();
    apply(&plan, root, &mut machine).unwrap();
    assert_eq!(machine.created, ["alice", "bob"]);
    assert_eq!(read(root, "/etc/motd"), "hello");
}

#[test]
fn the_binary_applies_the_seed_config_offline() {
    let dir = tree();
    let root = dir.path();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/apply/seed.yaml");
    let output = apply_file(&input, root, &["--private-ipv4", "192.0.2.7"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(read(root, "/run/systemd/system/ferrite-store.service.d/20-cloudinit.conf")
        .contains("Environment=\"ETCD_PEER_ADDR=192.0.2.7:7001\""));
}

/// Users go through the machine; this one edits the tree's passwd file.
#[derive(Default)]
struct FakeUsers {
    created: Vec<String>,
    passwords: Vec<(String, String)>,
}

impl Machine for FakeUsers {
    fn set_hostname(&mut self, _: &Path, _: &str) -> Result<bool, ApplyError> {
        Ok(false)
    }
    fn create_user(&mut self, root: &Path, user: &User) -> Result<(), ApplyError> {
        let passwd = root.join("etc/passwd");
        let mut text = std::fs::read_to_string(&passwd).unwrap();
        let uid = 1000 + self.created.len();
        let home = user.homedir.clone().unwrap_or(format!("/home/{}", user.name));
        text.push_str(&format!("{}:x:{uid}:{uid}::{home}:/bin/sh\n", user.name));
        std::fs::write(passwd, text).unwrap();
        self.created.push(user.name.clone());
        Ok(())
    }
    fn set_password(&mut self, _: &Path, name: &str, hash: &str) -> Result<(), ApplyError> {
        self.passwords.push((name.to_owned(), hash.to_owned()));
        Ok(())
    }
    fn enable_unit(&mut self, _: &Path, _: &str, _: bool) -> Result<bool, ApplyError> {
        Ok(false)
    }
    fn daemon_reload(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }
    fn unit_command(&mut self, _: &str, _: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn run_script(&mut self, _: &str) -> Result<bool, ApplyError> {
        Ok(true)
    }
    fn unit_exists(&mut self, root: &Path, unit: &str) -> Result<bool, ApplyError> {
        Offline::default().unit_exists(root, unit)
    }
    fn runs_unit_commands(&self) -> bool {
        false
    }
}

#[test]
fn users_are_created_once_and_existing_users_get_their_password() {
    let dir = tree();
    let root = dir.path();
    let config = "#cloud-config\nusers:\n  - name: alice\n    passwd: $6$x$y\n    groups: [sudo]\n  - name: core\n    passwd: $6$a$b\n";
    let (_, plan) = ferrite_cloudinit::prepare(config.as_bytes(), &Addresses::default(), |_| None).unwrap();
    let mut machine = FakeUsers::default();
    apply(&plan, root, &mut machine).unwrap();
    assert_eq!(machine.created, ["alice"]);
    assert_eq!(machine.passwords, [("core".to_owned(), "$6$a$b".to_owned())]);
    apply(&plan, root, &mut machine).unwrap();
    assert_eq!(machine.created, ["alice"], "an existing user is not created again");
}

#[test]
fn a_script_runs_once() {
    let dir = tree();
    let root = dir.path();
    let (_, plan) =
        ferrite_cloudinit::prepare(b"#!/bin/sh\necho $private_ipv4 \\$private_ipv4\n", &addresses(), |_| None).unwrap();
    assert_eq!(plan.script.as_deref(), Some(&b"#!/bin/sh\necho 10.0.0.5 $private_ipv4\n"[..]));
    let first = apply(&plan, root, &mut FakeUsers::default()).unwrap();
    assert_eq!(first.changes.iter().filter(|c| c.starts_with("script ")).count(), 1);
    let second = apply(&plan, root, &mut FakeUsers::default()).unwrap();
    assert!(second.changes.iter().all(|c| !c.starts_with("script ")), "{:?}", second.changes);
}

#[test]
fn ignition_is_reported_and_applies_nothing_but_the_environment() {
    let (report, plan) =
        ferrite_cloudinit::prepare(br#"{"ignition":{"version":"3.0.0"}}"#, &Addresses::default(), |_| None).unwrap();
    assert_eq!(report.entries.len(), 1);
    assert!(!report.has_errors());
    assert!(plan.units.is_empty() && plan.files.is_empty() && plan.script.is_none());
}
