//! The real `etcdctl` (v2 API) against the reference etcd and the subject:
//! stdout, stderr and exit code of every command must match after
//! [`crate::normalise`].
//!
//! A case is a list of steps, each a string split on spaces:
//! - `ARGS...`: run `etcdctl --endpoints URL ARGS...` and compare;
//! - `bg ARGS...`: start `etcdctl ARGS...` in the background (a watch) and
//!   wait until the server counts one more watcher;
//! - `bg-wait N`: wait until the background command has printed N lines (at
//!   most 5 s). `exec-watch` runs its command for each event in a goroutine
//!   of its own, so two events in quick succession print in either order;
//!   waiting between them makes the order the one the events had;
//! - `bg-stop N`: wait until the background command has printed N lines (at
//!   most 5 s) and then for 300 ms more (so nothing extra goes unseen), stop
//!   it and compare what it printed.
//!
//! etcdctl's own quirk: `exec-watch` without a flag takes `CMD ARGS -- KEY`,
//! with `-r` it takes `-r KEY -- CMD ARGS`.
//!
//! In arguments `$K` is `/ctl/NAME` (each case has its own keys), `$I` and
//! `$I+N` are indices relative to the server's index when the case began.
//! Values contain no spaces. Directories with more than one child are
//! listed with `--sort`: etcd lists them in Go map order otherwise.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrite_testkit::{Cluster, Process};

use crate::normalise::{self, Identity};
use crate::servers;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(5);
const BACKGROUND_SETTLE: Duration = Duration::from_millis(300);
const RECONFIGURE_GRACE: Duration = Duration::from_millis(5500);

