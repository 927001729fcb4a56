//! `ferrite-fleetctl`: fleetctl's commands, flags, `FLEETCTL_*` variables,
//! messages and table formats, over fleet's HTTP API.
//!
//! Commands write to the given stdout and stderr and return the exit code,
//! so tests run them in process.

pub mod client;
pub mod ssh;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::job::Requirements;
use crate::schema::{self, Machine, Unit, UnitState};
use crate::table;
use crate::unit_file::UnitFile;
use crate::unit_name::{self, NameInfo};
use client::{ApiClient, ClientError, Endpoint};
use ssh::{shell_quote, SshSettings};

/// Where fleetctl reads this machine's id, to run a unit's commands here
/// rather than over SSH when the unit is on this machine.
const MACHINE_ID_FILE: &str = "/etc/machine-id";

/// fleetctl's command line.
#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system."
)]
pub struct Cli {
    /// Location of the fleet API.
    #[arg(long, global = true, env = "FLEETCTL_ENDPOINT", default_value = "unix:///var/run/fleet.sock")]
    pub endpoint: String,

    /// Adapter used to execute fleetctl commands; only "API" is supported.
    #[arg(long, global = true, env = "FLEETCTL_DRIVER", default_value = "API")]
    pub driver: String,

    /// Amount of time in seconds to allow for the API's answers.
    #[arg(long, global = true, env = "FLEETCTL_REQUEST_TIMEOUT", default_value_t = 3.0)]
    pub request_timeout: f64,

    /// Establish an SSH tunnel through the provided address for communication with fleet and etcd.
    #[arg(long, global = true, env = "FLEETCTL_TUNNEL")]
    pub tunnel: Option<String>,

    /// Username to use when connecting to CoreOS instance.
    #[arg(long, global = true, env = "FLEETCTL_SSH_USERNAME", default_value = "core")]
    pub ssh_username: String,

    /// Verify host keys presented by remote machines before initiating SSH connections.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_STRICT_HOST_KEY_CHECKING",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub strict_host_key_checking: bool,

    /// File used to store remote machine fingerprints. Ignored if strict host key checking is disabled.
    #[arg(long, global = true, env = "FLEETCTL_KNOWN_HOSTS_FILE", default_value = ssh::DEFAULT_KNOWN_HOSTS_FILE)]
    pub known_hosts_file: String,

