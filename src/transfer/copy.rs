//! Copying one file: one read pass that hashes (BLAKE3 and CRC64), probes
//! the DICOM header, encrypts when asked and writes to the landing, with a
//! check that the file did not change while it was read; and what each
//! file came to ([`Done`]).

use std::cell::RefCell;
use std::io::Read;

use super::{TransferOptions, stop};
use crate::crypt::{self, EncryptWriter};
use crate::dest::{Destination, Naming};
use crate::digest::{CHUNK, HashingWriter, Sums};
use crate::ledger::{FailureClass, LandedFile, Stored};
use crate::manifest::SourceChange;
use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::source::dicom::{Outcome, Probe};
use crate::source::{self, SourceFile};

pub(super) enum Done {
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
pub(super) enum Interrupted {
    /// The grace period after a stop ran out: dropped unfinished.
    Abandoned,
    /// A read or a write failed.
    Failed(FailureClass, String),
}

/// Why a file is left out of a transfer into a DICOMweb service.
pub(super) const REASON_NOT_DICOM: &str =
    "not a DICOM Part 10 file (no DICM magic); a DICOMweb service holds only DICOM instances";

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// The destination object of a source file: its own path, or with the
/// encrypted suffix.
pub(super) fn object_rel(rel: &RelPath, encrypted: bool) -> RelPath {
    if encrypted {
        RelPath::new(format!("{rel}{}", crypt::SUFFIX)).expect("a suffix keeps a path valid")
    } else {
        rel.clone()
    }
}

/// Where the bytes of one file go: straight to the landing, or through the
/// encryptor (hashing the stored bytes on the way).
pub(super) enum Output<'d> {
    Plain(Box<dyn crate::dest::Landing + 'd>),
    // Boxed: the AES key schedule makes the encryptor large.
    Encrypted(Box<EncryptWriter<HashingWriter<Box<dyn crate::dest::Landing + 'd>>>>),
}

impl Output<'_> {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Output::Plain(l) => l.write_all(buf),
            Output::Encrypted(w) => w.write_all(buf),
        }
    }

    /// Finishes the encryption (if any) and commits the landing; what is
    /// stored when it is not the plaintext (the ciphertext, or what a
    /// DICOMweb service holds of an instance).
    fn commit(self) -> Result<Option<Stored>, (FailureClass, String)> {
        let (landing, stored) = match self {
            Output::Plain(l) => {
                let held = l
                    .held()
                    .map_err(|e| (FailureClass::DicomRefused, e.to_string()))?;
                let stored = held.map(|h| Stored {
                    size: h.size,
                    blake3: h.blake3,
                    crc64: Some(h.crc64),
                });
                (l, stored)
            }
            Output::Encrypted(w) => {
                let hw = w.finish().map_err(|e| {
                    (
                        FailureClass::Destination,
                        format!("destination write failed: {e}"),
                    )
                })?;
                let (landing, sums) = hw.finish();
                let stored = Stored {
                    size: sums.len,
                    blake3: sums.blake3.to_hex().to_string(),
                    crc64: Some(crate::digest::crc64_hex(sums.crc64)),
                };
                (landing, Some(stored))
            }
        };
        landing
            .commit()
            .map_err(|e| (FailureClass::Destination, format!("destination {e}")))?;
        Ok(stored)
    }
}

/// Copies one file: one read pass that hashes, (encrypts,) and writes, with
/// a check that the file did not change while it was read.
pub(super) fn copy_one(
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
        None => Output::Plain(landing),
        Some(k) => match EncryptWriter::new(HashingWriter::new(landing), k, crypt::DEFAULT_CHUNK) {
            Ok(w) => Output::Encrypted(Box::new(w)),
            Err(e) => return fail(Dest, format!("destination write failed: {e}")),
        },
    };
    let mut sums = Sums::new();
    // The DICOM header, from the same bytes (no second read).
    let instances = dest.naming() == Naming::Instance;
    let mut probe = (opts.dicom || opts.require_deidentified || instances).then(Probe::new);
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
    if instances && matches!(outcome, Outcome::NotDicom) {
        // Never committed, so nothing was sent.
        return Done::Excluded {
            path: f.rel.to_string(),
            reason: REASON_NOT_DICOM.into(),
        };
    }
    // What the service would refuse is never sent: left out with
    // --skip-violations, else refused (the preflight passed it, so it
    // changed since).
    if let Some(profile) = super::preflight::dicomweb_profile(opts)
        && let Some(v) = crate::databox::dicom::check(f.rel.as_str(), &outcome, profile)
            .into_iter()
            .next()
    {
        return match opts.skip_violations {
            true => Done::Excluded {
                path: f.rel.to_string(),
                reason: format!("DICOMweb rule {}: {}", v.rule, v.detail).into(),
            },
            false => fail(
                FailureClass::DicomRefused,
                format!("DICOMweb rule {}: {}", v.rule, v.detail),
            ),
        };
    }
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
        Err((class, e)) => return fail(class, e),
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
