//! fleetd's configuration: `/etc/fleet/fleet.conf` (or `--config`) and the
//! `FLEET_*` environment, which is what cloud-config's `coreos.fleet`
//! section writes into a drop-in. For each key the environment wins over
//! the file, and the file over the default, as in fleet.
//!
//! Unlike fleet, which silently keeps the default for a value it cannot
//! read, a bad value here is an error naming the key and where it came
//! from (`/etc/fleet/fleet.conf:3` or `FLEET_AGENT_TTL`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where fleetd reads its file when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/fleet/fleet.conf";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub verbosity: u32,
    pub etcd_servers: Vec<String>,
    pub etcd_key_prefix: String,
    pub etcd_request_timeout: Duration,
    pub engine_reconcile_interval: Duration,
    pub public_ip: Option<IpAddr>,
    pub metadata: BTreeMap<String, String>,
    pub agent_ttl: Duration,
    pub units_directory: PathBuf,
    pub systemd_user: bool,
    pub token_limit: u16,
    pub disable_engine: bool,
    pub disable_watches: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            verbosity: 0,
            etcd_servers: vec!["http://127.0.0.1:2379".to_owned(), "http://127.0.0.1:4001".to_owned()],
            etcd_key_prefix: "/_coreos.com/fleet/".to_owned(),
            etcd_request_timeout: Duration::from_secs(1),
            engine_reconcile_interval: Duration::from_secs(2),
            public_ip: None,
            metadata: BTreeMap::new(),
            agent_ttl: Duration::from_secs(30),
            units_directory: PathBuf::from("/run/fleet/units/"),
            systemd_user: false,
            token_limit: 100,
            disable_engine: false,
            disable_watches: false,
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File { path: String, line: usize },
    Env(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File { path, line } => write!(f, "{path}:{line}"),
            Source::Env(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: {key}: {reason} (got {value:?})")]
    Value { origin: Source, key: String, value: String, reason: String },
    #[error("{path}:{line}: expected key = value, got {text:?}")]
    Syntax { path: String, line: usize, text: String },
}

/// Keys fleet accepts but no longer uses; reading them only warns.
const DEPRECATED: &[&str] = &["verify_units", "authorized_keys_file"];

/// Keys this fleetd knows, besides the deprecated ones.
const KEYS: &[&str] = &[
    "verbosity",
    "etcd_servers",
    "etcd_username",
    "etcd_password",
    "etcd_keyfile",
    "etcd_certfile",
    "etcd_cafile",
    "etcd_key_prefix",
    "etcd_request_timeout",
    "engine_reconcile_interval",
    "public_ip",
    "metadata",
    "agent_ttl",
    "units_directory",
    "systemd_user",
    "token_limit",
    "enable_grpc",
    "disable_engine",
    "disable_watches",
];

/// The settings read, and warnings about keys that do nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Reads a fleet.conf text (`file` names it in errors) and the `FLEET_*`
/// variables of `env`.
pub fn load(file: Option<(&str, &str)>, env: &BTreeMap<String, String>) -> Result<Loaded, ConfigError> {
    let mut values: BTreeMap<String, (String, Source)> = BTreeMap::new();
    let mut warnings = Vec::new();
    if let Some((path, text)) = file {
        for (key, value, line) in parse_ini(path, text)? {
            values.insert(key, (value, Source::File { path: path.to_owned(), line }));
        }
    }
    for key in KEYS.iter().chain(DEPRECATED) {
        let name = format!("FLEET_{}", key.to_ascii_uppercase());
        if let Some(value) = env.get(&name) {
            values.insert((*key).to_owned(), (value.clone(), Source::Env(name)));
        }
    }
    let mut config = Config::default();
    for (key, (value, source)) in &values {
        let bad = |reason: &str| ConfigError::Value {
            origin: source.clone(),
            key: key.clone(),
            value: value.clone(),
            reason: reason.to_owned(),
        };
        match key.as_str() {
            "verbosity" => config.verbosity = value.trim().parse().map_err(|_| bad("not a whole number"))?,
            "etcd_servers" => config.etcd_servers = parse_list(value),
            "etcd_key_prefix" => config.etcd_key_prefix = value.clone(),
            "etcd_request_timeout" => {
                config.etcd_request_timeout = parse_seconds(value).ok_or_else(|| bad("not a number of seconds"))?
            }
            "engine_reconcile_interval" => {
                config.engine_reconcile_interval = parse_seconds(value).ok_or_else(|| bad("not a number of seconds"))?
            }
            "public_ip" if value.is_empty() => config.public_ip = None,
            "public_ip" => config.public_ip = Some(value.trim().parse().map_err(|_| bad("not an IP address"))?),
            "metadata" => config.metadata = parse_metadata(value),
            "agent_ttl" => {
                config.agent_ttl = parse_go_duration(value).ok_or_else(|| bad("not a duration such as 30s"))?
            }
            "units_directory" => config.units_directory = PathBuf::from(value),
            "systemd_user" => config.systemd_user = parse_bool(value).ok_or_else(|| bad("not true or false"))?,
            "token_limit" => {
                config.token_limit = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("not a page size from 1 to 65535"))?
            }
            "disable_engine" => config.disable_engine = parse_bool(value).ok_or_else(|| bad("not true or false"))?,
            "disable_watches" => config.disable_watches = parse_bool(value).ok_or_else(|| bad("not true or false"))?,
            "enable_grpc" => {
                if parse_bool(value).ok_or_else(|| bad("not true or false"))? {
                    warnings.push(format!("{source}: enable_grpc is not supported; the etcd registry is used"));
                }
            }
            "etcd_username" | "etcd_password" | "etcd_keyfile" | "etcd_certfile" | "etcd_cafile" => {
                if !value.is_empty() {
                    warnings.push(format!("{source}: {key} is not supported yet and is ignored"));
                }
            }
            "verify_units" | "authorized_keys_file" => {
                let set = if key == "verify_units" { parse_bool(value) == Some(true) } else { !value.is_empty() };
                if set {
                    warnings.push(format!("Config option {key} is no longer supported - ignoring"));
                }
            }
            _ => warnings.push(format!("{source}: unknown key {key} is ignored")),
        }
    }
    Ok(Loaded { config, warnings })
}