    /// Amount of time in seconds to allow for SSH connection initialization before failing.
    #[arg(long, global = true, env = "FLEETCTL_SSH_TIMEOUT", default_value_t = 10.0)]
    pub ssh_timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Blocking {
    /// Wait until the units are in the desired state this many times (0: forever).
    #[arg(long, default_value_t = 0)]
    pub block_attempts: u32,
    /// Do not wait until the units have reached the desired state.
    #[arg(long)]
    pub no_block: bool,
}

#[derive(Debug, Clone, Args)]
pub struct Listing {
    /// Do not ellipsize fields on output.
    #[arg(short = 'l', long)]
    pub full: bool,
    /// Do not print a legend (column headers).
    #[arg(long)]
    pub no_legend: bool,
    /// Columns to print, comma-separated.
    #[arg(long)]
    pub fields: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SshPort {
    /// Connect to remote hosts over SSH using this TCP port.
    #[arg(long, default_value_t = 22)]
    pub ssh_port: u16,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload one or more units to the cluster without starting them.
    Submit {
        #[arg(long)]
        replace: bool,
        units: Vec<String>,
    },
    /// Schedule one or more units in the cluster, first submitting them if necessary.
    Load {
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        blocking: Blocking,
        units: Vec<String>,
    },
    /// Instruct systemd to start one or more units in the cluster, first submitting and loading if necessary.
    Start {
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        blocking: Blocking,
        units: Vec<String>,
    },
    /// Instruct systemd to stop one or more units in the cluster.
    Stop {
        #[command(flatten)]
        blocking: Blocking,
        units: Vec<String>,
    },
    /// Unschedule one or more units in the cluster.
    Unload {
        #[command(flatten)]
        blocking: Blocking,
        units: Vec<String>,
    },
    /// Destroy one or more units in the cluster.
    Destroy {
        #[command(flatten)]
        blocking: Blocking,
        units: Vec<String>,
    },
    /// Output the contents of a submitted unit.
    Cat { units: Vec<String> },
    /// List the current state of units in the cluster.
    ListUnits {
        #[command(flatten)]
        listing: Listing,
    },
    /// List the units that exist in the cluster.
    ListUnitFiles {
        #[command(flatten)]
        listing: Listing,
    },
    /// Enumerate the current hosts in the cluster.
    ListMachines {
        #[command(flatten)]
        listing: Listing,
    },
    /// Output the status of one or more units in the cluster.
    Status {
        #[command(flatten)]
        ssh: SshPort,
        units: Vec<String>,
    },
    /// Print the journal of a unit in the cluster to stdout.
    Journal {
        /// Number of recent log lines to return.
        #[arg(long, default_value_t = 10)]
        lines: u32,
        /// Continuously print new entries as they are appended to the journal.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Execute journal command with sudo.
        #[arg(long)]
        sudo: bool,
        /// Output mode, passed unaltered to journalctl on the remote host.
        #[arg(long, default_value = "short")]
        output: String,
        #[command(flatten)]
        ssh: SshPort,
        units: Vec<String>,
    },
    /// Open interactive shell on a machine in the cluster.
    Ssh {
        /// Open SSH connection to a specific machine.
        #[arg(long)]
        machine: Option<String>,
        /// Open SSH connection to machine running provided unit.
        #[arg(long)]
        unit: Option<String>,
        /// Forward local ssh-agent to target machine.
        #[arg(short = 'A', long)]
        forward_agent: bool,
        #[command(flatten)]
        ssh: SshPort,
        /// The machine or unit (without --machine or --unit), then the command to run.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the version and exit.
    Version,
}

/// Where a command writes.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

impl Io<'_> {
    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn warn(&mut self, line: &str) {
        let _ = writeln!(self.err, "{line}");
    }
}

/// Runs a parsed command; returns the exit code.
pub async fn run(cli: Cli, io: &mut Io<'_>) -> i32 {
    if let Command::Version = cli.command {
        io.say(&format!("fleetctl version {}", env!("CARGO_PKG_VERSION")));
        return 0;
    }
    if !cli.driver.eq_ignore_ascii_case("api") {
        io.warn(&format!("Unable to initialize client: unrecognized driver {:?}", cli.driver));
        return 1;
    }
    let request_timeout = match Duration::try_from_secs_f64(cli.request_timeout) {
        Ok(timeout) if !timeout.is_zero() => timeout,
        _ => {
            io.warn(&format!(
                "Unable to initialize client: --request-timeout must be a positive number of seconds, not {}",
                cli.request_timeout
            ));
            return 1;
        }
    };
    let mut endpoint = match Endpoint::parse(&cli.endpoint) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            io.warn(&format!("Unable to initialize client: {e}"));
            return 1;
        }
    };
    let ssh = SshSettings {
        username: cli.ssh_username.clone(),
        strict_host_key_checking: cli.strict_host_key_checking,
        known_hosts_file: cli.known_hosts_file.clone(),
        timeout: cli.ssh_timeout,
        tunnel: cli.tunnel.clone().filter(|t| !t.is_empty()),
    };
    // With --tunnel the API is reached from the tunnel's machine: a local
    // socket forwarded to the endpoint there, for as long as this runs.
    let _tunnel = match &ssh.tunnel {
        Some(tunnel) => {
            let target = match &endpoint {
                Endpoint::Unix(path) => path.display().to_string(),
                Endpoint::Tcp { authority } => authority.clone(),
            };
            match ssh.tunnel_to(tunnel, &target).await {
                Ok(forward) => {
                    endpoint = Endpoint::Unix(forward.socket.clone());
                    Some(forward)
                }
                Err(e) => {
                    io.warn(&format!("Unable to initialize client: failed initializing SSH client: {e}"));
                    return 1;
                }
            }
        }
        None => None,
    };
    let ctl = Ctl {
        api: ApiClient::new(endpoint, request_timeout),
        poll: Duration::from_millis(250),
        attempt: Duration::from_secs(2),
        ssh,
        local_machine: std::fs::read_to_string(MACHINE_ID_FILE).ok().map(|id| id.trim().to_owned()),
    };
    match cli.command {
        Command::Version => 0,
        Command::Submit { replace, units } => ctl.submit(io, &units, replace).await,
        Command::Load { replace, blocking, units } => ctl.activate(io, &units, replace, &blocking, "loaded").await,
        Command::Start { replace, blocking, units } => ctl.activate(io, &units, replace, &blocking, "launched").await,
        Command::Stop { blocking, units } => ctl.deactivate(io, &units, &blocking, "loaded").await,
        Command::Unload { blocking, units } => ctl.deactivate(io, &units, &blocking, "inactive").await,
        Command::Destroy { blocking, units } => ctl.destroy(io, &units, &blocking).await,
        Command::Cat { units } => ctl.cat(io, &units).await,
        Command::ListUnits { listing } => ctl.list_units(io, &listing).await,
        Command::ListUnitFiles { listing } => ctl.list_unit_files(io, &listing).await,
        Command::ListMachines { listing } => ctl.list_machines(io, &listing).await,
        Command::Status { ssh, units } => ctl.status(io, &units, ssh.ssh_port).await,
        Command::Journal { lines, follow, sudo, output, ssh, units } => {
            let journal = Journal { lines, follow, sudo, output };
            ctl.journal(io, &units, &journal, ssh.ssh_port).await
        }
        Command::Ssh { machine, unit, forward_agent, ssh, args } => {
            let target = match (machine, unit) {
                (Some(_), Some(_)) => {
                    io.warn("Both machine and unit flags provided, please specify only one.");
                    return 1;
                }
                (Some(machine), None) => SshTarget::Machine(machine),
                (None, Some(unit)) => SshTarget::Unit(unit),
                (None, None) => SshTarget::Either,
            };
            ctl.ssh(io, target, args, forward_agent, ssh.ssh_port).await
        }
    }
}

