//! Key-value histories saved to text and read back, and what a test does with a recorded
//! history: check it within a budget (`CHECK_BUDGET_MS`), say so in one line, and save it for
//! replay unless it is linearizable.
//!
//! # The file format
//!
//! One operation per line, seven fields separated by tabs: client, call, return, the
//! operation (`get`, `put`, `append` or `delete`), the key, the value written (empty for `get`
//! and `delete`), and the output (`-` for done, `=` followed by the value read). A backslash,
//! tab, newline or carriage return inside a key or value is written as `\\`, `\t`, `\n` or
//! `\r`. Lines that are empty or start with `#` are ignored. A return of
//! 18446744073709551615 (`u64::MAX`) is a write whose outcome is unknown.
//!
//! `cargo run -p raftkv-linearizability --example replay -- FILE [BUDGET_MS]` checks a saved file.

use std::fmt::{self, Display};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{KvInput, KvModel, KvOutput, Operation, Outcome, check};

/// A key-value operation, as histories hold them.
pub type KvOperation = Operation<KvInput, KvOutput>;

/// The environment variable that sets the checker's budget in the test harnesses, in
/// milliseconds. With `0` every check is inconclusive, so every test that checks a history
/// fails: that shows no verdict is ever assumed.
pub const BUDGET_ENV: &str = "CHECK_BUDGET_MS";

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('t') => '\t',
            Some('n') => '\n',
            Some('r') => '\r',
            other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        });
    }
    Ok(out)
}

/// `history` in the file format (see the module's description).
pub fn to_text(history: &[KvOperation]) -> String {
    let mut out = String::from("# client\tcall\treturn\top\tkey\tvalue\toutput\n");
    for op in history {
        let (name, key, value) = match &op.input {
            KvInput::Get { key } => ("get", key, ""),
            KvInput::Put { key, value } => ("put", key, value.as_str()),
            KvInput::Append { key, value } => ("append", key, value.as_str()),
            KvInput::Delete { key } => ("delete", key, ""),
        };
        out += &format!("{}\t{}\t{}\t{name}\t", op.client, op.call, op.ret);
        escape(key, &mut out);
        out.push('\t');
        escape(value, &mut out);
        out.push('\t');
        match &op.output {
            KvOutput::Done => out.push('-'),
            KvOutput::Value(v) => {
                out.push('=');
                escape(v, &mut out);
            }
        }
        out.push('\n');
    }
    out
}

/// Reads a history written by [`to_text`]; an error names the line and what is wrong with it.
pub fn from_text(text: &str) -> Result<Vec<KvOperation>, String> {
    let mut history = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let op = parse_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        history.push(op);
    }
    Ok(history)
}

fn parse_line(line: &str) -> Result<KvOperation, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [client, call, ret, name, key, value, output] = fields[..] else {
        return Err(format!("{} fields, expected 7", fields.len()));
    };
    let number = |what: &str, s: &str| {
        s.parse::<u64>().map_err(|e| format!("{what} {s:?} is not a number: {e}"))
    };
    let (client, call, ret) =
        (number("client", client)?, number("call", call)?, number("ret", ret)?);
    let (key, value) = (unescape(key)?, unescape(value)?);
    let input = match name {
        "get" => KvInput::Get { key },
        "put" => KvInput::Put { key, value },
        "append" => KvInput::Append { key, value },
        "delete" => KvInput::Delete { key },
        other => return Err(format!("unknown operation {other:?}")),
    };
    let output = match output.split_at_checked(1) {
        Some(("-", "")) => KvOutput::Done,
        Some(("=", v)) => KvOutput::Value(unescape(v)?),
        _ => return Err(format!("output {output:?} is neither - nor =VALUE")),
    };
    Ok(Operation { client, input, output, call, ret })
}

/// The checker's budget: [`BUDGET_ENV`] when it is set, `default` otherwise; an error if it is
/// set to something that is not a number of milliseconds.
pub fn budget(default: Duration) -> Result<Duration, String> {
    budget_from(std::env::var(BUDGET_ENV), default)
}

