//! One run at a time per ledger and destination, and one writer per
//! directory destination whatever its ledger.
//!
//! Two transfers into the same destination with the same ledger would race:
//! both would plan the same files, land them twice and record them twice.
//! [`RunLock::acquire`] takes an exclusive OS lock (`flock`) on a small file
//! beside the ledger, named after the destination, and writes who holds it
//! (process id, host, start time) into it. A second transfer finds the lock
//! held and is refused at once, naming the holder. The OS drops the lock
//! when the holder exits, however it exits (`kill -9` included), so a lock
//! is never stale; the file itself stays, and only its lock state counts.
//!
//! Two transfers into one directory with *different* ledgers would sweep
//! each other's partial landings and overwrite each other's files, and no
//! file beside either ledger can see the other. So a directory destination
//! is also locked in itself: [`RunLock::in_destination`] takes the same kind
//! of lock on [`DEST_LOCK`] at the destination's root (for a network share,
//! the server arbitrates it between hosts), and removes the file when the
//! run ends, since everything under a Data Box share is uploaded. A file
//! left by a killed run is taken over by the next one (its lock died with
//! its holder); a holder re-checks after locking that the name still
//! refers to the file it locked, so a file being removed by the previous
//! holder is never mistaken for a live lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds a destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When it took the lock (RFC 3339, UTC).
    pub started: String,
    /// The destination, as it describes itself.
    pub destination: String,
    /// The ledger the holder records into (locks in a destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid == 0 {
            // Caught between taking the lock and writing its name.
            return f.write_str("a process that is just starting");
        }
        write!(
            f,
            "process {} on {}, started {}",
            self.pid, self.host, self.started
        )?;
        match &self.ledger {
            Some(l) => write!(f, ", ledger {l}"),
            None => Ok(()),
        }
    }
}

pub use crate::dest::share::LOCK_NAME as DEST_LOCK;

/// Errors taking the lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another transfer holds it.
    #[error("another transfer is running into {destination} {scope}: {holder} (lock {})", lock.display())]
    Busy {
        /// Whose lock: "with this ledger", or the destination's own.
        scope: &'static str,
        /// The destination.
        destination: String,
        /// Who holds it.
        holder: Box<Holder>,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file cannot be used.
    #[error("lock file {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
    /// Remove the file when released (a lock inside a destination).
    remove: bool,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.remove {
            // Still locked here: a process that opened the file before
            // this unlink finds, once it gets the lock, that the name no
            // longer refers to it, and starts again.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl RunLock {
    /// The lock file for `destination` beside `ledger`.
    pub fn path(ledger: &Path, destination: &str) -> PathBuf {
        let id = blake3::hash(destination.as_bytes()).to_hex();
        let name = ledger
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custody.db".into());
        ledger.with_file_name(format!("{name}.{}.lock", &id[..16]))
    }

    /// Takes the lock for `destination`, or says who holds it.
    ///
    /// # Errors
    /// [`LockError::Busy`] when another process holds it; [`LockError::Io`]
    /// when the lock file cannot be created or written.
    pub fn acquire(ledger: &Path, destination: &str) -> Result<RunLock, LockError> {
        Self::take(
            Self::path(ledger, destination),
            destination,
            None,
            "with this ledger",
        )
    }

    /// Takes the lock inside the directory destination `root` (see the
    /// module documentation), naming `ledger` as the holder's.
    ///
    /// # Errors
    /// As [`RunLock::acquire`].
    pub fn in_destination(
        root: &Path,
        destination: &str,
        ledger: &Path,
    ) -> Result<RunLock, LockError> {
        let ledger = std::path::absolute(ledger).unwrap_or_else(|_| ledger.to_path_buf());
        Self::take(
            root.join(DEST_LOCK),
            destination,
            Some(ledger.display().to_string()),
            "(its lock in the destination is held, whatever the ledger)",
        )
    }

    fn take(
        path: PathBuf,
        destination: &str,
        ledger: Option<String>,
        scope: &'static str,
    ) -> Result<RunLock, LockError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let remove = ledger.is_some();
        let file = loop {
            let file = open_locked(&path).map_err(io)?;
            let mut file = match file {
                Locked::Held(f) => f,
                Locked::Busy(mut f) => {
                    let mut text = String::new();
                    let _ = f.read_to_string(&mut text);
                    return Err(LockError::Busy {
                        scope,
                        destination: destination.to_owned(),
                        holder: Box::new(serde_json::from_str(&text).unwrap_or_default()),
                        lock: path,
                    });
                }
            };
            // A lock that is removed on release may have been unlinked
            // between our open and our lock: then it locks nothing.
            let same = |m: std::fs::Metadata| {
                file.metadata()
                    .is_ok_and(|f| (f.dev(), f.ino()) == (m.dev(), m.ino()))
            };
            if !remove || std::fs::symlink_metadata(&path).is_ok_and(same) {
                let _ = file.rewind();
                break file;
            }
        };
        let holder = Holder {
            pid: std::process::id(),
            host: crate::host_name(),
            started: jiff::Timestamp::now().to_string(),
            destination: destination.to_owned(),
            ledger,
        };
        // Written through a descriptor of its own, closed at once: the one
        // that holds the lock stays read-only where the filesystem allows,
        // so a held lock never keeps a share from being remounted.
        let mut w = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io)?;
        w.set_len(0).map_err(io)?;
        w.write_all(
            serde_json::to_string(&holder)
                .expect("plain fields")
                .as_bytes(),
        )
        .map_err(io)?;
        Ok(RunLock {
            _file: file,
            path,
            remove,
        })
    }

    /// The lock file.
    pub fn file(&self) -> &Path {
        &self.path
    }
}

