//! One transfer at a time per ledger and destination.
//!
//! Two transfers into the same destination with the same ledger would race:
//! both would plan the same files, land them twice and record them twice.
//! [`RunLock::acquire`] takes an exclusive OS lock (`flock`) on a small file
//! beside the ledger, named after the destination, and writes who holds it
//! (process id, host, start time) into it. A second transfer finds the lock
//! held and is refused at once, naming the holder. The OS drops the lock
//! when the holder exits, however it exits (`kill -9` included), so a lock
//! is never stale; the file itself stays, and only its lock state counts.

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
        )
    }
}

/// Errors taking the lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another transfer holds it.
    #[error("another transfer is running into {destination} with this ledger: {holder} (lock {})", lock.display())]
    Busy {
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
        let path = Self::path(ledger, destination);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Busy {
                    destination: destination.to_owned(),
                    holder: Box::new(serde_json::from_str(&text).unwrap_or_default()),
                    lock: path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder {
            pid: std::process::id(),
            host: crate::host_name(),
            started: jiff::Timestamp::now().to_string(),
            destination: destination.to_owned(),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(
            serde_json::to_string(&holder)
                .expect("plain fields")
                .as_bytes(),
        )
        .map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn file(&self) -> &Path {
        &self.path
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
}
