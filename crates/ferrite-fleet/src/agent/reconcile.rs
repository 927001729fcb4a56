//! What the agent must do to make this machine match its plan: fleet's
//! task table (`agent/reconcile.go`), as a pure function of the plan and
//! of what the machine has.

use std::collections::{BTreeMap, BTreeSet};

use crate::registry::{PlanEntry, TargetState};
use crate::unit_file::UnitHash;

/// A unit as the machine has it: its file's hash, and whether the agent
/// loaded or also started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub hash: UnitHash,
    /// `Inactive` for a file found on disk that the agent has not yet
    /// loaded since it started.
    pub state: TargetState,
}

/// One step, carried out in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Stop the unit, unlink it and remove its file.
    Unload {
        unit: String,
        reason: &'static str,
    },
    /// Write the unit's file (the plan's hash says which) and link it.
    Load {
        unit: String,
        hash: UnitHash,
        reason: &'static str,
    },
    /// systemd's daemon-reload, once, after files changed.
    ReloadUnitFiles,
    Stop {
        unit: String,
        reason: &'static str,
    },
    Start {
        unit: String,
        reason: &'static str,
    },
}

impl Task {
    fn rank(&self) -> u8 {
        match self {
            Task::Unload { .. } => 1,
            Task::Load { .. } => 2,
            Task::ReloadUnitFiles => 3,
            Task::Stop { .. } => 4,
            Task::Start { .. } => 5,
        }
    }
}

/// The tasks that take the machine from `local` to `plan`: unloads, then
/// loads, one reload if files changed, stops, starts.
pub fn reconcile(plan: &BTreeMap<String, PlanEntry>, local: &BTreeMap<String, Local>) -> Vec<Task> {
    let names: BTreeSet<&String> = plan.keys().chain(local.keys()).collect();
    let mut tasks = Vec::new();
    for name in names {
        let unit = || name.clone();
        let wanted = plan.get(name).filter(|e| e.target_state != TargetState::Inactive);
        match (wanted, local.get(name)) {
            (None, Some(_)) => tasks.push(Task::Unload { unit: unit(), reason: "unit loaded but not scheduled here" }),
            (None, None) => {}
            (Some(entry), None) => {
                tasks.push(Task::Load { unit: unit(), hash: entry.hash, reason: "unit scheduled here but not loaded" });
                if entry.target_state == TargetState::Launched {
                    tasks.push(Task::Start {
                        unit: unit(),
                        reason: "unit currently loaded but desired state is launched",
                    });
                }
            }
            (Some(entry), Some(have)) if have.hash != entry.hash => {
                tasks.push(Task::Unload { unit: unit(), reason: "unit loaded but hash differs to expected" });
                tasks.push(Task::Load { unit: unit(), hash: entry.hash, reason: "unit scheduled here but not loaded" });
                if entry.target_state == TargetState::Launched {
                    tasks.push(Task::Start {
                        unit: unit(),
                        reason: "unit currently loaded but desired state is launched",
                    });
                }
            }
            (Some(entry), Some(have)) => match (entry.target_state, have.state) {
                (want, got) if want == got => {}
                (want, TargetState::Inactive) => {
                    tasks.push(Task::Load {
                        unit: unit(),
                        hash: entry.hash,
                        reason: "unit scheduled here but not loaded",
                    });
                    if want == TargetState::Launched {
                        tasks.push(Task::Start {
                            unit: unit(),
                            reason: "unit currently loaded but desired state is launched",
                        });
                    }
                }
                (TargetState::Launched, _) => tasks
                    .push(Task::Start { unit: unit(), reason: "unit currently loaded but desired state is launched" }),
                _ => tasks
                    .push(Task::Stop { unit: unit(), reason: "unit currently launched but desired state is loaded" }),
            },
        }
    }
    let files_change = tasks.iter().any(|t| matches!(t, Task::Load { .. } | Task::Unload { .. }));
    if files_change {
        tasks.push(Task::ReloadUnitFiles);
    }
    tasks.sort_by_key(Task::rank);
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: UnitHash = UnitHash([1; 20]);
    const H2: UnitHash = UnitHash([2; 20]);

    fn plan(entries: &[(&str, UnitHash, TargetState)]) -> BTreeMap<String, PlanEntry> {
        entries.iter().map(|(n, h, s)| (n.to_string(), PlanEntry { hash: *h, target_state: *s })).collect()
    }

    fn local(entries: &[(&str, UnitHash, TargetState)]) -> BTreeMap<String, Local> {
        entries.iter().map(|(n, h, s)| (n.to_string(), Local { hash: *h, state: *s })).collect()
    }

    fn kinds(tasks: &[Task]) -> Vec<String> {
        tasks
            .iter()
            .map(|t| match t {
                Task::Unload { unit, .. } => format!("unload {unit}"),
                Task::Load { unit, .. } => format!("load {unit}"),
                Task::ReloadUnitFiles => "reload".to_owned(),
                Task::Stop { unit, .. } => format!("stop {unit}"),
                Task::Start { unit, .. } => format!("start {unit}"),
            })
            .collect()
    }

    #[test]
    fn new_units_are_loaded_then_reloaded_then_started() {
        let tasks = reconcile(&plan(&[("a", H1, TargetState::Launched), ("b", H1, TargetState::Loaded)]), &local(&[]));
        assert_eq!(kinds(&tasks), ["load a", "load b", "reload", "start a"]);
    }

    #[test]
    fn units_no_longer_planned_are_unloaded() {
        let tasks = reconcile(
            &plan(&[("b", H1, TargetState::Inactive)]),
            &local(&[("a", H1, TargetState::Launched), ("b", H1, TargetState::Loaded)]),
        );
        assert_eq!(kinds(&tasks), ["unload a", "unload b", "reload"]);
    }

    #[test]
    fn a_changed_file_is_replaced_and_restarted() {
        let tasks = reconcile(&plan(&[("a", H2, TargetState::Launched)]), &local(&[("a", H1, TargetState::Launched)]));
        assert_eq!(kinds(&tasks), ["unload a", "load a", "reload", "start a"]);
    }

    #[test]
    fn state_changes_need_no_reload() {
        let tasks = reconcile(
            &plan(&[
                ("a", H1, TargetState::Launched),
                ("b", H1, TargetState::Loaded),
                ("c", H1, TargetState::Launched),
            ]),
            &local(&[
                ("a", H1, TargetState::Loaded),
                ("b", H1, TargetState::Launched),
                ("c", H1, TargetState::Launched),
            ]),
        );
        assert_eq!(kinds(&tasks), ["stop b", "start a"]);
    }

    #[test]
    fn files_found_after_a_restart_are_taken_over_without_a_stop() {
        // The agent restarted: the file is there with the right hash but it
        // has not loaded it itself; it loads and starts, never stops.
        let tasks = reconcile(&plan(&[("a", H1, TargetState::Launched)]), &local(&[("a", H1, TargetState::Inactive)]));
        assert_eq!(kinds(&tasks), ["load a", "reload", "start a"]);
    }

    #[test]
    fn nothing_to_do_means_no_tasks() {
        let both = [("a", H1, TargetState::Launched)];
        assert!(reconcile(&plan(&both), &local(&both)).is_empty());
    }
}
