//! Where user data and metadata come from: a file, a URL, the kernel
//! command line's `cloud-config-url=`, the OEM partition, a config drive,
//! EC2's IMDS (v2 token flow, v1 fallback), GCE, DigitalOcean, OpenStack's
//! metadata service and QEMU's fw_cfg. Every base URL and path is a field,
//! so tests serve fakes on loopback. [`first_available`] polls sources with
//! backoff under an overall timeout; the first that answers wins.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::configdrive::{self, BlockDevices, ConfigDriveError, Device, Mounted};
use crate::substitute::Addresses;

/// What a datasource knows about the machine besides its user data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Addresses for `$private_ipv4` and friends.
    pub addresses: Addresses,
    /// The hostname the provider gave.
    pub hostname: Option<String>,
    /// SSH public keys for the user `core`.
    pub ssh_public_keys: Vec<String>,
}

/// User data (if the source has any) and metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The raw user data.
    pub user_data: Option<Vec<u8>>,
    /// The metadata.
    pub metadata: Metadata,
}

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datasource {
    /// A local file.
    File(PathBuf),
    /// An HTTP URL.
    Url(String),
    /// `cloud-config-url=` on the kernel command line (the file read, normally `/proc/cmdline`).
    ProcCmdline(PathBuf),
    /// The OEM partition's `cloud-config.yml` (the file, normally `/usr/share/oem/cloud-config.yml`).
    Oem(PathBuf),
    /// A config drive given by path: a mounted drive's root directory, or
    /// the device (mounted while it is read).
    ConfigDrive(PathBuf),
    /// The config drive found by its filesystem label (normally `config-2`),
    /// mounted while it is read.
    ConfigDriveLabel {
        /// The label.
        label: String,
        /// Where block devices are listed.
        devices: BlockDevices,
    },
    /// EC2's instance metadata service, e.g. `http://169.254.169.254`.
    Ec2(String),
    /// GCE's metadata server, e.g. `http://metadata.google.internal`.
    Gce(String),
    /// DigitalOcean's metadata service, e.g. `http://169.254.169.254`.
    DigitalOcean(String),
    /// OpenStack's metadata service, e.g. `http://169.254.169.254`.
    OpenStack(String),
    /// QEMU's fw_cfg entry file, normally
    /// `/sys/firmware/qemu_fw_cfg/by_name/opt/org.ferrite/user-data/raw`.
    FwCfg(PathBuf),
}

/// The fw_cfg entry Ferrite reads (`-fw_cfg name=opt/org.ferrite/user-data,file=...`).
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.ferrite/user-data/raw";
/// Where the OEM partition's cloud-config is.
pub const OEM_PATH: &str = "/usr/share/oem/cloud-config.yml";

/// A source that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    /// Not there (yet): no file, no answer, no such key on the kernel command line.
    #[error("{source_name} is not available: {reason}")]
    Unavailable {
        /// The source.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// There, but its answer makes no sense.
    #[error("{source_name}: {reason}")]
    Invalid {
        /// The source.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for Datasource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Datasource::File(p) => write!(f, "file {}", p.display()),
            Datasource::Url(u) => write!(f, "url {u}"),
            Datasource::ProcCmdline(p) => write!(f, "kernel command line {}", p.display()),
            Datasource::Oem(p) => write!(f, "OEM {}", p.display()),
            Datasource::ConfigDrive(p) => write!(f, "config drive {}", p.display()),
            Datasource::ConfigDriveLabel { label, .. } => write!(f, "config drive labelled {label}"),
            Datasource::Ec2(u) => write!(f, "EC2 metadata {u}"),
            Datasource::Gce(u) => write!(f, "GCE metadata {u}"),
            Datasource::DigitalOcean(u) => write!(f, "DigitalOcean metadata {u}"),
            Datasource::OpenStack(u) => write!(f, "OpenStack metadata {u}"),
            Datasource::FwCfg(p) => write!(f, "QEMU fw_cfg {}", p.display()),
        }
    }
}

