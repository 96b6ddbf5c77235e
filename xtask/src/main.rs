//! `cargo xtask`: the project's automation, written in Rust so it runs wherever cargo does.
//!
//! * `cargo xtask test-all` runs every check CI runs: formatting, tidy rules (the layers of
//!   the crates among them), clippy with warnings denied on every target, rustdoc with
//!   warnings denied, `cargo package` of every publishable crate, every test and doc test of
//!   the workspace (several test binaries at once, the KV suites on both state machines: see
//!   [`testrun`]), every crate's example, and `cluster --smoke` on the debug server the tests
//!   have just built (a few seconds). It prints a summary line per step with its time and
//!   exits non-zero if any step failed. Nothing is skipped silently: a test or step whose
//!   tool is missing (redis-server, redis-cli) fails, unless an environment variable says to
//!   skip it
//!   (`RAFTKV_SKIP_REDIS_SERVER=1`, `RAFTKV_SKIP_REDIS_CLI=1`); every skipped test and step is
//!   then listed by name in the summary. (Tests record their skips as files in
//!   `$RAFTKV_SKIPPED_DIR`, which test-all sets.)
//! * `cargo xtask coverage` measures line coverage per crate with cargo-tarpaulin (installing it
//!   if needed) and prints a table.
//! * `cargo xtask cluster` builds the server and runs a local cluster of `kvserver` processes
//!   until Ctrl-C; `--smoke` checks one write and one read through it with `redis-cli` (a step
//!   of `test-all`; without redis-cli it fails, or is skipped with `RAFTKV_SKIP_REDIS_CLI=1`).
//!   See [`cluster`].
//! * `cargo xtask fuzz [--seconds N] [--target NAME]` runs the cargo-fuzz targets (nightly and
//!   cargo-fuzz needed) N seconds each and prints the executions per target; it exits non-zero
//!   on a crash, naming the input. Not part of `test-all`, which replays the committed corpora
//!   on stable. See [`fuzz`] and `docs/fuzzing.md`.
//! * `cargo xtask mutants [--group raft|lsm] [--file SUFFIX]` runs cargo-mutants over the Raft
//!   core and the LSM's pure parts with their fast tests and prints the score per file. Slow;
//!   not part of `test-all`. See [`mutants`].
//!
//! Long and randomized runs hang on three flags that `test-all` passes to the tests through the
//! environment: `--seeds N` (`TEST_SEEDS`), `--long` (`TEST_LONG=1`, plus the tests marked
//! `#[ignore]`) and `--repeat N` (the test step N times).

mod cluster;
mod coverage;
mod fuzz;
mod mutants;
mod pki;
mod testrun;
mod tidy;

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Project automation for the raftkv workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every check CI runs: fmt, tidy, clippy (-D warnings), rustdoc (-D warnings), all tests,
    /// and a smoke test of a real three-process cluster (it needs redis-cli).
    ///
    /// Prints one summary line per step with its wall time, then every skipped test by name;
    /// exits non-zero if any step failed.
    /// Later steps still run after a failure, so one run shows every problem.
    TestAll(TestAllArgs),
    /// Measure line coverage per crate with cargo-tarpaulin and print it as a table.
    ///
    /// Installs cargo-tarpaulin with `cargo install` if it is missing. Not part of test-all.
    /// Exits non-zero if a crate with code falls below the threshold.
    Coverage(coverage::Args),
    /// Run only the tidy checks (module docs, banned calls, stray debugging macros).
    Tidy,
    /// Build the server (release) and run a local cluster of kvserver processes until Ctrl-C.
    ///
    /// Prints where the data and logs are and how to connect (redis-cli, redis-benchmark);
    /// on Ctrl-C sends SIGTERM to every node and reports how each exited. With --smoke, writes
    /// a key through one node, reads it through another, stops, and exits 0 or 1.
    Cluster(cluster::Args),
    /// Run each cargo-fuzz target (nightly + cargo-fuzz) for --seconds and report executions.
    ///
    /// Exits non-zero on a crash, naming the input libFuzzer wrote. See docs/fuzzing.md.
    Fuzz(fuzz::Args),
    /// Mutation testing of the Raft core and the LSM's pure parts with cargo-mutants.
    ///
    /// Installs cargo-mutants if missing; runs each group's fast tests against every mutant
    /// and prints the score per file (goal 90%) and the missed mutants. Slow: hours for
    /// everything; choose with --group and --file. Not part of test-all.
    Mutants(mutants::Args),
}

