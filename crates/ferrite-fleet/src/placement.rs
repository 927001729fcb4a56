//! Where a unit may run: fleet's eligibility rules (`AbleToRun`) and its
//! choice of the least loaded eligible machine (`Decide`), as pure
//! functions over a picture of the cluster. The engine and the agent build
//! that picture from the store; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::glob;
use crate::job::Requirements;

/// A unit as placement sees it: its name and requirements, with the
/// patterns every placement decision matches against worked out once.
#[derive(Debug, Clone)]
pub struct PlacedUnit {
    pub name: String,
    pub requirements: Requirements,
    conflicts: Vec<String>,
    replaces: Vec<String>,
}

impl PlacedUnit {
    pub fn new(name: String, requirements: Requirements) -> PlacedUnit {
        let (conflicts, replaces) = (requirements.conflicts(), requirements.replaces());
        PlacedUnit { name, requirements, conflicts, replaces }
    }
}

/// One machine and the units placed on it.
#[derive(Debug, Clone, Default)]
pub struct MachinePlan {
    pub id: String,
    pub metadata: BTreeMap<String, String>,
    pub units: Vec<PlacedUnit>,
}

/// The outcome of asking whether a machine can run a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// It can.
    Yes,
    /// It cannot; the reason is fleet's wording.
    No(String),
    /// It can, by pushing off the named unit, which `Replaces=` names (or
    /// which names this one).
    Replacing(String),
}

/// fleet's short machine id: the first 8 characters.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

impl MachinePlan {
    pub fn has_unit(&self, name: &str) -> bool {
        self.units.iter().any(|u| u.name == name)
    }

    /// Every required key present with one of its allowed values.
    pub fn has_metadata(&self, required: &BTreeMap<String, BTreeSet<String>>) -> bool {
        required.iter().all(|(key, values)| self.metadata.get(key).is_some_and(|v| values.contains(v)))
    }

    /// A placed unit (other than `name` itself) that conflicts with `name`
    /// in either direction: its `Conflicts=` matches `name`, or one of
    /// `conflicts` matches it.
    pub fn conflict_with(&self, name: &str, conflicts: &[String]) -> Option<&str> {
        self.units.iter().filter(|u| u.name != name).find_map(|placed| {
            let theirs = placed.conflicts.iter().any(|c| glob::matches(c, name));
            let ours = conflicts.iter().any(|c| glob::matches(c, &placed.name));
            (theirs || ours).then_some(placed.name.as_str())
        })
    }

    /// A placed unit that exactly one side's `Replaces=` names; when both
    /// name each other the circle is ignored, as fleet does.
    pub fn replaced_by(&self, name: &str, replaces: &[String]) -> Option<&str> {
        self.units.iter().filter(|u| u.name != name).find_map(|placed| {
            let we_replace = replaces.iter().any(|r| glob::matches(r, &placed.name));
            let they_replace = placed.replaces.iter().any(|r| glob::matches(r, name));
            (we_replace != they_replace).then_some(placed.name.as_str())
        })
    }

    /// fleet's `AbleToRun`, checks in its order.
    pub fn fit(&self, unit: &PlacedUnit) -> Fit {
        let requirements = &unit.requirements;
        if let Some(required) = requirements.required_machine() {
            if self.id != required && short_id(&self.id) != required {
                return Fit::No(format!("agent ID {:?} does not match required {required:?}", self.id));
            }
        }
        let metadata = requirements.required_metadata();
        if !metadata.is_empty() && !self.has_metadata(&metadata) {
            return Fit::No("local Machine metadata insufficient".to_owned());
        }
        if let Some(peer) = requirements.peers().into_iter().find(|p| !self.has_unit(p)) {
            return Fit::No(format!("required peer Unit({peer}) is not scheduled locally"));
        }
        if let Some(other) = self.conflict_with(&unit.name, &unit.conflicts) {
            return Fit::No(format!("found conflict with locally-scheduled Unit({other})"));
        }
        if let Some(other) = self.replaced_by(&unit.name, &unit.replaces) {
            return Fit::Replacing(other.to_owned());
        }
        Fit::Yes
    }
}

/// fleet's `Decide`: machines ordered by how many units they hold, then by
/// id; the first that can run the unit (replacing counts) wins.
pub fn decide<'a>(machines: &'a [MachinePlan], unit: &PlacedUnit) -> Option<&'a MachinePlan> {
    let mut order: Vec<&MachinePlan> = machines.iter().collect();
    order.sort_by(|a, b| a.units.len().cmp(&b.units.len()).then_with(|| a.id.cmp(&b.id)));
    order.into_iter().find(|m| !matches!(m.fit(unit), Fit::No(_)))
}

