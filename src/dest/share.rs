//! A directory destination: a local disk or a mounted Azure Data Box
//! SMB/NFS share.
//!
//! A file lands as `.custody-partial.<hex>` in its final directory, is
//! written, has its mtime set, is flushed with `fdatasync`, and is renamed
//! over its final name. The rename's durability needs the directory itself
//! to be synced; that is batched in [`Share::flush`] (one `fsync` per touched
//! directory per batch rather than per file).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{DestError, Destination, Landing, Listed};
use crate::relpath::RelPath;

/// The prefix of temporary names; anything with it under a share is a
/// landing that never committed.
pub const PARTIAL_PREFIX: &str = ".custody-partial.";

/// A directory destination.
#[derive(Debug)]
pub struct Share {
    root: PathBuf,
    touched: Mutex<HashSet<PathBuf>>,
}

fn io(path: &Path) -> impl FnOnce(io::Error) -> DestError + '_ {
    move |source| DestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Share {
    /// Opens `root` for writing: creates it if missing and proves it is
    /// writable by creating and removing a probe file.
    ///
    /// # Errors
    /// [`DestError::Unusable`] naming the root and the cause.
    pub fn for_writing(root: &Path) -> Result<Self, DestError> {
        let unusable = |reason: String| DestError::Unusable {
            path: root.to_path_buf(),
            reason,
        };
        fs::create_dir_all(root).map_err(|e| unusable(format!("cannot create directory: {e}")))?;
        let probe = root.join(format!("{PARTIAL_PREFIX}probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| unusable(format!("not writable: {e}")))?;
        let _ = fs::remove_file(&probe);
        Self::existing(root)
    }

    /// Opens an existing directory for reading (verify).
    ///
    /// # Errors
    /// [`DestError::Unusable`] if `root` is not a readable directory.
    pub fn existing(root: &Path) -> Result<Self, DestError> {
        let meta = fs::metadata(root).map_err(|e| DestError::Unusable {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(DestError::Unusable {
                path: root.to_path_buf(),
                reason: "not a directory".into(),
            });
        }
        let root = fs::canonicalize(root).map_err(io(root))?;
        Ok(Share {
            root,
            touched: Mutex::new(HashSet::new()),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn partial_name(final_path: &Path) -> PathBuf {
        let name = final_path.file_name().unwrap_or_default();
        let tag = blake3::hash(name.as_encoded_bytes()).to_hex();
        final_path.with_file_name(format!("{PARTIAL_PREFIX}{}", &tag[..16]))
    }
}

struct ShareLanding<'a> {
    file: File,
    partial: PathBuf,
    target: PathBuf,
    mtime_ns: i64,
    touched: &'a Mutex<HashSet<PathBuf>>,
    committed: bool,
}

impl Write for ShareLanding<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Landing for ShareLanding<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), DestError> {
        let t = system_time(self.mtime_ns);
        self.file.set_modified(t).map_err(io(&self.partial))?;
        self.file.sync_data().map_err(io(&self.partial))?;
        fs::rename(&self.partial, &self.target).map_err(io(&self.target))?;
        self.committed = true;
        if let Some(dir) = self.target.parent() {
            self.touched
                .lock()
                .expect("touched set poisoned")
                .insert(dir.to_path_buf());
        }
        Ok(())
    }
}

impl Drop for ShareLanding<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

fn system_time(ns: i64) -> std::time::SystemTime {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

impl Destination for Share {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn landed_size(&self, rel: &RelPath) -> Result<Option<u64>, DestError> {
        let p = rel.to_fs(&self.root);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DestError::Io { path: p, source: e }),
        }
    }

    fn create(&self, rel: &RelPath, mtime_ns: i64) -> Result<Box<dyn Landing + '_>, DestError> {
        let target = rel.to_fs(&self.root);
        if let Some(dir) = target.parent()
            && !dir.is_dir()
        {
            fs::create_dir_all(dir).map_err(io(dir))?;
            // A new directory's own entry lives in its parent: sync
            // every ancestor up to the root at the next flush.
            let mut set = self.touched.lock().expect("touched set poisoned");
            for a in dir.ancestors().skip(1) {
                set.insert(a.to_path_buf());
                if a == self.root {
                    break;
                }
            }
        }
        let partial = Self::partial_name(&target);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(io(&partial))?;
        Ok(Box::new(ShareLanding {
            file,
            partial,
            target,
            mtime_ns,
            touched: &self.touched,
            committed: false,
        }))
    }

    fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send + '_>, DestError> {
        let p = rel.to_fs(&self.root);
        let f = File::open(&p).map_err(io(&p))?;
        // Landed files were synced, so their cached pages are clean: drop
        // them so a verify reads what the device stores, not what the page
        // cache still holds from the copy.
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        Ok(Box::new(f))
    }

    fn list(&self) -> Box<dyn Iterator<Item = Result<Listed, DestError>> + Send + '_> {
        Box::new(crate::source::walk(&self.root).map(|e| {
            use crate::source::{REASON_SPECIAL, REASON_SYMLINK, SourceEntry};
            match e {
                SourceEntry::File(f) => Ok(Listed::Object {
                    rel: f.rel,
                    size: f.size,
                }),
                SourceEntry::Excluded { path, reason } => Ok(Listed::Other {
                    path,
                    what: match reason {
                        REASON_SYMLINK => "symbolic link",
                        REASON_SPECIAL => "special file",
                        _ => "file whose name is not UTF-8",
                    },
                }),
                SourceEntry::Failed { path, error } => Err(DestError::Io {
                    path,
                    source: error,
                }),
            }
        }))
    }

    fn sweep_partials(&self) -> Result<u64, DestError> {
        let mut removed = 0;
        for entry in walkdir::WalkDir::new(&self.root).follow_links(false) {
            let entry = entry.map_err(|e| DestError::Io {
                path: e.path().unwrap_or(&self.root).to_path_buf(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk failed")),
            })?;
            let partial = entry.file_type().is_file()
                && entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(PARTIAL_PREFIX.as_bytes());
            if partial {
                fs::remove_file(entry.path()).map_err(io(entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn flush(&self) -> Result<(), DestError> {
        let dirs: Vec<PathBuf> = self
            .touched
            .lock()
            .expect("touched set poisoned")
            .drain()
            .collect();
        for d in dirs {
            File::open(&d).and_then(|f| f.sync_all()).map_err(io(&d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_landing_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let share = Share::for_writing(dir.path()).unwrap();
        let rel = RelPath::new("a/b.bin").unwrap();
        let mut l = share.create(&rel, 0).unwrap();
        l.write_all(b"half").unwrap();
        drop(l);
        assert_eq!(share.landed_size(&rel).unwrap(), None);
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 0);

        let mut l = share.create(&rel, 1_000_000_000).unwrap();
        l.write_all(b"whole").unwrap();
        l.commit().unwrap();
        share.flush().unwrap();
        assert_eq!(share.landed_size(&rel).unwrap(), Some(5));
        let m = fs::metadata(rel.to_fs(dir.path())).unwrap();
        assert_eq!(
            crate::source::mtime_ns(m.modified().unwrap()),
            1_000_000_000
        );
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }
}