/// `journal`'s options.
#[derive(Debug)]
struct Journal {
    lines: u32,
    follow: bool,
    sudo: bool,
    output: String,
}

/// What `ssh` connects to.
#[derive(Debug)]
enum SshTarget {
    Machine(String),
    Unit(String),
    /// The first argument, a machine or a unit (fleet's global lookup).
    Either,
}

/// A unit name from an argument: its file name, `.service` added when
/// the type is not one fleet runs.
pub fn mangle(arg: &str) -> String {
    let base = Path::new(arg).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| arg.to_owned());
    if unit_name::recognized_type(&base) {
        base
    } else {
        format!("{base}.service")
    }
}

/// fleetctl's machine legend: `<first 8>...` (or the whole id with
/// `--full`), then `/<ip>` when the machine's address is known.
pub fn machine_legend(id: &str, ip: Option<&str>, full: bool) -> String {
    let mut legend = if full || id.len() <= 8 { id.to_owned() } else { format!("{}...", &id[..8]) };
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        legend.push('/');
        legend.push_str(ip);
    }
    legend
}

struct Ctl {
    api: ApiClient,
    poll: Duration,
    attempt: Duration,
    ssh: SshSettings,
    /// This machine's id, when it has one.
    local_machine: Option<String>,
}

fn is_global(unit: &Unit) -> bool {
    Requirements::of(&unit.name, &schema::unit_file(&unit.options)).is_global()
}

impl Ctl {
    /// The unit file for a new unit: the file at `arg`, or for an instance
    /// `foo@1.service`, its template from the registry or beside `arg`.
    async fn unit_file(&self, arg: &str, name: &str) -> Result<UnitFile, String> {
        if Path::new(arg).exists() {
            let text =
                std::fs::read_to_string(arg).map_err(|e| format!("failed getting Unit({arg}) from file: {e}"))?;
            return UnitFile::parse(&text).map_err(|e| format!("failed getting Unit({arg}) from file: {arg}: {e}"));
        }
        let info =
            NameInfo::parse(name).ok_or_else(|| format!("error extracting information from unit name {name}"))?;
        let template = match (&info.template, info.is_instance()) {
            (Some(template), true) => template.clone(),
            _ => return Err(format!("unable to find Unit({name}) in Registry or on filesystem")),
        };
        let wrap = |e: String| format!("failed getting Unit({arg}) from template: {e}");
        match self.api.unit(&template).await {
            Ok(Some(unit)) => return Ok(schema::unit_file(&unit.options)),
            Ok(None) => {}
            Err(e) => return Err(wrap(format!("error retrieving template Unit({template}) from Registry: {e}"))),
        }
        let path: PathBuf = Path::new(arg).parent().unwrap_or(Path::new("")).join(&template);
        let text = std::fs::read_to_string(&path)
            .map_err(|_| wrap(format!("unable to find template Unit({template}) in Registry or on filesystem")))?;
        UnitFile::parse(&text).map_err(|e| wrap(format!("unable to load template Unit({template}) from file: {e}")))
    }

    /// fleet's lazyCreateUnits: submits every unit not yet in the cluster
    /// (or, with `replace`, whose file differs and whose state allows it).
    async fn create_units(
        &self,
        io: &mut Io<'_>,
        args: &[String],
        replace: bool,
        allowed: &[&str],
    ) -> Result<(), String> {
        let mut created = Vec::new();
        for arg in args {
            let name = mangle(arg);
            let existing =
                self.api.unit(&name).await.map_err(|e| format!("error retrieving Unit({name}) from Registry: {e}"))?;
            if let Some(existing) = &existing {
                let local = match self.unit_file(arg, &name).await {
                    Ok(file) => file,
                    Err(e) if replace => return Err(e),
                    Err(_) => continue,
                };
                let same = local.hash() == schema::unit_file(&existing.options).hash();
                if same && replace {
                    io.say(&format!("Found same Unit({name}) in Registry, nothing to do"));
                }
                if same {
                    continue;
                }
                if !replace {
                    io.warn(&format!(
                        "WARNING: Unit {name} in registry differs from local unit file {arg}. Add --replace to override."
                    ));
                    continue;
                }
                if !allowed.contains(&existing.desired_state.as_str()) {
                    io.warn(&format!(
                        "Warning: can not replace Unit({name}) in state '{}', use the appropriate command",
                        existing.desired_state
                    ));
                    continue;
                }
            }
            let file = self.unit_file(arg, &name).await?;
            unit_name::validate(&name).map_err(|e| e.to_string())?;
            let requirements = Requirements::of(&name, &file);
            requirements.validate().map_err(|e| e.to_string())?;
            for key in requirements.unknown_keys() {
                io.warn(&format!("Unit {name}: unrecognized requirement in [X-Fleet] section: {key:?}"));
            }
            let unit = Unit { name: name.clone(), options: schema::options(&file), ..Unit::default() };
            self.api.set_unit(&unit).await.map_err(|e| format!("failed creating unit {name}: {e}"))?;
            created.push(name);
        }
        let attempts = 0;
        self.wait_for_states(io, &created, "inactive", attempts).await.map_err(|e| {
            io.warn(&format!("Error waiting on unit creation: {e}"));
            "One or more errors creating units".to_owned()
        })
    }

