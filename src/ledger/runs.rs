//! Runs: beginning or resuming one, recording its batches of landed,
//! failed and excluded files, marking it incomplete, finding a run to
//! resume, what past runs measured ([`Copying`]), and the point lookups a
//! resumed run makes ([`LandedLookup`]).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::Failure;
use super::{Event, Ledger, LedgerError, batch_digest, kind, row_hash};
use crate::keys::SigningKey;
use crate::manifest::{Excluded, SourceChange, Wave};
use crate::source::dicom::Instance;

/// A run's identity within the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunRef {
    /// The run number.
    pub id: u64,
    /// Which attempt at this run (1 for the first).
    pub attempt: u64,
    /// Whether this attempt resumes an incomplete run.
    pub resumed: bool,
    /// The run's number within its job (`--job`): 1 for the job's first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_run: Option<u64>,
}

/// A file that landed, to be recorded.
#[derive(Debug, Clone)]
pub struct LandedFile {
    /// Relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Source mtime, ns since the epoch.
    pub mtime_ns: i64,
    /// BLAKE3 hex.
    pub blake3: String,
    /// CRC64 hex (16 digits); absent in rows from before schema 3.
    pub crc64: Option<String>,
    /// The stored (encrypted) object, when it differs from the plaintext.
    pub stored: Option<Stored>,
    /// The DICOM instance the file holds (schema 4), when it is one.
    pub dicom: Option<Instance>,
    /// When this landing is a new version of a file the job landed before
    /// (schema 5): that file's path; `path` is then the versioned name.
    pub version_of: Option<String>,
}

/// Size and hash of a stored object that is not the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hex.
    pub blake3: String,
    /// CRC64 hex (16 digits); absent in rows from before schema 3.
    pub crc64: Option<String>,
}

