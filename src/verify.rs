//! Verifies landed data against a manifest, as a closed set.
//!
//! Every landed object is re-read and re-hashed (stored metadata is never
//! proof). The result names each file that is missing, has another size or
//! content, cannot be read, or is present at the destination without being
//! in the manifest, so files added after sealing are caught too.

pub use crate::manifest::index::StudyCompleteness;
pub use crate::progress::DiscrepancyClass;
pub use early::Early;

mod early;

use std::sync::Mutex;

use serde::Serialize;

use crate::crypt::{CryptError, DecryptReader, EncryptionKey};
use crate::dest::{DestError, Destination, Listed};
use crate::digest::{self, HashingReader};
use crate::manifest::index::{Expected, Index, IndexError};
use crate::manifest::{KeyMismatch, Manifest, ManifestError, SignedFile};
use crate::progress::{Phase, Progress, ProgressReader, Tally};
use crate::relpath::{self, RelPath};

/// Errors that make a verify impossible as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The destination cannot be listed or read at all.
    #[error(transparent)]
    Destination(#[from] DestError),
    /// The decryption key does not fit the manifest.
    #[error(transparent)]
    Key(#[from] KeyMismatch),
    /// The manifest could not be read again for its entries.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The on-disk index of expected files failed (temporary space).
    #[error("index of expected files: {0}")]
    Index(#[from] rusqlite::Error),
}

impl From<IndexError> for VerifyError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Manifest(e) => VerifyError::Manifest(e),
            IndexError::Sqlite(e) => VerifyError::Index(e),
        }
    }
}

/// One discrepancy.
#[derive(Debug, Clone, Serialize)]
pub struct Discrepancy {
    /// Its class.
    pub class: DiscrepancyClass,
    /// The relative path.
    pub path: String,
    /// Details (expected and found values, or the error).
    pub detail: String,
}

/// Counts per class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Missing files.
    pub missing: u64,
    /// Extra files.
    pub extra: u64,
    /// Size mismatches.
    pub size: u64,
    /// Hash mismatches.
    pub hash: u64,
    /// Unreadable files.
    pub unreadable: u64,
}

/// The result of a verify.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The manifest id.
    pub manifest: String,
    /// The destination checked.
    pub destination: String,
    /// Files in the manifest.
    pub files_expected: u64,
    /// Files re-read whose size and BLAKE3 match.
    pub files_verified: u64,
    /// Bytes re-read.
    pub bytes_read: u64,
    /// Files whose plaintext was also decrypted and proven (with a key).
    pub plaintext_verified: u64,
    /// Counts per class.
    pub counts: Counts,
    /// Every discrepancy, in path order.
    pub discrepancies: Vec<Discrepancy>,
    /// With `by_study`: each study's completeness, in UID order (studies
    /// come from the manifest's `dicom` objects, version 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_study: Option<Vec<StudyCompleteness>>,
}

impl VerifyReport {
    /// A report of nothing checked yet.
    fn new(manifest: &str, dest: &dyn Destination, files_expected: u64) -> Self {
        VerifyReport {
            manifest: manifest.to_owned(),
            destination: dest.describe(),
            files_expected,
            files_verified: 0,
            bytes_read: 0,
            plaintext_verified: 0,
            counts: Counts::default(),
            discrepancies: Vec::new(),
            by_study: None,
        }
    }

    /// Whether the destination matches the manifest exactly.
    pub fn ok(&self) -> bool {
        self.discrepancies.is_empty() && self.files_verified == self.files_expected
    }
}

enum Item {
    Check(RelPath, Expected),
    Report(Discrepancy),
}

enum Checked {
    Ok {
        object: String,
        bytes: u64,
        plaintext: bool,
        /// Re-read early ([`Early`]): tallied as verified then.
        early: bool,
    },
    Bad(Discrepancy),
}