const CASES: &[(&str, &[&str])] = &[
    ("set-get", &["set $K/a hello", "get $K/a", "-o extended get $K/a", "-o json get $K/a"]),
    ("set-json", &["-o json set $K/a v1", "-o json set $K/a v2"]),
    ("set-extended", &["-o extended set $K/a v1"]),
    ("set-ttl", &["set --ttl 300 $K/a v", "-o extended get $K/a"]),
    ("set-bad-ttl", &["set --ttl abc $K/a v"]),
    (
        "set-swap-with-value",
        &["set $K/a v", "set --swap-with-value v $K/a w", "set --swap-with-value v $K/a x", "get $K/a"],
    ),
    (
        "set-swap-with-index",
        &["set $K/a v", "set --swap-with-index $I+1 $K/a w", "set --swap-with-index $I+1 $K/a x", "get $K/a"],
    ),
    ("set-on-dir", &["mkdir $K/d", "set $K/d v"]),
    ("set-no-args", &["set", "set $K/a"]),
    ("get-missing", &["get $K/missing"]),
    ("get-dir", &["mkdir $K/d", "get $K/d"]),
    ("get-quorum", &["set $K/a v", "get --quorum $K/a"]),
    ("get-no-key", &["get"]),
    ("mk", &["mk $K/a v", "mk $K/a w", "get $K/a"]),
    ("mk-ttl", &["mk --ttl 300 $K/a v", "-o extended get $K/a"]),
    ("mk-in-order", &["mk --in-order $K/q first", "-o extended mk --in-order $K/q second", "ls --sort $K/q"]),
    ("mkdir", &["mkdir $K/d", "mkdir $K/d", "ls $K"]),
    ("mkdir-ttl", &["mkdir --ttl 300 $K/d", "-o json get $K/d"]),
    ("setdir", &["setdir $K/d", "setdir $K/d", "setdir --ttl 300 $K/d", "-o extended ls $K"]),
    ("setdir-on-file", &["set $K/f v", "setdir $K/f"]),
    ("update", &["update $K/a v", "set $K/a v", "update $K/a w", "get $K/a"]),
    ("update-ttl", &["set $K/a v", "update --ttl 300 $K/a w", "-o extended get $K/a"]),
    ("updatedir", &["updatedir $K/d", "mkdir $K/d", "updatedir --ttl 300 $K/d", "-o json ls $K"]),
    ("updatedir-on-file", &["set $K/f v", "updatedir --ttl 300 $K/f"]),
    ("rm", &["set $K/a v", "rm $K/a", "rm $K/a", "get $K/a"]),
    ("rm-with-value", &["set $K/a v", "rm --with-value x $K/a", "rm --with-value v $K/a"]),
    ("rm-with-index", &["set $K/a v", "rm --with-index $I+5 $K/a", "rm --with-index $I+1 $K/a"]),
    ("rm-dir", &["mkdir $K/d", "rm $K/d", "rm --dir $K/d", "ls $K"]),
    ("rm-dir-not-empty", &["set $K/d/a v", "rm --dir $K/d", "rm -r $K/d", "ls $K"]),
    ("rm-json", &["set $K/a v", "-o json rm $K/a"]),
    ("rmdir", &["mkdir $K/d", "rmdir $K/d", "rmdir $K/d"]),
    ("rmdir-not-empty", &["set $K/d/a v", "rmdir $K/d"]),
    ("rmdir-on-file", &["set $K/f v", "rmdir $K/f"]),
    (
        "ls",
        &[
            "set $K/a 1",
            "set $K/b/c 2",
            "set $K/b/d/e 3",
            "ls --sort $K",
            "ls --sort -r $K",
            "ls --sort -r -p $K",
            "ls -p $K/b/d",
        ],
    ),
    ("ls-json", &["set $K/a 1", "set $K/b/c 2", "-o json ls --sort -r $K", "-o extended ls --sort $K"]),
    ("ls-missing", &["ls $K/missing"]),
    ("ls-file", &["set $K/f v", "ls $K/f"]),
    ("ls-hidden", &["set $K/_h v", "set $K/v v", "ls -r $K"]),
    (
        "watch-after-index",
        &["set $K/a 1", "set $K/a 2", "watch --after-index $I $K/a", "-o json watch --after-index $I+1 $K/a"],
    ),
    ("watch-once", &["bg watch $K/a", "set $K/a one", "bg-stop 1"]),
    ("watch-forever", &["bg watch --forever $K/a", "set $K/a one", "set $K/a two", "rm $K/a", "bg-stop 3"]),
    ("watch-recursive", &["bg watch --forever -r $K", "set $K/x/y one", "mkdir $K/d", "set $K/z two", "bg-stop 3"]),
    ("watch-json", &["bg -o json watch --forever $K/a", "set $K/a one", "set --ttl 300 $K/a two", "bg-stop 2"]),
    ("watch-extended", &["bg -o extended watch --forever $K/a", "set $K/a one", "bg-stop 7"]),
    (
        "watch-after-index-forever",
        &["set $K/a 1", "bg watch --forever --after-index $I $K/a", "set $K/a 2", "bg-stop 2"],
    ),
    (
        "exec-watch",
        &[
            "bg exec-watch printenv ETCD_WATCH_ACTION ETCD_WATCH_KEY ETCD_WATCH_VALUE -- $K/a",
            "set $K/a one",
            "bg-wait 3",
            "set $K/a two",
            "bg-stop 6",
        ],
    ),
    (
        "exec-watch-recursive",
        &[
            "bg exec-watch -r $K -- printenv ETCD_WATCH_ACTION ETCD_WATCH_KEY",
            "set $K/x one",
            "bg-wait 2",
            "rm $K/x",
            "bg-stop 4",
        ],
    ),
    ("unknown-command", &["frobnicate $K"]),
    ("member-list", &["member list", "cluster-health"]),
];

/// One server as etcdctl sees it.
struct Side {
    cluster: Cluster,
    identity: Identity,
    http: reqwest::Client,
    scratch: tempfile::TempDir,
}

/// What one step printed, normalised.
#[derive(Debug, PartialEq)]
struct Printed {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Printed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Side {
    async fn new(cluster: Cluster) -> Result<Self> {
        Ok(Self {
            identity: servers::identify(&cluster).await?,
            http: reqwest::Client::builder().no_proxy().build()?,
            scratch: tempfile::tempdir()?,
            cluster,
        })
    }

    async fn refresh_identity(&mut self) -> Result<()> {
        self.identity = servers::identify(&self.cluster).await?;
        Ok(())
    }

    async fn store_stat(&self, name: &str) -> Result<u64> {
        let url = format!("{}/v2/stats/store", self.cluster.member(0).client_url());
        let stats: serde_json::Value = self.http.get(&url).send().await?.json().await?;
        stats[name].as_u64().with_context(|| format!("{name} in {stats}"))
    }

    async fn index(&self) -> Result<u64> {
        let url = format!("{}/v2/keys/ctl-index-probe", self.cluster.member(0).client_url());
        let response = self.http.get(&url).send().await?;
        let index = response.headers().get("x-etcd-index").context("X-Etcd-Index")?;
        Ok(index.to_str()?.parse()?)
    }

