//! Engines elect a leader through the store, place units and move them
//! when a machine goes.

use std::time::Duration;

use ferrite_fleet::engine::{Engine, EngineSettings};
use ferrite_fleet::registry::{MachineState, Registry, TargetState, UnitStateRecord};
use ferrite_fleet::unit_file::UnitFile;

use ferrite_store::testing::OneMember as Store;

fn engine(registry: &Registry, id: &str) -> Engine {
    let settings = EngineSettings { machine_id: id.into(), interval: Duration::from_millis(200), watches: false };
    Engine::new(registry.clone(), settings)
}

async fn register(registry: &Registry, id: &str) {
    let state = MachineState { id: id.into(), ..MachineState::default() };
    assert!(registry.put_machine(&state, Duration::from_secs(30), true).await.unwrap());
}

#[tokio::test]
async fn one_engine_leads_places_units_and_another_takes_over() {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    register(&registry, "m1").await;
    register(&registry, "m2").await;
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 1000\n").unwrap();
    for i in 0..4 {
        registry.create_unit(&format!("u{i}.service"), &unit, TargetState::Launched).await.unwrap();
    }

    let (mut first, mut second) = (engine(&registry, "m1"), engine(&registry, "m2"));
    assert!(first.tick().await.unwrap(), "the first engine takes the free lease");
    assert!(!second.tick().await.unwrap(), "the second sees it held");

    let jobs = registry.jobs().await.unwrap();
    let on = |m: &str| jobs.iter().filter(|j| j.target.as_deref() == Some(m)).count();
    assert_eq!((on("m1"), on("m2")), (2, 2), "units spread evenly: {jobs:?}");
    let plans = registry.plans().await.unwrap();
    assert_eq!(plans["m1"].len() + plans["m2"].len(), 4);
    assert!(plans["m1"].values().all(|e| e.target_state == TargetState::Launched));

    // The leader stops renewing: once the lease expires the other leads.
    drop(first);
    let mut took_over = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if second.tick().await.unwrap() {
            took_over = true;
            break;
        }
    }
    assert!(took_over, "the second engine never took the lease over");

    // m1 goes: its units move to m2, and m1's plan and the unit states it
    // reported are forgotten (m2's stay).
    for (unit, machine) in [("u0.service", "m1"), ("u1.service", "m1"), ("u2.service", "m2")] {
        let state = UnitStateRecord {
            name: unit.into(),
            machine_id: machine.into(),
            active_state: "active".into(),
            ..UnitStateRecord::default()
        };
        registry.put_unit_state(&state).await.unwrap();
    }
    registry.remove_machine("m1").await.unwrap();
    assert!(second.tick().await.unwrap());
    let states = registry.unit_states().await.unwrap();
    let reported: Vec<(&str, &str)> = states.iter().map(|s| (s.name.as_str(), s.machine_id.as_str())).collect();
    assert_eq!(reported, [("u2.service", "m2")]);
    let jobs = registry.jobs().await.unwrap();
    assert!(jobs.iter().all(|j| j.target.as_deref() == Some("m2")), "{jobs:?}");
    let plans = registry.plans().await.unwrap();
    assert_eq!(plans.keys().collect::<Vec<_>>(), ["m2"]);
    assert_eq!(plans["m2"].len(), 4);

    // A stopped unit's plan entry follows its target state.
    registry.set_target_state("u0.service", TargetState::Loaded).await.unwrap();
    second.tick().await.unwrap();
    assert_eq!(registry.plans().await.unwrap()["m2"]["u0.service"].target_state, TargetState::Loaded);
    registry.set_target_state("u0.service", TargetState::Inactive).await.unwrap();
    second.tick().await.unwrap();
    assert!(!registry.plans().await.unwrap()["m2"].contains_key("u0.service"));
    assert_eq!(registry.job("u0.service").await.unwrap().unwrap().target, None);
}
