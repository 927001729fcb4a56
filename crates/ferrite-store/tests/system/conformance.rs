//! Differential conformance of the v2 HTTP API: every case in `cases/*.txt`
//! is sent to a reference etcd and to the subject (ferrite-store, or a
//! second etcd when `FERRITE_CONFORMANCE_SUBJECT=etcd`), and what each
//! answered is compared after [`crate::normalise`].
//!
//! # Fixture format
//!
//! One file per topic. `#` starts a comment line; blank lines are ignored.
//!
//! ```text
//! case NAME                      # starts a case; NAME is [a-z0-9-], unique in all files
//! METHOD TARGET [| BODY] [@OPT]  # one request step
//! sleep MS                       # pause this case
//! await WATCH [EVENTS]           # collect a watch started earlier with @watch=WATCH:
//!                                #   the whole body, or the first EVENTS lines of a stream
//! flood N METHOD TARGET [| BODY] # N requests, 8 at a time; compares the count per status
//! ```
//!
//! TARGET is a path with an optional query, written as sent on the wire
//! (percent-encode spaces and the like). BODY is sent as
//! `application/x-www-form-urlencoded`, or as `application/json` when the
//! separator is `|json`; it must not contain a space (encode it). In TARGET
//! and BODY:
//! - `$K` is `/v2/keys/NAME`, the case's own key prefix, so cases are
//!   independent of each other;
//! - `$C` is NAME;
//! - `$PEER` and `$CLIENT` are the server's own peer and client URLs;
//! - `$I` is the X-Etcd-Index the server reported just before the case,
//!   and `$I+N` / `$I-N` an index relative to it (first write of a case is `$I+1`);
//! - `$rep(TEXT,N)` is TEXT repeated N times.
//!
//! Options:
//! - `@watch=W`: start the request (a `wait=true` GET) in the background; the
//!   step compares its status and headers, `await W` its body;
//! - `@until=STATUS`: repeat the request every 100 ms until it answers STATUS
//!   (at most 4 s), then compare the last answer (for TTL expiry, which etcd
//!   runs on a 500 ms tick);
//! - `@shape`: compare the JSON body's key names and types, not its values
//!   (statistics);
//! - `@metrics=a,b`: compare which of these metric names the Prometheus
//!   body has, instead of the body.
//!
//! # What is compared
//!
//! Status; `Content-Type`, `Allow` and `Location` exactly; `X-Etcd-Index` as
//! an index offset; whether `X-Raft-Index`, `X-Raft-Term` and
//! `X-Etcd-Cluster-Id` are present; the body byte for byte after
//! normalisation. Cases run one at a time (indices are global to a server),
//! each case on both servers at once.
//!
//! `FERRITE_CONFORMANCE_DUMP=FILE` writes every normalised answer of the
//! reference to FILE: what ferrite-store has to answer, case by case (and
//! the etcdctl test its outputs to FILE with extension `etcdctl.txt`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ferrite_testkit::Cluster;
use futures::StreamExt as _;

use crate::normalise::{self, Identity};
use crate::servers;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const AWAIT_TIMEOUT: Duration = Duration::from_secs(5);
const UNTIL_TIMEOUT: Duration = Duration::from_secs(4);
const FLOOD_CONCURRENCY: usize = 8;

#[derive(Debug, Clone)]
struct Case {
    name: String,
    topic: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Request(Request),
    Sleep(Duration),
    Await { watch: String, events: Option<usize> },
    Flood { count: usize, request: Request },
}

#[derive(Debug, Clone)]
struct Request {
    line: usize,
    method: reqwest::Method,
    target: String,
    body: Option<Body>,
    compare: Compare,
    watch: Option<String>,
    until: Option<u16>,
}

#[derive(Debug, Clone)]
enum Body {
    Form(String),
    Json(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Compare {
    Exact,
    Shape,
    Metrics(Vec<String>),
}

fn parse_cases(dir: &Path) -> Result<Vec<Case>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "txt"));
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let topic = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file)?;
        parse_file(&topic, &text, &mut cases).with_context(|| format!("in fixture {}", file.display()))?;
    }
    let mut names = HashSet::new();
    for case in &cases {
        ensure!(names.insert(&case.name), "case {} is defined twice", case.name);
        ensure!(!case.steps.is_empty(), "case {} has no step", case.name);
    }
    Ok(cases)
}

