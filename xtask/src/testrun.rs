//! The test step of `test-all`: every test binary of the workspace, several at a time.
//!
//! Most of the suite's time is spent waiting, not computing: the classic lab tests run clusters
//! on real time, elections and all. `cargo test` runs one test binary after another, so those
//! waits add up. This step builds every test once (`cargo test --no-run`, whose JSON output
//! names each executable), then runs the binaries from a queue on [`WORKERS`] threads, the
//! slowest first, each as cargo would run it (in its package's directory, with the same
//! arguments), and the doctests through cargo beside them. A binary's output goes to
//! `target/test-all-logs/`; a line per binary says how it went, and a failed one's output is
//! printed whole. A binary still running after [`BINARY_LIMIT`] is killed and fails the step,
//! so a hung test cannot hang CI.
//!
//! The KV suites that take a state machine (`RAFTKV_STATE_MACHINE`) run twice: on the LSM
//! machine and on the in-memory one.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{cargo, run_command};

/// How many test binaries run at once. Two cores run three comfortably: most binaries spend
/// their time waiting on timers.
pub(crate) const WORKERS: usize = 3;

/// Test binaries known to be slow, slowest first, as (package, target): they start first so
/// that the quick ones fill the gaps at the end.
const SLOW_FIRST: &[(&str, &str)] = &[
    ("raftkv-kvserver", "classic_3a"),
    ("raftkv-raft", "simulation"),
    ("raftkv-kvserver", "classic_3b"),
    ("raftkv-raft", "classic_2c"),
    ("raftkv-raft", "classic_2d"),
    ("raftkv-kvserver", "simulation"),
];

/// The KV suites that run a second time on the in-memory state machine.
const ON_BOTH_MACHINES: &[(&str, &str)] = &[
    ("raftkv-kvserver", "classic_3a"),
    ("raftkv-kvserver", "classic_3b"),
    ("raftkv-kvserver", "simulation"),
];

/// One run of one test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    package: String,
    /// The test target's name (`classic_3a`), or the package's library for unit tests.
    target: String,
    executable: PathBuf,
    /// The package's directory: cargo runs a test binary there.
    dir: PathBuf,
    /// Extra environment, for the second run of a KV suite.
    env: Vec<(String, String)>,
}

impl Job {
    fn label(&self) -> String {
        let mut label = format!("{} {}", self.package, self.target);
        for (k, v) in &self.env {
            label.push_str(&format!(" ({k}={v})"));
        }
        label
    }
}

/// Options every test run gets.
pub(crate) struct RunOptions<'a> {
    pub(crate) seeds: Option<u64>,
    pub(crate) long: bool,
    pub(crate) skipped_dir: &'a Path,
}

/// How long one test binary may run before it is killed as hung: far above the slowest
/// (about two minutes), ten times that when `--seeds` or `--long` make the runs longer.
const BINARY_LIMIT: Duration = Duration::from_secs(20 * 60);

impl RunOptions<'_> {
    fn limit(&self) -> Duration {
        if self.long || self.seeds.is_some() { BINARY_LIMIT * 10 } else { BINARY_LIMIT }
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("RAFTKV_SKIPPED_DIR", self.skipped_dir);
        if let Some(seeds) = self.seeds {
            cmd.env("TEST_SEEDS", seeds.to_string());
        }
        if self.long {
            cmd.env("TEST_LONG", "1");
        }
    }
}

/// Builds and runs every test; true if all passed.
pub(crate) fn run(options: &RunOptions<'_>) -> bool {
    let root = crate::workspace_root();
    let jobs = match build(&root) {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("xtask: {e}");
            return false;
        }
    };
    let log_dir = root.join("target").join("test-all-logs");
    let _ = std::fs::remove_dir_all(&log_dir);
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        eprintln!("xtask: cannot create {}: {e}", log_dir.display());
        return false;
    }
    println!("running {} test binaries, {WORKERS} at a time, and the doctests", jobs.len());
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<Job>>());
    let failed = Mutex::new(Vec::new());
    let doctests_ok = std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(job) = job else { break };
                    if !run_job(&job, options, options.limit(), &log_dir) {
                        failed.lock().unwrap_or_else(|e| e.into_inner()).push(job.label());
                    }
                }
            });
        }
        // The doctests compile as they run; cargo does that beside the binaries.
        let mut doc = cargo();
        doc.args(["test", "--workspace", "--locked", "--doc"]);
        options.apply(&mut doc);
        run_command(&mut doc)
    });
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    if !failed.is_empty() {
        println!("failed test binaries: {}", failed.join(", "));
    }
    failed.is_empty() && doctests_ok
}

