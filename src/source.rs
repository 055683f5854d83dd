//! Walks a source tree, streaming one [`SourceEntry`] at a time.
//!
//! Symbolic links are never followed (a link is reported and excluded), so
//! link loops cannot occur. Directory entries are visited sorted by name,
//! which is the manifest's component order. Nothing holds the whole tree in
//! memory: walkdir keeps only the open directories of the current path.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub mod dicom;
pub mod select;

use crate::relpath::RelPath;

/// A regular file found by the walk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the source root.
    pub rel: RelPath,
    /// Absolute (or root-joined) path to open.
    pub path: PathBuf,
    /// Size at walk time.
    pub size: u64,
    /// Modification time at walk time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// One result of the walk.
#[derive(Debug)]
pub enum SourceEntry {
    /// A regular file to carry.
    File(SourceFile),
    /// An entry that is not carried, with the reason.
    Excluded {
        /// Relative path, lossy UTF-8.
        path: String,
        /// Why it is not carried.
        reason: &'static str,
    },
    /// An entry (or a directory's listing) could not be read.
    Failed {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
}

/// Reason recorded for a symbolic link.
pub const REASON_SYMLINK: &str = "symbolic link (not followed)";
/// Reason recorded for FIFOs, sockets and devices.
pub const REASON_SPECIAL: &str = "not a regular file";
/// Reason recorded for a name that is not valid UTF-8.
pub const REASON_NOT_UTF8: &str = "name is not valid UTF-8";

/// Nanoseconds since the Unix epoch (negative before it).
pub fn mtime_ns(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// RFC 3339 UTC form of nanoseconds since the epoch (as in manifests).
pub fn mtime_rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Opens a file the walk listed, for reading, as it is now: the final
/// component is never followed (a file replaced by a link since the walk is
/// refused), and the open never blocks (a file replaced by a FIFO or a
/// device would otherwise hang the worker, and the run with it): it is
/// opened non-blocking, checked to be a regular file, then set back to
/// blocking reads.
///
/// # Errors
/// The open failed, or what is there is not a regular file (said in
/// words).
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            return Err(std::io::Error::other(
                "is now a symbolic link (not followed)",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other(
            "is no longer a regular file (a FIFO, socket or device now stands under its name)",
        ));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(std::fs::File::from(fd))
}

/// Walks `root`, yielding entries in component order.
pub fn walk(root: &Path) -> impl Iterator<Item = SourceEntry> + Send + use<> {
    let root = root.to_path_buf();
    walkdir::WalkDir::new(&root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_map(move |res| classify(&root, res))
}

fn classify(root: &Path, res: walkdir::Result<walkdir::DirEntry>) -> Option<SourceEntry> {
    let entry = match res {
        Ok(e) => e,
        Err(err) => {
            let path = err.path().unwrap_or(root).to_path_buf();
            let error = err
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("file system loop"));
            return Some(SourceEntry::Failed { path, error });
        }
    };
    let ft = entry.file_type();
    if ft.is_dir() {
        return None;
    }
    let lossy = || {
        entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned()
    };
    if ft.is_symlink() {
        return Some(SourceEntry::Excluded {
            path: lossy(),
            reason: REASON_SYMLINK,
        });
    }
    if !ft.is_file() {
        return Some(SourceEntry::Excluded {
            path: lossy(),
            reason: REASON_SPECIAL,
        });
    }
    let Some(rel) = RelPath::from_fs(root, entry.path()) else {
        return Some(SourceEntry::Excluded {
            path: lossy(),
            reason: REASON_NOT_UTF8,
        });
    };
    let meta = match entry.metadata() {
        Ok(m) => m,
        Err(err) => {
            return Some(SourceEntry::Failed {
                path: entry.path().to_path_buf(),
                error: err
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata unavailable")),
            });
        }
    };
    Some(SourceEntry::File(SourceFile {
        rel,
        path: entry.into_path(),
        size: meta.len(),
        mtime_ns: meta.modified().map(mtime_ns).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn walk_excludes_links_and_bad_names_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a")).unwrap();
        std::fs::write(r.join("a/z"), b"1").unwrap();
        std::fs::write(r.join("a.txt"), b"").unwrap();
        std::os::unix::fs::symlink(r, r.join("loop")).unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
        std::fs::write(r.join(bad), b"x").unwrap();
        let mut files = Vec::new();
        let mut excluded = Vec::new();
        for e in walk(r) {
            match e {
                SourceEntry::File(f) => files.push(f.rel.to_string()),
                SourceEntry::Excluded { reason, .. } => excluded.push(reason),
                SourceEntry::Failed { path, error } => panic!("{path:?}: {error}"),
            }
        }
        assert_eq!(files, ["a/z", "a.txt"]);
        excluded.sort();
        assert_eq!(excluded, [REASON_NOT_UTF8, REASON_SYMLINK]);
    }

    #[test]
    fn mtime_round_trips_to_rfc3339() {
        assert_eq!(mtime_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            mtime_rfc3339(1_500_000_000_123_456_789),
            "2017-07-14T02:40:00.123456789Z"
        );
    }
}
