//! One pass of the engine over a picture of the cluster: which units to
//! take off machines, where to place the others, and what each machine's
//! plan must say. Pure: the caller reads the picture from the registry and
//! carries out the actions.
//!
//! The passes are fleet's (`engine/reconciler.go`): first every placed unit
//! is checked against its machine (still alive, still eligible, not
//! replaced), then every unplaced unit that should run is given the least
//! loaded eligible machine. Units are taken in name order, where fleet
//! took them in Go's random map order.

use std::collections::{BTreeMap, BTreeSet};

use crate::job::Requirements;
use crate::placement::{decide, decide_reschedule, Fit, MachinePlan, PlacedUnit};
use crate::registry::{JobRecord, MachineState, PlanEntry, TargetState};

/// What the engine reads before a pass.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub jobs: Vec<JobRecord>,
    /// Live machines (their objects have not expired).
    pub machines: Vec<MachineState>,
    /// Every machine's plan as stored, dead machines' included.
    pub plans: BTreeMap<String, BTreeMap<String, PlanEntry>>,
}

/// A change to make in the registry, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Unschedule {
        unit: String,
        machine: String,
        reason: String,
    },
    Schedule {
        unit: String,
        machine: String,
    },
    PutPlan {
        machine: String,
        unit: String,
        entry: PlanEntry,
    },
    RemovePlan {
        machine: String,
        unit: String,
    },
    /// The machine is gone: drop its plan and the unit states it left.
    ForgetMachine {
        machine: String,
    },
}

struct Job<'a> {
    record: &'a JobRecord,
    placed: PlacedUnit,
    global: bool,
}

/// Computes the actions of one pass.
pub fn reconcile(view: &ClusterView) -> Vec<Action> {
    let jobs: Vec<Job<'_>> = view
        .jobs
        .iter()
        .map(|record| {
            let requirements = Requirements::of(&record.name, &record.unit);
            let global = requirements.is_global();
            Job { record, placed: PlacedUnit::new(record.name.clone(), requirements), global }
        })
        .collect();
    let alive: BTreeSet<&str> = view.machines.iter().map(|m| m.id.as_str()).collect();
    // Where each non-global unit is placed, as this pass changes it.
    let mut targets: BTreeMap<&str, String> = jobs
        .iter()
        .filter(|j| !j.global)
        .filter_map(|j| j.record.target.clone().map(|t| (j.record.name.as_str(), t)))
        .collect();
    let by_name: BTreeMap<&str, &Job<'_>> = jobs.iter().map(|j| (j.record.name.as_str(), j)).collect();
    let mut agents = agents(view, &jobs, &targets);
    let mut actions = Vec::new();

    // Pass A: every placed unit against its machine.
    for job in jobs.iter().filter(|j| !j.global) {
        let name = job.record.name.as_str();
        let Some(target) = targets.get(name).cloned() else { continue };
        let reason = if job.record.target_state == TargetState::Inactive {
            Some("target state inactive".to_owned())
        } else if !alive.contains(target.as_str()) {
            Some(format!("target Machine({target}) went away"))
        } else {
            let agent = agents.iter().find(|a| a.id == target).expect("alive machines have agents");
            match agent.fit(&job.placed) {
                Fit::Yes => None,
                Fit::No(why) => Some(format!("target Machine({target}) unable to run unit: {why}")),
                Fit::Replacing(replaced) => {
                    // The replaced unit leaves for the least loaded other machine.
                    if let Some(to) = decide_reschedule(&agents, &target).map(|m| m.id.clone()) {
                        actions.push(Action::Unschedule {
                            unit: replaced.clone(),
                            machine: target.clone(),
                            reason: format!("unit replaced by {name}"),
                        });
                        actions.push(Action::Schedule { unit: replaced.clone(), machine: to.clone() });
                        if let Some(moved) = by_name.get(replaced.as_str()) {
                            move_unit(&mut agents, &moved.placed, Some(&target), Some(&to));
                            targets.insert(moved.record.name.as_str(), to);
                        }
                    }
                    None
                }
            }
        };
        if let Some(reason) = reason {
            move_unit(&mut agents, &job.placed, Some(&target), None);
            actions.push(Action::Unschedule { unit: name.to_owned(), machine: target, reason });
            targets.remove(name);
        }
    }

    // Pass B: every unit that should run but is not placed.
    for job in jobs.iter().filter(|j| !j.global && j.record.target_state != TargetState::Inactive) {
        let name = job.record.name.as_str();
        if targets.contains_key(name) {
            continue;
        }
        if let Some(machine) = decide(&agents, &job.placed).map(|m| m.id.clone()) {
            move_unit(&mut agents, &job.placed, None, Some(&machine));
            actions.push(Action::Schedule { unit: name.to_owned(), machine: machine.clone() });
            targets.insert(name, machine);
        }
    }

    // Plans: what each live machine should run, against what is stored.
    for agent in &agents {
        let wanted: BTreeMap<&str, PlanEntry> = agent
            .units
            .iter()
            .filter_map(|u| by_name.get(u.name.as_str()))
            .filter(|j| j.record.target_state != TargetState::Inactive)
            .map(|j| (j.record.name.as_str(), PlanEntry { hash: j.record.hash, target_state: j.record.target_state }))
            .collect();
        let stored = view.plans.get(&agent.id);
        for (unit, entry) in &wanted {
            if stored.and_then(|s| s.get(*unit)) != Some(entry) {
                actions.push(Action::PutPlan { machine: agent.id.clone(), unit: (*unit).to_owned(), entry: *entry });
            }
        }
        for unit in stored.into_iter().flat_map(|s| s.keys()) {
            if !wanted.contains_key(unit.as_str()) {
                actions.push(Action::RemovePlan { machine: agent.id.clone(), unit: unit.clone() });
            }
        }
    }
    for machine in view.plans.keys().filter(|m| !alive.contains(m.as_str())) {
        actions.push(Action::ForgetMachine { machine: machine.clone() });
    }
    actions
}

