//! `kvcli`: the command-line client of the replicated key-value store. See `kvcli --help`;
//! the logic is `raftkv::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let status = raftkv::cli::main(std::env::args_os(), &mut stdout.lock(), &mut stderr.lock());
    ExitCode::from(status)
}
