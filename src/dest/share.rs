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

mod beneath;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use beneath::Kind;
use beneath::Root;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

use super::{DestError, Destination, Fan, InTurn, Landing, Listed, Removal, Version};
use crate::relpath::RelPath;

/// The prefix of temporary names; anything with it under a share is a
/// landing that never committed.
pub const PARTIAL_PREFIX: &str = ".custody-partial.";

/// The lock a transfer or rollback holds at a share's root while it writes
/// there (`transfer::lock`). The listing leaves it out: it is custody's
/// own bookkeeping, removed when the run ends, not something landed.
pub const LOCK_NAME: &str = ".custody-lock";

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
    fn detect(dir: impl std::os::fd::AsFd) -> Self {
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
            if let Ok(st) = rustix::fs::fstatfs(&dir) {
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
    /// The root, open: every path under it is resolved from here without
    /// following links (see [`beneath`]).
    dir: Root,
    durability: Durability,
    /// Whether a landing may replace a file already under its name.
    replace: bool,
    /// Directories (relative, `""` the root) whose entries changed since
    /// the last flush (per-file mode).
    touched: Mutex<HashSet<String>>,
    /// Committed partials waiting for the next flush (batched mode): the
    /// partial's name and the final path.
    pending: Mutex<Vec<(String, RelPath)>>,
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
        let share = Self::existing(root)?;
        let probe = format!("{PARTIAL_PREFIX}probe-{}", std::process::id());
        rustix::fs::openat(
            share.dir.fd(),
            probe.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| unusable(format!("not writable: {}", io::Error::from(e))))?;
        let _ = rustix::fs::unlinkat(share.dir.fd(), probe.as_str(), AtFlags::empty());
        Ok(share)
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
        let dir = Root::open(&root).map_err(io(&root))?;
        let durability = Durability::detect(dir.fd());
        let root_id = identity(&root)?;
        Ok(Share {
            root,
            dir,
            durability,
            replace: true,
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

    /// Whether landings may replace files already under their names
    /// (`true` unless set): without it, [`Destination::create`] refuses a
    /// taken name with [`DestError::Exists`], and the rename that makes a
    /// landing visible never replaces one that appeared since.
    pub fn replacing(mut self, replace: bool) -> Self {
        self.replace = replace;
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

    /// What is at `rel`, not following links on the way or at the end
    /// (`None`: nothing).
    ///
    /// # Errors
    /// [`DestError::Io`] naming `rel`; a component on the way that is not
    /// a real directory is [`DestError::Blocked`].
    pub fn kind(&self, rel: &RelPath) -> Result<Option<Kind>, DestError> {
        self.dir
            .stat(rel)
            .map(|s| s.map(|(k, _)| k))
            .map_err(|e| self.error(rel.as_str(), e))
    }

    fn error(&self, rel: &str, e: beneath::Error) -> DestError {
        match e {
            beneath::Error::Blocked(b) => DestError::Blocked {
                path: self.dir.display(&b.at),
                what: b.what,
            },
            beneath::Error::Io(source) => DestError::Io {
                path: self.dir.display(rel),
                source,
            },
        }
    }

    fn io_at(&self, rel: &str) -> impl FnOnce(rustix::io::Errno) -> DestError + '_ {
        let path = self.dir.display(rel);
        move |e| DestError::Io {
            path,
            source: e.into(),
        }
    }

    fn partial_name(name: &str) -> String {
        let tag = blake3::hash(name.as_bytes()).to_hex();
        format!("{PARTIAL_PREFIX}{}", &tag[..16])
    }

    fn touch(&self, dir: &str) {
        if self.durability == Durability::PerFile {
            self.touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dir.to_owned());
        }
    }

    /// Makes `partial` in `dir` visible as `target`: replacing what is
    /// there only if this share replaces.
    fn rename(&self, dir: &OwnedFd, partial: &str, target: &RelPath) -> Result<(), DestError> {
        let (_, name) = beneath::split(target);
        let flags = match self.replace {
            true => RenameFlags::empty(),
            false => RenameFlags::NOREPLACE,
        };
        match rustix::fs::renameat_with(dir, partial, dir, name, flags) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) if !self.replace => {
                let _ = rustix::fs::unlinkat(dir, partial, AtFlags::empty());
                Err(DestError::Exists {
                    path: self.dir.display(target.as_str()),
                })
            }
            Err(e) => Err(self.io_at(target.as_str())(e)),
        }
    }
}

