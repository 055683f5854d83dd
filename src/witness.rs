//! A witness (`docs/proofs.md`, "Witnesses"): cosigns a checkpoint only
//! when it is consistent with the last checkpoint it cosigned for the same
//! origin, and refuses a fork.
//!
//! Its state directory keeps, per origin, the text of the last checkpoint
//! it cosigned (`<sha256 of the origin>.checkpoint`). A checkpoint of a new
//! origin is cosigned as the first seen. A later one must be at least as
//! large: the same size needs the same root; a larger one needs the event
//! list beside it (`<checkpoint>.events`), whose tree must be the
//! checkpoint's and whose prefix must hash to the last cosigned root.
//! The checkpoint's own signature must verify against the log's keys
//! first: a witness vouches only for what the log signed.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::keys::{KeyError, Signer, SigningKey, Trust};
use crate::manifest::checkpoint::{self, Checkpoint, CheckpointError, EventList, Signed};
use crate::manifest::{ManifestError, write_durable};
use crate::merkle;

/// Errors of [`cosign`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The checkpoint, its signature or its event list cannot be read.
    #[error(transparent)]
    Read(#[from] ManifestError),
    /// The checkpoint's signature does not verify against the log's keys.
    #[error("{path}: {source}")]
    Signature {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        source: CheckpointError,
    },
    /// The checkpoint is not consistent with the last one cosigned: a
    /// fork, a rollback, or an extension without the evidence.
    #[error("{path}: refused: {reason}")]
    Refused {
        /// The checkpoint.
        path: PathBuf,
        /// Why, naming both trees.
        reason: String,
    },
    /// The state directory cannot be read or written.
    #[error("witness state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cosignature cannot be made.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl WitnessError {
    /// Whether the witness refused the checkpoint (a fork or rollback, or
    /// a checkpoint that does not verify), as opposed to failing to work.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            WitnessError::Refused { .. } | WitnessError::Signature { .. }
        )
    }
}

/// What [`cosign`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cosigned {
    /// The checkpoint's origin.
    pub origin: String,
    /// Its size.
    pub size: u64,
    /// The size of the last checkpoint cosigned for the origin, if any.
    pub previous_size: Option<u64>,
    /// Who signed the checkpoint.
    pub log_signer: Signer,
    /// Where the cosignature went (`<checkpoint>.cosig`).
    pub cosignature: PathBuf,
}

/// The state file of `origin` in `state`.
fn state_path(state: &Path, origin: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(origin.as_bytes());
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    state.join(format!("{name}.checkpoint"))
}

/// Cosigns the checkpoint at `path` with `key` if it is consistent with the
/// last checkpoint cosigned for its origin (kept in `state`), after
/// checking its signature against `log_keys`; records it as the last.
///
/// # Errors
/// [`WitnessError::Refused`] for a fork, a rollback or an unproven
/// extension; [`WitnessError::Signature`] when the log's signature does
/// not verify; I/O errors otherwise.
pub fn cosign(
    path: &Path,
    key: &SigningKey,
    state: &Path,
    log_keys: &Trust,
) -> Result<Cosigned, WitnessError> {
    let signed: Signed = checkpoint::read(path)?;
    let log_signer = signed
        .verify(log_keys)
        .map_err(|source| WitnessError::Signature {
            path: path.to_path_buf(),
            source,
        })?;
    let new: &Checkpoint = &signed.checkpoint;
    let refuse = |reason: String| WitnessError::Refused {
        path: path.to_path_buf(),
        reason,
    };
    let state_io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| WitnessError::State { path: p, source }
    };
    std::fs::create_dir_all(state).map_err(state_io(state))?;
    let last_path = state_path(state, &new.origin);
    let last = match std::fs::read_to_string(&last_path) {
        Ok(text) => Some(Checkpoint::parse(&text).map_err(|e| WitnessError::State {
            path: last_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(state_io(&last_path)(e)),
    };
    if let Some(last) = &last {
        let (old, now) = (last.root, new.root);
        let hex = |h: &merkle::Hash| merkle::to_hex(h);
        if now.size < old.size {
            return Err(refuse(format!(
                "{} has {} entries, fewer than the {} already cosigned (a rollback)",
                new.origin, now.size, old.size
            )));
        }
        if now.size == old.size && now.hash != old.hash {
            return Err(refuse(format!(
                "a fork of {}: at size {} the root {} was cosigned, this one is {}",
                new.origin,
                now.size,
                hex(&old.hash),
                hex(&now.hash)
            )));
        }
        if now.size > old.size {
            let Some(list) = EventList::read(path)? else {
                return Err(refuse(format!(
                    "{} grew from {} to {} entries, but no event list ({}) shows that it extends what was cosigned",
                    new.origin,
                    old.size,
                    now.size,
                    EventList::path_for(path).display()
                )));
            };
            if list.origin != new.origin || list.root() != now {
                return Err(refuse(
                    "its event list does not hash to the checkpoint (edited list)".into(),
                ));
            }
            let mut prefix = merkle::Builder::new();
            for h in &list.events[..old.size as usize] {
                prefix.push(h.as_bytes());
            }
            if prefix.root() != old {
                return Err(refuse(format!(
                    "a fork of {}: its first {} entries do not hash to the root {} cosigned before",
                    new.origin,
                    old.size,
                    hex(&old.hash)
                )));
            }
        }
    }
    let cosignature = new.cosign(key)?;
    let cosig_path = checkpoint::add_cosignature(path, &cosignature)?;
    write_durable(&last_path, new.text().as_bytes())?;
    Ok(Cosigned {
        origin: new.origin.clone(),
        size: new.root.size,
        previous_size: last.map(|l| l.root.size),
        log_signer,
        cosignature: cosig_path,
    })
}