/// fleet's INI: `key = value` lines, values optionally quoted, `#` and `;`
/// comments, a trailing `\` joining the next line; section headers are
/// allowed and ignored. Returns `(key, value, line)`.
fn parse_ini(path: &str, text: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let mut line = raw.trim().to_owned();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => line.push_str(next.trim()),
                None => break,
            }
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::Syntax { path: path.to_owned(), line: i + 1, text: raw.to_owned() });
        };
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => match value[1..].find(q) {
                Some(end) => value[1..=end].to_owned(),
                None => return Err(ConfigError::Syntax { path: path.to_owned(), line: i + 1, text: raw.to_owned() }),
            },
            _ => value.split(['#', ';']).next().unwrap_or_default().trim().to_owned(),
        };
        out.push((key.trim().to_owned(), value, i + 1));
    }
    Ok(out)
}

/// fleet's list form: comma-separated, each item stripped of spaces,
/// quotes and brackets, so `["http://a:2379", "http://b:2379"]` works.
fn parse_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|item| item.trim_start_matches([' ', '[', '"']).trim_end_matches([' ', '"', ']']).to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// `k=v,k2=v2`, each side trimmed; pairs without `=` are skipped.
pub fn parse_metadata(value: &str) -> BTreeMap<String, String> {
    value
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn parse_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for the units a TTL uses: `30s`, `1m30s`,
/// `1.5m`, `500ms`, `2h`. Zero and negative durations are refused.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total > 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_fleets() {
        let c = load(None, &env(&[])).unwrap().config;
        assert_eq!(c, Config::default());
        assert_eq!(c.etcd_servers, ["http://127.0.0.1:2379", "http://127.0.0.1:4001"]);
        assert_eq!(c.agent_ttl, Duration::from_secs(30));
        assert_eq!(c.units_directory, PathBuf::from("/run/fleet/units/"));
    }

    #[test]
    fn the_file_then_the_environment() {
        let file = "# fleet\nverbosity = 1\netcd_servers = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n\
                    public_ip = \"10.0.0.1\"\nmetadata = region=us, disk = ssd ,bad\nagent_ttl = 3s ; short\n";
        let loaded = load(
            Some(("/etc/fleet/fleet.conf", file)),
            &env(&[("FLEET_PUBLIC_IP", "10.0.0.9"), ("FLEET_ENGINE_RECONCILE_INTERVAL", "0.5")]),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.verbosity, 1);
        assert_eq!(c.etcd_servers, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert_eq!(c.public_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(c.metadata, BTreeMap::from([("disk".into(), "ssd".into()), ("region".into(), "us".into())]));
        assert_eq!(c.agent_ttl, Duration::from_secs(3));
        assert_eq!(c.engine_reconcile_interval, Duration::from_millis(500));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn bad_values_name_the_key_and_where_it_came_from() {
        let err = load(Some(("/etc/fleet/fleet.conf", "\nagent_ttl = 30\n")), &env(&[])).unwrap_err();
        assert_eq!(err.to_string(), "/etc/fleet/fleet.conf:2: agent_ttl: not a duration such as 30s (got \"30\")");
        let err = load(None, &env(&[("FLEET_PUBLIC_IP", "ten")])).unwrap_err();
        assert_eq!(err.to_string(), "FLEET_PUBLIC_IP: public_ip: not an IP address (got \"ten\")");
        let err = load(Some(("f.conf", "a\n")), &env(&[])).unwrap_err();
        assert_eq!(err.to_string(), "f.conf:1: expected key = value, got \"a\"");
    }

    #[test]
    fn deprecated_and_unknown_keys_warn() {
        let loaded =
            load(Some(("f.conf", "verify_units = true\nbogus = 1\n")), &env(&[("FLEET_AUTHORIZED_KEYS_FILE", "/x")]))
                .unwrap();
        assert_eq!(
            loaded.warnings,
            vec![
                "Config option authorized_keys_file is no longer supported - ignoring",
                "f.conf:2: unknown key bogus is ignored",
                "Config option verify_units is no longer supported - ignoring",
            ]
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "30", "s", "0s", "1x", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
