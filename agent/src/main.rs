//! The `nudge-agent` binary: reads the configuration, sets up logging and
//! signals, and runs the library. Exit codes: 0 after a clean shutdown, 64
//! for a bad setting, 1 for a failure at run time.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use nudge_agent::config::{Config, LogFormat};

const EX_USAGE: u8 = 64;

/// jemalloc instead of glibc's malloc (issue 14). Every intake call
/// allocates and frees a few dozen small objects on whichever thread runs
/// it; glibc's allocator took about a fifth of the agent's CPU at 64
/// concurrent clients (`perf record`), and it keeps freed memory in
/// per-thread arenas. Same-run figures are in the README's agent benchmark.
///
/// Its options are compiled in from `.cargo/config.toml`
/// (`JEMALLOC_SYS_WITH_MALLOC_CONF`, which says why) because this crate
/// forbids `unsafe` and exporting jemalloc's `malloc_conf` symbol needs it;
/// `_RJEM_MALLOC_CONF` in the environment overrides them at run time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(EX_USAGE);
        }
        Err(help_or_version) => {
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Err(invalid) = config.validate() {
        eprintln!("error: {invalid}");
        return ExitCode::from(EX_USAGE);
    }
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("error: {error}");
            // A TLS file or token that cannot be used is a setting to fix.
            match error.downcast_ref::<nudge_agent::Error>() {
                Some(nudge_agent::Error::Tls(_) | nudge_agent::Error::Token(_)) => {
                    ExitCode::from(EX_USAGE)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = nudge_agent::Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    nudge_agent::run(config, listeners, shutdown).await?;
    Ok(())
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal) starts a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; shutdown only by SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
