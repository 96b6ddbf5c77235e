//! Checks a history saved by a test (`linearizability::saved`): prints the operations
//! checked, the verdict and the time, and the checker's explanation of a violation.
//!
//! `cargo run -p raftkv-linearizability --example replay -- FILE [BUDGET_MS]` (default budget:
//! 60 s).
//! Exits with 0 for linearizable, 1 for a violation, 2 for inconclusive, 3 for bad input.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use linearizability::{KvModel, Outcome, check, saved};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, budget) = match &args[..] {
        [path] => (path, Ok(60_000)),
        [path, ms] => (path, ms.parse::<u64>()),
        _ => {
            eprintln!("usage: replay FILE [BUDGET_MS]");
            return ExitCode::from(3);
        }
    };
    let Ok(budget) = budget.map(Duration::from_millis) else {
        eprintln!("replay: the budget must be a number of milliseconds");
        return ExitCode::from(3);
    };
    let history = match std::fs::read_to_string(path).map_err(|e| e.to_string()) {
        Ok(text) => saved::from_text(&text),
        Err(e) => Err(e),
    };
    let history = match history {
        Ok(h) => h,
        Err(e) => {
            eprintln!("replay: {path}: {e}");
            return ExitCode::from(3);
        }
    };
    let started = Instant::now();
    let outcome = check(&KvModel, &history, budget);
    let took = started.elapsed();
    let (verdict, code) = match &outcome {
        Outcome::Linearizable => ("Linearizable", 0),
        Outcome::Violation(_) => ("Violation", 1),
        Outcome::Unknown => ("Unknown", 2),
    };
    println!("{path}: {} operations, {verdict}, in {took:.1?} (budget {budget:?})", history.len());
    if let Outcome::Violation(why) = outcome {
        println!("{why}");
    }
    ExitCode::from(code)
}
