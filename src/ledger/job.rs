//! Named jobs: runs tied together by `transfer --job NAME`.
//!
//! A job's first run is a full transfer; each later run moves what is new
//! since the job's earlier runs. This module answers the questions that
//! needs: does a run fit its job, what number does it get, which manifest
//! did the job seal last (the link the next manifest carries), what has
//! the job landed so far ([`JobState`]), and which source changes did a run
//! find.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::Digest as _;

use super::{Ledger, LedgerError, kind};
use crate::manifest::{Link, SourceChange};

/// What a job landed for one source path: the latest landing over its
/// sealed runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    /// Size in bytes.
    pub size: u64,
    /// Source mtime when it landed, ns.
    pub mtime_ns: i64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    /// The manifest that lists the landing.
    pub manifest: String,
}

/// One run of a job, for `custody log --job`.
#[derive(Debug, Clone, Serialize)]
pub struct JobRun {
    /// The run's number within the job.
    pub job_run: u64,
    /// The ledger's run number.
    pub run: u64,
    /// When its first attempt started (RFC 3339).
    pub started_at: String,
    /// `open`, `incomplete` or `sealed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u64,
    /// Its manifest, once sealed.
    pub manifest: Option<String>,
    /// Files it landed (what its manifest lists, once sealed).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Source changes its latest attempt found.
    pub source_changes: u64,
}

/// A sealed run, and how far its custody got: what a transfer run again
/// after it sealed starts from.
#[derive(Debug, Clone)]
pub struct SealedRun {
    /// The run.
    pub run: u64,
    /// How many attempts it took.
    pub attempts: u64,
    /// Its manifest's id.
    pub manifest: String,
    /// Its job and number there, if it belongs to one.
    pub job: Option<(String, u64)>,
    /// The files and bytes its manifest lists (its `sealed` event's).
    pub totals: (u64, u64),
    /// Its manifest's latest `verified` event: when, and its result
    /// (`pass`/`fail`); `None` when no verify of it completed.
    pub verified: Option<(String, String)>,
}

impl Ledger {
    /// Checks that a run of `job` from `source` to `destination` fits the
    /// job's first run: a job's state is one destination's, fed from one
    /// source, under one encryption setting.
    pub(super) fn check_job(
        &self,
        job: &str,
        source: &str,
        destination: &str,
        selection: Option<&str>,
        encryption_key_id: Option<&str>,
    ) -> Result<(), LedgerError> {
        type First = (String, String, Option<String>, Option<String>);
        let first: Option<First> = self
            .conn
            .query_row(
                "SELECT source, destination, encryption_key_id, selection FROM runs
                 WHERE job = ?1 ORDER BY job_run LIMIT 1",
                [job],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((src, dst, key, sel)) = first else {
            return Ok(());
        };
        let reason = if src != source {
            format!("reads {src}, not {source}")
        } else if dst != destination {
            format!("lands in {dst}, not {destination}")
        } else if sel.as_deref() != selection {
            let none = "no filters, list or shard";
            format!(
                "was started with {}, not with {}",
                sel.as_deref().unwrap_or(none),
                selection.unwrap_or(none)
            )
        } else if key.as_deref() != encryption_key_id {
            match key {
                Some(k) => format!("encrypts with key {k}"),
                None => "does not encrypt".to_owned(),
            }
        } else {
            return Ok(());
        };
        Err(LedgerError::JobMismatch {
            path: self.path.clone(),
            job: job.to_owned(),
            reason,
        })
    }

    /// Run `run`, if it is sealed: its manifest, job, and latest verify.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sealed_run(&self, run: u64) -> Result<Option<SealedRun>, LedgerError> {
        type Row = (
            String,
            Option<String>,
            Option<u64>,
            u64,
            Option<u64>,
            Option<u64>,
        );
        let row: Option<Row> = self
            .conn
            .query_row(
                "SELECT r.manifest_id, r.job, r.job_run,
                        (SELECT COUNT(*) FROM events e WHERE e.run_id = r.id AND e.kind IN (?2, ?3)),
                        json_extract(s.payload, '$.files'), json_extract(s.payload, '$.bytes')
                 FROM runs r LEFT JOIN events s ON s.manifest_id = r.manifest_id AND s.kind = ?4
                 WHERE r.id = ?1 AND r.status = 'sealed'",
                params![run, kind::RUN_STARTED, kind::RUN_RESUMED, kind::SEALED],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((manifest, job, job_run, attempts, files, bytes)) = row else {
            return Ok(None);
        };
        let verified = self
            .conn
            .query_row(
                "SELECT at, json_extract(payload, '$.result') FROM events
                 WHERE manifest_id = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT 1",
                params![manifest, kind::VERIFIED],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                },
            )
            .optional()
            .map_err(self.err())?;
        Ok(Some(SealedRun {
            run,
            attempts,
            manifest,
            job: job.zip(job_run),
            totals: (files.unwrap_or(0), bytes.unwrap_or(0)),
            verified,
        }))
    }

