//! The custody ledger: the only module that runs SQL.
//!
//! One SQLite file (WAL, `synchronous=FULL`) holds runs, landed files, sealed
//! manifests (exact bytes and signature) and custody events. Every event
//! carries the hash of the one before it; `sealed` and `verified` events also
//! carry an SSHSIG over their own hash made with the operator's key, so
//! rewriting history needs that key. Landed-file rows are hashed one by one
//! and bound, batch by batch, into a `files_landed` event. `docs/ledger.md`
//! is the specification; [`Ledger::verify_chain`] checks all of it.

use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::blob::ZeroBlob;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::digest::frame;
use crate::keys::{self, KeyError, SigningKey, Trust};
use crate::manifest::{
    self, ChainHead, Excluded, FileEntry, Manifest, SourceChange, StoredEntry, Wave, Written,
};
use crate::relpath;
use crate::source::dicom::Instance;
use crate::source::mtime_rfc3339;

mod job;

pub use job::{JobRun, JobState, Prior};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 5;
/// The collation (registered on every connection) that orders paths as a
/// manifest lists them.
const COMPONENTS: &str = "custody_components";

/// `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SCHEMA_V1: &str = r#"
CREATE TABLE keys (
    fingerprint TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL
);
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    started_at      TEXT NOT NULL,
    source          TEXT NOT NULL,
    destination     TEXT NOT NULL,
    host            TEXT NOT NULL,
    operator        TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    tool_version    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'incomplete', 'sealed')),
    manifest_id     TEXT
);
CREATE TABLE landed (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES runs(id),
    event_seq INTEGER NOT NULL,
    path      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    blake3    TEXT NOT NULL,
    row_hash  TEXT NOT NULL
);
CREATE INDEX landed_run_path ON landed(run_id, path);
CREATE INDEX landed_event ON landed(event_seq);
CREATE TABLE excluded (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    path   TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX excluded_run ON excluded(run_id);
CREATE TABLE manifests (
    id         TEXT PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    created_at TEXT NOT NULL,
    bytes      BLOB NOT NULL,
    signature  TEXT NOT NULL,
    blake3     TEXT NOT NULL
);
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    run_id      INTEGER,
    manifest_id TEXT,
    payload     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    signer      TEXT,
    signature   TEXT
);
"#;

/// Version 1 → 2: encrypted transfers record the stored object's size and
/// hash, and a run remembers the encryption key it was started with.
const MIGRATE_V2: &str = r#"
ALTER TABLE landed ADD COLUMN stored_size INTEGER;
ALTER TABLE landed ADD COLUMN stored_blake3 TEXT;
ALTER TABLE runs ADD COLUMN encryption_key_id TEXT;
"#;

/// Version 2 → 3: landed rows record Azure Storage's CRC64 (of the
/// plaintext, and of the stored object when encrypted), and
/// `manifests.bytes` becomes the last column. SQLite keeps a
/// zero-filled blob unexpanded (for incremental blob I/O to fill) only when
/// it ends the record; anywhere else it allocates it in memory, which cost
/// ~2× the manifest (315 MB at a million files) when sealing.
const MIGRATE_V3: &str = r#"
CREATE TABLE manifests_v3 (
    id         TEXT PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs(id),
    created_at TEXT NOT NULL,
    signature  TEXT NOT NULL,
    blake3     TEXT NOT NULL,
    bytes      BLOB NOT NULL
);
INSERT INTO manifests_v3 (id, run_id, created_at, signature, blake3, bytes)
    SELECT id, run_id, created_at, signature, blake3, bytes FROM manifests;
DROP TABLE manifests;
ALTER TABLE manifests_v3 RENAME TO manifests;
ALTER TABLE landed ADD COLUMN crc64 TEXT;
ALTER TABLE landed ADD COLUMN stored_crc64 TEXT;
"#;

/// Event kinds. Stored as text; listed here so the code has one spelling.
pub mod kind {
    /// A new run began.
    pub const RUN_STARTED: &str = "run_started";
    /// An incomplete run was resumed.
    pub const RUN_RESUMED: &str = "run_resumed";
    /// A batch of files landed (rows in `landed` bound by digest).
    pub const FILES_LANDED: &str = "files_landed";
    /// One file failed in this attempt.
    pub const FILE_FAILED: &str = "file_failed";
    /// An attempt ended with failures; the run stays open for a rerun.
    pub const RUN_INCOMPLETE: &str = "run_incomplete";
    /// The run was sealed into a manifest (signed).
    pub const SEALED: &str = "sealed";
    /// Landed data was re-read and compared with a manifest (signed).
    pub const VERIFIED: &str = "verified";
    /// Data Box BOM files were reconciled with a manifest (signed).
    pub const BOM_CHECKED: &str = "bom_checked";
    /// A Data Box copy log was mapped onto a manifest (signed).
    pub const COPYLOG_CHECKED: &str = "copylog_checked";
    /// The media holding a manifest's files changed hands (signed).
    pub const HANDOFF: &str = "handoff";
    /// What a manifest landed was removed from its destination (signed).
    pub const ROLLED_BACK: &str = "rolled_back";
    /// A file a job landed before changed or disappeared at the source.
    pub const SOURCE_CHANGED: &str = "source_changed";

