//! The ledger's schema: the version-1 tables, each migration since, the
//! connection settings every connection gets, and the backup kept before
//! a migration. `docs/ledger.md` ("Schema") is the specification.

use std::path::PathBuf;

use super::{COMPONENTS, Ledger, LedgerError, SCHEMA_VERSION};
use crate::relpath;

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

/// Version 5 → 6: a run may be limited to part of its source (filters, a
/// `--files-from` list, a shard of a split): `selection` keys it, so that
/// runs of one source and destination through different selections (two
/// shards on one host) are different runs, and a job keeps its own.
const MIGRATE_V6: &str = r#"
ALTER TABLE runs ADD COLUMN selection TEXT;
"#;

/// Version 6 → 7: a manifest's bytes beyond its first part
/// (`manifests.bytes` holds at most [`super::MANIFEST_PART`] bytes) are
/// kept in parts of that size, in order: SQLite refuses a value over
/// 1,000,000,000 bytes, and a manifest of ten million files is about
/// 1.9 GB. Manifests stored before are whole in `manifests.bytes`.
const MIGRATE_V7: &str = r#"
CREATE TABLE manifest_parts (
    manifest_id TEXT NOT NULL REFERENCES manifests(id),
    seq         INTEGER NOT NULL,
    bytes       BLOB NOT NULL,
    PRIMARY KEY (manifest_id, seq)
);
"#;

impl Ledger {
    pub(super) fn configure(&mut self) -> Result<(), LedgerError> {
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

    pub(super) fn migrate(&mut self) -> Result<(), LedgerError> {
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
        let steps: [(i64, &str); 7] = [
            (1, SCHEMA_V1),
            (2, MIGRATE_V2),
            (3, MIGRATE_V3),
            (4, MIGRATE_V4),
            (5, MIGRATE_V5),
            (6, MIGRATE_V6),
            (7, MIGRATE_V7),
        ];
        for (to, sql) in steps.into_iter().filter(|(to, _)| *to > version) {
            let path = self.path.clone();
            let tx = self.write()?;
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
}
