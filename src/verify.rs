//! Verifies landed data against a manifest, as a closed set.
//!
//! Every landed object is re-read and re-hashed (stored metadata is never
//! proof). The result names each file that is missing, has another size or
//! content, cannot be read, or is present at the destination without being
//! in the manifest, so files added after sealing are caught too.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::crypt::{CryptError, DecryptReader, EncryptionKey};
use crate::dest::{DestError, Destination, Listed};
use crate::digest::{self, HashingReader};
use crate::manifest::{FileEntry, KeyMismatch, Manifest};
use crate::progress::{Phase, Progress};
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
}

/// The class of one discrepancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// In the manifest, absent at the destination.
    Missing,
    /// At the destination, absent from the manifest.
    Extra,
    /// Present with another size.
    Size,
    /// Same size, other content.
    Hash,
    /// Present but could not be read (or not a regular file).
    Unreadable,
}

/// One discrepancy.
#[derive(Debug, Clone, Serialize)]
pub struct Discrepancy {
    /// Its class.
    pub class: Class,
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
}

impl VerifyReport {
    /// Whether the destination matches the manifest exactly.
    pub fn ok(&self) -> bool {
        self.discrepancies.is_empty() && self.files_verified == self.files_expected
    }
}

enum Item<'m> {
    Check(RelPath, &'m FileEntry),
    Report(Discrepancy, Option<String>),
}

enum Checked {
    Ok {
        path: String,
        bytes: u64,
        plaintext: bool,
    },
    Bad(Discrepancy, Option<String>),
}

/// The object path, size and hash a manifest entry expects at the
/// destination: the stored object when encrypted, else the plaintext.
fn expected_object(e: &FileEntry) -> (&str, u64, &str) {
    match &e.stored {
        Some(s) => (&s.path, s.size, &s.blake3),
        None => (&e.path, e.size, &e.blake3),
    }
}

fn check(
    dest: &dyn Destination,
    rel: &RelPath,
    e: &FileEntry,
    key: Option<&EncryptionKey>,
    progress: &dyn Progress,
) -> Checked {
    let path = rel.to_string();
    let bad = |class, detail| {
        Checked::Bad(
            Discrepancy {
                class,
                path: path.clone(),
                detail,
            },
            Some(path.clone()),
        )
    };
    let reader = match dest.open(rel) {
        Ok(r) => r,
        Err(err) => return bad(Class::Unreadable, err.to_string()),
    };
    let (_, size, blake3) = expected_object(e);
    let mut raw = HashingReader::new(ProgressReader {
        inner: reader,
        progress,
    });
    // With a key, decrypt while reading: one read proves both the stored
    // bytes and the plaintext.
    let plaintext = match key.filter(|_| e.stored.is_some()) {
        Some(k) => match DecryptReader::new(&mut raw, k).and_then(digest::hash_reader) {
            Ok(p) => Some(p),
            Err(err) => {
                return match CryptError::from_io(&err) {
                    Some(c) => bad(Class::Hash, format!("does not decrypt: {c}")),
                    None => bad(Class::Unreadable, format!("read failed: {err}")),
                };
            }
        },
        None => match std::io::copy(&mut raw, &mut std::io::sink()) {
            Ok(_) => None,
            Err(err) => return bad(Class::Unreadable, format!("read failed: {err}")),
        },
    };
    let (n, h) = raw.finish();
    if n != size {
        return bad(
            Class::Size,
            format!("expected {size} bytes, read {n} (changed while verifying?)"),
        );
    }
    if h.to_hex().as_str() != blake3 {
        return bad(
            Class::Hash,
            format!(
                "content differs: expected blake3 {blake3}, found {}",
                h.to_hex()
            ),
        );
    }
    if let Some((pn, ph)) = plaintext
        && (pn != e.size || ph.to_hex().as_str() != e.blake3)
    {
        return bad(
            Class::Hash,
            format!(
                "plaintext differs: expected {} bytes with blake3 {}, decrypted {pn} bytes with blake3 {}",
                e.size,
                e.blake3,
                ph.to_hex()
            ),
        );
    }
    Checked::Ok {
        path,
        bytes: n,
        plaintext: plaintext.is_some(),
    }
}

