//! The manifest written beside every image: what went in (versions,
//! packages, binaries) and what came out (hashes and sizes per partition
//! and per artifact).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub version: String,
    pub source_date_epoch: u64,
    pub kernel: String,
    pub usr_hash: String,
    /// The kernel command line the PXE set boots with (the PXE server adds
    /// `cloud-config-url=` and its own).
    pub pxe_command_line: String,
    pub tree_key: String,
    pub packages: Vec<Package>,
    pub binaries: Vec<File>,
    pub partitions: Vec<Partition>,
    pub artifacts: Vec<File>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub number: usize,
    pub label: String,
    pub type_guid: String,
    pub uuid: String,
    pub offset: u64,
    /// Size of the partition.
    pub size: u64,
    /// Bytes of content written into it (0 for an empty slot).
    pub content_size: u64,
    /// SHA-256 of the content written.
    pub content_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct File {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Installed packages from a dpkg status file, sorted by name.
pub fn installed_packages(status: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')).map(str::trim))
        };
        if field("Status").is_some_and(|s| s.ends_with(" installed")) {
            if let (Some(name), Some(version)) = (field("Package"), field("Version")) {
                out.push(Package { name: name.to_string(), version: version.to_string() });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_installed_packages_only() {
        let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: bash\nStatus: install ok installed\nPriority: required\nVersion: 5.2.15-2+b2\n";
        let got = installed_packages(status);
        assert_eq!(
            got,
            [
                Package { name: "bash".into(), version: "5.2.15-2+b2".into() },
                Package { name: "zlib1g".into(), version: "1:1.2.13".into() },
            ]
        );
    }
}
