//! Restores the plaintext tree from encrypted landed objects.
//!
//! Every `*.custody-enc` object under the source is decrypted into the
//! destination under its name without the suffix. Plaintext is written to a
//! temporary name and renamed only after the final chunk authenticated (and,
//! with a manifest, after the plaintext's size and BLAKE3 matched), so a
//! tampered or truncated object leaves nothing under its final name.
//!
//! The destination is written as a share is (`dest::share`): nothing is
//! ever written through a symbolic link found under it, and a file already
//! under a plaintext's name is left alone (that object fails, named)
//! unless the caller allows overwriting.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;

use crate::crypt::{CryptError, DecryptReader, EncryptionKey, SUFFIX};
use crate::dest::share::Share;
use crate::dest::{DestError, Destination, Listed};
use crate::manifest::{FileEntry, KeyMismatch, Manifest};
use crate::progress::{Notice, Phase, Progress};
use crate::relpath::{self, RelPath};

/// Errors that stop a restore as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The source or destination cannot be used.
    #[error(transparent)]
    Destination(#[from] DestError),
    /// The key does not fit the manifest.
    #[error(transparent)]
    Key(#[from] KeyMismatch),
}

/// One object that could not be restored (or, with a manifest, is missing
/// or unexpected).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreProblem {
    /// The object's path relative to the source.
    pub path: String,
    /// What went wrong.
    pub problem: String,
    /// The object was made under another key (a configuration problem,
    /// not damage).
    pub wrong_key: bool,
}

/// The result of a restore.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// Objects decrypted and landed.
    pub restored: u64,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Restored files whose plaintext matched the manifest.
    pub matched_manifest: u64,
    /// Files under the source that are not encrypted objects (left alone).
    pub skipped: Vec<String>,
    /// Everything that failed, in path order.
    pub problems: Vec<RestoreProblem>,
}

impl RestoreReport {
    /// Whether every object was restored (and matched, with a manifest).
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether every problem is an object made under another key: the
    /// wrong key was given, nothing is damaged.
    pub fn only_wrong_key(&self) -> bool {
        !self.problems.is_empty() && self.problems.iter().all(|p| p.wrong_key)
    }
}

enum Item<'m> {
    Object(RelPath, RelPath, Option<&'m FileEntry>),
    Problem(RestoreProblem),
    Skipped(String),
}

enum Done {
    Restored { bytes: u64, matched: bool },
    Problem(RestoreProblem),
    Skipped(String),
}

fn restore_one(
    src: &Share,
    dst: &Share,
    obj: &RelPath,
    plain: &RelPath,
    expect: Option<&FileEntry>,
    key: &EncryptionKey,
    progress: &dyn Progress,
) -> Done {
    let problem = |p: String| {
        Done::Problem(RestoreProblem {
            path: obj.to_string(),
            problem: p,
            wrong_key: false,
        })
    };
    let mtime = std::fs::metadata(obj.to_fs(src.root()))
        .and_then(|m| m.modified())
        .map(crate::source::mtime_ns)
        .unwrap_or(0);
    let reader = match src.open(obj) {
        Ok(r) => r,
        Err(e) => return problem(e.to_string()),
    };
    let mut landing = match dst.create(plain, mtime) {
        Ok(l) => l,
        Err(e) => return problem(format!("destination {e}")),
    };
    let mut dec = match DecryptReader::new(reader, key) {
        Ok(d) => d,
        Err(e) => {
            let wrong_key = matches!(CryptError::from_io(&e), Some(CryptError::WrongKey { .. }));
            return Done::Problem(RestoreProblem {
                path: obj.to_string(),
                problem: describe(&e),
                wrong_key,
            });
        }
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // Dropping the landing removes the partial plaintext.
            Err(e) => return problem(describe(&e)),
        };
        hasher.update(&buf[..n]);
        if let Err(e) = landing.write_all(&buf[..n]) {
            return problem(format!("destination write failed: {e}"));
        }
        total += n as u64;
        progress.bytes(n as u64);
    }
    let hash = hasher.finalize();
    if let Some(e) = expect
        && (e.size != total || e.blake3 != hash.to_hex().as_str())
    {
        return problem(format!(
            "plaintext differs from the manifest: expected {} bytes with blake3 {}, got {total} bytes with blake3 {}",
            e.size,
            e.blake3,
            hash.to_hex()
        ));
    }
    if let Err(e) = landing.commit() {
        return problem(format!("destination {e}"));
    }
    Done::Restored {
        bytes: total,
        matched: expect.is_some(),
    }
}

