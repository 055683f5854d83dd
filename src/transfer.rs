//! The transfer pipeline: the only place that spawns threads.
//!
//! ```text
//! walk (1 thread, asks the ledger what already landed)
//!   ─► bounded queue ─► workers (--jobs): read ─► BLAKE3 ─► destination write ─► commit
//!   ─► bounded queue ─► this thread: gather a batch
//!   ─► flusher: make it durable (syncs; renames on --jobs threads)
//!   ─► recorder (owns the ledger): record it, hand it to the early re-reads
//! ```
//! Each source byte is read once. Memory is bounded by the queue lengths and
//! one read buffer per worker, whatever the number or size of files. A batch
//! of landings is recorded only after [`Destination::flush_fanned`] made it
//! durable, and batches are recorded in order; a batch's flush overlaps the
//! previous batch's rows (see `record`).
//! A run with any failure is not sealed: it is recorded as incomplete and the
//! next identical command resumes it (see `docs/ledger.md`).

mod copy;
mod finished;
mod job;
mod plan;
mod preflight;
mod record;
mod scope;
mod seal;
mod setup;
mod stop;

pub use finished::{Finished, implicit_job};
pub use job::{JobOptions, JobSummary, OnSourceChange};
pub use stop::Limits;
// Moved to the ledger, which records them; named here too for the face.
pub use crate::ledger::{Failure, FailureClass};
// The rules a DICOMweb destination keeps (`TransferOptions::dicomweb_profile`).
pub use crate::databox::dicom::DicomProfile;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::crypt::EncryptionKey;
use crate::databox::{Placement, Violation};
use crate::dest::blob::BlobOptions;
use crate::dest::throttle::{Throttle, Throttled};
use crate::dest::{DestError, Destination, Target};
use crate::keys::{KeyError, SigningKey, Trust};
use crate::ledger::{JobState, LandedLookup, Ledger, LedgerError, RunRef, SealedRun};
use crate::manifest::{self, ChangeAction, ChangeKind, ManifestError};
use crate::progress::{Notice, Phase, Progress, RunStarted};
use crate::source::SourceEntry;
use crate::verify::{self, VerifyReport};

use copy::{Done, copy_one};
use finished::Rerun;
use plan::Item;
use record::{Batch, Recorder};
use seal::seal;
use setup::{check_manifest_dir, check_source};

/// What `transfer` should do.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// The source tree.
    pub source: PathBuf,
    /// Where files land.
    pub destination: Target,
    /// Blob destinations: overwrite policy and CA bundle.
    pub blob: BlobOptions,
    /// Parallel workers.
    pub jobs: usize,
    /// Re-read and verify the landed copy after sealing.
    pub verify: bool,
    /// Where `<id>.json` and `<id>.json.sig` are written.
    pub manifest_dir: PathBuf,
    /// The ledger file.
    pub ledger: PathBuf,
    /// Encrypt every file under this key (`docs/encryption.md`).
    pub encryption: Option<EncryptionKey>,
    /// The destination's Data Box rules ([`crate::databox`]): checked for
    /// the whole tree before anything moves.
    pub placement: Option<Placement>,
    /// Instead of refusing to start, carry no file that breaks a rule and
    /// list each in the manifest's `excluded` with the rule.
    pub skip_violations: bool,
    /// Read each DICOM file's header (from the same read) and record its
    /// identity in the manifest; `false` carries every file as a plain one.
    pub dicom: bool,
    /// A DICOMweb destination's rules: this profile's, or (`None`) the one
    /// its URL implies ([`DicomProfile::for_destination`]).
    pub dicomweb_profile: Option<DicomProfile>,
    /// Refuse, before anything moves, if any DICOM file may identify a
    /// patient or cannot be checked ([`crate::source::dicom::Outcome::refusal`]);
    /// such a file met later (changed since) fails instead of landing.
    pub require_deidentified: bool,
    /// When to stop starting files: window, duration, bytes.
    pub limits: Limits,
    /// The migration wave this run belongs to (`custody run PLAN --wave`):
    /// recorded in its events and its manifest (version 5).
    pub wave: Option<manifest::Wave>,
    /// The named job this run belongs to (`--job`): only what is new since
    /// the job's earlier runs moves, and the manifest links to the job's
    /// previous one.
    pub job: Option<JobOptions>,
    /// Seal a source with no file to carry; without it such a source is
    /// refused ([`TransferError::EmptySource`]): an unmounted mount point
    /// is an empty directory.
    pub allow_empty: bool,
    /// Copy everything again as a new one-off run even when a sealed run
    /// of the same source and destination covers it (`--full`); without
    /// it, finished work is not redone (see `transfer::finished`).
    pub full: bool,
    /// Which files of the source the run carries (`--include`,
    /// `--exclude`, `--files-from`; `docs/selection.md`). A run through a
    /// selection is a run of its own, and a job keeps its selection.
    pub selection: crate::source::select::Selection,
    /// Carry exactly one shard of a split (`--shard DIR/shard-NN.list`).
    pub shard: Option<ShardOptions>,
    /// Refuse, before anything moves, a tree that does not fit one device
    /// of this kind (`--device`; a shard is held to its split's device).
    pub device: Option<crate::databox::device::Device>,
}

