//! Custody events: appending a signed event, a handoff, and reading a
//! manifest's events back (for `ledger events`, `ledger export` and the
//! report).

use rusqlite::OptionalExtension;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Ledger, LedgerError, kind};
use crate::keys::SigningKey;

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

impl Ledger {
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
        let tx = self.write()?;
        let ev = Self::append(&tx, &path, kind, run, manifest, payload, signer)?;
        tx.commit()
            .map_err(|source| LedgerError::Sqlite { path, source })?;
        Ok(ev)
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
}
