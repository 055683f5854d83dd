//! The `Progress` trait through which the engine reports what it is doing.
//!
//! The engine never prints. The face implements this trait: bars on a
//! terminal, nothing (or log lines) otherwise. Every method has an empty
//! default so a caller implements only what it renders.

mod class;

pub use class::{DiscrepancyClass, FailureClass};

/// A stage of a command, for the renderer's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Copying and hashing source files.
    Transfer,
    /// Re-reading landed files and comparing them with a manifest.
    Verify,
    /// Decrypting encrypted objects back into a plaintext tree.
    Restore,
    /// Listing (and hashing) a source tree.
    Scan,
    /// Re-hashing and removing what a manifest landed.
    Rollback,
}

/// Something worth telling the user about one entry, as it happens.
#[derive(Debug, Clone)]
pub enum Notice<'a> {
    /// The entry failed; the run goes on and ends incomplete.
    Failed {
        /// The path (source or destination, as the message says).
        path: &'a str,
        /// The cause, one line.
        error: &'a str,
    },
    /// The entry is not carried (symbolic link, special file, bad name).
    Excluded {
        /// The path (lossy if not UTF-8).
        path: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// A file a job landed before changed or disappeared at the source
    /// (`--job`); shown even when quiet, since it needs someone's look.
    SourceChanged {
        /// The path.
        path: &'a str,
        /// `changed` or `deleted`.
        change: &'a str,
        /// The manifest that landed it.
        landed_in: &'a str,
        /// What was done: `reported` or `resent`.
        action: &'a str,
    },
    /// The file is carried, but its DICOM header could not be read, so no
    /// DICOM identity is recorded for it.
    DicomUnread {
        /// The path.
        path: &'a str,
        /// Why, naming no value.
        reason: &'a str,
    },
}

/// What became of one file, for a renderer that keeps counts (metrics).
/// Each file is tallied once, when its outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Copied to the destination in this run (its plaintext size).
    Copied {
        /// Bytes.
        bytes: u64,
    },
    /// Not copied: an earlier attempt of the run, or an earlier run of its
    /// job, landed it unchanged.
    Skipped {
        /// Bytes.
        bytes: u64,
    },
    /// Re-read at the destination, and its size and hash match.
    Verified {
        /// Bytes re-read.
        bytes: u64,
    },
    /// Tallied as copied, then refused by the destination after all (a
    /// DICOMweb service's answer, which comes with its batch's flush): no
    /// longer copied; its `Failed` tally follows.
    Retracted {
        /// Bytes.
        bytes: u64,
    },
    /// The transfer failed it.
    Failed(FailureClass),
    /// The verify found it wrong.
    Discrepancy(DiscrepancyClass),
}

/// The run a transfer works on, once the ledger has begun or resumed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStarted<'a> {
    /// The ledger's run id.
    pub run: u64,
    /// Its attempt (1 for the first).
    pub attempt: u64,
    /// The job it is a run of (named, or the implicit one), if any.
    pub job: Option<&'a str>,
}

/// Receives progress from the engine. Implementations must be cheap and
/// thread-safe: workers call them concurrently.
pub trait Progress: Sync {
    /// A phase starts; totals are given when known in advance.
    fn begin(&self, _phase: Phase, _files: Option<u64>, _bytes: Option<u64>) {}
    /// `bytes` more bytes were processed.
    fn bytes(&self, _bytes: u64) {}
    /// One more file is finished (landed, skipped or checked).
    fn file_done(&self) {}
    /// A notice about one entry.
    fn notice(&self, _notice: Notice<'_>) {}
    /// The phase ended.
    fn end(&self, _phase: Phase) {}
    /// What became of one file.
    fn tally(&self, _tally: Tally) {}
    /// The ledger has begun (or resumed) the run this progress is for.
    fn run_started(&self, _run: RunStarted<'_>) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// A reader that reports every byte it reads to a [`Progress`].
pub struct ProgressReader<'p, R> {
    /// The reader.
    pub inner: R,
    /// Where bytes are reported.
    pub progress: &'p dyn Progress,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}
