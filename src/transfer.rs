//! The transfer pipeline: the only place that spawns threads.
//!
//! ```text
//! walk (1 thread, asks the ledger what already landed)
//!   ─► bounded queue ─► workers (--jobs): read ─► BLAKE3 ─► destination write ─► commit
//!   ─► bounded queue ─► ledger writer (this thread): flush destination, record batch
//! ```
//! Each source byte is read once. Memory is bounded by the queue lengths and
//! one read buffer per worker, whatever the number or size of files. A batch
//! of landings is recorded only after [`Destination::flush`] made it durable.
//! A run with any failure is not sealed: it is recorded as incomplete and the
//! next identical command resumes it (see `docs/ledger.md`).

mod job;
mod stop;

pub use job::{JobOptions, JobSummary, OnSourceChange};
pub use stop::Limits;
// Moved to the ledger, which records them; named here too for the face.
pub use crate::ledger::{Failure, FailureClass};

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::crypt::{self, EncryptWriter, EncryptionKey};
use crate::databox::{Linter, Occupied, Placement, Rule, ShareNames, Violation};
use crate::dest::Target;
use crate::dest::blob::{Blob, BlobOptions, Overwrite};
use crate::dest::names::Names;
use crate::dest::share::Share;
use crate::dest::throttle::{Throttle, Throttled};
use crate::dest::{DestError, Destination};
use crate::digest::{CHUNK, HashingWriter, Sums};
use crate::keys::{KeyError, SigningKey, Trust};
use crate::ledger::{
    JobState, LandedFile, LandedLookup, Ledger, LedgerError, Prior, RunRef, Stored,
};
use crate::manifest::{
    self, ChainHead, ChangeAction, ChangeKind, Encryption, Excluded, Manifest, ManifestError,
    Operator, SourceChange, Tool, Totals,
};
use crate::progress::{Notice, Phase, Progress};
use crate::relpath::RelPath;
use crate::source::dicom::{Outcome, Probe};
use crate::source::{self, SourceEntry, SourceFile};
use crate::verify::{self, VerifyReport};

/// Landed files recorded per ledger transaction (at most).
const BATCH_FILES: usize = crate::pool::QUEUE_OUT;
/// Longest a landed file waits before it is recorded, when files keep coming.
const BATCH_AGE: Duration = Duration::from_millis(250);

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
}

/// How many violations a refused preflight names (all of them: `custody
/// scan SRC --dest DEST`).
pub const LISTED_VIOLATIONS: usize = 10;

/// Errors that stop a transfer as a whole (per-file failures are not
/// errors: they are counted in the summary).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
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
    /// Of those, seconds the ledger writer spent making batches durable at
    /// the destination (syncs and renames).
    pub flush_seconds: f64,
    /// Of those, seconds spent recording batches in the ledger.
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
}

/// How many failures a summary lists (all are in the ledger).
pub const MAX_LISTED_FAILURES: usize = 1000;

enum Item {
    Copy(SourceFile),
    /// A file the job landed before whose size or mtime differ.
    Check(SourceFile, Prior),
    Ready(Done),
}

enum Done {
    /// Given up in flight after a stop's grace period.
    Abandoned,
    /// Copied; with why its DICOM header could not be read, if so.
    Landed(Box<LandedFile>, Option<String>),
    Skipped {
        bytes: u64,
    },
    /// A job's earlier run landed it and it has not changed (`touched`:
    /// only its mtime has).
    Unchanged {
        bytes: u64,
        touched: bool,
    },
    /// A job's earlier landing changed at the source; with what was done
    /// about it, when something was (the new version's landing).
    Changed(SourceChange, Option<Box<Done>>),
    Excluded {
        path: String,
        reason: std::borrow::Cow<'static, str>,
    },
    Failed {
        path: String,
        error: String,
        class: FailureClass,
    },
}

