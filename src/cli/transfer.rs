//! `custody transfer`: copy, record, seal, verify.

use std::path::PathBuf;

use custody::transfer::{Status, TransferOptions, TransferSummary};

use super::metrics;
use super::render;
use super::{Code, Failure, Global, Outcome, duration, print_json};

/// Copy a tree while hashing it, seal a signed manifest, verify the copy.
///
/// Copy SRC to DEST while hashing every file, seal a signed manifest, and
/// verify the landed copy.
///
/// Each file is read once: BLAKE3 is computed while it is written to
/// DEST/<relative path> under a temporary name, flushed and renamed. The
/// run is recorded in the ledger; when every file has landed it is sealed
/// into MANIFEST_DIR/<id>.json (+ .sig) and the landed copy is re-read and
/// checked. If any file fails, nothing is sealed, the exit code is 3, and
/// running the same command again resumes: files already landed are not
/// copied again.
///
/// A Data Box share (a path with a component named <account>_BlockBlob,
/// _PageBlob or _AzFile) or a blob URL is first checked against its
/// naming and size rules (as `custody scan SRC --dest DEST` reports them):
/// any violation refuses the transfer before anything moves, unless
/// --skip-violations. Into any directory, a name already taken there (by
/// another run, or anyone) refuses it too, unless --overwrite says
/// otherwise; and nothing is ever written through a symbolic link found in
/// DEST. A directory DEST is locked while the transfer runs (DEST/.custody-lock,
/// removed at the end): a second transfer into it, with any ledger, gets exit 4.
///
/// A source that holds no file is refused (exit 2): an unmounted mount
/// point looks like that. --allow-empty seals it anyway.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody transfer /srv/pacs /mnt/databox/acme_BlockBlob/pacs --signing-key ~/.custody/custody_ed25519

Exit codes: 0 sealed and verified, 1 verify found a discrepancy,
2 usage or configuration error (nothing moved), 3 incomplete (rerun resumes),
4 not now: paused at the window's end or a limit, started outside the window,
  or another transfer is running into DEST with this ledger (run again later; it resumes).")]
