//! The set: one signed document binding a split to the sealed manifest of
//! each of its shards (`custody seal-set`), so that a multi-device
//! migration is audited and verified as one closed set (`docs/split.md`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ManifestError, Operator, Tool};
use crate::keys::{Signer, Trust};

/// The `format` of a set.
pub const FORMAT: &str = "custody-set";
/// The version this code writes and reads.
pub const VERSION: u64 = 1;

/// A set manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Set {
    /// When it was sealed (RFC 3339, UTC).
    pub created: String,
    /// Always [`FORMAT`].
    pub format: String,
    /// Its id.
    pub id: String,
    /// Who sealed it.
    pub operator: Operator,
    /// Each shard's sealed manifest, by shard number.
    pub shards: Vec<SetShard>,
    /// The split the shards come from.
    pub split: Signed,
    /// The tool that wrote it.
    pub tool: Tool,
    /// Always [`VERSION`].
    pub version: u64,
}

/// A signed document the set binds: its id, the hashes of its exact bytes
/// and who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// BLAKE3 of its bytes, lowercase hex.
    pub blake3: String,
    /// Its id.
    pub id: String,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// The fingerprint of the key that signed it.
    pub signer: String,
    /// The principal that key is bound to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_principal: Option<String>,
}

/// One shard's manifest in a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetShard {
    /// Its sealed manifest.
    pub manifest: Signed,
    /// The shard's number in the split.
    pub number: u64,
}

impl Signed {
    /// The record of `bytes` with id `id`, signed as `signer` says.
    pub fn of(id: &str, bytes: &[u8], signer: &Signer) -> Self {
        use sha2::Digest;
        Signed {
            blake3: blake3::hash(bytes).to_hex().to_string(),
            id: id.to_owned(),
            sha256: crate::digest::hex_lower(&sha2::Sha256::digest(bytes)),
            signer: signer.fingerprint.clone(),
            signer_principal: signer.principal.clone(),
        }
    }

    /// Whether `bytes` are the bytes this record names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        use sha2::Digest;
        self.blake3 == blake3::hash(bytes).to_hex().as_str()
            && self.sha256 == crate::digest::hex_lower(&sha2::Sha256::digest(bytes))
    }
}

impl Set {
    /// Its bytes as written and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a set serialises");
        v.push(b'\n');
        v
    }
}

/// A set read from disk with its signature checked.
#[derive(Debug, Clone)]
pub struct SignedSet {
    /// The set.
    pub set: Set,
    /// Who signed it.
    pub signer: Signer,
}

/// Reads a set and its `.sig`, checking the signature against `trust`
/// before parsing.
///
/// # Errors
/// I/O errors, a bad signature, or not a set of this version, naming the
/// file.
pub fn read(path: &Path, trust: &Trust) -> Result<SignedSet, ManifestError> {
    let (bytes, signer) = super::read_verified(path, trust)?;
    let set: Set = serde_json::from_slice(&bytes).map_err(|e| ManifestError::Malformed {
        path: path.to_path_buf(),
        reason: format!("not a custody set: {e}"),
    })?;
    if set.format != FORMAT || set.version != VERSION {
        return Err(ManifestError::Malformed {
            path: path.to_path_buf(),
            reason: format!(
                "format {:?} version {}; expected {FORMAT:?} version {VERSION}",
                set.format, set.version
            ),
        });
    }
    Ok(SignedSet { set, signer })
}

/// Whether the JSON document at the start of `bytes` says it is a set.
pub fn is_set(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("format")
                .and_then(|f| f.as_str().map(|f| f == FORMAT))
        })
        .unwrap_or(false)
}
