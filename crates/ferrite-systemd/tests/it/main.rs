//! The client against a fake manager served over a private (peer-to-peer)
//! D-Bus connection: the calls it makes and how it waits for jobs. Tier 1:
//! no system bus, no root. The real manager is exercised by
//! ferrite-cloudinit's system tests.

use std::sync::{Arc, Mutex};

use ferrite_systemd::{Error, Systemd, UnitCommand};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

#[derive(Default)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
    jobs: u32,
}

impl Fake {
    /// A job for `unit` that ends at once: `failed` for units named
    /// `broken*`, `done` otherwise.
    async fn job(&mut self, call: &str, unit: &str, emitter: &SignalEmitter<'_>) -> zbus::fdo::Result<OwnedObjectPath> {
        self.calls.lock().unwrap().push(format!("{call} {unit}"));
        self.jobs += 1;
        let path = format!("/org/freedesktop/systemd1/job/{}", self.jobs);
        let result = if unit.starts_with("broken") { "failed" } else { "done" };
        Fake::job_removed(emitter, self.jobs, ObjectPath::try_from(path.as_str()).unwrap(), unit, result)
            .await
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        Ok(OwnedObjectPath::try_from(path).unwrap())
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Fake {
    async fn subscribe(&self) {
        self.calls.lock().unwrap().push("Subscribe".to_owned());
    }

    async fn reload(&self) {
        self.calls.lock().unwrap().push("Reload".to_owned());
    }

    async fn start_unit(
        &mut self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.job("StartUnit", &name, &emitter).await
    }

    async fn try_restart_unit(
        &mut self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.job("TryRestartUnit", &name, &emitter).await
    }

    async fn enable_unit_files(
        &self,
        files: Vec<String>,
        runtime: bool,
        _force: bool,
    ) -> (bool, Vec<(String, String, String)>) {
        self.calls.lock().unwrap().push(format!("EnableUnitFiles {} runtime={runtime}", files.join(" ")));
        let changes = files
            .iter()
            .map(|f| ("symlink".to_owned(), format!("/etc/systemd/system/multi-user.target.wants/{f}"), f.clone()))
            .collect();
        (true, changes)
    }

    async fn mask_unit_files(&self, files: Vec<String>, runtime: bool, _force: bool) -> Vec<(String, String, String)> {
        self.calls.lock().unwrap().push(format!("MaskUnitFiles {} runtime={runtime}", files.join(" ")));
        Vec::new()
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

async fn connect() -> (Systemd, Arc<Mutex<Vec<String>>>, zbus::Connection) {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let fake = Fake::default();
    let calls = fake.calls.clone();
    let server = zbus::connection::Builder::unix_stream(a)
        .server(zbus::Guid::generate())
        .unwrap()
        .p2p()
        .serve_at("/org/freedesktop/systemd1", fake)
        .unwrap()
        .build();
    let client = zbus::connection::Builder::unix_stream(b).p2p().build();
    let (server, client) = futures::try_join!(server, client).unwrap();
    (Systemd::on(client).await.unwrap(), calls, server)
}

#[tokio::test]
async fn commands_wait_for_their_job_and_report_its_result() {
    let (systemd, calls, _server) = connect().await;
    systemd.reload().await.unwrap();
    systemd.run(UnitCommand::Start, "hello.service").await.unwrap();
    systemd.run(UnitCommand::TryRestart, "ferrite-update.service").await.unwrap();
    let failed = systemd.run(UnitCommand::Start, "broken.service").await.unwrap_err();
    assert!(
        matches!(&failed, Error::Job { result, unit, .. } if result == "failed" && unit == "broken.service"),
        "{failed:?}"
    );
    assert_eq!(failed.to_string(), "start broken.service: job failed");
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "Subscribe",
            "Reload",
            "StartUnit hello.service",
            "TryRestartUnit ferrite-update.service",
            "StartUnit broken.service"
        ]
    );
}

#[tokio::test]
async fn enable_and_mask_say_whether_anything_changed() {
    let (systemd, calls, _server) = connect().await;
    assert!(systemd.enable(&["hello.service"], false).await.unwrap());
    assert!(!systemd.mask(&["x.service"], true).await.unwrap());
    assert_eq!(
        calls.lock().unwrap()[1..],
        ["EnableUnitFiles hello.service runtime=false", "MaskUnitFiles x.service runtime=true"]
    );
}

#[tokio::test]
async fn a_method_the_manager_lacks_is_an_error_naming_the_call() {
    let (systemd, _, _server) = connect().await;
    let error = systemd.unmask(&["x.service"], false).await.unwrap_err();
    assert!(error.to_string().starts_with("UnmaskUnitFiles x.service"), "{error}");
}