/// `--shard`: the list, and whom its `split.json` must be signed by.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// The shard's list, beside its `split.json`.
    pub list: PathBuf,
    /// The keys the split's signature must verify with.
    pub trust: Trust,
}

/// How many violations a refused preflight names (all of them: `custody
/// scan SRC --dest DEST`).
pub const LISTED_VIOLATIONS: usize = 10;

/// Errors that stop a transfer as a whole (per-file failures are not
/// errors: they are counted in the summary).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The destination refused the run's credential (shared-key access
    /// disabled, a role missing, a token refused): what landed before is
    /// recorded; nothing more could land.
    #[error("{dest}: {reason}")]
    Refused {
        /// The destination.
        dest: String,
        /// What the refusal means, and what to do.
        reason: String,
    },
    /// The source cannot be walked at all.
    #[error("source {path}: {reason}")]
    Source {
        /// The source root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The source holds no file to carry (and `allow_empty` is off).
    #[error(
        "source {path}: holds no file to carry (an unmounted share's mount point looks like this); nothing was copied"
    )]
    EmptySource {
        /// The source root.
        path: PathBuf,
    },
    /// Files break the destination's rules (Data Box rules, or names in the
    /// way at a directory); nothing moved.
    #[error(
        "preflight: {count} violation(s) of the destination's rules, first: {}",
        first.iter().map(|v| format!("{} ({}: {})", if v.path.is_empty() { "destination" } else { &v.path }, v.rule, v.detail)).collect::<Vec<_>>().join("; ")
    )]
    Preflight {
        /// How many.
        count: u64,
        /// The first [`LISTED_VIOLATIONS`].
        first: Vec<Violation>,
    },
    /// `--require-deidentified` and files that may identify a patient.
    #[error(
        "--require-deidentified: {count} file(s) may identify a patient or could not be checked, first: {}",
        first.iter().map(|(p, why)| format!("{p} ({why})")).collect::<Vec<_>>().join("; ")
    )]
    NotDeidentified {
        /// How many.
        count: u64,
        /// The first [`LISTED_VIOLATIONS`]: path and why (attribute names,
        /// never values).
        first: Vec<(String, String)>,
    },
    /// Started outside its window: nothing was done.
    #[error("outside the window {window}{}", opens.as_ref().map(|o| format!("; it opens {o}")).unwrap_or_default())]
    OutsideWindow {
        /// The window spec.
        window: String,
        /// When it next opens (local time), if within a week.
        opens: Option<String>,
    },
    /// `--shard` names a list its split does not vouch for (or the split
    /// cannot be read or verified); nothing moved.
    #[error("--shard {}: {reason}", list.display())]
    Shard {
        /// The list.
        list: PathBuf,
        /// Why.
        reason: String,
    },
    /// The tree does not fit one device (`--device`); nothing moved.
    #[error("preflight: the source {0}; `custody split` divides it into shards that each fit")]
    DoesNotFit(crate::databox::device::Fit),
    /// A selection or shard with a DICOMweb destination (not supported).
    #[error("{0}")]
    Unsupported(String),
    /// Another transfer holds this ledger and destination, or the lock file
    /// cannot be used.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The manifest directory cannot be written.
    #[error("manifest directory {path}: {reason}")]
    ManifestDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The destination failed (the message names it).
    #[error(transparent)]
    Destination(#[from] DestError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The manifest could not be written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The verify after sealing could not run.
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
}

