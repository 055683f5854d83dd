//! Recording: landed files, failures, exclusions and source changes go
//! to the ledger in batches, each made durable at the destination first.
//!
//! Three threads share the work, so that none of them caps a copy of many
//! small files: the calling thread gathers what each file came to into a
//! [`Batch`]; a flusher makes each batch durable at the destination (a
//! share's syncs, and its renames fanned out over `jobs` threads); a
//! recorder, which owns the ledger, writes the batch's rows and hands its
//! objects to the early re-reads. A batch is recorded only after its flush,
//! and batches are flushed and recorded in the order they were gathered.

use std::time::{Duration, Instant};

use super::copy::Done;
use super::{MAX_LISTED_FAILURES, TransferError, TransferSummary};
use crate::dest::{DestError, Destination, Fan, Part};
use crate::ledger::{Failure, FailureClass, LandedFile, Ledger};
use crate::manifest::{Excluded, SourceChange};
use crate::progress::{Notice, Progress, Tally};

/// Landed files recorded per ledger transaction (at most).
pub(super) const BATCH_FILES: usize = crate::pool::QUEUE_OUT;

/// Longest a landed file waits before it is recorded, when files keep coming.
pub(super) const BATCH_AGE: Duration = Duration::from_millis(250);

/// What the files of one batch came to, as the ledger records it.
#[derive(Default)]
pub(super) struct Batch {
    landed: Vec<LandedFile>,
    failed: Vec<Failure>,
    excluded: Vec<Excluded>,
    changes: Vec<SourceChange>,
    since: Option<Instant>,
}

/// An object to re-read early: its name, size and BLAKE3 (the stored
/// bytes').
pub(super) type Object = (String, u64, String);

/// Where the recorded batches go, besides the ledger.
pub(super) struct Recording<'a> {
    pub dest: &'a dyn Destination,
    pub run: u64,
    /// Threads a flush's independent parts run on.
    pub jobs: usize,
    /// Where each recorded batch's objects go to be re-read early.
    pub early: Option<crossbeam_channel::Sender<Vec<Object>>>,
    pub progress: &'a dyn Progress,
}

/// What the flusher and the recorder did, once both are done.
#[derive(Default)]
pub(super) struct Recorded {
    /// The flusher's busy time: syncs and renames.
    pub flush_time: Duration,
    /// The recorder's busy time: the ledger's rows.
    pub ledger_time: Duration,
    retracted: Retracted,
}

/// Landings the destination did not keep after all (a DICOMweb service's
/// answer, which comes with the flush): counted as landed when gathered,
/// taken back from the summary at the end.
#[derive(Default)]
struct Retracted {
    files: u64,
    bytes: u64,
    dicom: u64,
    failures: Vec<Failure>,
}

impl Recorded {
    /// Takes the retracted landings back from `summary`'s counts.
    pub(super) fn settle(self, summary: &mut TransferSummary) {
        let r = self.retracted;
        summary.files_copied -= r.files;
        summary.bytes_copied -= r.bytes;
        summary.dicom_instances -= r.dicom;
        summary.failed += r.files;
        let room = MAX_LISTED_FAILURES.saturating_sub(summary.failures.len());
        summary.failures.extend(r.failures.into_iter().take(room));
    }
}

/// A batch made durable, on its way to the ledger: with the landings the
/// destination rejected (index into `landed`, and why).
struct Flushed {
    batch: Batch,
    rejected: Vec<(usize, String)>,
}

/// The flusher and the recorder at work; [`Recorder::finish`] ends them.
pub(super) struct Recorder<'scope> {
    to_flush: crossbeam_channel::Sender<Batch>,
    flusher: std::thread::ScopedJoinHandle<'scope, Result<Duration, TransferError>>,
    recorder: std::thread::ScopedJoinHandle<'scope, Result<Recorded, TransferError>>,
}

