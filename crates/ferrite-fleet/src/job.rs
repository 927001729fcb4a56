//! A unit's scheduling requirements: its `[X-Fleet]` section read as fleet
//! reads it (deprecated `X-` and `X-Condition` forms, specifiers, last
//! `Global=` wins), and fleet's checks that refuse impossible combinations.

use std::collections::{BTreeMap, BTreeSet};

use crate::glob;
use crate::unit_file::UnitFile;
use crate::unit_name::NameInfo;

/// The keys fleet knows in `[X-Fleet]`, current and deprecated.
const KNOWN_KEYS: &[&str] = &[
    "MachineID",
    "X-ConditionMachineID",
    "X-ConditionMachineBootID",
    "X-ConditionMachineOf",
    "MachineOf",
    "X-Conflicts",
    "Conflicts",
    "X-ConditionMachineMetadata",
    "MachineMetadata",
    "Global",
    "Replaces",
];

/// Why a unit's requirements cannot be met; the messages are fleet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementsError {
    #[error("unresolvable requirements: peer {peer:?} matches conflict {conflict:?}")]
    PeerConflicts { peer: String, conflict: String },
    #[error("unresolvable requirements: peer {peer:?} matches replace {replace:?}")]
    PeerReplaced { peer: String, replace: String },
    #[error("MachineID cannot be used with Peers")]
    MachineIdWithPeers,
    #[error("MachineID cannot be used with Conflicts")]
    MachineIdWithConflicts,
    #[error("MachineID cannot be used with Global")]
    MachineIdWithGlobal,
    #[error("MachineID cannot be used with Replaces")]
    MachineIdWithReplaces,
    #[error("Global cannot be used with Peers")]
    GlobalWithPeers,
    #[error("Global cannot be used with Replaces")]
    GlobalWithReplaces,
    #[error("Conflicts cannot be used with Replaces")]
    ConflictsWithReplaces,
}

/// The `[X-Fleet]` requirements of a unit under a given name (the name
/// matters: `%i`, `%p`, `%n`, `%N` in values are expanded from it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    /// Every `[X-Fleet]` key with its values, specifiers expanded.
    values: BTreeMap<String, Vec<String>>,
}

impl Requirements {
    pub fn of(name: &str, unit: &UnitFile) -> Requirements {
        let info = NameInfo::parse(name);
        let mut values = unit.section("X-Fleet");
        if let Some(info) = info {
            for list in values.values_mut() {
                for value in list.iter_mut() {
                    *value = info.printf(value);
                }
            }
        }
        Requirements { values }
    }

    fn get(&self, key: &str) -> &[String] {
        self.values.get(key).map_or(&[], Vec::as_slice)
    }