/// Why a file's read loop ended early.
enum Interrupted {
    /// The grace period after a stop ran out: dropped unfinished.
    Abandoned,
    /// A read or a write failed.
    Failed(FailureClass, String),
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// The destination object of a source file: its own path, or with the
/// encrypted suffix.
fn object_rel(rel: &RelPath, encrypted: bool) -> RelPath {
    if encrypted {
        RelPath::new(format!("{rel}{}", crypt::SUFFIX)).expect("a suffix keeps a path valid")
    } else {
        rel.clone()
    }
}

/// Where the bytes of one file go: straight to the landing, or through the
/// encryptor (hashing the stored bytes on the way).
enum Sink<'d> {
    Plain(Box<dyn crate::dest::Landing + 'd>),
    // Boxed: the AES key schedule makes the encryptor large.
    Encrypted(Box<EncryptWriter<HashingWriter<Box<dyn crate::dest::Landing + 'd>>>>),
}

impl Sink<'_> {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Sink::Plain(l) => l.write_all(buf),
            Sink::Encrypted(w) => w.write_all(buf),
        }
    }

    /// Finishes the encryption (if any) and commits the landing.
    fn commit(self) -> Result<Option<Stored>, String> {
        let (landing, stored) = match self {
            Sink::Plain(l) => (l, None),
            Sink::Encrypted(w) => {
                let hw = w
                    .finish()
                    .map_err(|e| format!("destination write failed: {e}"))?;
                let (landing, sums) = hw.finish();
                let stored = Stored {
                    size: sums.len,
                    blake3: sums.blake3.to_hex().to_string(),
                    crc64: Some(crate::digest::crc64_hex(sums.crc64)),
                };
                (landing, Some(stored))
            }
        };
        landing.commit().map_err(|e| format!("destination {e}"))?;
        Ok(stored)
    }
}

/// Copies one file: one read pass that hashes, (encrypts,) and writes, with
/// a check that the file did not change while it was read.
fn copy_one(
    f: &SourceFile,
    dest: &dyn Destination,
    opts: &TransferOptions,
    stopper: &stop::Stopper,
    progress: &dyn Progress,
) -> Done {
    let key = opts.encryption.as_ref();
    let fail = |class: FailureClass, error: String| Done::Failed {
        path: f.path.display().to_string(),
        error,
        class,
    };
    use FailureClass::{
        Destination as Dest, SourceChanged as Changed, SourceUnreadable as Unreadable,
    };
    let mut file = match source::open(&f.path) {
        Ok(file) => file,
        Err(e) => return fail(Unreadable, e.to_string()),
    };
    let same = |m: &std::fs::Metadata| {
        m.len() == f.size && m.modified().map(source::mtime_ns).ok() == Some(f.mtime_ns)
    };
    match file.metadata() {
        Ok(m) if same(&m) => {}
        Ok(_) => {
            return fail(
                Changed,
                "changed after it was listed (size or mtime differ)".into(),
            );
        }
        Err(e) => return fail(Unreadable, e.to_string()),
    }
    let landing = match dest.create(&object_rel(&f.rel, key.is_some()), f.mtime_ns) {
        Ok(l) => l,
        Err(e) => return fail(Dest, format!("destination {e}")),
    };
    let mut landing = match key {
        None => Sink::Plain(landing),
        Some(k) => match EncryptWriter::new(HashingWriter::new(landing), k, crypt::DEFAULT_CHUNK) {
            Ok(w) => Sink::Encrypted(Box::new(w)),
            Err(e) => return fail(Dest, format!("destination write failed: {e}")),
        },
    };
    let mut sums = Sums::new();
    // The DICOM header, from the same bytes (no second read).
    let mut probe = (opts.dicom || opts.require_deidentified).then(Probe::new);
    let read = BUF.with_borrow_mut(|buf| -> Result<(), Interrupted> {
        loop {
            if stopper.abandon() {
                return Err(Interrupted::Abandoned);
            }
            let n = match file.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Interrupted::Failed(Unreadable, format!("read failed: {e}"))),
            };
            sums.update(&buf[..n]);
            if let Some(p) = probe.as_mut() {
                p.feed(&buf[..n]);
            }
            landing
                .write_all(&buf[..n])
                .map_err(|e| Interrupted::Failed(Dest, format!("destination write failed: {e}")))?;
            progress.bytes(n as u64);
        }
    });
    match read {
        // Dropped unfinished: nothing visible, nothing recorded.
        Err(Interrupted::Abandoned) => return Done::Abandoned,
        Err(Interrupted::Failed(class, e)) => return fail(class, e),
        Ok(()) => {}
    }
    let sums = sums.finish();
    match file.metadata() {
        Ok(m) if same(&m) && sums.len == f.size => {}
        Ok(_) => {
            return fail(
                Changed,
                "changed while being read (size or mtime differ before and after)".into(),
            );
        }
        Err(e) => return fail(Unreadable, e.to_string()),
    }
    let outcome = probe.map_or(Outcome::NotDicom, Probe::finish);
    if opts.require_deidentified
        && let Some(why) = outcome.refusal()
    {
        // Changed since the check before the run: never made visible.
        return fail(
            FailureClass::DicomRefused,
            format!("{why} (--require-deidentified)"),
        );
    }
    let stored = match landing.commit() {
        Ok(s) => s,
        Err(e) => return fail(Dest, e),
    };
    let (dicom, note) = match outcome {
        Outcome::Dicom(h) if h.instance.is_empty() => (None, None),
        Outcome::Dicom(h) => match h.instance.malformed() {
            None => (Some(h.instance), None),
            Some(why) => (None, Some(format!("DICOM identity not recorded: {why}"))),
        },
        Outcome::NotDicom => (None, None),
        Outcome::Unreadable(why) => (None, Some(why)),
    };
    let landed = LandedFile {
        path: f.rel.to_string(),
        size: sums.len,
        mtime_ns: f.mtime_ns,
        blake3: sums.blake3.to_hex().to_string(),
        crc64: Some(crate::digest::crc64_hex(sums.crc64)),
        stored,
        dicom,
        version_of: None,
    };
    Done::Landed(Box::new(landed), note)
}