/// An HTTP(S) client with the short timeouts metadata services warrant.
/// HTTPS servers are checked against the system's trust store
/// (`/etc/ssl/certs`), or the CA certificates in `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when those are set.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(10)).build()
}

/// The [`client`], built when a source first needs it. Building one reads
/// and parses the whole trust store, which the local sources a machine
/// boots from (the OEM partition, a config drive, fw_cfg) never use; under
/// emulation that cost a visible part of the boot.
#[derive(Debug, Default)]
pub struct Http(std::sync::OnceLock<reqwest::Client>);

impl Http {
    fn client(&self) -> Result<&reqwest::Client, reqwest::Error> {
        if let Some(client) = self.0.get() {
            return Ok(client);
        }
        let built = client()?;
        Ok(self.0.get_or_init(|| built))
    }

    /// Whether the client has been built (for tests).
    pub fn is_built(&self) -> bool {
        self.0.get().is_some()
    }
}

/// Whether a request failed in TLS: the server's certificate was refused
/// or the handshake made no sense. That is not cured by waiting, unlike a
/// refused connection. TLS errors reach us as `InvalidData` I/O errors,
/// possibly wrapped in another I/O error.
fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => return true,
            // An I/O error's `source` skips the error it wraps: step into it.
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

struct Ctx<'a> {
    name: String,
    http: &'a Http,
}

