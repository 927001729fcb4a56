//! Three machines, each a systemd container running ferrite-store (one
//! 3-member cluster) and ferrite-fleetd.
//!
//! Every machine can run Docker containers: the host's engine is lent to
//! it (its socket bind-mounted at `/run/docker.sock`, the host's `docker`
//! CLI copied in), and `docker.service` there is a stand-in that is active
//! once that engine answers, so units written for a real machine
//! (`Requires=docker.service`, `/usr/bin/docker run ...`) run unchanged.
//! Their containers run on the host's engine, beside the machines, and
//! publish their ports on the host.

use std::path::Path;
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
    network: Network,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The containers go before their network.
        self.machines.clear();
    }
}

impl Machine {
    /// A container on `network` with the binaries (and Debian's etcdctl,
    /// to read the store) in /usr/local/bin, and the host's Docker engine.
    fn create(network: &Network, name: &str) -> Result<Machine> {
        let container =
            SystemdContainer::start_on_with(network, name, &["-v", "/var/run/docker.sock:/run/docker.sock"])?;
        let ip = container.ip()?;
        let id = container.sh("cat /etc/machine-id")?.trim().to_owned();
        for bin in ["ferrite-store", "ferrite-fleetd", "ferrite-fleetctl"] {
            container.copy_in(&workspace_bin(bin), &format!("/usr/local/bin/{bin}"))?;
        }
        container.copy_in(std::path::Path::new("/usr/bin/etcdctl"), "/usr/local/bin/etcdctl")?;
        container.copy_in(std::path::Path::new("/usr/bin/docker"), "/usr/bin/docker")?;
        container.write(
            "/etc/systemd/system/docker.service",
            "[Unit]\nDescription=Docker (the host's engine, through /run/docker.sock)\n\
             [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/bin/docker version\n",
        )?;
        Ok(Machine { container, name: name.to_owned(), ip, id })
    }

    /// fleetd as the image runs it: the shipped socket unit, a service
    /// that takes its socket and reloads on SIGHUP, and the machine's
    /// metadata in `/etc/fleet/fleet.conf`.
    fn write_fleetd_unit(&self, etcd: &str) -> Result<()> {
        let socket =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../os-config/usr/lib/systemd/system/ferrite-fleetd.socket");
        self.container.copy_in(&socket, "/etc/systemd/system/ferrite-fleetd.socket")?;
        self.write_fleet_conf(&format!("hostname={}", self.name))?;
        self.container.write(
            "/etc/systemd/system/ferrite-fleetd.service",
            &format!(
                "[Unit]\nDescription=ferrite-fleetd\nAfter=ferrite-store.service ferrite-fleetd.socket\n\
                 Wants=ferrite-fleetd.socket\n[Service]\nType=notify\n\
                 Environment=FLEET_ETCD_SERVERS={etcd}\n\
                 Environment=FLEET_PUBLIC_IP={ip}\n\
                 Environment=FLEET_AGENT_TTL={AGENT_TTL_SECS}s\nEnvironment=FLEET_ENGINE_RECONCILE_INTERVAL=1\n\
                 ExecStart=/usr/local/bin/ferrite-fleetd\nExecReload=/bin/kill -HUP $MAINPID\n",
                ip = self.ip
            ),
        )
    }

    /// `/etc/fleet/fleet.conf` with this machine's metadata.
    pub fn write_fleet_conf(&self, metadata: &str) -> Result<()> {
        self.container.sh("mkdir -p /etc/fleet")?;
        self.container.write("/etc/fleet/fleet.conf", &format!("metadata=\"{metadata}\"\n"))
    }

    /// `ETCDCTL_API=2 etcdctl get KEY` against this machine's store.
    pub fn etcd_get(&self, key: &str) -> Result<String> {
        self.container.sh(&format!("ETCDCTL_API=2 etcdctl --endpoints http://127.0.0.1:2379 get {key}"))
    }

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
            machines.push(Machine::create(&network, &format!("m{i}"))?);
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
            m.write_fleetd_unit("http://127.0.0.1:2379")?;
            m.container.sh("systemctl daemon-reload && systemctl start --no-block ferrite-store ferrite-fleetd")?;
        }
        let cluster = Cluster { machines, network };
        cluster.wait_for("every machine to register", Duration::from_secs(60), |c| {
            Ok(c.machines[0].fleetctl(&["list-machines", "--no-legend"])?.1.lines().count() == count)
        })?;
        Ok(cluster)
    }

    /// A machine that joins later: fleetd only, using machine 0's store.
    pub fn add_machine(&mut self, name: &str) -> Result<()> {
        let machine = Machine::create(&self.network, name)?;
        machine.write_fleetd_unit(&format!("http://{}:2379", self.machines[0].ip))?;
        machine.container.sh("systemctl daemon-reload && systemctl start --no-block ferrite-fleetd")?;
        self.machines.push(machine);
        let count = self.machines.len();
        self.wait_for(&format!("{name} to register"), Duration::from_secs(60), |c| {
            Ok(c.machines[0].fleetctl(&["list-machines", "--no-legend"])?.1.lines().count() == count)
        })
    }

    /// OpenSSH between the machines: each gets a host key of its own and
    /// a user `core` (in systemd-journal, as on CoreOS); a key pair made on
    /// m0 is authorized for `core` and `root` everywhere.
    pub fn enable_ssh(&self) -> Result<()> {
        let m0 = &self.machines[0].container;
        m0.sh("mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519")?;
        let key = m0.sh("cat /root/.ssh/id_ed25519.pub")?;
        for m in &self.machines {
            m.container.sh(&format!(
                "useradd -m -G systemd-journal -p '*' core && \
                 for d in /root/.ssh /home/core/.ssh; do mkdir -p $d && echo '{key}' >> $d/authorized_keys; done && \
                 chown -R core: /home/core/.ssh && \
                 rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && \
                 systemctl restart ssh",
                key = key.trim()
            ))?;
        }
        Ok(())
    }

    /// The machine that holds the engine lease.
    pub fn engine_leader(&self) -> Result<&Machine> {
        let lease = self.machines[0].etcd_get("/_coreos.com/fleet/lease/engine-leader")?;
        let value: serde_json::Value = serde_json::from_str(lease.trim()).context("the lease is not JSON")?;
        let id = value["MachineID"].as_str().context("the lease names no machine")?;
        self.machines.iter().find(|m| m.id == id).context("the lease names an unknown machine")
    }

    pub fn network_handle(&self) -> &Network {
        &self.network
    }

    pub fn machine(&self, name: &str) -> &Machine {
        self.machines.iter().find(|m| m.name == name).expect("a machine of the cluster")
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