/// What to do with a file: skip it if the ledger recorded it for this run,
/// unchanged at the source and present at the destination with its size;
/// copy it otherwise.
fn plan(
    f: SourceFile,
    lookup: Option<&LandedLookup>,
    dest: &dyn Destination,
    encrypted: bool,
    prior: Option<Prior>,
) -> Item {
    let item = match lookup.map(|l| l.get(f.rel.as_str())) {
        Some(Ok(Some(rec)))
            if rec.size == f.size
                && rec.mtime_ns == f.mtime_ns
                && matches!(
                    dest.landed_size(&object_rel(&f.rel, encrypted)),
                    Ok(Some(s)) if s == rec.stored_size.unwrap_or(rec.size)
                ) =>
        {
            Item::Ready(Done::Skipped { bytes: f.size })
        }
        _ => Item::Copy(f),
    };
    // What a job's earlier runs landed is compared by its metadata; only a
    // difference makes it worth a read.
    match (item, prior) {
        (Item::Copy(f), Some(p)) if p.size == f.size && p.mtime_ns == f.mtime_ns => {
            Item::Ready(Done::Unchanged {
                bytes: f.size,
                touched: false,
            })
        }
        (Item::Copy(f), Some(p)) => Item::Check(f, p),
        (item, _) => item,
    }
}

/// What the destination already holds, for the preflight's
/// `exists-at-destination` rule: a directory is asked name by name, never
/// following links (and a link or file in the way of a path is always
/// named, whatever `--overwrite` says); a container is listed once into an
/// on-disk set, unless `--overwrite` already says that existing blobs may
/// be replaced.
fn existing(
    opts: &TransferOptions,
    dest: &dyn Destination,
) -> Result<Option<Arc<dyn Occupied>>, TransferError> {
    let never = opts.blob.overwrite == Overwrite::Never;
    Ok(match &opts.destination {
        Target::Share(_) => {
            let share = Share::existing(Path::new(&dest.describe()))?;
            Some(Arc::new(ShareNames::new(share, !never)))
        }
        Target::Blob(_) if never => {
            let names = Names::list(dest)?;
            tracing::debug!(
                names = names.len(),
                "listed the container for the preflight"
            );
            Some(Arc::new(names))
        }
        Target::Blob(_) => None,
    })
}

/// The rules every file is checked against before it moves: the Data Box
/// rules of its placement, and names already taken at the destination
/// (every directory destination has those, Data Box or not). `None`:
/// nothing to check.
fn linter(opts: &TransferOptions, dest: &dyn Destination) -> Result<Option<Linter>, TransferError> {
    let existing = existing(opts, dest)?;
    Ok(match (opts.placement.clone(), existing) {
        (Some(p), existing) => Some(Linter::new(p, existing)),
        (None, Some(existing)) => Some(Linter::names_only(existing)),
        (None, None) => None,
    })
}

/// Whether a directory holds nothing (or only custody's own lock): no name
/// can be taken there, so the preflight's walk can be skipped.
fn is_empty_dir(root: &Path) -> bool {
    std::fs::read_dir(root).is_ok_and(|mut entries| {
        entries.all(|e| e.is_ok_and(|e| e.file_name() == crate::lock::DEST_LOCK))
    })
}

