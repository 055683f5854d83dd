//! Rollback: remove from a destination exactly what a manifest landed, and
//! only while it is still what landed.
//!
//! For each file the manifest lists, its object (the stored object, for an
//! encrypted manifest) is hashed again, and removed only if its size and
//! BLAKE3 are still those the manifest records, and it did not change
//! between that read and the removal: a blob is deleted with `If-Match`
//! its ETag, a share file only while its size, times and inode are those
//! read before hashing. Anything else is left and reported; nothing the
//! manifest does not list is ever touched. Without acting (a dry run), the
//! same checks report what would be removed.
//!
//! Before any of that, [`check_target`] makes sure the place named is the
//! manifest's destination and has nothing to do with its source: the
//! source always matches the manifest's hashes, so a rollback pointed at it
//! would find everything "unchanged" and delete the archive.

use serde::Serialize;
use serde_json::json;

use crate::dest::{Destination, Removal, Version};
use crate::digest::HashingReader;
use crate::keys::SigningKey;
use crate::ledger::{Event, Ledger, LedgerError, kind};
use crate::manifest::{Manifest, ManifestError, SignedFile};
use crate::progress::{Phase, Progress, ProgressReader};
use crate::relpath::RelPath;

/// How to roll back.
#[derive(Debug, Clone, Copy)]
pub struct RollbackOptions {
    /// Objects checked in parallel.
    pub jobs: usize,
    /// Remove; `false` only reports what would be removed.
    pub act: bool,
}

/// Why a rollback refuses the place it was pointed at, before it reads
/// anything there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The place is the manifest's source, inside it or above it.
    #[error(
        "{dest}: {relation} {source_root}, the source this manifest was copied from; rollback removes only from the destination it records ({destination})"
    )]
    Source {
        /// The place given.
        dest: String,
        /// How it relates to the source.
        relation: &'static str,
        /// The manifest's source.
        source_root: String,
        /// The manifest's destination.
        destination: String,
    },
    /// The place is not the destination the manifest records.
    #[error("{dest}: is not the destination this manifest records ({destination})")]
    Elsewhere {
        /// The place given.
        dest: String,
        /// The manifest's destination.
        destination: String,
    },
}

/// Checks that `dest` may be rolled back by `manifest`: never the source
/// (the same directory, one inside it or one holding it, links resolved),
/// and only the destination the manifest records, unless `moved` says it
/// was remounted elsewhere (a share's new mount point; the source check
/// still holds).
///
/// # Errors
/// [`TargetError`] saying which rule the place breaks.
pub fn check_target(
    manifest: &Manifest,
    dest: &dyn Destination,
    moved: bool,
) -> Result<(), TargetError> {
    let given = dest.describe();
    let resolve = |p: &str| {
        let p = std::path::Path::new(p);
        std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
    };
    if !crate::dest::is_url(&given) {
        let (here, source) = (resolve(&given), resolve(&manifest.source));
        let relation = if here == source {
            Some("is")
        } else if here.starts_with(&source) {
            Some("is inside")
        } else if source.starts_with(&here) {
            Some("holds")
        } else {
            None
        };
        if let Some(relation) = relation {
            return Err(TargetError::Source {
                dest: given,
                relation,
                source_root: manifest.source.clone(),
                destination: manifest.destination.clone(),
            });
        }
    }
    let recorded = match crate::dest::is_url(&manifest.destination) {
        true => manifest.destination.clone(),
        false => resolve(&manifest.destination).display().to_string(),
    };
    if given != recorded && given != manifest.destination && !moved {
        return Err(TargetError::Elsewhere {
            dest: given,
            destination: manifest.destination.clone(),
        });
    }
    Ok(())
}

/// Why an object was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftClass {
    /// Its bytes are not (or no longer) those the manifest records.
    Changed,
    /// It could not be read, or removing it failed.
    Unreadable,
    /// The destination does not remove objects at all (a DICOMweb service
    /// without DELETE).
    Unsupported,
}

/// An object rollback left in place.
#[derive(Debug, Clone, Serialize)]
pub struct Left {
    /// Why.
    pub class: LeftClass,
    /// The object's path under the destination.
    pub path: String,
    /// Details.
    pub detail: String,
}

/// What a rollback did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The manifest id.
    pub manifest: String,
    /// The destination.
    pub destination: String,
    /// `true`: nothing was removed; `removed` is what would be.
    pub dry_run: bool,
    /// Files the manifest lists.
    pub files_in_manifest: u64,
    /// Objects removed (would be removed, in a dry run).
    pub removed: u64,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Objects already gone.
    pub missing: u64,
    /// Their paths, in path order.
    pub missing_paths: Vec<String>,
    /// Objects left, in path order.
    pub left: Vec<Left>,
}

impl RollbackReport {
    /// Whether everything the manifest landed is gone (or would be).
    pub fn ok(&self) -> bool {
        self.left.is_empty()
    }
}

enum Outcome {
    Removed(u64),
    Missing(String),
    Left(Left),
}