/// A `landed.dicom` column: the canonical JSON of an [`Instance`]. A value
/// that does not parse is a conversion error naming the column (an edited
/// ledger), never a silent `None`.
pub(super) fn dicom_column(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Instance>> {
    let Some(text) = r.get::<_, Option<String>>(i)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

/// What identifies a run, and what it is started with.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// The source root.
    pub source: &'a str,
    /// The destination, as it describes itself.
    pub destination: &'a str,
    /// What part of the source it carries (`None`: all of it): runs of
    /// other selections are other runs.
    pub selection: Option<&'a str>,
    /// The encryption key's id, when encrypting.
    pub encryption_key_id: Option<&'a str>,
    /// The wave it belongs to.
    pub wave: Option<&'a Wave>,
    /// The job it belongs to.
    pub job: Option<&'a str>,
}

impl<'a> NewRun<'a> {
    /// A run of all of `source` into `destination`, in no wave or job,
    /// not encrypted.
    pub fn new(source: &'a str, destination: &'a str) -> Self {
        NewRun {
            source,
            destination,
            selection: None,
            encryption_key_id: None,
            wave: None,
            job: None,
        }
    }
}

impl Ledger {
    /// Starts a run for `source` → `destination`, resuming the latest one
    /// that is not sealed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_run(&mut self, run: &NewRun<'_>, key: &SigningKey) -> Result<RunRef, LedgerError> {
        let NewRun {
            source,
            destination,
            selection,
            encryption_key_id,
            wave,
            job,
        } = *run;
        self.register_key(key)?;
        if let Some(job) = job {
            self.check_job(job, source, destination, selection, encryption_key_id)?;
        }
        let open = self.open_run_with_key(source, destination, selection, job)?;
        // A run belongs to the wave it was started in; resuming it as part
        // of another wave is refused (without one, it stays in its own).
        if let (Some((run, _)), Some(wave)) = (&open, wave) {
            let started = self.run_wave(*run)?;
            if started.as_ref() != Some(wave) {
                return Err(LedgerError::WaveMismatch {
                    path: self.path.clone(),
                    run: *run,
                    started: match started {
                        Some(w) => format!("as wave {:?} ({})", w.name, w.change),
                        None => "outside any wave".into(),
                    },
                });
            }
        }
        if let Some((run, started)) = &open
            && started.as_deref() != encryption_key_id
        {
            return Err(LedgerError::EncryptionMismatch {
                path: self.path.clone(),
                run: *run,
                started: match started {
                    Some(id) => format!("with encryption key {id}"),
                    None => "without encryption".into(),
                },
            });
        }
        let run = match open.map(|(id, _)| id) {
            Some(id) => {
                let attempts: u64 = self
                    .conn
                    .query_row(
                        "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind IN (?2, ?3)",
                        params![id, kind::RUN_STARTED, kind::RUN_RESUMED],
                        |r| r.get(0),
                    )
                    .map_err(self.err())?;
                self.conn
                    .execute("UPDATE runs SET status = 'open' WHERE id = ?1", [id])
                    .map_err(self.err())?;
                self.conn
                    .execute("DELETE FROM excluded WHERE run_id = ?1", [id])
                    .map_err(self.err())?;
                RunRef {
                    id,
                    attempt: attempts + 1,
                    resumed: true,
                    job_run: self.run_job(id)?.map(|(_, n)| n),
                }
            }
            None => {
                let job_run = job.map(|j| self.next_job_run(j)).transpose()?;
                self.conn
                    .execute(
                        "INSERT INTO runs (started_at, source, destination, host, operator, key_fingerprint, tool_version, status, encryption_key_id, job, job_run, selection)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10, ?11)",
                        params![
                            crate::now_rfc3339(),
                            source,
                            destination,
                            crate::host_name(),
                            key.identity(),
                            key.fingerprint(),
                            crate::TOOL_VERSION,
                            encryption_key_id,
                            job,
                            job_run,
                            selection
                        ],
                    )
                    .map_err(self.err())?;
                RunRef {
                    id: self.conn.last_insert_rowid() as u64,
                    attempt: 1,
                    resumed: false,
                    job_run,
                }
            }
        };
        let kind = if run.resumed {
            kind::RUN_RESUMED
        } else {
            kind::RUN_STARTED
        };
        let mut payload = json!({
            "attempt": run.attempt,
            "destination": destination,
            "encryption_key_id": encryption_key_id,
            "host": crate::host_name(),
            "operator": key.identity(),
            "source": source,
            "tool_version": crate::TOOL_VERSION,
        });
        if let Some(w) = wave {
            payload["wave"] = serde_json::to_value(w).expect("a wave serialises");
        }
        if let (Some(name), Some(n)) = (job, run.job_run) {
            payload["job"] = json!({ "name": name, "run": n });
        }
        self.append_event(kind, Some(run.id), None, &payload, None)?;
        Ok(run)
    }

    /// Time spent copying and bytes landed over every run this ledger
    /// recorded ([`super::Copying`]): the throughput `custody plan`
    /// estimates with.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn copying(&self) -> Result<super::Copying, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, kind, at, CASE kind WHEN ?1 THEN json_extract(payload, '$.bytes') END
                 FROM events WHERE run_id IS NOT NULL AND kind IN (?1, ?2, ?3, ?4, ?5)
                 ORDER BY run_id, seq",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(
                params![
                    kind::FILES_LANDED,
                    kind::RUN_STARTED,
                    kind::RUN_RESUMED,
                    kind::SEALED,
                    kind::RUN_INCOMPLETE
                ],
                |r| {
                    Ok((
                        r.get::<_, u64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<u64>>(3)?,
                    ))
                },
            )
            .map_err(self.err())?;
        let mut copying = super::Copying::default();
        let mut run = None;
        for row in rows {
            let (id, kind, at, bytes) = row.map_err(self.err())?;
            if run.replace(id) != Some(id) {
                copying.close();
            }
            if let Ok(at) = at.parse() {
                copying.event(&kind, at, bytes.unwrap_or(0));
            }
        }
        copying.close();
        Ok(copying)
    }

    /// The wave a run was started in (its `run_started` event's `wave`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn run_wave(&self, run: u64) -> Result<Option<Wave>, LedgerError> {
        let payload: Option<String> = self
            .conn
            .query_row(
                "SELECT payload FROM events WHERE run_id = ?1 AND kind = ?2 ORDER BY seq LIMIT 1",
                params![run, kind::RUN_STARTED],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(payload
            .and_then(|p| serde_json::from_str::<Value>(&p).ok())
            .and_then(|mut p| serde_json::from_value(p["wave"].take()).ok()))
    }

    /// Records a batch: landed files (bound into one `files_landed` event),
    /// failures (one `file_failed` event each), source
    /// changes a job's run found (one `source_changed` event each) and
    /// exclusions, in one transaction.
    ///
    /// # Errors
    /// SQLite errors; then nothing of the batch is recorded.
    pub fn record_batch(
        &mut self,
        run: u64,
        landed: &[LandedFile],
        failed: &[Failure],
        excluded: &[Excluded],
        changes: &[SourceChange],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let sql = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.write()?;
        if !landed.is_empty() {
            let seq: u64 = tx
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM events", [], |r| {
                    r.get(0)
                })
                .map_err(sql)?;
            let hashes: Vec<String> = landed.iter().map(|f| row_hash(run, seq, f)).collect();
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO landed (run_id, event_seq, path, size, mtime_ns, blake3, row_hash,
                                             stored_size, stored_blake3, crc64, stored_crc64, dicom,
                                             version_of)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )
                    .map_err(sql)?;
                for (f, h) in landed.iter().zip(&hashes) {
                    ins.execute(params![
                        run,
                        seq,
                        f.path,
                        f.size,
                        f.mtime_ns,
                        f.blake3,
                        h,
                        f.stored.as_ref().map(|s| s.size),
                        f.stored.as_ref().map(|s| s.blake3.as_str()),
                        f.crc64,
                        f.stored.as_ref().and_then(|s| s.crc64.as_deref()),
                        f.dicom
                            .as_ref()
                            .filter(|_| f.crc64.is_some())
                            .map(Instance::to_json),
                        f.version_of,
                    ])
                    .map_err(sql)?;
                }
            }
            let payload = json!({
                "bytes": landed.iter().map(|f| f.size).sum::<u64>(),
                "digest": batch_digest(hashes.iter().map(String::as_str)),
                "files": landed.len(),
            });
            let ev = Self::append(
                &tx,
                &path,
                kind::FILES_LANDED,
                Some(run),
                None,
                &payload,
                None,
            )?;
            debug_assert_eq!(ev.seq, seq);
        }
        for f in failed {
            let payload = json!({ "class": f.class, "error": f.error, "path": f.path });
            Self::append(
                &tx,
                &path,
                kind::FILE_FAILED,
                Some(run),
                None,
                &payload,
                None,
            )?;
        }
        for c in changes {
            let payload = serde_json::to_value(c).expect("a source change serialises");
            Self::append(
                &tx,
                &path,
                kind::SOURCE_CHANGED,
                Some(run),
                None,
                &payload,
                None,
            )?;
        }
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO excluded (run_id, path, reason) VALUES (?1, ?2, ?3)")
                .map_err(sql)?;
            for e in excluded {
                ins.execute(params![run, e.path, e.reason]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Ends an attempt with failures: the run stays open for a rerun.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn mark_incomplete(&mut self, run: u64, summary: &Value) -> Result<Event, LedgerError> {
        self.conn
            .execute("UPDATE runs SET status = 'incomplete' WHERE id = ?1", [run])
            .map_err(self.err())?;
        self.append_event(kind::RUN_INCOMPLETE, Some(run), None, summary, None)
    }

    /// The run a transfer from `source` to `destination` would resume, if
    /// any (read only; [`Ledger::begin_run`] decides).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_run(
        &self,
        source: &str,
        destination: &str,
        selection: Option<&str>,
        job: Option<&str>,
    ) -> Result<Option<u64>, LedgerError> {
        Ok(self
            .open_run_with_key(source, destination, selection, job)?
            .map(|(id, _)| id))
    }

    /// The latest run for `source` → `destination`, open or sealed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn latest_run(
        &self,
        source: &str,
        destination: &str,
        selection: Option<&str>,
    ) -> Result<Option<u64>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id FROM runs WHERE source = ?1 AND destination = ?2 AND selection IS ?3
                 ORDER BY id DESC LIMIT 1",
                params![source, destination, selection],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// The open run for `source` → `destination` (in `job`, or in none)
    /// and the encryption key id it was started with.
    fn open_run_with_key(
        &self,
        source: &str,
        destination: &str,
        selection: Option<&str>,
        job: Option<&str>,
    ) -> Result<Option<(u64, Option<String>)>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id, encryption_key_id FROM runs
                 WHERE source = ?1 AND destination = ?2 AND status != 'sealed' AND job IS ?3
                   AND selection IS ?4
                 ORDER BY id DESC LIMIT 1",
                params![source, destination, job, selection],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Whether every file the run's manifest will list has a CRC64 (false
    /// only for a run resumed across the upgrade to schema 3).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn run_has_crc64(&self, run: u64) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM landed
                 WHERE id IN (SELECT MAX(id) FROM landed WHERE run_id = ?1 GROUP BY path)
                   AND (crc64 IS NULL OR (stored_size IS NOT NULL AND stored_crc64 IS NULL)))",
                [run],
                |r| r.get(0),
            )
            .map_err(self.err())
    }
}

