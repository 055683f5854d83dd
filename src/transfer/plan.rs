//! Planning from the ledger: what the walk hands the workers for each
//! source file ([`Item`]): copy it, check it against what the job landed
//! before, or nothing to do (already landed for this run, excluded, failed).

use std::sync::Mutex;

use super::copy::{Done, object_rel};
use super::preflight::{lint, linter};
use super::scope::Scope;
use super::stop::Stopper;
use super::{TransferError, TransferOptions};
use crate::databox::Rule;
use crate::dest::{Destination, Naming};
use crate::ledger::{FailureClass, JobState, LandedLookup, Prior, Recorded};
use crate::relpath::RelPath;
use crate::source::dicom::InstanceUids;
use crate::source::{SourceEntry, SourceFile};

pub(super) enum Item {
    Copy(SourceFile),
    /// A file the job landed before whose size or mtime differ.
    Check(SourceFile, Prior),
    Ready(Done),
}

/// What to do with a file: skip it if the ledger recorded it for this run,
/// unchanged at the source and present at the destination with its size;
/// copy it otherwise.
pub(super) fn plan(
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
                && object(&f.rel, &rec, dest, encrypted).is_some_and(|o| {
                    dest.holds(&o, rec.stored_size.unwrap_or(rec.size))
                        .unwrap_or(false)
                }) =>
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

/// Where the destination holds what was recorded of `rel`: under its path
/// (with the encrypted suffix), or by the instance it held.
fn object(
    rel: &RelPath,
    rec: &Recorded,
    dest: &dyn Destination,
    encrypted: bool,
) -> Option<RelPath> {
    match dest.naming() {
        Naming::Path => Some(object_rel(rel, encrypted)),
        Naming::Instance => rec
            .dicom
            .as_ref()
            .and_then(InstanceUids::of)
            .and_then(|u| RelPath::new(u.path()).ok()),
    }
}

/// The walk, as the workers' items: every file is marked seen in the job's
/// state, checked against the rules when `--skip-violations` excludes as the
/// walk meets them (in walk order, as the case check needs), and planned
/// against what the ledger recorded for this run (`lookup`). Past a
/// window's end or a limit, no further file starts.
pub(super) fn walk<'a>(
    scope: &Scope,
    opts: &TransferOptions,
    dest: &'a dyn Destination,
    lookup: Option<LandedLookup>,
    job_state: Option<&'a Mutex<JobState>>,
    stopper: &'a Stopper,
) -> Result<impl Iterator<Item = Item> + Send + 'a, TransferError> {
    let encrypted = opts.encryption.is_some();
    let mut linter = match opts.skip_violations {
        true => linter(opts, dest)?,
        false => None,
    };
    let rules = match opts.placement {
        Some(_) => "Data Box rule",
        None => "destination rule",
    };
    let items = scope.walk_counted().map(move |entry| match entry {
        SourceEntry::File(f) => {
            // Every file the walk meets is marked seen, whatever happens
            // to it next: what is never seen was deleted at the source.
            let prior = match job_state.map(|js| {
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
                let own = lookup.as_ref().map(|o| (o, dest));
                // What the job landed is in the destination because the
                // job put it there: its own, not in the way (as for the
                // preflight's `known`).
                lint(l, &f, encrypted, own)
                    .into_iter()
                    .find(|v| prior.is_none() || v.rule != Rule::ExistsAtDestination)
            }) {
                Some(v) => Item::Ready(Done::Excluded {
                    path: f.rel.to_string(),
                    reason: format!("{rules} {}: {}", v.rule, v.detail).into(),
                }),
                None => plan(f, lookup.as_ref(), dest, encrypted, prior),
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
    Ok(items.take_while(|item| match item {
        Item::Copy(f) | Item::Check(f, _) => stopper.admit(f.size),
        Item::Ready(_) => stopper.stopped().is_none(),
    }))
}
