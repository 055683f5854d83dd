//! The set of objects a manifest expects, on disk rather than in memory:
//! what verify, the BOM check and the copy-log check look objects up in.
//!
//! A manifest of a million files is a few hundred megabytes of entries; a
//! verify needs them as a set it can look objects up in and, at the end,
//! list what was never seen. This keeps that set in a private temporary
//! SQLite database (deleted when closed; SQLite spills its pages to disk
//! past a small cache), so a verify's memory does not grow with the
//! number of files.

use rusqlite::{Connection, OptionalExtension, params};

use super::{FileEntry, ManifestError, SignedFile};

/// The index could not be built or asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The manifest could not be read again for its entries.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The temporary database failed (temporary space).
    #[error("index of expected files: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The object a manifest entry expects at the destination: the stored
/// (encrypted) object when there is one, else the plaintext file.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// Its size.
    pub size: u64,
    /// Its BLAKE3, lowercase hex.
    pub blake3: String,
    /// For an encrypted object: the plaintext's size and BLAKE3.
    pub plain: Option<(u64, String)>,
    /// Its CRC64, lowercase hex (version 3 manifests).
    pub crc64: Option<String>,
    /// How many times it has been taken, this time included.
    pub times: u64,
}

/// How complete one study is at the destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StudyCompleteness {
    /// StudyInstanceUID.
    pub study: String,
    /// Instances (files) the manifest lists in it.
    pub instances: u64,
    /// Of those, present at the destination.
    pub landed: u64,
    /// Of those, re-read with the right size and BLAKE3.
    pub verified: u64,
}

impl StudyCompleteness {
    /// Every instance landed and verified.
    pub fn complete(&self) -> bool {
        self.verified == self.instances
    }
}

impl Expected {
    /// The object a manifest entry expects, and its name at the destination.
    pub(crate) fn of(f: FileEntry) -> (String, Self) {
        let (object, expected) = match f.stored {
            Some(s) => (
                s.path,
                Expected {
                    size: s.size,
                    blake3: s.blake3,
                    plain: Some((f.size, f.blake3)),
                    crc64: s.crc64,
                    times: 1,
                },
            ),
            None => (
                f.path,
                Expected {
                    size: f.size,
                    blake3: f.blake3,
                    plain: None,
                    crc64: f.crc64,
                    times: 1,
                },
            ),
        };
        (object, expected)
    }
}

pub(crate) struct Index {
    conn: Connection,
}

impl Index {
    /// A new, empty index.
    pub(crate) fn new() -> Result<Self, IndexError> {
        // An empty name: a private temporary database on disk.
        let conn = Connection::open("")?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -16384;
             PRAGMA temp_store = FILE;
             CREATE TABLE expected (
                 object      TEXT PRIMARY KEY,
                 size        INTEGER NOT NULL,
                 blake3      TEXT NOT NULL,
                 plain_size  INTEGER,
                 plain_hash  TEXT,
                 crc64       TEXT,
                 study       TEXT,
                 source      TEXT,
                 seen        INTEGER NOT NULL DEFAULT 0,
                 verified    INTEGER NOT NULL DEFAULT 0
             ) WITHOUT ROWID;
             BEGIN;",
        )?;
        // One transaction for the index's whole life, never committed: the
        // database is private and dies with it, and a statement outside a
        // transaction would be a transaction of its own, whose end walks
        // SQLite's page cache (a third of a verify's CPU time per object,
        // measured with perf on 50,000 files).
        Ok(Index { conn })
    }

    /// Streams `manifest`'s entries into a new index.
    pub(crate) fn build(manifest: &SignedFile) -> Result<Self, IndexError> {
        let mut index = Self::new()?;
        index.add(manifest)?;
        Ok(index)
    }

    /// Streams `manifest`'s entries in: an object listed before is
    /// superseded (a job's chain is added oldest first).
    pub(crate) fn add(&mut self, manifest: &SignedFile) -> Result<(), IndexError> {
        let mut insert = self.conn.prepare(
            "INSERT OR REPLACE INTO expected
                 (object, size, blake3, plain_size, plain_hash, crc64, study, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        manifest.for_each_file(|f| {
            let study = f.dicom.as_ref().and_then(|d| d.study.clone());
            let path = f.path.clone();
            let (object, e) = Expected::of(f);
            let (plain_size, plain_hash) = e.plain.unzip();
            // The source file, where the object's name does not say it
            // (an instance in a DICOMweb service).
            let source = (!object.starts_with(path.as_str())).then_some(path.as_str());
            insert
                .execute(params![
                    object, e.size, e.blake3, plain_size, plain_hash, e.crc64, study, source
                ])
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        Ok(())
    }

    /// The entry for `object`, marking it seen; `None` if the manifest does
    /// not list it.
    pub(crate) fn take(&self, object: &str) -> rusqlite::Result<Option<Expected>> {
        let found = self
            .conn
            .prepare_cached(
                "UPDATE expected SET seen = seen + 1 WHERE object = ?1
                 RETURNING size, blake3, plain_size, plain_hash, crc64, seen",
            )?
            .query_row([object], |r| {
                let plain = match (r.get::<_, Option<u64>>(2)?, r.get(3)?) {
                    (Some(size), Some(hash)) => Some((size, hash)),
                    _ => None,
                };
                Ok(Expected {
                    size: r.get(0)?,
                    blake3: r.get(1)?,
                    plain,
                    crc64: r.get(4)?,
                    times: r.get(5)?,
                })
            })
            .optional()?;
        Ok(found)
    }

    /// Marks `object` as re-read and matching.
    pub(crate) fn verified(&self, object: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("UPDATE expected SET verified = 1 WHERE object = ?1")?
            .execute([object])
            .map(drop)
    }

    /// Per study (the manifest's `dicom.study`), in UID order: instances
    /// expected, present at the destination, and verified.
    pub(crate) fn by_study(&self) -> rusqlite::Result<Vec<StudyCompleteness>> {
        let mut stmt = self.conn.prepare(
            "SELECT study, COUNT(*), SUM(seen > 0), SUM(verified)
             FROM expected WHERE study IS NOT NULL GROUP BY study ORDER BY study",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StudyCompleteness {
                study: r.get(0)?,
                instances: r.get(1)?,
                landed: r.get(2)?,
                verified: r.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// How many objects are expected, and their bytes.
    pub(crate) fn totals(&self) -> rusqlite::Result<(u64, u64)> {
        self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM expected",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// The source file `object` was landed from, where its name does not
    /// say it (an instance in a DICOMweb service).
    pub(crate) fn source(&self, object: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT source FROM expected WHERE object = ?1")?
            .query_row([object], |r| r.get(0))
            .optional()
            .map(Option::flatten)
    }

    /// Every expected object's name, in no particular order.
    pub(crate) fn for_each_object(&self, mut each: impl FnMut(&str)) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare("SELECT object FROM expected")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            each(r.get_ref(0)?.as_str()?);
        }
        Ok(())
    }

    /// Every object never seen, with its expected size and, where the
    /// object's name does not say it, the source file it was landed from.
    pub(crate) fn for_each_unseen(
        &self,
        mut each: impl FnMut(String, u64, Option<String>),
    ) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT object, size, source FROM expected WHERE seen = 0")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            each(r.get(0)?, r.get(1)?, r.get(2)?);
        }
        Ok(())
    }
}