/// `cargo test --no-run` for the whole workspace: the test binaries it built, slow first, with
/// the KV suites a second time on the in-memory state machine.
fn build(root: &Path) -> Result<Vec<Job>, String> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--locked", "--no-run", "--message-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!("$ cargo test --workspace --locked --no-run --message-format json");
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("building the tests failed (see above)".into());
    }
    let mut jobs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(job) = parse_artifact(line, root)? {
            jobs.push(job);
        }
    }
    if jobs.is_empty() {
        return Err("cargo built no test binaries".into());
    }
    let mut second: Vec<Job> = jobs
        .iter()
        .filter(|j| ON_BOTH_MACHINES.contains(&(j.package.as_str(), j.target.as_str())))
        .map(|j| Job { env: vec![("RAFTKV_STATE_MACHINE".into(), "memory".into())], ..j.clone() })
        .collect();
    if second.len() != ON_BOTH_MACHINES.len() {
        return Err(format!("expected the KV suites {ON_BOTH_MACHINES:?} among the tests"));
    }
    jobs.append(&mut second);
    jobs.sort_by_key(|j| (rank(j), j.env.len(), j.package.clone(), j.target.clone()));
    Ok(jobs)
}

/// Where a job goes in the queue: the known slow ones first, in their order.
fn rank(job: &Job) -> usize {
    SLOW_FIRST
        .iter()
        .position(|&(p, t)| p == job.package && t == job.target)
        .unwrap_or(SLOW_FIRST.len())
}

/// The test binary a `compiler-artifact` message of cargo's JSON output describes, if it is
/// one.
fn parse_artifact(line: &str, root: &Path) -> Result<Option<Job>, String> {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { return Ok(None) };
    if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
        return Ok(None);
    }
    let Some(executable) = message["executable"].as_str() else { return Ok(None) };
    let field = |v: &serde_json::Value, what: &str| {
        v.as_str().map(str::to_owned).ok_or_else(|| format!("cargo's artifact has no {what}"))
    };
    let manifest = PathBuf::from(field(&message["manifest_path"], "manifest path")?);
    let dir = manifest.parent().unwrap_or(root).to_path_buf();
    let target = field(&message["target"]["name"], "target name")?;
    let kinds = &message["target"]["kind"];
    let package = package_name(&manifest)?;
    let target = if kinds.as_array().is_some_and(|k| k.iter().any(|k| k == "test")) {
        target
    } else {
        format!("{target} (unit tests)")
    };
    Ok(Some(Job { package, target, executable: executable.into(), dir, env: Vec::new() }))
}

/// The package's name, from its manifest (cargo's package ids are not meant to be parsed).
fn package_name(manifest: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    crate::package_key(&text, "name")
        .ok_or_else(|| format!("{}: no package name", manifest.display()))
}