    async fn submit(&self, io: &mut Io<'_>, args: &[String], replace: bool) -> i32 {
        if args.is_empty() {
            io.warn("No units given");
            return 0;
        }
        match self.create_units(io, args, replace, &["inactive"]).await {
            Ok(()) => 0,
            Err(e) => {
                io.warn(&format!("Error creating units: {e}"));
                1
            }
        }
    }

    /// `load` and `start`: create what is missing, set the desired state,
    /// wait for it (and for systemd, on start).
    async fn activate(&self, io: &mut Io<'_>, args: &[String], replace: bool, blocking: &Blocking, state: &str) -> i32 {
        let (allowed, verb): (&[&str], _) = if state == "loaded" {
            (&["inactive", "loaded"], "load")
        } else {
            (&["inactive", "loaded", "launched"], "start")
        };
        if let Err(e) = self.create_units(io, args, replace, allowed).await {
            io.warn(&format!("Error creating units: {e}"));
            return 1;
        }
        let mut waiting = Vec::new();
        for arg in args {
            let name = mangle(arg);
            let unit = match self.api.unit(&name).await {
                Ok(Some(unit)) => unit,
                Ok(None) => {
                    io.warn(&format!(
                        "Error {}ing units: unable to find unit {name}",
                        if verb == "load" { "load" } else { "start" }
                    ));
                    return 1;
                }
                Err(e) => {
                    io.warn(&format!("error retrieving unit {name} from registry: {e}"));
                    return 1;
                }
            };
            if unit.desired_state == state {
                continue;
            }
            if let Err(e) = self.api.set_desired_state(&name, state).await {
                io.warn(&format!("Error setting target state for unit {name}: {e}"));
                return 1;
            }
            if is_global(&unit) {
                io.say(&format!("Triggered global unit {name} {verb}"));
            } else {
                waiting.push(name);
            }
        }
        if blocking.no_block {
            for name in &waiting {
                io.say(&format!("Triggered unit {name} {verb}"));
            }
            return 0;
        }
        if let Err(e) = self.wait_for_states(io, &waiting, state, blocking.block_attempts).await {
            io.warn(&format!("Error waiting for unit states, exit status: {e}"));
            return 1;
        }
        if state == "launched" {
            if let Err(e) = self.wait_for_systemd_active(&waiting).await {
                io.warn(&format!("Error waiting for systemd unit states, err: {e}"));
                return 1;
            }
        }
        0
    }

    /// `stop` and `unload`.
    async fn deactivate(&self, io: &mut Io<'_>, args: &[String], blocking: &Blocking, state: &str) -> i32 {
        let (verb, past) = if state == "loaded" { ("stop", "stopped") } else { ("unload", "unloaded") };
        let units = match self.named_units(io, args).await {
            Ok(units) => units,
            Err(code) => return code,
        };
        let mut changed = Vec::new();
        let mut waiting = Vec::new();
        for unit in &units {
            let global = is_global(unit);
            if !global && verb == "stop" && unit.current_state == "inactive" {
                io.warn(&format!("Unable to stop unit {} in state inactive", unit.name));
                return 1;
            }
            if !global && unit.current_state == state {
                continue;
            }
            if let Err(e) = self.api.set_desired_state(&unit.name, state).await {
                io.warn(&format!("Error setting target state for unit {}: {e}", unit.name));
                return 1;
            }
            changed.push(unit.name.clone());
            if global {
                io.say(&format!("Triggered global unit {} {verb}", unit.name));
            } else {
                waiting.push(unit.name.clone());
            }
        }
        if blocking.no_block {
            for name in &waiting {
                io.say(&format!("Triggered unit {name} {verb}"));
            }
        } else if let Err(e) = self.wait_for_states(io, &waiting, state, blocking.block_attempts).await {
            io.warn(&format!("Failed to {verb} units [{}]. err: {e}", changed.join(" ")));
            return 1;
        }
        io.warn(&format!("Successfully {past} units [{}].", changed.join(" ")));
        0
    }