impl TransferError {
    /// Whether another transfer holds the destination (nothing happened;
    /// later is fine).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            TransferError::Lock(crate::lock::LockError::Busy { .. })
                | TransferError::OutsideWindow { .. }
        )
    }

    /// Whether the error was found before anything moved (a usage or
    /// configuration problem) rather than during the run.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            TransferError::Source { .. }
                | TransferError::EmptySource { .. }
                | TransferError::Preflight { .. }
                | TransferError::NotDeidentified { .. }
                | TransferError::Shard { .. }
                | TransferError::DoesNotFit(_)
                | TransferError::Unsupported(_)
                | TransferError::Lock(crate::lock::LockError::Io { .. })
                | TransferError::ManifestDir { .. }
                | TransferError::Destination(DestError::Unusable { .. })
                | TransferError::Ledger(
                    LedgerError::NewerSchema { .. }
                        | LedgerError::EncryptionMismatch { .. }
                        | LedgerError::WaveMismatch { .. }
                        | LedgerError::JobMismatch { .. }
                )
        )
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Sealed, and verified when asked.
    Complete,
    /// Some files failed; not sealed; a rerun resumes.
    Incomplete,
    /// Sealed, but the verify after it found discrepancies.
    VerifyFailed,
    /// Stopped starting files (window closed, `--max-duration`,
    /// `--max-bytes`); not sealed; a rerun resumes.
    Paused,
    /// Sealed (and verified when asked), but files the job landed before
    /// changed at the source and were reported, not sent again.
    SourceChanged,
}

/// Where the sealed manifest went.
#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    /// The manifest id.
    pub id: String,
    /// The manifest file.
    pub manifest: PathBuf,
    /// Its detached signature.
    pub signature: PathBuf,
    /// Files listed.
    pub files: u64,
    /// Bytes listed.
    pub bytes: u64,
}

/// The result of a transfer, for rendering and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct TransferSummary {
    /// How it ended.
    pub status: Status,
    /// The ledger run and attempt.
    pub run: RunRef,
    /// Files copied in this attempt.
    pub files_copied: u64,
    /// Bytes copied in this attempt.
    pub bytes_copied: u64,
    /// Files already landed by an earlier attempt, not copied again.
    pub files_skipped: u64,
    /// Why the run stopped starting files, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Files in flight given up when the grace period after a stop ran out
    /// (nothing recorded for them; the next run copies them).
    pub files_abandoned: u64,
    /// Files copied in this attempt that are DICOM instances (their UIDs
    /// are in the manifest).
    pub dicom_instances: u64,
    /// Files copied in this attempt with the DICOM magic whose header could
    /// not be read (carried as plain files).
    pub dicom_unread: u64,
    /// Their bytes.
    pub bytes_skipped: u64,
    /// Entries not carried (links, special files, non-UTF-8 names).
    pub excluded: u64,
    /// Uncommitted landings of an interrupted earlier attempt, removed.
    pub partials_swept: u64,
    /// Files that failed in this attempt.
    pub failed: u64,
    /// The failures (the first [`MAX_LISTED_FAILURES`]).
    pub failures: Vec<Failure>,
    /// Seconds spent copying.
    pub copy_seconds: f64,
    /// Seconds the flusher was busy making batches durable at the
    /// destination (syncs and renames), during the copy.
    pub flush_seconds: f64,
    /// Seconds the recorder was busy writing batches to the ledger, during
    /// the copy (overlapping the flusher's next batch).
    pub ledger_seconds: f64,
    /// Seconds spent sealing (building, signing and writing the manifest).
    pub seal_seconds: f64,
    /// Blob destinations: bytes sent to the service in this attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// Blob destinations: bytes not sent because the service already held
    /// them (blocks staged by an interrupted upload, or the same blob).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_reused: Option<u64>,
    /// The sealed manifest, when sealed.
    pub sealed: Option<Sealed>,
    /// The verify report, when verified.
    pub verify: Option<VerifyReport>,
    /// For a job run (`--job`): what it found against the job's earlier
    /// runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSummary>,
    /// A rerun that found its work finished (sealed earlier): that
    /// manifest, and whether this run did its pending verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finished>,
}

