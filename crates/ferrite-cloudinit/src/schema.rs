//! The cloud-config key tree, as data: every key coreos-cloudinit knows, its
//! type, the values it accepts, whether it is deprecated, and the
//! environment variable it becomes in a daemon's drop-in. The validator
//! walks user data against it and the interpreter turns daemon sections into
//! `Environment=` lines from it, so the two cannot disagree.

/// The type a key expects.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string; scalars of any implicit type are accepted as their text.
    Str,
    /// A boolean (`true`, `yes`, `on`, ...).
    Bool,
    /// An integer.
    Int,
    /// A number; integers are accepted.
    Float,
    /// A mapping with the given keys.
    Struct(&'static [Field]),
    /// A sequence of the given kind.
    List(&'static Kind),
}

impl Kind {
    /// The type as coreos-cloudinit names it in messages (Go's names).
    pub fn human(&self) -> String {
        match self {
            Kind::Str => "string".to_owned(),
            Kind::Bool => "bool".to_owned(),
            Kind::Int => "int".to_owned(),
            Kind::Float => "float64".to_owned(),
            Kind::Struct(_) => "struct".to_owned(),
            Kind::List(inner) => format!("[]{}", inner.human()),
        }
    }
}

/// One key.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The key with `_` separators (user data may use `-`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The values a non-empty string must match.
    pub valid: Option<Valid>,
    /// Why the key is deprecated, if it is.
    pub deprecated: Option<&'static str>,
    /// The variable it becomes in a daemon's environment.
    pub env: Option<&'static str>,
}

impl Field {
    /// The child key `name` of a struct field.
    pub fn child(&self, name: &str) -> Option<&'static Field> {
        match self.kind {
            Kind::Struct(fields) => fields.iter().find(|f| f.name == name),
            _ => None,
        }
    }
}

/// The value rules coreos-cloudinit states as `valid:` patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valid {
    /// `write_files[].encoding`.
    Encoding,
    /// `write_files[].permissions`: `^0?[0-7]{3,4}$`.
    Permissions,
    /// `coreos.units[].command`.
    UnitCommand,
    /// `coreos.update.reboot_strategy`.
    RebootStrategy,
    /// `coreos.etcd2.proxy`: on, off, readonly.
    EtcdProxy,
    /// `coreos.locksmith.window_start`: `[day ]HH:MM`.
    WindowStart,
    /// `coreos.locksmith.window_length`: a Go duration such as `1h30m`.
    WindowLength,
    /// `manage_etc_hosts`: only `localhost` (coreos-cloudinit fails on
    /// anything else when applying; Ferrite says so when validating).
    EtcHosts,
}

/// Content encodings `write_files` accepts.
pub const ENCODINGS: &[&str] = &["base64", "b64", "gz", "gzip", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64"];

/// Commands a unit may be given.
pub const UNIT_COMMANDS: &[&str] =
    &["start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "reload-or-try-restart"];

impl Valid {
    /// Whether `value` is acceptable.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            Valid::Encoding => ENCODINGS.contains(&value),
            Valid::Permissions => {
                let digits = value.strip_prefix('0').filter(|d| d.len() >= 3).unwrap_or(value);
                (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            }
            Valid::UnitCommand => UNIT_COMMANDS.contains(&value),
            Valid::RebootStrategy => matches!(value, "etcd-lock" | "reboot" | "off"),
            Valid::EtcdProxy => matches!(value, "on" | "off" | "readonly"),
            Valid::WindowStart => window_start(value),
            Valid::WindowLength => go_duration(value),
            Valid::EtcHosts => value == "localhost",
        }
    }
}

fn window_start(value: &str) -> bool {
    let time = match value.split_once(' ') {
        Some((day, time)) => {
            let day = day.to_ascii_lowercase();
            if !["sun", "mon", "tue", "wed", "thu", "fri", "sat"].contains(&day.as_str()) {
                return false;
            }
            time
        }
        None => value,
    };
    let Some((hours, minutes)) = time.split_once(':') else { return false };
    let number = |s: &str, max: u32| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.trim_start_matches('0').len() <= 2 && {
            let n: u32 = s.trim_start_matches('0').parse().unwrap_or(0);
            n <= max
        }
    };
    number(hours, 23) && number(minutes, 59)
}

