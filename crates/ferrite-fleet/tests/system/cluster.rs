//! Three machines, each a systemd container running ferrite-store (one
//! 3-member cluster) and ferrite-fleetd.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferrite_testkit::images::workspace_bin;
use ferrite_testkit::systemd_container::{Network, SystemdContainer};

/// fleet's TTL in these tests, as fleet's own functional tests set it.
pub const AGENT_TTL_SECS: u64 = 3;

pub struct Machine {
    pub container: SystemdContainer,
    pub name: String,
    pub ip: String,
    pub id: String,
}

pub struct Cluster {
    pub machines: Vec<Machine>,
    // Dropped after the machines.
    _network: Network,
}

impl Machine {
    /// Runs fleetctl here: (exit code, stdout, stderr).
    pub fn fleetctl(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let mut argv = vec!["ferrite-fleetctl"];
        argv.extend(args);
        let out = self.container.exec(&argv)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// fleetctl that must succeed; its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.fleetctl(args)?;
        if code != 0 {
            bail!("fleetctl {args:?} on {} exited {code}: {out}{err}", self.name);
        }
        Ok(out)
    }

    /// `systemctl is-active UNIT` here.
    pub fn is_active(&self, unit: &str) -> Result<bool> {
        let out = self.container.exec(&["systemctl", "is-active", unit])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "active")
    }
}

impl Cluster {
    pub fn start(count: usize) -> Result<Cluster> {
        let network = Network::create("fleet")?;
        let mut machines = Vec::new();
        for i in 0..count {
            let name = format!("m{i}");
            let container = SystemdContainer::start_on(&network, &name)?;
            let ip = container.ip()?;
            let id = container.sh("cat /etc/machine-id")?.trim().to_owned();
            for bin in ["ferrite-store", "ferrite-fleetd", "ferrite-fleetctl"] {
                container.copy_in(&workspace_bin(bin), &format!("/usr/local/bin/{bin}"))?;
            }
            machines.push(Machine { container, name, ip, id });
        }
        let initial: Vec<String> = machines.iter().map(|m| format!("{}=http://{}:2380", m.name, m.ip)).collect();
        let initial = initial.join(",");
        for m in &machines {
            m.container.write(
                "/etc/systemd/system/ferrite-store.service",
                &format!(
                    "[Unit]\nDescription=ferrite-store\n[Service]\nType=notify\n\
                     ExecStart=/usr/local/bin/ferrite-store --name {name} --data-dir /var/lib/ferrite-store \
                     --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://{ip}:2379 \
                     --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls http://{ip}:2380 \
                     --initial-cluster {initial} --heartbeat-interval 50 --election-timeout 500\n",
                    name = m.name,
                    ip = m.ip
                ),
            )?;
            m.container.write(
                "/etc/systemd/system/ferrite-fleetd.service",
                &format!(
                    "[Unit]\nDescription=ferrite-fleetd\nAfter=ferrite-store.service\n[Service]\nType=notify\n\
                     Environment=FLEET_ETCD_SERVERS=http://127.0.0.1:2379\n\
                     Environment=FLEET_PUBLIC_IP={ip}\nEnvironment=FLEET_METADATA=hostname={name}\n\
                     Environment=FLEET_AGENT_TTL={AGENT_TTL_SECS}s\nEnvironment=FLEET_ENGINE_RECONCILE_INTERVAL=1\n\
                     ExecStart=/usr/local/bin/ferrite-fleetd\n",
                    name = m.name,
                    ip = m.ip
                ),
            )?;
            m.container.sh("systemctl daemon-reload && systemctl start --no-block ferrite-store ferrite-fleetd")?;
        }
        let cluster = Cluster { machines, _network: network };
        cluster.wait_for("every machine to register", Duration::from_secs(60), |c| {
            Ok(c.machines[0].fleetctl(&["list-machines", "--no-legend"])?.1.lines().count() == count)
        })?;
        Ok(cluster)
    }

    /// Polls `check` every 250 ms until it holds, failing after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&Cluster) -> Result<bool>) -> Result<()> {
        let started = Instant::now();
        loop {
            if check(self).with_context(|| format!("while waiting for {what}"))? {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("{what} did not happen within {} s", limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The machines where `unit` is active, by name.
    pub fn running(&self, unit: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for m in &self.machines {
            if m.is_active(unit)? {
                out.push(m.name.clone());
            }
        }
        Ok(out)
    }

    /// Writes a unit file into machine 0's `/root/units/`.
    pub fn unit_file(&self, name: &str, text: &str) -> Result<String> {
        let path = format!("/root/units/{name}");
        self.machines[0].container.sh("mkdir -p /root/units")?;
        self.machines[0].container.write(&path, text)?;
        Ok(path)
    }
}
