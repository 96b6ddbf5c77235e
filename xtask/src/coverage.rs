//! `cargo xtask coverage`: line coverage per crate, measured by cargo-tarpaulin.
//!
//! Tarpaulin runs the workspace's tests with instrumentation and writes an LCOV report; this
//! module sums its `DA` (line hit) records per crate, counting a line as covered if any test
//! executed it, and prints a table. Only the crates' `src/` trees are counted: tests, benches and
//! xtask are not product code.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::{cargo, run_command, workspace_root};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Fail if a crate with code has less line coverage than this (percent).
    #[arg(long, value_name = "PERCENT", default_value_t = 90.0)]
    fail_under: f64,
    /// Measure only these packages (repeatable, e.g. `raftkv-raft`); default: every crate under
    /// crates/.
    #[arg(long = "package", short = 'p', value_name = "NAME")]
    packages: Vec<String>,
}

/// Lines with code and lines executed, per crate.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tally {
    coverable: u64,
    covered: u64,
}

impl Tally {
    fn percent(self) -> Option<f64> {
        (self.coverable > 0).then(|| 100.0 * self.covered as f64 / self.coverable as f64)
    }
}

pub(crate) fn run(args: &Args) -> bool {
    if !tarpaulin_installed() {
        println!("cargo-tarpaulin is not installed; installing it (this takes a few minutes)");
        if !run_command(cargo().args(["install", "cargo-tarpaulin", "--locked"])) {
            eprintln!("xtask: could not install cargo-tarpaulin");
            return false;
        }
    }
    let root = workspace_root();
    let out_dir = root.join("target/coverage");
    let mut cmd = cargo();
    // The LLVM engine (source-based instrumentation) is far faster than ptrace breakpoints,
    // which matters for the simulation sweeps; their seed count is cut to keep this quick
    // (coverage needs the code paths, not the statistics of 500 seeds).
    cmd.args(["tarpaulin", "--engine", "llvm", "--skip-clean", "--timeout", "900"])
        .env("TEST_SEEDS", "25")
        .args(["--out", "Lcov", "--output-dir"])
        .arg(&out_dir)
        .arg("--target-dir")
        .arg(root.join("target/tarpaulin"))
        .args(["--exclude-files", "xtask/*", "benches/*", "crates/*/tests/*"]);
    if args.packages.is_empty() {
        // Tooling and benchmarks are not product code (and criterion is slow to build).
        cmd.args(["--workspace", "--exclude", "xtask", "--exclude", "benches"]);
    } else {
        for p in &args.packages {
            cmd.args(["--packages", p]);
        }
    }
    if !run_command(&mut cmd) {
        eprintln!("xtask: tarpaulin failed (see its output above)");
        return false;
    }
    let lcov = match std::fs::read_to_string(out_dir.join("lcov.info")) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("xtask: cannot read {}: {e}", out_dir.join("lcov.info").display());
            return false;
        }
    };
    let tallies = tally_by_crate(&lcov, &root);
    print_table(&tallies, &crate_names(&root, &args.packages), args.fail_under)
}

fn tarpaulin_installed() -> bool {
    Command::new("cargo")
        .args(["tarpaulin", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The crates under `crates/` (or just `only`, if given), sorted.
fn crate_names(root: &Path, only: &[String]) -> Vec<String> {
    if !only.is_empty() {
        // Packages are `raftkv-<dir>`; the report counts lines by directory.
        return only.iter().map(|p| p.strip_prefix("raftkv-").unwrap_or(p).to_owned()).collect();
    }
    let mut names: Vec<String> = std::fs::read_dir(root.join("crates"))
        .map(|entries| {
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Sums an LCOV report's line records per crate (`crates/<name>/src/...`).
fn tally_by_crate(lcov: &str, root: &Path) -> BTreeMap<String, Tally> {
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in lcov.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            let path = Path::new(path);
            let rel = path.strip_prefix(root).unwrap_or(path);
            let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            current = match parts.as_slice() {
                [c, name, src, ..] if c == "crates" && src == "src" => Some(name.clone()),
                _ => None,
            };
        } else if let (Some(name), Some(record)) = (&current, line.strip_prefix("DA:")) {
            let hits = record.split(',').nth(1).and_then(|h| h.trim().parse::<u64>().ok());
            let tally = tallies.entry(name.clone()).or_default();
            tally.coverable += 1;
            tally.covered += u64::from(hits.is_some_and(|h| h > 0));
        } else if line == "end_of_record" {
            current = None;
        }
    }
    tallies
}

/// Prints the table; false if a crate with code is under `fail_under` percent.
fn print_table(tallies: &BTreeMap<String, Tally>, names: &[String], fail_under: f64) -> bool {
    println!("\n{:<12} {:>9} {:>9} {:>8}", "crate", "covered", "lines", "percent");
    let mut ok = true;
    let mut total = Tally::default();
    for name in names {
        let t = tallies.get(name).copied().unwrap_or_default();
        total.coverable += t.coverable;
        total.covered += t.covered;
        match t.percent() {
            Some(p) => {
                let flag = if p < fail_under { "  below threshold" } else { "" };
                ok &= p >= fail_under;
                println!("{name:<12} {:>9} {:>9} {p:>7.1}%{flag}", t.covered, t.coverable);
            }
            None => println!("{name:<12} {:>9} {:>9} {:>8}", "-", 0, "no code"),
        }
    }
    if let Some(p) = total.percent() {
        println!("{:<12} {:>9} {:>9} {p:>7.1}%", "all", total.covered, total.coverable);
    }
    println!("threshold: {fail_under}% per crate with code");
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
SF:/w/crates/labrpc/src/lib.rs
DA:1,3
DA:2,0
DA:3,1
end_of_record
SF:/w/crates/labrpc/tests/t.rs
DA:1,0
end_of_record
SF:/w/crates/raft/src/lib.rs
DA:5,0
end_of_record
";

    #[test]
    fn tallies_lines_per_crate_src_only() {
        let t = tally_by_crate(REPORT, Path::new("/w"));
        assert_eq!(t["labrpc"], Tally { coverable: 3, covered: 2 });
        assert_eq!(t["raft"], Tally { coverable: 1, covered: 0 });
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn threshold_applies_only_to_crates_with_code() {
        let t = tally_by_crate(REPORT, Path::new("/w"));
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(print_table(&t, &names(&["labrpc", "lsm"]), 60.0));
        assert!(!print_table(&t, &names(&["labrpc"]), 70.0));
        assert!(!print_table(&t, &names(&["raft"]), 90.0));
    }
}
