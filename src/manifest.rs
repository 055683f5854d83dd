//! The custody manifest: model, canonical bytes, signature, audit.
//!
//! A manifest lists every file a sealed run landed, with its size, mtime and
//! BLAKE3, plus who sealed it, where from, where to, and the ledger's chain
//! head at sealing. Its bytes are canonical JSON (RFC 8785, which for the
//! strings, non-negative integers, arrays and objects used here means: no
//! white space, object keys sorted, minimal string escaping) and are signed
//! as SSHSIG in the `custody-manifest` namespace. `docs/manifest.md` is the
//! specification.
//!
//! This file is the model and its canonical bytes; `signed` reads a
//! manifest with its detached signature, `audit` checks what a signature
//! cannot, `stream` writes and reads one entry at a time, `chain` walks a
//! job's manifests, and `index` keeps the objects one expects on disk.

mod audit;
pub mod chain;
pub mod checkpoint;
pub mod index;
pub mod set;
mod signed;
pub mod split;
mod stream;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::keys::{self, KeyError, SigningKey};

/// A file entry's `dicom` object (version 4).
pub use crate::source::dicom::Instance as DicomEntry;
pub use audit::{Finding, audit, audit_file};
pub use signed::{SignedManifest, read_signed, read_verified, signature_path, write_durable};
pub use stream::{
    SignedFile, WriteError, Written, hash_head, open_signed, sign_written, write_canonical,
    write_canonical_with,
};

/// Value of the `format` field.
pub const FORMAT: &str = "custody-manifest";
/// The version of a manifest of plaintext copies.
pub const VERSION: u64 = 1;
/// The version of a manifest of encrypted copies: version 1 plus the
/// `encryption` header and a `stored` object per file (both required).
pub const VERSION_ENCRYPTED: u64 = 2;
/// The version whose every file carries `crc64` (Azure Storage's CRC64 of
/// the bytes that landed: `stored.crc64` too when encrypted), with or
/// without `encryption`. Written by every transfer since; 1 and 2 still
/// verify.
pub const VERSION_CRC64: u64 = 3;

/// Version 3 plus an optional `dicom` object per file: the UIDs and
/// modality of the DICOM instance the file holds. Written by every
/// transfer since; 1 to 3 still verify.
pub const VERSION_DICOM: u64 = 4;

/// Version 4 plus a `wave` object: the migration wave the run belonged
/// to (`custody run PLAN --wave NAME`). Written only for such runs; other
/// runs' manifests stay version 4.
pub const VERSION_WAVE: u64 = 5;

/// Version 4 plus a `job` object (`transfer --job NAME`): the run's place
/// in its job and the hash of the job's previous manifest, so that a job's
/// manifests form a chain. It may also carry a `wave`, the source changes
/// the run found (`source_changes`), and files landed as new versions of
/// changed ones (`files[].version_of`). Written only for job runs.
pub const VERSION_JOB: u64 = 6;

/// A run into a DICOMweb service: version 6's fields (`job`, `wave`,
/// `source_changes` and `version_of` each optional, as there), no
/// `encryption`, and for every file a `dicom` object with its study,
/// series and instance UIDs and a `stored` object saying what the service
/// holds: `path` `studies/{study}/series/{series}/instances/{instance}`,
/// and the size, BLAKE3 and CRC64 of the file's bytes after its 128-byte
/// preamble (which Azure's DICOM service replaces with zeros). 1 to 6
/// still verify.
pub const VERSION_DICOMWEB: u64 = 7;

/// A run through a selection (`--include`, `--exclude`, `--files-from`)
/// or of one shard of a split (`--shard`): version 6's fields, with `job`
/// optional as `wave` is, plus `selection` (the filters, the list and how
/// many files they left out) and `shard` (the split, signed, and the
/// shard's number and list), at least one of the two. 1 to 7 still
/// verify.
pub const VERSION_SELECTED: u64 = 8;

/// A manifest with a Merkle tree over its file entries (`tree`): the
/// fields and rules of the version named by `tree.base` (4 to 8), plus the
/// tree's size and root, so that one entry can be proven without the rest
/// (`docs/proofs.md`). Written by every transfer since; 1 to 8 still
/// verify.
pub const VERSION_TREE: u64 = 9;

