//! The image tasks: build the disk image, boot it, run the VM tier.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{install_packages, run, step, IMAGE_PACKAGES};

/// Builds the release binaries and the image (cached OS tree).
pub fn build(root: &Path, vmdk: bool) -> Result<()> {
    install_packages(IMAGE_PACKAGES)?;
    step("building the disk image");
    run(root, "cargo", &["build", "--release", "-p", "ferrite-image", "-p", "ferrite-vm"])?;
    let mut args = vec!["build", "--workspace", "."];
    if vmdk {
        args.push("--vmdk");
    }
    run(root, "target/release/ferrite-image", &args)
}

/// Builds the image a second time from the same inputs and fails unless
/// every partition and artifact has the same SHA-256 as the first build.
pub fn check_reproducible(root: &Path) -> Result<()> {
    let manifest = root.join("target/ferrite-image/images/manifest.json");
    let first = std::fs::read_to_string(&manifest).with_context(|| format!("{}", manifest.display()))?;
    step("rebuilding the image to check it is reproducible");
    run(root, "target/release/ferrite-image", &["build", "--workspace", ".", "--no-cargo"])?;
    let second = std::fs::read_to_string(&manifest).with_context(|| format!("{}", manifest.display()))?;
    if first != second {
        let a: Vec<&str> = first.lines().collect();
        let b: Vec<&str> = second.lines().collect();
        let diff: Vec<String> =
            a.iter().zip(&b).filter(|(x, y)| x != y).map(|(x, y)| format!("- {x}\n+ {y}")).take(10).collect();
        anyhow::bail!("two builds of the same inputs differ:\n{}", diff.join("\n"));
    }
    eprintln!("two builds gave the same bytes (manifest.json lists the hashes)");
    Ok(())
}

/// Boots the built image and prints the guest's boot report.
pub fn boot(root: &Path, check: bool) -> Result<()> {
    step("booting the image in QEMU");
    let mut args = vec![];
    if check {
        args.push("--check");
    }
    run(root, "target/release/ferrite-vm", &args)
}

/// The VM tier: one test at a time (each boots a VM on 2 cores).
pub fn vm_tests(root: &Path) -> Result<()> {
    run(
        root,
        "cargo",
        &["test", "-p", "qemu-tests", "--features", "vm-tests", "--test", "vm", "--", "--test-threads=1"],
    )
}

