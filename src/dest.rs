//! Destinations: where files land.
//!
//! [`Destination`] is what the transfer and verify pipelines write to and
//! read from. A landing is atomic: bytes go to a [`Landing`] that becomes
//! visible under its final name only on [`Landing::commit`]; dropping it
//! uncommitted leaves nothing under the final name. Committed landings are
//! made durable in batches by [`Destination::flush`], which the ledger writer
//! calls before it records them, so nothing is recorded as landed that a
//! power loss could take back.

pub mod blob;
pub mod names;
pub mod share;
pub mod throttle;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::relpath::RelPath;

/// A destination as the user named it: a directory (a mounted Data Box
/// share) or a blob container URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A directory.
    Share(PathBuf),
    /// A blob container (and prefix).
    Blob(blob::BlobUrl),
}

impl Target {
    /// Reads a destination argument: `http(s)://…` is a blob URL, anything
    /// else a path.
    ///
    /// # Errors
    /// [`DestError::Unusable`] for a malformed or refused URL.
    pub fn parse(arg: &Path) -> Result<Self, DestError> {
        match arg.to_str() {
            Some(s) if blob::is_blob_url(s) => {
                blob::BlobUrl::parse(s)
                    .map(Target::Blob)
                    .map_err(|e| DestError::Unusable {
                        path: blob::url::redact(s).into(),
                        reason: e.to_string(),
                    })
            }
            _ => Ok(Target::Share(arg.to_path_buf())),
        }
    }

    /// Opens an existing destination for reading (verify).
    ///
    /// # Errors
    /// The destination cannot be reached or read.
    pub fn open_existing(
        &self,
        options: &blob::BlobOptions,
    ) -> Result<Box<dyn Destination>, DestError> {
        Ok(match self {
            Target::Share(p) => Box::new(share::Share::existing(p)?),
            Target::Blob(u) => Box::new(blob::Blob::open(u, false, options)?),
        })
    }
}

/// Errors from a destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestError {
    /// An I/O operation failed on a destination path.
    #[error("{path}: {source}")]
    Io {
        /// The destination path concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path under a share passes through something that is not a real
    /// directory (a symbolic link planted in the destination, a file), or
    /// ends at something that is not a regular file: never followed.
    #[error("{}: is {what}; custody never writes, reads or removes through one", path.display())]
    Blocked {
        /// The component in the way (absolute).
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The name is taken and this destination does not replace files
    /// (`custody decrypt` without `--overwrite`).
    #[error("{}: already exists; not overwritten (see --overwrite)", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// The destination cannot be used at all (missing, not a directory,
    /// not writable).
    #[error("{path}: {reason}")]
    Unusable {
        /// The destination root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl DestError {
    /// The path (or object name) the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            DestError::Io { path, .. }
            | DestError::Blocked { path, .. }
            | DestError::Exists { path }
            | DestError::Unusable { path, .. } => path,
        }
    }
}

/// An object listed at the destination.
#[derive(Debug, Clone)]
pub enum Listed {
    /// A regular file or blob with a valid relative name.
    Object {
        /// Its relative path.
        rel: RelPath,
        /// Its size.
        size: u64,
    },
    /// Anything else found under the root (link, special file, bad name).
    Other {
        /// Its path relative to the root (lossy).
        path: String,
        /// What it is.
        what: &'static str,
    },
}

/// An object's version at one moment (opaque; compare for equality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// What [`Destination::remove_if`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed.
    Removed,
    /// Left: it changed since its version was read.
    Changed,
    /// Already gone.
    Gone,
}

/// A file being written; see the module documentation.
pub trait Landing: Write + Send {
    /// Makes the written bytes visible under the final name.
    ///
    /// # Errors
    /// The write-back or rename failed; nothing is under the final name.
    fn commit(self: Box<Self>) -> Result<(), DestError>;
}

/// A place files land.
pub trait Destination: Send + Sync {
    /// A human-readable name (path or URL without secrets).
    fn describe(&self) -> String;

    /// The size of the object at `rel`, or `None` if absent.
    ///
    /// # Errors
    /// The object's state could not be read.
    fn landed_size(&self, rel: &RelPath) -> Result<Option<u64>, DestError>;

    /// Starts landing `rel`; the source mtime (ns since the epoch) is applied
    /// to the landed object where the destination keeps times.
    ///
    /// # Errors
    /// The object could not be created.
    fn create(&self, rel: &RelPath, mtime_ns: i64) -> Result<Box<dyn Landing + '_>, DestError>;

    /// Opens a landed object for reading (bypassing caches where possible,
    /// so a verify re-reads stored bytes).
    ///
    /// # Errors
    /// The object is missing or unreadable.
    fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send + '_>, DestError>;

    /// Lists everything under the root (in no particular order).
    fn list(&self) -> Box<dyn Iterator<Item = Result<Listed, DestError>> + Send + '_>;

    /// Removes landings that never committed, left by an interrupted
    /// earlier attempt; returns how many. Called when a run resumes.
    ///
    /// # Errors
    /// A leftover could not be listed or removed.
    fn sweep_partials(&self) -> Result<u64, DestError> {
        Ok(0)
    }

    /// The landed object's version (`None` if absent): it changes whenever
    /// the object's bytes may have (a share file's size, mtime, ctime and
    /// inode; a blob's ETag).
    ///
    /// # Errors
    /// The object's state could not be read.
    fn version(&self, rel: &RelPath) -> Result<Option<Version>, DestError>;

    /// Removes the object at `rel` if it is still at `version`; a share
    /// also removes the directories this leaves empty (never the root).
    ///
    /// # Errors
    /// The removal failed.
    fn remove_if(&self, rel: &RelPath, version: &Version) -> Result<Removal, DestError>;

    /// Makes every landing committed so far durable.
    ///
    /// # Errors
    /// The write-back failed; the caller must not record those landings.
    fn flush(&self) -> Result<(), DestError>;

    /// Why the destination refused this run's credential, once it has
    /// (shared-key access disabled, a role missing, a token refused): no
    /// later request can succeed, so the stage ends the run saying so (exit
    /// 2) instead of failing file after file. `None` until then, and always
    /// for a share.
    fn refused(&self) -> Option<String> {
        None
    }
}
