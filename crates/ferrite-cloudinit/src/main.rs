//! `ferrite-cloudinit`: parses arguments, sets up logging, calls the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrite_cloudinit::apply::ApplyError;
use ferrite_cloudinit::configdrive;
use ferrite_cloudinit::datasource::{self, Datasource};
use ferrite_cloudinit::substitute::Addresses;

/// A coreos-cloudinit-compatible cloud-config validator and interpreter.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reports every problem in a user-data file as `line N: error|warning|info: message`;
    /// exits 1 when there is an error.
    Validate {
        /// The user-data file (`-` for standard input).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validates user data and, when it has no error, applies it.
    Apply(Box<ApplyArgs>),
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// Read user data from this file.
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// Fetch user data from this HTTP URL.
    #[arg(long, value_name = "URL")]
    from_url: Option<String>,
    /// Fetch user data from the URL in `cloud-config-url=` on the kernel command line.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "/proc/cmdline")]
    from_proc_cmdline: Option<PathBuf>,
    /// Read the OEM partition's cloud-config.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = datasource::OEM_PATH)]
    from_oem: Option<PathBuf>,
    /// Read a config drive (openstack/latest/user_data and meta_data.json):
    /// without a value, the block device labelled config-2 (through udev's
    /// link, or found by reading labels when there is none yet); with one, a
    /// mounted drive's directory or a device. Devices are mounted read-only
    /// while they are read.
    #[arg(long, value_name = "DIR|DEVICE", num_args = 0..=1, default_missing_value = configdrive::BY_LABEL)]
    from_configdrive: Option<PathBuf>,
    /// Read QEMU's fw_cfg entry opt/org.ferrite/user-data.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = datasource::FW_CFG_PATH)]
    from_qemu_fw_cfg: Option<PathBuf>,
    /// Ask EC2's instance metadata service (IMDSv2, falling back to v1).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://169.254.169.254")]
    from_ec2_metadata: Option<String>,
    /// Ask GCE's metadata server.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://metadata.google.internal")]
    from_gce_metadata: Option<String>,
    /// Ask DigitalOcean's metadata service.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://169.254.169.254")]
    from_digitalocean_metadata: Option<String>,
    /// Ask OpenStack's metadata service.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://169.254.169.254")]
    from_openstack_metadata: Option<String>,
    /// Give up on the sources after this many seconds (they are polled with backoff).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
    /// Apply to the tree under DIR offline (as `systemctl --root`): files,
    /// unit files, drop-ins, enable and mask links, /etc/environment,
    /// /etc/hostname; unit commands and scripts are skipped.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Queue unit commands without waiting for their jobs (for the boot
    /// unit, which the daemons it starts are ordered after).
    #[arg(long)]
    no_block: bool,
    /// `$private_ipv4` (otherwise from metadata or COREOS_PRIVATE_IPV4).
    #[arg(long)]
    private_ipv4: Option<IpAddr>,
    /// `$public_ipv4` (otherwise from metadata or COREOS_PUBLIC_IPV4).
    #[arg(long)]
    public_ipv4: Option<IpAddr>,
    /// `$private_ipv6`.
    #[arg(long)]
    private_ipv6: Option<IpAddr>,
    /// `$public_ipv6`.
    #[arg(long)]
    public_ipv6: Option<IpAddr>,
}

impl ApplyArgs {
    /// The sources given, in the order they are tried.
    fn sources(&self) -> Vec<Datasource> {
        let mut sources = Vec::new();
        sources.extend(self.from_file.clone().map(Datasource::File));
        sources.extend(self.from_url.clone().map(Datasource::Url));
        sources.extend(self.from_proc_cmdline.clone().map(Datasource::ProcCmdline));
        sources.extend(self.from_configdrive.clone().map(|path| {
            if path.as_os_str() == configdrive::BY_LABEL {
                Datasource::ConfigDriveLabel {
                    label: configdrive::LABEL.to_owned(),
                    devices: configdrive::BlockDevices::default(),
                }
            } else {
                Datasource::ConfigDrive(path)
            }
        }));
        sources.extend(self.from_qemu_fw_cfg.clone().map(Datasource::FwCfg));
        sources.extend(self.from_ec2_metadata.clone().map(Datasource::Ec2));
        sources.extend(self.from_gce_metadata.clone().map(Datasource::Gce));
        sources.extend(self.from_digitalocean_metadata.clone().map(Datasource::DigitalOcean));
        sources.extend(self.from_openstack_metadata.clone().map(Datasource::OpenStack));
        // The OEM partition's config is the image's default: any user data
        // found elsewhere comes first.
        sources.extend(self.from_oem.clone().map(Datasource::Oem));
        sources
    }
}

fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let sources = args.sources();
    anyhow::ensure!(!sources.is_empty(), "no datasource given (--from-file, --from-url, ...)");
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    let http = datasource::Http::default();
    let found = runtime.block_on(datasource::first_available(&sources, Duration::from_secs(args.timeout), &http));
    drop(runtime);
    let found = found.context("no user data")?;
    let Some((source, fetched)) = found else {
        tracing::warn!("no datasource answered within {} s; nothing to apply", args.timeout);
        return Ok(ExitCode::SUCCESS);
    };
    let data = fetched.user_data.unwrap_or_default();
    let from_metadata = fetched.metadata.addresses.clone();
    let addresses = Addresses {
        public_ipv4: args.public_ipv4.or(from_metadata.public_ipv4),
        private_ipv4: args.private_ipv4.or(from_metadata.private_ipv4),
        public_ipv6: args.public_ipv6.or(from_metadata.public_ipv6),
        private_ipv6: args.private_ipv6.or(from_metadata.private_ipv6),
    };
    let (report, mut plan) = match ferrite_cloudinit::prepare(&data, &addresses, |k| std::env::var(k).ok()) {
        Ok(prepared) => prepared,
        Err(ferrite_cloudinit::Error::Invalid(report)) => {
            print!("{report}");
            eprintln!("ferrite-cloudinit: user data from {source} has errors, nothing applied");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    print!("{report}");
    ferrite_cloudinit::plan::add_metadata(&mut plan, &fetched.metadata);
    let outcome = match &args.root {
        Some(root) => {
            let mut machine = ferrite_cloudinit::apply::Offline::default();
            let outcome = ferrite_cloudinit::apply::apply(&plan, root, &mut machine);
            for skipped in &machine.skipped {
                tracing::info!("offline, skipped: {skipped}");
            }
            outcome
        }
        None => {
            let mut machine = ferrite_cloudinit::live::Live::new(args.no_block)?;
            ferrite_cloudinit::apply::apply(&plan, std::path::Path::new("/"), &mut machine)
        }
    };
    match outcome {
        Ok(outcome) => tracing::info!("{} changes", outcome.changes.len()),
        Err(ApplyError::Preflight(problems)) => {
            print!("{problems}");
            eprintln!("ferrite-cloudinit: the target cannot take the user data from {source}, nothing applied");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(file: &PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let data = if file.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut data).context("cannot read standard input")?;
        data
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let report = ferrite_cloudinit::validate::validate(&data);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(if report.has_errors() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn main() -> ExitCode {
    let args = Args::parse();
    ferrite_daemon::init_tracing("info");
    let outcome = match &args.command {
        Command::Validate { file, json } => validate(file, *json),
        Command::Apply(apply_args) => apply(apply_args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => ferrite_daemon::exit("ferrite-cloudinit", Err(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(argv: &[&str]) -> Vec<Datasource> {
        let args = Args::try_parse_from([&["ferrite-cloudinit", "apply"], argv].concat()).unwrap();
        let Command::Apply(apply) = args.command else { panic!("not apply") };
        apply.sources()
    }

    #[test]
    fn a_bare_from_configdrive_finds_the_drive_by_its_label() {
        let by_label = Datasource::ConfigDriveLabel {
            label: configdrive::LABEL.to_owned(),
            devices: configdrive::BlockDevices::default(),
        };
        assert_eq!(sources(&["--from-configdrive", "--from-oem"])[0], by_label);
        assert_eq!(sources(&["--from-configdrive"]), [by_label]);
        assert_eq!(
            sources(&["--from-configdrive=/media/configdrive"]),
            [Datasource::ConfigDrive("/media/configdrive".into())]
        );
    }

    #[test]
    fn the_boot_units_command_lines_parse() {
        for unit in ["ferrite-cloudinit.service", "ferrite-cloudinit-network.service"] {
            let path = format!("{}/../../os-config/usr/lib/systemd/system/{unit}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
            let argv: Vec<&str> = exec.split_whitespace().collect();
            let args = Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{unit}: {e}"));
            let Command::Apply(apply) = args.command else { panic!("{unit}: not apply") };
            assert!(!apply.sources().is_empty(), "{unit}");
        }
    }
}