/// Runs one test binary as cargo would; its output goes to a log file. True if it passed.
fn run_job(job: &Job, options: &RunOptions<'_>, limit: Duration, log_dir: &Path) -> bool {
    let name: String = job
        .label()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let log_path = log_dir.join(format!("{name}.log"));
    let started = Instant::now();
    let result = std::fs::File::create(&log_path).and_then(|log| {
        let mut cmd = Command::new(&job.executable);
        cmd.current_dir(&job.dir).stdout(log.try_clone()?).stderr(log);
        options.apply(&mut cmd);
        for (k, v) in &job.env {
            cmd.env(k, v);
        }
        if options.long {
            cmd.arg("--include-ignored");
        }
        let mut child = cmd.spawn()?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if started.elapsed() > limit {
                // A hung binary must not hang CI: kill it and show what it printed.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let took = started.elapsed();
    let ok = matches!(&result, Ok(Some(status)) if status.success());
    let verdict = if ok { "ok" } else { "FAILED" };
    println!("  {verdict:<6} {:<60} {:>7.1}s", job.label(), secs(took));
    if !ok {
        match result {
            Err(e) => println!("xtask: cannot run {}: {e}", job.executable.display()),
            Ok(None) => {
                let output = std::fs::read_to_string(&log_path).unwrap_or_default();
                println!(
                    "---- {} was still running after {limit:?} and was killed; its output ----\n\
                     {output}---- end ----",
                    job.label()
                );
            }
            Ok(Some(_)) => {
                let output = std::fs::read_to_string(&log_path).unwrap_or_default();
                println!("---- output of {} ----\n{output}---- end ----", job.label());
            }
        }
    }
    ok
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_artifacts_are_parsed_and_others_ignored() {
        let root = crate::workspace_root();
        let manifest = root.join("crates/raft/Cargo.toml");
        let artifact = |kind: &str, test: bool, exe: &str| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": "x",
                "manifest_path": manifest,
                "target": { "kind": [kind], "name": "classic_2a" },
                "profile": { "test": test },
                "executable": serde_json::from_str::<serde_json::Value>(exe).unwrap(),
            })
            .to_string()
        };
        let job = parse_artifact(&artifact("test", true, r#""/t/classic_2a-1""#), &root)
            .unwrap()
            .expect("a test binary");
        assert_eq!(job.package, "raftkv-raft");
        assert_eq!(job.target, "classic_2a");
        assert_eq!(job.dir, root.join("crates/raft"));
        let unit = parse_artifact(&artifact("lib", true, r#""/t/raft-1""#), &root).unwrap();
        assert_eq!(unit.unwrap().target, "classic_2a (unit tests)");
        assert_eq!(parse_artifact(&artifact("lib", false, "null"), &root).unwrap(), None);
        assert_eq!(parse_artifact(r#"{"reason":"build-finished"}"#, &root).unwrap(), None);
        assert_eq!(parse_artifact("not json", &root).unwrap(), None);
    }

    #[test]
    fn a_binary_that_hangs_is_killed_at_the_limit_and_fails() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-testrun-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("hangs.sh");
        std::fs::write(&script, "#!/bin/sh\necho started\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let passes = dir.join("passes.sh");
        std::fs::write(&passes, "#!/bin/sh\necho fine\n").unwrap();
        std::fs::set_permissions(&passes, std::fs::Permissions::from_mode(0o755)).unwrap();
        let job = |exe: &Path| Job {
            package: "p".into(),
            target: exe.file_name().unwrap().to_string_lossy().into(),
            executable: exe.to_path_buf(),
            dir: dir.clone(),
            env: Vec::new(),
        };
        let options = RunOptions { seeds: None, long: false, skipped_dir: &dir };
        let started = Instant::now();
        assert!(!run_job(&job(&script), &options, Duration::from_millis(300), &dir));
        assert!(started.elapsed() < Duration::from_secs(10), "killed at the limit");
        let log = std::fs::read_to_string(dir.join("p_hangs_sh.log")).unwrap();
        assert!(log.contains("started"), "{log}");
        assert!(run_job(&job(&passes), &options, Duration::from_secs(10), &dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn slow_binaries_are_queued_first() {
        let job = |package: &str, target: &str| Job {
            package: package.into(),
            target: target.into(),
            executable: PathBuf::new(),
            dir: PathBuf::new(),
            env: Vec::new(),
        };
        assert_eq!(rank(&job("raftkv-kvserver", "classic_3a")), 0);
        assert_eq!(rank(&job("raftkv-raft", "simulation")), 1);
        assert_eq!(rank(&job("raftkv-lsm", "db")), SLOW_FIRST.len());
    }
}