fn parse_file(topic: &str, text: &str, cases: &mut Vec<Case>) -> Result<()> {
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let step = match words[0] {
            "case" => {
                ensure!(words.len() == 2, "line {number}: `case NAME`");
                let name = words[1];
                ensure!(
                    name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "line {number}: case name {name:?} is not [a-z0-9-]"
                );
                cases.push(Case { name: name.to_owned(), topic: topic.to_owned(), steps: Vec::new() });
                continue;
            }
            "sleep" => Step::Sleep(Duration::from_millis(words.get(1).context("sleep MS")?.parse()?)),
            "await" => Step::Await {
                watch: words.get(1).context("await WATCH")?.to_string(),
                events: words.get(2).map(|n| n.parse()).transpose()?,
            },
            "flood" => Step::Flood {
                count: words.get(1).context("flood N ...")?.parse()?,
                request: parse_request(number, &words[2..])?,
            },
            _ => Step::Request(parse_request(number, &words)?),
        };
        let case = cases.last_mut().with_context(|| format!("line {number}: step before the first `case`"))?;
        case.steps.push(step);
    }
    Ok(())
}

fn parse_request(line: usize, words: &[&str]) -> Result<Request> {
    ensure!(words.len() >= 2, "line {line}: `METHOD TARGET ...`");
    let mut request = Request {
        line,
        method: reqwest::Method::from_bytes(words[0].as_bytes())
            .with_context(|| format!("line {line}: method {:?}", words[0]))?,
        target: words[1].to_owned(),
        body: None,
        compare: Compare::Exact,
        watch: None,
        until: None,
    };
    let mut rest = words[2..].iter();
    while let Some(word) = rest.next() {
        match *word {
            "|" => request.body = Some(Body::Form(next_word(&mut rest, line)?)),
            "|json" => request.body = Some(Body::Json(next_word(&mut rest, line)?)),
            "@shape" => request.compare = Compare::Shape,
            option => {
                if let Some(names) = option.strip_prefix("@metrics=") {
                    request.compare = Compare::Metrics(names.split(',').map(String::from).collect());
                } else if let Some(watch) = option.strip_prefix("@watch=") {
                    request.watch = Some(watch.to_owned());
                } else if let Some(status) = option.strip_prefix("@until=") {
                    request.until = Some(status.parse()?);
                } else {
                    bail!("line {line}: unknown word {option:?}");
                }
            }
        }
    }
    Ok(request)
}

fn next_word<'a>(words: &mut impl Iterator<Item = &'a &'a str>, line: usize) -> Result<String> {
    Ok(words.next().with_context(|| format!("line {line}: a body after `|`"))?.to_string())
}

/// One server as a case sees it.
struct Target {
    base_url: String,
    peer_url: String,
    http: reqwest::Client,
    identity: Identity,
}

/// What one server answered to one step, rendered for comparison.
type Observation = String;

impl Target {
    async fn new(cluster: &Cluster) -> Result<Self> {
        Ok(Self {
            base_url: cluster.member(0).client_url(),
            peer_url: cluster.member(0).peer_url(),
            http: reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build()?,
            identity: servers::identify(cluster).await?,
        })
    }

    /// The server's current index, from the 404 of a key no case uses.
    async fn current_index(&self) -> Result<u64> {
        let response = self.http.get(format!("{}/v2/keys/conformance-index-probe", self.base_url)).send().await?;
        let index = response.headers().get("x-etcd-index").context("no X-Etcd-Index on a 404 of the keys API")?;
        Ok(index.to_str()?.parse()?)
    }

    /// Runs a case's steps in order; one observation per step.
    async fn run(&self, case: &Case) -> Result<Vec<(String, Observation)>> {
        let base = self.current_index().await?;
        let mut watches: HashMap<String, reqwest::Response> = HashMap::new();
        let mut observations = Vec::new();
        for step in &case.steps {
            let (label, observation) = match step {
                Step::Request(request) => {
                    let label = format!("line {}: {} {}", request.line, request.method, request.target);
                    let observation = if let Some(watch) = &request.watch {
                        let response = self.send(case, request, base).await?;
                        let head = self.head(&response, base, &Compare::Exact);
                        watches.insert(watch.clone(), response);
                        head
                    } else {
                        self.exchange(case, request, base).await?
                    };
                    (label, observation)
                }
                Step::Sleep(duration) => {
                    tokio::time::sleep(*duration).await;
                    continue;
                }
                Step::Await { watch, events } => {
                    let response = watches.remove(watch).with_context(|| format!("await of unknown watch {watch}"))?;
                    let body = read_watch(response, *events).await;
                    let body = normalise::text(&body, base, &self.identity);
                    (format!("await {watch}"), body)
                }
                Step::Flood { count, request } => {
                    let label = format!("line {}: flood {count} {}", request.line, request.method);
                    (label, self.flood(case, request, base, *count).await?)
                }
            };
            observations.push((label, observation));
        }
        ensure!(
            watches.is_empty(),
            "case {}: watches never awaited: {:?}",
            case.name,
            watches.keys().collect::<Vec<_>>()
        );
        Ok(observations)
    }