impl TransferSummary {
    /// The summary of `run` before any file is copied.
    fn started(run: RunRef, partials_swept: u64, opts: &TransferOptions) -> Self {
        TransferSummary {
            status: Status::Complete,
            run,
            files_copied: 0,
            bytes_copied: 0,
            files_skipped: 0,
            paused: None,
            files_abandoned: 0,
            dicom_instances: 0,
            dicom_unread: 0,
            bytes_skipped: 0,
            excluded: 0,
            partials_swept,
            failed: 0,
            failures: Vec::new(),
            copy_seconds: 0.0,
            flush_seconds: 0.0,
            ledger_seconds: 0.0,
            seal_seconds: 0.0,
            bytes_sent: None,
            bytes_reused: None,
            sealed: None,
            verify: None,
            job: opts.job.as_ref().map(|j| JobSummary {
                name: j.name.clone(),
                run: run.job_run.unwrap_or(1),
                unchanged_files: 0,
                unchanged_bytes: 0,
                touched_files: 0,
                changed: 0,
                deleted: 0,
                source_changes: Vec::new(),
            }),
            finished: None,
        }
    }
}

/// How many failures a summary lists (all are in the ledger).
pub const MAX_LISTED_FAILURES: usize = 1000;

/// Runs a transfer: copy, record, seal, and (if asked) verify.
///
/// Everything that can be checked before a byte moves is checked first
/// (source, destination, manifest directory, ledger); those errors satisfy
/// [`TransferError::is_setup`].
///
/// # Errors
/// Setup errors, and errors that stop the whole run (ledger or destination
/// failures). Per-file failures end the run as [`Status::Incomplete`].
pub fn transfer(
    opts: &TransferOptions,
    key: &SigningKey,
    progress: &dyn Progress,
) -> Result<TransferSummary, TransferError> {
    let source_root = check_source(&opts.source)?;
    let scope = scope::Scope::resolve(opts, &source_root)?;
    if scope.is_selected() && matches!(opts.destination, crate::dest::Target::Dicomweb(_)) {
        return Err(TransferError::Unsupported(
            "a DICOMweb destination takes no --include, --exclude, --files-from or --shard (not supported yet); nothing was copied".into(),
        ));
    }
    if !opts.allow_empty && !scope.walk().any(|e| matches!(e, SourceEntry::File(_))) {
        return Err(TransferError::EmptySource { path: source_root });
    }
    let opened = setup::open(opts, &source_root)?;
    let dest = opened.dest();
    check_manifest_dir(&opts.manifest_dir)?;
    let _locks = setup::lock(opts, &opened)?;
    let stopper = setup::stopper(opts)?;
    let mut ledger = Ledger::open(&opts.ledger)?;
    let source_str = source_root.display().to_string();
    let dest_str = dest.describe();
    let implicit;
    let opts = match finished::rerun(&mut ledger, opts, &scope, &source_str, &dest_str)? {
        Rerun::AsAsked => opts,
        Rerun::Implicit(job) => {
            implicit = TransferOptions {
                job: Some(job),
                ..opts.clone()
            };
            &implicit
        }
        Rerun::Verify(sealed) => {
            progress.run_started(sealed_run(&sealed));
            return finished::verify_now(&sealed, opts, &scope, dest, &mut ledger, key, progress);
        }
        Rerun::NothingNew(sealed) => {
            progress.run_started(sealed_run(&sealed));
            return finished::summary(&sealed, opts, &ledger);
        }
    };
    // What the job's earlier runs landed, to compare the walk against.
    let job_state = match &opts.job {
        Some(j) => Some(JobState::load(&opts.ledger, &j.name, None)?),
        None => None,
    };
    preflight::check(opts, &scope, &opened, &ledger, job_state.as_ref())?;
    let run = begin(&mut ledger, opts, key, &source_str, &dest_str, &scope)?;
    progress.run_started(RunStarted {
        run: run.id,
        attempt: run.attempt,
        job: opts.job.as_ref().map(|j| j.name.as_str()),
    });
    // Only a resumed run has landings to look up.
    let lookup = match run.resumed {
        true => Some(LandedLookup::open(ledger.path(), run.id)?),
        false => None,
    };
    // A file that was mid-copy when the last attempt died may be gone from
    // the source now; its partial landing must not outlive it.
    let partials_swept = if run.resumed {
        dest.sweep_partials()?
    } else {
        0
    };
    if partials_swept > 0 {
        tracing::info!(
            partials_swept,
            "removed partial landings of the interrupted attempt"
        );
    }
    let mut summary = TransferSummary::started(run, partials_swept, opts);
    let job_state = job_state.map(Mutex::new);
    let items = plan::walk(&scope, opts, dest, lookup, job_state.as_ref(), &stopper)?;
    // Where objects can be read back by name and size (a directory, blob
    // storage), each batch is re-read once durable, while later batches
    // copy; the verify after the seal counts what was found right there.
    let early = match opts.verify && dest.lists_sizes() {
        true => Some(verify::Early::new()?),
        false => None,
    };
    let pipeline = Pipeline {
        opts,
        opened: &opened,
        stopper: &stopper,
        progress,
    };
    let copied = copy_all(items, pipeline, early.as_ref(), &mut ledger, &mut summary);
    // A refused credential fails every file after it: the run ends saying
    // why, rather than as an incomplete run of failed files.
    let copied = copied.and_then(|()| match opened.dest().refused() {
        Some(reason) => Err(TransferError::Refused {
            dest: opened.dest().describe(),
            reason,
        }),
        None => Ok(()),
    });
    if let Err(e) = copied {
        // Whatever was recorded stays recorded; the run stays open.
        let _ = ledger.mark_incomplete(run.id, &json!({ "error": e.to_string() }));
        return Err(e);
    }
    summary.paused = stopper.stopped();
    if !unsealed(&mut ledger, &mut summary)? {
        return Ok(summary);
    }
    if let Some(js) = &job_state {
        let js = js.lock().expect("job state lock poisoned");
        record_deleted(&js, &mut ledger, &mut summary, opts, progress)?;
    }
    let sealing = Instant::now();
    let sealed = seal(&mut ledger, run, &source_str, &dest_str, opts, &scope, key)?;
    summary.seal_seconds = sealing.elapsed().as_secs_f64();
    let manifest_path = sealed.manifest.clone();
    summary.sealed = Some(sealed);
    if opts.verify {
        // A job's run, or a shard (whose destination also holds the
        // other shards), lists what it landed: each is read back by name.
        let listed = opts.job.is_some() || scope.shard.is_some();
        let verify_opts = verify::VerifyOptions {
            jobs: opts.jobs,
            key: None,
            by_study: false,
            early: early.as_ref(),
        };
        let report = verify_sealed(
            &manifest_path,
            dest,
            &mut ledger,
            &verify_opts,
            listed,
            key,
            progress,
        )?;
        if !report.ok() {
            summary.status = Status::VerifyFailed;
        }
        summary.verify = Some(report);
    }
    if let Some(j) = summary.job.as_mut() {
        j.source_changes = ledger.run_source_changes(run.id)?;
        j.source_changes.truncate(MAX_LISTED_FAILURES);
        let reported = j
            .source_changes
            .iter()
            .any(|c| c.change == ChangeKind::Changed && c.action == ChangeAction::Reported);
        if reported && summary.status == Status::Complete {
            summary.status = Status::SourceChanged;
        }
    }
    Ok(summary)
}