/// Whether manifests of `version` may carry a `job` (and its
/// `source_changes` and `version_of`).
pub fn defines_job(version: u64) -> bool {
    matches!(version, VERSION_JOB | VERSION_DICOMWEB | VERSION_SELECTED)
}

/// The Merkle tree over a manifest's file entries (version 9): RFC 6962
/// with SHA-256, one leaf per `files` element holding the element's
/// canonical bytes, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// The version whose fields and rules the rest of the manifest keeps
    /// (4 to 8).
    pub base: u64,
    /// The root hash, lowercase hex.
    pub root: String,
    /// The number of leaves: `totals.files`.
    pub size: u64,
}

impl Manifest {
    /// The version whose rules the manifest's fields keep: its own, or for
    /// version 9 its tree's `base`.
    pub fn rules_version(&self) -> u64 {
        match (&self.tree, self.version) {
            (Some(t), VERSION_TREE) => t.base,
            _ => self.version,
        }
    }
}

/// What a run was limited to (version 8): the filters in the order they
/// were tried, the `--files-from` list, and how many files of the tree
/// they left out (neither copied nor listed as excluded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// The `--files-from` list, by the BLAKE3 of its bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_from: Option<String>,
    /// The rules, in the order they were tried (rclone's: includes, then
    /// excludes; with any include, everything else is left out).
    pub filters: Vec<crate::source::select::FilterRule>,
    /// Files of the tree left out by the filters and the list.
    pub left_out: u64,
}

/// The shard of a split a run carried (version 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRef {
    /// The shard list's file name (`shard-02.list`).
    pub list: String,
    /// BLAKE3 of the list's bytes, as the split records it.
    pub list_blake3: String,
    /// The shard's number, from 1.
    pub number: u64,
    /// How many shards the split has.
    pub of: u64,
    /// The split (`split.json`): its id and the hashes of its bytes.
    pub split: Link,
}

/// Whether manifests of `version` may carry a `wave`.
pub fn defines_wave(version: u64) -> bool {
    matches!(
        version,
        VERSION_WAVE | VERSION_JOB | VERSION_DICOMWEB | VERSION_SELECTED
    )
}

/// Whether this code reads manifests of `version`.
pub fn supported_version(version: u64) -> bool {
    matches!(
        version,
        VERSION
            | VERSION_ENCRYPTED
            | VERSION_CRC64
            | VERSION_DICOM
            | VERSION_WAVE
            | VERSION_JOB
            | VERSION_DICOMWEB
            | VERSION_SELECTED
            | VERSION_TREE
    )
}

/// The job a run belonged to (version 6), and its link to the job's
/// previous manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The job's name (`--job`).
    pub name: String,
    /// The job's previous manifest; absent for its first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Link>,
    /// The run's number within the job: 1, 2, … with no gaps.
    pub run: u64,
}

/// A link to another manifest: its id and the hashes of its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// BLAKE3 of its bytes, lowercase hex.
    pub blake3: String,
    /// Its id (the file is `<id>.json`).
    pub id: String,
    /// SHA-256 of its bytes, lowercase hex (`sha256sum` checks it).
    pub sha256: String,
}

/// A file the job landed before that is no longer what it landed
/// (version 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceChange {
    /// What was done about it.
    pub action: ChangeAction,
    /// What changed.
    pub change: ChangeKind,
    /// The id of the manifest that landed the file.
    pub landed_in: String,
    /// Its path.
    pub path: String,
}

