//! The names a destination already holds, as a set on disk.
//!
//! The preflight's `exists-at-destination` rule asks, for every source
//! file, whether its name is taken. A directory answers with one `stat`
//! per name; a blob container would need one request per name, so it is
//! listed once instead (5,000 names a page) into this set. The set lives
//! in a private temporary SQLite database, deleted when dropped, so a
//! container of millions of blobs costs disk pages, not memory.

use std::sync::Mutex;

use rusqlite::Connection;

use super::{DestError, Destination, Listed};

/// Every object name listed at a destination.
pub struct Names {
    /// Behind a lock only so the set can be shared with the linter's
    /// thread; lookups come from one walk at a time.
    conn: Mutex<Connection>,
    /// Where the names were listed, for the report.
    from: String,
    count: u64,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("from", &self.from)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Names {
    /// Lists everything under `dest`'s root into a new set.
    ///
    /// # Errors
    /// The listing failed (the error names the destination), or the
    /// temporary database could not be written.
    pub fn list(dest: &dyn Destination) -> Result<Self, DestError> {
        let mut names = Self::empty(dest.describe())?;
        let from = names.from.clone();
        let local = |e| local(&from, e);
        let conn = names.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch("BEGIN;").map_err(local)?;
        let mut count = 0;
        {
            let mut insert = conn
                .prepare("INSERT OR IGNORE INTO name (path) VALUES (?1)")
                .map_err(local)?;
            for listed in dest.list() {
                let path = match listed? {
                    Listed::Object { rel, .. } => rel.to_string(),
                    Listed::Other { path, .. } => path,
                };
                count += insert.execute([path]).map_err(local)? as u64;
            }
        }
        conn.execute_batch("COMMIT;").map_err(local)?;
        names.count = count;
        Ok(names)
    }

    /// An empty set: what a destination that does not exist yet holds.
    ///
    /// # Errors
    /// The temporary database could not be created.
    pub fn empty(from: String) -> Result<Self, DestError> {
        let local = |e| local(&from, e);
        // An empty name: a private temporary database on disk.
        let conn = Connection::open("").map_err(local)?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA temp_store = FILE;
             CREATE TABLE name (path TEXT PRIMARY KEY) WITHOUT ROWID;",
        )
        .map_err(local)?;
        Ok(Names {
            conn: Mutex::new(conn),
            from,
            count: 0,
        })
    }

    /// How many names were listed.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was listed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `path` was listed.
    ///
    /// # Errors
    /// The temporary database could not be read.
    pub fn contains(&self, path: &str) -> rusqlite::Result<bool> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached("SELECT 1 FROM name WHERE path = ?1")?;
        stmt.exists([path])
    }
}

impl Names {
    /// What was listed (a URL without secrets).
    pub fn listed(&self) -> &str {
        &self.from
    }
}

/// A failure of the temporary database, named by the destination listed.
fn local(from: &str, e: rusqlite::Error) -> DestError {
    DestError::Unusable {
        path: from.into(),
        reason: format!("cannot keep the listing in a temporary file: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::databox::Occupied;
    use crate::dest::share::Share;

    #[test]
    fn lists_a_tree_and_answers_lookups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/one.dcm"), b"1").unwrap();
        std::fs::write(dir.path().join("top"), b"").unwrap();
        let names = Names::list(&Share::existing(dir.path()).unwrap()).unwrap();
        assert_eq!(names.len(), 2);
        assert!(names.contains("a/b/one.dcm").unwrap());
        assert!(names.contains("top").unwrap());
        // Folders are not objects, and case matters (blob names are exact).
        assert!(!names.contains("a/b").unwrap());
        assert!(!names.contains("TOP").unwrap());
        let said = names.occupied("top").unwrap();
        assert!(said.ends_with("/top already exists"), "{said}");
        assert_eq!(names.occupied("a/b/two.dcm"), None);
    }

    #[test]
    fn an_empty_destination_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::list(&Share::existing(dir.path()).unwrap()).unwrap();
        assert!(names.is_empty());
        assert_eq!(names.occupied("x"), None);
    }
}
