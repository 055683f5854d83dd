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

/// What a job's run does about a file it landed before whose size or mtime
/// differ, once it knows whether the content is still what landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The same content (only its mtime moved): nothing to send.
    Unchanged,
    /// Changed: reported; the destination keeps the landed copy.
    Report,
    /// Changed: the file fails (`--on-source-change fail`).
    Fail,
    /// Changed: the new content lands beside the old, under this name.
    Resend(RelPath),
}

/// The source-change decision: `same_content` is whether the source still
/// holds the bytes that landed (known only by hashing it, and only worth
/// hashing when its size is the landed size).
pub(super) fn verdict(
    policy: OnSourceChange,
    same_content: bool,
    rel: &RelPath,
    job_run: u64,
) -> Verdict {
    match (same_content, policy) {
        (true, _) => Verdict::Unchanged,
        (false, OnSourceChange::Report) => Verdict::Report,
        (false, OnSourceChange::Fail) => Verdict::Fail,
        (false, OnSourceChange::ResendAsVersion) => Verdict::Resend(
            RelPath::new(manifest::versioned_path(rel.as_str(), job_run))
                .expect("a suffix keeps a path valid"),
        ),
    }
}

/// Decides about a file the job landed before whose size or mtime differ
/// from what landed (the worker's half of the job's planning), and acts.
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
    let same_content = f.size == prior.size
        && match crate::source::open(&f.path).and_then(crate::digest::hash_reader) {
            Ok((_, h)) => h.to_hex().as_str() == prior.blake3,
            Err(e) => {
                return Done::Failed {
                    path: f.path.display().to_string(),
                    error: format!("read failed: {e}"),
                    class: FailureClass::SourceUnreadable,
                };
            }
        };
    let change = |action: ChangeAction| SourceChange {
        action,
        change: ChangeKind::Changed,
        landed_in: prior.manifest.clone(),
        path: f.rel.to_string(),
    };
    match verdict(policy, same_content, &f.rel, job_run) {
        Verdict::Unchanged => Done::Unchanged {
            bytes: f.size,
            touched: true,
        },
        Verdict::Report => Done::Changed(change(ChangeAction::Reported), None),
        Verdict::Fail => Done::Failed {
            path: f.path.display().to_string(),
            error: format!(
                "changed at source since it landed (manifest {}); not sent again \
                 (--on-source-change fail)",
                prior.manifest
            ),
            class: FailureClass::ChangedSinceLanded,
        },
        Verdict::Resend(rel) => {
            let versioned = SourceFile { rel, ..f.clone() };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s.to_owned()).unwrap()
    }

    #[test]
    fn the_same_content_is_unchanged_whatever_the_policy() {
        for policy in [
            OnSourceChange::Report,
            OnSourceChange::Fail,
            OnSourceChange::ResendAsVersion,
        ] {
            assert_eq!(verdict(policy, true, &rel("a/IM1"), 4), Verdict::Unchanged);
        }
    }

    #[test]
    fn changed_content_goes_by_the_policy() {
        let p = rel("p1/s1/IM1.dcm");
        assert_eq!(
            verdict(OnSourceChange::Report, false, &p, 4),
            Verdict::Report
        );
        assert_eq!(verdict(OnSourceChange::Fail, false, &p, 4), Verdict::Fail);
        assert_eq!(
            verdict(OnSourceChange::ResendAsVersion, false, &p, 4),
            Verdict::Resend(rel("p1/s1/IM1.dcm.custody-v4"))
        );
        // The default policy reports.
        assert_eq!(
            verdict(OnSourceChange::default(), false, &p, 4),
            Verdict::Report
        );
    }

    #[test]
    fn a_file_gone_from_the_source_is_reported_as_deleted() {
        let c = deleted("p0/gone.dcm".into(), "20261122T214500Z-00000001".into());
        assert_eq!(
            (c.change, c.action),
            (ChangeKind::Deleted, ChangeAction::Reported)
        );
        assert_eq!(c.landed_in, "20261122T214500Z-00000001");
    }
}