/// A sealed run found again, as the run this transfer is about.
fn sealed_run(sealed: &SealedRun) -> RunStarted<'_> {
    RunStarted {
        run: sealed.run,
        attempt: sealed.attempts,
        job: sealed.job.as_ref().map(|(name, _)| name.as_str()),
    }
}

/// Begins (or resumes) the run in the ledger.
fn begin(
    ledger: &mut Ledger,
    opts: &TransferOptions,
    key: &SigningKey,
    source: &str,
    dest: &str,
    scope: &scope::Scope,
) -> Result<RunRef, TransferError> {
    let key_id = opts.encryption.as_ref().map(EncryptionKey::id_hex);
    let run = ledger.begin_run(
        &crate::ledger::NewRun {
            source,
            destination: dest,
            selection: scope.key.as_deref(),
            encryption_key_id: key_id.as_deref(),
            wave: opts.wave.as_ref(),
            job: opts.job.as_ref().map(|j| j.name.as_str()),
        },
        key,
    )?;
    tracing::info!(
        run = run.id,
        attempt = run.attempt,
        resumed = run.resumed,
        source = %source,
        destination = %dest,
        "transfer started"
    );
    Ok(run)
}

/// What the copy works with, besides the ledger and the summary it
/// writes: the options, the destination opened, the stopper, and where
/// progress goes.
#[derive(Clone, Copy)]
struct Pipeline<'a> {
    opts: &'a TransferOptions,
    opened: &'a setup::Opened,
    stopper: &'a stop::Stopper,
    progress: &'a dyn Progress,
}