impl Ctx<'_> {
    fn unavailable(&self, reason: impl ToString) -> DatasourceError {
        DatasourceError::Unavailable { source_name: self.name.clone(), reason: reason.to_string() }
    }

    fn invalid(&self, reason: impl ToString) -> DatasourceError {
        DatasourceError::Invalid { source_name: self.name.clone(), reason: reason.to_string() }
    }

    /// The HTTP client; a source that cannot have one is invalid.
    fn client(&self) -> Result<&reqwest::Client, DatasourceError> {
        self.http.client().map_err(|e| self.invalid(format!("cannot set up the HTTP client: {e}")))
    }

    /// GET `url`: the body, `None` on 404, unavailable on no answer.
    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Option<Vec<u8>>, DatasourceError> {
        let mut request = self.client()?.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.map_err(|e| {
            let reason = format!("{url}: {}", ferrite_daemon::error_chain(&e));
            if is_tls_failure(&e) {
                self.invalid(reason)
            } else {
                self.unavailable(reason)
            }
        })?;
        match response.status() {
            s if s.is_success() => {
                Ok(Some(response.bytes().await.map_err(|e| self.unavailable(format!("{url}: {e}")))?.to_vec()))
            }
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.unavailable(format!("{url}: {s}"))),
        }
    }

    async fn get_text(&self, url: &str, headers: &[(&str, &str)]) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .get(url, headers)
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|s| !s.is_empty()))
    }

    fn read_file(&self, path: &std::path::Path) -> Result<Option<Vec<u8>>, DatasourceError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.invalid(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

fn ip(text: Option<&str>) -> Option<IpAddr> {
    text.and_then(|t| t.trim().parse().ok())
}

/// An interface's own IPv6 address (EC2's and GCE's metadata give no
/// other): `$private_ipv6`, and `$public_ipv6` too when it is globally
/// routable (neither unique-local fc00::/7 nor link-local fe80::/10), since
/// IPv6 on these clouds has no NAT.
fn interface_ipv6(addresses: &mut Addresses, text: Option<&str>) {
    let Some(IpAddr::V6(v6)) = ip(text.and_then(|t| t.lines().next())) else { return };
    let local = (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80;
    addresses.private_ipv6 = Some(IpAddr::V6(v6));
    if !local {
        addresses.public_ipv6 = Some(IpAddr::V6(v6));
    }
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

impl Datasource {
    /// Reads the source once.
    pub async fn fetch(&self, http: &Http) -> Result<Fetched, DatasourceError> {
        let ctx = Ctx { name: self.to_string(), http };
        match self {
            Datasource::File(path) | Datasource::Oem(path) | Datasource::FwCfg(path) => {
                let data = ctx.read_file(path)?.ok_or_else(|| ctx.unavailable("no such file"))?;
                Ok(Fetched { user_data: Some(data), metadata: Metadata::default() })
            }
            Datasource::Url(url) => {
                let data = ctx.get(url, &[]).await?.ok_or_else(|| ctx.unavailable("404 Not Found"))?;
                Ok(Fetched { user_data: Some(data), metadata: Metadata::default() })
            }
            Datasource::ProcCmdline(path) => {
                let cmdline = ctx.read_file(path)?.ok_or_else(|| ctx.unavailable("no such file"))?;
                let url = cloud_config_url(&String::from_utf8_lossy(&cmdline))
                    .ok_or_else(|| ctx.unavailable("no cloud-config-url= on the command line"))?;
                let data = ctx.get(&url, &[]).await?.ok_or_else(|| ctx.unavailable(format!("{url}: 404 Not Found")))?;
                Ok(Fetched { user_data: Some(data), metadata: Metadata::default() })
            }
            Datasource::ConfigDrive(path) if path.is_dir() => config_drive(&ctx, path),
            Datasource::ConfigDrive(path) => match configdrive::device(path) {
                Ok(device) => mounted_config_drive(&ctx, &device),
                Err(ConfigDriveError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    Err(ctx.unavailable("no such device or directory"))
                }
                Err(e) => Err(ctx.invalid(ferrite_daemon::error_chain(&e))),
            },
            Datasource::ConfigDriveLabel { label, devices } => {
                match devices.find(label).map_err(|e| ctx.invalid(ferrite_daemon::error_chain(&e)))? {
                    Some(device) => mounted_config_drive(&ctx, &device),
                    None => Err(ctx.unavailable(format!("no block device labelled {label}"))),
                }
            }
            Datasource::Ec2(url) => ec2(&ctx, base(url)).await,
            Datasource::Gce(url) => gce(&ctx, base(url)).await,
            Datasource::DigitalOcean(url) => digital_ocean(&ctx, base(url)).await,
            Datasource::OpenStack(url) => openstack(&ctx, base(url)).await,
        }
    }
}

/// The value of `cloud-config-url=` on a kernel command line (the last one
/// wins, as the kernel's own parameters do).
pub fn cloud_config_url(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("cloud-config-url="))
        .map(|v| v.trim_matches('"').to_owned())
        .next_back()
}

fn openstack_meta(ctx: &Ctx<'_>, json: &[u8], metadata: &mut Metadata) -> Result<(), DatasourceError> {
    let meta: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| ctx.invalid(format!("meta_data.json: {e}")))?;
    metadata.hostname = meta.get("hostname").and_then(|h| h.as_str()).map(str::to_owned);
    if let Some(keys) = meta.get("public_keys").and_then(|k| k.as_object()) {
        metadata.ssh_public_keys.extend(keys.values().filter_map(|k| k.as_str()).map(|k| k.trim().to_owned()));
    }
    Ok(())
}

fn config_drive(ctx: &Ctx<'_>, root: &std::path::Path) -> Result<Fetched, DatasourceError> {
    if !root.join("openstack").is_dir() {
        return Err(ctx.unavailable("no openstack/ directory"));
    }
    let latest = root.join("openstack/latest");
    let mut fetched = Fetched { user_data: ctx.read_file(&latest.join("user_data"))?, ..Fetched::default() };
    if let Some(json) = ctx.read_file(&latest.join("meta_data.json"))? {
        openstack_meta(ctx, &json, &mut fetched.metadata)?;
    }
    if let Some(json) = ctx.read_file(&root.join("ec2/latest/meta-data.json"))? {
        let meta: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| ctx.invalid(format!("meta-data.json: {e}")))?;
        let text = |key: &str| meta.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        fetched.metadata.addresses.private_ipv4 = ip(text("local-ipv4").as_deref());
        fetched.metadata.addresses.public_ipv4 = ip(text("public-ipv4").as_deref());
    }
    Ok(fetched)
}

