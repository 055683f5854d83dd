//! Checkpoints: a Merkle tree's size and root as a C2SP `tlog-checkpoint`
//! note, signed with SSHSIG, and the witnesses' cosignatures
//! (`docs/proofs.md`, "Checkpoints").
//!
//! A checkpoint's text is three lines, each ending in a newline: the origin
//! (what the tree is of: `custody-manifest/<id>` or `custody-ledger/<id>`),
//! the tree size in decimal, and the root hash in standard base64. Its
//! signature is a detached SSHSIG in the `custody-checkpoint` namespace over
//! exactly those bytes, so `ssh-keygen -Y verify` checks it. A witness's
//! cosignature is an SSHSIG in the `custody-witness` namespace over the same
//! bytes; a checkpoint's cosignatures are kept together, one armored block
//! after another, in `<checkpoint>.cosig`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ManifestError, write_durable};
use crate::keys::{self, KeyError, Signer, SigningKey, Trust};
use crate::merkle::{Hash, Root};

/// The origin of a manifest's checkpoint.
pub fn manifest_origin(id: &str) -> String {
    format!("custody-manifest/{id}")
}

/// The origin of a ledger's checkpoints.
pub fn ledger_origin(id: &str) -> String {
    format!("custody-ledger/{id}")
}

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// A tree head: what the tree is of, its size and its root.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// What the tree is of.
    pub origin: String,
    /// Its size and root.
    pub root: Root,
}

/// Why a checkpoint's text is not one.
#[derive(Debug, thiserror::Error)]
#[error(
    "not a checkpoint (three lines: origin, tree size, base64 SHA-256 root; see docs/proofs.md)"
)]
pub struct MalformedCheckpoint;

impl Checkpoint {
    /// A checkpoint of `root` for `origin`.
    pub fn new(origin: impl Into<String>, root: Root) -> Self {
        Checkpoint {
            origin: origin.into(),
            root,
        }
    }

    /// Its text: the note a signature covers.
    pub fn text(&self) -> String {
        let note = tlog_tiles::Checkpoint::new(&self.origin, self.root.size, self.root.hash, "")
            .expect("custody's origins are non-empty and have no newline");
        String::from_utf8(note.to_bytes()).expect("a checkpoint is ASCII")
    }

    /// Reads a checkpoint's text. Extension lines are refused: custody
    /// writes none, and a verifier should not sign what it cannot read.
    ///
    /// # Errors
    /// The text is not exactly a checkpoint.
    pub fn parse(text: &str) -> Result<Self, MalformedCheckpoint> {
        let note =
            tlog_tiles::Checkpoint::from_bytes(text.as_bytes()).map_err(|_| MalformedCheckpoint)?;
        if !note.extension().is_empty() || note.origin().contains(char::is_whitespace) {
            return Err(MalformedCheckpoint);
        }
        Ok(Checkpoint {
            origin: note.origin().to_owned(),
            root: Root {
                size: note.size(),
                hash: Hash(note.hash().0),
            },
        })
    }

    /// Signs its text as the operator.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn sign(&self, key: &SigningKey) -> Result<String, KeyError> {
        key.sign(keys::CHECKPOINT_NAMESPACE, self.text().as_bytes())
    }

    /// Cosigns its text as a witness.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn cosign(&self, key: &SigningKey) -> Result<String, KeyError> {
        key.sign(keys::WITNESS_NAMESPACE, self.text().as_bytes())
    }
}

/// A checkpoint with its signature and any cosignatures, as read.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its text, exactly as signed.
    pub text: String,
    /// The operator's signature (armored SSHSIG).
    pub signature: String,
    /// Witnesses' cosignatures (armored SSHSIG each).
    pub cosignatures: Vec<String>,
}

/// Why a signed checkpoint does not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The text is not a checkpoint.
    #[error(transparent)]
    Malformed(#[from] MalformedCheckpoint),
    /// The operator's signature does not verify.
    #[error("checkpoint signature: {0}")]
    Signature(KeyError),
    /// No cosignature verifies against the witnesses' keys.
    #[error("no cosignature by a trusted witness{0}")]
    NotWitnessed(String),
}