    /// Kinds that must carry a signature.
    pub const SIGNED: [&str; 6] = [
        SEALED,
        VERIFIED,
        BOM_CHECKED,
        COPYLOG_CHECKED,
        HANDOFF,
        ROLLED_BACK,
    ];
}

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

/// A custody event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Sequence number (1, 2, …, no gaps).
    pub seq: u64,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// Kind (see [`kind`]).
    pub kind: String,
    /// The run concerned.
    pub run: Option<u64>,
    /// The manifest concerned.
    pub manifest: Option<String>,
    /// Canonical JSON payload.
    pub payload: Value,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
    /// Fingerprint of the signing key, for signed events.
    pub signer: Option<String>,
}

/// A physical handoff of the media holding a manifest's files (HIPAA
/// 45 CFR 164.310(d)(2)(iii): a record of media movements and the person
/// responsible), recorded as a signed `handoff` event.
#[derive(Debug, Clone, Serialize)]
pub struct Handoff {
    /// Who released the media.
    pub from: String,
    /// Who received it.
    pub to: String,
    /// Why (e.g. "courier to Azure datacenter").
    pub purpose: String,
    /// Where it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The device's serial number (a Data Box's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_serial: Option<String>,
    /// The tamper-evident seal's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal_id: Option<String>,
    /// The order (a Data Box order name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// One problem found by [`Ledger::verify_chain`].
#[derive(Debug, Clone, Serialize)]
pub struct ChainProblem {
    /// The event concerned, when there is one.
    pub seq: Option<u64>,
    /// What is wrong, naming the row.
    pub problem: String,
}

/// The result of [`Ledger::verify_chain`].
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// Signed events whose signature verified.
    pub signatures: u64,
    /// Landed-file rows checked.
    pub landed_rows: u64,
    /// The chain head.
    pub head: ChainHead,
    /// Everything wrong; empty when the ledger is intact.
    pub problems: Vec<ChainProblem>,
}

/// The ledger (one connection, owned by one writer).
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

/// Version 3 → 4: landed rows record the DICOM instance a file holds (its
/// UIDs and modality, as the canonical JSON of the manifest's `dicom`
/// object), when it is one.
const MIGRATE_V4: &str = r#"
ALTER TABLE landed ADD COLUMN dicom TEXT;
"#;

/// Version 4 → 5: named jobs (`transfer --job`): a run may belong to a job
/// and carries its number within it; a landed row may be a new version of
/// a file the job landed before (`--on-source-change resend-as-version`),
/// landed under another name.
const MIGRATE_V5: &str = r#"
ALTER TABLE runs ADD COLUMN job TEXT;
ALTER TABLE runs ADD COLUMN job_run INTEGER;
CREATE UNIQUE INDEX runs_job ON runs(job, job_run) WHERE job IS NOT NULL;
ALTER TABLE landed ADD COLUMN version_of TEXT;
"#;

fn hex(h: blake3::Hash) -> String {
    h.to_hex().to_string()
}

/// The hash of an event (see `docs/ledger.md`, "Event hash").
pub fn event_hash(
    seq: u64,
    at: &str,
    kind: &str,
    run: Option<u64>,
    manifest: Option<&str>,
    payload: &str,
    prev_hash: &str,
) -> String {
    let mut b = Vec::with_capacity(256 + payload.len());
    frame(&mut b, b"custody-event/1");
    frame(&mut b, seq.to_string().as_bytes());
    frame(&mut b, at.as_bytes());
    frame(&mut b, kind.as_bytes());
    frame(
        &mut b,
        run.map(|r| r.to_string()).unwrap_or_default().as_bytes(),
    );
    frame(&mut b, manifest.unwrap_or("").as_bytes());
    frame(&mut b, payload.as_bytes());
    frame(&mut b, prev_hash.as_bytes());
    hex(blake3::hash(&b))
}