#[derive(clap::Args)]
struct TestAllArgs {
    /// Number of seeds for randomized and simulation tests (exported as TEST_SEEDS).
    /// Without it each such test runs its own small default.
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// Run the test step N times (catches flaky tests; each run draws fresh random seeds).
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// Also run long soak tests: those marked `#[ignore]`, with TEST_LONG=1 exported.
    #[arg(long)]
    long: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.command {
        Cmd::TestAll(args) => test_all(&args),
        Cmd::Coverage(args) => coverage::run(&args),
        Cmd::Tidy => tidy::run(&workspace_root()).is_ok(),
        Cmd::Cluster(args) => cluster::run(&args) != Outcome::Failed,
        Cmd::Fuzz(args) => fuzz::run(&args, &workspace_root()),
        Cmd::Mutants(args) => mutants::run(&args, &workspace_root()),
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The workspace root: xtask's own manifest lives one level below it.
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("xtask lives inside the workspace").to_path_buf()
}

/// How a step (or a command) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    /// It could not run here (a tool is missing) and an environment variable said to skip it;
    /// it says why, does not fail the run, and is listed in the summary.
    Skipped,
}

impl From<bool> for Outcome {
    fn from(ok: bool) -> Outcome {
        if ok { Outcome::Ok } else { Outcome::Failed }
    }
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One step's outcome, for the summary.
struct StepResult {
    name: String,
    outcome: Outcome,
    took: Duration,
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`, echoing it first; true if it exited successfully.
fn run_command(cmd: &mut Command) -> bool {
    let shown: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    println!("$ {}", shown.join(" "));
    match cmd.status() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("xtask: cannot run {}: {e}", shown[0]);
            false
        }
    }
}

/// The examples `test-all` runs, (package, example): one per library crate, each short and
/// each checking its own result. (`linearizability`'s `replay` reads a history a failing test
/// saved, so it is built by clippy but not run here.)
const EXAMPLES: &[(&str, &str)] = &[
    ("raftkv-labrpc", "demo"),
    ("raftkv-raft", "three_nodes"),
    ("raftkv-lsm", "crash"),
    ("raftkv-linearizability", "stale_read"),
    ("raftkv-kvclient", "clerk"),
    ("raftkv-kvserver", "cluster"),
];

fn test_all(args: &TestAllArgs) -> bool {
    let started = Instant::now();
    let mut results = Vec::new();
    let mut step = |name: &str, work: &mut dyn FnMut() -> Outcome| {
        println!("\n==> {name}");
        let t = Instant::now();
        let outcome = work();
        let took = t.elapsed();
        println!("<== {name}: {} in {:.1}s", outcome.label(), took.as_secs_f64());
        results.push(StepResult { name: name.to_owned(), outcome, took });
    };

    step("fmt", &mut || run_command(cargo().args(["fmt", "--all", "--", "--check"])).into());
    step("tidy", &mut || tidy::run(&workspace_root()).is_ok().into());
    step("clippy", &mut || {
        run_command(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
        .into()
    });
    step("doc", &mut || {
        run_command(
            cargo()
                .args(["doc", "--workspace", "--no-deps", "--locked"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
        .into()
    });
    step("package", &mut || {
        // Every publishable crate must package and build from its package alone (what
        // crates.io would get); the workspace's own crates resolve to each other's packages.
        let mut cmd = cargo();
        cmd.args(["package", "--workspace", "--locked", "--allow-dirty"]);
        match unpublished_packages(&workspace_root()) {
            Ok(names) => {
                for name in names {
                    cmd.args(["--exclude", &name]);
                }
            }
            Err(e) => {
                eprintln!("xtask: {e}");
                return Outcome::Failed;
            }
        }
        run_command(&mut cmd).into()
    });
    // Tests that skip (a tool missing, and its RAFTKV_SKIP_* variable set) leave a file here,
    // named after the test and holding the reason.
    let skipped_dir = workspace_root().join("target").join("test-all-skipped");
    let _ = std::fs::remove_dir_all(&skipped_dir);
    if let Err(e) = std::fs::create_dir_all(&skipped_dir) {
        eprintln!("xtask: cannot create {}: {e}", skipped_dir.display());
        return false;
    }
    for round in 1..=args.repeat {
        let name = if args.repeat > 1 {
            format!("test (run {round}/{})", args.repeat)
        } else {
            "test".into()
        };
        step(&name, &mut || {
            let options = testrun::RunOptions {
                seeds: args.seeds,
                long: args.long,
                skipped_dir: &skipped_dir,
            };
            testrun::run(&options).into()
        });
    }
    step("examples", &mut || {
        let mut ok = true;
        for (package, example) in EXAMPLES {
            ok &= run_command(cargo().args([
                "run",
                "--locked",
                "-q",
                "-p",
                package,
                "--example",
                example,
            ]));
        }
        ok.into()
    });
    // After the tests, which have compiled most of the debug server already.
    step("cluster smoke", &mut || cluster::run(&cluster::Args::smoke_for_test_all()));

    println!("\ntest-all summary:");
    for r in &results {
        println!("  {:<7} {:<20} {:>7.1}s", r.outcome.label(), r.name, r.took.as_secs_f64());
    }
    let skipped = skipped_tests(&skipped_dir);
    if !skipped.is_empty() {
        println!("skipped tests:");
        for (name, reason) in &skipped {
            println!("  skipped {name}: {reason}");
        }
    }
    let failed = results.iter().filter(|r| r.outcome == Outcome::Failed).count();
    let skipped_steps = results.iter().filter(|r| r.outcome == Outcome::Skipped).count();
    println!(
        "test-all: {} steps, {failed} failed, {skipped_steps} skipped; {} tests skipped; \
         {:.1}s in all",
        results.len(),
        skipped.len(),
        started.elapsed().as_secs_f64()
    );
    failed == 0
}

/// The workspace members marked `publish = false`, by package name.
fn unpublished_packages(root: &std::path::Path) -> Result<Vec<String>, String> {
    let mut manifests = vec![
        root.join("xtask/Cargo.toml"),
        root.join("benches/Cargo.toml"),
        root.join("fuzz/targets/Cargo.toml"),
    ];
    let crates = std::fs::read_dir(root.join("crates")).map_err(|e| format!("crates/: {e}"))?;
    manifests.extend(crates.flatten().map(|e| e.path().join("Cargo.toml")).filter(|p| p.is_file()));
    let mut names = Vec::new();
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| format!("{}: {e}", manifest.display()))?;
        if let Some(name) = unpublished_name(&text) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A key of a manifest's `[package]` section, unquoted (`name`, `publish`, ...).
fn package_key(manifest: &str, wanted: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == wanted
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// The package name of a manifest whose `[package]` says `publish = false`.
fn unpublished_name(manifest: &str) -> Option<String> {
    let unpublished = package_key(manifest, "publish").is_some_and(|p| p == "false");
    if unpublished { package_key(manifest, "name") } else { None }
}

/// The tests that recorded a skip in `dir`: (test name, reason), sorted by name.
fn skipped_tests(dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut skipped: Vec<(String, String)> = entries
        .flatten()
        .map(|e| {
            let reason = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), reason.trim().to_owned())
        })
        .collect();
    skipped.sort();
    skipped
}

#[cfg(test)]
mod tests {
    use super::{skipped_tests, unpublished_name, unpublished_packages, workspace_root};

    #[test]
    fn unpublished_packages_are_found_by_their_publish_key() {
        let internal = "[package]\nname = \"t\"\npublish = false\n[dependencies]\nx = \"1\"\n";
        assert_eq!(unpublished_name(internal).as_deref(), Some("t"));
        assert_eq!(unpublished_name("[package]\nname = \"p\"\n"), None);
        let elsewhere = "[package]\nname = \"p\"\n[other]\npublish = false\n";
        assert_eq!(unpublished_name(elsewhere), None, "only [package] counts");
        let names = unpublished_packages(&workspace_root()).unwrap();
        assert_eq!(names, ["benches", "fuzz-targets", "testkit", "xtask"]);
    }

    #[test]
    fn skipped_tests_are_listed_by_name_with_their_reason() {
        let dir = std::env::temp_dir().join(format!("xtask-skipped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b::t2"), "redis-cli cannot run\n").unwrap();
        std::fs::write(dir.join("a::t1"), "redis-server cannot run\n").unwrap();
        let listed = skipped_tests(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            listed,
            vec![
                ("a::t1".to_owned(), "redis-server cannot run".to_owned()),
                ("b::t2".to_owned(), "redis-cli cannot run".to_owned()),
            ]
        );
        assert!(skipped_tests(&dir).is_empty(), "a missing directory lists nothing");
    }
}
