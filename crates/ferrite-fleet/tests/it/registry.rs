//! fleet's key layout written and read back through a real store.

use std::time::Duration;

use ferrite_etcd_client::GetOptions;
use ferrite_fleet::registry::{MachineState, PlanEntry, Registry, TargetState, UnitStateRecord};
use ferrite_fleet::unit_file::UnitFile;

use ferrite_store::testing::OneMember as Store;

const HELLO: &str = "[Service]\nExecStart=/bin/bash -c \"while true; do echo Hello, World!; sleep 1; done\"\n";

async fn value(store: &Store, key: &str) -> Option<String> {
    store.client().get(key, &GetOptions::default()).await.ok().and_then(|r| r.node().value.clone())
}

#[tokio::test]
async fn submitting_writes_fleets_keys_and_reads_back() {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    let unit = UnitFile::parse(HELLO).unwrap();
    registry.create_unit("hello.service", &unit, TargetState::Inactive).await.unwrap();

    // The keys fleet itself would have written, byte for byte.
    let prefix = "/_coreos.com/fleet";
    assert_eq!(
        value(&store, &format!("{prefix}/unit/3750b3e9f3962a56c7582929426e9abb012754cf")).await.as_deref(),
        Some(r#"{"Raw":"[Service]\nExecStart=/bin/bash -c \"while true; do echo Hello, World!; sleep 1; done\"\n"}"#)
    );
    assert_eq!(
        value(&store, &format!("{prefix}/job/hello.service/object")).await.as_deref(),
        Some(
            r#"{"Name":"hello.service","UnitHash":[55,80,179,233,243,150,42,86,199,88,41,41,66,110,154,187,1,39,84,207]}"#
        )
    );
    assert_eq!(value(&store, &format!("{prefix}/job/hello.service/target-state")).await.as_deref(), Some("inactive"));

    // Submitting the same file twice is fine (the unit file is create-only).
    registry.create_unit("hello2.service", &unit, TargetState::Launched).await.unwrap();
    let jobs = registry.jobs().await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["hello.service", "hello2.service"]);
    assert_eq!(jobs[1].target_state, TargetState::Launched);
    assert_eq!(jobs[0].unit, unit);

    // The engine's placement is create-only and undone only by its machine.
    assert!(registry.schedule("hello.service", "m1").await.unwrap());
    assert!(!registry.schedule("hello.service", "m2").await.unwrap());
    registry.set_job_state("hello.service", "m1").await.unwrap();
    let job = registry.job("hello.service").await.unwrap().unwrap();
    assert_eq!((job.target.as_deref(), job.job_state.as_deref()), (Some("m1"), Some("m1")));
    registry.unschedule("hello.service", "m2").await.unwrap();
    assert_eq!(registry.job("hello.service").await.unwrap().unwrap().target.as_deref(), Some("m1"));
    registry.unschedule("hello.service", "m1").await.unwrap();
    let job = registry.job("hello.service").await.unwrap().unwrap();
    assert_eq!((job.target, job.job_state), (None, None));

    registry.destroy_unit("hello.service").await.unwrap();
    assert!(registry.job("hello.service").await.unwrap().is_none());
    assert_eq!(registry.destroy_unit("hello.service").await.unwrap_err().to_string(), "job does not exist");
}

#[tokio::test]
async fn machines_expire_and_api_metadata_wins() {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    let state = MachineState {
        id: "m1".into(),
        public_ip: "10.0.0.1".into(),
        metadata: [("region".to_owned(), "us".to_owned()), ("disk".to_owned(), "hdd".to_owned())].into(),
        capabilities: None,
        version: "ferrite".into(),
    };
    assert!(registry.put_machine(&state, Duration::from_secs(1), true).await.unwrap());
    // A second machine with the same id cannot register while it lives.
    assert!(!registry.put_machine(&state, Duration::from_secs(1), true).await.unwrap());
    registry.set_machine_metadata("m1", "disk", Some("ssd")).await.unwrap();
    registry.set_machine_metadata("m1", "region", None).await.unwrap();
    let machines = registry.machines().await.unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].metadata, [("disk".to_owned(), "ssd".to_owned())].into());
    // Without a heartbeat the object expires and the machine is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(registry.machines().await.unwrap().is_empty());
}

#[tokio::test]
async fn unit_states_plans_and_the_lease() {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet");
    let state = UnitStateRecord {
        name: "a.service".into(),
        machine_id: "m1".into(),
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        hash: "3750b3e9f3962a56c7582929426e9abb012754cf".into(),
    };
    registry.put_unit_state(&state).await.unwrap();
    registry.put_unit_state(&UnitStateRecord { machine_id: "m2".into(), ..state.clone() }).await.unwrap();
    assert_eq!(registry.unit_states().await.unwrap().len(), 2);
    registry.remove_unit_state("a.service", "m1").await.unwrap();
    registry.remove_unit_state("a.service", "m2").await.unwrap();
    assert!(registry.unit_states().await.unwrap().is_empty());

    let entry = PlanEntry { hash: UnitFile::parse(HELLO).unwrap().hash(), target_state: TargetState::Loaded };
    registry.put_plan("m1", "a.service", &entry).await.unwrap();
    let (plan, index) = registry.plan("m1").await.unwrap();
    assert_eq!(plan.get("a.service"), Some(&entry));
    assert!(index > 0);
    registry.remove_machine_plan("m1").await.unwrap();
    assert!(registry.plan("m1").await.unwrap().0.is_empty());

    let ttl = Duration::from_secs(10);
    let lease = registry.acquire_lease("engine-leader", "m1", ttl).await.unwrap().unwrap();
    assert!(registry.acquire_lease("engine-leader", "m2", ttl).await.unwrap().is_none());
    let renewed = registry.renew_lease("engine-leader", "m1", lease.index, ttl).await.unwrap().unwrap();
    // A renewal from a stale index fails: someone else renewed meanwhile.
    assert!(registry.renew_lease("engine-leader", "m2", lease.index, ttl).await.unwrap().is_none());
    assert_eq!(registry.lease("engine-leader").await.unwrap().unwrap().value.machine_id, "m1");
    registry.release_lease("engine-leader", renewed.index).await.unwrap();
    assert!(registry.lease("engine-leader").await.unwrap().is_none());

    assert!(registry.claim_engine_version().await.unwrap());
    assert!(registry.claim_engine_version().await.unwrap());
    store.client().set("/_coreos.com/fleet/engine/version", "2", &Default::default()).await.unwrap();
    assert!(!registry.claim_engine_version().await.unwrap());
}
