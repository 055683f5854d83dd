//! A job's later runs: what is new is copied, what the job landed before is
//! compared by its metadata, and a file that changed since it landed is
//! never silently sent over its landed copy.
//!
//! A file the job landed with the same size and mtime is not read at all.
//! One whose size differs has changed; one whose mtime alone differs is
//! read and hashed: the same content means it was only touched. What a
//! change leads to is the `--on-source-change` policy ([`OnSourceChange`]).

use serde::Serialize;

use super::{Done, FailureClass, TransferOptions, copy_one, stop};
use crate::dest::Destination;
use crate::ledger::Prior;
use crate::manifest::{self, ChangeAction, ChangeKind, SourceChange};
use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::source::SourceFile;

/// A named job (`transfer --job NAME`).
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The job's name.
    pub name: String,
    /// What a file that changed at the source after it landed leads to.
    pub on_source_change: OnSourceChange,
}

/// `--on-source-change`: what to do with a file the job landed before whose
/// content is no longer what landed (PACS objects are immutable, so this
/// signals corruption or an edit made outside the PACS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnSourceChange {
    /// Leave the landed copy, list the file in the manifest's
    /// `source_changes`, and end the sealed run with exit 3.
    #[default]
    Report,
    /// Land the new content beside the landed copy, as
    /// `<path>.custody-v<job run>`, and list both.
    ResendAsVersion,
    /// Fail the file: the run is not sealed until the change is resolved.
    Fail,
}

/// What a job run found and did, beyond what every transfer reports.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The job's name.
    pub name: String,
    /// This run's number within the job.
    pub run: u64,
    /// Files the job landed before and found unchanged (not copied).
    pub unchanged_files: u64,
    /// Their bytes.
    pub unchanged_bytes: u64,
    /// Of those, files whose mtime changed but whose content did not
    /// (read and hashed to find out).
    pub touched_files: u64,
    /// Files changed at the source since they landed.
    pub changed: u64,
    /// Files landed before and now gone from the source (kept at the
    /// destination).
    pub deleted: u64,
    /// Each change, in path order (the first 1,000; all are in the ledger
    /// and the manifest).
    pub source_changes: Vec<SourceChange>,
}

/// Decides about a file the job landed before whose size or mtime differ
/// from what landed (the worker's half of the job's planning).
pub(super) fn changed(
    f: &SourceFile,
    prior: &Prior,
    job_run: u64,
    dest: &dyn Destination,
    opts: &TransferOptions,
    stopper: &stop::Stopper,
    progress: &dyn Progress,
) -> Done {
    let policy = opts
        .job
        .as_ref()
        .map(|j| j.on_source_change)
        .unwrap_or_default();
    if f.size == prior.size {
        match crate::source::open(&f.path).and_then(crate::digest::hash_reader) {
            Ok((_, h)) if h.to_hex().as_str() == prior.blake3 => {
                return Done::Unchanged {
                    bytes: f.size,
                    touched: true,
                };
            }
            Ok(_) => {}
            Err(e) => {
                return Done::Failed {
                    path: f.path.display().to_string(),
                    error: format!("read failed: {e}"),
                    class: FailureClass::SourceUnreadable,
                };
            }
        }
    }
    let change = |action: ChangeAction| SourceChange {
        action,
        change: ChangeKind::Changed,
        landed_in: prior.manifest.clone(),
        path: f.rel.to_string(),
    };
    match policy {
        OnSourceChange::Report => Done::Changed(change(ChangeAction::Reported), None),
        OnSourceChange::Fail => Done::Failed {
            path: f.path.display().to_string(),
            error: format!(
                "changed at source since it landed (manifest {}); not sent again \
                 (--on-source-change fail)",
                prior.manifest
            ),
            class: FailureClass::ChangedSinceLanded,
        },
        OnSourceChange::ResendAsVersion => {
            let versioned = SourceFile {
                rel: RelPath::new(manifest::versioned_path(f.rel.as_str(), job_run))
                    .expect("a suffix keeps a path valid"),
                ..f.clone()
            };
            match copy_one(&versioned, dest, opts, stopper, progress) {
                Done::Landed(mut landed, note) => {
                    landed.version_of = Some(f.rel.to_string());
                    Done::Changed(
                        change(ChangeAction::Resent),
                        Some(Box::new(Done::Landed(landed, note))),
                    )
                }
                other => other,
            }
        }
    }
}

/// A file the job landed that the walk did not meet.
pub(super) fn deleted(path: String, manifest: String) -> SourceChange {
    SourceChange {
        action: ChangeAction::Reported,
        change: ChangeKind::Deleted,
        landed_in: manifest,
        path,
    }
}
