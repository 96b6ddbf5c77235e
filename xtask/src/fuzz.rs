//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/libfuzzer` one after another for a
//! set time each, and reports the executions per target and any crash (docs/fuzzing.md).
//!
//! Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); not part of
//! `test-all`, which replays the committed corpora on stable instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every target, in the order they run (the names of `fuzz/libfuzzer`'s binaries).
const TARGETS: &[&str] =
    &["resp", "wal", "sstable", "manifest", "raft_log", "kv_snapshot", "peer_step"];

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How long to run each target, in seconds.
    #[arg(long, value_name = "N", default_value_t = 60)]
    seconds: u64,
    /// Run only this target (repeatable); all of them without it.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
    /// libFuzzer's -jobs: parallel fuzzing processes per target.
    #[arg(long, value_name = "N", default_value_t = 1)]
    jobs: u32,
}

/// How one target's run ended.
struct Run {
    target: String,
    executions: Option<u64>,
    /// libFuzzer's own fuzzing time (its "Done N runs in S second(s)"), else the wall time,
    /// which includes building.
    seconds: f64,
    crash: Option<String>,
    ok: bool,
}

/// Runs the targets; true if every one ran clean.
pub(crate) fn run(args: &Args, root: &Path) -> bool {
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) {
            eprintln!("xtask fuzz: no target {t:?}; the targets are {}", TARGETS.join(", "));
            return false;
        }
    }
    let version = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !version.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "xtask fuzz: needs the nightly toolchain and cargo-fuzz: \
             `rustup toolchain install nightly` and `cargo install cargo-fuzz`"
        );
        return false;
    }
    let chosen: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        TARGETS.iter().copied().filter(|t| args.targets.iter().any(|a| a == t)).collect()
    };
    let mut runs = Vec::new();
    for target in chosen {
        let run = run_target(root, target, args);
        let stop = run.crash.is_some() || !run.ok;
        runs.push(run);
        if stop {
            break; // A crash is a bug to fix now; the others can wait.
        }
    }
    println!("\nfuzz summary ({} s per target):", args.seconds);
    println!("  {:<12} {:>14} {:>9} {:>10}  result", "target", "executions", "seconds", "exec/s");
    for r in &runs {
        let execs = r.executions.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let rate = r
            .executions
            .map_or_else(|| "?".to_owned(), |n| format!("{:.0}", n as f64 / r.seconds.max(0.001)));
        let result = match (&r.crash, r.ok) {
            (Some(path), _) => format!("CRASH {path}"),
            (None, true) => "ok".to_owned(),
            (None, false) => "FAILED (see its log)".to_owned(),
        };
        println!("  {:<12} {execs:>14} {:>9.0} {rate:>10}  {result}", r.target, r.seconds);
    }
    let all_ok = runs.iter().all(|r| r.ok && r.crash.is_none());
    if !all_ok {
        println!(
            "\nA crash input reproduces with `cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer \
             <target> <file>`; commit it to fuzz/regressions/<target>/ with the fix."
        );
    }
    all_ok
}

fn run_target(root: &Path, target: &str, args: &Args) -> Run {
    let fuzz_dir = root.join("fuzz/libfuzzer");
    let work_corpus = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("logs");
    for dir in [&work_corpus, &artifacts, &logs] {
        if let Err(e) = fs::create_dir_all(dir) {
            eprintln!("xtask fuzz: cannot create {}: {e}", dir.display());
            return failed(target);
        }
    }
    let log_path = logs.join(format!("{target}.log"));
    let Ok(log) = fs::File::create(&log_path) else {
        eprintln!("xtask fuzz: cannot create {}", log_path.display());
        return failed(target);
    };
    let Ok(log_err) = log.try_clone() else { return failed(target) };
    let committed = root.join("fuzz/corpus").join(target);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz", "run", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .args(["--sanitizer", "none", target])
        // New inputs go to the first directory (not committed); the committed corpus seeds it.
        .arg(&work_corpus)
        .arg(&committed)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg("-print_final_stats=1")
        .arg("-timeout=20")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    if args.jobs > 1 {
        cmd.arg(format!("-jobs={}", args.jobs)).arg(format!("-workers={}", args.jobs));
    }
    println!("==> fuzz {target} for {} s (log: {})", args.seconds, log_path.display());
    let started = Instant::now();
    let status = cmd.status();
    let seconds = started.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let Parsed { executions, fuzz_seconds, crash } = parse_log(&text);
    let seconds = fuzz_seconds.map_or(seconds, |s| s as f64);
    let ok = status.as_ref().is_ok_and(|s| s.success());
    match (&crash, ok) {
        (Some(path), _) => println!("<== {target}: CRASH, input written to {path}"),
        (None, true) => println!(
            "<== {target}: ok, {} executions",
            executions.map_or_else(|| "?".into(), |n| n.to_string())
        ),
        (None, false) => {
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            println!("<== {target}: FAILED ({status:?}); the end of its log:\n{}", tail.join("\n"));
        }
    }
    Run { target: target.to_owned(), executions, seconds, crash, ok }
}

fn failed(target: &str) -> Run {
    Run { target: target.to_owned(), executions: None, seconds: 0.0, crash: None, ok: false }
}

/// What libFuzzer's output says.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    /// Executions: the final stats line's, else the "Done N runs" line's (summed over jobs).
    executions: Option<u64>,
    /// Seconds fuzzed, from the "Done" line (the longest over jobs).
    fuzz_seconds: Option<u64>,
    /// The input a crash was written to.
    crash: Option<String>,
}

fn parse_log(text: &str) -> Parsed {
    let mut stats = None::<u64>;
    let mut done = None::<u64>;
    let mut fuzz_seconds = None::<u64>;
    let mut crash = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            if let Ok(n) = n.trim().parse::<u64>() {
                stats = Some(stats.unwrap_or(0) + n);
            }
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 123 runs in 61 second(s)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let Some(n) = words.first().and_then(|n| n.parse::<u64>().ok()) {
                done = Some(done.unwrap_or(0) + n);
            }
            if let Some(s) = words.get(3).and_then(|s| s.parse::<u64>().ok()) {
                fuzz_seconds = Some(fuzz_seconds.unwrap_or(0).max(s));
            }
        } else if let Some(at) = line.find("Test unit written to ") {
            let path = line[at + "Test unit written to ".len()..].trim();
            crash = Some(PathBuf::from(path).display().to_string());
        }
    }
    Parsed { executions: stats.or(done), fuzz_seconds, crash }
}

#[cfg(test)]
mod tests {
    use super::{Parsed, parse_log};

    fn parsed(executions: Option<u64>, fuzz_seconds: Option<u64>, crash: Option<&str>) -> Parsed {
        Parsed { executions, fuzz_seconds, crash: crash.map(str::to_owned) }
    }

    #[test]
    fn parses_final_stats_and_crashes() {
        let clean = "#1024\tpulse  cov: 5\nDone 123456 runs in 61 second(s)\n\
                     stat::number_of_executed_units: 123457\nstat::peak_rss_mb: 40\n";
        assert_eq!(parse_log(clean), parsed(Some(123457), Some(61), None));
        let done_only = "Done 99 runs in 1 second(s)\n";
        assert_eq!(parse_log(done_only), parsed(Some(99), Some(1), None));
        let crash = "==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='a/'; Test unit written to a/crash-0123abcd\n\
                     stat::number_of_executed_units: 77\n";
        assert_eq!(parse_log(crash), parsed(Some(77), None, Some("a/crash-0123abcd")));
        assert_eq!(parse_log(""), parsed(None, None, None));
    }
}
