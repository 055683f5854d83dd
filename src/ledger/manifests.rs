//! Sealed manifests: sealing a run (its manifest's exact bytes and
//! signature, with the signed `sealed` event), and reading a run's files,
//! exclusions and manifests back.

use std::io::{Read, Write};

use rusqlite::blob::ZeroBlob;
use rusqlite::{OptionalExtension, params};
use serde_json::json;

use super::chain::hex;
use super::runs::dicom_column;
use super::{COMPONENTS, Event, Ledger, LedgerError, MANIFEST_PART, kind};
use crate::keys::SigningKey;
use crate::manifest::{Excluded, FileEntry, Manifest, StoredEntry, Written};
use crate::relpath;
use crate::source::mtime_rfc3339;

impl Ledger {
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
        checkpoint_signature: Option<&str>,
        key: &SigningKey,
    ) -> Result<Event, LedgerError> {
        let path = self.path.clone();
        let sql = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let digest = hex(written.blake3);
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO manifests (id, run_id, created_at, signature, blake3, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                manifest.id,
                manifest.run,
                manifest.created,
                signature,
                digest,
                ZeroBlob(written.len.min(MANIFEST_PART)),
            ],
        )
        .map_err(sql)?;
        // The bytes, streamed in, part by part (a manifest of ten million
        // files is ~1.9 GB; one SQLite value holds at most 1 GB).
        let copied = store_parts(&tx, &manifest.id, written.len, bytes, MANIFEST_PART).map_err(
            |e| match e {
                PartError::Sql(source) => sql(source),
                PartError::Read(source) => LedgerError::ManifestBytes {
                    path: path.clone(),
                    source,
                },
            },
        )?;
        if copied != written.len {
            return Err(LedgerError::Corrupt {
                path: path.clone(),
                reason: format!(
                    "manifest {}: {copied} bytes stored, {} written",
                    manifest.id, written.len
                ),
            });
        }
        tx.execute(
            "UPDATE runs SET status = 'sealed', manifest_id = ?1 WHERE id = ?2",
            params![manifest.id, manifest.run],
        )
        .map_err(sql)?;
        let mut payload = json!({
            "bytes": written.totals.bytes,
            "excluded": written.totals.excluded,
            "files": written.totals.files,
            "manifest_blake3": digest,
        });
        // The manifest's tree and its signed checkpoint (version 9), kept
        // here so that a lost checkpoint file is written again from the
        // record of truth.
        if let (Some(root), Some(sig)) = (written.tree, checkpoint_signature) {
            payload["manifest_tree"] = json!({
                "root": crate::merkle::to_hex(&root.hash),
                "signature": sig,
                "size": root.size,
            });
        }
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
    pub(super) fn sealed_manifest(&self, id: &str) -> Result<(u64, String), LedgerError> {
        self.manifest_row(id, "run_id, blake3")
    }

    /// Two columns of manifest `id`'s row.
    fn manifest_row<A, B>(&self, id: &str, columns: &str) -> Result<(A, B), LedgerError>
    where
        A: rusqlite::types::FromSql,
        B: rusqlite::types::FromSql,
    {
        self.conn
            .query_row(
                &format!("SELECT {columns} FROM manifests WHERE id = ?1"),
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

    /// Copies sealed manifest `id`'s exact bytes to `out` and returns its
    /// signature (the ledger is the record of truth: a manifest file lost
    /// after the seal is written again from here).
    ///
    /// # Errors
    /// SQLite errors, an unknown id, or `out` failing.
    pub fn copy_manifest(&self, id: &str, out: &mut dyn Write) -> Result<String, LedgerError> {
        let signature: String = self
            .conn
            .query_row("SELECT signature FROM manifests WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?
            .ok_or_else(|| LedgerError::UnknownManifest {
                path: self.path.clone(),
                manifest: id.to_owned(),
            })?;
        std::io::copy(&mut self.stored_manifest(id), out).map_err(|source| {
            LedgerError::ManifestBytes {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(signature)
    }

    /// Sealed manifest `id`'s stored bytes, read part by part; empty when
    /// no manifest has that id.
    pub(super) fn stored_manifest(&self, id: &str) -> StoredManifest<'_> {
        StoredManifest {
            conn: &self.conn,
            id: id.to_owned(),
            next: 0,
            part: None,
        }
    }

    /// The Merkle tree of sealed manifest `id` and its checkpoint's
    /// signature, as its `sealed` event recorded them (version 9 manifests
    /// only).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn manifest_checkpoint(
        &self,
        id: &str,
    ) -> Result<Option<(crate::merkle::Root, String)>, LedgerError> {
        let payload: Option<String> = self
            .conn
            .query_row(
                "SELECT payload FROM events WHERE kind = ?1 AND manifest_id = ?2",
                params![kind::SEALED, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let tree = payload
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .and_then(|p| p.get("manifest_tree").cloned());
        Ok(tree.and_then(|t| {
            Some((
                crate::merkle::Root {
                    size: t.get("size")?.as_u64()?,
                    hash: crate::merkle::from_hex(t.get("root")?.as_str()?)?,
                },
                t.get("signature")?.as_str()?.to_owned(),
            ))
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
}

/// Why storing a manifest's parts failed: the ledger, or the bytes.
enum PartError {
    Sql(rusqlite::Error),
    Read(std::io::Error),
}

/// Streams `len` bytes of `bytes` into the manifest row just inserted
/// (whose `bytes` is a zero blob of the first part's size) and into
/// `manifest_parts`, `part` bytes a value; returns the bytes stored.
fn store_parts(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    len: u64,
    bytes: &mut dyn Read,
    part: u64,
) -> Result<u64, PartError> {
    let mut stored = 0u64;
    let mut seq = 0u64;
    let mut rowid = tx.last_insert_rowid();
    let mut table = "manifests";
    loop {
        let n = (len - stored).min(part);
        let mut blob = tx
            .blob_open(c"main", table, "bytes", rowid, false)
            .map_err(PartError::Sql)?;
        let copied = std::io::copy(&mut bytes.take(n), &mut blob).map_err(PartError::Read)?;
        stored += copied;
        if copied < n || stored == len {
            return Ok(stored);
        }
        seq += 1;
        let rest = (len - stored).min(part);
        tx.execute(
            "INSERT INTO manifest_parts (manifest_id, seq, bytes) VALUES (?1, ?2, ?3)",
            params![id, seq, ZeroBlob(rest)],
        )
        .map_err(PartError::Sql)?;
        rowid = tx.last_insert_rowid();
        table = "manifest_parts";
    }
}

/// A sealed manifest's stored bytes: `manifests.bytes`, then its
/// `manifest_parts` in order (`Ledger::stored_manifest`). A missing part
/// ends the bytes early, which the manifest's sealed hash then tells.
pub(super) struct StoredManifest<'c> {
    conn: &'c rusqlite::Connection,
    id: String,
    /// The part to open next (0: the row in `manifests`).
    next: u64,
    part: Option<rusqlite::blob::Blob<'c>>,
}

impl Read for StoredManifest<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(part) = self.part.as_mut() {
                match part.read(buf)? {
                    0 => self.part = None,
                    n => return Ok(n),
                }
            }
            let (table, sql) = match self.next {
                0 => (
                    "manifests",
                    "SELECT rowid FROM manifests WHERE id = ?1 AND ?2 = 0",
                ),
                _ => (
                    "manifest_parts",
                    "SELECT rowid FROM manifest_parts WHERE manifest_id = ?1 AND seq = ?2",
                ),
            };
            let rowid: Option<i64> = self
                .conn
                .query_row(sql, params![self.id, self.next], |r| r.get(0))
                .optional()
                .map_err(std::io::Error::other)?;
            let Some(rowid) = rowid else {
                return Ok(0);
            };
            self.part = Some(
                self.conn
                    .blob_open(c"main", table, "bytes", rowid, true)
                    .map_err(std::io::Error::other)?,
            );
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts manifest `id` of `bytes` as the seal does, `part` bytes a
    /// value; returns the bytes stored.
    fn store(l: &mut Ledger, id: &str, bytes: &[u8], len: u64, part: u64) -> u64 {
        let tx = l.conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO manifests (id, run_id, created_at, signature, blake3, bytes)
             VALUES (?1, 1, 't', 's', 'h', ?2)",
            params![id, ZeroBlob(len.min(part))],
        )
        .unwrap();
        let stored = store_parts(&tx, id, len, &mut &bytes[..], part)
            .map_err(|_| "store failed")
            .unwrap();
        tx.commit().unwrap();
        stored
    }

    fn read_back(l: &Ledger, id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        l.stored_manifest(id).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_manifest_is_stored_in_parts_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.db")).unwrap();
        l.conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let parts = |l: &Ledger, id: &str| -> i64 {
            l.conn
                .query_row(
                    "SELECT COUNT(*) FROM manifest_parts WHERE manifest_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        for (id, len, part, extra) in [
            ("whole", 1000, 1000, 0),
            ("four", 1000, 300, 3),
            ("exact", 900, 300, 2),
            ("bytes", 7, 1, 6),
            ("empty", 0, 300, 0),
        ] {
            assert_eq!(store(&mut l, id, &bytes, len, part), len, "{id}");
            assert_eq!(read_back(&l, id), &bytes[..len as usize], "{id}");
            assert_eq!(parts(&l, id), extra, "{id}");
        }
        // Bytes that end before the length written: stored as far as they
        // go, and the count says so (the seal then fails).
        assert_eq!(store(&mut l, "short", &bytes[..500], 1000, 300), 500);
        // A lost part ends the bytes there: the sealed hash tells.
        l.conn
            .execute(
                "DELETE FROM manifest_parts WHERE manifest_id = 'four' AND seq = 2",
                [],
            )
            .unwrap();
        assert_eq!(read_back(&l, "four"), &bytes[..600]);
        assert!(read_back(&l, "nothing").is_empty());
    }
}
