//! The custody ledger: the only module that runs SQL.
//!
//! One SQLite file (WAL, `synchronous=FULL`) holds runs, landed files, sealed
//! manifests (exact bytes and signature) and custody events. Every event
//! carries the hash of the one before it; `sealed` and `verified` events also
//! carry an SSHSIG over their own hash made with the operator's key, so
//! rewriting history needs that key. Landed-file rows are hashed one by one
//! and bound, batch by batch, into a `files_landed` event. `docs/ledger.md`
//! is the specification; [`Ledger::verify_chain`] checks all of it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::keys::{KeyError, SigningKey};

mod chain;
mod class;
mod copying;
mod events;
mod health;
mod job;
pub mod kind;
mod manifests;
mod runs;
mod schema;
mod tree;

pub use chain::{ChainProblem, ChainReport, batch_digest, event_hash, row_hash};
pub use class::{Failure, FailureClass};
pub use copying::Copying;
pub use events::{Event, Handoff};
pub use health::{Health, Watched};
pub use job::{JobRun, JobState, Prior, SealedRun};
pub use runs::{LandedFile, LandedLookup, NewRun, Recorded, RunRef, Stored};
pub use tree::{LedgerCheckpoint, SinceReport};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 7;
/// The most bytes of a sealed manifest one ledger value holds:
/// `manifests.bytes` holds the first part and `manifest_parts` the rest,
/// in order (schema 7). SQLite refuses a value over 1,000,000,000 bytes,
/// and a manifest of ten million files is about 1.9 GB.
const MANIFEST_PART: u64 = 256 << 20;
/// The collation (registered on every connection) that orders paths as a
/// manifest lists them.
const COMPONENTS: &str = "custody_components";

/// `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors from the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// SQLite failed.
    #[error("ledger {path}: {source}")]
    Sqlite {
        /// The ledger file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The ledger file does not exist (and was not to be created).
    #[error("ledger {path}: no such file (run a transfer first, or pass --ledger)")]
    Missing {
        /// The ledger file.
        path: PathBuf,
    },
    /// The ledger was written by a newer `custody`.
    #[error(
        "ledger {path}: schema version {found} is newer than this custody supports ({SCHEMA_VERSION}); upgrade custody"
    )]
    NewerSchema {
        /// The ledger file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// An open run was started in another wave (or in none).
    #[error(
        "ledger {path}: run {run} for this source and destination was started {started}; finish it in that wave, or roll it back"
    )]
    WaveMismatch {
        /// The ledger file.
        path: PathBuf,
        /// The open run.
        run: u64,
        /// How it was started.
        started: String,
    },
    /// A job's run does not fit the job (another source, destination or
    /// encryption setting than its first run).
    #[error("ledger {path}: job {job:?} {reason}; start another job for this")]
    JobMismatch {
        /// The ledger file.
        path: PathBuf,
        /// The job.
        job: String,
        /// How it does not fit.
        reason: String,
    },
    /// An open run was started with another encryption setting.
    #[error(
        "ledger {path}: run {run} for this source and destination was started {started}; resume it with the same setting"
    )]
    EncryptionMismatch {
        /// The ledger file.
        path: PathBuf,
        /// The open run.
        run: u64,
        /// How it was started (e.g. "with encryption key …").
        started: String,
    },
    /// Signing an event failed.
    #[error("ledger {path}: {source}")]
    Key {
        /// The ledger file.
        path: PathBuf,
        /// The cause.
        source: KeyError,
    },
    /// No manifest with that id (or those bytes) was sealed in this ledger.
    #[error("ledger {path}: no manifest {manifest} was sealed in this ledger")]
    UnknownManifest {
        /// The ledger file.
        path: PathBuf,
        /// The id, or the file, asked for.
        manifest: String,
    },
    /// Streaming a manifest's bytes into or out of the ledger failed.
    #[error("ledger {path}: manifest bytes: {source}")]
    ManifestBytes {
        /// The ledger file.
        path: PathBuf,
        /// The cause (SQLite's incremental blob I/O, or the manifest file).
        source: std::io::Error,
    },
    /// A stored value is not what this schema allows.
    #[error("ledger {path}: {reason}")]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The ledger (one connection, owned by one writer).
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// The ledger file as opened for the setup lock, kept open for as long
    /// as the connection (and closed after it): closing any descriptor of
    /// the file would drop every POSIX lock this process holds on it,
    /// SQLite's included, and another process could then take the
    /// connection for gone (checkpointing and removing the WAL under it).
    file: std::fs::File,
}