fn describe(e: &std::io::Error) -> String {
    match CryptError::from_io(e) {
        Some(c) => format!("does not decrypt: {c}"),
        None => format!("read failed: {e}"),
    }
}

/// Decrypts every encrypted object under `source` into `destination`.
/// With `manifest`, the set is closed: each restored file's plaintext must
/// match its entry, and entries with no object under `source` are reported.
/// Without `overwrite`, a file already under a plaintext's name is a
/// problem for that object, and is left as it is.
///
/// # Errors
/// Unusable source or destination, or a key that is not the manifest's.
pub fn restore(
    source: &Path,
    destination: &Path,
    key: &EncryptionKey,
    manifest: Option<&Manifest>,
    jobs: usize,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    if let Some(m) = manifest {
        m.check_key_id(&key.id_hex())?;
    }
    let src = Share::existing(source)?;
    let dst = Share::for_writing(destination)?.replacing(overwrite);
    let expected: Option<HashMap<&str, &FileEntry>> = manifest.map(|m| {
        m.files
            .iter()
            .filter_map(|f| f.stored.as_ref().map(|s| (s.path.as_str(), f)))
            .collect()
    });
    let mut seen: HashSet<String> = HashSet::new();
    let expected_ref = expected.as_ref();
    let items = src.list().map(move |listed| match listed {
        Ok(Listed::Object { rel, .. }) => match rel.as_str().strip_suffix(SUFFIX) {
            Some(plain) if !plain.ends_with('/') && !plain.is_empty() => {
                let plain = RelPath::new(plain).expect("a prefix of a valid path stays valid");
                match expected_ref.map(|m| m.get(rel.as_str()).copied()) {
                    Some(None) => Item::Problem(RestoreProblem {
                        path: rel.to_string(),
                        problem: "not in the manifest".into(),
                        wrong_key: false,
                    }),
                    entry => Item::Object(rel, plain, entry.flatten()),
                }
            }
            _ => Item::Skipped(rel.to_string()),
        },
        Ok(Listed::Other { path, what }) => Item::Skipped(format!("{path} ({what})")),
        Err(e) => Item::Problem(RestoreProblem {
            path: source.display().to_string(),
            problem: e.to_string(),
            wrong_key: false,
        }),
    });
    let mut report = RestoreReport::default();
    progress.begin(Phase::Restore, manifest.map(|m| m.totals.files), None);
    crate::pool::parallel_map(
        jobs,
        items,
        |item| match item {
            Item::Object(obj, plain, entry) => {
                let done = restore_one(&src, &dst, &obj, &plain, entry, key, progress);
                (Some(obj.to_string()), done)
            }
            Item::Problem(p) => (None, Done::Problem(p)),
            Item::Skipped(s) => (None, Done::Skipped(s)),
        },
        |(obj, done)| {
            if let Some(o) = obj {
                seen.insert(o);
            }
            match done {
                Done::Restored { bytes, matched } => {
                    report.restored += 1;
                    report.bytes += bytes;
                    report.matched_manifest += u64::from(matched);
                }
                Done::Problem(p) => {
                    progress.notice(Notice::Failed {
                        path: &p.path,
                        error: &p.problem,
                    });
                    report.problems.push(p);
                }
                Done::Skipped(s) => report.skipped.push(s),
            }
            progress.file_done();
            Ok::<(), RestoreError>(())
        },
    )?;
    dst.flush()?;
    if let Some(m) = manifest {
        for f in &m.files {
            if let Some(s) = &f.stored
                && !seen.contains(&s.path)
            {
                report.problems.push(RestoreProblem {
                    path: s.path.clone(),
                    problem: "listed in the manifest, not found under the source".into(),
                    wrong_key: false,
                });
            }
        }
    }
    progress.end(Phase::Restore);
    report
        .problems
        .sort_by(|a, b| relpath::cmp_components(&a.path, &b.path));
    Ok(report)
}