    async fn destroy(&self, io: &mut Io<'_>, args: &[String], blocking: &Blocking) -> i32 {
        let units = match self.named_units(io, args).await {
            Ok(units) => units,
            Err(code) => return code,
        };
        let mut code = 0;
        for unit in &units {
            match self.api.destroy_unit(&unit.name).await {
                Ok(_) => io.say(&format!("Destroyed {}", unit.name)),
                Err(e) => {
                    io.warn(&format!("Error destroying units: {e}"));
                    code = 1;
                    continue;
                }
            }
            if !blocking.no_block {
                let mut attempts = 0;
                while matches!(self.api.unit(&unit.name).await, Ok(Some(_))) {
                    attempts += 1;
                    if blocking.block_attempts > 0 && attempts >= blocking.block_attempts {
                        break;
                    }
                    tokio::time::sleep(self.poll).await;
                }
            }
        }
        code
    }

    /// The registry's units named by `args` (others are ignored).
    /// The units `args` name, or the exit code once fleetctl has said why
    /// there are none to act on.
    async fn named_units(&self, io: &mut Io<'_>, args: &[String]) -> Result<Vec<Unit>, i32> {
        match self.find_units(args).await {
            Err(e) => {
                io.warn(&format!("Error retrieving units: {e}"));
                Err(1)
            }
            Ok(units) if units.is_empty() => {
                io.warn("Units not found in registry");
                Err(0)
            }
            Ok(units) => Ok(units),
        }
    }

    async fn find_units(&self, args: &[String]) -> Result<Vec<Unit>, ClientError> {
        let all = self.api.units().await?;
        let names: Vec<String> = args.iter().map(|a| mangle(a)).collect();
        Ok(all.into_iter().filter(|u| names.contains(&u.name)).collect())
    }

    async fn cat(&self, io: &mut Io<'_>, args: &[String]) -> i32 {
        let [arg] = args else {
            io.warn("One unit file must be provided");
            return 1;
        };
        let name = mangle(arg);
        match self.api.unit(&name).await {
            Ok(Some(unit)) => {
                let _ = write!(io.out, "{}", schema::unit_file(&unit.options).serialize());
                0
            }
            Ok(None) => {
                io.warn(&format!("Unit {name} not found"));
                1
            }
            Err(e) => {
                io.warn(&format!("Error retrieving Unit {name}: {e}"));
                1
            }
        }
    }

    /// fleet's waiting: per unit, attempts of up to 2 s polling every
    /// 250 ms (`attempts` 0: forever), printing each unit's state once
    /// reached.
    async fn wait_for_states(
        &self,
        io: &mut Io<'_>,
        names: &[String],
        state: &str,
        attempts: u32,
    ) -> Result<(), String> {
        if names.is_empty() {
            return Ok(());
        }
        let machines = self.api.machines().await.unwrap_or_default();
        for name in names {
            let mut tries = 0;
            loop {
                if let Some(line) = self.reached(name, state, &machines).await? {
                    io.say(&line);
                    break;
                }
                tries += 1;
                if attempts > 0 && tries >= attempts {
                    return Err(format!("timed out waiting for unit {name} to report state {state}"));
                }
            }
        }
        Ok(())
    }

    /// One attempt: the line to print once the unit is in `state`.
    async fn reached(&self, name: &str, state: &str, machines: &[Machine]) -> Result<Option<String>, String> {
        let started = tokio::time::Instant::now();
        while started.elapsed() < self.attempt {
            let unit =
                self.api.unit(name).await.map_err(|e| format!("Error retrieving Unit({name}) from Registry: {e}"))?;
            let unit = unit.ok_or_else(|| format!("Unit {name} not found"))?;
            let global = is_global(&unit);
            let current = if global { &unit.desired_state } else { &unit.current_state };
            if current == state {
                let shown = if global { String::new() } else { unit.current_state.clone() };
                let mut line = format!("Unit {name} {shown}");
                if !unit.machine_id.is_empty() {
                    let ip = machines.iter().find(|m| m.id == unit.machine_id).map(|m| m.primary_ip.as_str());
                    line.push_str(&format!(" on {}", machine_legend(&unit.machine_id, ip, false)));
                }
                return Ok(Some(line));
            }
            tokio::time::sleep(self.poll).await;
        }
        Ok(None)
    }

