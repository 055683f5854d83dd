//! Verification ahead of the seal: objects a transfer re-read from the
//! destination right after their batch was made durable, while later
//! batches were still being copied (docs/ARCHITECTURE.md, "Verify overlaps
//! the copy").
//!
//! [`Early`] is the set of objects found right, with the size and BLAKE3
//! they were found with, kept in a private temporary database on disk (ten
//! million names do not stay in memory). The verify that follows the seal
//! counts an object in the set as verified without reading it again only
//! when the manifest expects exactly that size and hash; everything else
//! (an object not re-read early, found wrong, or landed by an earlier
//! attempt) is read then, as before. A kill loses the set, so a resumed run
//! re-reads everything: nothing is ever taken as verified that was not
//! read back in this run.

use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Checked, Expected, VerifyError, check};
use crate::dest::Destination;
use crate::progress::{Progress, Tally};
use crate::relpath::RelPath;

/// Objects re-read early and found right.
pub struct Early {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Early").finish_non_exhaustive()
    }
}

impl Early {
    /// An empty set.
    ///
    /// # Errors
    /// The temporary database could not be created.
    pub fn new() -> Result<Self, VerifyError> {
        // An empty name: a private temporary database on disk.
        let conn = Connection::open("")?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA temp_store = FILE;
             CREATE TABLE early (object TEXT PRIMARY KEY, size INTEGER NOT NULL, blake3 TEXT NOT NULL)
                 WITHOUT ROWID;
             BEGIN;",
        )?;
        // One transaction for the set's whole life, as the manifest's
        // index has (`manifest::index`): it is private and dies with it.
        Ok(Early {
            conn: Mutex::new(conn),
        })
    }

    /// Re-reads `object` (its name, size and the BLAKE3 of its stored
    /// bytes) from `dest` and keeps it when found right, tallied as
    /// verified.
    ///
    /// # Errors
    /// The temporary database could not be written.
    pub fn reread(
        &self,
        dest: &dyn Destination,
        (object, size, blake3): &(String, u64, String),
        progress: &dyn Progress,
    ) -> Result<(), VerifyError> {
        let Ok(rel) = RelPath::new(object.as_str()) else {
            return Ok(());
        };
        let expected = Expected {
            size: *size,
            blake3: blake3.clone(),
            plain: None,
            crc64: None,
            times: 1,
        };
        // Nothing but the stored bytes is proven here (no key); the verify
        // after the seal decides about anything found wrong.
        let Checked::Ok { bytes, .. } = check(dest, &rel, &expected, None, &Quiet) else {
            return Ok(());
        };
        progress.tally(Tally::Verified { bytes });
        self.conn
            .lock()
            .expect("early set lock poisoned")
            .prepare_cached(
                "INSERT OR REPLACE INTO early (object, size, blake3) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![object, *size as i64, blake3])?;
        Ok(())
    }

    /// Whether `object` was re-read early with exactly the size and BLAKE3
    /// `expected` gives.
    ///
    /// # Errors
    /// The temporary database could not be read.
    pub(super) fn holds(&self, object: &str, expected: &Expected) -> Result<bool, VerifyError> {
        let conn = self.conn.lock().expect("early set lock poisoned");
        let found: Option<(i64, String)> = conn
            .prepare_cached("SELECT size, blake3 FROM early WHERE object = ?1")?
            .query_row([object], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(found.is_some_and(|(size, blake3)| {
            size as u64 == expected.size && blake3 == expected.blake3
        }))
    }
}

/// The early reads' bytes are not the phase's: they are tallied as
/// verified, not shown as copied.
struct Quiet;

impl Progress for Quiet {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::share::Share;

    fn expected(size: u64, blake3: &str) -> Expected {
        Expected {
            size,
            blake3: blake3.to_owned(),
            plain: None,
            crc64: None,
            times: 1,
        }
    }

    #[test]
    fn only_what_was_read_back_right_is_held_and_only_as_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("right"), b"right").unwrap();
        std::fs::write(dir.path().join("wrong"), b"WRONG").unwrap();
        let share = Share::for_writing(dir.path()).unwrap();
        let hash = |b: &[u8]| blake3::hash(b).to_hex().to_string();
        let early = Early::new().unwrap();
        for object in [
            ("right".into(), 5, hash(b"right")),
            ("wrong".into(), 5, hash(b"wrong")),
            ("gone".into(), 4, hash(b"gone")),
            ("short".into(), 9, hash(b"right")),
        ] {
            early
                .reread(&share, &object, &crate::progress::Silent)
                .unwrap();
        }
        assert!(early.holds("right", &expected(5, &hash(b"right"))).unwrap());
        // Found wrong, absent, or expected otherwise: left to a read.
        assert!(!early.holds("wrong", &expected(5, &hash(b"wrong"))).unwrap());
        assert!(!early.holds("gone", &expected(4, &hash(b"gone"))).unwrap());
        assert!(!early.holds("short", &expected(9, &hash(b"right"))).unwrap());
        assert!(!early.holds("right", &expected(5, &hash(b"other"))).unwrap());
        assert!(!early.holds("right", &expected(6, &hash(b"right"))).unwrap());
    }
}
