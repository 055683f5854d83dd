//! The event chain: how an event, a landed row and a batch are hashed
//! (`docs/ledger.md`, "Event hash", "Landed rows"), appending an event to
//! the chain, and `ledger verify`: walking the whole chain and naming every
//! link, signature, landed row and sealed manifest that does not hold.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::runs::dicom_column;
use super::{Event, GENESIS, LandedFile, Ledger, LedgerError, Stored, kind};
use crate::digest::frame;
use crate::keys::{self, SigningKey, Trust};
use crate::manifest::{self, ChainHead};
use crate::source::dicom::Instance;

pub(super) fn hex(h: blake3::Hash) -> String {
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
pub(super) fn canonical(v: &Value) -> String {
    // serde_json's map is ordered by key, so this is canonical.
    serde_json::to_string(v).expect("JSON value serialisation cannot fail")
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

impl Ledger {
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
    pub(super) fn append(
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
        // A signed event carries the tree of the events before it, so that
        // every exported timeline carries a checkpoint of the ledger.
        let mut with_tree;
        let payload = match payload {
            Value::Object(_) if kind::SIGNED.contains(&kind) => {
                let tree = super::tree::tree_of(conn).map_err(sql)?;
                with_tree = payload.clone();
                with_tree[super::tree::TREE_FIELD] = super::tree::tree_value(tree);
                &with_tree
            }
            _ => payload,
        };
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
        let mut tree = crate::merkle::Builder::new();
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
            if let Some(recorded) = parsed.as_ref().and_then(|p| p.get(super::tree::TREE_FIELD))
                && *recorded != super::tree::tree_value(tree.root())
            {
                add(
                    Some(seq),
                    format!(
                        "event {seq} ({kind}): its ledger_tree is not the tree of the events before it"
                    ),
                );
            }
            tree.push(hash.as_bytes());
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
        let stored: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM manifests WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(self.err())?;
        if stored.is_none() {
            add(
                Some(seq),
                format!("event {seq} (sealed): manifest {id} is missing from the ledger"),
            );
            return Ok(());
        }
        // Streamed: a manifest of ten million files is ~1.9 GB.
        let (digest, parsed) = manifest::hash_head(self.stored_manifest(id)).map_err(|source| {
            LedgerError::ManifestBytes {
                path: self.path.clone(),
                source,
            }
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