    /// After `start`: systemd must report each unit loaded and active.
    async fn wait_for_systemd_active(&self, names: &[String]) -> Result<(), String> {
        for name in names {
            let started = tokio::time::Instant::now();
            loop {
                let states =
                    self.api.unit_states().await.map_err(|e| format!("Error getting unit state of {name}: {e}"))?;
                let active = states
                    .iter()
                    .any(|s| &s.name == name && s.systemd_active_state == "active" && s.systemd_load_state == "loaded");
                if active {
                    break;
                }
                if started.elapsed() >= self.attempt * 5 {
                    let last = states.iter().find(|s| &s.name == name).map(|s| s.systemd_active_state.as_str());
                    return Err(format!(
                        "Failed to find an active unit {name} (last state {:?})",
                        last.unwrap_or_default()
                    ));
                }
                tokio::time::sleep(self.poll).await;
            }
        }
        Ok(())
    }

    /// fleet's runCommand: `program args...` on the machine `machine_id`,
    /// here when that is this machine, else over SSH; its exit code.
    async fn run_on(&self, io: &mut Io<'_>, machine_id: &str, port: u16, program: &str, args: &[String]) -> i32 {
        if self.local_machine.as_deref() == Some(machine_id) {
            return match ssh::run_local(io, program, args).await {
                Ok(code) => code,
                Err(e) => {
                    io.warn(&format!("Error running local command: {e}"));
                    -1
                }
            };
        }
        let machines = self.api.machines().await;
        let ip = match &machines {
            Ok(machines) => machines.iter().find(|m| m.id == machine_id).map(|m| m.primary_ip.as_str()),
            Err(_) => None,
        };
        let Some(ip) = ip.filter(|ip| !ip.is_empty()) else {
            let why = match machines {
                Err(e) => e.to_string(),
                Ok(_) => format!("machine {machine_id} is not in the cluster"),
            };
            io.warn(&format!("Error getting machine IP: {why}"));
            return -1;
        };
        let mut line = shell_quote(program);
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        match self.ssh.run(io, ip, port, false, Some(&line)).await {
            Ok(code) => code,
            Err(e) => {
                io.warn(&format!("Unable to SSH to remote host: {e}"));
                -1
            }
        }
    }

    /// The unit `name`, or fleetctl's exit code once it said why there is
    /// none (`failing` begins the message of a failed request).
    async fn existing_unit(&self, io: &mut Io<'_>, name: &str, failing: &str) -> Result<Unit, i32> {
        match self.api.unit(name).await {
            Ok(Some(unit)) => Ok(unit),
            Ok(None) => {
                io.warn(&format!("Unit {name} does not exist."));
                Err(1)
            }
            Err(e) => {
                io.warn(&format!("{failing}: {e}"));
                Err(1)
            }
        }
    }

    /// `status`: `systemctl status -l` of each unit on its machine.
    async fn status(&self, io: &mut Io<'_>, args: &[String], port: u16) -> i32 {
        let mut globals = Vec::new();
        for (i, arg) in args.iter().enumerate() {
            let unit = match self.existing_unit(io, &mangle(arg), "Error retrieving unit").await {
                Ok(unit) => unit,
                Err(code) => return code,
            };
            if is_global(&unit) {
                globals.push(unit.name);
                continue;
            }
            if unit.current_state == "inactive" {
                io.warn(&format!("Unit {} does not appear to be loaded.", unit.name));
                return 1;
            }
            // The extra newline matches systemctl status's own output.
            if i != 0 {
                io.say("");
            }
            let argv = ["status".to_owned(), "-l".to_owned(), unit.name.clone()];
            let code = self.run_on(io, &unit.machine_id, port, "systemctl", &argv).await;
            if code != 0 {
                return code;
            }
        }
        if globals.is_empty() {
            return 0;
        }
        // A global unit: its status on every machine that reports it.
        let states = match self.api.unit_states().await {
            Ok(states) => states,
            Err(e) => {
                io.warn(&format!("Error retrieving machine state for global units: {e}"));
                return 1;
            }
        };
        for state in states.iter().filter(|s| globals.contains(&s.name)) {
            let argv = ["status".to_owned(), "-l".to_owned(), state.name.clone()];
            if self.run_on(io, &state.machine_id, port, "systemctl", &argv).await != 0 {
                io.warn(&format!(
                    "Error retrieving machine state for global units: Error running systemctl status. machine id={}, unit name={}",
                    state.machine_id, state.name
                ));
                return 1;
            }
        }
        0
    }

    /// `journal`: `journalctl --unit` on the unit's machine.
    async fn journal(&self, io: &mut Io<'_>, args: &[String], journal: &Journal, port: u16) -> i32 {
        let [arg] = args else {
            io.warn("One unit file must be provided.");
            return 1;
        };
        let name = mangle(arg);
        let unit = match self.existing_unit(io, &name, &format!("Error retrieving unit {name}")).await {
            Ok(unit) => unit,
            Err(code) => return code,
        };
        if is_global(&unit) {
            io.warn(&format!("Unable to retrieve journal of global unit {name}."));
            return 1;
        }
        if unit.current_state == "inactive" {
            io.warn(&format!("Unit {name} does not appear to be running."));
            return 1;
        }
        let mut argv = vec!["--unit".to_owned(), name, "--no-pager".to_owned(), "-n".to_owned()];
        argv.extend([journal.lines.to_string(), "--output".to_owned(), journal.output.clone()]);
        if journal.follow {
            argv.push("-f".to_owned());
        }
        let (program, argv) =
            if journal.sudo { ("sudo", [vec!["journalctl".to_owned()], argv].concat()) } else { ("journalctl", argv) };
        self.run_on(io, &unit.machine_id, port, program, &argv).await
    }