/// A `landed.dicom` column: the canonical JSON of an [`Instance`]. A value
/// that does not parse is a conversion error naming the column (an edited
/// ledger), never a silent `None`.
fn dicom_column(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<Instance>> {
    let Some(text) = r.get::<_, Option<String>>(i)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}

/// The hash of a landed-file row (see `docs/ledger.md`, "Landed rows").
pub fn row_hash(run: u64, event_seq: u64, f: &LandedFile) -> String {
    let mut b = Vec::with_capacity(256 + f.path.len());
    if let Some(of) = &f.version_of {
        // Schema 5 versioned rows: one fixed layout, absent values empty.
        frame(&mut b, b"custody-landed/7");
        for v in [
            run.to_string().as_str(),
            &event_seq.to_string(),
            &f.path,
            &f.size.to_string(),
            &f.mtime_ns.to_string(),
            &f.blake3,
            f.crc64.as_deref().unwrap_or(""),
            &f.stored
                .as_ref()
                .map(|s| s.size.to_string())
                .unwrap_or_default(),
            f.stored.as_ref().map_or("", |s| s.blake3.as_str()),
            f.stored
                .as_ref()
                .and_then(|s| s.crc64.as_deref())
                .unwrap_or(""),
            &f.dicom.as_ref().map(Instance::to_json).unwrap_or_default(),
            of,
        ] {
            frame(&mut b, v.as_bytes());
        }
        return hex(blake3::hash(&b));
    }
    let tag: &[u8] = match (&f.crc64, &f.stored, &f.dicom) {
        (None, None, _) => b"custody-landed/1",
        (None, Some(_), _) => b"custody-landed/2",
        (Some(_), None, None) => b"custody-landed/3",
        (Some(_), Some(_), None) => b"custody-landed/4",
        (Some(_), None, Some(_)) => b"custody-landed/5",
        (Some(_), Some(_), Some(_)) => b"custody-landed/6",
    };
    frame(&mut b, tag);
    frame(&mut b, run.to_string().as_bytes());
    frame(&mut b, event_seq.to_string().as_bytes());
    frame(&mut b, f.path.as_bytes());
    frame(&mut b, f.size.to_string().as_bytes());
    frame(&mut b, f.mtime_ns.to_string().as_bytes());
    frame(&mut b, f.blake3.as_bytes());
    if let Some(crc) = &f.crc64 {
        frame(&mut b, crc.as_bytes());
    }
    if let Some(st) = &f.stored {
        frame(&mut b, st.size.to_string().as_bytes());
        frame(&mut b, st.blake3.as_bytes());
        if f.crc64.is_some() {
            frame(&mut b, st.crc64.as_deref().unwrap_or("").as_bytes());
        }
    }
    // Schema 4 rows always carry the CRC64 (tags 5 and 6).
    if let (Some(_), Some(d)) = (&f.crc64, &f.dicom) {
        frame(&mut b, d.to_json().as_bytes());
    }
    hex(blake3::hash(&b))
}

/// The digest binding a batch of landed rows into their event.
pub fn batch_digest<'a>(row_hashes: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = blake3::Hasher::new();
    let mut b = Vec::new();
    frame(&mut b, b"custody-landed-batch/1");
    h.update(&b);
    for r in row_hashes {
        b.clear();
        frame(&mut b, r.as_bytes());
        h.update(&b);
    }
    hex(h.finalize())
}

