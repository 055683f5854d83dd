//! The ledger's events as an RFC 6962 Merkle tree (`docs/proofs.md`,
//! "Ledger checkpoints"): leaf *i* holds the hash of event *i* + 1, as its
//! 64 lowercase hex digits. A signed checkpoint of that tree
//! (`ledger checkpoint`) is what others keep; a later ledger proves with a
//! consistency proof that it extends it (`ledger verify --since`), and when
//! it does not, the checkpoint's list of event hashes names the first event
//! that differs. Every signed event carries the tree of the events before
//! it (`ledger_tree` in its payload), so every exported timeline does.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::{Ledger, LedgerError};
use crate::keys::{Signer, SigningKey, Trust};
use crate::manifest::checkpoint::{self, Checkpoint, EVENTS_FORMAT, EventList, Signed};
use crate::manifest::{ManifestError, write_durable};
use crate::merkle::{self, Root};

/// A ledger checkpoint as written by [`Ledger::write_checkpoint`].
#[derive(Debug, Clone)]
pub struct LedgerCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Where its signature went.
    pub signature: std::path::PathBuf,
    /// Where its event list went.
    pub events: std::path::PathBuf,
}

/// How `ledger verify --since` compared the ledger with a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SinceReport {
    /// The checkpoint's origin, size and root (hex).
    pub origin: String,
    /// The checkpoint's tree size.
    pub size: u64,
    /// The checkpoint's root.
    pub root: String,
    /// The ledger's tree size now.
    pub now_size: u64,
    /// The ledger's root now.
    pub now_root: String,
    /// Who signed the checkpoint, when the signature verified.
    pub signer: Option<Signer>,
    /// Witnesses whose cosignatures verified (with `--witness`).
    pub witnesses: Vec<Signer>,
    /// The consistency proof from the checkpoint to now (hex), when the
    /// ledger extends it.
    pub consistency: Vec<String>,
    /// The first event that differs from the checkpoint's, when known.
    pub first_difference: Option<u64>,
    /// Everything that does not hold; empty when the ledger extends the
    /// checkpoint.
    pub problems: Vec<String>,
}

/// The payload field a signed event records the tree of the events before
/// it in.
pub(super) const TREE_FIELD: &str = "ledger_tree";

/// The tree over every event `conn` holds (inside a transaction: the
/// events before the one being appended), read one hash at a time.
pub(super) fn tree_of(conn: &rusqlite::Connection) -> Result<Root, rusqlite::Error> {
    let mut tree = merkle::Builder::new();
    let mut stmt = conn.prepare_cached("SELECT hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        tree.push(r.get_ref(0)?.as_str()?.as_bytes());
    }
    Ok(tree.root())
}

/// The `ledger_tree` value for `root`.
pub(super) fn tree_value(root: Root) -> Value {
    serde_json::json!({ "root": merkle::to_hex(&root.hash), "size": root.size })
}