/// Spells a source-change word as its enum, keeping an unknown word (from
/// an edited or newer manifest) for the audit to name.
macro_rules! source_change_word {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A word this version does not define (the audit names it).
            Other(String),
        }

        impl $name {
            /// Its spelling in manifests and events.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(s) => s,
                }
            }

            /// Whether this version defines it.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::Other(_))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => $name::$variant,)*
                    _ => $name::Other(s),
                }
            }
        }

        impl From<$name> for String {
            fn from(w: $name) -> String {
                w.as_str().to_owned()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

source_change_word! {
    /// What happened to a landed file at the source.
    ChangeKind {
        /// Another size or content.
        Changed = "changed",
        /// Gone from the source.
        Deleted = "deleted",
    }
}

source_change_word! {
    /// What a job's run did about a source change.
    ChangeAction {
        /// Left as landed: the destination keeps the landed copy.
        Reported = "reported",
        /// The new content landed as `path` + `.custody-v<run>`, listed in
        /// `files`.
        Resent = "resent",
    }
}

/// The migration wave a run belonged to (version 5), from its wave plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// The change board's approval id.
    pub change: String,
    /// The wave's name in its plan.
    pub name: String,
    /// Who owns the wave.
    pub owner: String,
    /// Whom to call to roll it back.
    pub rollback_contact: String,
}

/// Whether manifests of `version` carry a CRC64 per file.
pub fn has_crc64(version: u64) -> bool {
    version >= VERSION_CRC64
}

/// A custody manifest, version 1. Fields are declared in sorted order so
/// that serialising this struct yields canonical bytes directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// When the run was sealed (RFC 3339, UTC).
    pub created: String,
    /// Where the files landed, as given to `transfer`.
    pub destination: String,
    /// How files were encrypted (version 2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Source entries that were not carried, with the reason.
    pub excluded: Vec<Excluded>,
    /// Every landed file, in component order of `path`.
    pub files: Vec<FileEntry>,
    /// Always [`FORMAT`].
    pub format: String,
    /// The host that ran the transfer.
    pub host: String,
    /// The manifest id (also its file stem).
    pub id: String,
    /// The job and its previous manifest (version 6 only, where it is
    /// required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// The ledger's last event before sealing.
    pub ledger_head: ChainHead,
    /// Who sealed it.
    pub operator: Operator,
    /// The ledger's run number.
    pub run: u64,
    /// What the run was limited to (version 8 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// The shard of a split the run carried (version 8 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRef>,
    /// The source root, as given to `transfer` (absolute).
    pub source: String,
    /// Files the job landed before that changed or disappeared at the
    /// source (version 6 only; absent when there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_changes: Option<Vec<SourceChange>>,
    /// The tool that wrote it.
    pub tool: Tool,
    /// Totals over `files` and `excluded`.
    pub totals: Totals,
    /// The Merkle tree over `files` (version 9 only, where it is
    /// required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Tree>,
    /// [`VERSION_DICOM`], or [`VERSION_WAVE`] with `wave` (or, in older
    /// manifests, [`VERSION_CRC64`], [`VERSION`], or [`VERSION_ENCRYPTED`]
    /// when `encryption` is present).
    pub version: u64,
    /// The migration wave (required in version 5, optional in 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<Wave>,
}

/// One landed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// BLAKE3 of the content, lowercase hex.
    pub blake3: String,
    /// Azure Storage's CRC64 of the content, 16 lowercase hex digits
    /// (version 3 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64: Option<String>,
    /// The DICOM instance the file holds, read from its header (version 4;
    /// absent when the file is not DICOM or its header could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dicom: Option<DicomEntry>,
    /// Modification time of the source file (RFC 3339, UTC).
    pub mtime: String,
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The stored object, when it is not the plaintext (version 2), or
    /// what a DICOMweb service holds of the instance (version 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredEntry>,
    /// For a new version of a file the job landed before, which changed at
    /// the source: that file's path (version 6). `path` is then this path
    /// plus `.custody-v<job run>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_of: Option<String>,
}

/// A stored object: the ciphertext of an encrypted copy (version 2), or a
/// DICOMweb service's instance, held to the bytes after its preamble
/// (version 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEntry {
    /// BLAKE3 of the stored bytes, lowercase hex.
    pub blake3: String,
    /// Azure Storage's CRC64 of the stored bytes (version 3): what a Data
    /// Box BOM lists for the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64: Option<String>,
    /// Its path at the destination (`path` plus the suffix; for version 7,
    /// `studies/{study}/series/{series}/instances/{instance}`).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The encryption header of a version 2 manifest. Never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The master key's id (a fingerprint, never the key).
    pub key_id: String,
    /// The scheme, [`crate::crypt::SCHEME`].
    pub scheme: String,
}

/// A source entry that was not carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Excluded {
    /// Relative path (lossy UTF-8 for names that are not UTF-8).
    pub path: String,
    /// Why it was not carried.
    pub reason: String,
}