/// Reads `r` to its end, in calls as large as the object (up to 256 KiB,
/// as the kernel's readahead window; [`READS_PER_JOB`] × jobs buffers are
/// in use at once): a small file is read with one call (and one more that
/// finds its end), where `std::io::copy`'s 8 KiB buffer took one call per
/// 8 KiB.
fn drain(r: &mut impl std::io::Read, size: u64) -> std::io::Result<()> {
    const MOST: u64 = 256 << 10;
    let mut buf = vec![0u8; (size.saturating_add(1)).clamp(8 << 10, MOST) as usize];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// An object re-read early with exactly the size and hash expected, as
/// checked, without reading it again (only where the stored bytes are all
/// there is to prove: no key).
fn checked_early(opts: &VerifyOptions<'_>, rel: &RelPath, e: &Expected) -> Option<Checked> {
    let early = opts
        .early
        .filter(|_| opts.key.is_none() || e.plain.is_none())?;
    // A set that cannot be read only costs a read.
    early
        .holds(rel.as_str(), e)
        .unwrap_or(false)
        .then(|| Checked::Ok {
            object: rel.to_string(),
            bytes: e.size,
            plaintext: false,
            early: true,
        })
}

fn check(
    dest: &dyn Destination,
    rel: &RelPath,
    e: &Expected,
    key: Option<&EncryptionKey>,
    progress: &dyn Progress,
) -> Checked {
    let path = rel.to_string();
    let bad = |class, detail| {
        Checked::Bad(Discrepancy {
            class,
            path: path.clone(),
            detail,
        })
    };
    let reader = match dest.open(rel) {
        Ok(r) => r,
        Err(err) => return bad(DiscrepancyClass::Unreadable, err.to_string()),
    };
    let (size, blake3) = (e.size, e.blake3.as_str());
    let mut raw = HashingReader::new(ProgressReader {
        inner: reader,
        progress,
    });
    // With a key, decrypt while reading: one read proves both the stored
    // bytes and the plaintext.
    let plaintext = match key.filter(|_| e.plain.is_some()) {
        Some(k) => match DecryptReader::new(&mut raw, k).and_then(digest::hash_reader) {
            Ok(p) => Some(p),
            Err(err) => {
                return match CryptError::from_io(&err) {
                    Some(c) => bad(DiscrepancyClass::Hash, format!("does not decrypt: {c}")),
                    None => bad(DiscrepancyClass::Unreadable, format!("read failed: {err}")),
                };
            }
        },
        None => match drain(&mut raw, e.size) {
            Ok(_) => None,
            Err(err) => return bad(DiscrepancyClass::Unreadable, format!("read failed: {err}")),
        },
    };
    let (n, h) = raw.finish();
    if n != size {
        // Where the listing gave a size, it matched: the object changed
        // since. Elsewhere (a DICOMweb service) the read is the first look.
        let since = match dest.lists_sizes() {
            true => " (changed while verifying?)",
            false => "",
        };
        return bad(
            DiscrepancyClass::Size,
            format!("expected {size} bytes, read {n}{since}"),
        );
    }
    if h.to_hex().as_str() != blake3 {
        return bad(
            DiscrepancyClass::Hash,
            format!(
                "content differs: expected blake3 {blake3}, found {}",
                h.to_hex()
            ),
        );
    }
    if let (Some((pn, ph)), Some((size, blake3))) = (plaintext, &e.plain)
        && (pn != *size || ph.to_hex().as_str() != blake3)
    {
        return bad(
            DiscrepancyClass::Hash,
            format!(
                "plaintext differs: expected {size} bytes with blake3 {blake3}, decrypted {pn} bytes with blake3 {}",
                ph.to_hex()
            ),
        );
    }
    Checked::Ok {
        object: path,
        bytes: n,
        plaintext: plaintext.is_some(),
        early: false,
    }
}

/// Objects a verify reads at once per job: a re-read waits on the device
/// (a network share's round trip, a disk's seek) far longer than its
/// hashing takes, so a verify keeps more reads outstanding than it has
/// cores (docs/PERFORMANCE.md, "More reads in flight").
pub const READS_PER_JOB: usize = 4;

/// How to verify.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'k> {
    /// Jobs (about the cores to use): [`READS_PER_JOB`] times as many
    /// objects are read at once.
    pub jobs: usize,
    /// The encryption key, to prove encrypted objects' plaintext too.
    pub key: Option<&'k EncryptionKey>,
    /// Also report each study's completeness ([`VerifyReport::by_study`]).
    pub by_study: bool,
    /// Objects a transfer re-read right after they were made durable:
    /// counted without a second read when they are exactly as expected.
    pub early: Option<&'k Early>,
}

