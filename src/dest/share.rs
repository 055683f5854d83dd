//! A directory destination: a local disk or a mounted Azure Data Box
//! SMB/NFS share.
//!
//! A file lands as `.custody-partial.<hex>` in its final directory, is
//! written and has its mtime set. What happens next depends on the
//! filesystem (see `docs/PERFORMANCE.md`, "Durable landing"):
//!
//! - **Batched** (local Linux filesystems: ext4, XFS, Btrfs, ZFS, tmpfs…):
//!   [`Landing::commit`] only queues the partial. [`Share::flush`] then makes
//!   the whole batch durable with one `syncfs`, renames every partial over
//!   its final name, and a second `syncfs` makes the renames durable. A
//!   final name therefore never holds bytes that are not on the device, and
//!   a batch of a thousand files costs two filesystem syncs instead of a
//!   thousand `fdatasync`s.
//! - **Per file** (network filesystems such as a Data Box SMB or NFS share,
//!   and anything not known to be local): `commit` calls `fdatasync` and
//!   renames at once, and `flush` syncs each touched directory once.
//!
//! Either way nothing is reported durable by `flush` that a power loss
//! could take back, and the ledger records a batch only after its `flush`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{DestError, Destination, Landing, Listed, Removal, Version};
use crate::relpath::RelPath;

/// The prefix of temporary names; anything with it under a share is a
/// landing that never committed.
pub const PARTIAL_PREFIX: &str = ".custody-partial.";

/// How landings are made durable; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One `syncfs` before and one after the renames of a batch.
    Batched,
    /// `fdatasync` and rename per file, directory `fsync` per batch.
    PerFile,
}

impl Durability {
    /// The mode for the filesystem holding `dir`: batched only where
    /// `syncfs` is known to flush file data to stable storage (local Linux
    /// filesystems), per file elsewhere.
    fn detect(dir: &File) -> Self {
        #[cfg(target_os = "linux")]
        {
            // Magic numbers from linux/magic.h.
            const LOCAL: &[i64] = &[
                0xEF53,      // ext2/3/4
                0x5846_5342, // XFS
                0x9123_683E, // Btrfs
                0x2FC1_2FC1, // ZFS
                0xF2F5_2010, // F2FS
                0x0102_1994, // tmpfs
                0x794C_7630, // overlayfs (syncs its upper, local, layer)
            ];
            if let Ok(st) = rustix::fs::fstatfs(dir) {
                #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
                let kind = i64::from(st.f_type as i64);
                if LOCAL.contains(&kind) {
                    return Durability::Batched;
                }
            }
        }
        let _ = dir;
        Durability::PerFile
    }
}

/// A directory destination.
#[derive(Debug)]
pub struct Share {
    root: PathBuf,
    durability: Durability,
    /// Directories whose entries changed since the last flush (per-file mode).
    touched: Mutex<HashSet<PathBuf>>,
    /// Committed partials waiting for the next flush (batched mode).
    pending: Mutex<Vec<(PathBuf, PathBuf)>>,
    /// The root's device and inode when opened: a share unmounted under a
    /// run leaves its mount point, a different directory at the same path.
    root_id: (u64, u64),
}