    /// Keys of `[X-Fleet]` fleet does not know (it warns about them).
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.values.keys().map(String::as_str).filter(|k| !KNOWN_KEYS.contains(k)).collect()
    }

    /// Unit name patterns that must not share a machine with this unit;
    /// each value may list several, separated by whitespace.
    pub fn conflicts(&self) -> Vec<String> {
        let all = self.get("X-Conflicts").iter().chain(self.get("Conflicts"));
        all.flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>()).collect()
    }

    /// Unit name patterns this unit pushes off its machine.
    pub fn replaces(&self) -> Vec<String> {
        self.get("Replaces").to_vec()
    }

    /// Units whose machine this unit must share (`MachineOf=`).
    pub fn peers(&self) -> Vec<String> {
        self.get("X-ConditionMachineOf").iter().chain(self.get("MachineOf")).cloned().collect()
    }

    /// The machine this unit must run on (`MachineID=`, full or a prefix);
    /// the deprecated forms count when the current one is absent.
    pub fn required_machine(&self) -> Option<&str> {
        ["MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID"]
            .iter()
            .find_map(|key| self.get(key).first())
            .map(String::as_str)
    }

    /// `MachineMetadata=key=value` requirements: any value of a key may
    /// match (OR), every key must (AND). Malformed pairs are ignored.
    pub fn required_metadata(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for pair in self.get("X-ConditionMachineMetadata").iter().chain(self.get("MachineMetadata")) {
            let parts: Vec<&str> = pair.split('=').collect();
            if let [key, value] = parts[..] {
                if !key.is_empty() && !value.is_empty() {
                    out.entry(key.to_owned()).or_default().insert(value.to_owned());
                }
            }
        }
        out
    }

    /// `Global=`: the last value wins; true, yes, 1, on and t are true.
    pub fn is_global(&self) -> bool {
        self.get("Global")
            .last()
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on" | "t"))
    }

    /// fleet's `ValidateOptions`: combinations no machine could satisfy.
    pub fn validate(&self) -> Result<(), RequirementsError> {
        let conflicts: BTreeSet<String> = self.conflicts().into_iter().collect();
        let replaces: BTreeSet<String> = self.replaces().into_iter().collect();
        let peers: BTreeSet<String> = self.peers().into_iter().collect();
        for peer in &peers {
            if let Some(conflict) = conflicts.iter().find(|c| glob::matches(c, peer)) {
                return Err(RequirementsError::PeerConflicts { peer: peer.clone(), conflict: conflict.clone() });
            }
            if let Some(replace) = replaces.iter().find(|r| glob::matches(r, peer)) {
                return Err(RequirementsError::PeerReplaced { peer: peer.clone(), replace: replace.clone() });
            }
        }
        let (has_target, global) = (self.required_machine().is_some(), self.is_global());
        let (has_peers, has_conflicts, has_replaces) = (!peers.is_empty(), !conflicts.is_empty(), !replaces.is_empty());
        let error = match () {
            () if has_target && has_peers => RequirementsError::MachineIdWithPeers,
            () if has_target && has_conflicts => RequirementsError::MachineIdWithConflicts,
            () if has_target && global => RequirementsError::MachineIdWithGlobal,
            () if has_target && has_replaces => RequirementsError::MachineIdWithReplaces,
            () if global && has_peers => RequirementsError::GlobalWithPeers,
            () if global && has_replaces => RequirementsError::GlobalWithReplaces,
            () if has_conflicts && has_replaces => RequirementsError::ConflictsWithReplaces,
            () => return Ok(()),
        };
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(name: &str, x_fleet: &str) -> Requirements {
        Requirements::of(name, &UnitFile::parse(&format!("[Unit]\nDescription=t\n[X-Fleet]\n{x_fleet}")).unwrap())
    }

    #[test]
    fn conflicts_split_on_whitespace_and_include_the_deprecated_form() {
        let r = reqs("a.service", "X-Conflicts=old.service\nConflicts=b*.service c.service\nConflicts=d.service");
        assert_eq!(r.conflicts(), vec!["old.service", "b*.service", "c.service", "d.service"]);
    }

    #[test]
    fn specifiers_expand_from_the_units_name() {
        let r = reqs("web@3.service", "Conflicts=%p@*.service\nMachineOf=db@%i.service");
        assert_eq!(r.conflicts(), vec!["web@*.service"]);
        assert_eq!(r.peers(), vec!["db@3.service"]);
    }

    #[test]
    fn machine_id_prefers_the_current_key() {
        assert_eq!(reqs("a.service", "X-ConditionMachineID=old\nMachineID=new").required_machine(), Some("new"));
        assert_eq!(reqs("a.service", "X-ConditionMachineBootID=boot").required_machine(), Some("boot"));
        assert_eq!(reqs("a.service", "").required_machine(), None);
    }

    #[test]
    fn metadata_ors_values_and_ands_keys() {
        let r = reqs("a.service", "MachineMetadata=\"region=us\" \"region=eu\"\nMachineMetadata=disk=ssd\nMachineMetadata=bad\nMachineMetadata=a=b=c\nMachineMetadata==x");
        let m = r.required_metadata();
        assert_eq!(m.len(), 2);
        assert_eq!(m["region"], BTreeSet::from(["us".to_owned(), "eu".to_owned()]));
        assert_eq!(m["disk"], BTreeSet::from(["ssd".to_owned()]));
    }

    #[test]
    fn global_last_value_wins() {
        assert!(reqs("a.service", "Global=false\nGlobal=Yes").is_global());
        assert!(!reqs("a.service", "Global=true\nGlobal=0").is_global());
        assert!(!reqs("a.service", "").is_global());
    }

    #[test]
    fn unknown_keys_are_listed() {
        assert_eq!(reqs("a.service", "Global=true\nMachineIDs=x\nFoo=1").unknown_keys(), vec!["Foo", "MachineIDs"]);
    }

    #[test]
    fn impossible_combinations_are_refused_with_fleets_messages() {
        let cases = [
            (
                "MachineOf=db.service\nConflicts=db*",
                "unresolvable requirements: peer \"db.service\" matches conflict \"db*\"",
            ),
            (
                "MachineOf=db.service\nReplaces=db.service",
                "unresolvable requirements: peer \"db.service\" matches replace \"db.service\"",
            ),
            ("MachineID=abc\nMachineOf=db.service", "MachineID cannot be used with Peers"),
            ("MachineID=abc\nConflicts=x", "MachineID cannot be used with Conflicts"),
            ("MachineID=abc\nGlobal=true", "MachineID cannot be used with Global"),
            ("MachineID=abc\nReplaces=x", "MachineID cannot be used with Replaces"),
            ("Global=true\nMachineOf=db.service", "Global cannot be used with Peers"),
            ("Global=true\nReplaces=x", "Global cannot be used with Replaces"),
            ("Conflicts=x\nReplaces=y", "Conflicts cannot be used with Replaces"),
        ];
        for (x_fleet, message) in cases {
            assert_eq!(reqs("a.service", x_fleet).validate().unwrap_err().to_string(), message, "{x_fleet}");
        }
        assert_eq!(reqs("a.service", "Global=true\nConflicts=b*\nMachineMetadata=r=us").validate(), Ok(()));
    }
}
