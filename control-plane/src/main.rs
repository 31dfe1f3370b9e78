//! The `nudge-control-plane` binary: reads settings, sets up logging, binds,
//! turns SIGTERM/SIGINT into a cancellation, and hands over to
//! [`nudge_control_plane::run`].

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nudge_control_plane::config::{Command, DevCertsArgs};
use nudge_control_plane::storage::StorageError;
use nudge_control_plane::{Config, Listeners, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc. Every ingested event is decoded,
/// compressed, then decompressed and parsed again by the engine and the
/// analytics, each a few dozen short-lived allocations on whichever
/// thread runs it;
/// with glibc's allocator malloc and free were over a quarter of the
/// control plane's CPU during ingest (`perf record`; README, storage
/// benchmark). The options are the workspace's (`.cargo/config.toml`):
/// freed pages go back to the system after a second.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// EX_USAGE from sysexits.h: the operator has to fix a setting.
const EX_USAGE: u8 = 64;

/// How long a drain may take after SIGTERM before the process gives up; well
/// under Kubernetes' default 30 s grace period.
const DRAIN_GRACE: Duration = Duration::from_secs(25);

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => {
            let usage = error.use_stderr();
            // --help and --version are not errors.
            let _ = error.print();
            return if usage {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match &config.command {
        Some(Command::DevCerts(args)) => return dev_certs(args),
        Some(Command::Openapi) => {
            print!("{}", nudge_control_plane::http::openapi::document());
            return ExitCode::SUCCESS;
        }
        Some(Command::Migrate) | None => {}
    }
    if let Err(error) = config.validate() {
        eprintln!("error: {error}");
        return ExitCode::from(EX_USAGE);
    }
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = if matches!(config.command, Some(Command::Migrate)) {
        runtime.block_on(migrate(&config))
    } else {
        runtime.block_on(serve(config))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = report(&error), "control plane failed");
            // A bad engine config file or TLS file, or a database that
            // cannot be reached, is a usage error, like a bad flag.
            match error.downcast_ref::<nudge_control_plane::Error>() {
                Some(
                    nudge_control_plane::Error::EngineConfig(_)
                    | nudge_control_plane::Error::Tls(_)
                    | nudge_control_plane::Error::Storage(
                        StorageError::Connect { .. }
                        | StorageError::InUse { .. }
                        | StorageError::OldLayout { .. },
                    ),
                ) => ExitCode::from(EX_USAGE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `nudge-control-plane dev-certs`: writes a development CA and
/// certificates and says how to use them.
fn dev_certs(args: &DevCertsArgs) -> ExitCode {
    match nudge_tls::dev::write_dev_certs(&args.out, &args.server_names, &args.agent_name) {
        Ok(paths) => {
            for path in &paths {
                println!("wrote {}", path.display());
            }
            let dir = args.out.display();
            println!(
                "\ncontrol plane: NUDGE_CP_TLS_CERT={dir}/server.pem NUDGE_CP_TLS_KEY={dir}/server-key.pem NUDGE_CP_TLS_CLIENT_CA={dir}/ca.pem\n\
                 agent:         NUDGE_AGENT_CONTROL_PLANE=https://{}:50051 NUDGE_AGENT_TLS_CA={dir}/ca.pem NUDGE_AGENT_TLS_CERT={dir}/agent.pem NUDGE_AGENT_TLS_KEY={dir}/agent-key.pem",
                args.server_names
                    .first()
                    .map_or("localhost", String::as_str)
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `nudge-control-plane migrate`: brings the database's schema up to this
/// build's and exits.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let version = nudge_control_plane::migrate(config).await?;
    tracing::info!(schema_version = version, "database migrated");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let run = nudge_control_plane::run(config, listeners, shutdown.clone());
    tokio::pin!(run);
    let result = tokio::select! {
        result = &mut run => result.context("control plane stopped with an error"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_GRACE).await } => {
            anyhow::bail!("drain did not finish within {DRAIN_GRACE:?}")
        }
    };
    signals.abort();
    result
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
        () = terminate => tracing::info!("SIGTERM received, draining"),
    }
    shutdown.cancel();
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only for a terminal: escape codes garble log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The error and its causes on one line, each said once. Most of this
/// crate's errors already put their source in their own message
/// (`storage: {0}`), so anyhow's `{:#}`, which appends every source, said
/// the same thing twice; a cause whose text is already on the line is
/// skipped.
fn report(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("{file}: unknown variant `nope`")]
        struct Parse {
            file: &'static str,
        }
        #[derive(Debug, thiserror::Error)]
        enum Outer {
            /// Repeats its source in its message, as this crate's errors do.
            #[error("NUDGE_CP_CONFIG: {0}")]
            Repeats(#[from] Parse),
        }
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open")]
        struct Plain(#[source] std::io::Error);

        let error = anyhow::Error::from(Outer::from(Parse {
            file: "engine.toml",
        }))
        .context("control plane stopped with an error");
        assert_eq!(
            report(&error),
            "control plane stopped with an error: NUDGE_CP_CONFIG: engine.toml: unknown variant `nope`"
        );
        let error = anyhow::Error::from(Plain(std::io::Error::other("disk full")));
        assert_eq!(report(&error), "cannot open: disk full");
    }
}
