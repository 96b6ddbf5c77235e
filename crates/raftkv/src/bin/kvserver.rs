//! `kvserver`: one replica of the replicated key-value store, as a process. See
//! `kvserver --help` and `docs/operations.md`; the logic is `raftkv::server`.

use std::process::ExitCode;

fn main() -> ExitCode {
    raftkv::server::main()
}