/// Mounts a config drive, reads it and unmounts it, whether reading worked
/// or not.
fn mounted_config_drive(ctx: &Ctx<'_>, device: &Device) -> Result<Fetched, DatasourceError> {
    let chain = |e: ConfigDriveError| ctx.invalid(ferrite_daemon::error_chain(&e));
    let mounted = Mounted::mount(device).map_err(chain)?;
    tracing::info!("{} ({}) mounted on {}", device.path.display(), device.fs_type.name(), mounted.path().display());
    let fetched = config_drive(ctx, mounted.path());
    mounted.unmount().map_err(chain)?;
    fetched
}

async fn ec2(ctx: &Ctx<'_>, base: &str) -> Result<Fetched, DatasourceError> {
    // IMDSv2: a session token from a PUT; a service that refuses the PUT
    // (404, 403, 405) speaks only v1, so ask without a token.
    let token = ctx
        .client()?
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .map_err(|e| ctx.unavailable(format!("{base}: {e}")))?;
    let token = if token.status().is_success() {
        Some(token.text().await.map_err(|e| ctx.unavailable(e))?.trim().to_owned())
    } else {
        tracing::info!("{}: no IMDSv2 token ({}), using IMDSv1", ctx.name, token.status());
        None
    };
    let headers: Vec<(&str, &str)> =
        token.as_deref().map(|t| vec![("X-aws-ec2-metadata-token", t)]).unwrap_or_default();
    let meta = format!("{base}/latest/meta-data");
    let mut metadata =
        Metadata { hostname: ctx.get_text(&format!("{meta}/hostname"), &headers).await?, ..Metadata::default() };
    metadata.addresses.private_ipv4 = ip(ctx.get_text(&format!("{meta}/local-ipv4"), &headers).await?.as_deref());
    metadata.addresses.public_ipv4 = ip(ctx.get_text(&format!("{meta}/public-ipv4"), &headers).await?.as_deref());
    interface_ipv6(&mut metadata.addresses, ctx.get_text(&format!("{meta}/ipv6"), &headers).await?.as_deref());
    if let Some(list) = ctx.get_text(&format!("{meta}/public-keys"), &headers).await? {
        for line in list.lines() {
            let Some((index, _)) = line.split_once('=') else { continue };
            if let Some(key) = ctx.get_text(&format!("{meta}/public-keys/{index}/openssh-key"), &headers).await? {
                metadata.ssh_public_keys.push(key);
            }
        }
    }
    let user_data = ctx.get(&format!("{base}/latest/user-data"), &headers).await?;
    Ok(Fetched { user_data, metadata })
}

async fn gce(ctx: &Ctx<'_>, base: &str) -> Result<Fetched, DatasourceError> {
    let headers = [("Metadata-Flavor", "Google")];
    let v1 = format!("{base}/computeMetadata/v1");
    let mut metadata =
        Metadata { hostname: ctx.get_text(&format!("{v1}/instance/hostname"), &headers).await?, ..Metadata::default() };
    metadata.addresses.private_ipv4 =
        ip(ctx.get_text(&format!("{v1}/instance/network-interfaces/0/ip"), &headers).await?.as_deref());
    metadata.addresses.public_ipv4 = ip(ctx
        .get_text(&format!("{v1}/instance/network-interfaces/0/access-configs/0/external-ip"), &headers)
        .await?
        .as_deref());
    let ipv6s = ctx.get_text(&format!("{v1}/instance/network-interfaces/0/ipv6s"), &headers).await?;
    interface_ipv6(&mut metadata.addresses, ipv6s.as_deref());
    for scope in ["project", "instance"] {
        if let Some(keys) = ctx.get_text(&format!("{v1}/{scope}/attributes/ssh-keys"), &headers).await? {
            // "user:ssh-rsa AAAA... comment" per line.
            metadata
                .ssh_public_keys
                .extend(keys.lines().filter_map(|l| l.split_once(':')).map(|(_, key)| key.trim().to_owned()));
        }
    }
    let user_data = ctx.get(&format!("{v1}/instance/attributes/user-data"), &headers).await?;
    Ok(Fetched { user_data, metadata })
}