/// Where a replaced unit goes: the least loaded machine other than
/// `current`, with no eligibility check (fleet's `DecideReschedule`).
pub fn decide_reschedule<'a>(machines: &'a [MachinePlan], current: &str) -> Option<&'a MachinePlan> {
    machines.iter().filter(|m| m.id != current).min_by(|a, b| a.units.len().cmp(&b.units.len()).then(a.id.cmp(&b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit_file::UnitFile;

    fn unit(name: &str, x_fleet: &str) -> PlacedUnit {
        let file = UnitFile::parse(&format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{x_fleet}")).unwrap();
        PlacedUnit::new(name.to_owned(), Requirements::of(name, &file))
    }

    fn machine(id: &str, metadata: &[(&str, &str)], units: Vec<PlacedUnit>) -> MachinePlan {
        MachinePlan {
            id: id.to_owned(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            units,
        }
    }

    #[test]
    fn machine_id_matches_full_or_short() {
        let m = machine("0123456789abcdef", &[], vec![]);
        assert_eq!(m.fit(&unit("a.service", "MachineID=0123456789abcdef")), Fit::Yes);
        assert_eq!(m.fit(&unit("a.service", "MachineID=01234567")), Fit::Yes);
        assert_eq!(
            m.fit(&unit("a.service", "MachineID=ffff")),
            Fit::No("agent ID \"0123456789abcdef\" does not match required \"ffff\"".into())
        );
    }

    #[test]
    fn metadata_must_satisfy_every_key() {
        let m = machine("m1", &[("region", "us"), ("disk", "ssd")], vec![]);
        assert_eq!(m.fit(&unit("a.service", "MachineMetadata=\"region=eu\" \"region=us\"")), Fit::Yes);
        assert_eq!(m.fit(&unit("a.service", "MachineMetadata=region=us\nMachineMetadata=disk=ssd")), Fit::Yes);
        assert_eq!(
            m.fit(&unit("a.service", "MachineMetadata=region=us\nMachineMetadata=gpu=yes")),
            Fit::No("local Machine metadata insufficient".into())
        );
    }

    #[test]
    fn peers_must_be_local() {
        let m = machine("m1", &[], vec![unit("db.service", "")]);
        assert_eq!(m.fit(&unit("web.service", "MachineOf=db.service")), Fit::Yes);
        assert_eq!(
            m.fit(&unit("web.service", "MachineOf=cache.service")),
            Fit::No("required peer Unit(cache.service) is not scheduled locally".into())
        );
    }

    #[test]
    fn conflicts_work_in_both_directions() {
        let holder = machine("m1", &[], vec![unit("conflict.0.service", "Conflicts=conflict.*.service")]);
        // The placed unit's pattern matches the newcomer.
        assert_eq!(
            holder.fit(&unit("conflict.1.service", "")),
            Fit::No("found conflict with locally-scheduled Unit(conflict.0.service)".into())
        );
        // The newcomer's pattern matches the placed unit.
        let plain = machine("m1", &[], vec![unit("hello.service", "")]);
        assert!(matches!(plain.fit(&unit("c.service", "Conflicts=hello.service")), Fit::No(_)));
        // A unit never conflicts with itself.
        let itself = machine("m1", &[], vec![unit("conflict.0.service", "Conflicts=conflict.*.service")]);
        assert_eq!(itself.fit(&unit("conflict.0.service", "Conflicts=conflict.*.service")), Fit::Yes);
    }

    #[test]
    fn replaces_one_way_only() {
        let m = machine("m1", &[], vec![unit("replace.0.service", "")]);
        assert_eq!(
            m.fit(&unit("kick.service", "Replaces=replace.0.service")),
            Fit::Replacing("replace.0.service".into())
        );
        let circular = machine("m1", &[], vec![unit("replace.0.service", "Replaces=kick.service")]);
        assert_eq!(circular.fit(&unit("kick.service", "Replaces=replace.0.service")), Fit::Yes);
    }

    #[test]
    fn decide_picks_the_least_loaded_then_lowest_id() {
        let machines =
            vec![machine("c", &[], vec![]), machine("a", &[], vec![unit("x.service", "")]), machine("b", &[], vec![])];
        assert_eq!(decide(&machines, &unit("new.service", "")).unwrap().id, "b");
        // Conflicts push it elsewhere; a replacement is acceptable.
        let machines = vec![machine("a", &[], vec![]), machine("b", &[], vec![unit("old.service", "")])];
        assert_eq!(decide(&machines, &unit("n.service", "MachineOf=old.service")).unwrap().id, "b");
        assert!(decide(&machines, &unit("n.service", "MachineID=zzz")).is_none());
        assert_eq!(decide_reschedule(&machines, "b").unwrap().id, "a");
    }

    #[test]
    fn five_conflicting_units_fill_three_machines_and_no_more() {
        let mut machines = vec![machine("m1", &[], vec![]), machine("m2", &[], vec![]), machine("m3", &[], vec![])];
        let mut placed = Vec::new();
        for i in 0..5 {
            let u = unit(&format!("conflict.{i}.service"), "Conflicts=conflict.*.service");
            if let Some(id) = decide(&machines, &u).map(|m| m.id.clone()) {
                machines.iter_mut().find(|m| m.id == id).unwrap().units.push(u);
                placed.push(id);
            }
        }
        placed.sort();
        assert_eq!(placed, vec!["m1", "m2", "m3"]);
    }
}