    fn command(&self, args: &[String]) -> std::process::Command {
        let mut command = std::process::Command::new("etcdctl");
        command.env("ETCDCTL_API", "2").arg("--endpoints").arg(self.cluster.endpoints()).args(args);
        command
    }

    async fn run(&self, args: &[String], base: u64) -> Result<Printed> {
        let mut command = tokio::process::Command::from(self.command(args));
        command.stdin(Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
            .await
            .with_context(|| format!("etcdctl {args:?} did not finish"))??;
        Ok(Printed {
            code: output.status.code(),
            stdout: self.normalise(&String::from_utf8_lossy(&output.stdout), base),
            stderr: self.normalise(&String::from_utf8_lossy(&output.stderr), base),
        })
    }

    fn normalise(&self, text: &str, base: u64) -> String {
        normalise::text(text, base, &self.identity)
    }

    /// Runs one case; one printed result per compared step.
    async fn run_case(&self, name: &str, steps: &[&str]) -> Result<Vec<(String, Printed)>> {
        let base = self.index().await?;
        let mut results = Vec::new();
        let mut background: Option<Process> = None;
        for step in steps {
            let words = expand(step, name, base);
            match words.first().map(String::as_str) {
                Some("bg") => {
                    let watchers = self.store_stat("watchers").await?;
                    let log = self.scratch.path().join(format!("{name}.log"));
                    background = Some(Process::spawn(&format!("etcdctl {step}"), self.command(&words[1..]), &log)?);
                    let deadline = Instant::now() + BACKGROUND_TIMEOUT;
                    while self.store_stat("watchers").await? <= watchers && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Some("bg-wait") => {
                    let process = background.as_ref().context("bg-wait without bg")?;
                    wait_for_lines(process.log_path(), words[1].parse()?).await;
                }
                Some("bg-stop") => {
                    let mut process = background.take().context("bg-stop without bg")?;
                    let log = process.log_path().to_owned();
                    wait_for_lines(&log, words[1].parse()?).await;
                    tokio::time::sleep(BACKGROUND_SETTLE).await;
                    process.kill()?;
                    let printed =
                        Printed { code: None, stdout: self.normalise(&read_lossy(&log), base), stderr: String::new() };
                    results.push((step.to_string(), printed));
                }
                _ => results.push((step.to_string(), self.run(&words, base).await?)),
            }
        }
        Ok(results)
    }
}

/// Waits (up to a bound) until a background command's log has `lines` lines.
async fn wait_for_lines(log: &Path, lines: usize) {
    let deadline = Instant::now() + BACKGROUND_TIMEOUT;
    while read_lossy(log).lines().count() < lines && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Splits a step into arguments, expanding `$K` and `$I[+N]`.
fn expand(step: &str, case: &str, base: u64) -> Vec<String> {
    step.split_whitespace()
        .map(|word| {
            let word = word.replace("$K", &format!("/ctl/{case}"));
            match word.strip_prefix("$I") {
                Some("") => base.to_string(),
                Some(offset) => (base + offset.trim_start_matches('+').parse::<u64>().unwrap()).to_string(),
                None => word,
            }
        })
        .collect()
}

fn differences(case: &str, subject: &str, expected: &[(String, Printed)], actual: &[(String, Printed)]) -> Vec<String> {
    expected
        .iter()
        .zip(actual)
        .filter(|((_, e), (_, a))| e != a)
        .map(|((step, e), (_, a))| format!("case {case}, `etcdctl {step}`\n--- etcd\n{e}\n--- {subject}\n{a}"))
        .collect()
}

// The tests panic (rather than return an error) while the clusters are alive,
// so that their logs are kept and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_matches_etcd() {
    let (reference, subject) = servers::start_pair().await.unwrap();
    let reference = Side::new(reference).await.unwrap();
    let subject = Side::new(subject).await.unwrap();
    compare_cases(&reference, &subject).await.unwrap();
}

async fn compare_cases(reference: &Side, subject: &Side) -> Result<()> {
    let kind = subject.cluster.kind().to_string();
    let started = Instant::now();
    let mut mismatches = Vec::new();
    let mut dump = String::new();
    for (name, steps) in CASES {
        let (expected, actual) = tokio::join!(reference.run_case(name, steps), subject.run_case(name, steps));
        let expected = expected.with_context(|| format!("case {name} on the reference etcd"))?;
        for (step, printed) in &expected {
            dump.push_str(&format!("## {name} / etcdctl {step}\n{printed}\n"));
        }
        match actual {
            Ok(actual) => mismatches.extend(differences(name, &kind, &expected, &actual)),
            Err(e) => mismatches.push(format!("case {name}: the subject failed: {e:#}")),
        }
    }
    eprintln!("{} etcdctl cases in {:?} against {kind}", CASES.len(), started.elapsed());
    if let Some(path) = std::env::var_os("FERRITE_CONFORMANCE_DUMP") {
        let path = Path::new(&path).with_extension("etcdctl.txt");
        std::fs::write(&path, dump).with_context(|| format!("writing {}", path.display()))?;
    }
    assert!(
        mismatches.is_empty(),
        "{} etcdctl steps differ from etcd:\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
    Ok(())
}

/// Sorts what etcd prints in member-id order (ids are random) and the
/// entries of `ETCD_INITIAL_CLUSTER`, after the ids became placeholders.
fn member_order_free(mut printed: Printed) -> Printed {
    let sort = |text: &str| {
        let mut lines: Vec<String> = text
            .lines()
            .map(|line| match line.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
                Some(rest) => {
                    let mut entries: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                    entries.sort_unstable();
                    format!("ETCD_INITIAL_CLUSTER=\"{}\"", entries.join(","))
                }
                None => line.to_owned(),
            })
            .collect();
        lines.sort();
        lines.join("\n")
    };
    printed.stdout = sort(&printed.stdout);
    printed.stderr = sort(&printed.stderr);
    printed
}

/// `member add` (then starting the member with `--initial-cluster-state
/// existing`), `member list`, `cluster-health`, `member remove`, on each side.
async fn membership_steps(side: &mut Side) -> Result<Vec<(String, Printed)>> {
    let mut results = Vec::new();
    let mut step = |label: &str, printed: Printed| results.push((label.to_owned(), member_order_free(printed)));
    let args = |text: &str| text.split_whitespace().map(String::from).collect::<Vec<_>>();

    step("member list", side.run(&args("member list"), 0).await?);
    let new = side.cluster.reserve_member()?;
    let add = format!("member add {} {}", new.name(), new.peer_url());
    let added = side.run(&args(&add), 0).await?;
    // The new member's id is known only now: read it before normalising again.
    let added_raw = added.stdout.clone();
    side.identity.member(new.name(), "", new.client_port(), new.peer_port());
    let index = side.cluster.start_member(new).await?;
    side.refresh_identity().await?;
    // etcd refuses to reconfigure until every member has been connected for
    // 5 s ("unhealthy cluster"); so would a faithful subject.
    tokio::time::sleep(RECONFIGURE_GRACE).await;
    step("member add n2 PEER", Printed { stdout: side.normalise(&added_raw, 0), ..added });
    step("member list", side.run(&args("member list"), 0).await?);
    step("cluster-health", side.run(&args("cluster-health"), 0).await?);
    step("member add (same peer URL)", side.run(&args(&add), 0).await?);

    let url = format!("{}/v2/members", side.cluster.member(0).client_url());
    let members: serde_json::Value = side.http.get(&url).send().await?.json().await?;
    let peer = side.cluster.member(index).peer_url();
    let id = servers::id_by_peer_url(&members, &peer).context("the added member in /v2/members")?.to_owned();
    step("member remove n2", side.run(&args(&format!("member remove {id}")), 0).await?);
    step("member remove n2 again", side.run(&args(&format!("member remove {id}")), 0).await?);
    side.cluster.kill(index)?;
    step("member list", side.run(&args("member list"), 0).await?);
    Ok(results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_membership_matches_etcd() -> Result<()> {
    let (reference, subject) = servers::start_pair().await?;
    let kind = subject.kind().to_string();
    let (mut reference, mut subject) = (Side::new(reference).await?, Side::new(subject).await?);
    let (expected, actual) = tokio::join!(membership_steps(&mut reference), membership_steps(&mut subject));
    let expected = expected.context("membership steps on the reference etcd")?;
    let actual = actual.context("membership steps on the subject")?;
    assert_eq!(expected.len(), actual.len());
    let mismatches = differences("membership", &kind, &expected, &actual);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    Ok(())
}
