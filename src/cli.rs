//! The face: flags, commands, rendering and exit codes.
//!
//! Flags are parsed by clap into [`Cli`]; each command module turns them
//! into engine options, runs the engine, and renders the result (human text,
//! or one JSON object with `--json`). Errors become one line naming what and
//! where, a hint line, and a documented exit code.
//!
//! This file is the command line and its dispatch; `exit` holds the exit
//! codes and failures, `logging` the tracing set-up, `args` the argument
//! types several commands share, `load` what they load from them (trust,
//! keys, signed manifests), `render` the human and JSON output.

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

mod args;
mod audit;
mod config;
mod databox;
mod decrypt;
mod demo;
mod exit;
mod generate;
mod handoff;
mod job;
mod keygen;
mod ledger;
mod load;
mod logging;
mod metrics;
mod plan;
mod proofs;
mod render;
mod report;
mod rollback;
mod scan;
mod split;
mod transfer;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use exit::one_line;
use logging::init_logging;
use render::{PRINTED, print_error_json};

pub use args::duration;
pub use exit::{Code, Failure, Outcome};
pub use load::{load_encryption_key, load_signing_key, load_trust};
pub use logging::LogFormat;
pub use render::{print_json, print_result};

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
    #[arg(
        long,
        global = true,
        env = "CUSTODY_MANIFEST_DIR",
        default_value = "manifests"
    )]
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
    /// Blob endpoints: how to sign in. `key`: AZURE_STORAGE_KEY,
    /// AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING; the
    /// others are Microsoft Entra ID, from the standard AZURE_* variables
    /// (docs/blob.md). Default: `key` when one of those is set.
    #[arg(
        long,
        global = true,
        value_name = "HOW",
        env = "CUSTODY_AZURE_AUTH",
        value_parser = azure_auth
    )]
    pub azure_auth: Option<custody::dest::blob::AuthMethod>,
    /// Blob endpoints: the URL is a Data Box's own Blob REST endpoint
    /// (storage API 2019-02-02), e.g. an IP address on the box's data
    /// port. A `*.microsoftdatabox.com` host is recognised without it.
    #[arg(long, global = true, env = "CUSTODY_DATABOX_REST")]
    pub databox_rest: bool,
    /// DICOMweb destinations: whose rules the preflight keeps. `azure`:
    /// Azure Health Data Services' DICOM service (explicit-VR syntaxes
    /// only, SOPClassUID and PatientID required); `generic`: only the UIDs
    /// an instance is named by. Default: `azure` for an
    /// `*.dicom.azurehealthcareapis.com` URL, `generic` otherwise.
    #[arg(
        long,
        global = true,
        value_name = "PROFILE",
        env = "CUSTODY_DICOMWEB_PROFILE",
        value_parser = dicomweb_profile
    )]
    pub dicomweb_profile: Option<custody::databox::dicom::DicomProfile>,
}

fn dicomweb_profile(s: &str) -> Result<custody::databox::dicom::DicomProfile, String> {
    use custody::databox::dicom::DicomProfile;
    DicomProfile::parse(s).ok_or_else(|| {
        let names: Vec<&str> = DicomProfile::ALL.iter().map(|p| p.as_str()).collect();
        format!(
            "{s:?} is not a DICOMweb profile; use one of {}",
            names.join(", ")
        )
    })
}

fn azure_auth(s: &str) -> Result<custody::dest::blob::AuthMethod, String> {
    use custody::dest::blob::AuthMethod;
    AuthMethod::parse(s).ok_or_else(|| {
        let names: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
        format!(
            "{s:?} is not a way to sign in; use one of {}",
            names.join(", ")
        )
    })
}

impl Global {
    /// How to reach a blob destination, for a command that does `access`
    /// there (the rest of the options at their defaults).
    pub fn blob_options(
        &self,
        access: custody::dest::blob::Access,
    ) -> custody::dest::blob::BlobOptions {
        custody::dest::blob::BlobOptions {
            ca_file: self.ca_file.clone(),
            auth: self.azure_auth,
            databox_rest: self.databox_rest,
            access,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    Keygen(keygen::Args),
    Transfer(Box<transfer::Args>),
    Verify(verify::Args),
    Audit(audit::Args),
    Decrypt(decrypt::Args),
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    Log(ledger::LogArgs),
    Handoff(handoff::Args),
    Demo(demo::Args),
    Scan(scan::Args),
    Split(split::Args),
    SealSet(split::SealSetArgs),
    #[command(subcommand)]
    Databox(databox::DataboxCommand),
    Plan(plan::PlanArgs),
    Run(plan::RunArgs),
    /// Run a nightly job defined in a job file, or check one.
    #[command(subcommand)]
    Job(job::JobCommand),
    Rollback(rollback::Args),
    Report(report::Args),
    Prove(proofs::ProveArgs),
    CheckProof(proofs::CheckProofArgs),
    #[command(subcommand)]
    Witness(proofs::WitnessCommand),
    Config(config::Args),
    Completions(generate::Args),
    Manpage(generate::ManArgs),
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    // Everything custody writes (ledgers, manifests, reports, exports,
    // restored plaintext, locks) names patient files or holds their bytes:
    // never readable by others, never writable by the group, whatever the
    // caller's umask (docs/SECURITY.md).
    let inherited = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o027));
    rustix::process::umask(inherited | rustix::fs::Mode::from_raw_mode(0o027));
    let file = match config::find() {
        Ok(file) => file,
        Err(f) => return exit_with(f, std::env::args().any(|a| a == "--json")),
    };
    let parsed = config::apply(Cli::command(), file.as_ref())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((cli, matches)) => {
            config::remember(&matches, file);
            cli
        }
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
        Command::Split(a) => split::run(a, g),
        Command::SealSet(a) => split::seal_set(a, g),
        Command::Databox(c) => databox::run(c, g),
        Command::Plan(a) => plan::plan(a, g),
        Command::Run(a) => plan::run(a, g),
        Command::Job(c) => job::run(c, g),
        Command::Rollback(a) => rollback::run(a, g),
        Command::Report(a) => report::run(a, g),
        Command::Prove(a) => proofs::prove(a, g),
        Command::CheckProof(a) => proofs::check_proof(a, g),
        Command::Witness(c) => proofs::witness(c, g),
        Command::Config(a) => config::run(a, g),
        Command::Completions(_) | Command::Manpage(_) if g.json => {
            Err(Failure::usage(anyhow::anyhow!(
                "completions and manpage write a script or a page; they have no JSON form"
            )))
        }
        Command::Completions(a) => generate::completions(a),
        Command::Manpage(_) => generate::manpage(),
    });
    match outcome {
        Ok(code) => ExitCode::from(code as u8),
        Err(f) => {
            // Not now is nothing wrong: a log watcher should not page anyone.
            match (g.log_file.is_some(), f.code) {
                (false, _) => {}
                (true, Code::NotNow) => tracing::warn!("{}", one_line(&f.error)),
                (true, _) => tracing::error!("{}", one_line(&f.error)),
            }
            exit_with(f, g.json)
        }
    }
}

/// Says what failed (and, with `--json`, prints the error object unless
/// the command printed its own) and returns the failure's exit code.
fn exit_with(f: Failure, json: bool) -> ExitCode {
    if json && !PRINTED.load(std::sync::atomic::Ordering::Relaxed) {
        print_error_json(f.code, &one_line(&f.error), f.hint.as_deref());
    }
    eprintln!("custody: error: {}", one_line(&f.error));
    if let Some(h) = f.hint {
        eprintln!("custody: hint: {h}");
    }
    ExitCode::from(f.code as u8)
}