    /// The latest run of `job`, when the job reads `source` and lands in
    /// `destination` (otherwise the run that asks is refused later, naming
    /// the mismatch).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn job_latest_run(
        &self,
        job: &str,
        source: &str,
        destination: &str,
        selection: Option<&str>,
    ) -> Result<Option<u64>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id FROM runs WHERE job = ?1 AND source = ?2 AND destination = ?3
                   AND selection IS ?4
                 ORDER BY job_run DESC LIMIT 1",
                params![job, source, destination, selection],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Makes the sealed one-off run `run` the first run of `job`: a
    /// transfer run again after it sealed goes on as that job's next run
    /// (`docs/ledger.md`, "Runs, attempts, resume and incomplete runs").
    /// Its manifest is unchanged: the job's second manifest links to it.
    ///
    /// # Errors
    /// SQLite errors, or a run that is not a sealed one-off run.
    pub fn adopt_into_job(&mut self, run: u64, job: &str) -> Result<(), LedgerError> {
        let changed = self
            .conn
            .execute(
                "UPDATE runs SET job = ?2, job_run = 1
                 WHERE id = ?1 AND status = 'sealed' AND job IS NULL
                   AND NOT EXISTS (SELECT 1 FROM runs WHERE job = ?2)",
                params![run, job],
            )
            .map_err(self.err())?;
        match changed {
            1 => Ok(()),
            _ => Err(self.corrupt(format!(
                "run {run} cannot become the first run of job {job:?}"
            ))),
        }
    }

    /// The number the next run of `job` gets.
    pub(super) fn next_job_run(&self, job: &str) -> Result<u64, LedgerError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(job_run), 0) + 1 FROM runs WHERE job = ?1",
                [job],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// The job a run belongs to, and its number there.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn run_job(&self, run: u64) -> Result<Option<(String, u64)>, LedgerError> {
        self.conn
            .query_row(
                "SELECT job, job_run FROM runs WHERE id = ?1 AND job IS NOT NULL",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// The link to run `job_run - 1` of `job`: its manifest's id and the
    /// BLAKE3 and SHA-256 of its exact bytes (read back from the ledger).
    /// `None` for a job's first run.
    ///
    /// # Errors
    /// SQLite errors, or a previous run that was never sealed.
    pub fn job_link(&self, job: &str, job_run: u64) -> Result<Option<Link>, LedgerError> {
        if job_run <= 1 {
            return Ok(None);
        }
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT m.id, m.blake3 FROM runs r JOIN manifests m ON m.id = r.manifest_id
                 WHERE r.job = ?1 AND r.job_run = ?2 AND r.status = 'sealed'",
                params![job, job_run - 1],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((id, blake3)) = row else {
            return Err(self.corrupt(format!(
                "job {job:?}: run {} has no sealed manifest to link run {job_run} to",
                job_run - 1
            )));
        };
        let mut blob = self.stored_manifest(&id);
        let mut sha = sha2::Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = blob
                .read(&mut buf)
                .map_err(|source| LedgerError::ManifestBytes {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        Ok(Some(Link {
            blake3,
            id,
            sha256: crate::digest::hex_lower(&sha.finalize()),
        }))
    }

    /// The newest sealed manifest of `job`, if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn job_head(&self, job: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT manifest_id FROM runs WHERE job = ?1 AND status = 'sealed'
                 ORDER BY job_run DESC LIMIT 1",
                [job],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Every run of `job`, first to last.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn job_runs(&self, job: &str) -> Result<Vec<JobRun>, LedgerError> {
        let mut runs = self.query_all(
            "SELECT r.job_run, r.id, r.started_at, r.status, r.manifest_id,
                    (SELECT COUNT(*) FROM events e WHERE e.run_id = r.id AND e.kind IN (?2, ?3))
             FROM runs r WHERE r.job = ?1 ORDER BY r.job_run",
            params![job, kind::RUN_STARTED, kind::RUN_RESUMED],
            |r| {
                Ok(JobRun {
                    job_run: r.get(0)?,
                    run: r.get(1)?,
                    started_at: r.get(2)?,
                    status: r.get(3)?,
                    manifest: r.get(4)?,
                    attempts: r.get(5)?,
                    files: 0,
                    bytes: 0,
                    source_changes: 0,
                })
            },
        )?;
        for run in &mut runs {
            (run.files, run.bytes) = self
                .conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM landed
                     WHERE id IN (SELECT MAX(id) FROM landed WHERE run_id = ?1 GROUP BY path)",
                    [run.run],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(self.err())?;
            run.source_changes = self.run_source_changes(run.run)?.len() as u64;
        }
        Ok(runs)
    }

    /// The source changes the run's latest attempt recorded, in path
    /// order (what its manifest lists).
    ///
    /// # Errors
    /// SQLite errors, or a stored payload that is not a source change.
    pub fn run_source_changes(&self, run: u64) -> Result<Vec<SourceChange>, LedgerError> {
        let payloads = self.query_all(
            "SELECT payload FROM events WHERE run_id = ?1 AND kind = ?2
               AND seq > (SELECT MAX(seq) FROM events WHERE run_id = ?1 AND kind IN (?3, ?4))",
            params![
                run,
                kind::SOURCE_CHANGED,
                kind::RUN_STARTED,
                kind::RUN_RESUMED
            ],
            |r| r.get::<_, String>(0),
        )?;
        let mut out = payloads
            .iter()
            .map(|p| {
                serde_json::from_str::<SourceChange>(p)
                    .map_err(|e| self.corrupt(format!("a source_changed event: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| crate::relpath::cmp_components(&a.path, &b.path));
        Ok(out)
    }
}

/// What a job has landed so far, keyed by source path, for one run's walk
/// to compare against: a temporary table (on disk, not in memory) on a
/// connection of its own. Each path the walk meets is marked seen, so that
/// what was never seen (deleted at the source) can be listed at the end.
#[derive(Debug)]
pub struct JobState {
    conn: Connection,
    len: u64,
}

impl JobState {
    /// Loads the latest landing of every source path over the sealed runs
    /// of `job` in the ledger at `path`, and over the sealed run `seed`
    /// when given (a one-off run the job is about to adopt as its first).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn load(path: &Path, job: &str, seed: Option<u64>) -> Result<Self, LedgerError> {
        let err = |source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(60))
            .map_err(err)?;
        conn.execute_batch(
            "PRAGMA temp_store = FILE;
             CREATE TEMP TABLE job_state (
                 path     TEXT PRIMARY KEY,
                 size     INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL,
                 blake3   TEXT NOT NULL,
                 manifest TEXT NOT NULL,
                 run_id   INTEGER NOT NULL,
                 seen     INTEGER NOT NULL DEFAULT 0,
                 gone     INTEGER NOT NULL DEFAULT 0
             ) WITHOUT ROWID;",
        )
        .map_err(err)?;
        let len = conn
            .execute(
                "INSERT INTO temp.job_state (path, size, mtime_ns, blake3, manifest, run_id)
                 SELECT COALESCE(l.version_of, l.path), l.size, l.mtime_ns, l.blake3, r.manifest_id,
                        r.id
                 FROM landed l JOIN runs r ON r.id = l.run_id
                 WHERE l.id IN (
                     SELECT MAX(l2.id) FROM landed l2 JOIN runs r2 ON r2.id = l2.run_id
                     WHERE (r2.job = ?1 OR r2.id IS ?2) AND r2.status = 'sealed'
                     GROUP BY COALESCE(l2.version_of, l2.path))",
                params![job, seed],
            )
            .map_err(err)? as u64;
        // A deletion a sealed run already reported is not reported again
        // (the path stays known: if it comes back, it is compared with
        // what landed, never copied over it as new).
        conn.execute(
            "UPDATE temp.job_state SET gone = 1 WHERE EXISTS (
                 SELECT 1 FROM events e JOIN runs r ON r.id = e.run_id
                 WHERE (r.job = ?1 OR r.id IS ?3) AND r.status = 'sealed' AND e.kind = ?2
                   AND e.run_id > temp.job_state.run_id
                   AND json_extract(e.payload, '$.change') = 'deleted'
                   AND json_extract(e.payload, '$.path') = temp.job_state.path)",
            params![job, kind::SOURCE_CHANGED, seed],
        )
        .map_err(err)?;
        // What the sealed runs left out (not DICOM for a DICOMweb service,
        // a rule skipped), by path, with when the latest such run started:
        // a file left out then and not modified since is no new work.
        conn.execute_batch(
            "CREATE TEMP TABLE job_excluded (
                 path  TEXT PRIMARY KEY,
                 since TEXT NOT NULL
             ) WITHOUT ROWID;",
        )
        .map_err(err)?;
        conn.execute(
            "INSERT OR REPLACE INTO temp.job_excluded (path, since)
             SELECT x.path, r.started_at FROM excluded x JOIN runs r ON r.id = x.run_id
             WHERE (r.job = ?1 OR r.id IS ?2) AND r.status = 'sealed'
             ORDER BY r.id",
            params![job, seed],
        )
        .map_err(err)?;
        // From here on only the temporary tables are read and written: one
        // transaction for the rest of the state's life, never committed
        // (they die with the connection). A statement outside one is a
        // transaction of its own, whose end walks SQLite's page cache, per
        // file of the walk (as for the verify's index, `manifest::index`).
        // It touches only `temp`, so it holds no lock on the ledger.
        conn.execute_batch("BEGIN").map_err(err)?;
        Ok(JobState { conn, len })
    }

    /// Whether a sealed run of the job left `path` out, and the file's
    /// `mtime_ns` is no later than that run's start: left out for the same
    /// content, so no new work.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn excluded_unchanged(&self, path: &str, mtime_ns: i64) -> rusqlite::Result<bool> {
        let since: Option<String> = self
            .conn
            .prepare_cached("SELECT since FROM temp.job_excluded WHERE path = ?1")?
            .query_row([path], |r| r.get(0))
            .optional()?;
        Ok(since
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| i128::from(mtime_ns) <= t.as_nanosecond()))
    }

    /// How many source paths the job has landed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the job has landed nothing yet (its first run).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the job landed for `path`, marking it seen.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn take(&self, path: &str) -> rusqlite::Result<Option<Prior>> {
        self.conn
            .prepare_cached(
                "UPDATE temp.job_state SET seen = 1 WHERE path = ?1
                 RETURNING size, mtime_ns, blake3, manifest",
            )?
            .query_row([path], |r| {
                Ok(Prior {
                    size: r.get(0)?,
                    mtime_ns: r.get(1)?,
                    blake3: r.get(2)?,
                    manifest: r.get(3)?,
                })
            })
            .optional()
    }

    /// Whether the job landed `path` (without marking it seen).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn contains(&self, path: &str) -> rusqlite::Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM temp.job_state WHERE path = ?1")?
            .query_row([path], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
    }

    /// Every path the job landed that [`JobState::take`] never met (and
    /// whose deletion no sealed run reported yet), with the manifest that
    /// landed it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn for_each_unseen(&self, mut each: impl FnMut(String, String)) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, manifest FROM temp.job_state WHERE seen = 0 AND gone = 0")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            each(r.get(0)?, r.get(1)?);
        }
        Ok(())
    }
}
