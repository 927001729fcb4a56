//! ferrite-cloudinit: a coreos-cloudinit-compatible cloud-config validator
//! and interpreter.
//!
//! User data flows: [`userdata`] (decompress, classify) → [`validate`]
//! (every problem, with its line) → [`substitute`] (`$private_ipv4`) →
//! [`config`] (typed) → [`plan`] (what to change, as data) → [`apply`]
//! (carried out through the [`apply::Machine`] trait, on a live machine or
//! on a tree with `--root`). [`prepare`] does everything up to the plan.

pub mod apply;
pub mod command;
pub mod config;
pub mod configdrive;
pub mod datasource;
pub mod decode;
pub mod live;
pub mod plan;
pub mod preflight;
pub mod schema;
pub mod substitute;
pub mod userdata;
pub mod validate;
pub mod yaml;

use substitute::Addresses;
use validate::Report;

/// Why user data cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The validator found errors; nothing is applied.
    #[error("user data has errors, nothing was applied:\n{0}")]
    Invalid(Report),
    /// Compressed user data that does not decompress.
    #[error(transparent)]
    UserData(#[from] userdata::UserDataError),
    /// A validated config that still cannot become a plan.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
}

/// Validates user data and, when it has no error, plans it: the report
/// (warnings and infos) and the plan. `env` looks up `COREOS_*_IPV*`
/// variables for addresses metadata does not supply.
pub fn prepare(
    raw: &[u8],
    addresses: &Addresses,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Report, plan::Plan), Error> {
    let data = userdata::decompress(raw)?;
    let substitutions = addresses.substitutions(env);
    let empty = plan::Plan { environment: addresses.environment(), ..plan::Plan::default() };
    match userdata::classify(&data) {
        userdata::UserData::Empty => Ok((Report::default(), empty)),
        userdata::UserData::Ignition => Ok((validate::validate(&data), empty)),
        userdata::UserData::Unknown => Err(Error::Invalid(validate::validate(&data))),
        userdata::UserData::Script(script) => {
            let script = substitute::substitute(&String::from_utf8_lossy(&script), &substitutions);
            Ok((Report::default(), plan::Plan { script: Some(script.into_bytes()), ..empty }))
        }
        userdata::UserData::CloudConfig(text) => {
            let (report, _) = validate::validate_cloud_config(&text);
            if report.has_errors() {
                return Err(Error::Invalid(report));
            }
            let (after, tree) = validate::validate_cloud_config(&substitute::substitute(&text, &substitutions));
            let Some(tree) = tree.filter(|_| !after.has_errors()) else { return Err(Error::Invalid(after)) };
            let config = config::CloudConfig::from_tree(&tree)?;
            Ok((report, plan::plan(&config, addresses)))
        }
    }
}