struct ProgressReader<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

/// Re-reads every object under `dest` and compares the set with `manifest`.
/// With `key`, encrypted objects are also decrypted and their plaintext
/// proven, in the same read.
///
/// # Errors
/// Only errors that make the whole check impossible (the destination
/// cannot be listed, the key is not the manifest's); everything about
/// individual files is in the report.
pub fn verify(
    manifest: &Manifest,
    dest: &dyn Destination,
    jobs: usize,
    key: Option<&EncryptionKey>,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    if let Some(k) = key {
        manifest.check_key_id(&k.id_hex())?;
    }
    let expected: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (expected_object(f).0, f))
        .collect();
    let mut seen: HashSet<String> = HashSet::with_capacity(expected.len());
    let mut report = VerifyReport {
        manifest: manifest.id.clone(),
        destination: dest.describe(),
        files_expected: manifest.files.len() as u64,
        files_verified: 0,
        bytes_read: 0,
        plaintext_verified: 0,
        counts: Counts::default(),
        discrepancies: Vec::new(),
    };
    progress.begin(
        Phase::Verify,
        Some(manifest.totals.files),
        Some(manifest.totals.bytes),
    );
    let expected_ref = &expected;
    let items = dest.list().map(move |listed| match listed {
        Ok(Listed::Object { rel, size }) => match expected_ref.get(rel.as_str()) {
            Some(e) if expected_object(e).1 != size => {
                let path = rel.to_string();
                Item::Report(
                    Discrepancy {
                        class: Class::Size,
                        path: path.clone(),
                        detail: format!("expected {} bytes, found {size}", expected_object(e).1),
                    },
                    Some(path),
                )
            }
            Some(e) => Item::Check(rel, e),
            None => Item::Report(
                Discrepancy {
                    class: Class::Extra,
                    path: rel.to_string(),
                    detail: format!("{size} bytes, not in the manifest"),
                },
                None,
            ),
        },
        Ok(Listed::Other { path, what }) => {
            let listed = expected_ref.contains_key(path.as_str());
            Item::Report(
                Discrepancy {
                    class: if listed {
                        Class::Unreadable
                    } else {
                        Class::Extra
                    },
                    detail: format!("{what}, not a regular file"),
                    path: path.clone(),
                },
                listed.then_some(path),
            )
        }
        Err(err) => Item::Report(
            Discrepancy {
                class: Class::Unreadable,
                path: match &err {
                    DestError::Io { path, .. } | DestError::Unusable { path, .. } => {
                        path.display().to_string()
                    }
                },
                detail: err.to_string(),
            },
            None,
        ),
    });
    crate::transfer::parallel_map(
        jobs,
        items,
        |item| match item {
            Item::Check(rel, e) => check(dest, &rel, e, key, progress),
            Item::Report(d, seen) => Checked::Bad(d, seen),
        },
        |checked| {
            match checked {
                Checked::Ok {
                    path,
                    bytes,
                    plaintext,
                } => {
                    report.files_verified += 1;
                    report.plaintext_verified += u64::from(plaintext);
                    report.bytes_read += bytes;
                    seen.insert(path);
                }
                Checked::Bad(d, was_seen) => {
                    if let Some(p) = was_seen {
                        seen.insert(p);
                    }
                    report.discrepancies.push(d);
                }
            }
            progress.file_done();
            Ok::<(), DestError>(())
        },
    )?;
    for f in &manifest.files {
        let (path, size, _) = expected_object(f);
        if !seen.contains(path) {
            report.discrepancies.push(Discrepancy {
                class: Class::Missing,
                path: path.to_owned(),
                detail: format!("{size} bytes expected, not found"),
            });
        }
    }
    progress.end(Phase::Verify);
    report
        .discrepancies
        .sort_by(|a, b| relpath::cmp_components(&a.path, &b.path));
    for d in &report.discrepancies {
        let c = &mut report.counts;
        *match d.class {
            Class::Missing => &mut c.missing,
            Class::Extra => &mut c.extra,
            Class::Size => &mut c.size,
            Class::Hash => &mut c.hash,
            Class::Unreadable => &mut c.unreadable,
        } += 1;
    }
    Ok(report)
}