/// Read-only lookups of what a run already landed, from a second
/// connection (WAL lets it read while the writer writes).
#[derive(Debug)]
pub struct LandedLookup {
    conn: Connection,
    run: u64,
}

/// What the ledger says landed for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Size in bytes.
    pub size: u64,
    /// Source mtime, ns.
    pub mtime_ns: i64,
    /// Size of the stored object, when it is not the plaintext.
    pub stored_size: Option<u64>,
    /// The DICOM instance it held (what a DICOMweb service names it by).
    pub dicom: Option<Instance>,
}

impl LandedLookup {
    /// Opens a read-only connection to `path` for `run`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(path: &Path, run: u64) -> Result<Self, LedgerError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(LandedLookup { conn, run })
    }

    /// The latest record of `path` in this run.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn get(&self, path: &str) -> Result<Option<Recorded>, rusqlite::Error> {
        self.conn
            .prepare_cached(
                "SELECT size, mtime_ns, stored_size, dicom FROM landed WHERE run_id = ?1 AND path = ?2
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![self.run, path], |r| {
                Ok(Recorded {
                    size: r.get(0)?,
                    mtime_ns: r.get(1)?,
                    stored_size: r.get(2)?,
                    dicom: dicom_column(r, 3)?,
                })
            })
            .optional()
    }
}