/// The rules `f` breaks, as the object it lands as (encrypted objects carry
/// a suffix and are larger).
///
/// In a resumed run (`own` is its landings), a name already taken at the
/// destination is the run's own if the run recorded it, or if it holds
/// exactly the size this file lands as: an attempt killed between making
/// a batch visible and recording it leaves such names behind. (Its first
/// attempt's preflight found every name free; and a blob's content is
/// still compared at landing under `--overwrite never`.)
fn lint(
    linter: &mut Linter,
    f: &SourceFile,
    encrypted: bool,
    own: Option<(&LandedLookup, &dyn Destination)>,
) -> Vec<Violation> {
    let object = object_rel(&f.rel, encrypted);
    let size = match encrypted {
        true => crypt::stored_size(f.size, crypt::DEFAULT_CHUNK),
        false => f.size,
    };
    let mut found = linter.check(object.as_str(), size);
    let ours = |(run, dest): (&LandedLookup, &dyn Destination)| {
        matches!(run.get(f.rel.as_str()), Ok(Some(_)))
            || matches!(dest.landed_size(&object), Ok(Some(s)) if s == size)
    };
    found.retain(|v| v.rule != Rule::ExistsAtDestination || !own.is_some_and(ours));
    found
}

/// Walks the whole tree (names and sizes only) against the destination's
/// rules and refuses the transfer if anything breaks one. A name the open
/// run (`own`) landed is its own, not something in the way (see [`lint`]).
///
/// In a job's later run, files the job already landed are its own and are
/// not checked again (`known`): only what is new would move.
fn preflight(
    source: &Path,
    mut linter: Linter,
    own: Option<(&LandedLookup, &dyn Destination)>,
    known: Option<&JobState>,
    encrypted: bool,
) -> Result<(), TransferError> {
    let mut first = linter
        .placement()
        .map(Placement::check_destination)
        .unwrap_or_default();
    let mut count = first.len() as u64;
    for entry in source::walk(source) {
        let SourceEntry::File(f) = entry else {
            continue;
        };
        if known.is_some_and(|k| matches!(k.contains(f.rel.as_str()), Ok(true))) {
            continue;
        }
        for v in lint(&mut linter, &f, encrypted, own) {
            count += 1;
            if first.len() < LISTED_VIOLATIONS {
                first.push(v);
            }
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(TransferError::Preflight { count, first })
    }
}

/// Reads the DICOM header of every file under `source` (nothing else) and
/// refuses the transfer if any may identify a patient or cannot be checked.
/// A file that cannot be read at all is left to the transfer, which fails
/// it without landing it.
fn require_deidentified(source: &Path, jobs: usize) -> Result<(), TransferError> {
    let mut count = 0u64;
    let mut first = Vec::new();
    let files = source::walk(source).filter_map(|e| match e {
        SourceEntry::File(f) => Some(f),
        _ => None,
    });
    crate::pool::parallel_map(
        jobs,
        files,
        |f| {
            let refusal = source::open(&f.path)
                .and_then(crate::source::dicom::probe_reader)
                .ok()
                .and_then(|o| o.refusal());
            (f.rel, refusal)
        },
        |(rel, refusal)| {
            if let Some(why) = refusal {
                count += 1;
                if first.len() < LISTED_VIOLATIONS {
                    first.push((rel.to_string(), why));
                }
            }
            Ok::<(), TransferError>(())
        },
    )?;
    match count {
        0 => Ok(()),
        _ => Err(TransferError::NotDeidentified { count, first }),
    }
}

/// Absolute, normalised form of a user path: its longest existing
/// ancestor with links resolved, then the components that do not exist yet.
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut missing = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                at = parent;
            }
            _ => return abs,
        }
    }
}