/// Re-reads every object under `dest` and compares the set with `manifest`.
/// With `key`, encrypted objects are also decrypted and their plaintext
/// proven, in the same read.
///
/// Memory does not grow with the number of files: the manifest's entries
/// are streamed into a temporary on-disk index, and the destination is
/// listed page by page. Only the discrepancies are kept.
///
/// # Errors
/// Only errors that make the whole check impossible (the destination
/// cannot be listed, the key is not the manifest's, the manifest cannot be
/// read again); everything about individual files is in the report.
pub fn verify(
    manifest: &SignedFile,
    dest: &dyn Destination,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    if let Some(k) = opts.key {
        manifest.head.check_key_id(&k.id_hex())?;
    }
    let index = Index::build(manifest)?;
    verify_index(index, &manifest.head, dest, opts, progress)
}

/// [`verify`] against the union of several manifests, oldest first (a
/// job's chain), each opened only while its entries are read: an object a
/// later manifest lists again supersedes the earlier entry. The report is
/// named after the last manifest.
///
/// # Errors
/// As [`verify`], and the first error `manifests` yields.
pub fn verify_chain(
    manifests: impl IntoIterator<Item = Result<SignedFile, ManifestError>>,
    dest: &dyn Destination,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let mut index = Index::new()?;
    let mut last = None;
    for m in manifests {
        let m = m?;
        if let Some(k) = opts.key {
            m.head.check_key_id(&k.id_hex())?;
        }
        index.add(&m)?;
        last = Some(m.head);
    }
    let Some(head) = last else {
        return Err(VerifyError::Manifest(ManifestError::Malformed {
            path: "(chain)".into(),
            reason: "no manifest to verify against".into(),
        }));
    };
    verify_index(index, &head, dest, opts, progress)
}