    fn expand(&self, case: &Case, text: &str, base: u64) -> Result<String> {
        let text = text
            .replace("$PEER", &self.peer_url)
            .replace("$CLIENT", &self.base_url)
            .replace("$K", &format!("/v2/keys/{}", case.name))
            .replace("$C", &case.name);
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("$I") {
                let sign = after.chars().next();
                let digits = after.get(1..).map_or(0, |a| a.bytes().take_while(u8::is_ascii_digit).count());
                let (value, used) = match sign {
                    Some('+') if digits > 0 => (base + after[1..=digits].parse::<u64>()?, 1 + digits),
                    Some('-') if digits > 0 => {
                        (base.checked_sub(after[1..=digits].parse::<u64>()?).context("$I-N below zero")?, 1 + digits)
                    }
                    _ => (base, 0),
                };
                out.push_str(&value.to_string());
                rest = &after[used..];
            } else if let Some(after) = rest.strip_prefix("$rep(") {
                let end = after.find(')').context("$rep( without )")?;
                let (repeated, count) = after[..end].rsplit_once(',').context("$rep(TEXT,N)")?;
                out.push_str(&repeated.repeat(count.parse()?));
                rest = &after[end + 1..];
            } else {
                bail!("unknown expansion at {rest:?}");
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    async fn send(&self, case: &Case, request: &Request, base: u64) -> Result<reqwest::Response> {
        let target = self.expand(case, &request.target, base)?;
        let mut builder = self.http.request(request.method.clone(), format!("{}{target}", self.base_url));
        match &request.body {
            Some(Body::Form(body)) => {
                builder = builder
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(self.expand(case, body, base)?);
            }
            Some(Body::Json(body)) => {
                builder = builder.header("content-type", "application/json").body(self.expand(case, body, base)?);
            }
            None => {}
        }
        tokio::time::timeout(REQUEST_TIMEOUT, builder.send())
            .await
            .with_context(|| format!("no answer to {} {target} in {REQUEST_TIMEOUT:?}", request.method))?
            .with_context(|| format!("{} {target}", request.method))
    }

    /// Sends a request (repeating it for `@until`) and renders the answer.
    async fn exchange(&self, case: &Case, request: &Request, base: u64) -> Result<Observation> {
        let deadline = Instant::now() + UNTIL_TIMEOUT;
        loop {
            let response = self.send(case, request, base).await?;
            let status = response.status().as_u16();
            let mut observation = self.head(&response, base, &request.compare);
            let body = tokio::time::timeout(REQUEST_TIMEOUT, response.text()).await.context("reading a body")??;
            observation.push_str(&self.body(&body, base, &request.compare));
            match request.until {
                Some(wanted) if status != wanted && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return Ok(observation),
            }
        }
    }

    fn head(&self, response: &reqwest::Response, base: u64, compare: &Compare) -> Observation {
        let headers = response.headers();
        let mut out = format!("status {}\n", response.status().as_u16());
        let text = |name: &str| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        for name in ["content-type", "allow", "location"] {
            if let Some(value) = text(name) {
                let value = normalise::text(&value, base, &self.identity);
                writeln!(out, "{name}: {value}").unwrap();
            }
        }
        if let Some(value) = text("x-etcd-index") {
            let value = match value.parse() {
                // A watch's X-Etcd-Index is not an event's: keep it comparable all the same.
                Ok(index) if *compare != Compare::Shape => normalise::index(index, base),
                _ => value,
            };
            writeln!(out, "x-etcd-index: {value}").unwrap();
        }
        for name in ["x-raft-index", "x-raft-term", "x-etcd-cluster-id"] {
            if headers.contains_key(name) {
                writeln!(out, "{name}: present").unwrap();
            }
        }
        out
    }

    fn body(&self, body: &str, base: u64, compare: &Compare) -> String {
        match compare {
            Compare::Exact => normalise::text(body, base, &self.identity),
            Compare::Shape => match normalise::json_shape(body) {
                Some(shape) => format!("shape {shape}"),
                None => format!("not JSON: {body}"),
            },
            Compare::Metrics(names) => {
                let mut out = String::new();
                for name in names {
                    let present = body
                        .lines()
                        .any(|line| line.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with([' ', '{'])));
                    writeln!(out, "metric {name}: {}", if present { "present" } else { "missing" }).unwrap();
                }
                out
            }
        }
    }

    async fn flood(&self, case: &Case, request: &Request, base: u64, count: usize) -> Result<Observation> {
        let statuses: Vec<Result<u16>> = futures::stream::iter(0..count)
            .map(|_| async {
                let response = self.send(case, request, base).await?;
                Ok(response.status().as_u16())
            })
            .buffer_unordered(FLOOD_CONCURRENCY)
            .collect()
            .await;
        let mut counts = BTreeMap::new();
        for status in statuses {
            *counts.entry(status?).or_insert(0) += 1;
        }
        Ok(format!("statuses {counts:?}"))
    }
}

/// Reads a watch's body: all of it, or its first `events` lines (a stream).
async fn read_watch(mut response: reqwest::Response, events: Option<usize>) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if events.is_some_and(|n| body.iter().filter(|&&b| b == b'\n').count() >= n) {
                break;
            }
        }
    };
    let timed_out = tokio::time::timeout(AWAIT_TIMEOUT, read).await.is_err();
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if let Some(n) = events {
        text = text.split_inclusive('\n').take(n).collect();
    }
    if timed_out {
        text.push_str("\n<no end of watch within the await timeout>");
    }
    text
}

