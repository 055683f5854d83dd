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
pub mod dicomweb;
pub mod names;
pub(crate) mod retry;
pub mod share;
pub mod throttle;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::relpath::RelPath;

/// A destination as the user named it: a directory (a mounted Data Box
/// share), a blob container URL, or a DICOMweb service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A directory.
    Share(PathBuf),
    /// A blob container (and prefix).
    Blob(blob::BlobUrl),
    /// A DICOMweb service root.
    Dicomweb(dicomweb::DicomwebUrl),
}

/// The URL schemes a destination may be written with, for messages.
pub const SCHEMES: &str = concat!(
    "https:// and http:// (Azure Blob Storage, a Data Box's Blob REST endpoint, Azurite; ",
    "http on loopback only), ",
    "https://<workspace>-<service>.dicom.azurehealthcareapis.com/v<N> (Azure's DICOM service), ",
    "dicomweb+https:// and dicomweb+http:// (any other DICOMweb root; http on loopback only)"
);

/// The scheme of an argument written as a URL (`scheme://…`), if it is
/// one: a path never has `://` right after a run of scheme characters.
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// Whether a URL's host is a loopback address (or `localhost`): the only
/// hosts plain `http` is allowed to.
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    use std::net::IpAddr;
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Whether a destination argument is written as a URL (`scheme://…`).
pub fn is_url(s: &str) -> bool {
    url_scheme(s).is_some()
}

impl Target {
    /// Reads a destination argument: an Azure DICOM service's URL or a
    /// `dicomweb+http(s)://` root is a DICOMweb service, another
    /// `http(s)://…` a blob URL, any other `scheme://…` is refused (so that
    /// a URL custody does not serve never becomes a local folder named
    /// after it), and anything else is a path.
    ///
    /// # Errors
    /// [`DestError::Unusable`] for a malformed or refused URL, or a scheme
    /// custody does not serve (naming those it does).
    pub fn parse(arg: &Path) -> Result<Self, DestError> {
        match arg.to_str() {
            Some(s) if dicomweb::is_dicomweb_url(s) => dicomweb::DicomwebUrl::parse(s)
                .map(Target::Dicomweb)
                .map_err(|reason| DestError::Unusable {
                    path: blob::url::redact(s).into(),
                    reason,
                }),
            Some(s) if blob::is_blob_url(s) => {
                blob::BlobUrl::parse(s)
                    .map(Target::Blob)
                    .map_err(|e| DestError::Unusable {
                        path: blob::url::redact(s).into(),
                        reason: e.to_string(),
                    })
            }
            Some(s) if let Some(scheme) = url_scheme(s) => Err(DestError::Unusable {
                path: blob::url::redact(s).into(),
                reason: format!(
                    "custody does not serve {scheme}:// destinations; it serves {SCHEMES}, and directories"
                ),
            }),
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
            Target::Dicomweb(u) => Box::new(dicomweb::DicomWeb::open(u, options)?),
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
    /// The destination does not do this at all (a DICOMweb service without
    /// DELETE): asking again, for any object, gets the same answer.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The destination root.
        path: PathBuf,
        /// What it does not do, and what to do instead.
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
            | DestError::Unusable { path, .. }
            | DestError::Unsupported { path, .. } => path,
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

/// What a destination holds of a landed file when that is not the bytes as
/// written: a DICOMweb service's instance, held to the bytes after its
/// preamble (which Azure's service rewrites).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its name at the destination.
    pub rel: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3, hex.
    pub blake3: String,
    /// Azure Storage's CRC64, hex (16 digits).
    pub crc64: String,
}

/// How a destination names what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Under the source file's relative path (share, blob).
    Path,
    /// By the DICOM instance a file holds,
    /// `studies/{study}/series/{series}/instances/{sop}` (DICOMweb); each
    /// landing says so through [`Landing::held`].
    Instance,
}

/// Runs the independent parts of a destination's work, at once where it
/// can: what a stage hands a destination so that the destination itself
/// spawns nothing ([`Destination::flush_fanned`]).
pub trait Fan: Sync {
    /// How many parts are worth making: how many can run at once.
    fn ways(&self) -> usize;

    /// Runs `part(i)` once for each `i` in `0..parts`, in any order and on
    /// as many threads as it likes.
    ///
    /// # Errors
    /// The first error a part returned (the other parts may still run).
    fn run(&self, parts: usize, part: &Part<'_>) -> Result<(), DestError>;
}

/// One of the parts a [`Fan`] runs, by its number.
pub type Part<'a> = dyn Fn(usize) -> Result<(), DestError> + Sync + 'a;

/// A [`Fan`] that runs the parts one after the other on the calling
/// thread.
#[derive(Debug, Clone, Copy)]
pub struct InTurn;

impl Fan for InTurn {
    fn ways(&self) -> usize {
        1
    }

    fn run(&self, parts: usize, part: &Part<'_>) -> Result<(), DestError> {
        (0..parts).try_for_each(part)
    }
}

/// A file being written; see the module documentation.
pub trait Landing: Write + Send {
    /// What the destination will hold once committed, when it is not the
    /// bytes as written ([`Naming::Instance`]); `None` otherwise.
    ///
    /// # Errors
    /// What was written cannot land there (not a DICOM instance, no UIDs).
    fn held(&self) -> Result<Option<Held>, DestError> {
        Ok(None)
    }

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

    /// Whether the object at `rel` is there with `size` bytes: what a
    /// resumed run asks of each file it recorded. A DICOMweb service, whose
    /// searches give no sizes, answers whether it holds the instance.
    ///
    /// # Errors
    /// The object's state could not be read.
    fn holds(&self, rel: &RelPath, size: u64) -> Result<bool, DestError> {
        Ok(self.landed_size(rel)? == Some(size))
    }

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

    /// [`Destination::flush`], with the parts of it that do not depend on
    /// each other (a share's renames, folder by folder) run by `fan`: the
    /// stage that drives the pool decides how many run at once.
    ///
    /// # Errors
    /// As [`Destination::flush`].
    fn flush_fanned(&self, fan: &dyn Fan) -> Result<(), DestError> {
        let _ = fan;
        self.flush()
    }

    /// Why the destination refused this run's credential, once it has
    /// (shared-key access disabled, a role missing, a token refused): no
    /// later request can succeed, so the stage ends the run saying so (exit
    /// 2) instead of failing file after file. `None` until then, and always
    /// for a share.
    fn refused(&self) -> Option<String> {
        None
    }

    /// Why this destination removes nothing, once it said so (a DICOMweb
    /// service without DELETE); `None` while removing may work.
    fn cannot_remove(&self) -> Option<String> {
        None
    }

    /// How objects are named here.
    fn naming(&self) -> Naming {
        Naming::Path
    }

    /// Why the destination did not keep the landing of `rel` (the source
    /// path) after its commit, if it did not: a DICOMweb service answers
    /// for a batch of instances only when the batch is sent, by
    /// [`Destination::flush`] at the latest. Asked once per landing, after
    /// the flush that covers it; `None` for a share or a blob.
    fn rejected(&self, _rel: &RelPath) -> Option<String> {
        None
    }

    /// Whether [`Destination::list`] gives sizes (a DICOMweb search does
    /// not: a listed size is then 0 and only a read tells).
    fn lists_sizes(&self) -> bool {
        true
    }

    /// Tells the destination that `object` will be looked for, so that
    /// [`Destination::list`] covers where it would be (a DICOMweb service
    /// lists the studies it was told of, not the whole archive).
    fn expect(&self, _object: &RelPath) {}
}
