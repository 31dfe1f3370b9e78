//! `nudge-bench`: prints throughput, latency, RSS and disk figures of
//! `nudge-agent` and `nudge-control-plane`; see [`nudge_e2e::bench`] for
//! what it runs and `--help` for its options.
//!
//! ```text
//! cargo build --release --bins && cargo run --release -p nudge-e2e --bin nudge-bench
//! cargo run --release -p nudge-e2e --bin nudge-bench -- --quick --json
//! ```

use std::process::ExitCode;

use nudge_e2e::bench;

fn main() -> ExitCode {
    let options = match bench::options::parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("nudge-bench: {error}");
            return ExitCode::from(64);
        }
    };
    // The load generator's runtime; the baseline server has its own.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(bench::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nudge-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
