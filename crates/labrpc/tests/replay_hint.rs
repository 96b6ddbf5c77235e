//! A failing test that owns a network prints the seed that replays it.
//!
//! The check runs this test binary again as a child process, selecting a helper test that fails
//! on purpose, and reads what the child printed.

use std::process::Command;
use std::time::Duration;

use labrpc::{ClockMode, Network};

const RUN_HELPER: &str = "LABRPC_RUN_FAILING_HELPER";

#[test]
#[ignore = "helper that fails on purpose; run by failing_test_prints_its_seed"]
fn deliberately_failing_simulation() {
    if std::env::var_os(RUN_HELPER).is_none() {
        return; // Selected by --include-ignored, not by the check: nothing to do.
    }
    let net = Network::new(ClockMode::Virtual);
    net.sleep(Duration::from_secs(1));
    let value = net.random_below(10);
    assert!(value > 100, "deliberate failure (drew {value})");
}

#[test]
fn failing_test_prints_its_seed() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "deliberately_failing_simulation", "--nocapture"])
        .env(RUN_HELPER, "1")
        .env(labrpc::SEED_ENV, "4242")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the helper was meant to fail:\n{stderr}");
    assert!(stderr.contains("deliberate failure"), "{stderr}");
    assert!(
        stderr
            .contains("the failing test used seed 4242 (Virtual); replay it with LABRPC_SEED=4242"),
        "no replay hint in:\n{stderr}"
    );
}

#[test]
fn seed_env_is_used() {
    // This process may or may not have LABRPC_SEED set; a child makes the check independent.
    if std::env::var_os("LABRPC_SEED_ENV_CHILD").is_some() {
        assert_eq!(Network::new(ClockMode::Virtual).seed(), 99);
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "seed_env_is_used"])
        .env("LABRPC_SEED_ENV_CHILD", "1")
        .env(labrpc::SEED_ENV, " 99 ")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn bad_seed_env_is_refused() {
    if std::env::var_os("LABRPC_BAD_SEED_CHILD").is_some() {
        let _ = Network::new(ClockMode::Virtual);
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "bad_seed_env_is_refused", "--nocapture"])
        .env("LABRPC_BAD_SEED_CHILD", "1")
        .env(labrpc::SEED_ENV, "seven")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(r#"LABRPC_SEED="seven" is not a seed"#), "{stderr}");
}