fn verify_index(
    index: Index,
    head: &Manifest,
    dest: &dyn Destination,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let VerifyOptions {
        jobs,
        key,
        by_study,
        early: _,
    } = *opts;
    let (files_expected, bytes_expected) = index.totals()?;
    // A destination that lists only where it was told to look (a DICOMweb
    // service's studies) hears of every expected object first.
    index.for_each_object(|o| {
        if let Ok(rel) = RelPath::new(o) {
            dest.expect(&rel);
        }
    })?;
    let sized = dest.lists_sizes();
    let index = Mutex::new(index);
    let mut report = VerifyReport::new(&head.id, dest, files_expected);
    progress.begin(Phase::Verify, Some(files_expected), Some(bytes_expected));
    let index_ref = &index;
    let lookup = move |path: &str| {
        index_ref
            .lock()
            .expect("index lock poisoned")
            .take(path)
            .map_err(VerifyError::from)
    };
    // The walker (one thread) looks each listed object up, marking it seen.
    let mut failed: Option<VerifyError> = None;
    let failed_ref = &mut failed;
    let items = dest.list().map_while(move |listed| {
        let item = match listed {
            Ok(Listed::Object { rel, size }) => match lookup(rel.as_str()) {
                Ok(Some(e)) if sized && e.size != size => Item::Report(Discrepancy {
                    class: DiscrepancyClass::Size,
                    path: rel.to_string(),
                    detail: format!("expected {} bytes, found {size}", e.size),
                }),
                Ok(Some(e)) => Item::Check(rel, e),
                Ok(None) => Item::Report(Discrepancy {
                    class: DiscrepancyClass::Extra,
                    path: rel.to_string(),
                    detail: match sized {
                        true => format!("{size} bytes, not in the manifest"),
                        false => "not in the manifest".into(),
                    },
                }),
                Err(e) => {
                    *failed_ref = Some(e);
                    return None;
                }
            },
            Ok(Listed::Other { path, what }) => match lookup(&path) {
                Ok(listed) => Item::Report(Discrepancy {
                    class: if listed.is_some() {
                        DiscrepancyClass::Unreadable
                    } else {
                        DiscrepancyClass::Extra
                    },
                    detail: format!("{what}, not a regular file"),
                    path,
                }),
                Err(e) => {
                    *failed_ref = Some(e);
                    return None;
                }
            },
            Err(err) => Item::Report(Discrepancy {
                class: DiscrepancyClass::Unreadable,
                path: err.path().display().to_string(),
                detail: err.to_string(),
            }),
        };
        Some(item)
    });
    crate::pool::parallel_map(
        jobs.max(1) * READS_PER_JOB,
        items,
        |item| match item {
            Item::Check(rel, e) => checked_early(opts, &rel, &e)
                .unwrap_or_else(|| check(dest, &rel, &e, key, progress)),
            Item::Report(d) => Checked::Bad(d),
        },
        |checked| {
            match checked {
                Checked::Ok {
                    object,
                    bytes,
                    plaintext,
                    early,
                } => {
                    match early {
                        // Read back during the copy: tallied then.
                        true => progress.bytes(bytes),
                        false => progress.tally(Tally::Verified { bytes }),
                    }
                    report.files_verified += 1;
                    report.plaintext_verified += u64::from(plaintext);
                    report.bytes_read += bytes;
                    if by_study {
                        index_ref
                            .lock()
                            .expect("index lock poisoned")
                            .verified(&object)
                            .map_err(VerifyError::from)?;
                    }
                }
                Checked::Bad(mut d) => {
                    let source = index_ref
                        .lock()
                        .expect("index lock poisoned")
                        .source(&d.path)
                        .map_err(VerifyError::from)?;
                    if let Some(s) = source {
                        d.detail = format!("{} (source file {s})", d.detail);
                    }
                    progress.tally(Tally::Discrepancy(d.class));
                    report.discrepancies.push(d);
                }
            }
            progress.file_done();
            Ok::<(), VerifyError>(())
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    // A refused credential (a role missing, a token refused) makes every
    // read after it fail: that is a configuration problem, not a finding
    // about the landed bytes.
    if let Some(reason) = dest.refused() {
        return Err(VerifyError::Destination(DestError::Unusable {
            path: dest.describe().into(),
            reason,
        }));
    }
    let index = index.into_inner().expect("index lock poisoned");
    if by_study {
        report.by_study = Some(index.by_study()?);
    }
    index.for_each_unseen(|path, size, source| {
        let detail = match source {
            Some(s) => format!("{size} bytes expected, not found (source file {s})"),
            None => format!("{size} bytes expected, not found"),
        };
        progress.tally(Tally::Discrepancy(DiscrepancyClass::Missing));
        report.discrepancies.push(Discrepancy {
            class: DiscrepancyClass::Missing,
            path,
            detail,
        });
    })?;
    progress.end(Phase::Verify);
    finish(&mut report);
    Ok(report)
}

/// Re-reads only the objects `manifest` lists, each looked up by name (a
/// job run's delta, whose destination also holds what earlier runs
/// landed): nothing is listed, so nothing is reported as extra.
///
/// # Errors
/// The key is not the manifest's, or the manifest cannot be read again.
pub fn verify_listed(
    manifest: &SignedFile,
    dest: &dyn Destination,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let head = &manifest.head;
    if let Some(k) = opts.key {
        head.check_key_id(&k.id_hex())?;
    }
    let mut report = VerifyReport::new(&head.id, dest, manifest.file_count);
    progress.begin(
        Phase::Verify,
        Some(head.totals.files),
        Some(head.totals.bytes),
    );
    let read = crate::pool::parallel_map_pushed(
        opts.jobs.max(1) * READS_PER_JOB,
        |push| {
            manifest.for_each_file(|f| {
                push(Expected::of(f))
                    .then_some(())
                    .ok_or_else(|| "stopped".to_owned())
            })
        },
        |(object, e): (String, Expected)| {
            let bad = |class, detail| {
                Checked::Bad(Discrepancy {
                    class,
                    path: object.clone(),
                    detail,
                })
            };
            let rel = match RelPath::new(object.as_str()) {
                Ok(rel) => rel,
                Err(err) => {
                    return bad(
                        DiscrepancyClass::Unreadable,
                        format!("not a valid name: {err}"),
                    );
                }
            };
            // A destination without sizes in its listings (a DICOMweb
            // service) is asked whether it holds the object (a search), and
            // the read compares size and hash: one download, not two.
            let present = match dest.lists_sizes() {
                true => dest.landed_size(&rel),
                false => dest.holds(&rel, e.size).map(|held| held.then_some(e.size)),
            };
            match present {
                Ok(None) => bad(
                    DiscrepancyClass::Missing,
                    format!("{} bytes expected, not found", e.size),
                ),
                Ok(Some(size)) if size != e.size => bad(
                    DiscrepancyClass::Size,
                    format!("expected {} bytes, found {size}", e.size),
                ),
                Ok(Some(_)) => checked_early(opts, &rel, &e)
                    .unwrap_or_else(|| check(dest, &rel, &e, opts.key, progress)),
                Err(err) => bad(DiscrepancyClass::Unreadable, err.to_string()),
            }
        },
        |checked| {
            match checked {
                Checked::Ok {
                    bytes,
                    plaintext,
                    early,
                    ..
                } => {
                    match early {
                        // Read back during the copy: tallied then.
                        true => progress.bytes(bytes),
                        false => progress.tally(Tally::Verified { bytes }),
                    }
                    report.files_verified += 1;
                    report.plaintext_verified += u64::from(plaintext);
                    report.bytes_read += bytes;
                }
                Checked::Bad(d) => {
                    progress.tally(Tally::Discrepancy(d.class));
                    report.discrepancies.push(d);
                }
            }
            progress.file_done();
        },
    );
    read?;
    progress.end(Phase::Verify);
    finish(&mut report);
    Ok(report)
}

/// Sorts the discrepancies into path order and counts them per class.
fn finish(report: &mut VerifyReport) {
    report
        .discrepancies
        .sort_by(|a, b| relpath::cmp_components(&a.path, &b.path));
    for d in &report.discrepancies {
        let c = &mut report.counts;
        *match d.class {
            DiscrepancyClass::Missing => &mut c.missing,
            DiscrepancyClass::Extra => &mut c.extra,
            DiscrepancyClass::Size => &mut c.size,
            DiscrepancyClass::Hash => &mut c.hash,
            DiscrepancyClass::Unreadable => &mut c.unreadable,
        } += 1;
    }
}
/// Records a verify result as a signed `verified` event.
///
/// # Errors
/// Ledger errors.
pub fn record(
    ledger: &mut crate::ledger::Ledger,
    manifest: &Manifest,
    report: &VerifyReport,
    key: &crate::keys::SigningKey,
) -> Result<crate::ledger::Event, crate::ledger::LedgerError> {
    ledger.register_key(key)?;
    let mut payload = serde_json::json!({
        "counts": report.counts,
        "destination": report.destination,
        "files_verified": report.files_verified,
        "result": if report.ok() { "pass" } else { "fail" },
    });
    // With --by-study: how many studies are complete (the list itself is
    // in the report; the event stays small).
    if let Some(studies) = &report.by_study {
        let complete = studies.iter().filter(|s| s.complete()).count();
        payload["studies"] = serde_json::json!({
            "complete": complete,
            "incomplete": studies.len() - complete,
        });
    }
    ledger.append_event(
        crate::ledger::kind::VERIFIED,
        Some(manifest.run),
        Some(&manifest.id),
        &payload,
        Some(key),
    )
}