impl Ledger {
    /// The origin of this ledger's checkpoints: the host and the ledger
    /// file's name, so that a rewritten ledger keeps its name (and a
    /// witness sees the fork).
    pub fn origin(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
                    _ => '_',
                })
                .collect()
        };
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        checkpoint::ledger_origin(&format!("{}/{}", clean(&crate::host_name()), clean(&stem)))
    }

    /// Every event's hash, in sequence order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn event_hashes(&self) -> Result<Vec<String>, LedgerError> {
        self.query_all("SELECT hash FROM events ORDER BY seq", [], |r| r.get(0))
    }

    /// Writes a signed checkpoint of the events so far to `path` (its
    /// signature to `path.sig`, the event hashes to `path.events`).
    ///
    /// # Errors
    /// SQLite errors, signing or writing failed.
    pub fn write_checkpoint(
        &self,
        path: &Path,
        key: &SigningKey,
    ) -> Result<LedgerCheckpoint, LedgerError> {
        let events = self.event_hashes()?;
        let list = EventList {
            events,
            format: EVENTS_FORMAT.to_owned(),
            origin: self.origin(),
            version: 1,
        };
        let c = Checkpoint::new(self.origin(), list.root());
        let signature = c.sign(key).map_err(|source| LedgerError::Key {
            path: self.path.clone(),
            source,
        })?;
        let out = |e: ManifestError| LedgerError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot write the checkpoint: {e}"),
        };
        let events_path = EventList::path_for(path);
        let mut json = serde_json::to_vec(&list).expect("a list serialises");
        json.push(b'\n');
        write_durable(&events_path, &json).map_err(out)?;
        checkpoint::write(path, &c, &signature).map_err(out)?;
        Ok(LedgerCheckpoint {
            checkpoint: c,
            signature: checkpoint::signature_path(path),
            events: events_path,
        })
    }

    /// Whether the ledger extends the checkpoint `old`: its signature
    /// (against `trust`, else against the keys this ledger registered), its
    /// cosignatures (against `witnesses`, when given), its origin, and an
    /// RFC 6962 consistency proof from it to the events now. When the
    /// ledger does not extend it, `listed` (the checkpoint's event list)
    /// names the first event that differs.
    ///
    /// # Errors
    /// SQLite errors; what does not hold is in the report.
    pub fn verify_since(
        &self,
        old: &Signed,
        listed: Option<&EventList>,
        trust: Option<&Trust>,
        witnesses: Option<&Trust>,
    ) -> Result<SinceReport, LedgerError> {
        let mut problems = Vec::new();
        let cp = &old.checkpoint;
        let registered;
        let trust = match trust {
            Some(t) => t,
            None => {
                registered = self.registered_trust()?;
                &registered
            }
        };
        let signer = match old.verify(trust) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let witnessed = match witnesses.map(|w| old.witnessed(w)) {
            Some(Ok(w)) => w,
            Some(Err(e)) => {
                problems.push(e.to_string());
                Vec::new()
            }
            None => Vec::new(),
        };
        if cp.origin != self.origin() {
            problems.push(format!(
                "the checkpoint is of {:?}, this ledger is {:?}",
                cp.origin,
                self.origin()
            ));
        }
        if let Some(l) = listed {
            let r = l.root();
            if l.origin != cp.origin || r != cp.root {
                problems.push(
                    "the checkpoint's event list does not hash to the checkpoint (edited list)"
                        .into(),
                );
            }
        }
        let hashes = self.event_hashes()?;
        let tree_err = |e: merkle::MerkleError| LedgerError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut store = merkle::Store::new().map_err(tree_err)?;
        for h in &hashes {
            store.push(h.as_bytes()).map_err(tree_err)?;
        }
        let tree = store.finish().map_err(tree_err)?;
        let now = tree.root();
        let mut consistency = Vec::new();
        let mut first_difference = None;
        if cp.root.size > now.size {
            problems.push(format!(
                "the checkpoint covers {} events, the ledger now holds {}: events were removed",
                cp.root.size, now.size
            ));
        } else if cp.root.size > 0 {
            let extends = tree
                .consistency(cp.root.size)
                .map_err(tree_err)
                .map(|proof| {
                    let ok = merkle::check_consistency(&proof, cp.root, now).is_ok();
                    (proof, ok)
                })?;
            match extends {
                (proof, true) => consistency = proof.iter().map(merkle::to_hex).collect(),
                (_, false) => {
                    problems.push(format!(
                        "the ledger does not extend the checkpoint: its first {} events no longer hash to the checkpoint's root (an event was edited, inserted or removed and the chain re-hashed)",
                        cp.root.size
                    ));
                }
            }
        }
        if !problems.is_empty()
            && let Some(l) = listed
        {
            first_difference = l
                .events
                .iter()
                .zip(&hashes)
                .position(|(a, b)| a != b)
                .or_else(|| (hashes.len() < l.events.len()).then_some(hashes.len()))
                .map(|i| i as u64 + 1);
            if let Some(seq) = first_difference {
                let what = self
                    .conn
                    .query_row("SELECT kind, at FROM events WHERE seq = ?1", [seq], |r| {
                        Ok(format!(
                            "{} at {}",
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?
                        ))
                    })
                    .ok();
                problems.push(match what {
                    Some(w) => format!(
                        "event {seq} ({w}) is the first that differs from the checkpoint's: its hash was {}, it is {}",
                        l.events[seq as usize - 1],
                        hashes[seq as usize - 1]
                    ),
                    None => format!("event {seq} of the checkpoint is no longer in the ledger"),
                });
            }
        }
        Ok(SinceReport {
            origin: cp.origin.clone(),
            size: cp.root.size,
            root: merkle::to_hex(&cp.root.hash),
            now_size: now.size,
            now_root: merkle::to_hex(&now.hash),
            signer,
            witnesses: witnessed,
            consistency,
            first_difference,
            problems,
        })
    }

    /// The keys this ledger registered, as a trust anchor (each for any
    /// identity).
    fn registered_trust(&self) -> Result<Trust, LedgerError> {
        let keys: Vec<String> = self.query_all("SELECT public_key FROM keys", [], |r| r.get(0))?;
        Ok(Trust::any_of(
            keys.iter()
                .filter_map(|k| ssh_key::PublicKey::from_openssh(k).ok())
                .collect(),
        ))
    }
}