/// `cargo xtask bench image`: build time with no OS tree cached, rebuild
/// time with it cached (what a Rust-only change costs), partition and
/// artifact sizes from the manifest, and the guest's own boot time under
/// TCG (systemd-analyze) plus the wall time from QEMU start to its report.
pub fn bench(root: &Path, cold: bool, boots_wanted: usize, write: bool) -> Result<()> {
    use std::time::Instant;

    install_packages(IMAGE_PACKAGES)?;
    run(root, "cargo", &["build", "--release", "-p", "ferrite-image", "-p", "ferrite-vm"])?;
    let cache = root.join("target/ferrite-image/cache");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tree-") || (cold && name == "packages") {
                std::fs::remove_dir_all(e.path()).with_context(|| format!("{}", e.path().display()))?;
            }
        }
    }
    step("image build with no OS tree cached");
    let t = Instant::now();
    run(root, "target/release/ferrite-image", &["build", "--workspace", "."])?;
    let full = t.elapsed().as_secs_f64();
    step("image rebuild with the OS tree cached");
    let t = Instant::now();
    run(root, "target/release/ferrite-image", &["build", "--workspace", "."])?;
    let rebuild = t.elapsed().as_secs_f64();

    let manifest_path = root.join("target/ferrite-image/images/manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest_path)?)?;
    let mut boots = Vec::new();
    for n in 1..=boots_wanted {
        step(&format!("booting the image under TCG ({n} of {boots_wanted})"));
        boots.push(boot_once(root, Path::new(IMAGE), None)?);
    }
    // The boot with the median time to multi-user.target stands for the
    // run; unmeasured boots sort last.
    boots.sort_by(|a, b| a.to_multi_user().unwrap_or(f64::MAX).total_cmp(&b.to_multi_user().unwrap_or(f64::MAX)));
    let each: Vec<String> =
        boots.iter().map(|b| b.to_multi_user().map_or("not measured".to_owned(), |t| format!("{t:.1} s"))).collect();
    let median = &boots[boots.len() / 2];
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    let mut table = String::new();
    table.push_str(&format!(
        "Command: `cargo xtask bench image{} --boots {boots_wanted}` (2-core machine, TCG, {}; the boot figures \
         are the boot with the median time to multi-user.target).\n\n",
        if cold { " --cold" } else { "" },
        emulator()?
    ));
    table.push_str("| figure | value |\n|---|---|\n");
    table.push_str(&format!(
        "| build, no OS tree cached{} | {full:.0} s |\n",
        if cold { ", no package cache" } else { " (apt download cache kept)" }
    ));
    table.push_str(&format!("| rebuild, OS tree cached (a Rust-only change) | {rebuild:.0} s |\n"));
    for p in manifest["partitions"].as_array().into_iter().flatten() {
        table.push_str(&format!(
            "| partition {} {} | {} partition, {} written |\n",
            p["number"],
            p["label"].as_str().unwrap_or(""),
            mib(p["size"].as_u64().unwrap_or(0)),
            mib(p["content_size"].as_u64().unwrap_or(0))
        ));
    }
    for a in manifest["artifacts"].as_array().into_iter().flatten() {
        table.push_str(&format!(
            "| {} | {} |\n",
            a["name"].as_str().unwrap_or(""),
            mib(a["size"].as_u64().unwrap_or(0))
        ));
    }
    table.push_str(&format!("| QEMU start to multi-user.target | {} |\n", median.breakdown()));
    table.push_str(&format!("| QEMU start to multi-user.target, each boot | {} |\n", each.join(", ")));
    table.push_str(&format!(
        "| QEMU's CPU time by multi-user.target (the median boot) | {} |\n",
        median.qemu_cpu.map_or("not measured".to_owned(), |t| format!("{t:.1} s"))
    ));
    table.push_str(&format!("| boot, systemd-analyze in the guest (every start job done) | {} |\n", median.finished));
    table.push_str(&format!("| QEMU start to the guest's boot report | {} |\n", median.report));
    table.push_str(&format!("| slowest units (systemd-analyze blame) | {} |\n", median.slowest.replace(',', ", ")));
    table.push_str(&format!(
        "| what multi-user.target waited on (systemd-analyze critical-chain) | {} |\n",
        median.chain.replace(',', ", ")
    ));
    println!("{table}");
    if write {
        let path = root.join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let start = "<!-- bench image: begin -->";
        let end = "<!-- bench image: end -->";
        let section = format!("{start}\n{table}{end}");
        let new = match (old.find(start), old.find(end)) {
            (Some(a), Some(b)) if a < b => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
            _ => format!("{old}\n{section}\n"),
        };
        std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One boot under TCG, as `ferrite-vm --check` reports it.
struct Boot {
    /// QEMU start to the kernel's first console line, by the host's clock.
    firmware: Option<f64>,
    /// systemd-analyze's "Startup finished in ..." line.
    finished: String,
    /// multi-user.target's time in userspace, from the critical chain.
    multi_user: Option<f64>,
    /// QEMU start to the guest's boot report.
    report: String,
    /// The CPU time QEMU had used when the console showed
    /// multi-user.target.
    qemu_cpu: Option<f64>,
    /// What `ferrite-vm --check` printed.
    output: String,
    slowest: String,
    chain: String,
}

impl Boot {
    /// QEMU start to multi-user.target: the firmware and boot loader, then
    /// the guest's own kernel and initrd times and multi-user.target's
    /// time in userspace.
    fn phases(&self) -> Option<[f64; 4]> {
        Some([self.firmware?, phase(&self.finished, "(kernel)")?, phase(&self.finished, "(initrd)")?, self.multi_user?])
    }

    fn to_multi_user(&self) -> Option<f64> {
        self.phases().map(|p| p.iter().sum())
    }

    fn breakdown(&self) -> String {
        match self.phases() {
            Some([f, k, i, u]) => format!(
                "{:.1} s (firmware and boot loader {f:.1} s + kernel {k:.1} s + initrd {i:.1} s + userspace {u:.1} s)",
                f + k + i + u
            ),
            None => format!(
                "not measured (kernel start: {:?}, boot: {:?}, multi-user: {:?})",
                self.firmware, self.finished, self.multi_user
            ),
        }
    }
}

/// What the boot figures were measured on, for the record: QEMU's version
/// and the host's CPU. Under TCG a boot is bound by the emulator and the
/// host's CPU as much as by the image, and the machines a session is given
/// differ (the same image's boot has measured 15-17 s on one and 24-27 s
/// on another), so figures compare only where these match.
fn emulator() -> Result<String> {
    let out = Command::new("qemu-system-x86_64").arg("--version").output().context("cannot run qemu-system-x86_64")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let qemu = text.lines().next().unwrap_or("QEMU, version unknown").trim().to_owned();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("cannot read /proc/cpuinfo")?;
    Ok(format!("{qemu}; host CPU {}", host_cpu(&cpuinfo)))
}

/// The first processor of `/proc/cpuinfo` as "NAME (family F, model M,
/// stepping S)": hypervisors often give only a generic name, and the
/// numbers then tell the CPU's generation.
fn host_cpu(cpuinfo: &str) -> String {
    let first = cpuinfo.split("\n\n").next().unwrap_or("");
    let field = |key: &str| {
        first.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    let name = field("model name").unwrap_or_else(|| "unknown".to_owned());
    match (field("cpu family"), field("model"), field("stepping")) {
        (Some(f), Some(m), Some(s)) => format!("{name} (family {f}, model {m}, stepping {s})"),
        _ => name,
    }
}

/// The image `cargo xtask image` builds, relative to the workspace.
pub const IMAGE: &str = "target/ferrite-image/images/ferrite.qcow2";

/// One side of `cargo xtask bench image-ab`: an image, and the CPU model
/// QEMU emulates for it (`None`: ferrite-vm's default).
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub image: PathBuf,
    pub cpu: Option<String>,
}

impl Arm {
    /// The arm as the command's options (`--baseline X --baseline-cpu Y`).
    fn options(&self, side: &str) -> String {
        let cpu = self.cpu.as_ref().map_or(String::new(), |c| format!(" --{side}-cpu {c}"));
        format!("--{side} {}{cpu}", self.image.display())
    }
}

/// `cargo xtask bench image-ab`: boots `baseline` and `candidate` in turn,
/// `pairs` times, and prints each pair's QEMU start to multi-user.target
/// and QEMU's CPU time by then, with their differences. Under TCG on a shared machine single boots of one
/// image spread over seconds, and the machine's speed drifts within a run;
/// the two boots of a pair see about the same machine, and alternating
/// which boots first keeps a drift from favouring either side.
pub fn bench_pairs(root: &Path, baseline: &Arm, candidate: &Arm, pairs: usize) -> Result<()> {
    anyhow::ensure!(
        baseline != candidate,
        "the baseline and the candidate are the same ({}): give a different image or CPU model for one of them",
        baseline.options("baseline")
    );
    let arms = [("baseline", baseline), ("candidate", candidate)];
    for (name, arm) in arms {
        let image = root.join(&arm.image);
        anyhow::ensure!(image.is_file(), "the {name} image {} does not exist", image.display());
    }
    install_packages(IMAGE_PACKAGES)?;
    run(root, "cargo", &["build", "--release", "-p", "ferrite-vm"])?;
    let PairedRuns { times, cpu, failed } =
        run_pairs(pairs, [arms[0].0, arms[1].0], |i| boot_once(root, &arms[i].1.image, arms[i].1.cpu.as_deref()));
    let secs = |t: Option<f64>| t.map_or("not measured".to_owned(), |t| format!("{t:.1} s"));
    let diff = |[b, c]: [Option<f64>; 2]| b.zip(c).map_or("-".to_owned(), |(b, c)| format!("{:+.1} s", c - b));
    println!(
        "\nCommand: `cargo xtask bench image-ab {} {} --pairs {pairs}` ({}). QEMU start to multi-user.target, \
         and the CPU time QEMU had used by then:\n",
        baseline.options("baseline"),
        candidate.options("candidate"),
        emulator()?
    );
    println!(
        "| pair | baseline | candidate | candidate - baseline | baseline CPU | candidate CPU | candidate - baseline |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for (n, (t, c)) in times.iter().zip(&cpu).enumerate() {
        let row = [secs(t[0]), secs(t[1]), diff(*t), secs(c[0]), secs(c[1]), diff(*c)];
        println!("| {} | {} |", n + 1, row.join(" | "));
    }
    for (what, rows) in [("time to multi-user.target", &times), ("QEMU's CPU time", &cpu)] {
        let summary = paired_summary(rows);
        println!(
            "\n{what}: the candidate was lower in {} of {} measured pairs; median difference {}.",
            summary.lower,
            summary.measured,
            summary.median.map_or("none".to_owned(), |d| format!("{d:+.2} s"))
        );
    }
    anyhow::ensure!(failed.is_empty(), "boots failed, their pairs not measured (output above): {}", failed.join(", "));
    Ok(())
}

/// What [`run_pairs`] measured. Per pair, `[baseline, candidate]`: QEMU
/// start to multi-user.target, and QEMU's CPU time by then.
#[derive(Debug, Default, PartialEq)]
struct PairedRuns {
    times: Vec<[Option<f64>; 2]>,
    cpu: Vec<[Option<f64>; 2]>,
    /// The boots that failed, as "pair N's NAME".
    failed: Vec<String>,
}

/// Boots the two arms (0 the baseline, 1 the candidate, called `names`)
/// `pairs` times with `boot`, alternating which boots first, so that a
/// machine speeding up or slowing down during the run favours neither. A
/// boot that fails (its check, or a guest that hangs until ferrite-vm gives
/// up) leaves its side of the pair unmeasured instead of discarding the
/// run; it is named in `failed`.
fn run_pairs(pairs: usize, names: [&str; 2], mut boot: impl FnMut(usize) -> Result<Boot>) -> PairedRuns {
    let mut runs = PairedRuns::default();
    for n in 1..=pairs {
        let (mut time, mut used) = ([None, None], [None, None]);
        for i in if n % 2 == 1 { [0, 1] } else { [1, 0] } {
            let name = names[i];
            step(&format!("pair {n} of {pairs}: booting the {name} under TCG"));
            match boot(i) {
                Ok(b) => {
                    if b.to_multi_user().is_none() {
                        eprintln!("pair {n}: no time to multi-user.target in the {name}'s report:\n{}", b.output);
                    }
                    (time[i], used[i]) = (b.to_multi_user(), b.qemu_cpu);
                }
                Err(e) => {
                    eprintln!("pair {n}: the {name}'s boot failed: {e:#}");
                    runs.failed.push(format!("pair {n}'s {name}"));
                }
            }
        }
        runs.times.push(time);
        runs.cpu.push(used);
    }
    runs
}

/// What a run of paired boots says: in how many pairs the candidate was
/// lower (faster, or cheaper in CPU), and the median of candidate minus baseline.
#[derive(Debug, PartialEq)]
struct PairedSummary {
    measured: usize,
    lower: usize,
    median: Option<f64>,
}

fn paired_summary(rows: &[[Option<f64>; 2]]) -> PairedSummary {
    let mut diffs: Vec<f64> = rows.iter().filter_map(|[b, c]| Some((*c)? - (*b)?)).collect();
    diffs.sort_by(f64::total_cmp);
    let median = match diffs.len() {
        0 => None,
        n if n % 2 == 1 => Some(diffs[n / 2]),
        n => Some((diffs[n / 2 - 1] + diffs[n / 2]) / 2.0),
    };
    PairedSummary { measured: diffs.len(), lower: diffs.iter().filter(|d| **d < 0.0).count(), median }
}

/// Boots `image` once with `ferrite-vm --check`, under the CPU model `cpu`
/// (`None`: ferrite-vm's default).
fn boot_once(root: &Path, image: &Path, cpu: Option<&str>) -> Result<Boot> {
    let mut vm = Command::new(root.join("target/release/ferrite-vm"));
    // A normal boot reports within about a minute and a half here; a guest
    // that hangs is given up on after three.
    vm.arg("--check").args(["--timeout", "180"]).arg("--image").arg(image).current_dir(root);
    if let Some(cpu) = cpu {
        vm.args(["--cpu", cpu]);
    }
    let out = vm.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!("ferrite-vm --check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |key: &str| {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(|v| v.replace('_', " ")))
            .unwrap_or_default()
    };
    let wall = stdout.lines().find(|l| l.starts_with("booted in")).unwrap_or("");
    let chain = field("chain");
    // multi-user.target's start (`multi-user.target:@17.510s`):
    // systemd-analyze's own "reached after" line names the default target,
    // graphical.target.
    let multi_user = chain.split(',').find_map(|unit| span(unit.strip_prefix("multi-user.target:@")?));
    Ok(Boot {
        firmware: stdout
            .lines()
            .find_map(|l| l.strip_prefix("kernel started ")?.split(' ').next()?.parse::<f64>().ok()),
        finished: field("boot"),
        multi_user,
        report: wall.trim_start_matches("booted in ").to_owned(),
        qemu_cpu: stdout
            .lines()
            .find_map(|l| l.split("; QEMU used ").nth(1)?.strip_suffix(" s of CPU")?.parse::<f64>().ok()),
        output: stdout.clone(),
        slowest: field("slowest"),
        chain,
    })
}

/// The seconds of the phase `label` (`(kernel)`, `(initrd)`) in
/// systemd-analyze's "Startup finished in 4.436s (kernel) + ..." line.
fn phase(line: &str, label: &str) -> Option<f64> {
    line.split(" + ").find_map(|part| {
        let part = part.trim_start_matches("Startup finished in ");
        span(part.strip_suffix(label)?.trim())
    })
}

/// A systemd time span as systemd-analyze prints it (`17.510s`,
/// `1min 2.345s`, `850ms`), in seconds.
fn span(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for word in text.split_whitespace() {
        let (number, unit) = word.split_at(word.find(|c: char| c.is_ascii_alphabetic())?);
        let value: f64 = number.parse().ok()?;
        total += value
            * match unit {
                "min" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                "us" => 0.000_001,
                _ => return None,
            };
        any = true;
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_analyze_spans_and_phases_parse() {
        assert_eq!(span("17.510s"), Some(17.51));
        assert_eq!(span("1min 2.5s"), Some(62.5));
        assert_eq!(span("850ms"), Some(0.85));
        assert_eq!(span("soon"), None);
        let line = "Startup finished in 4.436s (kernel) + 9.646s (initrd) + 18.827s (userspace) = 32.910s";
        assert_eq!(phase(line, "(kernel)"), Some(4.436));
        assert_eq!(phase(line, "(initrd)"), Some(9.646));
        assert_eq!(phase(line, "(firmware)"), None);
    }

    /// A boot whose figures sum to `to_multi_user` seconds, with `cpu`.
    fn boot(to_multi_user: f64, cpu: f64) -> Boot {
        Boot {
            firmware: Some(to_multi_user - 3.0),
            finished: "Startup finished in 1.000s (kernel) + 1.000s (initrd) + 5.000s (userspace) = 7.000s".into(),
            multi_user: Some(1.0),
            report: String::new(),
            qemu_cpu: Some(cpu),
            output: String::new(),
            slowest: String::new(),
            chain: String::new(),
        }
    }

    #[test]
    fn paired_boots_alternate_and_a_failed_boot_only_loses_its_side() {
        let mut order = Vec::new();
        let runs = run_pairs(3, ["baseline", "candidate"], |i| {
            order.push(i);
            match order.len() {
                3 => anyhow::bail!("the guest hung"),
                n => Ok(boot(20.0 + n as f64, 30.0 + n as f64)),
            }
        });
        assert_eq!(order, [0, 1, 1, 0, 0, 1], "the first to boot alternates, pair by pair");
        assert_eq!(runs.times, [[Some(21.0), Some(22.0)], [Some(24.0), None], [Some(25.0), Some(26.0)]]);
        assert_eq!(runs.cpu, [[Some(31.0), Some(32.0)], [Some(34.0), None], [Some(35.0), Some(36.0)]]);
        assert_eq!(runs.failed, ["pair 2's candidate"]);
    }

    #[test]
    fn the_host_cpu_is_named_with_its_generation() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 167\n\
                       model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 1\nflags\t\t: fpu vme\n\n\
                       processor\t: 1\nmodel name\t: Other\n";
        assert_eq!(host_cpu(cpuinfo), "Intel(R) Xeon(R) Processor (family 6, model 167, stepping 1)");
        assert_eq!(host_cpu("model name\t: Some CPU\n"), "Some CPU");
        assert_eq!(host_cpu(""), "unknown");
    }

    #[test]
    fn paired_boots_summarise_by_their_differences() {
        let rows = [[Some(30.0), Some(29.0)], [Some(28.0), Some(29.5)], [None, Some(20.0)], [Some(31.0), Some(29.0)]];
        // Differences -1.0, +1.5, -2.0; the pair without a baseline figure is left out.
        assert_eq!(paired_summary(&rows), PairedSummary { measured: 3, lower: 2, median: Some(-1.0) });
        let even = [[Some(30.0), Some(29.0)], [Some(30.0), Some(32.0)]];
        assert_eq!(paired_summary(&even).median, Some(0.5));
        assert_eq!(paired_summary(&[[None, None]]), PairedSummary { measured: 0, lower: 0, median: None });
    }
}