fn budget_from(
    var: Result<String, std::env::VarError>,
    default: Duration,
) -> Result<Duration, String> {
    match var {
        Ok(ms) => ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("{BUDGET_ENV}={ms:?} is not a number of milliseconds: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(format!("{BUDGET_ENV}: {e}")),
    }
}

/// One test's check of one history: what was checked, the verdict, how long it took, and
/// where the history was saved if the verdict was not [`Outcome::Linearizable`].
#[derive(Debug)]
pub struct TestCheck {
    /// What was checked (the test's name, say).
    pub name: String,
    /// How many operations the history held.
    pub ops: usize,
    /// The checker's verdict.
    pub outcome: Outcome,
    /// How long the check took.
    pub took: Duration,
    /// The budget it had.
    pub budget: Duration,
    /// Where the history was saved (only when it was not found linearizable), or why it
    /// could not be.
    pub saved: Option<Result<PathBuf, String>>,
}

impl TestCheck {
    /// Checks `history` within the budget ([`budget`] with `default_budget`), and unless it is
    /// linearizable saves it under `dir` (created if need be) for replay. A malformed
    /// [`BUDGET_ENV`] is reported as an inconclusive check that names the problem.
    pub fn run(name: &str, history: &[KvOperation], default_budget: Duration, dir: &Path) -> Self {
        TestCheck::run_with(name, history, budget(default_budget), dir)
    }

    /// As [`run`](TestCheck::run), with the budget given (an error is reported as an
    /// inconclusive check that names it).
    pub fn run_with(
        name: &str,
        history: &[KvOperation],
        budget: Result<Duration, String>,
        dir: &Path,
    ) -> Self {
        let (budget, bad_budget) = match budget {
            Ok(b) => (b, None),
            Err(e) => (Duration::ZERO, Some(e)),
        };
        let started = Instant::now();
        let outcome = check(&KvModel, history, budget);
        let took = started.elapsed();
        let saved = (outcome != Outcome::Linearizable).then(|| {
            let saved = save(name, history, dir);
            match bad_budget {
                Some(e) => Err(e),
                None => saved,
            }
        });
        TestCheck { name: name.to_owned(), ops: history.len(), outcome, took, budget, saved }
    }

    /// `Ok` if the history is linearizable; otherwise the message a failing test shows: the
    /// verdict (with the checker's explanation of a violation) and where the history is.
    pub fn verdict(&self) -> Result<(), String> {
        let why = match &self.outcome {
            Outcome::Linearizable => return Ok(()),
            Outcome::Unknown => format!(
                "the linearizability check of {} was inconclusive: {} operations not decided \
                 within {:?} ({BUDGET_ENV})",
                self.name, self.ops, self.budget
            ),
            Outcome::Violation(why) => format!("history of {} is {why}", self.name),
        };
        let place = match &self.saved {
            Some(Ok(path)) => format!(
                "history saved to {} (replay: cargo run -p raftkv-linearizability \
                 --example replay -- {})",
                path.display(),
                path.display()
            ),
            Some(Err(e)) => format!("history not saved: {e}"),
            None => String::new(),
        };
        Err(format!("{why}\n{place}"))
    }
}

impl Display for TestCheck {
    /// The one line a test prints: operations checked, verdict, time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.outcome {
            Outcome::Linearizable => "Linearizable",
            Outcome::Violation(_) => "Violation",
            Outcome::Unknown => "Unknown",
        };
        write!(
            f,
            "history check: {}: {} operations, {verdict}, in {:.1?} (budget {:?})",
            self.name, self.ops, self.took, self.budget
        )
    }
}