impl Signed {
    /// Reads a checkpoint's text (tolerating no other bytes).
    ///
    /// # Errors
    /// The text is not a checkpoint.
    pub fn new(
        text: String,
        signature: String,
        cosignatures: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        Ok(Signed {
            checkpoint: Checkpoint::parse(&text)?,
            text,
            signature,
            cosignatures,
        })
    }

    /// Checks the operator's signature against `trust`.
    ///
    /// # Errors
    /// [`CheckpointError::Signature`] saying why.
    pub fn verify(&self, trust: &Trust) -> Result<Signer, CheckpointError> {
        trust
            .verify_by_key(
                keys::CHECKPOINT_NAMESPACE,
                None,
                self.text.as_bytes(),
                &self.signature,
            )
            .map_err(CheckpointError::Signature)
    }

    /// Checks that at least one cosignature verifies against `witnesses`,
    /// made by a key other than the one that signed the checkpoint (a log
    /// does not witness itself). Returns the witnesses that did.
    ///
    /// # Errors
    /// [`CheckpointError::NotWitnessed`], with what each cosignature lacked.
    pub fn witnessed(&self, witnesses: &Trust) -> Result<Vec<Signer>, CheckpointError> {
        let operator = signer_key(&self.signature);
        let mut ok = Vec::new();
        let mut why = Vec::new();
        for c in &self.cosignatures {
            if operator.is_some() && signer_key(c) == operator {
                why.push("one is by the checkpoint's own signer".to_owned());
                continue;
            }
            match witnesses.verify_by_key(keys::WITNESS_NAMESPACE, None, self.text.as_bytes(), c) {
                Ok(s) => ok.push(s),
                Err(e) => why.push(e.to_string()),
            }
        }
        if ok.is_empty() {
            let detail = match (self.cosignatures.is_empty(), why.is_empty()) {
                (true, _) => " (it has no cosignature)".to_owned(),
                (false, false) => format!(" ({})", why.join("; ")),
                (false, true) => String::new(),
            };
            return Err(CheckpointError::NotWitnessed(detail));
        }
        Ok(ok)
    }
}

/// The key that made an armored signature, as its fingerprint.
fn signer_key(armored: &str) -> Option<String> {
    let sig = ssh_key::SshSig::from_pem(armored.trim()).ok()?;
    Some(keys::fingerprint(&ssh_key::PublicKey::new(
        sig.public_key().clone(),
        "",
    )))
}

/// Splits a run of armored SSHSIG blocks (a `.cosig` file) into blocks.
pub fn split_signatures(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// Value of the event list's `format` field.
pub const EVENTS_FORMAT: &str = "custody-ledger-events";

/// The event hashes a ledger checkpoint covers, kept beside it as
/// `<checkpoint>.events` (version 1): what names the first event that
/// differs, and what a witness checks an extension with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventList {
    /// The hash of each event, in sequence order (event 1 first).
    pub events: Vec<String>,
    /// Always [`EVENTS_FORMAT`].
    pub format: String,
    /// The checkpoint's origin.
    pub origin: String,
    /// Always 1.
    pub version: u64,
}

impl EventList {
    /// Where the list of a checkpoint file is kept.
    pub fn path_for(checkpoint: &Path) -> std::path::PathBuf {
        let mut p = checkpoint.as_os_str().to_owned();
        p.push(".events");
        p.into()
    }

    /// The tree over the listed events.
    pub fn root(&self) -> Root {
        let mut b = crate::merkle::Builder::new();
        for h in &self.events {
            b.push(h.as_bytes());
        }
        b.root()
    }

    /// Reads the list beside `checkpoint`, if there is one.
    ///
    /// # Errors
    /// The file exists but cannot be read or is not a list.
    pub fn read(checkpoint: &Path) -> Result<Option<Self>, ManifestError> {
        let path = Self::path_for(checkpoint);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Io { path, source }),
        };
        let list: EventList =
            serde_json::from_slice(&bytes).map_err(|e| ManifestError::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if list.format != EVENTS_FORMAT || list.version != 1 {
            return Err(ManifestError::Malformed {
                path,
                reason: format!("not a {EVENTS_FORMAT} version 1 document"),
            });
        }
        Ok(Some(list))
    }
}