/// `^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$`
fn go_duration(value: &str) -> bool {
    let mut rest = value.strip_prefix(['-', '+']).unwrap_or(value);
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if rest[..number_end].matches('.').count() > 1 {
            return false;
        }
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(rest.len());
        if unit_end == 0 {
            return false;
        }
        rest = &rest[unit_end..];
    }
    true
}

const fn key(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, valid: None, deprecated: None, env: None }
}

const fn env(name: &'static str, kind: Kind, env: &'static str) -> Field {
    Field { name, kind, valid: None, deprecated: None, env: Some(env) }
}

const fn valid(mut field: Field, valid: Valid) -> Field {
    field.valid = Some(valid);
    field
}

const fn deprecated(mut field: Field, why: &'static str) -> Field {
    field.deprecated = Some(why);
    field
}

use Kind::{Bool, Float, Int, Str};

const STRINGS: Kind = Kind::List(&Str);

/// The whole document.
pub const ROOT: Field = key(
    "",
    Kind::Struct(&[
        key("ssh_authorized_keys", STRINGS),
        key("coreos", Kind::Struct(COREOS)),
        key("write_files", Kind::List(&Kind::Struct(FILE))),
        key("hostname", Str),
        key("users", Kind::List(&Kind::Struct(USER))),
        valid(key("manage_etc_hosts", Str), Valid::EtcHosts),
    ]),
);

const COREOS: &[Field] = &[
    key("etcd", Kind::Struct(ETCD)),
    key("etcd2", Kind::Struct(ETCD2)),
    deprecated(key("flannel", Kind::Struct(FLANNEL)), "flannel is not shipped in Ferrite"),
    key("fleet", Kind::Struct(FLEET)),
    key("locksmith", Kind::Struct(LOCKSMITH)),
    key("oem", Kind::Struct(OEM)),
    key("update", Kind::Struct(UPDATE)),
    key("units", Kind::List(&Kind::Struct(UNIT))),
];

/// `write_files[]`.
pub const FILE: &[Field] = &[
    valid(key("encoding", Str), Valid::Encoding),
    key("content", Str),
    key("owner", Str),
    key("path", Str),
    valid(key("permissions", Str), Valid::Permissions),
];

const SSH_IMPORT: &str = "trying to fetch from a remote endpoint introduces too many intermittent errors";

/// `users[]`.
pub const USER: &[Field] = &[
    key("name", Str),
    key("passwd", Str),
    key("ssh_authorized_keys", STRINGS),
    deprecated(key("coreos_ssh_import_github", Str), SSH_IMPORT),
    deprecated(key("coreos_ssh_import_github_users", STRINGS), SSH_IMPORT),
    deprecated(key("coreos_ssh_import_url", Str), SSH_IMPORT),
    key("gecos", Str),
    key("homedir", Str),
    key("no_create_home", Bool),
    key("primary_group", Str),
    key("groups", STRINGS),
    key("no_user_group", Bool),
    key("system", Bool),
    key("no_log_init", Bool),
    key("shell", Str),
];

/// `coreos.units[]`.
pub const UNIT: &[Field] = &[
    key("name", Str),
    key("mask", Bool),
    key("enable", Bool),
    key("runtime", Bool),
    key("content", Str),
    valid(key("command", Str), Valid::UnitCommand),
    key("drop_ins", Kind::List(&Kind::Struct(DROP_IN))),
];

const DROP_IN: &[Field] = &[key("name", Str), key("content", Str)];

/// `coreos.update`: written to `/etc/coreos/update.conf` under these names.
pub const UPDATE: &[Field] = &[
    valid(env("reboot_strategy", Str, "REBOOT_STRATEGY"), Valid::RebootStrategy),
    env("group", Str, "GROUP"),
    env("server", Str, "SERVER"),
];

/// `coreos.oem`: written to `/etc/oem-release`.
pub const OEM: &[Field] = &[
    env("id", Str, "ID"),
    env("name", Str, "NAME"),
    env("version_id", Str, "VERSION_ID"),
    env("home_url", Str, "HOME_URL"),
    env("bug_report_url", Str, "BUG_REPORT_URL"),
];

