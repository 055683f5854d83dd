//! Recording: landed files, failures, exclusions and source changes go
//! to the ledger in batches, each made durable at the destination first.

use std::time::{Duration, Instant};

use super::copy::Done;
use super::{MAX_LISTED_FAILURES, TransferError, TransferSummary};
use crate::dest::Destination;
use crate::ledger::{Failure, FailureClass, LandedFile, Ledger};
use crate::manifest::{Excluded, SourceChange};
use crate::progress::{Notice, Progress, Tally};

/// Landed files recorded per ledger transaction (at most).
pub(super) const BATCH_FILES: usize = crate::pool::QUEUE_OUT;

/// Longest a landed file waits before it is recorded, when files keep coming.
pub(super) const BATCH_AGE: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(super) struct Batch {
    landed: Vec<LandedFile>,
    failed: Vec<Failure>,
    excluded: Vec<Excluded>,
    changes: Vec<SourceChange>,
    since: Option<Instant>,
    /// Where each recorded batch's objects go to be re-read early (object
    /// name, size and BLAKE3 of the stored bytes).
    pub(super) early: Option<crossbeam_channel::Sender<Vec<(String, u64, String)>>>,
    pub(super) flush_time: Duration,
    pub(super) ledger_time: Duration,
}

impl Batch {
    pub(super) fn due(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.landed.len() >= BATCH_FILES
            || self.failed.len() + self.excluded.len() + self.changes.len() >= BATCH_FILES
            || since.elapsed() >= BATCH_AGE
    }

    pub(super) fn record(
        &mut self,
        dest: &dyn Destination,
        ledger: &mut Ledger,
        run: u64,
        summary: &mut TransferSummary,
        progress: &dyn Progress,
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
        self.settle(dest, summary, progress);
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
        if let Some(early) = &self.early {
            // Durable and recorded: re-read from the device from now on.
            // (A closed queue means the re-reads stopped on an error, which
            // the copy's end reports; the verify after the seal reads all.)
            let objects = self.landed.iter().map(object_of).collect();
            let _ = early.send(objects);
        }
        self.landed.clear();
        self.failed.clear();
        self.excluded.clear();
        self.changes.clear();
        self.since = None;
        Ok(())
    }

    /// Moves the landings the destination did not keep after all (a
    /// DICOMweb service's answer, which comes with the flush) from landed
    /// to failed, in the summary too.
    fn settle(
        &mut self,
        dest: &dyn Destination,
        summary: &mut TransferSummary,
        progress: &dyn Progress,
    ) {
        let mut kept = Vec::with_capacity(self.landed.len());
        for f in std::mem::take(&mut self.landed) {
            let rejected = crate::relpath::RelPath::new(f.path.clone())
                .ok()
                .and_then(|rel| dest.rejected(&rel));
            let Some(error) = rejected else {
                kept.push(f);
                continue;
            };
            summary.files_copied -= 1;
            summary.bytes_copied -= f.size;
            summary.dicom_instances -= u64::from(f.dicom.is_some());
            summary.failed += 1;
            progress.notice(Notice::Failed {
                path: &f.path,
                error: &error,
            });
            progress.tally(Tally::Retracted { bytes: f.size });
            progress.tally(Tally::Failed(FailureClass::Destination));
            let failure = Failure {
                path: f.path,
                error,
                class: FailureClass::Destination,
            };
            if summary.failures.len() < MAX_LISTED_FAILURES {
                summary.failures.push(failure.clone());
            }
            self.failed.push(failure);
        }
        self.landed = kept;
    }

    /// Takes what one file came to: counts it in `summary`, tells
    /// `progress`, and queues what the ledger must record of it.
    pub(super) fn take(
        &mut self,
        done: Done,
        summary: &mut TransferSummary,
        progress: &dyn Progress,
    ) {
        let batch = self;
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
                progress.tally(Tally::Skipped { bytes });
            }
            Some(Done::Landed(f, note)) => {
                progress.tally(Tally::Copied { bytes: f.size });
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
                progress.tally(Tally::Skipped { bytes });
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
                progress.tally(Tally::Failed(class));
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
    }
}

/// The object a landing wrote: its name, size and BLAKE3 (the stored
/// object's, when encrypted), as the manifest will expect it.
fn object_of(f: &LandedFile) -> (String, u64, String) {
    match &f.stored {
        Some(s) => (
            format!("{}{}", f.path, crate::crypt::SUFFIX),
            s.size,
            s.blake3.clone(),
        ),
        None => (f.path.clone(), f.size, f.blake3.clone()),
    }
}
