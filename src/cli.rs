//! The face: flags, commands, rendering and exit codes.
//!
//! Flags are parsed by clap into [`Cli`]; each command module turns them
//! into engine options, runs the engine, and renders the result (human text,
//! or one JSON object with `--json`). Errors become one line naming what and
//! where, a hint line, and a documented exit code.

// Every human line the face prints goes through `render::print_line`,
// which escapes control characters: a file name holding a newline or an
// escape sequence must not forge a line ("verified: 999 of 999 files
// match") or drive the terminal. One `println!` is one line; a command that
// wants two lines prints twice.
macro_rules! println {
    () => {
        $crate::cli::render::print_line(false, format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::render::print_line(false, format_args!($($arg)*))
    };
}
macro_rules! eprintln {
    () => {
        $crate::cli::render::print_line(true, format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::render::print_line(true, format_args!($($arg)*))
    };
}

mod audit;
mod databox;
mod decrypt;
mod demo;
mod generate;
mod handoff;
mod keygen;
mod ledger;
mod plan;
mod render;
mod report;
mod rollback;
mod scan;
mod transfer;
mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (documented in README.md and `custody --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// Integrity failure: verify or audit found a discrepancy or a bad signature.
    Integrity = 1,
    /// Usage or configuration error; nothing moved.
    Usage = 2,
    /// Incomplete transfer; rerunning the same command resumes.
    Incomplete = 3,
    /// Not now, nothing wrong: paused at a window's end or a limit, started
    /// outside its window, or another transfer holds this ledger and
    /// destination; running the same command later resumes.
    NotNow = 4,
}

/// A command failure: the error, its exit code, and what to do next.
pub struct Failure {
    code: Code,
    error: anyhow::Error,
    hint: Option<String>,
}

impl Failure {
    fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
            hint: None,
        }
    }
    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::Usage, error)
    }
    /// An integrity failure (exit 1).
    pub fn integrity(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::Integrity, error)
    }
    /// An incomplete run (exit 3).
    pub fn incomplete(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::Incomplete, error)
    }
    /// Not now (exit 4): outside the window, or another run holds the
    /// destination.
    pub fn not_now(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::NotNow, error)
    }
    /// Adds the line telling the user what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What a command returns.
pub type Outcome = Result<Code, Failure>;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  integrity failure (verify or audit found a discrepancy or a bad signature; rollback left something)
  2  usage or configuration error (nothing moved)
  3  incomplete transfer (some files failed; rerun the same command to resume)
  4  not now: paused at a window's end or a limit, outside the window, or another transfer
     holds this ledger and destination (run the same command later; it resumes)

Example:
  custody keygen --out ~/.custody --identity ops@hospital.example
  custody transfer /pacs /mnt/databox/acme_BlockBlob/pacs --signing-key ~/.custody/custody_ed25519
  custody verify manifests/<id>.json /mnt/databox/acme_BlockBlob/pacs --allowed-signers ~/.custody/allowed_signers";

/// Chain-of-custody bulk transfer: copy a tree while hashing it, seal a
/// signed manifest in a SQLite ledger, and verify the landed copy.
#[derive(Debug, Parser)]
#[command(name = "custody", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// The SQLite ledger file.
    #[arg(
        long,
        global = true,
        env = "CUSTODY_LEDGER",
        default_value = "custody.db"
    )]
    pub ledger: PathBuf,
    /// Where sealed manifests (`<id>.json`, `<id>.json.sig`) are written.
    #[arg(long, global = true, default_value = "manifests")]
    pub manifest_dir: PathBuf,
    /// Print one machine-readable JSON result object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log lines as `human` text or `json` (one object per line, for log
    /// shippers).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "CUSTODY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Append log lines to this file (created 0640) instead of stderr.
    /// Errors and notices still go to stderr too, for cron's mail.
    #[arg(long, global = true, value_name = "FILE", env = "CUSTODY_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// When not drawing bars on a terminal: log a one-line progress
    /// summary this often (files, bytes, rate, ETA, errors).
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "1m",
        value_parser = duration
    )]
    pub progress_interval: std::time::Duration,
    /// Blob endpoints: also trust these CA certificates (PEM), e.g. a Data
    /// Box's own certificate. SSL_CERT_FILE works too.
    #[arg(long, global = true, value_name = "FILE", env = "CUSTODY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Transfer(transfer::Args),
    Verify(verify::Args),
    Audit(audit::Args),
    Decrypt(decrypt::Args),
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    Log(ledger::LogArgs),
    Handoff(handoff::Args),
    Demo(demo::Args),
    Scan(scan::Args),
    #[command(subcommand)]
    Databox(databox::DataboxCommand),
    Plan(plan::PlanArgs),
    Run(plan::RunArgs),
    Rollback(rollback::Args),
    Report(report::Args),
    Completions(generate::Args),
    Manpage(generate::ManArgs),
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Timestamped text lines.
    Human,
    /// One JSON object per line: timestamp, level, target, message and
    /// the event's fields at the top level.
    Json,
}

/// A duration: "90m", "6h", "1h 30m", or ISO 8601 "PT1H30M".
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    std::time::Duration::try_from(d).map_err(|_| "must not be negative".to_owned())
}

/// Sets up `tracing`: level from -q/-v (or `CUSTODY_LOG`), progress lines
/// unless -q, to stderr or `--log-file`, as text or JSON.
fn init_logging(g: &Global) -> Result<(), Failure> {
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

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    // Everything custody writes (ledgers, manifests, reports, exports,
    // restored plaintext, locks) names patient files or holds their bytes:
    // never readable by others, never writable by the group, whatever the
    // caller's umask (docs/SECURITY.md).
    let inherited = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o027));
    rustix::process::umask(inherited | rustix::fs::Mode::from_raw_mode(0o027));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A script that asked for JSON gets it, even for bad flags.
            let usage = e.use_stderr() && std::env::args().any(|a| a == "--json");
            if usage {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                print_error_json(Code::Usage, first, None);
            }
            e.exit();
        }
    };
    let g = &cli.global;
    let outcome = init_logging(g).and_then(|()| match &cli.command {
        Command::Keygen(a) => keygen::run(a, g),
        Command::Transfer(a) => transfer::run(a, g),
        Command::Verify(a) => verify::run(a, g),
        Command::Audit(a) => audit::run(a, g),
        Command::Decrypt(a) => decrypt::run(a, g),
        Command::Ledger(c) => ledger::run(c, g),
        Command::Log(a) => ledger::log(a, g),
        Command::Handoff(a) => handoff::run(a, g),
        Command::Demo(a) => demo::run(a, g),
        Command::Scan(a) => scan::run(a, g),
        Command::Databox(c) => databox::run(c, g),
        Command::Plan(a) => plan::plan(a, g),
        Command::Run(a) => plan::run(a, g),
        Command::Rollback(a) => rollback::run(a, g),
        Command::Report(a) => report::run(a, g),
        Command::Completions(_) | Command::Manpage(_) if g.json => {
            Err(Failure::usage(anyhow::anyhow!(
                "completions and manpage write a script or a page; they have no JSON form"
            )))
        }
        Command::Completions(a) => generate::completions(a),
        Command::Manpage(_) => generate::manpage(),
    });
    let code = match outcome {
        Ok(code) => code,
        Err(f) => {
            // Not now is nothing wrong: a log watcher should not page anyone.
            match (g.log_file.is_some(), f.code) {
                (false, _) => {}
                (true, Code::NotNow) => tracing::warn!("{}", one_line(&f.error)),
                (true, _) => tracing::error!("{}", one_line(&f.error)),
            }
            if g.json && !PRINTED.load(std::sync::atomic::Ordering::Relaxed) {
                print_error_json(f.code, &one_line(&f.error), f.hint.as_deref());
            }
            eprintln!("custody: error: {}", one_line(&f.error));
            if let Some(h) = f.hint {
                eprintln!("custody: hint: {h}");
            }
            f.code
        }
    };
    ExitCode::from(code as u8)
}

/// An error and its causes in one line, each cause once: most errors
/// already name their cause in their own message ("{path}: {source}").
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !line.contains(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    line
}

/// Whether this command printed its `--json` object.
static PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The `--json` object of a command that failed (docs/json.md).
fn print_error_json(code: Code, message: &str, hint: Option<&str>) {
    print_json(&serde_json::json!({
        "error": {
            "exit_code": code as u8,
            "message": message.trim_end().trim_start_matches("error: "),
            "hint": hint,
        }
    }));
}

/// Prints `value` as one JSON object on stdout (for `--json`). A closed
/// pipe is not an error.
pub fn print_json(value: &impl serde::Serialize) {
    PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value).map(|()| writeln!(out));
}

/// The `--json` object of a check: `{"result": "pass"|"fail", "report": …}`.
pub fn print_result(ok: bool, report: &impl serde::Serialize) {
    print_json(&serde_json::json!({
        "result": if ok { "pass" } else { "fail" },
        "report": report,
    }));
}

/// Loads a trust anchor from exactly one of the two flags.
pub fn load_trust(
    allowed_signers: Option<&std::path::Path>,
    public_key: Option<&std::path::Path>,
) -> Result<custody::keys::Trust, Failure> {
    use custody::keys::Trust;
    let trust = match (allowed_signers, public_key) {
        (Some(p), None) => Trust::allowed_signers(p),
        (None, Some(p)) => Trust::public_key(p),
        _ => {
            return Err(Failure::usage(anyhow::anyhow!(
                "give exactly one of --allowed-signers FILE or --public-key FILE"
            )));
        }
    }
    .map_err(Failure::usage)?;
    render::warn_if_example_trust(&trust);
    Ok(trust)
}

/// Loads an encryption key file (exit 2 on any problem).
pub fn load_encryption_key(
    path: &std::path::Path,
) -> Result<custody::crypt::EncryptionKey, Failure> {
    custody::crypt::EncryptionKey::load(path).map_err(|e| {
        Failure::usage(e).hint(
            "make one with `custody keygen --encryption --out FILE`, or pass the right key file",
        )
    })
}

/// Loads the operator's signing key, warning loudly about the demo key.
pub fn load_signing_key(path: &std::path::Path) -> Result<custody::keys::SigningKey, Failure> {
    let key = custody::keys::SigningKey::load(path).map_err(|e| {
        Failure::usage(e)
            .hint("generate a key with `custody keygen --out DIR`, or pass the right --signing-key")
    })?;
    if key.is_example() {
        render::warn_example_key(path);
    }
    Ok(key)
}
