//! The split: how a source tree was partitioned into shards that each fit
//! one device (`custody split`), signed like a manifest so that every
//! host copying a shard, and the auditor, can check which files belong to
//! which shard (`docs/split.md` is the spec).
//!
//! The document names each shard's list file and the BLAKE3 of its exact
//! bytes; the lists themselves hold one relative path per line, in
//! component order. A split's bytes are signed as they are (pretty JSON,
//! fields in sorted order), with the manifests' SSHSIG namespace.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ManifestError, Operator, Selection, Tool};
use crate::keys::{Signer, Trust};

/// The `format` of a split.
pub const FORMAT: &str = "custody-split";
/// The version this code writes and reads.
pub const VERSION: u64 = 1;

/// A split, as `DIR/split.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// The device every shard fits.
    pub device: DeviceLimits,
    /// Source entries no shard carries (links, special files, names that
    /// are not UTF-8), which every transfer would list as excluded.
    pub excluded: u64,
    /// Always [`FORMAT`].
    pub format: String,
    /// The host that made it.
    pub host: String,
    /// Its id.
    pub id: String,
    /// Who signed it.
    pub operator: Operator,
    /// The filters the split was made through (absent: the whole tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// The shards, numbered from 1.
    pub shards: Vec<Shard>,
    /// The source root (absolute).
    pub source: String,
    /// The tool that wrote it.
    pub tool: Tool,
    /// Totals over the shards.
    pub totals: SplitTotals,
    /// Always [`VERSION`].
    pub version: u64,
}

/// The device every shard fits, and the limits it was held to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLimits {
    /// Usable bytes of one device, as its profile states them.
    pub bytes: u64,
    /// Most containers (top-level folders) on one device, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<u64>,
    /// Most files on one device.
    pub files: u64,
    /// The share of `bytes` left free on every device, in percent.
    pub headroom_percent: u64,
    /// The profile (`databox-disk`, `databox`, …, or `custom`).
    pub kind: String,
    /// The most bytes a shard holds: `bytes` less the headroom.
    pub shard_bytes: u64,
}

/// One shard: the files one device carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// BLAKE3 of the list file's exact bytes, lowercase hex.
    pub blake3: String,
    /// Bytes of its files.
    pub bytes: u64,
    /// Top-level folders its files are in.
    pub containers: u64,
    /// Its files.
    pub files: u64,
    /// The list file's name, beside `split.json` (`shard-01.list`).
    pub list: String,
    /// Its number, from 1.
    pub number: u64,
    /// DICOM studies it holds whole.
    pub studies: u64,
}

/// Totals over every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTotals {
    /// Bytes.
    pub bytes: u64,
    /// Files.
    pub files: u64,
    /// Lower bound on the number of devices any split needs (from bytes,
    /// files and containers alone): the split is provably the fewest when
    /// it has this many shards.
    pub lower_bound: u64,
    /// DICOM studies.
    pub studies: u64,
}

impl Split {
    /// The shard whose list file is named `list`.
    pub fn shard_by_list(&self, list: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.list == list)
    }

    /// Its bytes as written and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a split serialises");
        v.push(b'\n');
        v
    }
}

/// The list file name of shard `n` of a split.
pub fn list_name(n: u64) -> String {
    format!("shard-{n:02}.list")
}

/// A split read from disk with its signature checked.
#[derive(Debug, Clone)]
pub struct SignedSplit {
    /// The split.
    pub split: Split,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
    /// Who signed it.
    pub signer: Signer,
}

/// Reads `path` (a `split.json`) and its `.sig`, checking the signature
/// against `trust` before parsing.
///
/// # Errors
/// I/O errors, a bad signature, or a document that is not a split of this
/// version, each naming the file.
pub fn read(path: &Path, trust: &Trust) -> Result<SignedSplit, ManifestError> {
    let (bytes, signer) = super::read_verified(path, trust)?;
    let split = parse(path, &bytes)?;
    Ok(SignedSplit {
        split,
        bytes,
        signer,
    })
}

/// Parses a split's bytes (no signature check).
///
/// # Errors
/// Not a split of this version, naming the file.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Split, ManifestError> {
    let malformed = |reason: String| ManifestError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let split: Split = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("not a custody split: {e}")))?;
    if split.format != FORMAT || split.version != VERSION {
        return Err(malformed(format!(
            "format {:?} version {}; expected {FORMAT:?} version {VERSION}",
            split.format, split.version
        )));
    }
    for (i, s) in split.shards.iter().enumerate() {
        if s.number != i as u64 + 1 || s.list != list_name(s.number) {
            return Err(malformed(format!(
                "shard {} is numbered or named out of sequence ({:?})",
                i + 1,
                s.list
            )));
        }
    }
    Ok(split)
}