/// Canonical JSON text of a payload (sorted keys, no white space).
fn canonical(v: &Value) -> String {
    // serde_json's map is ordered by key, so this is canonical.
    serde_json::to_string(v).expect("JSON value serialisation cannot fail")
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
        };
        l.configure()?;
        l.migrate()?;
        drop(setup);
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

    fn corrupt(&self, reason: String) -> LedgerError {
        LedgerError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn configure(&mut self) -> Result<(), LedgerError> {
        // Transfers into different destinations may share a ledger: writers
        // take turns. Every write transaction is IMMEDIATE (it takes the
        // write lock when it begins), so a writer waits here instead of
        // failing at once when it finds its read snapshot stale.
        self.conn
            .busy_timeout(std::time::Duration::from_secs(60))
            .map_err(self.err())?;
        // Manifest order, for sorting in SQLite (spilling to disk) rather
        // than in memory. Used in queries only, never in the schema, so
        // stock `sqlite3` still reads every table and index.
        self.conn
            .create_collation(COMPONENTS, relpath::cmp_components)
            .map_err(self.err())?;
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(self.err())?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(self.err())?;
        // The bundled SQLite keeps temporary files (the sorter's spill when
        // sealing a million files) in memory by default; on disk, sealing
        // runs in bounded memory.
        self.conn
            .pragma_update(None, "temp_store", "FILE")
            .map_err(self.err())?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(self.err())
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                path: self.path.clone(),
                found: version,
            });
        }
        if version > 0 && version < SCHEMA_VERSION {
            self.backup(version)?;
        }
        let steps: [(i64, &str); 5] = [
            (1, SCHEMA_V1),
            (2, MIGRATE_V2),
            (3, MIGRATE_V3),
            (4, MIGRATE_V4),
            (5, MIGRATE_V5),
        ];
        for (to, sql) in steps.into_iter().filter(|(to, _)| *to > version) {
            let path = self.path.clone();
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| LedgerError::Sqlite {
                    path: path.clone(),
                    source,
                })?;
            // Another process may have taken this step since `version` was
            // read (two transfers opening a new ledger at once): the write
            // lock is held now, so read again.
            let done: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|source| LedgerError::Sqlite {
                    path: path.clone(),
                    source,
                })?;
            if done >= to {
                continue;
            }
            tx.execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", to))
                .and_then(|()| tx.commit())
                .map_err(|source| LedgerError::Sqlite { path, source })?;
        }
        Ok(())
    }

    /// Before migrating an existing ledger, keeps a consistent copy of it
    /// as `<ledger>.v<version>.bak` (an existing backup is kept, not
    /// replaced).
    fn backup(&self, version: i64) -> Result<(), LedgerError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".v{version}.bak"));
        let backup = PathBuf::from(name);
        if backup.exists() {
            return Ok(());
        }
        tracing::info!(ledger = %self.path.display(), backup = %backup.display(), "migrating ledger; backup kept");
        self.conn
            .execute("VACUUM INTO ?1", [backup.to_string_lossy()])
            .map(|_| ())
            .map_err(self.err())
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

    /// The last event (or the genesis position when there is none).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn head(&self) -> Result<ChainHead, LedgerError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok(ChainHead {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())?
            .unwrap_or(ChainHead {
                seq: 0,
                hash: GENESIS.to_owned(),
            }))
    }

    /// Appends an event in the current transaction state of `conn`.
    fn append(
        conn: &Connection,
        path: &Path,
        kind: &str,
        run: Option<u64>,
        manifest: Option<&str>,
        payload: &Value,
        signer: Option<&SigningKey>,
    ) -> Result<Event, LedgerError> {
        let sql = |source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let (prev_seq, prev_hash): (u64, String) = conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?
            .unwrap_or((0, GENESIS.to_owned()));
        let seq = prev_seq + 1;
        let at = crate::now_rfc3339();
        let payload_text = canonical(payload);
        let hash = event_hash(seq, &at, kind, run, manifest, &payload_text, &prev_hash);
        let (fpr, sig) = match signer {
            Some(k) => {
                let sig = k
                    .sign(keys::LEDGER_NAMESPACE, hash.as_bytes())
                    .map_err(|source| LedgerError::Key {
                        path: path.to_path_buf(),
                        source,
                    })?;
                (Some(k.fingerprint()), Some(sig))
            }
            None => (None, None),
        };
        conn.execute(
            "INSERT INTO events (seq, at, kind, run_id, manifest_id, payload, prev_hash, hash, signer, signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![seq, at, kind, run, manifest, payload_text, prev_hash, hash, fpr, sig],
        )
        .map_err(sql)?;
        Ok(Event {
            seq,
            at,
            kind: kind.to_owned(),
            run,
            manifest: manifest.map(str::to_owned),
            payload: payload.clone(),
            prev_hash,
            hash,
            signer: fpr,
        })
    }

    /// Appends one event in its own transaction; signs it when `signer` is
    /// given.
    ///
    /// # Errors
    /// SQLite or signing errors; nothing is written then.
    pub fn append_event(
        &mut self,
        kind: &str,
        run: Option<u64>,
        manifest: Option<&str>,
        payload: &Value,
        signer: Option<&SigningKey>,
    ) -> Result<Event, LedgerError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| LedgerError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let ev = Self::append(&tx, &path, kind, run, manifest, payload, signer)?;
        tx.commit()
            .map_err(|source| LedgerError::Sqlite { path, source })?;
        Ok(ev)
    }

    /// Starts a run for `source` → `destination`, resuming the latest one
    /// that is not sealed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_run(
        &mut self,
        source: &str,
        destination: &str,
        key: &SigningKey,
        encryption_key_id: Option<&str>,
        wave: Option<&Wave>,
        job: Option<&str>,
    ) -> Result<RunRef, LedgerError> {
        self.register_key(key)?;
        if let Some(job) = job {
            self.check_job(job, source, destination, encryption_key_id)?;
        }
        let open = self.open_run_with_key(source, destination, job)?;
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
                        "INSERT INTO runs (started_at, source, destination, host, operator, key_fingerprint, tool_version, status, encryption_key_id, job, job_run)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10)",
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
                            job_run
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
    /// recorded ([`crate::report::Copying`]): the throughput `custody plan`
    /// estimates with.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn copying(&self) -> Result<crate::report::Copying, LedgerError> {
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
        let mut copying = crate::report::Copying::default();
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
    /// failures (path, error, class: one `file_failed` event each), source
    /// changes a job's run found (one `source_changed` event each) and
    /// exclusions, in one transaction.
    ///
    /// # Errors
    /// SQLite errors; then nothing of the batch is recorded.
    pub fn record_batch(
        &mut self,
        run: u64,
        landed: &[LandedFile],
        failed: &[(String, String, &str)],
        excluded: &[(String, String)],
        changes: &[SourceChange],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let sql = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
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
        for (p, error, class) in failed {
            let payload = json!({ "class": class, "error": error, "path": p });
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
            for (p, reason) in excluded {
                ins.execute(params![run, p, reason]).map_err(sql)?;
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

    /// The run's landed files for its manifest (the latest record per path,
    /// in component order), handed to `use_files` as an iterator so that
    /// they need not fit in memory: SQLite sorts them, spilling to disk.
    ///
    /// # Errors
    /// SQLite errors (also those met while iterating, through the items).
    pub fn with_manifest_files<R>(
        &self,
        run: u64,
        use_files: impl FnOnce(&mut dyn Iterator<Item = Result<FileEntry, LedgerError>>) -> R,
    ) -> Result<R, LedgerError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT path, size, mtime_ns, blake3, stored_size, stored_blake3, crc64, stored_crc64,
                        dicom, version_of
                 FROM landed
                 WHERE id IN (SELECT MAX(id) FROM landed WHERE run_id = ?1 GROUP BY path)
                 ORDER BY path COLLATE {COMPONENTS}"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map([run], |r| {
                let path: String = r.get(0)?;
                let stored: Option<(u64, String)> = match (r.get(4)?, r.get(5)?) {
                    (Some(size), Some(blake3)) => Some((size, blake3)),
                    _ => None,
                };
                let stored_crc64: Option<String> = r.get(7)?;
                Ok(FileEntry {
                    stored: stored.map(|(size, blake3)| StoredEntry {
                        blake3,
                        crc64: stored_crc64,
                        path: format!("{path}{}", crate::crypt::SUFFIX),
                        size,
                    }),
                    path,
                    size: r.get(1)?,
                    mtime: mtime_rfc3339(r.get(2)?),
                    blake3: r.get(3)?,
                    crc64: r.get(6)?,
                    dicom: dicom_column(r, 8)?,
                    version_of: r.get(9)?,
                })
            })
            .map_err(self.err())?;
        let err = self.err();
        Ok(use_files(&mut rows.map(|r| r.map_err(&err))))
    }

    /// The run's landed files for its manifest, in memory (tests and small
    /// runs; sealing streams them with [`Ledger::with_manifest_files`]).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn manifest_files(&self, run: u64) -> Result<Vec<FileEntry>, LedgerError> {
        self.with_manifest_files(run, |files| files.collect())?
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
        job: Option<&str>,
    ) -> Result<Option<u64>, LedgerError> {
        Ok(self
            .open_run_with_key(source, destination, job)?
            .map(|(id, _)| id))
    }

    /// The latest run for `source` → `destination`, open or sealed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn latest_run(&self, source: &str, destination: &str) -> Result<Option<u64>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id FROM runs WHERE source = ?1 AND destination = ?2 ORDER BY id DESC LIMIT 1",
                params![source, destination],
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
        job: Option<&str>,
    ) -> Result<Option<(u64, Option<String>)>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id, encryption_key_id FROM runs
                 WHERE source = ?1 AND destination = ?2 AND status != 'sealed' AND job IS ?3
                 ORDER BY id DESC LIMIT 1",
                params![source, destination, job],
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

    /// The run's excluded entries from its latest attempt, in path order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn manifest_excluded(&self, run: u64) -> Result<Vec<Excluded>, LedgerError> {
        let mut out = self.query_all(
            "SELECT path, reason FROM excluded WHERE run_id = ?1",
            [run],
            |r| {
                Ok(Excluded {
                    path: r.get(0)?,
                    reason: r.get(1)?,
                })
            },
        )?;
        out.sort_by(|a, b| relpath::cmp_components(&a.path, &b.path));
        Ok(out)
    }

    /// Stores a sealed manifest (exact bytes and signature) and appends the
    /// signed `sealed` event, in one transaction.
    ///
    /// # Errors
    /// SQLite or signing errors; then the run stays unsealed.
    pub fn seal(
        &mut self,
        manifest: &Manifest,
        written: &Written,
        bytes: &mut dyn Read,
        signature: &str,
        key: &SigningKey,
    ) -> Result<Event, LedgerError> {
        let path = self.path.clone();
        let sql = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let digest = hex(written.blake3);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        tx.execute(
            "INSERT INTO manifests (id, run_id, created_at, signature, blake3, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                manifest.id,
                manifest.run,
                manifest.created,
                signature,
                digest,
                ZeroBlob(written.len),
            ],
        )
        .map_err(sql)?;
        // The bytes, streamed in (a manifest of a million files is ~200 MB).
        {
            let mut blob = tx
                .blob_open(c"main", "manifests", "bytes", tx.last_insert_rowid(), false)
                .map_err(sql)?;
            let copied =
                std::io::copy(bytes, &mut blob).map_err(|source| LedgerError::ManifestBytes {
                    path: path.clone(),
                    source,
                })?;
            if copied != written.len {
                return Err(LedgerError::Corrupt {
                    path: path.clone(),
                    reason: format!(
                        "manifest {}: {copied} bytes stored, {} written",
                        manifest.id, written.len
                    ),
                });
            }
        }
        tx.execute(
            "UPDATE runs SET status = 'sealed', manifest_id = ?1 WHERE id = ?2",
            params![manifest.id, manifest.run],
        )
        .map_err(sql)?;
        let payload = json!({
            "bytes": written.totals.bytes,
            "excluded": written.totals.excluded,
            "files": written.totals.files,
            "manifest_blake3": digest,
        });
        let ev = Self::append(
            &tx,
            &path,
            kind::SEALED,
            Some(manifest.run),
            Some(&manifest.id),
            &payload,
            Some(key),
        )?;
        tx.commit().map_err(sql)?;
        Ok(ev)
    }

    /// The id of the manifest sealed here whose bytes have this BLAKE3.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn manifest_with_blake3(&self, blake3: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT id FROM manifests WHERE blake3 = ?1",
                [blake3],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// The run manifest `id` sealed, and the BLAKE3 of its bytes.
    fn sealed_manifest(&self, id: &str) -> Result<(u64, String), LedgerError> {
        self.conn
            .query_row(
                "SELECT run_id, blake3 FROM manifests WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?
            .ok_or_else(|| LedgerError::UnknownManifest {
                path: self.path.clone(),
                manifest: id.to_owned(),
            })
    }

    /// Records a handoff of the media holding manifest `id`'s files as a
    /// `handoff` event signed with `key`; the payload names the manifest's
    /// BLAKE3 too.
    ///
    /// # Errors
    /// [`LedgerError::UnknownManifest`], SQLite or signing errors.
    pub fn record_handoff(
        &mut self,
        id: &str,
        handoff: &Handoff,
        key: &SigningKey,
    ) -> Result<Event, LedgerError> {
        let (run, blake3) = self.sealed_manifest(id)?;
        self.register_key(key)?;
        let mut payload = serde_json::to_value(handoff).expect("a handoff serialises");
        payload["manifest_blake3"] = Value::String(blake3);
        self.append_event(kind::HANDOFF, Some(run), Some(id), &payload, Some(key))
    }

    /// A manifest's custody timeline as an auditor checks it without the
    /// ledger (`docs/ledger.md`, "Exported timelines"): its events and
    /// those of the run it sealed, each with its stored payload text and
    /// signature, and the public keys of their signers.
    ///
    /// # Errors
    /// [`LedgerError::UnknownManifest`], or SQLite errors.
    pub fn export_events(&self, id: &str) -> Result<Value, LedgerError> {
        let (_, blake3) = self.sealed_manifest(id)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at, kind, run_id, manifest_id, payload, prev_hash, hash, signer, signature
                 FROM events
                 WHERE manifest_id = ?1 OR run_id = (SELECT run_id FROM manifests WHERE id = ?1)
                 ORDER BY seq",
            )
            .map_err(self.err())?;
        let events: Vec<Value> = stmt
            .query_map([id], |r| {
                Ok(json!({
                    "seq": r.get::<_, u64>(0)?,
                    "at": r.get::<_, String>(1)?,
                    "kind": r.get::<_, String>(2)?,
                    "run_id": r.get::<_, Option<u64>>(3)?,
                    "manifest_id": r.get::<_, Option<String>>(4)?,
                    "payload": r.get::<_, String>(5)?,
                    "prev_hash": r.get::<_, String>(6)?,
                    "hash": r.get::<_, String>(7)?,
                    "signer": r.get::<_, Option<String>>(8)?,
                    "signature": r.get::<_, Option<String>>(9)?,
                }))
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        let mut keys = serde_json::Map::new();
        for signer in events.iter().filter_map(|e| e["signer"].as_str()) {
            if !keys.contains_key(signer) {
                let public: Option<String> = self
                    .conn
                    .query_row(
                        "SELECT public_key FROM keys WHERE fingerprint = ?1",
                        [signer],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(self.err())?;
                keys.insert(signer.to_owned(), public.map_or(Value::Null, Value::String));
            }
        }
        Ok(json!({
            "events": events,
            "format": "custody-events",
            "keys": keys,
            "manifest": id,
            "manifest_blake3": blake3,
            "version": 1,
        }))
    }

    /// Whether the ledger holds a manifest with this id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn has_manifest(&self, id: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row("SELECT 1 FROM manifests WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(self.err())
    }

    /// Events, oldest first; with `manifest`, only those of that manifest
    /// and of the run it sealed.
    ///
    /// # Errors
    /// SQLite errors, or a payload that is not JSON.
    pub fn events(&self, manifest: Option<&str>) -> Result<Vec<Event>, LedgerError> {
        let base = "SELECT seq, at, kind, run_id, manifest_id, payload, prev_hash, hash, signer FROM events";
        let mut stmt = match manifest {
            Some(_) => self.conn.prepare(&format!(
                "{base} WHERE manifest_id = ?1
                 OR run_id = (SELECT run_id FROM manifests WHERE id = ?1) ORDER BY seq"
            )),
            None => self.conn.prepare(&format!("{base} ORDER BY seq")),
        }
        .map_err(self.err())?;
        let map = |r: &rusqlite::Row<'_>| {
            Ok((
                Event {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    run: r.get(3)?,
                    manifest: r.get(4)?,
                    payload: Value::Null,
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                    signer: r.get(8)?,
                },
                r.get::<_, String>(5)?,
            ))
        };
        let rows = match manifest {
            Some(m) => stmt.query_map([m], map),
            None => stmt.query_map([], map),
        }
        .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (mut ev, text) = row.map_err(self.err())?;
            ev.payload = serde_json::from_str(&text)
                .map_err(|e| self.corrupt(format!("event {}: payload is not JSON: {e}", ev.seq)))?;
            out.push(ev);
        }
        Ok(out)
    }

    /// Checks the whole ledger: the event chain (every hash, every link, no
    /// gaps), the signatures of signed events against the registered keys
    /// (and against `trust`, when given), every landed row against its hash
    /// and its batch event, and every stored manifest against its `sealed`
    /// event and its recorded chain head.
    ///
    /// # Errors
    /// SQLite errors; integrity problems are in the report, not errors.
    pub fn verify_chain(&self, trust: Option<&Trust>) -> Result<ChainReport, LedgerError> {
        let mut problems = Vec::new();
        let mut add =
            |seq: Option<u64>, problem: String| problems.push(ChainProblem { seq, problem });
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at, kind, run_id, manifest_id, payload, prev_hash, hash, signer, signature
                 FROM events ORDER BY seq",
            )
            .map_err(self.err())?;
        type Row = (
            u64,
            String,
            String,
            Option<u64>,
            Option<String>,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
        );
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .map_err(self.err())?;
        let mut prev = ChainHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        };
        let (mut events, mut signatures, mut landed_rows) = (0u64, 0u64, 0u64);
        let mut chain: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
        let mut sealed: Vec<(u64, String, Value)> = Vec::new();
        for row in rows {
            let (seq, at, kind, run, manifest, payload, prev_hash, hash, signer, signature): Row =
                row.map_err(self.err())?;
            events += 1;
            if seq != prev.seq + 1 {
                add(
                    Some(seq),
                    format!(
                        "event {seq}: sequence jumps from {} (events {}..{} deleted)",
                        prev.seq,
                        prev.seq + 1,
                        seq - 1
                    ),
                );
            }
            if prev_hash != prev.hash {
                add(
                    Some(seq),
                    format!(
                        "event {seq} ({kind}): prev_hash does not match the hash of event {} (row inserted, deleted or reordered)",
                        prev.seq
                    ),
                );
            }
            let expect = event_hash(
                seq,
                &at,
                &kind,
                run,
                manifest.as_deref(),
                &payload,
                &prev_hash,
            );
            if expect != hash {
                add(
                    Some(seq),
                    format!("event {seq} ({kind}): contents do not match its hash (row edited)"),
                );
            }
            let must_sign = kind::SIGNED.contains(&kind.as_str());
            match (signer, signature) {
                (Some(fpr), Some(sig)) => {
                    match self.check_event_signature(&fpr, &hash, &sig, at.parse().ok(), trust) {
                        Ok(()) => signatures += 1,
                        Err(why) => {
                            add(Some(seq), format!("event {seq} ({kind}): signature {why}"))
                        }
                    }
                }
                _ if must_sign => add(
                    Some(seq),
                    format!("event {seq} ({kind}): signature missing"),
                ),
                _ => {}
            }
            let parsed: Option<Value> = serde_json::from_str(&payload).ok();
            if parsed.is_none() {
                add(
                    Some(seq),
                    format!("event {seq} ({kind}): payload is not JSON"),
                );
            }
            if kind == kind::FILES_LANDED {
                landed_rows += self.check_landed_batch(seq, run, parsed.as_ref(), &mut add)?;
            }
            if kind == kind::SEALED
                && let (Some(m), Some(p)) = (manifest, parsed)
            {
                sealed.push((seq, m, p));
            }
            chain.insert(seq, hash.clone());
            prev = ChainHead { seq, hash };
        }
        let orphans: Vec<(u64, String, u64)> = self.query_all(
            "SELECT l.id, l.path, l.event_seq FROM landed l
             LEFT JOIN events e ON e.seq = l.event_seq AND e.kind = 'files_landed'
             WHERE e.seq IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for (id, path, seq) in orphans {
            add(
                None,
                format!(
                    "landed row {id} ({path}): names event {seq}, which is not a files_landed event"
                ),
            );
        }
        for (seq, id, payload) in sealed {
            self.check_sealed_manifest(seq, &id, &payload, &chain, &mut add)?;
        }
        Ok(ChainReport {
            events,
            signatures,
            landed_rows,
            head: prev,
            problems,
        })
    }

    fn check_event_signature(
        &self,
        fingerprint: &str,
        hash: &str,
        signature: &str,
        at: Option<jiff::Timestamp>,
        trust: Option<&Trust>,
    ) -> Result<(), String> {
        let registered: Option<String> = self
            .conn
            .query_row(
                "SELECT public_key FROM keys WHERE fingerprint = ?1",
                [fingerprint],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        let Some(public) = registered else {
            return Err(format!("names key {fingerprint}, which is not registered"));
        };
        let key = ssh_key::PublicKey::from_openssh(&public)
            .map_err(|e| format!("names key {fingerprint}, stored malformed ({e})"))?;
        if keys::fingerprint(&key) != fingerprint {
            return Err(format!(
                "names key {fingerprint}, but the stored key differs"
            ));
        }
        if let Some(t) = trust {
            if !t.trusts_key(&key) {
                return Err(format!(
                    "was made by {fingerprint}, which the given trust file does not list"
                ));
            }
            // As the trust file binds the key: to its principal (the
            // identity the key carries), the ledger namespace, and its
            // validity at the event's time.
            let identity = match key.comment().trim() {
                "" => "custody",
                c => c,
            };
            return t
                .verify(
                    identity,
                    keys::LEDGER_NAMESPACE,
                    at,
                    hash.as_bytes(),
                    signature,
                )
                .map(|_| ())
                .map_err(|e| format!("does not verify against the trust file: {e}"));
        }
        Trust::PublicKey(key)
            .verify("", keys::LEDGER_NAMESPACE, None, hash.as_bytes(), signature)
            .map(|_| ())
            .map_err(|e| format!("does not verify: {e}"))
    }

    fn check_landed_batch(
        &self,
        seq: u64,
        run: Option<u64>,
        payload: Option<&Value>,
        add: &mut impl FnMut(Option<u64>, String),
    ) -> Result<u64, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, run_id, path, size, mtime_ns, blake3, row_hash, stored_size, stored_blake3,
                        crc64, stored_crc64, dicom, version_of
                 FROM landed WHERE event_seq = ?1 ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([seq], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, u64>(1)?,
                    LandedFile {
                        path: r.get(2)?,
                        size: r.get(3)?,
                        mtime_ns: r.get(4)?,
                        blake3: r.get(5)?,
                        crc64: r.get(9)?,
                        stored: match (r.get(7)?, r.get(8)?) {
                            (Some(size), Some(blake3)) => Some(Stored {
                                size,
                                blake3,
                                crc64: r.get(10)?,
                            }),
                            _ => None,
                        },
                        dicom: dicom_column(r, 11)?,
                        version_of: r.get(12)?,
                    },
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(self.err())?;
        let mut hashes = Vec::new();
        for row in rows {
            let (id, row_run, f, stored) = row.map_err(self.err())?;
            if Some(row_run) != run || row_hash(row_run, seq, &f) != stored {
                add(
                    Some(seq),
                    format!(
                        "landed row {id} ({}): contents do not match its hash (row edited)",
                        f.path
                    ),
                );
            }
            hashes.push(stored);
        }
        let n = hashes.len() as u64;
        let digest = batch_digest(hashes.iter().map(String::as_str));
        let claimed = payload
            .and_then(|p| p.get("digest"))
            .and_then(Value::as_str);
        let claimed_files = payload.and_then(|p| p.get("files")).and_then(Value::as_u64);
        if claimed != Some(digest.as_str()) {
            add(
                Some(seq),
                format!(
                    "event {seq} (files_landed): its landed rows do not match its digest ({} rows recorded, {n} found: rows deleted, added or edited)",
                    claimed_files.map_or("?".into(), |c| c.to_string())
                ),
            );
        }
        Ok(n)
    }

    fn check_sealed_manifest(
        &self,
        seq: u64,
        id: &str,
        payload: &Value,
        chain: &std::collections::HashMap<u64, String>,
        add: &mut impl FnMut(Option<u64>, String),
    ) -> Result<(), LedgerError> {
        let rowid: Option<i64> = self
            .conn
            .query_row("SELECT rowid FROM manifests WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?;
        let Some(rowid) = rowid else {
            add(
                Some(seq),
                format!("event {seq} (sealed): manifest {id} is missing from the ledger"),
            );
            return Ok(());
        };
        // Streamed: a manifest of a million files is ~150 MB.
        let blob = self
            .conn
            .blob_open(c"main", "manifests", "bytes", rowid, true)
            .map_err(self.err())?;
        let (digest, parsed) =
            manifest::hash_head(blob).map_err(|source| LedgerError::ManifestBytes {
                path: self.path.clone(),
                source,
            })?;
        let digest = hex(digest);
        if payload.get("manifest_blake3").and_then(Value::as_str) != Some(digest.as_str()) {
            add(
                Some(seq),
                format!("manifest {id}: stored bytes do not match the hash sealed in event {seq}"),
            );
            return Ok(());
        }
        match parsed {
            Ok(m) => {
                if chain.get(&m.ledger_head.seq) != Some(&m.ledger_head.hash)
                    && m.ledger_head.seq != 0
                {
                    add(
                        Some(seq),
                        format!(
                            "manifest {id}: its recorded chain head (event {}) is not in this chain",
                            m.ledger_head.seq
                        ),
                    );
                }
            }
            Err(e) => add(
                Some(seq),
                format!("manifest {id}: stored bytes do not parse: {e}"),
            ),
        }
        Ok(())
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
                "SELECT size, mtime_ns, stored_size FROM landed WHERE run_id = ?1 AND path = ?2
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![self.run, path], |r| {
                Ok(Recorded {
                    size: r.get(0)?,
                    mtime_ns: r.get(1)?,
                    stored_size: r.get(2)?,
                })
            })
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let run = l.begin_run("/src", "/dst", &key, None, None, None).unwrap();
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
            &[("b".into(), "boom".into(), "destination")],
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
            l.begin_run("/src", "/dst", &key, Some("00"), None, None),
            Err(LedgerError::EncryptionMismatch { run: 1, .. })
        ));
        let again = l.begin_run("/src", "/dst", &key, None, None, None).unwrap();
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