/// `coreos.etcd`: etcd 0.4's settings (Ferrite's store takes etcd 2's too).
pub const ETCD: &[Field] = &[
    env("addr", Str, "ETCD_ADDR"),
    env("advertise_client_urls", Str, "ETCD_ADVERTISE_CLIENT_URLS"),
    env("bind_addr", Str, "ETCD_BIND_ADDR"),
    env("ca_file", Str, "ETCD_CA_FILE"),
    env("cert_file", Str, "ETCD_CERT_FILE"),
    env("cluster_active_size", Int, "ETCD_CLUSTER_ACTIVE_SIZE"),
    env("cluster_remove_delay", Float, "ETCD_CLUSTER_REMOVE_DELAY"),
    env("cluster_sync_interval", Float, "ETCD_CLUSTER_SYNC_INTERVAL"),
    env("cors", Str, "ETCD_CORS"),
    env("data_dir", Str, "ETCD_DATA_DIR"),
    env("discovery", Str, "ETCD_DISCOVERY"),
    env("discovery_fallback", Str, "ETCD_DISCOVERY_FALLBACK"),
    env("discovery_srv", Str, "ETCD_DISCOVERY_SRV"),
    env("discovery_proxy", Str, "ETCD_DISCOVERY_PROXY"),
    env("election_timeout", Int, "ETCD_ELECTION_TIMEOUT"),
    env("force_new_cluster", Bool, "ETCD_FORCE_NEW_CLUSTER"),
    env("graphite_host", Str, "ETCD_GRAPHITE_HOST"),
    env("heartbeat_interval", Int, "ETCD_HEARTBEAT_INTERVAL"),
    env("http_read_timeout", Float, "ETCD_HTTP_READ_TIMEOUT"),
    env("http_write_timeout", Float, "ETCD_HTTP_WRITE_TIMEOUT"),
    env("initial_advertise_peer_urls", Str, "ETCD_INITIAL_ADVERTISE_PEER_URLS"),
    env("initial_cluster", Str, "ETCD_INITIAL_CLUSTER"),
    env("initial_cluster_state", Str, "ETCD_INITIAL_CLUSTER_STATE"),
    env("initial_cluster_token", Str, "ETCD_INITIAL_CLUSTER_TOKEN"),
    env("key_file", Str, "ETCD_KEY_FILE"),
    env("listen_client_urls", Str, "ETCD_LISTEN_CLIENT_URLS"),
    env("listen_peer_urls", Str, "ETCD_LISTEN_PEER_URLS"),
    env("max_result_buffer", Int, "ETCD_MAX_RESULT_BUFFER"),
    env("max_retry_attempts", Int, "ETCD_MAX_RETRY_ATTEMPTS"),
    env("max_snapshots", Int, "ETCD_MAX_SNAPSHOTS"),
    env("max_wals", Int, "ETCD_MAX_WALS"),
    env("name", Str, "ETCD_NAME"),
    env("peer_addr", Str, "ETCD_PEER_ADDR"),
    env("peer_bind_addr", Str, "ETCD_PEER_BIND_ADDR"),
    env("peer_ca_file", Str, "ETCD_PEER_CA_FILE"),
    env("peer_cert_file", Str, "ETCD_PEER_CERT_FILE"),
    env("peer_election_timeout", Int, "ETCD_PEER_ELECTION_TIMEOUT"),
    env("peer_heartbeat_interval", Int, "ETCD_PEER_HEARTBEAT_INTERVAL"),
    env("peer_key_file", Str, "ETCD_PEER_KEY_FILE"),
    env("peers", Str, "ETCD_PEERS"),
    env("peers_file", Str, "ETCD_PEERS_FILE"),
    env("proxy", Str, "ETCD_PROXY"),
    env("retry_interval", Float, "ETCD_RETRY_INTERVAL"),
    env("snapshot", Bool, "ETCD_SNAPSHOT"),
    env("snapshot_count", Int, "ETCD_SNAPSHOTCOUNT"),
    env("trace", Str, "ETCD_TRACE"),
    env("verbose", Bool, "ETCD_VERBOSE"),
    env("very_verbose", Bool, "ETCD_VERY_VERBOSE"),
    env("very_very_verbose", Bool, "ETCD_VERY_VERY_VERBOSE"),
];