pub struct Args {
    /// The source tree.
    #[arg(value_name = "SRC")]
    source: PathBuf,
    /// The destination: a directory (e.g. a mounted Data Box share), or a
    /// blob container URL (https://<account>.blob.core.windows.net/<container>[/<prefix>],
    /// a Data Box Blob REST endpoint, or http://127.0.0.1:<port>/<account>/<container>
    /// for Azurite). Blob credentials come from AZURE_STORAGE_SAS_TOKEN,
    /// AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING.
    #[arg(value_name = "DEST")]
    destination: PathBuf,
    /// Blob destinations: block size in MiB (memory: jobs × block size).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    block_size: u32,
    /// What to do when DEST already holds a file or blob of the same name
    /// (not landed by this run). `never` refuses the transfer before
    /// anything moves (a blob holding exactly the same bytes is taken as
    /// landed); `if-different` and `always` replace it (on a directory both
    /// replace: a share has no cheap content check).
    #[arg(long, value_enum, default_value = "never")]
    overwrite: OverwriteArg,
    /// Seal a source that holds no file (otherwise refused, exit 2).
    #[arg(long)]
    allow_empty: bool,
    /// The operator's OpenSSH Ed25519 private key (mode 0600). An encrypted
    /// key takes its passphrase from CUSTODY_KEY_PASSPHRASE.
    #[arg(long, value_name = "KEY", env = "CUSTODY_SIGNING_KEY")]
    signing_key: PathBuf,
    /// Files processed in parallel [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", env = "CUSTODY_JOBS")]
    jobs: Option<usize>,
    /// Do not re-read the landed copy after sealing.
    #[arg(long)]
    no_verify: bool,
    /// Encrypt every file with this key (from `custody keygen --encryption`)
    /// in the same read that hashes it; files land as <name>.custody-enc.
    #[arg(long, value_name = "FILE")]
    encrypt_key: Option<PathBuf>,
    /// The Data Box object type, when DEST's name does not say it (a plain
    /// directory is then checked as a share root of this type).
    #[arg(long, value_enum, value_name = "TYPE")]
    profile: Option<super::scan::ProfileArg>,
    /// Leave out the files that break a Data Box rule instead of refusing
    /// to start; the manifest lists each as excluded, with the rule.
    #[arg(long)]
    skip_violations: bool,
    /// Refuse to start (exit 2, nothing moved) if any DICOM file is not
    /// marked de-identified and carries a PatientName, PatientID or
    /// PatientBirthDate, or is a DICOM file whose header cannot be read:
    /// for test and lab environments, which must not receive real PHI.
    /// Reads every file's header (not its pixel data) before the transfer.
    #[arg(long)]
    require_deidentified: bool,
    /// Do not read DICOM headers: every file is carried as a plain file and
    /// the manifest records no DICOM identity (docs/dicom.md).
    #[arg(long, conflicts_with = "require_deidentified")]
    no_dicom: bool,
    /// Run only inside these windows, local time, e.g.
    /// "Mon-Fri 19:00-06:00, Sat-Sun 00:00-24:00" (docs/operations.md).
    /// Outside them nothing starts (exit 4); at a window's end no new file
    /// starts, files in flight finish within --grace, and the run pauses
    /// (exit 4): the same command later resumes it.
    #[arg(long, value_name = "SPEC")]
    window: Option<custody::schedule::Windows>,
    /// Stop starting files after this long, e.g. 6h, 90m, "1h 30m" (then
    /// as at a window's end).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    max_duration: Option<std::time::Duration>,
    /// Stop before the files started would pass this many bytes, e.g.
    /// 500G, 2TiB (K/M/G/T: powers of 1000; KiB/MiB/GiB/TiB: of 1024).
    #[arg(long, value_name = "SIZE", value_parser = bytes)]
    max_bytes: Option<u64>,
    /// After a stop, how long files in flight may go on before they are
    /// given up (nothing is recorded for them; the next run copies them).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "5m")]
    grace: std::time::Duration,
    /// Bandwidth timetable for destination writes, rclone's grammar: a
    /// rate ("20M") or "[Day-]HH:MM,RATE" entries, e.g. "06:00,20M
    /// 19:00,off" (bare numbers are KiB/s; K M G T: powers of 1024).
    #[arg(long, value_name = "SPEC")]
    bwlimit: Option<custody::schedule::Bwlimit>,
    /// Write the run's metrics to this file in Prometheus' text format
    /// (for node_exporter's textfile collector), replaced atomically at the
    /// start, at each phase and --progress-interval, and at the end
    /// (docs/operations.md, "Monitoring").
    #[arg(long, value_name = "PATH", env = "CUSTODY_METRICS_FILE")]
    pub(super) metrics_file: Option<PathBuf>,
    /// Tie this run to a named job: its first run copies everything; each
    /// later run copies only what is new since the job's earlier runs
    /// (unchanged files are not read), and its manifest lists just that and
    /// links to the job's previous manifest (docs/jobs.md).
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    /// Copy everything again as a new one-off run, sealing a new full
    /// manifest. Without it, the same transfer run again after its run
    /// sealed redoes nothing: it finishes a verify that never completed,
    /// says there is nothing new, or moves only what is new as the next run
    /// of the transfer's implicit job (docs/jobs.md, "Without --job").
    #[arg(long, conflicts_with = "job")]
    full: bool,
    /// With --job: what a file the job landed before that changed at the
    /// source leads to. `report` keeps the landed copy, lists the file in
    /// the manifest, and exits 3; `resend-as-version` lands the new content
    /// beside it as <name>.custody-v<run>; `fail` fails the file (the run
    /// is not sealed until the change is resolved).
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "report",
        requires = "job"
    )]
    on_source_change: OnSourceChangeArg,
    #[command(flatten)]
    select: super::args::SelectionArgs,
    /// Copy exactly the files of one shard of a split (`custody split`):
    /// DIR/shard-NN.list, checked against DIR/split.json (signed; trusted
    /// through --allowed-signers or the configured allowed_signers, else
    /// the operator's own key) before anything moves. The manifest records
    /// the split and the shard; files outside it are not touched.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["include", "exclude", "files_from"])]
    shard: Option<PathBuf>,
    #[command(flatten)]
    device: super::args::DeviceArgs,
    #[command(flatten)]
    trust: super::args::TrustArgs,
    /// Pretend it is this local time (RFC 3339 with zone, e.g.
    /// 2026-11-24T05:59:58[Europe/Berlin]) for the window: for tests.
    #[arg(long, env = "CUSTODY_NOW", hide = true)]
    now: Option<jiff::ZonedDateTime>,
    /// With --now: a clock that stands still between readings, each one
    /// this much after the last (so a test reaches a window's end after a
    /// set number of files, whatever the machine's speed): for tests.
    #[arg(long, env = "CUSTODY_CLOCK_STEP", hide = true, requires = "now", value_parser = duration)]
    clock_step: Option<std::time::Duration>,
}

/// A byte count: "500G", "2TiB", "1048576".
fn bytes(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>().map(|b| b.as_u64())
}

/// `--on-source-change` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnSourceChangeArg {
    Report,
    ResendAsVersion,
    Fail,
}

/// `--overwrite` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OverwriteArg {
    Never,
    IfDifferent,
    Always,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    run_as(args, g, None, "transfer")
}