/// A directory's (device, inode).
fn identity(dir: &Path) -> Result<(u64, u64), DestError> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(dir)
        .map(|m| (m.dev(), m.ino()))
        .map_err(io(dir))
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
        let durability = File::open(&root)
            .map(|d| Durability::detect(&d))
            .map_err(io(&root))?;
        let root_id = identity(&root)?;
        Ok(Share {
            root,
            durability,
            touched: Mutex::new(HashSet::new()),
            pending: Mutex::new(Vec::new()),
            root_id,
        })
    }

    /// Forces a durability mode (tests, and filesystems the detection
    /// does not know).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How this share makes landings durable.
    pub fn durability(&self) -> Durability {
        self.durability
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
    share: &'a Share,
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
        match self.share.durability {
            Durability::Batched => {
                // The next flush syncs and renames it; until then it stays
                // a partial, which a resumed run sweeps if we die first.
                self.committed = true;
                let entry = (
                    std::mem::take(&mut self.partial),
                    std::mem::take(&mut self.target),
                );
                self.share
                    .pending
                    .lock()
                    .expect("pending list poisoned")
                    .push(entry);
            }
            Durability::PerFile => {
                self.file.sync_data().map_err(io(&self.partial))?;
                fs::rename(&self.partial, &self.target).map_err(io(&self.target))?;
                self.committed = true;
                if let Some(dir) = self.target.parent() {
                    self.share.touch(dir);
                }
            }
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

impl Share {
    fn touch(&self, dir: &Path) {
        if self.durability == Durability::PerFile {
            self.touched
                .lock()
                .expect("touched set poisoned")
                .insert(dir.to_path_buf());
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

    fn version(&self, rel: &RelPath) -> Result<Option<Version>, DestError> {
        use std::os::unix::fs::MetadataExt;
        let p = rel.to_fs(&self.root);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(Version(format!(
                "{}:{}.{}:{}.{}:{}:{}",
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.dev(),
                m.ino()
            )))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DestError::Io { path: p, source: e }),
        }
    }

    fn remove_if(&self, rel: &RelPath, version: &Version) -> Result<Removal, DestError> {
        // A file changed between this check and the unlink would be lost:
        // the window is one stat, and a share has no conditional delete.
        match self.version(rel)? {
            None => return Ok(Removal::Gone),
            Some(v) if v != *version => return Ok(Removal::Changed),
            Some(_) => {}
        }
        let p = rel.to_fs(&self.root);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
            Err(e) => return Err(DestError::Io { path: p, source: e }),
        }
        // Remove the directories this emptied (only empty ones: anything
        // else stops the climb); `flush` syncs the first one left.
        let mut left = p.parent().unwrap_or(&self.root);
        while left.starts_with(&self.root) && left != self.root && fs::remove_dir(left).is_ok() {
            left = left.parent().unwrap_or(&self.root);
        }
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(left.to_path_buf());
        Ok(Removal::Removed)
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
            for a in dir.ancestors().skip(1) {
                self.touch(a);
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
            share: self,
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
        // Nothing is made durable, or recorded, if the root is no longer
        // the directory the run opened: what was written since may have
        // gone to the mount point of an unmounted share.
        if identity(&self.root).ok() != Some(self.root_id) {
            return Err(DestError::Io {
                path: self.root.clone(),
                source: io::Error::other(
                    "is no longer the directory this run opened (unmounted, or replaced?); \
                     nothing written since the last record is recorded",
                ),
            });
        }
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending list poisoned"));
        let dirs: Vec<PathBuf> = self
            .touched
            .lock()
            .expect("touched set poisoned")
            .drain()
            .collect();
        if !pending.is_empty() {
            let root = File::open(&self.root).map_err(io(&self.root))?;
            let syncfs = || rustix::fs::syncfs(&root).map_err(|e| io(&self.root)(e.into()));
            // Data first: once this returns, every partial's bytes are on
            // the device, so a final name never holds less than its file.
            syncfs()?;
            for (partial, target) in &pending {
                fs::rename(partial, target).map_err(io(target))?;
            }
            // Then the renames (and any new directories) themselves.
            syncfs()?;
            return Ok(());
        }
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
        for mode in [Durability::Batched, Durability::PerFile] {
            let dir = tempfile::tempdir().unwrap();
            let share = Share::for_writing(dir.path())
                .unwrap()
                .with_durability(mode);
            let rel = RelPath::new("a/b.bin").unwrap();
            let mut l = share.create(&rel, 0).unwrap();
            l.write_all(b"half").unwrap();
            drop(l);
            assert_eq!(share.landed_size(&rel).unwrap(), None);
            assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 0);

            let mut l = share.create(&rel, 1_000_000_000).unwrap();
            l.write_all(b"whole").unwrap();
            l.commit().unwrap();
            // Batched: not under its final name before the flush.
            let before = share.landed_size(&rel).unwrap();
            assert_eq!(
                before,
                (mode == Durability::PerFile).then_some(5),
                "{mode:?}"
            );
            share.flush().unwrap();
            assert_eq!(share.landed_size(&rel).unwrap(), Some(5), "{mode:?}");
            let m = fs::metadata(rel.to_fs(dir.path())).unwrap();
            assert_eq!(
                crate::source::mtime_ns(m.modified().unwrap()),
                1_000_000_000
            );
            assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
        }
    }

    #[test]
    fn local_filesystems_batch_their_syncs() {
        // The test directory is on a local disk (ext4, XFS, Btrfs or tmpfs
        // on every machine this suite runs on).
        let dir = tempfile::tempdir().unwrap();
        let share = Share::for_writing(dir.path()).unwrap();
        assert_eq!(share.durability(), Durability::Batched);
    }
}