impl Ledger {
    /// Opens (creating if needed) and migrates the ledger at `path`.
    ///
    /// # Errors
    /// SQLite errors, or a schema newer than this code.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        // Setting up (WAL mode, creating or migrating the schema) is done by
        // one process at a time: two transfers opening a new ledger at once
        // both created the schema, and one failed. An OS lock (`flock`,
        // which does not touch SQLite's own locks) on the ledger file
        // orders them; the second finds the work done.
        // Created readable by owner and group only: the ledger names every
        // file (docs/SECURITY.md), and SQLite gives its -wal and -shm files
        // the database file's mode.
        use std::os::unix::fs::OpenOptionsExt;
        let setup = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| LedgerError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        let conn = Connection::open(path).map_err(|source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let mut l = Ledger {
            conn,
            path: path.to_path_buf(),
            file: setup,
        };
        l.configure()?;
        l.migrate()?;
        // The flock orders set-ups only; the descriptor stays open.
        l.file.unlock().map_err(|e| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        Ok(l)
    }

    /// Opens an existing ledger without creating one.
    ///
    /// # Errors
    /// [`LedgerError::Missing`] if there is no file.
    pub fn open_existing(path: &Path) -> Result<Self, LedgerError> {
        if !path.exists() {
            return Err(LedgerError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::open(path)
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
        move |source| LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs a query and collects every row through `map`.
    fn query_all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, LedgerError> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
        let rows = stmt.query_map(params, map).map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Begins a write transaction that takes the write lock when it
    /// begins (IMMEDIATE): a writer waits its turn here (`busy_timeout`)
    /// instead of failing later on a stale read snapshot.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>, LedgerError> {
        let path = &self.path;
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| LedgerError::Sqlite {
                path: path.clone(),
                source,
            })
    }

    fn corrupt(&self, reason: String) -> LedgerError {
        LedgerError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Records `key`'s public half so signed events can be checked later.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn register_key(&mut self, key: &SigningKey) -> Result<(), LedgerError> {
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| LedgerError::Key {
                path: self.path.clone(),
                source: KeyError::Sign(e),
            })?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO keys (fingerprint, public_key) VALUES (?1, ?2)",
                params![key.fingerprint(), public],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dicom::Instance;
    use serde_json::json;

    // Test vectors quoted in docs/ledger.md; they were cross-checked with an
    // independent implementation (Python's `blake3` package, framing by hand).
    #[test]
    fn event_hash_vector() {
        let h = event_hash(
            1,
            "2026-11-23T21:45:00Z",
            "run_started",
            Some(1),
            None,
            r#"{"attempt":1}"#,
            GENESIS,
        );
        assert_eq!(h, EVENT_VECTOR);
    }

    // Regression: two transfers opening a new ledger at once both created
    // the schema, and the second failed ("table keys already exists").
    #[test]
    fn processes_opening_a_new_ledger_at_once_all_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("custody.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Ledger::open(&path).map(drop).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for t in opened {
                t.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn landed_row_and_batch_vectors() {
        let f = LandedFile {
            path: "PAT0001/IM-0001".into(),
            size: 21,
            mtime_ns: 1_704_097_800_000_000_000,
            blake3: blake3::hash(b"synthetic CT slice 1\n").to_hex().to_string(),
            crc64: None,
            stored: None,
            dicom: None,
            version_of: None,
        };
        let r = row_hash(1, 2, &f);
        assert_eq!(r, ROW_VECTOR);
        assert_eq!(batch_digest([r.as_str()]), BATCH_VECTOR);
        // Schema 3 rows: with the CRC64 (tag 3), and encrypted (tag 4).
        let mut f = LandedFile {
            crc64: Some("facc43f140cf91d5".into()),
            ..f
        };
        assert_eq!(row_hash(1, 2, &f), ROW_VECTOR_3);
        f.stored = Some(Stored {
            size: 101,
            blake3: blake3::hash(b"stored").to_hex().to_string(),
            crc64: Some("24cd58459e540cc3".into()),
        });
        assert_eq!(row_hash(1, 2, &f), ROW_VECTOR_4);
        // Schema 4 rows of DICOM instances: tags 6 (encrypted) and 5.
        f.dicom = Some(Instance {
            instance: Some("1.2.826.0.1.3680043.8.498.1".into()),
            modality: Some("CT".into()),
            series: Some("1.2.826.0.1.3680043.8.498.2".into()),
            sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            study: Some("1.2.826.0.1.3680043.8.498.3".into()),
        });
        assert_eq!(row_hash(1, 2, &f), ROW_VECTOR_6);
        f.stored = None;
        assert_eq!(row_hash(1, 2, &f), ROW_VECTOR_5);
        // Schema 5: a new version of a changed source file (tag 7).
        f.path = "PAT0001/IM-0001.custody-v2".into();
        f.version_of = Some("PAT0001/IM-0001".into());
        assert_eq!(row_hash(1, 2, &f), ROW_VECTOR_7);
    }

    const ROW_VECTOR_7: &str = "f4506e6b3bb2af7d1322a34cb489d8ee5da97a44b3835a407c769d6aed9fe8bb";

    const ROW_VECTOR_5: &str = "cf9916edfb21e553b7d9f6783a2901db0222c60b7dc22bcb35937a7c9b626298";
    const ROW_VECTOR_6: &str = "69abaa75345bc0f8b6d1b621890ea25e2ea4a02b40f2b723549f85603d55a3a8";

    const ROW_VECTOR_3: &str = "2effcd97876425acee64137bf289496784aa6b5054bc197082095507fbf5bf55";
    const ROW_VECTOR_4: &str = "9f1c5ea34934ad3447a08b6d0482543b5213edd9c8eced561ace5673860d57d0";

    const EVENT_VECTOR: &str = "da9b286eea148967e9468c77746ec72306d425624b52b25eb7a1aa0944c70d99";
    const ROW_VECTOR: &str = "646ca1873ff84ba9d09090b8236be59dbef1362a0713e959fdca9c710f7fa746";
    const BATCH_VECTOR: &str = "516a43a1553a15a4453b18d4d18532fe76386c483888652153d624f2e6bbc55d";

    #[test]
    fn ledger_round_trip_and_chain_check() {
        let dir = tempfile::tempdir().unwrap();
        let g = crate::keys::generate(&dir.path().join("k"), "op").unwrap();
        let key = SigningKey::load(&g.private_key).unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db")).unwrap();
        let run = l.begin_run(&NewRun::new("/src", "/dst"), &key).unwrap();
        assert_eq!((run.id, run.attempt, run.resumed), (1, 1, false));
        let f = LandedFile {
            path: "a".into(),
            size: 1,
            mtime_ns: 0,
            blake3: blake3::hash(b"a").to_hex().to_string(),
            crc64: Some("8c2f8445b4cbfc3c".into()),
            stored: None,
            dicom: None,
            version_of: None,
        };
        l.record_batch(
            run.id,
            std::slice::from_ref(&f),
            &[Failure {
                path: "b".into(),
                error: "boom".into(),
                class: FailureClass::Destination,
            }],
            &[],
            &[],
        )
        .unwrap();
        assert!(l.run_has_crc64(run.id).unwrap());
        // A row from before schema 3 (no CRC64) makes the run's manifest an
        // older version; landing it again with one restores version 3.
        let old = LandedFile {
            path: "c".into(),
            crc64: None,
            ..f.clone()
        };
        l.record_batch(run.id, &[old], &[], &[], &[]).unwrap();
        assert!(!l.run_has_crc64(run.id).unwrap());
        let again = LandedFile {
            path: "c".into(),
            ..f.clone()
        };
        l.record_batch(run.id, &[again], &[], &[], &[]).unwrap();
        assert!(l.run_has_crc64(run.id).unwrap());
        l.mark_incomplete(run.id, &json!({})).unwrap();
        assert!(matches!(
            l.begin_run(
                &NewRun {
                    encryption_key_id: Some("00"),
                    ..NewRun::new("/src", "/dst")
                },
                &key
            ),
            Err(LedgerError::EncryptionMismatch { run: 1, .. })
        ));
        let again = l.begin_run(&NewRun::new("/src", "/dst"), &key).unwrap();
        assert_eq!((again.id, again.attempt, again.resumed), (1, 2, true));
        let report = l.verify_chain(None).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.events, report.landed_rows), (7, 3));
        assert_eq!(l.manifest_files(run.id).unwrap().len(), 2);
    }

    // Pins the v3 migration's reason: SQLite fills a zero blob lazily only
    // when it is the record's last column; elsewhere sealing a million-file
    // manifest allocated it in memory twice (315 MB peak).
    #[test]
    fn manifest_bytes_are_the_last_column() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("l.db")).unwrap();
        let columns: Vec<String> = l
            .conn
            .prepare("SELECT name FROM pragma_table_info('manifests') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            columns,
            ["id", "run_id", "created_at", "signature", "blake3", "bytes"]
        );
    }
}
