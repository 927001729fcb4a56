//! Which of the workspace's binaries go into the image: every `ferrite-*`
//! binary target, unless its package says `[package.metadata.ferrite]
//! in-image = false` (host tools such as this builder). Discovered from
//! `cargo metadata`, so a new daemon comes in without touching the builder.

use serde_json::Value;

/// `cargo metadata` output that does not have the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("not JSON")]
    Json(#[from] serde_json::Error),
    #[error("no `packages` array")]
    NoPackages,
}

/// A binary target to build and install.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binary {
    pub package: String,
    pub name: String,
}

/// Picks the image's binaries out of `cargo metadata --format-version 1`.
pub fn from_metadata(json: &str) -> Result<Vec<Binary>, MetadataError> {
    let v: Value = serde_json::from_str(json)?;
    let packages = v.get("packages").and_then(Value::as_array).ok_or(MetadataError::NoPackages)?;
    let mut out = Vec::new();
    for p in packages {
        let excluded = p.pointer("/metadata/ferrite/in-image").and_then(Value::as_bool) == Some(false);
        if excluded {
            continue;
        }
        let package = p.get("name").and_then(Value::as_str).unwrap_or_default();
        for t in p.get("targets").and_then(Value::as_array).into_iter().flatten() {
            let is_bin = t.get("kind").and_then(Value::as_array).is_some_and(|k| k.iter().any(|k| k == "bin"));
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            if is_bin && name.starts_with("ferrite-") {
                out.push(Binary { package: package.to_string(), name: name.to_string() });
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_ferrite_binaries_and_skips_host_tools_and_libraries() {
        let json = r#"{"packages":[
          {"name":"ferrite-store","metadata":null,"targets":[{"kind":["lib"],"name":"ferrite_store"},{"kind":["bin"],"name":"ferrite-store"}]},
          {"name":"ferrite-image","metadata":{"ferrite":{"in-image":false}},"targets":[{"kind":["bin"],"name":"ferrite-image"}]},
          {"name":"xtask","metadata":null,"targets":[{"kind":["bin"],"name":"xtask"}]},
          {"name":"ferrite-discovery","metadata":null,"targets":[{"kind":["bin"],"name":"ferrite-discovery"},{"kind":["test"],"name":"ferrite-it"}]}
        ]}"#;
        let got = from_metadata(json).unwrap();
        let names: Vec<_> = got.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["ferrite-discovery", "ferrite-store"]);
    }

    #[test]
    fn refuses_output_without_packages() {
        assert!(matches!(from_metadata("{}"), Err(MetadataError::NoPackages)));
        assert!(matches!(from_metadata("nope"), Err(MetadataError::Json(_))));
    }
}