    /// fleet's findAddressInMachineList: the address of the one machine
    /// whose id starts with `prefix`.
    async fn machine_address(&self, prefix: &str) -> Result<String, String> {
        let machines = self.api.machines().await.map_err(|e| e.to_string())?;
        let mut matching = machines.iter().filter(|m| m.id.starts_with(prefix));
        let found = matching.next().ok_or("machine does not exist")?;
        if matching.next().is_some() {
            return Err("found more than one machine".to_owned());
        }
        Ok(found.primary_ip.clone())
    }

    /// fleet's findAddressInRunningUnits: the address of the machine a
    /// unit is on (empty when it is on none).
    async fn unit_address(&self, arg: &str) -> Result<String, String> {
        let name = mangle(arg);
        let unit = self.api.unit(&name).await.map_err(|e| e.to_string())?.ok_or("unit does not exist")?;
        if is_global(&unit) {
            return Err("global units unsupported".to_owned());
        }
        let machines = self.api.machines().await.map_err(|e| e.to_string())?;
        Ok(machines.into_iter().find(|m| m.id == unit.machine_id).map(|m| m.primary_ip).unwrap_or_default())
    }

    /// `ssh`: a shell, or the command after the target, on a machine.
    async fn ssh(&self, io: &mut Io<'_>, target: SshTarget, mut args: Vec<String>, agent: bool, port: u16) -> i32 {
        let addr = match target {
            SshTarget::Machine(prefix) => self.machine_address(&prefix).await,
            SshTarget::Unit(unit) => self.unit_address(&unit).await,
            SshTarget::Either if args.is_empty() => Err("one machine or unit must be provided".to_owned()),
            SshTarget::Either => {
                let lookup = args.remove(0);
                match (self.machine_address(&lookup).await, self.unit_address(&lookup).await) {
                    (Ok(_), Ok(unit)) if !unit.is_empty() => Err(format!(
                        "ambiguous argument, both machine and unit found for `{lookup}`.\nPlease use flag `-m` or `-u` to refine the search"
                    )),
                    (Ok(machine), _) => Ok(machine),
                    (_, Ok(unit)) if !unit.is_empty() => Ok(unit),
                    _ => Err("could not find matching unit or machine".to_owned()),
                }
            }
        };
        let addr = match addr {
            Ok(addr) if addr.is_empty() => {
                io.warn("Could not determine address of machine.");
                return 1;
            }
            Ok(addr) => addr,
            Err(e) => {
                io.warn(&format!("Unable to proceed: {e}"));
                return 1;
            }
        };
        // fleet's TrimToDashes: what follows `--`, if there is one.
        if let Some(dashes) = args.iter().position(|a| a == "--") {
            args.drain(..=dashes);
        }
        let command = (!args.is_empty()).then(|| args.join(" "));
        match self.ssh.run(io, &addr, port, agent, command.as_deref()).await {
            Ok(code) => code,
            Err(e) if command.is_some() => {
                io.warn(&format!("Failed running command over SSH: {e}"));
                -1
            }
            Err(e) => {
                io.warn(&format!("Failed opening shell over SSH: {e}"));
                1
            }
        }
    }

    async fn list_units(&self, io: &mut Io<'_>, listing: &Listing) -> i32 {
        const FIELDS: &[&str] = &["active", "hash", "load", "machine", "sub", "unit"];
        let Some(fields) = fields(io, listing, "unit,machine,active,sub", FIELDS) else { return 1 };
        let (states, machines) = match tokio::try_join!(self.api.unit_states(), self.api.machines()) {
            Ok(both) => both,
            Err(e) => {
                io.warn(&format!("Error retrieving list of units from repository: {e}"));
                return 1;
            }
        };
        let ips: BTreeMap<&str, &str> = machines.iter().map(|m| (m.id.as_str(), m.primary_ip.as_str())).collect();
        let cell = |state: &UnitState, field: &str| -> String {
            match field {
                "unit" => state.name.clone(),
                "load" => state.systemd_load_state.clone(),
                "active" => state.systemd_active_state.clone(),
                "sub" => state.systemd_sub_state.clone(),
                "hash" if listing.full => state.hash.clone(),
                "hash" => state.hash.chars().take(7).collect(),
                _ if state.machine_id.is_empty() => "-".to_owned(),
                _ => machine_legend(&state.machine_id, ips.get(state.machine_id.as_str()).copied(), listing.full),
            }
        };
        let rows = states.iter().map(|s| fields.iter().map(|f| cell(s, f)).collect()).collect();
        print_table(io, listing, &fields, rows);
        0
    }