/// Writes `history` to a new file under `dir` named after `name`; returns its path.
fn save(name: &str, history: &[KvOperation], dir: &Path) -> Result<PathBuf, String> {
    static SAVED: AtomicU64 = AtomicU64::new(0);
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let n = SAVED.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{clean}-{}-{n}.history", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, to_text(history)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::QuickCheck;

    fn op(input: KvInput, output: KvOutput, ret: u64) -> KvOperation {
        Operation { client: 3, input, output, call: 7, ret }
    }

    #[test]
    fn a_history_survives_the_round_trip_whatever_its_strings_hold() {
        fn property(key: String, value: String, read: String) -> bool {
            let history = vec![
                op(KvInput::Put { key: key.clone(), value: value.clone() }, KvOutput::Done, 9),
                op(KvInput::Append { key: key.clone(), value }, KvOutput::Done, u64::MAX),
                op(KvInput::Get { key: key.clone() }, KvOutput::Value(read), 8),
                op(KvInput::Delete { key }, KvOutput::Done, 10),
            ];
            from_text(&to_text(&history)) == Ok(history)
        }
        QuickCheck::new().tests(500).quickcheck(property as fn(String, String, String) -> bool);
        let tricky = "a\\tb\tc\n\r\\";
        let h = vec![op(KvInput::Get { key: tricky.into() }, KvOutput::Value("=\t".into()), 8)];
        assert_eq!(from_text(&to_text(&h)), Ok(h));
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_line() {
        for (text, wanted) in [
            ("1\t2\t3\tget\tk\t\t=v\n1\t2\n", "line 2: 2 fields"),
            ("x\t2\t3\tget\tk\t\t=v", "line 1: client \"x\""),
            ("1\t2\t3\tscan\tk\t\t=v", "unknown operation"),
            ("1\t2\t3\tget\tk\t\tv", "neither - nor"),
            ("1\t2\t3\tget\tk\\q\t\t=v", "unknown escape \\q"),
            ("1\t2\t3\tget\tk\\\t\t=v", "unknown escape"),
        ] {
            let e = from_text(text).expect_err(text);
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
        assert_eq!(from_text("# comment\n\n"), Ok(Vec::new()));
    }

    #[test]
    fn the_budget_comes_from_the_environment_when_set() {
        let default = Duration::from_secs(3);
        assert_eq!(budget_from(Err(std::env::VarError::NotPresent), default), Ok(default));
        assert_eq!(budget_from(Ok("0".into()), default), Ok(Duration::ZERO));
        assert_eq!(budget_from(Ok(" 250 ".into()), default), Ok(Duration::from_millis(250)));
        assert!(budget_from(Ok("soon".into()), default).unwrap_err().contains(BUDGET_ENV));
    }

    #[test]
    fn an_inconclusive_or_failed_check_saves_the_history_and_says_where() {
        let dir = std::env::temp_dir().join(format!("lin-saved-{}", std::process::id()));
        let history = vec![
            op(KvInput::Put { key: "k".into(), value: "v".into() }, KvOutput::Done, 8),
            op(KvInput::Get { key: "k".into() }, KvOutput::Value("v".into()), 9),
        ];
        let ok = TestCheck::run_with("t/ok", &history, Ok(Duration::from_secs(5)), &dir);
        assert_eq!(ok.outcome, Outcome::Linearizable);
        assert!(ok.verdict().is_ok() && ok.saved.is_none());
        let line = ok.to_string();
        assert!(line.contains("t/ok: 2 operations, Linearizable, in "), "{line}");

        let unknown = TestCheck::run_with("t/zero", &history, Ok(Duration::ZERO), &dir);
        assert_eq!(unknown.outcome, Outcome::Unknown);
        let message = unknown.verdict().unwrap_err();
        assert!(message.contains("inconclusive") && message.contains(BUDGET_ENV), "{message}");
        let Some(Ok(path)) = &unknown.saved else { panic!("not saved: {unknown:?}") };
        assert!(message.contains(&path.display().to_string()), "{message}");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(from_text(&text), Ok(history.clone()));

        let mut stale = history.clone();
        stale[1].output = KvOutput::Value("w".into());
        let bad = TestCheck::run_with("t/bad", &stale, Ok(Duration::from_secs(5)), &dir);
        assert!(bad.verdict().unwrap_err().contains("not linearizable"));
        assert!(matches!(bad.saved, Some(Ok(_))));

        let garbled = TestCheck::run_with("t/env", &history, Err("bad budget".into()), &dir);
        assert_eq!(garbled.outcome, Outcome::Unknown);
        assert!(garbled.verdict().unwrap_err().contains("bad budget"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