/// [`run`] for `command` (`transfer`, `run` with its wave, `job`): its
/// metrics (`--metrics-file`) carry that name.
pub fn run_as(
    args: &Args,
    g: &Global,
    wave: Option<custody::manifest::Wave>,
    command: &'static str,
) -> Outcome {
    let launch = metrics::Launch {
        path: args.metrics_file.as_deref(),
        command,
        destination: Some(&args.destination),
        databox: args.profile.is_some(),
        job: args.job.as_deref(),
    };
    metrics::run(&launch, g, |progress, _| transfer(args, g, wave, progress))
}

fn transfer(
    args: &Args,
    g: &Global,
    wave: Option<custody::manifest::Wave>,
    progress: &dyn custody::progress::Progress,
) -> Outcome {
    let key = super::load_signing_key(&args.signing_key)?;
    let encryption = args
        .encrypt_key
        .as_deref()
        .map(super::load_encryption_key)
        .transpose()?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    if jobs == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--jobs must be at least 1")));
    }
    let destination = custody::dest::Target::parse(&args.destination)
        .map_err(|e| Failure::usage(e).hint("nothing was copied"))?;
    let placement = custody::databox::Placement::for_destination(
        &destination,
        args.profile.map(custody::databox::Profile::from),
    )
    .map(|mut p| {
        p.rest |= g.databox_rest;
        if p.block_size.is_some() {
            p.block_size = Some(u64::from(args.block_size) << 20);
        }
        p
    });
    let shard = match &args.shard {
        Some(list) => Some(custody::transfer::ShardOptions {
            list: list.clone(),
            // The split is signed by whoever made it: the trusted signers,
            // or (none configured) this operator.
            trust: match (&args.trust.allowed_signers, &args.trust.public_key) {
                (None, None) => custody::keys::Trust::PublicKey(key.public_key().clone()),
                _ => args.trust.load()?,
            },
        }),
        None => None,
    };
    let opts = TransferOptions {
        source: args.source.clone(),
        destination,
        blob: custody::dest::blob::BlobOptions {
            overwrite: match args.overwrite {
                OverwriteArg::Never => custody::dest::blob::Overwrite::Never,
                OverwriteArg::IfDifferent => custody::dest::blob::Overwrite::IfDifferent,
                OverwriteArg::Always => custody::dest::blob::Overwrite::Always,
            },
            block_size: Some(args.block_size as usize * 1024 * 1024),
            ..g.blob_options(custody::dest::blob::Access::Write)
        },
        jobs,
        verify: !args.no_verify,
        manifest_dir: g.manifest_dir.clone(),
        ledger: g.ledger.clone(),
        encryption,
        placement,
        skip_violations: args.skip_violations,
        require_deidentified: args.require_deidentified,
        dicom: !args.no_dicom,
        dicomweb_profile: g.dicomweb_profile,
        limits: custody::transfer::Limits {
            window: args.window.clone(),
            clock: match (&args.now, args.clock_step) {
                (Some(now), Some(step)) => custody::schedule::Clock::stepped(now, step),
                (Some(now), None) => custody::schedule::Clock::starting_at(now),
                (None, _) => custody::schedule::Clock::system(),
            },
            max_duration: args.max_duration,
            max_bytes: args.max_bytes,
            grace: args.grace,
            bwlimit: args.bwlimit.clone(),
        },
        wave,
        job: args.job.as_ref().map(|name| custody::transfer::JobOptions {
            name: name.clone(),
            on_source_change: match args.on_source_change {
                OnSourceChangeArg::Report => custody::transfer::OnSourceChange::Report,
                OnSourceChangeArg::ResendAsVersion => {
                    custody::transfer::OnSourceChange::ResendAsVersion
                }
                OnSourceChangeArg::Fail => custody::transfer::OnSourceChange::Fail,
            },
        }),
        allow_empty: args.allow_empty,
        full: args.full,
        selection: args.select.selection()?,
        shard,
        device: args.device.device()?,
    };
    let summary = custody::transfer::transfer(&opts, &key, progress).map_err(|e| {
        if e.is_busy() {
            return Failure::not_now(e).hint(
                "nothing was done; run the same command later \
                 (a nightly timer simply tries again tomorrow)",
            );
        }
        if matches!(e, custody::transfer::TransferError::Refused { .. }) {
            return Failure::usage(e).hint(
                "what landed is recorded; fix the sign-in or the role and run the same command again to resume",
            );
        }
        let setup = e.is_setup();
        let preflight = matches!(e, custody::transfer::TransferError::Preflight { .. });
        let fit = matches!(e, custody::transfer::TransferError::DoesNotFit(_));
        if fit {
            return Failure::usage(e).hint(format!(
                "nothing was copied; `custody split {} --device KIND --out DIR` divides it, \
                 then `custody transfer {} DEST --shard DIR/shard-01.list` copies one shard",
                args.source.display(),
                args.source.display()
            ));
        }
        let phi = matches!(e, custody::transfer::TransferError::NotDeidentified { .. });
        let f = if setup {
            Failure::usage(e)
        } else {
            Failure::incomplete(e)
        };
        if phi {
            f.hint(format!(
                "nothing was copied; `custody scan {} --phi-check` lists every such file",
                args.source.display()
            ))
        } else if preflight {
            f.hint(format!(
                "nothing was copied; `custody scan {} --dest {}` lists every violation; \
                 fix them, or pass --skip-violations to leave those files out",
                args.source.display(),
                args.destination.display()
            ))
        } else if setup {
            f.hint("nothing was copied; fix the above and run the same command again")
        } else {
            f.hint(
                "what landed is recorded; fix the above and run the same command again to resume",
            )
        }
    });
    let summary = summary?;
    if g.json {
        print_json(&summary);
    } else if !g.quiet {
        print_summary(&summary);
    }
    Ok(code(&summary))
}