/// Copies what the walk hands out on `opts.jobs` workers, recording each
/// batch once it is durable; the summary counts every file. With `early`,
/// each recorded batch is re-read from the destination meanwhile.
fn copy_all(
    items: impl Iterator<Item = Item> + Send,
    pipeline: Pipeline<'_>,
    early: Option<&verify::Early>,
    ledger: &mut Ledger,
    summary: &mut TransferSummary,
) -> Result<(), TransferError> {
    let Some(early) = early else {
        return copy_batches(items, pipeline, None, ledger, summary);
    };
    // The early re-reads: whole batches through a short queue, each
    // object of them read on its own by as many readers as a verify has
    // (`verify::READS_PER_JOB` per job), so a batch's reads are in flight
    // at once where the device is slow to answer. When the re-reads fall
    // two batches behind, the copy waits for them: a batch left to the
    // verify after the seal would be read then at the same cost, with
    // nothing overlapping it (docs/PERFORMANCE.md, "Verify overlaps the
    // copy").
    let Pipeline {
        opts,
        opened,
        progress,
        ..
    } = pipeline;
    let dest = opened.dest();
    let (tx, rx) = crossbeam_channel::bounded::<Vec<(String, u64, String)>>(EARLY_QUEUE);
    std::thread::scope(|s| {
        let rereads = s.spawn(move || {
            crate::pool::parallel_map(
                opts.jobs.max(1) * verify::READS_PER_JOB,
                rx.into_iter().flatten(),
                |object| early.reread(dest, &object, progress),
                |done| done,
            )
        });
        let copied = copy_batches(items, pipeline, Some(tx), ledger, summary);
        let reread = crate::pool::join(rereads);
        copied.and(reread.map_err(TransferError::from))
    })
}

/// Batches waiting for their early re-read, at most.
const EARLY_QUEUE: usize = 2;

/// [`copy_all`]'s copy: each recorded batch's objects go to `early`, when
/// given.
fn copy_batches(
    items: impl Iterator<Item = Item> + Send,
    pipeline: Pipeline<'_>,
    early: Option<crossbeam_channel::Sender<Vec<(String, u64, String)>>>,
    ledger: &mut Ledger,
    summary: &mut TransferSummary,
) -> Result<(), TransferError> {
    let Pipeline {
        opts,
        opened,
        stopper,
        progress,
    } = pipeline;
    let dest = opened.dest();
    let run = summary.run.id;
    let job_run = summary.run.job_run.unwrap_or(1);
    // `--bwlimit` is a layer of the destination the files are copied to
    // (the verify after the seal reads at full speed).
    let throttled;
    let copy_to: &dyn Destination = match &opts.limits.bwlimit {
        Some(table) => {
            let rate = stop::Timetable::new(table.clone(), opts.limits.clock.clone());
            throttled = Throttled::new(dest, Throttle::new(rate));
            &throttled
        }
        None => dest,
    };
    let started = Instant::now();
    progress.begin(Phase::Transfer, None, None);
    let to = record::Recording {
        dest,
        run,
        jobs: opts.jobs,
        early,
        progress,
    };
    let (copied, recorded) = std::thread::scope(|s| {
        let recorder = Recorder::start(s, to, ledger);
        let mut batch = Batch::default();
        let copied = crate::pool::parallel_map(
            opts.jobs,
            items,
            |item| match item {
                Item::Copy(f) => copy_one(&f, copy_to, opts, stopper, progress),
                Item::Check(f, prior) => {
                    job::changed(&f, &prior, job_run, copy_to, opts, stopper, progress)
                }
                Item::Ready(done) => done,
            },
            |done| {
                batch.take(done, summary, progress);
                progress.file_done();
                // A stage that stopped did so on an error, which the
                // recorder's finish returns.
                match batch.due() && !recorder.hand(&mut batch) {
                    true => Err(()),
                    false => Ok(()),
                }
            },
        );
        if copied.is_ok() {
            recorder.hand(&mut batch);
        }
        (copied, recorder.finish())
    });
    progress.end(Phase::Transfer);
    summary.copy_seconds = started.elapsed().as_secs_f64();
    let result = recorded.map(|recorded| {
        debug_assert!(copied.is_ok(), "a recording stage stops only on an error");
        summary.flush_seconds = recorded.flush_time.as_secs_f64();
        summary.ledger_seconds = recorded.ledger_time.as_secs_f64();
        recorded.settle(summary);
    });
    if let Some(s) = opened.blob_stats() {
        use std::sync::atomic::Ordering::Relaxed;
        summary.bytes_sent = Some(s.bytes_sent.load(Relaxed));
        summary.bytes_reused = Some(s.bytes_reused.load(Relaxed));
    }
    result
}

