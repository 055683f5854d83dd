//! Logging: `tracing` set up from `-q`/`-v` (or `CUSTODY_LOG`), to stderr
//! or `--log-file` (0640), as escaped human lines or JSON.

use super::{Failure, Global, render};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Timestamped text lines.
    Human,
    /// One JSON object per line: timestamp, level, target, message and
    /// the event's fields at the top level.
    Json,
}

/// Sets up `tracing`: level from -q/-v (or `CUSTODY_LOG`), progress lines
/// unless -q, to stderr or `--log-file`, as text or JSON.
pub(super) fn init_logging(g: &Global) -> Result<(), Failure> {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let progress = if g.quiet {
        ""
    } else {
        ",custody::progress=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("custody={level}{progress}"))
    });
    let (writer, ansi) = match &g.log_file {
        Some(path) => {
            let file = open_log(path)
                .map_err(|e| Failure::usage(anyhow::anyhow!("log file {}: {e}", path.display())))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match g.log_format {
        // Human lines escape control characters (JSON escapes them itself).
        LogFormat::Human => builder
            .with_writer(render::Escaping::new(writer, ansi))
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .init(),
    }
    Ok(())
}

/// Opens a log file for appending, creating it readable by owner and
/// group only (log lines name files).
fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}