/// A ledger chain position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    /// The event's hash, lowercase hex.
    pub hash: String,
    /// The event's sequence number.
    pub seq: u64,
}

/// The sealing operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The identity (`allowed_signers` principal).
    pub identity: String,
    /// The signing key's fingerprint (`SHA256:…`).
    pub key_fingerprint: String,
}

/// The writing tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// `custody`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Sum of `files[].size`.
    pub bytes: u64,
    /// Number of `excluded` entries.
    pub excluded: u64,
    /// Number of `files` entries.
    pub files: u64,
}

/// Errors reading, checking or writing a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a manifest this version understands.
    #[error("{path}: not a valid custody manifest: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The signature is missing, malformed or does not verify.
    #[error("{path}: signature check failed: {source}")]
    Signature {
        /// The signature file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
}

/// Why manifest bytes are not a manifest of this format and version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// A custody manifest of a version this code does not read.
    #[error("unsupported manifest version {0}")]
    Version(serde_json::Value),
    /// Not a custody manifest.
    #[error("no \"format\": \"custody-manifest\" with a version")]
    Format,
    /// The format's fields are wrong (missing, unknown, duplicated, of
    /// the wrong type), or something follows the object.
    #[error("{0}")]
    Fields(serde_json::Error),
}

impl Manifest {
    /// The canonical bytes (RFC 8785 JSON) that are written and signed.
    pub fn to_canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialisation cannot fail")
    }

    /// Parses manifest bytes (without checking signature or consistency).
    ///
    /// # Errors
    /// [`ParseError`] when the bytes are not JSON of this format and
    /// version.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(ParseError::Json)?;
        match (value.get("format"), value.get("version")) {
            (Some(f), Some(v)) if f == FORMAT && v.as_u64().is_some_and(supported_version) => {}
            (Some(f), Some(v)) if f == FORMAT => return Err(ParseError::Version(v.clone())),
            _ => return Err(ParseError::Format),
        }
        // Parse the bytes again (not the Value) so duplicate keys are errors.
        serde_json::from_slice(bytes).map_err(ParseError::Fields)
    }

    /// Signs the canonical bytes; returns the armored SSHSIG.
    ///
    /// # Errors
    /// Only if signing fails.
    pub fn sign(&self, key: &SigningKey) -> Result<String, KeyError> {
        key.sign(keys::MANIFEST_NAMESPACE, &self.to_canonical())
    }
}

/// A decryption key that does not fit a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyMismatch {
    /// The manifest names another key.
    #[error("manifest {manifest} was encrypted with key {expected}, but the given key is {given}")]
    WrongKey {
        /// The manifest id.
        manifest: String,
        /// Its key id.
        expected: String,
        /// The given key's id.
        given: String,
    },
    /// The manifest lists plaintext copies.
    #[error("manifest {0} is not encrypted; a decryption key does not apply")]
    NotEncrypted(String),
}