struct ShareLanding<'a> {
    file: File,
    /// The directory the file lands in, opened without following links.
    dir: OwnedFd,
    partial: String,
    target: RelPath,
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
        let at = self.target.to_string();
        self.file
            .set_modified(t)
            .map_err(|e| self.share.error(&at, beneath::Error::Io(e)))?;
        match self.share.durability {
            Durability::Batched => {
                // The next flush syncs and renames it; until then it stays
                // a partial, which a resumed run sweeps if we die first.
                self.committed = true;
                let entry = (std::mem::take(&mut self.partial), self.target.clone());
                self.share
                    .pending
                    .lock()
                    .expect("pending list poisoned")
                    .push(entry);
            }
            Durability::PerFile => {
                self.file
                    .sync_data()
                    .map_err(|e| self.share.error(&at, beneath::Error::Io(e)))?;
                self.committed = true;
                self.share.rename(&self.dir, &self.partial, &self.target)?;
                self.share.touch(beneath::split(&self.target).0);
            }
        }
        Ok(())
    }
}

impl Drop for ShareLanding<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&self.dir, self.partial.as_str(), AtFlags::empty());
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

/// A stat's version string: size, mtime, ctime, device and inode.
fn version_of(st: &rustix::fs::Stat) -> Version {
    Version(format!(
        "{}:{}.{}:{}.{}:{}:{}",
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
        st.st_dev,
        st.st_ino
    ))
}

impl Destination for Share {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn version(&self, rel: &RelPath) -> Result<Option<Version>, DestError> {
        match self.dir.stat(rel) {
            Ok(Some((Kind::File, st))) => Ok(Some(version_of(&st))),
            Ok(Some((kind, _))) => Err(DestError::Blocked {
                path: self.dir.display(rel.as_str()),
                what: kind.describe(),
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(self.error(rel.as_str(), e)),
        }
    }

    fn remove_if(&self, rel: &RelPath, version: &Version) -> Result<Removal, DestError> {
        // A file changed between this check and the unlink would be lost:
        // the window is one stat, and a share has no conditional delete.
        // The stat and the unlink use the same directory descriptor, so
        // what is removed is what was checked, never something a link
        // points at.
        let (dir, name) = self
            .dir
            .parent(rel, false)
            .map_err(|e| self.error(rel.as_str(), e))?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => return Ok(Removal::Gone),
            Err(e) => return Err(self.io_at(rel.as_str())(e)),
            Ok(st) if beneath::Kind::of_stat(&st) != Kind::File || version_of(&st) != *version => {
                return Ok(Removal::Changed);
            }
            Ok(_) => {}
        }
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => return Ok(Removal::Gone),
            Err(e) => return Err(self.io_at(rel.as_str())(e)),
        }
        // Remove the directories this emptied (only empty ones: anything
        // else stops the climb; never the root); `flush` syncs the first
        // one left.
        let mut left = beneath::split(rel).0;
        while !left.is_empty() {
            let (up, last) = left.rsplit_once('/').unwrap_or(("", left));
            let Ok((parent, _)) = self.dir.dir(up, false) else {
                break;
            };
            if rustix::fs::unlinkat(&parent, last, AtFlags::REMOVEDIR).is_err() {
                break;
            }
            left = up;
        }
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(left.to_owned());
        Ok(Removal::Removed)
    }

    fn landed_size(&self, rel: &RelPath) -> Result<Option<u64>, DestError> {
        match self.dir.stat(rel) {
            Ok(Some((Kind::File, st))) => Ok(Some(st.st_size as u64)),
            Ok(_) => Ok(None),
            Err(e) => Err(self.error(rel.as_str(), e)),
        }
    }