    async fn list_unit_files(&self, io: &mut Io<'_>, listing: &Listing) -> i32 {
        const FIELDS: &[&str] = &["desc", "dstate", "global", "hash", "state", "target", "tmachine", "unit"];
        let Some(fields) = fields(io, listing, "unit,hash,dstate,state,target", FIELDS) else { return 1 };
        if fields.iter().any(|f| f == "tmachine") {
            io.warn("WARNING: The \"tmachine\" field is deprecated. Use \"target\" instead");
        }
        let (units, machines) = match tokio::try_join!(self.api.units(), self.api.machines()) {
            Ok(both) => both,
            Err(e) => {
                io.warn(&format!("Error retrieving list of units from repository: {e}"));
                return 1;
            }
        };
        let ips: BTreeMap<&str, &str> = machines.iter().map(|m| (m.id.as_str(), m.primary_ip.as_str())).collect();
        let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
        let cell = |unit: &Unit, field: &str| -> String {
            let file = schema::unit_file(&unit.options);
            let global = is_global(unit);
            match field {
                "unit" => unit.name.clone(),
                "hash" if listing.full => file.hash().to_string(),
                "hash" => file.hash().short(),
                "dstate" => dash(&unit.desired_state),
                "state" if global => "-".to_owned(),
                "state" => dash(&unit.current_state),
                "global" => global.to_string(),
                "desc" => dash(file.description().unwrap_or_default()),
                _ if global => "global".to_owned(),
                _ if unit.machine_id.is_empty() => "-".to_owned(),
                _ => machine_legend(&unit.machine_id, ips.get(unit.machine_id.as_str()).copied(), listing.full),
            }
        };
        let rows = units.iter().map(|u| fields.iter().map(|f| cell(u, f)).collect()).collect();
        print_table(io, listing, &fields, rows);
        0
    }

    async fn list_machines(&self, io: &mut Io<'_>, listing: &Listing) -> i32 {
        const FIELDS: &[&str] = &["ip", "machine", "metadata"];
        let Some(fields) = fields(io, listing, "machine,ip,metadata", FIELDS) else { return 1 };
        let machines = match self.api.machines().await {
            Ok(machines) => machines,
            Err(e) => {
                io.warn(&format!("Error retrieving list of active machines from fleet API ({e})"));
                io.warn("Possible issues:");
                io.warn("  etcd is unhealthy and/or lost quorum");
                io.warn("  connection cannot be established to any etcd servers");
                return 1;
            }
        };
        let cell = |m: &Machine, field: &str| -> String {
            match field {
                "machine" => machine_legend(&m.id, None, listing.full),
                "ip" if m.primary_ip.is_empty() => "-".to_owned(),
                "ip" => m.primary_ip.clone(),
                _ if m.metadata.is_empty() => "-".to_owned(),
                _ => m.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            }
        };
        let rows = machines.iter().map(|m| fields.iter().map(|f| cell(m, f)).collect()).collect();
        print_table(io, listing, &fields, rows);
        0
    }
}

/// The `--fields` of a listing, checked against the valid ones.
fn fields(io: &mut Io<'_>, listing: &Listing, default: &str, valid: &[&str]) -> Option<Vec<String>> {
    let text = listing.fields.as_deref().unwrap_or(default);
    if text.is_empty() {
        io.warn("Must define output format");
        return None;
    }
    let fields: Vec<String> = text.split(',').map(str::to_owned).collect();
    if let Some(bad) = fields.iter().find(|f| !valid.contains(&f.as_str())) {
        io.warn(&format!("Invalid key in output format: {bad:?}"));
        return None;
    }
    Some(fields)
}

fn print_table(io: &mut Io<'_>, listing: &Listing, fields: &[String], rows: Vec<Vec<String>>) {
    let mut all = Vec::new();
    if !listing.no_legend {
        all.push(fields.iter().map(|f| f.to_uppercase()).collect());
    }
    all.extend(rows);
    let _ = write!(io.out, "{}", table::render(&all));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_arguments() {
        assert_eq!(mangle("hello"), "hello.service");
        assert_eq!(mangle("/tmp/units/hello@1.service"), "hello@1.service");
        assert_eq!(mangle("x.socket"), "x.socket");
        assert_eq!(mangle("x.target"), "x.target.service");
    }

    #[test]
    fn legends() {
        assert_eq!(machine_legend("113f16a7abcdef", Some("172.18.1.1"), false), "113f16a7.../172.18.1.1");
        assert_eq!(machine_legend("113f16a7abcdef", None, true), "113f16a7abcdef");
        assert_eq!(machine_legend("short", Some(""), false), "short");
    }
}