/// `coreos.etcd2`.
pub const ETCD2: &[Field] = &[
    env("advertise_client_urls", Str, "ETCD_ADVERTISE_CLIENT_URLS"),
    deprecated(env("ca_file", Str, "ETCD_CA_FILE"), "ca_file obsoleted by trusted_ca_file and client_cert_auth"),
    env("cert_file", Str, "ETCD_CERT_FILE"),
    env("client_cert_auth", Bool, "ETCD_CLIENT_CERT_AUTH"),
    env("cors", Str, "ETCD_CORS"),
    env("data_dir", Str, "ETCD_DATA_DIR"),
    env("debug", Bool, "ETCD_DEBUG"),
    env("discovery", Str, "ETCD_DISCOVERY"),
    env("discovery_fallback", Str, "ETCD_DISCOVERY_FALLBACK"),
    env("discovery_srv", Str, "ETCD_DISCOVERY_SRV"),
    env("discovery_proxy", Str, "ETCD_DISCOVERY_PROXY"),
    env("election_timeout", Int, "ETCD_ELECTION_TIMEOUT"),
    env("enable_pprof", Bool, "ETCD_ENABLE_PPROF"),
    env("force_new_cluster", Bool, "ETCD_FORCE_NEW_CLUSTER"),
    env("heartbeat_interval", Int, "ETCD_HEARTBEAT_INTERVAL"),
    env("initial_advertise_peer_urls", Str, "ETCD_INITIAL_ADVERTISE_PEER_URLS"),
    env("initial_cluster", Str, "ETCD_INITIAL_CLUSTER"),
    env("initial_cluster_state", Str, "ETCD_INITIAL_CLUSTER_STATE"),
    env("initial_cluster_token", Str, "ETCD_INITIAL_CLUSTER_TOKEN"),
    env("key_file", Str, "ETCD_KEY_FILE"),
    env("listen_client_urls", Str, "ETCD_LISTEN_CLIENT_URLS"),
    env("listen_peer_urls", Str, "ETCD_LISTEN_PEER_URLS"),
    env("log_package_levels", Str, "ETCD_LOG_PACKAGE_LEVELS"),
    env("max_snapshots", Int, "ETCD_MAX_SNAPSHOTS"),
    env("max_wals", Int, "ETCD_MAX_WALS"),
    env("name", Str, "ETCD_NAME"),
    deprecated(
        env("peer_ca_file", Str, "ETCD_PEER_CA_FILE"),
        "peer_ca_file obsoleted peer_trusted_ca_file and peer_client_cert_auth",
    ),
    env("peer_cert_file", Str, "ETCD_PEER_CERT_FILE"),
    env("peer_key_file", Str, "ETCD_PEER_KEY_FILE"),
    env("peer_client_cert_auth", Bool, "ETCD_PEER_CLIENT_CERT_AUTH"),
    env("peer_trusted_ca_file", Str, "ETCD_PEER_TRUSTED_CA_FILE"),
    valid(env("proxy", Str, "ETCD_PROXY"), Valid::EtcdProxy),
    env("proxy_dial_timeout", Int, "ETCD_PROXY_DIAL_TIMEOUT"),
    env("proxy_failure_wait", Int, "ETCD_PROXY_FAILURE_WAIT"),
    env("proxy_read_timeout", Int, "ETCD_PROXY_READ_TIMEOUT"),
    env("proxy_refresh_interval", Int, "ETCD_PROXY_REFRESH_INTERVAL"),
    env("proxy_write_timeout", Int, "ETCD_PROXY_WRITE_TIMEOUT"),
    env("snapshot_count", Int, "ETCD_SNAPSHOT_COUNT"),
    env("strict_reconfig_check", Bool, "ETCD_STRICT_RECONFIG_CHECK"),
    env("trusted_ca_file", Str, "ETCD_TRUSTED_CA_FILE"),
    env("wal_dir", Str, "ETCD_WAL_DIR"),
];