/// Where a manifest's checkpoint is kept: beside it, `<id>.checkpoint`
/// for `<id>.json`.
pub fn path_for(manifest: &Path) -> PathBuf {
    manifest.with_extension("checkpoint")
}

/// Where a checkpoint's signature is kept: `<checkpoint>.sig`.
pub fn signature_path(checkpoint: &Path) -> PathBuf {
    super::signature_path(checkpoint)
}

/// Where a checkpoint's cosignatures are kept: `<checkpoint>.cosig`.
pub fn cosignature_path(checkpoint: &Path) -> PathBuf {
    let mut p = checkpoint.as_os_str().to_owned();
    p.push(".cosig");
    PathBuf::from(p)
}

/// Writes a checkpoint's text and signature, each durably.
///
/// # Errors
/// Writing either file failed.
pub fn write(path: &Path, checkpoint: &Checkpoint, signature: &str) -> Result<(), ManifestError> {
    write_durable(path, checkpoint.text().as_bytes())?;
    write_durable(&signature_path(path), signature.as_bytes())
}

/// Reads a checkpoint, its signature and its cosignatures (none when the
/// `.cosig` file is absent).
///
/// # Errors
/// A file cannot be read ([`ManifestError::Io`]), or the text is not a
/// checkpoint ([`ManifestError::Malformed`]).
pub fn read(path: &Path) -> Result<Signed, ManifestError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let sig_path = signature_path(path);
    let signature = std::fs::read_to_string(&sig_path).map_err(io(&sig_path))?;
    let cosig_path = cosignature_path(path);
    let cosignatures = match std::fs::read_to_string(&cosig_path) {
        Ok(t) => split_signatures(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&cosig_path)(e)),
    };
    Signed::new(text, signature, cosignatures).map_err(|e| ManifestError::Malformed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Adds `cosignature` to the checkpoint's `.cosig` file, replacing one by
/// the same key, durably.
///
/// # Errors
/// Reading or writing the file failed.
pub fn add_cosignature(path: &Path, cosignature: &str) -> Result<PathBuf, ManifestError> {
    let cosig_path = cosignature_path(path);
    let existing = match std::fs::read_to_string(&cosig_path) {
        Ok(t) => split_signatures(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(ManifestError::Io {
                path: cosig_path,
                source,
            });
        }
    };
    let mine = signer_key(cosignature);
    let mut all: Vec<String> = existing
        .into_iter()
        .filter(|c| signer_key(c) != mine)
        .collect();
    all.push(cosignature.trim_end().to_owned() + "\n");
    write_durable(&cosig_path, all.concat().as_bytes())?;
    Ok(cosig_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    fn root(size: u64, data: &[u8]) -> Root {
        Root {
            size,
            hash: merkle::leaf_hash(data),
        }
    }

    #[test]
    fn text_is_the_c2sp_layout_and_reads_back() {
        let c = Checkpoint::new(manifest_origin("m1"), merkle::Builder::new().root());
        assert_eq!(
            c.text(),
            "custody-manifest/m1\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        );
        assert_eq!(Checkpoint::parse(&c.text()).unwrap(), c);
        let c = Checkpoint::new(ledger_origin("abc"), root(7, b"x"));
        assert_eq!(Checkpoint::parse(&c.text()).unwrap(), c);
        for bad in [
            "",
            "origin\n",
            "origin\n7\n",
            "origin\n07\nAAAA\n",
            "origin\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "origin\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "origin\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n",
            "two words\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cosignature_files_split_into_blocks() {
        let block = |n: u8| format!("{BEGIN}\nAAA{n}\n{END}\n");
        let text = format!("{}{}junk{}", block(1), block(2), block(3));
        assert_eq!(split_signatures(&text), vec![block(1), block(2), block(3)]);
        assert!(split_signatures("").is_empty());
        assert!(split_signatures(&format!("{BEGIN}\nAAA")).is_empty());
    }
}