fn check_source(source: &Path) -> Result<PathBuf, TransferError> {
    let err = |reason: String| TransferError::Source {
        path: source.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(source).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    std::fs::read_dir(source).map_err(|e| err(format!("cannot list: {e}")))?;
    Ok(absolute(source))
}

fn check_manifest_dir(dir: &Path) -> Result<(), TransferError> {
    let err = |reason: String| TransferError::ManifestDir {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create: {e}")))?;
    let probe = dir.join(format!(".custody-probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| err(format!("not writable: {e}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

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
    if !opts.allow_empty && !source::walk(&source_root).any(|e| matches!(e, SourceEntry::File(_))) {
        return Err(TransferError::EmptySource { path: source_root });
    }
    let (share, blob);
    let mut blob_stats = None;
    let dest: &dyn Destination = match &opts.destination {
        Target::Share(path) => {
            // Before anything is created: a destination inside the source
            // (or holding it) is refused as it stands.
            let dest_root = absolute(path);
            if dest_root.starts_with(&source_root) || source_root.starts_with(&dest_root) {
                return Err(TransferError::Source {
                    path: source_root,
                    reason: format!("overlaps the destination {}", dest_root.display()),
                });
            }
            share = Some(Share::for_writing(path)?);
            share.as_ref().expect("just set")
        }
        Target::Blob(url) => {
            share = None;
            blob = Blob::open(url, true, &opts.blob)?;
            blob_stats = Some(blob.stats());
            &blob
        }
    };
    check_manifest_dir(&opts.manifest_dir)?;
    // Held until the run ends: a second transfer into the same place with
    // the same ledger is refused, naming this one; and a directory is
    // locked in itself, so that no transfer with another ledger (or from
    // another host) writes into it at the same time.
    let _lock = crate::lock::RunLock::acquire(&opts.ledger, &dest.describe())?;
    let _dest_lock = match &share {
        Some(s) => Some(crate::lock::RunLock::in_destination(
            s.root(),
            &dest.describe(),
            &opts.ledger,
        )?),
        None => None,
    };
    let stopper =
        stop::Stopper::start(&opts.limits).map_err(|opens| TransferError::OutsideWindow {
            window: opts
                .limits
                .window
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            opens: opens.map(|o| o.strftime("%a %Y-%m-%d %H:%M %Z").to_string()),
        })?;
    let stopper = &stopper;
    let mut ledger = Ledger::open(&opts.ledger)?;
    // What the job's earlier runs landed, to compare the walk against.
    let job_state = match &opts.job {
        Some(j) => Some(JobState::load(&opts.ledger, &j.name)?),
        None => None,
    };
    // A directory that holds nothing has no name in the way and breaks
    // no rule a walk could find (Data Box rules still apply).
    let fresh = share.as_ref().is_some_and(|s| is_empty_dir(s.root())) && opts.placement.is_none();
    let checks = match opts.skip_violations || fresh {
        true => None,
        false => linter(opts, dest)?,
    };
    if let Some(linter) = checks {
        // What the latest run of this source into this destination landed
        // (open, or sealed: the same command run again, say by a nightly
        // timer after a run that was killed during its verify) is its own,
        // not something in the way.
        let latest = ledger.latest_run(&source_root.display().to_string(), &dest.describe())?;
        let own = match latest {
            Some(id) => Some(LandedLookup::open(ledger.path(), id)?),
            None => None,
        };
        preflight(
            &source_root,
            linter,
            own.as_ref().map(|o| (o, dest)),
            job_state.as_ref(),
            opts.encryption.is_some(),
        )?;
    }
    if opts.require_deidentified {
        require_deidentified(&source_root, opts.jobs)?;
    }
    let source_str = source_root.display().to_string();
    let dest_str = dest.describe();
    let key_id = opts.encryption.as_ref().map(EncryptionKey::id_hex);
    let run = ledger.begin_run(
        &source_str,
        &dest_str,
        key,
        key_id.as_deref(),
        opts.wave.as_ref(),
        opts.job.as_ref().map(|j| j.name.as_str()),
    )?;
    tracing::info!(
        run = run.id,
        attempt = run.attempt,
        resumed = run.resumed,
        source = %source_str,
        destination = %dest_str,
        "transfer started"
    );
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

    let mut summary = TransferSummary {
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
    };
    let job_run = run.job_run.unwrap_or(1);
    let job_state = job_state.map(Mutex::new);
    let job_state_ref = job_state.as_ref();

    // The walker decides what needs copying: a file the ledger recorded for
    // this run, unchanged at the source and present at the destination with
    // its size, is not copied again.
    let dest_ref = dest;
    let encrypted = opts.encryption.is_some();
    // With --skip-violations, files that break a rule are excluded as the
    // walk meets them (in walk order, as the case check needs).
    let mut linter = match opts.skip_violations {
        true => linter(opts, dest)?,
        false => None,
    };
    let rules = match opts.placement {
        Some(_) => "Data Box rule",
        None => "destination rule",
    };
    let items = source::walk(&source_root).map(move |entry| match entry {
        SourceEntry::File(f) => {
            // Every file the walk meets is marked seen, whatever happens
            // to it next: what is never seen was deleted at the source.
            let prior = match job_state_ref.map(|js| {
                js.lock()
                    .expect("job state lock poisoned")
                    .take(f.rel.as_str())
            }) {
                Some(Err(e)) => {
                    return Item::Ready(Done::Failed {
                        path: f.path.display().to_string(),
                        error: format!("ledger lookup failed: {e}"),
                        class: FailureClass::Ledger,
                    });
                }
                Some(Ok(p)) => p,
                None => None,
            };
            match linter.as_mut().and_then(|l| {
                let own = lookup.as_ref().map(|o| (o, dest_ref));
                lint(l, &f, encrypted, own).into_iter().next()
            }) {
                Some(v) => Item::Ready(Done::Excluded {
                    path: f.rel.to_string(),
                    reason: format!("{rules} {}: {}", v.rule, v.detail).into(),
                }),
                None => plan(f, lookup.as_ref(), dest_ref, encrypted, prior),
            }
        }
        SourceEntry::Excluded { path, reason } => Item::Ready(Done::Excluded {
            path,
            reason: reason.into(),
        }),
        SourceEntry::Failed { path, error } => Item::Ready(Done::Failed {
            path: path.display().to_string(),
            error: error.to_string(),
            class: FailureClass::SourceUnreadable,
        }),
    });
    // Past a window's end or a limit, no further file starts.
    let items = items.take_while(|item| match item {
        Item::Copy(f) | Item::Check(f, _) => stopper.admit(f.size),
        Item::Ready(_) => stopper.stopped().is_none(),
    });

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
    let mut batch = Batch::default();
    let result = crate::pool::parallel_map(
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
            let done = match done {
                Done::Changed(change, then) => {
                    if let Some(j) = summary.job.as_mut() {
                        j.changed += 1;
                    }
                    progress.notice(Notice::SourceChanged {
                        path: &change.path,
                        change: change.change.as_str(),
                        landed_in: &change.landed_in,
                        action: change.action.as_str(),
                    });
                    batch.changes.push(change);
                    then.map(|d| *d)
                }
                done => Some(done),
            };
            match done {
                // (A change's follow-up is a landing, never another change.)
                None | Some(Done::Changed(..)) => {}
                Some(Done::Unchanged { bytes, touched }) => {
                    if let Some(j) = summary.job.as_mut() {
                        j.unchanged_files += 1;
                        j.unchanged_bytes += bytes;
                        j.touched_files += u64::from(touched);
                    }
                    progress.bytes(bytes);
                }
                Some(Done::Landed(f, note)) => {
                    summary.files_copied += 1;
                    summary.bytes_copied += f.size;
                    summary.dicom_instances += u64::from(f.dicom.is_some());
                    if let Some(reason) = note {
                        summary.dicom_unread += 1;
                        progress.notice(Notice::DicomUnread {
                            path: &f.path,
                            reason: &reason,
                        });
                    }
                    batch.landed.push(*f);
                }
                Some(Done::Abandoned) => summary.files_abandoned += 1,
                Some(Done::Skipped { bytes }) => {
                    summary.files_skipped += 1;
                    summary.bytes_skipped += bytes;
                    progress.bytes(bytes);
                }
                Some(Done::Excluded { path, reason }) => {
                    summary.excluded += 1;
                    progress.notice(Notice::Excluded {
                        path: &path,
                        reason: &reason,
                    });
                    batch.excluded.push(Excluded {
                        path,
                        reason: reason.into_owned(),
                    });
                }
                Some(Done::Failed { path, error, class }) => {
                    summary.failed += 1;
                    progress.notice(Notice::Failed {
                        path: &path,
                        error: &error,
                    });
                    let failure = Failure { path, error, class };
                    if summary.failures.len() < MAX_LISTED_FAILURES {
                        summary.failures.push(failure.clone());
                    }
                    batch.failed.push(failure);
                }
            }
            progress.file_done();
            if batch.due() {
                batch.record(dest, &mut ledger, run.id)?;
            }
            Ok::<(), TransferError>(())
        },
    );
    let result = result.and_then(|()| batch.record(dest, &mut ledger, run.id));
    progress.end(Phase::Transfer);
    summary.copy_seconds = started.elapsed().as_secs_f64();
    summary.flush_seconds = batch.flush_time.as_secs_f64();
    summary.ledger_seconds = batch.ledger_time.as_secs_f64();
    if let Some(s) = blob_stats {
        use std::sync::atomic::Ordering::Relaxed;
        summary.bytes_sent = Some(s.bytes_sent.load(Relaxed));
        summary.bytes_reused = Some(s.bytes_reused.load(Relaxed));
    }
    if let Err(e) = result {
        // Whatever was recorded stays recorded; the run stays open.
        let _ = ledger.mark_incomplete(run.id, &json!({ "error": e.to_string() }));
        return Err(e);
    }

    summary.paused = stopper.stopped();
    if let Some(reason) = summary.paused.as_ref().filter(|_| summary.failed == 0) {
        tracing::info!(run = run.id, reason = %reason, "run paused; not sealed");
        summary.status = Status::Paused;
        ledger.mark_incomplete(
            run.id,
            &json!({
                "paused": reason,
                "files_copied": summary.files_copied,
                "files_skipped": summary.files_skipped,
            }),
        )?;
        return Ok(summary);
    }
    if summary.failed > 0 {
        tracing::warn!(
            run = run.id,
            failed = summary.failed,
            "run incomplete; not sealed"
        );
        summary.status = Status::Incomplete;
        ledger.mark_incomplete(
            run.id,
            &json!({
                "failed": summary.failed,
                "files_copied": summary.files_copied,
                "files_skipped": summary.files_skipped,
            }),
        )?;
        return Ok(summary);
    }

    // The walk met every file (nothing failed, nothing paused): what the
    // job landed and the walk never met is gone from the source. It is
    // reported, and stays at the destination.
    if let (Some(js), Some(j)) = (&job_state, summary.job.as_mut()) {
        let mut deleted = Vec::new();
        js.lock()
            .expect("job state lock poisoned")
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
        ledger.record_batch(run.id, &[], &[], &[], &deleted)?;
    }

    let sealing = Instant::now();
    let sealed = seal(&mut ledger, run, &source_str, &dest_str, opts, key)?;
    summary.seal_seconds = sealing.elapsed().as_secs_f64();
    let manifest_path = sealed.manifest.clone();
    summary.sealed = Some(sealed);

    if opts.verify {
        // Read back what was written, signature and all: the verify checks
        // the exported manifest, not a copy in memory.
        let trust = Trust::PublicKey(key.public_key().clone());
        let manifest = manifest::open_signed(&manifest_path, &trust)?;
        let verify_opts = verify::VerifyOptions {
            jobs: opts.jobs,
            key: None,
            by_study: false,
        };
        // A job run's manifest lists what this run landed, beside what the
        // job landed before: each is read back by name, and nothing else
        // is listed (`custody verify --job` checks the whole job).
        let report = match &opts.job {
            Some(_) => verify::verify_listed(&manifest, dest, &verify_opts, progress)?,
            None => verify::verify(&manifest, dest, &verify_opts, progress)?,
        };
        verify::record(&mut ledger, &manifest.head, &report, key)?;
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

#[derive(Default)]
struct Batch {
    landed: Vec<LandedFile>,
    failed: Vec<Failure>,
    excluded: Vec<Excluded>,
    changes: Vec<SourceChange>,
    since: Option<Instant>,
    flush_time: Duration,
    ledger_time: Duration,
}

impl Batch {
    fn due(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.landed.len() >= BATCH_FILES
            || self.failed.len() + self.excluded.len() + self.changes.len() >= BATCH_FILES
            || since.elapsed() >= BATCH_AGE
    }

    fn record(
        &mut self,
        dest: &dyn Destination,
        ledger: &mut Ledger,
        run: u64,
    ) -> Result<(), TransferError> {
        if self.landed.is_empty()
            && self.failed.is_empty()
            && self.excluded.is_empty()
            && self.changes.is_empty()
        {
            return Ok(());
        }
        // Durable first, recorded second.
        let t = Instant::now();
        dest.flush()?;
        let flushed = Instant::now();
        ledger.record_batch(
            run,
            &self.landed,
            &self.failed,
            &self.excluded,
            &self.changes,
        )?;
        self.flush_time += flushed - t;
        self.ledger_time += flushed.elapsed();
        tracing::debug!(
            landed = self.landed.len(),
            failed = self.failed.len(),
            excluded = self.excluded.len(),
            "batch recorded"
        );
        self.landed.clear();
        self.failed.clear();
        self.excluded.clear();
        self.changes.clear();
        self.since = None;
        Ok(())
    }
}

/// Builds, signs, stores and writes the manifest of a finished run, as a
/// stream: the entries go from a sorted ledger query to the file without
/// being held in memory, and the signature is made from the file's hash.
fn seal(
    ledger: &mut Ledger,
    run: RunRef,
    source: &str,
    destination: &str,
    opts: &TransferOptions,
    key: &SigningKey,
) -> Result<Sealed, TransferError> {
    let excluded = ledger.manifest_excluded(run.id)?;
    let head: ChainHead = ledger.head()?;
    let created = jiff::Timestamp::now();
    let encryption = opts.encryption.as_ref().map(|k| Encryption {
        chunk_size: crypt::DEFAULT_CHUNK,
        key_id: k.id_hex(),
        scheme: crypt::SCHEME.to_owned(),
    });
    // A run resumed across the upgrade to ledger schema 3 has files
    // without a CRC64: its manifest is written in the older version, with
    // no CRC64 (and no DICOM identity) at all. Files landed before schema 4
    // simply have no `dicom` object.
    let crc64 = ledger.run_has_crc64(run.id)?;
    // The run's wave, as recorded when it started (a later attempt may
    // have been resumed without its plan).
    let wave = ledger.run_wave(run.id)?;
    // A job's run links to the job's previous manifest, and lists the
    // source changes its last attempt found.
    let job = match ledger.run_job(run.id)? {
        Some((name, n)) => Some(manifest::Job {
            previous: ledger.job_link(&name, n)?,
            name,
            run: n,
        }),
        None => None,
    };
    let source_changes = match job {
        Some(_) => Some(ledger.run_source_changes(run.id)?).filter(|c| !c.is_empty()),
        None => None,
    };
    let version = match (crc64, &encryption) {
        (true, _) if job.is_some() => manifest::VERSION_JOB,
        (true, _) if wave.is_some() => manifest::VERSION_WAVE,
        (true, _) => manifest::VERSION_DICOM,
        (false, Some(_)) => manifest::VERSION_ENCRYPTED,
        (false, None) => manifest::VERSION,
    };
    let mut m = Manifest {
        created: created.to_string(),
        destination: destination.to_owned(),
        encryption,
        excluded: Vec::new(),
        files: Vec::new(),
        format: manifest::FORMAT.to_owned(),
        host: crate::host_name(),
        id: manifest::new_id(created),
        ledger_head: head,
        operator: Operator {
            identity: key.identity(),
            key_fingerprint: key.fingerprint(),
        },
        run: run.id,
        source: source.to_owned(),
        tool: Tool {
            name: "custody".to_owned(),
            version: crate::TOOL_VERSION.to_owned(),
        },
        totals: Totals {
            bytes: 0,
            excluded: 0,
            files: 0,
        },
        version,
        wave: wave.filter(|_| version >= manifest::VERSION_WAVE),
        job,
        source_changes,
    };
    let json_path = opts.manifest_dir.join(format!("{}.json", m.id));
    let sig_path = manifest::signature_path(&json_path);
    let tmp = opts.manifest_dir.join(format!(".{}.json.tmp", m.id));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let written = ledger.with_manifest_files(run.id, |files| {
        let files = files.map(|f| {
            f.map(|mut f| {
                if !crc64 {
                    f.crc64 = None;
                    f.dicom = None;
                    if let Some(st) = &mut f.stored {
                        st.crc64 = None;
                    }
                }
                f
            })
        });
        manifest::write_canonical(&m, excluded.into_iter().map(Ok), files, &file)
    })?;
    let written = written.map_err(|e| match e {
        manifest::WriteError::Source(e) => TransferError::Ledger(e),
        manifest::WriteError::Io(e) => TransferError::Manifest(io(&tmp)(e)),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    m.totals = written.totals.clone();
    let signature = manifest::sign_written(&written, key)?;
    // The ledger is the record of truth: seal there first, then export.
    let mut bytes = File::open(&tmp).map_err(io(&tmp))?;
    ledger.seal(&m, &written, &mut bytes, &signature, key)?;
    std::fs::rename(&tmp, &json_path).map_err(io(&json_path))?;
    write_durable(&sig_path, signature.as_bytes())?;
    tracing::info!(manifest = %m.id, files = m.totals.files, bytes = m.totals.bytes, "sealed");
    Ok(Sealed {
        id: m.id.clone(),
        manifest: json_path,
        signature: sig_path,
        files: m.totals.files,
        bytes: m.totals.bytes,
    })
}

/// Writes `bytes` to `path` atomically and durably (temporary file, fsync,
/// rename, directory fsync).
///
/// # Errors
/// I/O errors naming `path`.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    use std::io::Write;
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    // Readable by owner and group only: a manifest names every file.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(io)?
    };
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}