/// `coreos.fleet`.
pub const FLEET: &[Field] = &[
    env("agent_ttl", Str, "FLEET_AGENT_TTL"),
    env("authorized_keys_file", Str, "FLEET_AUTHORIZED_KEYS_FILE"),
    env("disable_engine", Bool, "FLEET_DISABLE_ENGINE"),
    env("engine_reconcile_interval", Float, "FLEET_ENGINE_RECONCILE_INTERVAL"),
    env("etcd_cafile", Str, "FLEET_ETCD_CAFILE"),
    env("etcd_certfile", Str, "FLEET_ETCD_CERTFILE"),
    env("etcd_keyfile", Str, "FLEET_ETCD_KEYFILE"),
    env("etcd_key_prefix", Str, "FLEET_ETCD_KEY_PREFIX"),
    env("etcd_request_timeout", Float, "FLEET_ETCD_REQUEST_TIMEOUT"),
    env("etcd_servers", Str, "FLEET_ETCD_SERVERS"),
    env("etcd_username", Str, "FLEET_ETCD_USERNAME"),
    env("etcd_password", Str, "FLEET_ETCD_PASSWORD"),
    env("metadata", Str, "FLEET_METADATA"),
    env("public_ip", Str, "FLEET_PUBLIC_IP"),
    env("token_limit", Int, "FLEET_TOKEN_LIMIT"),
    env("verbosity", Int, "FLEET_VERBOSITY"),
    env("verify_units", Bool, "FLEET_VERIFY_UNITS"),
];

/// `coreos.locksmith`.
pub const LOCKSMITH: &[Field] = &[
    env("endpoint", Str, "LOCKSMITHD_ENDPOINT"),
    env("etcd_cafile", Str, "LOCKSMITHD_ETCD_CAFILE"),
    env("etcd_certfile", Str, "LOCKSMITHD_ETCD_CERTFILE"),
    env("etcd_keyfile", Str, "LOCKSMITHD_ETCD_KEYFILE"),
    env("etcd_username", Str, "LOCKSMITHD_ETCD_USERNAME"),
    env("etcd_password", Str, "LOCKSMITHD_ETCD_PASSWORD"),
    env("group", Str, "LOCKSMITHD_GROUP"),
    valid(env("window_start", Str, "REBOOT_WINDOW_START"), Valid::WindowStart),
    valid(env("window_length", Str, "REBOOT_WINDOW_LENGTH"), Valid::WindowLength),
];

/// `coreos.flannel` (accepted so existing files validate; nothing is applied).
pub const FLANNEL: &[Field] = &[
    env("etcd_endpoints", Str, "FLANNELD_ETCD_ENDPOINTS"),
    env("etcd_cafile", Str, "FLANNELD_ETCD_CAFILE"),
    env("etcd_certfile", Str, "FLANNELD_ETCD_CERTFILE"),
    env("etcd_keyfile", Str, "FLANNELD_ETCD_KEYFILE"),
    env("etcd_prefix", Str, "FLANNELD_ETCD_PREFIX"),
    env("etcd_username", Str, "FLANNELD_ETCD_USERNAME"),
    env("etcd_password", Str, "FLANNELD_ETCD_PASSWORD"),
    env("ip_masq", Str, "FLANNELD_IP_MASQ"),
    env("subnet_file", Str, "FLANNELD_SUBNET_FILE"),
    env("interface", Str, "FLANNELD_IFACE"),
    env("public_ip", Str, "FLANNELD_PUBLIC_IP"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_in_every_octal_form() {
        for ok in ["644", "0644", "0755", "1777", "01777", "600"] {
            assert!(Valid::Permissions.accepts(ok), "{ok}");
        }
        for bad in ["888", "64", "abc", "0o644", "12345", "-644"] {
            assert!(!Valid::Permissions.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn locksmith_windows() {
        assert!(Valid::WindowStart.accepts("Thu 04:00"));
        assert!(Valid::WindowStart.accepts("4:00"));
        assert!(!Valid::WindowStart.accepts("24:00"));
        assert!(!Valid::WindowStart.accepts("Someday 04:00"));
        assert!(Valid::WindowLength.accepts("1h30m"));
        assert!(Valid::WindowLength.accepts("90m"));
        assert!(!Valid::WindowLength.accepts("90"));
        assert!(!Valid::WindowLength.accepts("1 hour"));
    }

    #[test]
    fn human_types_are_go_names() {
        assert_eq!(Kind::List(&Kind::Struct(USER)).human(), "[]struct");
        assert_eq!(STRINGS.human(), "[]string");
    }
}
