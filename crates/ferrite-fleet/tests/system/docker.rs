//! The walkthrough's `ping.service`, as shipped, started with fleetctl:
//! a Docker container named after the unit, answering over HTTP.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrite_testkit::images::{workspace_bin, Image};

use crate::cluster::Cluster;

/// The port the shipped unit publishes on its engine's host.
const PING_PORT: u16 = 8000;

/// A container of the host's engine, removed on drop whatever the test did.
struct Removed(&'static str);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", self.0]).output();
    }
}

fn docker(args: &[&str]) -> Result<std::process::Output> {
    Command::new("docker").args(args).output().with_context(|| format!("cannot run docker {args:?}"))
}

/// `GET /` on 127.0.0.1:`port`: the body of a 200 answer.
fn http_get(port: u16) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer without a body")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("answer {head:?}");
    }
    Ok(body.to_owned())
}

#[test]
fn the_walkthroughs_ping_unit_runs_its_container_and_answers() -> Result<()> {
    if std::net::TcpListener::bind(("0.0.0.0", PING_PORT)).is_err() {
        bail!("port {PING_PORT}, which ping.service publishes, is taken on this host");
    }
    let _image = Image::new("ferrite/ping:latest")
        .binary(workspace_bin("ferrite-ping"), "/usr/bin/ferrite-ping")
        .entrypoint(&["/usr/bin/ferrite-ping"])
        .expose("8080/tcp")
        .import()?;
    let _container = Removed("ping.service");
    let c = Cluster::start(3)?;
    let m0 = &c.machines[0];
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os-config/examples/walkthrough/ping.service");
    let text = std::fs::read_to_string(&shipped).with_context(|| format!("cannot read {}", shipped.display()))?;
    let path = c.unit_file("ping.service", &text)?;

    let out = m0.ctl(&["start", &path])?;
    assert!(out.starts_with("Unit ping.service inactive\nUnit ping.service launched on "), "{out}");
    let host = c.running("ping.service")?;
    assert_eq!(host.len(), 1, "{host:?}");
    // The unit's container, named after the unit, answers with its hostname.
    let hostname = docker(&["inspect", "-f", "{{.Config.Hostname}}", "ping.service"])?;
    assert!(hostname.status.success(), "no container ping.service: {}", String::from_utf8_lossy(&hostname.stderr));
    let expected = format!("hello from {}\n", String::from_utf8_lossy(&hostname.stdout).trim());
    c.wait_for("ping to answer on port 8000", Duration::from_secs(30), |_| {
        Ok(http_get(PING_PORT).is_ok_and(|body| body == expected))
    })?;
    let states = m0.ctl(&["list-units", "--no-legend", "--fields", "unit,active,sub"])?;
    assert_eq!(states, "ping.service\tactive\trunning\n");

    // Stopped through fleet: ExecStop stops the container, --rm removes it.
    m0.ctl(&["stop", "ping.service"])?;
    c.wait_for("the ping.service container to go", Duration::from_secs(30), |_| {
        Ok(!docker(&["inspect", "ping.service"])?.status.success())
    })?;
    assert!(http_get(PING_PORT).is_err(), "port {PING_PORT} still answers with the unit stopped");
    assert!(!c.machine(&host[0]).is_active("ping.service")?);
    Ok(())
}