/// A lock file, opened and tried.
enum Locked {
    /// Ours now.
    Held(File),
    /// Someone else's (the file, to read who).
    Busy(File),
}

/// Opens (creating, mode 0640, never through a link) and tries to lock
/// `path`: read-only where the filesystem locks read-only descriptors
/// (local ones), read-write where it does not (NFS maps `flock` onto
/// POSIX locks, which want a descriptor open for writing).
fn open_locked(path: &Path) -> std::io::Result<Locked> {
    use rustix::fs::{Mode, OFlags};
    let base = OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut access = OFlags::RDONLY;
    loop {
        let file = File::from(rustix::fs::open(
            path,
            base | access,
            Mode::from_raw_mode(0o640),
        )?);
        match file.try_lock() {
            Ok(()) => return Ok(Locked::Held(file)),
            Err(std::fs::TryLockError::WouldBlock) => return Ok(Locked::Busy(file)),
            Err(std::fs::TryLockError::Error(e))
                if e.raw_os_error() == Some(rustix::io::Errno::BADF.raw_os_error())
                    && access == OFlags::RDONLY =>
            {
                access = OFlags::RDWR;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("custody.db");
        let first = RunLock::acquire(&ledger, "/mnt/box/pacs").unwrap();
        match RunLock::acquire(&ledger, "/mnt/box/pacs") {
            Err(LockError::Busy { holder, .. }) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.destination, "/mnt/box/pacs");
            }
            other => panic!("{other:?}"),
        }
        // Another destination is another lock.
        let other = RunLock::acquire(&ledger, "/mnt/box/other").unwrap();
        assert_ne!(other.file(), first.file());
        drop(first);
        RunLock::acquire(&ledger, "/mnt/box/pacs").unwrap();
    }

    #[test]
    fn a_destination_lock_holds_across_ledgers_and_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let first = RunLock::in_destination(&dest, "d", &dir.path().join("a.db")).unwrap();
        match RunLock::in_destination(&dest, "d", &dir.path().join("b.db")) {
            Err(LockError::Busy { holder, .. }) => {
                assert!(holder.ledger.unwrap().ends_with("a.db"));
            }
            other => panic!("{other:?}"),
        }
        assert!(dest.join(DEST_LOCK).exists());
        drop(first);
        assert!(!dest.join(DEST_LOCK).exists(), "removed with its holder");
        // A file left by a killed holder is taken over.
        std::fs::write(dest.join(DEST_LOCK), b"{}").unwrap();
        drop(RunLock::in_destination(&dest, "d", &dir.path().join("b.db")).unwrap());
        // A link planted as the lock is not followed.
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dest.join(DEST_LOCK)).unwrap();
        assert!(matches!(
            RunLock::in_destination(&dest, "d", &dir.path().join("b.db")),
            Err(LockError::Io { .. })
        ));
        assert!(!dir.path().join("elsewhere").exists());
    }
}