fn code(s: &TransferSummary) -> Code {
    match s.status {
        Status::Complete => Code::Ok,
        Status::VerifyFailed => Code::Integrity,
        Status::Incomplete | Status::SourceChanged => Code::Incomplete,
        Status::Paused => Code::NotNow,
    }
}

/// Prints the human summary of a transfer.
pub fn print_summary(s: &TransferSummary) {
    if let Some(f) = &s.finished {
        print_finished(s, f);
        return;
    }
    let run = &s.run;
    println!(
        "run {} attempt {}{}: copied {} files ({}) in {:.1} s ({}); {} already landed; {} excluded; {} failed",
        run.id,
        run.attempt,
        if run.resumed { " (resumed)" } else { "" },
        s.files_copied,
        render::bytes(s.bytes_copied),
        s.copy_seconds,
        render::rate(s.bytes_copied, s.copy_seconds),
        s.files_skipped,
        s.excluded,
        s.failed,
    );
    if s.dicom_instances + s.dicom_unread > 0 {
        println!(
            "dicom: {} instances recorded{}",
            s.dicom_instances,
            match s.dicom_unread {
                0 => String::new(),
                n =>
                    format!("; {n} DICOM header(s) not read (carried as plain files, noted above)"),
            }
        );
    }
    if s.status == Status::Paused {
        println!(
            "PAUSED: {}; the run is not sealed{}. Run the same command again to resume.",
            s.paused.as_deref().unwrap_or("stopped"),
            match s.files_abandoned {
                0 => String::new(),
                n => format!(" ({n} file(s) in flight given up after --grace, copied next time)"),
            }
        );
    }
    if s.status == Status::Incomplete {
        println!(
            "INCOMPLETE: {} file(s) failed (listed above); the run is not sealed. \
             Run the same command again to resume.",
            s.failed
        );
    }
    if let Some(j) = &s.job {
        println!(
            "job {} run {}: {} files unchanged since earlier runs ({}{}); {} changed at source; {} deleted at source",
            j.name,
            j.run,
            j.unchanged_files,
            render::bytes(j.unchanged_bytes),
            match j.touched_files {
                0 => String::new(),
                n => format!(", {n} only touched"),
            },
            j.changed,
            j.deleted,
        );
    }
    if s.status == Status::SourceChanged {
        println!(
            "SOURCE CHANGED: file(s) the job landed before changed at the source (listed above); \
             the landed copies are kept and the manifest lists them. Find out why; \
             --on-source-change resend-as-version lands the new content beside the old."
        );
    }
    if let Some(m) = &s.sealed {
        println!(
            "sealed manifest {}: {} files, {}",
            m.id,
            m.files,
            render::bytes(m.bytes)
        );
        println!("  {}", m.manifest.display());
        println!("  {}", m.signature.display());
    }
    if let Some(v) = &s.verify {
        super::verify::print_report(v);
    }
}

/// A rerun that found its work finished: one line, and the verify it did.
fn print_finished(s: &TransferSummary, f: &custody::transfer::Finished) {
    let when = |at: &Option<String>| at.clone().unwrap_or_else(|| "never".into());
    if f.verified_now {
        println!(
            "nothing copied: run {} sealed manifest {} earlier and its verify had not completed; verified it now",
            s.run.id, f.manifest
        );
        if let Some(v) = &s.verify {
            super::verify::print_report(v);
        }
    } else {
        println!(
            "nothing to do: manifest {} (run {}, verified {}) covers the source; nothing new, changed or deleted (--full copies everything again)",
            f.manifest,
            s.run.id,
            when(&f.verified_at)
        );
    }
}