async fn digital_ocean(ctx: &Ctx<'_>, base: &str) -> Result<Fetched, DatasourceError> {
    let json = ctx
        .get(&format!("{base}/metadata/v1.json"), &[])
        .await?
        .ok_or_else(|| ctx.unavailable("no /metadata/v1.json"))?;
    let meta: serde_json::Value = serde_json::from_slice(&json).map_err(|e| ctx.invalid(format!("v1.json: {e}")))?;
    let address = |kind: &str, family: &str| {
        meta.pointer(&format!("/interfaces/{kind}/0/{family}/ip_address"))
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
    };
    let metadata = Metadata {
        addresses: Addresses {
            public_ipv4: address("public", "ipv4"),
            private_ipv4: address("private", "ipv4"),
            public_ipv6: address("public", "ipv6"),
            private_ipv6: address("private", "ipv6"),
        },
        hostname: meta.get("hostname").and_then(|h| h.as_str()).map(str::to_owned),
        ssh_public_keys: meta
            .get("public_keys")
            .and_then(|k| k.as_array())
            .map(|keys| keys.iter().filter_map(|k| k.as_str()).map(|k| k.trim().to_owned()).collect())
            .unwrap_or_default(),
    };
    let user_data = ctx.get(&format!("{base}/metadata/v1/user-data"), &[]).await?;
    Ok(Fetched { user_data, metadata })
}

async fn openstack(ctx: &Ctx<'_>, base: &str) -> Result<Fetched, DatasourceError> {
    let latest = format!("{base}/openstack/latest");
    let json = ctx
        .get(&format!("{latest}/meta_data.json"), &[])
        .await?
        .ok_or_else(|| ctx.unavailable("no openstack/latest/meta_data.json"))?;
    let mut fetched = Fetched::default();
    openstack_meta(ctx, &json, &mut fetched.metadata)?;
    // OpenStack serves the EC2-style address keys beside its own.
    let meta = format!("{base}/latest/meta-data");
    fetched.metadata.addresses.private_ipv4 = ip(ctx.get_text(&format!("{meta}/local-ipv4"), &[]).await?.as_deref());
    fetched.metadata.addresses.public_ipv4 = ip(ctx.get_text(&format!("{meta}/public-ipv4"), &[]).await?.as_deref());
    fetched.user_data = ctx.get(&format!("{latest}/user_data"), &[]).await?;
    Ok(fetched)
}

/// Polls `sources` in order, again and again with growing pauses (100 ms
/// doubling to 5 s), until one answers or `timeout` has passed; the first
/// that answers wins. A source whose answer is invalid (an untrusted
/// certificate, a drive that does not mount, metadata that is not JSON) is
/// reported and not asked again; when no source answers, the first such
/// error is returned, and `Ok(None)` means no source was there at all.
pub async fn first_available(
    sources: &[Datasource],
    timeout: Duration,
    http: &Http,
) -> Result<Option<(Datasource, Fetched)>, DatasourceError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let mut invalid: Vec<(usize, DatasourceError)> = Vec::new();
    let first_error =
        |invalid: Vec<(usize, DatasourceError)>| invalid.into_iter().next().map_or(Ok(None), |(_, e)| Err(e));
    loop {
        for (i, source) in sources.iter().enumerate() {
            if invalid.iter().any(|(j, _)| *j == i) {
                continue;
            }
            match tokio::time::timeout_at(deadline, source.fetch(http)).await {
                Ok(Ok(fetched)) => {
                    tracing::info!("user data from {source}");
                    return Ok(Some((source.clone(), fetched)));
                }
                Ok(Err(e @ DatasourceError::Unavailable { .. })) => tracing::debug!("{e}"),
                Ok(Err(e)) => {
                    tracing::error!("{e}");
                    invalid.push((i, e));
                }
                Err(_) => return first_error(invalid),
            }
        }
        if invalid.len() == sources.len() || tokio::time::Instant::now() + pause > deadline {
            return first_error(invalid);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_config_url_from_the_command_line() {
        assert_eq!(
            cloud_config_url("BOOT_IMAGE=/vmlinuz root=/dev/sda cloud-config-url=http://10.0.2.2:8000/cc quiet"),
            Some("http://10.0.2.2:8000/cc".to_owned())
        );
        assert_eq!(cloud_config_url("quiet"), None);
    }
}
