//! Agents follow their machine's plan: the engine places units, agents
//! load and start them, publish their states, and take them over after a
//! restart without stopping them.

use std::time::{Duration, Instant};

use ferrite_fleet::agent::{Agent, AgentSettings};
use ferrite_fleet::engine::{Engine, EngineSettings};
use ferrite_fleet::registry::{MachineState, Registry, TargetState};
use ferrite_fleet::unit_file::UnitFile;

use ferrite_fleet::agent::memory::MemoryUnits;
use ferrite_store::testing::OneMember as Store;

fn settings(id: &str) -> AgentSettings {
    AgentSettings {
        machine: MachineState { id: id.into(), ..MachineState::default() },
        ttl: Duration::from_secs(10),
        resync: Duration::from_secs(60),
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn agents_run_what_the_engine_planned_and_publish_states() {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    let (m1, m2) = (MemoryUnits::new(), MemoryUnits::new());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let a1 = tokio::spawn(Agent::new(registry.clone(), settings("m1"), m1.clone()).run(until_stopped(stopped.clone())));
    let a2 = tokio::spawn(Agent::new(registry.clone(), settings("m2"), m2.clone()).run(until_stopped(stopped.clone())));
    let engine_settings =
        EngineSettings { machine_id: "m1".into(), interval: Duration::from_millis(200), watches: true };
    let engine = tokio::spawn(Engine::new(registry.clone(), engine_settings).run(until_stopped(stopped.clone())));

    eventually("both machines registered", async || registry.machines().await.unwrap().len() == 2).await;
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 1000\n").unwrap();
    let global = UnitFile::parse("[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nGlobal=true\n").unwrap();
    registry.create_unit("a.service", &unit, TargetState::Launched).await.unwrap();
    registry.create_unit("b.service", &unit, TargetState::Launched).await.unwrap();
    registry.create_unit("c.service", &unit, TargetState::Loaded).await.unwrap();
    registry.create_unit("g.service", &global, TargetState::Launched).await.unwrap();

    eventually("a and b run and g runs everywhere", async || {
        let (r1, r2) = (m1.running(), m2.running());
        r1.contains("g.service") && r2.contains("g.service") && r1.len() + r2.len() == 4
    })
    .await;
    // c is loaded somewhere but not started.
    assert!(m1.files().contains("c.service") || m2.files().contains("c.service"));
    assert!(!m1.running().contains("c.service") && !m2.running().contains("c.service"));

    eventually("states are published for every unit on every machine", async || {
        registry.unit_states().await.unwrap().len() == 5
    })
    .await;
    let states = registry.unit_states().await.unwrap();
    let a = states.iter().find(|s| s.name == "a.service").unwrap();
    assert_eq!((a.load_state.as_str(), a.active_state.as_str(), a.sub_state.as_str()), ("loaded", "active", "running"));
    assert_eq!(a.hash, unit.hash().to_string());
    let job = registry.job("a.service").await.unwrap().unwrap();
    assert_eq!(job.job_state, job.target, "the agent that started it records job-state");

    // Stop a: it stays loaded where it is; destroy b: it goes away.
    let a_machine = job.target.clone().unwrap();
    registry.set_target_state("a.service", TargetState::Loaded).await.unwrap();
    registry.destroy_unit("b.service").await.unwrap();
    eventually("a stopped and b gone", async || {
        let all: Vec<_> = [&m1, &m2].iter().flat_map(|m| m.files()).collect();
        !m1.running().contains("a.service")
            && !m2.running().contains("a.service")
            && !all.contains(&"b.service".to_owned())
    })
    .await;
    let host = if a_machine == "m1" { &m1 } else { &m2 };
    assert!(host.files().contains("a.service"), "a stays loaded on its machine");

    // A clean stop purges: units unloaded, machines withdrawn.
    stop.send(true).unwrap();
    a1.await.unwrap().unwrap();
    a2.await.unwrap().unwrap();
    engine.await.unwrap();
    assert!(m1.files().is_empty() && m2.files().is_empty());
    assert!(registry.machines().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_restarted_agent_takes_its_units_over_without_stopping_them() {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    let systemd = MemoryUnits::new();
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 1000\n").unwrap();
    registry.create_unit("a.service", &unit, TargetState::Launched).await.unwrap();
    let entry = ferrite_fleet::registry::PlanEntry { hash: unit.hash(), target_state: TargetState::Launched };
    registry.put_plan("m1", "a.service", &entry).await.unwrap();

    let mut first = Agent::new(registry.clone(), settings("m1"), systemd.clone());
    first.register().await.unwrap();
    first.reconcile_once().await.unwrap();
    assert!(systemd.running().contains("a.service"));
    drop(first); // killed: no purge

    let mut second = Agent::new(registry.clone(), settings("m1"), systemd.clone());
    let calls_before = systemd.calls().len();
    second.reconcile_once().await.unwrap();
    let calls: Vec<String> = systemd.calls()[calls_before..].to_vec();
    assert!(!calls.iter().any(|c| c.starts_with("stop") || c.starts_with("unload")), "{calls:?}");
    assert!(systemd.running().contains("a.service"));
}