    fn create(&self, rel: &RelPath, mtime_ns: i64) -> Result<Box<dyn Landing + '_>, DestError> {
        let (dir_rel, name) = beneath::split(rel);
        let (dir, made) = self
            .dir
            .dir(dir_rel, true)
            .map_err(|e| self.error(rel.as_str(), e))?;
        if made > 0 {
            // A new directory's own entry lives in its parent: sync every
            // ancestor up to the root at the next flush.
            let mut up = dir_rel;
            while let Some((parent, _)) = up.rsplit_once('/') {
                self.touch(parent);
                up = parent;
            }
            self.touch("");
        }
        if !self.replace {
            match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(self.io_at(rel.as_str())(e)),
                Ok(_) => {
                    return Err(DestError::Exists {
                        path: self.dir.display(rel.as_str()),
                    });
                }
            }
        }
        let partial = Self::partial_name(name);
        let fd = rustix::fs::openat(
            &dir,
            partial.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            // Patient data: readable by owner and group only.
            Mode::from_raw_mode(0o640),
        )
        .map_err(|e| {
            let at = match dir_rel {
                "" => partial.clone(),
                d => format!("{d}/{partial}"),
            };
            self.io_at(&at)(e)
        })?;
        Ok(Box::new(ShareLanding {
            file: File::from(fd),
            dir,
            partial,
            target: rel.clone(),
            mtime_ns,
            share: self,
            committed: false,
        }))
    }

    fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send + '_>, DestError> {
        let f = self
            .dir
            .open_file(rel)
            .map_err(|e| self.error(rel.as_str(), e))?;
        // Landed files were synced, so their cached pages are clean: drop
        // them so a verify reads what the device stores, not what the page
        // cache still holds from the copy.
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        Ok(Box::new(f))
    }

    fn list(&self) -> Box<dyn Iterator<Item = Result<Listed, DestError>> + Send + '_> {
        let lock = RelPath::new(LOCK_NAME).expect("a valid name");
        Box::new(crate::source::walk(&self.root).filter_map(move |e| {
            use crate::source::{REASON_SPECIAL, REASON_SYMLINK, SourceEntry};
            Some(match e {
                SourceEntry::File(f) if f.rel == lock => return None,
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
            })
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
            let Some(rel) = partial
                .then(|| RelPath::from_fs(&self.root, entry.path()))
                .flatten()
            else {
                continue;
            };
            // Removed through the directory descriptor, never a link that
            // replaced a directory since the walk saw it.
            let (dir, name) = self
                .dir
                .parent(&rel, false)
                .map_err(|e| self.error(rel.as_str(), e))?;
            rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(self.io_at(rel.as_str()))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn flush(&self) -> Result<(), DestError> {
        self.flush_fanned(&InTurn)
    }

    fn flush_fanned(&self, fan: &dyn Fan) -> Result<(), DestError> {
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
        let dirs: Vec<String> = self
            .touched
            .lock()
            .expect("touched set poisoned")
            .drain()
            .collect();
        if !pending.is_empty() {
            let syncfs = || rustix::fs::syncfs(self.dir.fd()).map_err(|e| io(&self.root)(e.into()));
            // Data first: once this returns, every partial's bytes are on
            // the device, so a final name never holds less than its file.
            syncfs()?;
            // A batch comes in walk order, so its files share folders: the
            // renames go in runs of whole folders, each run on a thread of
            // the fan's (a folder's renames would only queue on its lock)
            // and each folder opened once for its run.
            let runs = folder_runs(&pending, fan.ways());
            fan.run(runs.len(), &|i| self.rename_all(&pending[runs[i].clone()]))?;
            // Then the renames (and any new directories) themselves.
            syncfs()?;
            return Ok(());
        }
        fan.run(dirs.len(), &|i| {
            let d = &dirs[i];
            let (fd, _) = self.dir.dir(d, false).map_err(|e| self.error(d, e))?;
            rustix::fs::fsync(&fd).map_err(self.io_at(d))
        })
    }
}

impl Share {
    /// Renames committed partials over their final names, opening each
    /// folder once for its run of files.
    fn rename_all(&self, pending: &[(String, RelPath)]) -> Result<(), DestError> {
        let mut open: Option<(&str, OwnedFd)> = None;
        for (partial, target) in pending {
            let (folder, _) = beneath::split(target);
            let dir = match open.take() {
                Some((at, fd)) if at == folder => fd,
                _ => {
                    self.dir
                        .parent(target, false)
                        .map_err(|e| self.error(target.as_str(), e))?
                        .0
                }
            };
            self.rename(&dir, partial, target)?;
            open = Some((folder, dir));
        }
        Ok(())
    }
}

/// Splits `pending` into at most `ways` runs of about equal length, each
/// ending where a folder's run of files does: files are committed about in
/// walk order, so a folder's renames stay on one thread (two threads
/// renaming into one folder would only queue on its lock; correct, but no
/// faster). Runs are not made shorter than [`MIN_RUN`] renames.
fn folder_runs(pending: &[(String, RelPath)], ways: usize) -> Vec<std::ops::Range<usize>> {
    let len = pending.len();
    let ways = ways.clamp(1, len.div_ceil(MIN_RUN).max(1));
    let step = len.div_ceil(ways).max(1);
    let folder = |i: usize| beneath::split(&pending[i].1).0;
    let mut runs = Vec::with_capacity(ways);
    let mut start = 0;
    while start < len {
        let mut end = (start + step).min(len);
        while end < len && folder(end) == folder(end - 1) {
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// The fewest renames worth a run of their own (a thread's start costs
/// about as much as a few renames).
const MIN_RUN: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::Part;

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

    fn pending(folders: &[(&str, usize)]) -> Vec<(String, RelPath)> {
        let mut v = Vec::new();
        for (folder, n) in folders {
            for i in 0..*n {
                let rel = RelPath::new(format!("{folder}/{i}")).unwrap();
                v.push((format!(".p{i}"), rel));
            }
        }
        v
    }

    #[test]
    fn renames_split_into_runs_of_whole_folders() {
        let runs = |p: &[(String, RelPath)], ways| -> Vec<(usize, usize)> {
            folder_runs(p, ways)
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect()
        };
        assert_eq!(runs(&[], 4), []);
        assert_eq!(runs(&pending(&[("a", 1)]), 4), [(0, 1)]);
        assert_eq!(runs(&pending(&[("a", 1)]), 0), [(0, 1)]);
        // One folder is one run, however many ways.
        assert_eq!(runs(&pending(&[("a", 1000)]), 8), [(0, 1000)]);
        // A run ends where its last folder does.
        let three = pending(&[("a", 100), ("b", 100), ("c", 100)]);
        assert_eq!(runs(&three, 2), [(0, 200), (200, 300)]);
        assert_eq!(runs(&three, 3), [(0, 100), (100, 200), (200, 300)]);
        assert_eq!(runs(&three, 1), [(0, 300)]);
        // A folder a file: equal runs, none under MIN_RUN renames.
        let spread: Vec<(String, RelPath)> = (0..1000)
            .flat_map(|i| pending(&[(&format!("d{i}"), 1)]))
            .collect();
        assert_eq!(
            runs(&spread, 4),
            [(0, 250), (250, 500), (500, 750), (750, 1000)]
        );
        assert_eq!(runs(&spread[..100], 8), [(0, 50), (50, 100)]);
        assert_eq!(runs(&spread[..MIN_RUN], 8), [(0, MIN_RUN)]);
    }

    /// A fan on threads of its own, counting the parts it ran and failing
    /// the one at `fail`.
    struct Threads {
        ran: std::sync::atomic::AtomicUsize,
        fail: Option<usize>,
    }

    impl Fan for Threads {
        fn ways(&self) -> usize {
            4
        }

        fn run(&self, parts: usize, part: &Part<'_>) -> Result<(), DestError> {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..parts)
                    .map(|i| {
                        s.spawn(move || {
                            self.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            match self.fail == Some(i) {
                                true => Err(DestError::Io {
                                    path: format!("part {i}").into(),
                                    source: io::Error::other("injected"),
                                }),
                                false => part(i),
                            }
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| h.join().unwrap())
            })
        }
    }

    #[test]
    fn a_fanned_flush_renames_every_file_and_fails_with_a_part() {
        for fail in [None, Some(1)] {
            let dir = tempfile::tempdir().unwrap();
            let share = Share::for_writing(dir.path())
                .unwrap()
                .with_durability(Durability::Batched);
            let rels: Vec<RelPath> = (0..400)
                .map(|i| RelPath::new(format!("s{}/f{i}", i / 10)).unwrap())
                .collect();
            for rel in &rels {
                let mut l = share.create(rel, 0).unwrap();
                l.write_all(rel.as_str().as_bytes()).unwrap();
                l.commit().unwrap();
            }
            let fan = Threads {
                ran: 0.into(),
                fail,
            };
            let flushed = share.flush_fanned(&fan);
            assert_eq!(fan.ran.into_inner(), 4, "400 files in 40 folders, 4 ways");
            let landed = rels
                .iter()
                .filter(|r| share.landed_size(r).unwrap().is_some())
                .count();
            match fail {
                None => {
                    flushed.unwrap();
                    assert_eq!(landed, 400);
                }
                // The failed part's hundred files stay partials (a resumed
                // run sweeps them); the error is the flush's.
                Some(_) => {
                    let e = flushed.unwrap_err().to_string();
                    assert!(e.contains("part 1") && e.contains("injected"), "{e}");
                    assert_eq!(landed, 300);
                }
            }
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