impl Manifest {
    /// Checks that a decryption key with id `given` is the one this
    /// manifest's objects were encrypted with.
    ///
    /// # Errors
    /// [`KeyMismatch`] saying which way it does not fit.
    pub fn check_key_id(&self, given: &str) -> Result<(), KeyMismatch> {
        match &self.encryption {
            None => Err(KeyMismatch::NotEncrypted(self.id.clone())),
            Some(enc) if enc.key_id != given => Err(KeyMismatch::WrongKey {
                manifest: self.id.clone(),
                expected: enc.key_id.clone(),
                given: given.to_owned(),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// The name a new version of `path` lands under in run `run` of its job.
pub fn versioned_path(path: &str, run: u64) -> String {
    format!("{path}.custody-v{run}")
}

/// Makes a new manifest id: the UTC sealing time and 32 random bits,
/// e.g. `20261123T214500Z-3fa9c2d1`. Ids sort by time.
pub fn new_id(created: jiff::Timestamp) -> String {
    use rand_core::RngCore;
    let stamp = created.strftime("%Y%m%dT%H%M%SZ");
    format!("{stamp}-{:08x}", rand_core::OsRng.next_u32())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Signer;

    /// A version-1 manifest of one file (also the base of other modules'
    /// tests).
    pub(super) fn sample() -> Manifest {
        Manifest {
            created: "2026-11-23T21:45:00Z".into(),
            destination: "/mnt/databox/acme_BlockBlob/pacs".into(),
            encryption: None,
            excluded: vec![Excluded {
                path: "link".into(),
                reason: "symbolic link (not followed)".into(),
            }],
            files: vec![FileEntry {
                blake3: blake3::hash(b"x").to_hex().to_string(),
                crc64: None,
                mtime: "2026-01-02T03:04:05.123456789Z".into(),
                path: "p1/s1/\"quoted\" ü.dcm".into(),
                size: 1,
                stored: None,
                dicom: None,
                version_of: None,
            }],
            format: FORMAT.into(),
            host: "xfer-01".into(),
            id: "20261123T214500Z-00000001".into(),
            ledger_head: ChainHead {
                hash: "0".repeat(64),
                seq: 3,
            },
            operator: Operator {
                identity: "ops@hospital.example".into(),
                key_fingerprint: "SHA256:abc".into(),
            },
            run: 1,
            source: "/pacs".into(),
            tool: Tool {
                name: "custody".into(),
                version: "0.1.0".into(),
            },
            totals: Totals {
                bytes: 1,
                excluded: 1,
                files: 1,
            },
            version: VERSION,
            wave: None,
            job: None,
            source_changes: None,
            selection: None,
            shard: None,
            tree: None,
        }
    }

    #[test]
    fn canonical_bytes_have_sorted_keys_and_no_whitespace() {
        let m = sample();
        let bytes = m.to_canonical();
        // Re-encoding through a sorted map must give the same bytes: this is
        // what pins the struct's field order to the canonical order.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(r#"{"created":"2026-11-23T21:45:00Z","destination":"#));
        assert!(text.contains(r#""path":"p1/s1/\"quoted\" ü.dcm""#));
        assert!(!text.contains('\n'));
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
    }

    /// What `custody audit` finds in `m`, signed by its operator's key,
    /// as `at: problem` lines.
    fn audit_lines(m: &Manifest) -> Vec<String> {
        let signed = SignedManifest {
            manifest: m.clone(),
            bytes: m.to_canonical(),
            signer: Signer {
                fingerprint: m.operator.key_fingerprint.clone(),
                principal: None,
            },
        };
        audit(&signed)
            .into_iter()
            .map(|f| format!("{}: {}", f.at, f.problem))
            .collect()
    }

    #[test]
    fn a_job_manifest_is_canonical_and_audits_its_link_and_versions() {
        let mut m = sample();
        m.version = VERSION_JOB;
        m.excluded.clear();
        m.totals.excluded = 0;
        m.job = Some(Job {
            name: "pacs-nightly".into(),
            previous: Some(Link {
                blake3: "1".repeat(64),
                id: "20261122T214500Z-00000001".into(),
                sha256: "2".repeat(64),
            }),
            run: 2,
        });
        m.source_changes = Some(vec![SourceChange {
            action: ChangeAction::Reported,
            change: ChangeKind::Deleted,
            landed_in: "20261122T214500Z-00000001".into(),
            path: "p0/gone.dcm".into(),
        }]);
        m.files[0].crc64 = Some("0".repeat(16));
        m.files[0].version_of = Some(m.files[0].path.clone());
        m.files[0].path = versioned_path(&m.files[0].path, 2);
        let bytes = m.to_canonical();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let audit = audit_lines;
        assert_eq!(audit(&m), Vec::<String>::new());
        // A later run must link; a first run must not; a version names
        // its run; version 4 knows none of it.
        let mut unlinked = m.clone();
        unlinked.job.as_mut().unwrap().previous = None;
        assert_eq!(
            audit(&unlinked),
            ["job.previous: run 2 of a job must name the previous manifest"]
        );
        let mut wrong_run = m.clone();
        wrong_run.job.as_mut().unwrap().run = 3;
        assert!(
            audit(&wrong_run)[0].contains("needs path"),
            "{:?}",
            audit(&wrong_run)
        );
        let mut v4 = m.clone();
        v4.version = VERSION_DICOM;
        let found = audit(&v4);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("job: version 4 does not define it"))
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("source_changes: version 4"))
        );
        assert!(found.iter().any(|f| f.contains("has version_of")));
    }

    #[test]
    fn a_dicomweb_manifest_names_each_instance_and_holds_it_to_its_bytes_after_the_preamble() {
        let mut m = sample();
        m.version = VERSION_DICOMWEB;
        m.destination = "dicomweb+https://pacs.example.org/dicom-web/".into();
        let file: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let f = &mut m.files[0];
        f.size = file.len() as u64;
        f.blake3 = blake3::hash(&file).to_hex().to_string();
        f.crc64 = Some("0".repeat(16));
        f.dicom = Some(crate::source::dicom::Instance {
            instance: Some("1.2.3.3".into()),
            series: Some("1.2.3.2".into()),
            study: Some("1.2.3.1".into()),
            ..Default::default()
        });
        f.stored = Some(StoredEntry {
            blake3: blake3::hash(&file[128..]).to_hex().to_string(),
            crc64: Some("1".repeat(16)),
            path: "studies/1.2.3.1/series/1.2.3.2/instances/1.2.3.3".into(),
            size: 172,
        });
        m.totals.bytes = 300;
        let audit = audit_lines;
        assert_eq!(audit(&m), Vec::<String>::new());
        assert_eq!(Manifest::parse(&m.to_canonical()).unwrap(), m);
        let mut moved = m.clone();
        moved.files[0].stored.as_mut().unwrap().path =
            "studies/1.2.3.1/series/1.2.3.2/instances/9.9".into();
        assert!(
            audit(&moved)[0].contains("stored.path"),
            "{:?}",
            audit(&moved)
        );
        let mut whole = m.clone();
        whole.files[0].stored.as_mut().unwrap().size = 300;
        assert!(audit(&whole)[0].contains("less the 128-byte preamble"));
        let mut unnamed = m.clone();
        unnamed.files[0].dicom.as_mut().unwrap().series = None;
        assert!(audit(&unnamed)[0].contains("no dicom study, series and instance"));
        let mut bare = m.clone();
        bare.files[0].stored = None;
        assert!(audit(&bare)[0].contains("no `stored` object"));
        // Version 6 does not know instances held elsewhere than the path.
        let mut v6 = m.clone();
        v6.version = VERSION_JOB;
        assert!(!audit(&v6).is_empty());
    }

    #[test]
    fn a_version_9_manifest_keeps_its_base_rules_and_its_tree_is_checked_against_the_entries() {
        let mut m = sample();
        m.files[0].crc64 = Some("0".repeat(16));
        let mut second = m.files[0].clone();
        second.path = "p1/s2/b.dcm".into();
        m.files.push(second);
        m.totals.files = 2;
        m.totals.bytes = 2;
        m.version = VERSION_TREE;
        // The root of the entries' canonical bytes, as leaves in order.
        let mut b = crate::merkle::Builder::new();
        for f in &m.files {
            b.push(&serde_json::to_vec(f).unwrap());
        }
        m.tree = Some(Tree {
            base: VERSION_DICOM,
            root: crate::merkle::to_hex(&b.root().hash),
            size: 2,
        });
        let bytes = m.to_canonical();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        // `tree` after `totals`: the streamed writer fills both in at the end.
        assert!(at("totals") < at("tree"));
        assert!(text.ends_with(&format!(
            r#""tree":{{"base":4,"root":"{}","size":2}},"version":9}}"#,
            m.tree.as_ref().unwrap().root
        )));
        assert_eq!(audit_lines(&m), Vec::<String>::new());
        // The streamed writer computes the same root.
        let mut head = m.clone();
        head.files.clear();
        head.tree.as_mut().unwrap().root.clear();
        let mut out = Vec::new();
        let w = stream::write_canonical::<std::convert::Infallible>(
            &head,
            m.excluded.iter().cloned().map(Ok),
            m.files.iter().cloned().map(Ok),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, m.to_canonical());
        assert_eq!(w.tree.unwrap(), b.root());

        let mut edited = m.clone();
        edited.files[1].size = 7;
        edited.totals.bytes = 8;
        let found = audit_lines(&edited);
        assert!(
            found[0].starts_with("tree.root: does not match the listed files"),
            "{found:?}"
        );
        let mut short = m.clone();
        short.tree.as_mut().unwrap().size = 1;
        assert_eq!(
            audit_lines(&short),
            ["tree.size: says 1 but 2 files are listed"]
        );
        let mut none = m.clone();
        none.tree = None;
        assert_eq!(audit_lines(&none), ["tree: version 9 requires it"]);
        let mut base = m.clone();
        base.tree.as_mut().unwrap().base = VERSION_CRC64;
        assert!(audit_lines(&base)[0].starts_with("tree.base: 3 is not a version a tree extends"));
        let mut older = m.clone();
        older.version = VERSION_DICOM;
        assert_eq!(audit_lines(&older), ["tree: version 4 does not define it"]);
        // The base's rules hold: a selection needs base 8.
        let mut selected = m.clone();
        selected.selection = Some(Selection {
            files_from: None,
            filters: Vec::new(),
            left_out: 0,
        });
        assert_eq!(
            audit_lines(&selected),
            ["selection: version 4 does not define it"]
        );
        selected.tree.as_mut().unwrap().base = VERSION_SELECTED;
        assert_eq!(audit_lines(&selected), Vec::<String>::new());
    }

    #[test]
    fn a_selected_manifest_records_its_filters_and_its_shard_and_only_version_8_does() {
        let mut m = sample();
        m.version = VERSION_SELECTED;
        m.files[0].crc64 = Some("0".repeat(16));
        m.selection = Some(Selection {
            files_from: None,
            filters: vec![crate::source::select::FilterRule {
                action: crate::source::select::FilterAction::Exclude,
                pattern: "*.tmp".into(),
            }],
            left_out: 3,
        });
        m.shard = Some(ShardRef {
            list: "shard-02.list".into(),
            list_blake3: "a".repeat(64),
            number: 2,
            of: 3,
            split: Link {
                blake3: "b".repeat(64),
                id: "20261207T000000Z-00000000".into(),
                sha256: "c".repeat(64),
            },
        });
        let bytes = m.to_canonical();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let text = String::from_utf8(bytes).unwrap();
        // Keys sorted: `selection` and `shard` between `run` and `source`.
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        assert!(at("run") < at("selection") && at("shard") < at("source"));
        assert_eq!(audit_lines(&m), Vec::<String>::new());
        let mut bad = m.clone();
        bad.shard.as_mut().unwrap().number = 4;
        assert!(audit_lines(&bad)[0].contains("4 is not a shard of 3"));
        bad.shard.as_mut().unwrap().list_blake3 = "xyz".into();
        assert!(
            audit_lines(&bad)
                .iter()
                .any(|l| l.starts_with("shard.list_blake3"))
        );
        let mut neither = m.clone();
        (neither.selection, neither.shard) = (None, None);
        assert!(audit_lines(&neither)[0].contains("needs a `selection` or a `shard`"));
        let mut older = m.clone();
        older.version = VERSION_JOB;
        older.job = Some(Job {
            name: "n".into(),
            previous: None,
            run: 1,
        });
        let found = audit_lines(&older);
        assert!(
            found
                .iter()
                .any(|l| l == "selection: version 6 does not define it"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|l| l == "shard: version 6 does not define it"),
            "{found:?}"
        );
    }

    #[test]
    fn parse_rejects_other_versions_duplicates_and_unknown_fields() {
        let text = String::from_utf8(sample().to_canonical()).unwrap();
        let v10 = text.replace(r#""version":1"#, r#""version":10"#);
        assert!(
            Manifest::parse(v10.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("version 10")
        );
        let dup = text.replacen(r#"{"created":"#, r#"{"host":"evil","created":"#, 1);
        assert!(
            Manifest::parse(dup.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
        let extra = text.replacen(r#"{"created":"#, r#"{"zzz":1,"created":"#, 1);
        assert!(Manifest::parse(extra.as_bytes()).is_err());
        assert!(Manifest::parse(b"[]").is_err());
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_id("2026-01-01T00:00:00Z".parse().unwrap());
        let b = new_id("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(a < b);
        assert_eq!(a.len(), "20260101T000000Z-".len() + 8);
    }
}