// Failures panic here, with both clusters alive, so their logs are kept and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_api_matches_etcd() {
    let (reference, subject) = servers::start_pair().await.unwrap();
    compare_all(&reference, &subject).await.unwrap();
}

async fn compare_all(reference_cluster: &Cluster, subject_cluster: &Cluster) -> Result<()> {
    let mut cases = parse_cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/system/cases"))?;
    // FERRITE_CONFORMANCE_ONLY=text runs the cases whose name or topic
    // contains the text: for working on one area.
    let only = std::env::var("FERRITE_CONFORMANCE_ONLY").ok();
    if let Some(only) = &only {
        cases.retain(|c| c.name.contains(only.as_str()) || c.topic.contains(only.as_str()));
    }
    let reference = Target::new(reference_cluster).await?;
    let subject = Target::new(subject_cluster).await?;

    let started = Instant::now();
    let mut mismatches = Vec::new();
    let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dump = String::new();
    for case in &cases {
        *topics.entry(&case.topic).or_default() += 1;
        let case_started = Instant::now();
        if std::env::var_os("FERRITE_CONFORMANCE_TRACE").is_some() {
            eprintln!("case {} ({})", case.name, case.topic);
        }
        let (expected, actual) = tokio::join!(reference.run(case), subject.run(case));
        if case_started.elapsed() > Duration::from_secs(3) {
            eprintln!("slow case {}: {:?}", case.name, case_started.elapsed());
        }
        let expected = expected.with_context(|| format!("case {} on the reference etcd", case.name))?;
        let actual = match actual {
            Ok(actual) => actual,
            Err(e) => {
                mismatches.push(format!("case {} ({}): the subject failed: {e:#}", case.name, case.topic));
                continue;
            }
        };
        for (label, expected) in &expected {
            writeln!(dump, "## {} / {label}\n{expected}", case.name).unwrap();
        }
        for ((label, expected), (_, actual)) in expected.iter().zip(&actual) {
            if expected != actual {
                mismatches.push(format!(
                    "case {} ({}), {label}\n--- etcd\n{expected}\n--- {}\n{actual}",
                    case.name,
                    case.topic,
                    subject_cluster.kind()
                ));
            }
        }
    }
    eprintln!("{} cases in {:?} ({topics:?}) against {}", cases.len(), started.elapsed(), subject_cluster.kind());
    if let Some(path) = std::env::var_os("FERRITE_CONFORMANCE_DUMP") {
        std::fs::write(&path, dump).with_context(|| format!("writing {path:?}"))?;
    }
    assert!(only.is_some() || cases.len() >= 150, "only {} cases", cases.len());
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from etcd:\n\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n\n")
    );
    Ok(())
}

#[test]
fn fixtures_parse() {
    let cases = parse_cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/system/cases")).unwrap();
    assert!(cases.iter().any(|c| c.steps.iter().any(|s| matches!(s, Step::Await { .. }))));
}