/// One object: hash it between two version reads, then remove it if it is
/// still what landed.
fn roll_back_one(
    dest: &dyn Destination,
    path: &str,
    size: u64,
    blake3: &str,
    act: bool,
    progress: &dyn Progress,
) -> Outcome {
    let left = |class, detail: String| {
        Outcome::Left(Left {
            class,
            path: path.to_owned(),
            detail,
        })
    };
    if act && let Some(why) = dest.cannot_remove() {
        // Nothing to read: removing would be refused.
        return left(LeftClass::Unsupported, why);
    }
    let rel = match RelPath::new(path.to_owned()) {
        Ok(r) => r,
        Err(e) => return left(LeftClass::Unreadable, e.to_string()),
    };
    let version = |rel: &RelPath| -> Result<Option<Version>, String> {
        dest.version(rel).map_err(|e| e.to_string())
    };
    let before = match version(&rel) {
        Ok(Some(v)) => v,
        Ok(None) => return Outcome::Missing(path.to_owned()),
        Err(e) => return left(LeftClass::Unreadable, e),
    };
    let read = dest.open(&rel).map_err(|e| e.to_string()).and_then(|r| {
        let mut h = HashingReader::new(ProgressReader { inner: r, progress });
        std::io::copy(&mut h, &mut std::io::sink())
            .map(|_| h.finish())
            .map_err(|e| format!("read failed: {e}"))
    });
    let (n, hash) = match read {
        Ok(r) => r,
        Err(e) => return left(LeftClass::Unreadable, e),
    };
    match version(&rel) {
        Ok(Some(v)) if v == before => {}
        Ok(_) => return left(LeftClass::Changed, "changed while it was read".into()),
        Err(e) => return left(LeftClass::Unreadable, e),
    }
    if n != size || hash.to_hex().as_str() != blake3 {
        return left(
            LeftClass::Changed,
            format!(
                "not what landed: expected {size} bytes with blake3 {blake3}, found {n} bytes with blake3 {}",
                hash.to_hex()
            ),
        );
    }
    if !act {
        return Outcome::Removed(n);
    }
    match dest.remove_if(&rel, &before) {
        Ok(Removal::Removed) => Outcome::Removed(n),
        Ok(Removal::Gone) => Outcome::Missing(path.to_owned()),
        Ok(Removal::Changed) => left(LeftClass::Changed, "changed after it was hashed".into()),
        Err(crate::dest::DestError::Unsupported { reason, .. }) => {
            left(LeftClass::Unsupported, reason)
        }
        Err(e) => left(LeftClass::Unreadable, format!("remove failed: {e}")),
    }
}

/// Rolls `manifest` back from `dest` (see the module documentation).
///
/// # Errors
/// Only when the manifest cannot be read again; everything about single
/// objects is in the report.
pub fn rollback(
    manifest: &SignedFile,
    dest: &dyn Destination,
    opts: &RollbackOptions,
    progress: &dyn Progress,
) -> Result<RollbackReport, ManifestError> {
    let head = &manifest.head;
    let mut report = RollbackReport {
        manifest: head.id.clone(),
        destination: dest.describe(),
        dry_run: !opts.act,
        files_in_manifest: manifest.file_count,
        removed: 0,
        bytes_removed: 0,
        missing: 0,
        missing_paths: Vec::new(),
        left: Vec::new(),
    };
    progress.begin(
        Phase::Rollback,
        Some(head.totals.files),
        Some(head.totals.bytes),
    );
    // The manifest's entries stream into the workers: nothing holds the
    // whole list.
    let read = crate::pool::parallel_map_pushed(
        opts.jobs,
        |push| {
            manifest.for_each_file(|f| {
                let object = match f.stored {
                    Some(st) => (st.path, st.size, st.blake3),
                    None => (f.path, f.size, f.blake3),
                };
                push(object)
                    .then_some(())
                    .ok_or_else(|| "stopped".to_owned())
            })
        },
        |(path, size, blake3): (String, u64, String)| {
            roll_back_one(dest, &path, size, &blake3, opts.act, progress)
        },
        |outcome| {
            match outcome {
                Outcome::Removed(n) => {
                    report.removed += 1;
                    report.bytes_removed += n;
                }
                Outcome::Missing(p) => {
                    report.missing += 1;
                    report.missing_paths.push(p);
                }
                Outcome::Left(l) => report.left.push(l),
            }
            progress.file_done();
        },
    );
    progress.end(Phase::Rollback);
    read?;
    report.missing_paths.sort();
    report.left.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Records a rollback that acted as a signed `rolled_back` event on the
/// manifest (a dry run changes nothing and records nothing).
///
/// # Errors
/// The ledger could not be written.
pub fn record(
    ledger: &mut Ledger,
    manifest: &Manifest,
    report: &RollbackReport,
    key: &SigningKey,
) -> Result<Event, LedgerError> {
    ledger.register_key(key)?;
    let payload = json!({
        "bytes_removed": report.bytes_removed,
        "destination": report.destination,
        "left": report.left.len(),
        "missing": report.missing,
        "removed": report.removed,
        "result": if report.ok() { "pass" } else { "fail" },
    });
    ledger.append_event(
        kind::ROLLED_BACK,
        Some(manifest.run),
        Some(&manifest.id),
        &payload,
        Some(key),
    )
}