/// A run that paused or had failures is left open, not sealed: marks it
/// so and returns `false`; `true` when it may be sealed.
fn unsealed(ledger: &mut Ledger, summary: &mut TransferSummary) -> Result<bool, TransferError> {
    let run = summary.run.id;
    if let Some(reason) = summary.paused.as_ref().filter(|_| summary.failed == 0) {
        tracing::info!(run, reason = %reason, "run paused; not sealed");
        summary.status = Status::Paused;
        ledger.mark_incomplete(
            run,
            &json!({
                "paused": reason,
                "files_copied": summary.files_copied,
                "files_skipped": summary.files_skipped,
            }),
        )?;
        return Ok(false);
    }
    if summary.failed > 0 {
        tracing::warn!(run, failed = summary.failed, "run incomplete; not sealed");
        summary.status = Status::Incomplete;
        ledger.mark_incomplete(
            run,
            &json!({
                "failed": summary.failed,
                "files_copied": summary.files_copied,
                "files_skipped": summary.files_skipped,
            }),
        )?;
        return Ok(false);
    }
    Ok(true)
}

/// The walk met every file (nothing failed, nothing paused): what the job
/// landed and the walk never met is gone from the source. It is reported,
/// and stays at the destination.
fn record_deleted(
    job_state: &JobState,
    ledger: &mut Ledger,
    summary: &mut TransferSummary,
    opts: &TransferOptions,
    progress: &dyn Progress,
) -> Result<(), TransferError> {
    let Some(j) = summary.job.as_mut() else {
        return Ok(());
    };
    let mut deleted = Vec::new();
    job_state
        .for_each_unseen(|path, manifest| deleted.push(job::deleted(path, manifest)))
        .map_err(|source| LedgerError::Sqlite {
            path: opts.ledger.clone(),
            source,
        })?;
    deleted.sort_by(|a, b| crate::relpath::cmp_components(&a.path, &b.path));
    for c in &deleted {
        progress.notice(Notice::SourceChanged {
            path: &c.path,
            change: c.change.as_str(),
            landed_in: &c.landed_in,
            action: c.action.as_str(),
        });
    }
    j.deleted = deleted.len() as u64;
    ledger.record_batch(summary.run.id, &[], &[], &[], &deleted)?;
    Ok(())
}

/// Reads back a sealed manifest's files, signature and all (the verify
/// checks the exported manifest, not a copy in memory), and records the
/// verify. `listed`: a job run's manifest lists what it landed beside what
/// the job landed before, so each is read back by name and nothing else is
/// listed (`custody verify --job` checks the whole job).
/// Verifies a sealed manifest (with `listed`, only the objects it lists,
/// by name) and records the signed `verified` event.
fn verify_sealed(
    manifest_path: &Path,
    dest: &dyn Destination,
    ledger: &mut Ledger,
    verify_opts: &verify::VerifyOptions<'_>,
    listed: bool,
    key: &SigningKey,
    progress: &dyn Progress,
) -> Result<VerifyReport, TransferError> {
    let trust = Trust::PublicKey(key.public_key().clone());
    let manifest = manifest::open_signed(manifest_path, &trust)?;
    let report = match listed {
        true => verify::verify_listed(&manifest, dest, verify_opts, progress)?,
        false => verify::verify(&manifest, dest, verify_opts, progress)?,
    };
    verify::record(ledger, &manifest.head, &report, key)?;
    Ok(report)
}