impl<'scope> Recorder<'scope> {
    /// Starts the flusher and the recorder (which takes the ledger) in `s`.
    pub(super) fn start<'env>(
        s: &'scope std::thread::Scope<'scope, 'env>,
        to: Recording<'env>,
        ledger: &'env mut Ledger,
    ) -> Self {
        // One batch waits for each stage at most: memory stays a few
        // batches, whatever the run.
        let (to_flush, flush_rx) = crossbeam_channel::bounded::<Batch>(1);
        let (to_record, record_rx) = crossbeam_channel::bounded::<Flushed>(1);
        let Recording {
            dest,
            run,
            jobs,
            early,
            progress,
        } = to;
        // Named, so that `perf` and `top -H` tell the stages apart.
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        let flusher = spawn("custody-flush")
            .spawn_scoped(s, move || {
                let fan = OnThreads(jobs);
                let mut busy = Duration::ZERO;
                for batch in flush_rx {
                    let t = Instant::now();
                    // Durable first, recorded second.
                    dest.flush_fanned(&fan)?;
                    let rejected = batch
                        .landed
                        .iter()
                        .enumerate()
                        .filter_map(|(i, f)| {
                            let rel = crate::relpath::RelPath::new(f.path.clone()).ok()?;
                            Some((i, dest.rejected(&rel)?))
                        })
                        .collect();
                    busy += t.elapsed();
                    if to_record.send(Flushed { batch, rejected }).is_err() {
                        break;
                    }
                }
                Ok(busy)
            })
            .expect("a thread for the flusher");
        let recorder = spawn("custody-record")
            .spawn_scoped(s, move || {
                let mut recorded = Recorded::default();
                for Flushed {
                    mut batch,
                    rejected,
                } in record_rx
                {
                    let t = Instant::now();
                    recorded.retracted.take(&mut batch, rejected, progress);
                    ledger.record_batch(
                        run,
                        &batch.landed,
                        &batch.failed,
                        &batch.excluded,
                        &batch.changes,
                    )?;
                    recorded.ledger_time += t.elapsed();
                    tracing::debug!(
                        landed = batch.landed.len(),
                        failed = batch.failed.len(),
                        excluded = batch.excluded.len(),
                        "batch recorded"
                    );
                    if let Some(early) = &early {
                        // Durable and recorded: re-read from the device from
                        // now on. (A closed queue means the re-reads stopped
                        // on an error, which the copy's end reports; the
                        // verify after the seal reads all.)
                        let _ = early.send(batch.landed.iter().map(object_of).collect());
                    }
                }
                Ok(recorded)
            })
            .expect("a thread for the recorder");
        Recorder {
            to_flush,
            flusher,
            recorder,
        }
    }

    /// Hands `batch`'s contents on to be flushed and recorded (waiting
    /// while the flusher is a batch behind); `false` when a stage stopped
    /// on an error, which [`Recorder::finish`] returns.
    pub(super) fn hand(&self, batch: &mut Batch) -> bool {
        if batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(batch);
        self.to_flush.send(batch).is_ok()
    }

    /// Waits for every batch handed on to be flushed and recorded.
    ///
    /// # Errors
    /// The first stage's error: a failed flush (nothing of that batch or
    /// later is recorded; what was flushed before it is) or ledger write.
    pub(super) fn finish(self) -> Result<Recorded, TransferError> {
        drop(self.to_flush);
        let flushed = crate::pool::join(self.flusher);
        let recorded = crate::pool::join(self.recorder);
        let flush_time = flushed?;
        recorded.map(|r| Recorded { flush_time, ..r })
    }
}

/// A [`Fan`] on up to `jobs` threads of the pool.
struct OnThreads(usize);

impl Fan for OnThreads {
    fn ways(&self) -> usize {
        self.0.max(1)
    }

    fn run(&self, parts: usize, part: &Part<'_>) -> Result<(), DestError> {
        if parts <= 1 {
            return (0..parts).try_for_each(part);
        }
        crate::pool::parallel_map(self.0.min(parts), 0..parts, part, |done| done)
    }
}

impl Retracted {
    /// Moves the landings of `batch` the destination rejected from landed
    /// to failed, telling `progress`.
    fn take(&mut self, batch: &mut Batch, rejected: Vec<(usize, String)>, progress: &dyn Progress) {
        if rejected.is_empty() {
            return;
        }
        // In the order of `landed`, as the flusher found them.
        let mut why = rejected.into_iter().peekable();
        let mut kept = Vec::with_capacity(batch.landed.len());
        for (i, f) in std::mem::take(&mut batch.landed).into_iter().enumerate() {
            let Some((_, error)) = why.next_if(|(at, _)| *at == i) else {
                kept.push(f);
                continue;
            };
            self.files += 1;
            self.bytes += f.size;
            self.dicom += u64::from(f.dicom.is_some());
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
            if self.failures.len() < MAX_LISTED_FAILURES {
                self.failures.push(failure.clone());
            }
            batch.failed.push(failure);
        }
        batch.landed = kept;
    }
}

impl Batch {
    /// Whether the batch should be handed on now: full, or its first file
    /// has waited [`BATCH_AGE`].
    pub(super) fn due(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.landed.len() >= BATCH_FILES
            || self.failed.len() + self.excluded.len() + self.changes.len() >= BATCH_FILES
            || since.elapsed() >= BATCH_AGE
    }

    fn is_empty(&self) -> bool {
        self.landed.is_empty()
            && self.failed.is_empty()
            && self.excluded.is_empty()
            && self.changes.is_empty()
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
fn object_of(f: &LandedFile) -> Object {
    match &f.stored {
        Some(s) => (
            format!("{}{}", f.path, crate::crypt::SUFFIX),
            s.size,
            s.blake3.clone(),
        ),
        None => (f.path.clone(), f.size, f.blake3.clone()),
    }
}
