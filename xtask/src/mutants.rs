//! `cargo xtask mutants`: a mutation score for the Raft core and the storage engine's pure
//! parts, with cargo-mutants (issue 20).
//!
//! cargo-mutants rewrites one function or operator at a time (a body replaced by a default
//! value, `<` turned into `<=`, `&&` into `||` …), rebuilds, and runs the chosen tests. A
//! mutant the tests fail on is *caught*; one they pass is *missed*: a line whose behaviour no
//! test pins down. Mutants that do not compile are *unviable* and do not count. The score of a
//! file is caught (timeouts included) over viable mutants; the goal is 90% per file.
//!
//! Each group runs only its package's fast tests (the seeded sweeps and process tests would
//! make the hundreds of rebuilds take days), with the `mutants` profile (no debug info). Not
//! part of `test-all`. The per-file table is printed at the end and the raw lists
//! (`caught.txt`, `missed.txt`, …) stay under `target/mutants/<group>/mutants.out`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A set of files mutated together, and the tests that judge them.
struct Group {
    name: &'static str,
    package: &'static str,
    files: &'static [&'static str],
    /// Arguments to `cargo test` choosing the fast test targets.
    tests: &'static [&'static str],
}

const GROUPS: &[Group] = &[
    Group {
        name: "raft",
        package: "raftkv-raft",
        files: &[
            "crates/raft/src/raw_node.rs",
            "crates/raft/src/raft_log.rs",
            "crates/raft/src/progress.rs",
        ],
        tests: &[
            "--lib",
            "--test=election",
            "--test=replication",
            "--test=safety",
            "--test=read_index",
            "--test=prevote_checkquorum",
            "--test=snapshots",
            "--test=hostile",
        ],
    },
    Group {
        name: "lsm",
        package: "raftkv-lsm",
        files: &[
            "crates/lsm/src/compaction.rs",
            "crates/lsm/src/iter.rs",
            "crates/lsm/src/table/block.rs",
            "crates/lsm/src/table/mod.rs",
            "crates/lsm/src/table/bloom.rs",
        ],
        tests: &["--lib", "--test=background", "--test=corruption", "--test=db", "--test=no_space"],
    },
];

/// Arguments of `cargo xtask mutants`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Mutate only files whose path ends with this (repeatable), e.g. `--file log.rs`; every
    /// file of the chosen groups without it.
    #[arg(long = "file", value_name = "SUFFIX")]
    files: Vec<String>,
    /// Only this group: `raft` or `lsm` (both without it).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Only list the mutants, without building or testing any.
    #[arg(long)]
    list: bool,
    /// Run one shard of each group's mutants, as cargo-mutants' `--shard K/N`.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Only print the table of an earlier run's results (`target/mutants/<group>`).
    #[arg(long)]
    report: bool,
}

/// Runs the chosen groups and prints the score per file; true if every file reached 90%.
pub(crate) fn run(args: &Args, root: &Path) -> bool {
    if let Some(g) = &args.group
        && !GROUPS.iter().any(|x| x.name == g)
    {
        eprintln!("xtask mutants: no group {g:?}; the groups are raft and lsm");
        return false;
    }
    if !args.report && !ensure_cargo_mutants() {
        return false;
    }
    let mut ok = true;
    for group in GROUPS.iter().filter(|g| args.group.as_deref().is_none_or(|n| n == g.name)) {
        let files: Vec<&str> = group
            .files
            .iter()
            .copied()
            .filter(|f| args.files.is_empty() || args.files.iter().any(|s| f.ends_with(s.as_str())))
            .collect();
        if files.is_empty() {
            continue;
        }
        let out = root.join("target").join("mutants").join(group.name);
        if !args.report {
            let mut cmd = Command::new("cargo");
            cmd.current_dir(root).args(["mutants", "--package", group.package]);
            cmd.args(["--profile", "mutants"]);
            for f in &files {
                cmd.args(["--file", f]);
            }
            if args.list {
                cmd.arg("--list");
                ok &= crate::run_command(&mut cmd);
                continue;
            }
            // The planted bugs (feature `planted-bugs`) are test-only code whose job is to be
            // wrong; the fast tests do not run them (the sweep does).
            cmd.args(["--exclude-re", "planted"]);
            // cargo-mutants makes `mutants.out` inside the directory, but not the directory.
            if let Err(e) = std::fs::create_dir_all(&out) {
                eprintln!("xtask mutants: cannot create {}: {e}", out.display());
                return false;
            }
            cmd.arg("--output").arg(&out);
            if let Some(shard) = &args.shard {
                cmd.args(["--shard", shard]);
            }
            cmd.arg("--").args(group.tests);
            // cargo-mutants exits 2 when some mutants were missed: that is a result, not a
            // failure to run, and the table below judges it.
            let _ = crate::run_command(&mut cmd);
        }
        match Scores::read(&out.join("mutants.out")) {
            Ok(scores) => ok &= scores.print(group.name, &files),
            Err(e) => {
                eprintln!("xtask mutants: no results for group {}: {e}", group.name);
                ok = false;
            }
        }
    }
    ok
}

fn ensure_cargo_mutants() -> bool {
    let have = Command::new("cargo").args(["mutants", "--version"]).output();
    if have.is_ok_and(|o| o.status.success()) {
        return true;
    }
    println!("xtask mutants: installing cargo-mutants");
    crate::run_command(Command::new("cargo").args(["install", "cargo-mutants", "--locked"]))
}

/// Outcome counts per file, read from cargo-mutants' lists.
#[derive(Default)]
struct Scores {
    /// file → (caught, missed, timeout, unviable)
    files: BTreeMap<String, [u32; 4]>,
    /// Every missed mutant, as cargo-mutants names it.
    missed: Vec<String>,
}

const LISTS: [&str; 4] = ["caught.txt", "missed.txt", "timeout.txt", "unviable.txt"];

impl Scores {
    fn read(dir: &Path) -> std::io::Result<Scores> {
        let mut s = Scores::default();
        for (i, list) in LISTS.iter().enumerate() {
            let text = std::fs::read_to_string(dir.join(list))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let file = line.split(':').next().unwrap_or(line).to_owned();
                s.files.entry(file).or_default()[i] += 1;
                if i == 1 {
                    s.missed.push(line.to_owned());
                }
            }
        }
        Ok(s)
    }

    /// Prints the table and the missed mutants; true if every file scored at least 90%.
    fn print(&self, group: &str, files: &[&str]) -> bool {
        println!("\nmutation score, group {group} (goal: 90% of viable mutants caught per file)");
        println!(
            "{:<36} {:>7} {:>7} {:>8} {:>9} {:>7}",
            "file", "caught", "missed", "timeout", "unviable", "score"
        );
        let mut ok = true;
        for file in files {
            let [caught, missed, timeout, unviable] =
                self.files.get(*file).copied().unwrap_or_default();
            let viable = caught + missed + timeout;
            let score = if viable == 0 {
                100.0
            } else {
                100.0 * f64::from(caught + timeout) / f64::from(viable)
            };
            ok &= score >= 90.0;
            println!("{file:<36} {caught:>7} {missed:>7} {timeout:>8} {unviable:>9} {score:>6.1}%");
        }
        if !self.missed.is_empty() {
            println!("missed mutants:");
            for m in &self.missed {
                println!("  {m}");
            }
        }
        ok
    }
}