/// Moves a unit between machines in the pass's picture.
fn move_unit(agents: &mut [MachinePlan], unit: &PlacedUnit, from: Option<&str>, to: Option<&str>) {
    if let Some(agent) = from.and_then(|id| agents.iter_mut().find(|a| a.id == id)) {
        agent.units.retain(|u| u.name != unit.name);
    }
    if let Some(agent) = to.and_then(|id| agents.iter_mut().find(|a| a.id == id)) {
        agent.units.push(unit.clone());
    }
}

/// The live machines with the units placed on them: non-global units
/// where they are targeted (unless inactive), and global units on every
/// machine whose metadata they accept and where they conflict with
/// nothing already there (earlier names first).
fn agents(view: &ClusterView, jobs: &[Job<'_>], targets: &BTreeMap<&str, String>) -> Vec<MachinePlan> {
    let mut agents: Vec<MachinePlan> = view
        .machines
        .iter()
        .map(|m| MachinePlan { id: m.id.clone(), metadata: m.metadata.clone(), units: Vec::new() })
        .collect();
    for job in jobs.iter().filter(|j| !j.global && j.record.target_state != TargetState::Inactive) {
        if let Some(target) = targets.get(job.record.name.as_str()) {
            if let Some(agent) = agents.iter_mut().find(|a| &a.id == target) {
                agent.units.push(job.placed.clone());
            }
        }
    }
    for job in jobs.iter().filter(|j| j.global) {
        let metadata = job.placed.requirements.required_metadata();
        for agent in &mut agents {
            let eligible = agent.has_metadata(&metadata)
                && agent.conflict_with(&job.record.name, &job.placed.requirements.conflicts()).is_none();
            if eligible {
                agent.units.push(job.placed.clone());
            }
        }
    }
    agents
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit_file::UnitFile;

    fn job(name: &str, x_fleet: &str, state: TargetState, target: Option<&str>) -> JobRecord {
        let unit = UnitFile::parse(&format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{x_fleet}")).unwrap();
        JobRecord {
            name: name.to_owned(),
            hash: unit.hash(),
            unit,
            target_state: state,
            target: target.map(str::to_owned),
            job_state: None,
        }
    }

    fn machine(id: &str, metadata: &[(&str, &str)]) -> MachineState {
        MachineState {
            id: id.to_owned(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..MachineState::default()
        }
    }

    fn schedules(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Schedule { unit, machine } => Some((unit.clone(), machine.clone())),
                _ => None,
            })
            .collect()
    }

    fn unschedules(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Unschedule { unit, machine, .. } => Some((unit.clone(), machine.clone())),
                _ => None,
            })
            .collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn units_spread_over_the_least_loaded_machines() {
        let view = ClusterView {
            jobs: (0..4).map(|i| job(&format!("u{i}.service"), "", TargetState::Launched, None)).collect(),
            machines: vec![machine("a", &[]), machine("b", &[])],
            plans: BTreeMap::new(),
        };
        let actions = reconcile(&view);
        assert_eq!(
            schedules(&actions),
            vec![pair("u0.service", "a"), pair("u1.service", "b"), pair("u2.service", "a"), pair("u3.service", "b")]
        );
        // Each machine's plan lists its units.
        let plans: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::PutPlan { machine, unit, entry } => Some((machine.as_str(), unit.as_str(), entry.target_state)),
                _ => None,
            })
            .collect();
        assert_eq!(plans.len(), 4);
        assert!(plans.contains(&("b", "u3.service", TargetState::Launched)));
    }

    #[test]
    fn inactive_units_are_neither_placed_nor_planned_and_are_taken_off() {
        let view = ClusterView {
            jobs: vec![
                job("new.service", "", TargetState::Inactive, None),
                job("old.service", "", TargetState::Inactive, Some("a")),
            ],
            machines: vec![machine("a", &[])],
            plans: [("a".to_owned(), BTreeMap::new())].into(),
        };
        let actions = reconcile(&view);
        assert_eq!(unschedules(&actions), vec![pair("old.service", "a")]);
        assert!(schedules(&actions).is_empty());
        assert_eq!(actions.len(), 1);
    }

    #[test]
    fn a_dead_machines_units_move_and_nothing_else_does() {
        let view = ClusterView {
            jobs: vec![
                job("c0.service", "Conflicts=c*.service", TargetState::Launched, Some("a")),
                job("c1.service", "Conflicts=c*.service", TargetState::Launched, Some("dead")),
                job("c2.service", "Conflicts=c*.service", TargetState::Launched, Some("b")),
            ],
            machines: vec![machine("a", &[]), machine("b", &[]), machine("spare", &[])],
            plans: [("dead".to_owned(), BTreeMap::new())].into(),
        };
        let actions = reconcile(&view);
        assert_eq!(unschedules(&actions), vec![pair("c1.service", "dead")]);
        assert_eq!(schedules(&actions), vec![pair("c1.service", "spare")]);
        assert!(actions.contains(&Action::ForgetMachine { machine: "dead".into() }));
    }

    #[test]
    fn machine_of_follows_its_peer() {
        let view = ClusterView {
            jobs: vec![
                job("ping.service", "", TargetState::Launched, None),
                job("pong.service", "MachineOf=ping.service", TargetState::Launched, None),
            ],
            machines: vec![machine("a", &[]), machine("b", &[])],
            plans: BTreeMap::new(),
        };
        let actions = reconcile(&view);
        assert_eq!(schedules(&actions), vec![pair("ping.service", "a"), pair("pong.service", "a")]);

        // When ping's machine dies, ping moves this pass and pong with it.
        let view = ClusterView {
            jobs: vec![
                job("ping.service", "", TargetState::Launched, Some("a")),
                job("pong.service", "MachineOf=ping.service", TargetState::Launched, Some("a")),
            ],
            machines: vec![machine("b", &[])],
            plans: BTreeMap::new(),
        };
        let actions = reconcile(&view);
        assert_eq!(schedules(&actions), vec![pair("ping.service", "b"), pair("pong.service", "b")]);
    }

    #[test]
    fn replaces_pushes_the_replaced_unit_away() {
        let view = ClusterView {
            jobs: vec![
                job("kick.service", "Replaces=replace.0.service", TargetState::Launched, Some("a")),
                job("replace.0.service", "", TargetState::Launched, Some("a")),
            ],
            machines: vec![machine("a", &[]), machine("b", &[])],
            plans: BTreeMap::new(),
        };
        let actions = reconcile(&view);
        assert_eq!(unschedules(&actions), vec![pair("replace.0.service", "a")]);
        assert_eq!(schedules(&actions), vec![pair("replace.0.service", "b")]);
    }

    #[test]
    fn global_units_are_planned_on_every_eligible_machine() {
        let view = ClusterView {
            jobs: vec![
                job("g.service", "Global=true\nMachineMetadata=role=web", TargetState::Launched, None),
                job("h.service", "Global=true", TargetState::Loaded, None),
            ],
            machines: vec![machine("a", &[("role", "web")]), machine("b", &[("role", "db")])],
            plans: [("a".to_owned(), BTreeMap::new())].into(),
        };
        let actions = reconcile(&view);
        assert!(schedules(&actions).is_empty(), "the engine never targets global units");
        let planned: BTreeSet<(String, String)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::PutPlan { machine, unit, .. } => Some(pair(machine, unit)),
                _ => None,
            })
            .collect();
        assert_eq!(planned, BTreeSet::from([pair("a", "g.service"), pair("a", "h.service"), pair("b", "h.service")]));
    }

    #[test]
    fn plans_change_only_where_they_differ() {
        let launched = job("u.service", "", TargetState::Launched, Some("a"));
        let entry = PlanEntry { hash: launched.hash, target_state: TargetState::Launched };
        let stale = PlanEntry { hash: launched.hash, target_state: TargetState::Loaded };
        let view = ClusterView {
            jobs: vec![launched],
            machines: vec![machine("a", &[])],
            plans: [("a".to_owned(), [("u.service".to_owned(), entry)].into())].into(),
        };
        assert_eq!(reconcile(&view), vec![]);
        let view = ClusterView {
            plans: [("a".to_owned(), [("u.service".to_owned(), stale), ("gone.service".to_owned(), stale)].into())]
                .into(),
            ..view
        };
        assert_eq!(
            reconcile(&view),
            vec![
                Action::PutPlan { machine: "a".into(), unit: "u.service".into(), entry },
                Action::RemovePlan { machine: "a".into(), unit: "gone.service".into() },
            ]
        );
    }
}
