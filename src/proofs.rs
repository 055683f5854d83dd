//! Inclusion proofs an auditor can hold: some entries of a sealed
//! manifest, each with its RFC 6962 inclusion proof, and the manifest's
//! signed checkpoint, and nothing else of the manifest (`docs/proofs.md`,
//! "Proof bundles").
//!
//! [`prove`] reads a version 9 manifest once (its signature and its
//! checkpoint's checked first), rebuilds its tree in bounded memory
//! ([`merkle::Store`]) and keeps the chosen entries; [`check`] verifies a
//! bundle offline with nothing but the operator's public key (and, when
//! asked, the witnesses').

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{Signer, Trust};
use crate::manifest::checkpoint::{self, Checkpoint, CheckpointError, Signed};
use crate::manifest::{self, FileEntry, ManifestError, VERSION_TREE};
use crate::merkle::{self, MerkleError, Root};

/// Value of a bundle's `format` field.
pub const FORMAT: &str = "custody-proof";
/// The bundle version this code writes and reads.
pub const VERSION: u64 = 1;

/// What to prove: every entry of a study, or a path (a file, or every file
/// under a folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Entries whose `dicom.study` is this StudyInstanceUID.
    Study(String),
    /// The entry with this path, or the entries under this folder.
    Path(String),
}

impl Choice {
    fn matches(&self, f: &FileEntry) -> bool {
        match self {
            Choice::Study(uid) => f
                .dicom
                .as_ref()
                .and_then(|d| d.study.as_deref())
                .is_some_and(|s| s == uid),
            Choice::Path(p) => {
                let p = p.trim_end_matches('/');
                f.path == p || f.path.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
            }
        }
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::Study(uid) => write!(f, "--study {uid}"),
            Choice::Path(p) => write!(f, "--path {p}"),
        }
    }
}

/// A proof bundle (`custody-proof` version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The checkpoint's text, exactly as signed.
    pub checkpoint: String,
    /// Witnesses' cosignatures of the checkpoint (armored SSHSIG each).
    pub cosignatures: Vec<String>,
    /// The proven entries, in leaf order.
    pub entries: Vec<ProvenEntry>,
    /// Always [`FORMAT`].
    pub format: String,
    /// The operator's signature of the checkpoint (armored SSHSIG).
    pub signature: String,
    /// Always [`VERSION`].
    pub version: u64,
}

/// One entry and its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEntry {
    /// Its leaf index: its position in the manifest's `files`, from 0.
    pub index: u64,
    /// Its canonical bytes in the manifest, as text: the leaf.
    pub leaf: String,
    /// The inclusion proof, leaf side first, lowercase hex each.
    pub proof: Vec<String>,
}

/// Errors of [`prove`] and [`check`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The manifest or its checkpoint cannot be read, or does not verify.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest is older than version 9 and has no tree.
    #[error(
        "{path}: manifest version {version} has no Merkle tree (proofs need version {VERSION_TREE}, which this custody writes at every seal; for an older run, the whole manifest is the proof)"
    )]
    NoTree {
        /// The manifest.
        path: PathBuf,
        /// Its version.
        version: u64,
    },
    /// The checkpoint does not state the manifest's tree.
    #[error("{path}: {reason}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The checkpoint's signature or cosignatures do not hold.
    #[error("{path}: {source}")]
    Checkpoint {
        /// The checkpoint file or bundle.
        path: PathBuf,
        /// Why.
        source: CheckpointError,
    },
    /// No entry matched a choice.
    #[error("{path}: no entry matches {choice}")]
    NothingChosen {
        /// The manifest.
        path: PathBuf,
        /// The choice.
        choice: Choice,
    },
    /// The tree's temporary store failed.
    #[error("{path}: {source}")]
    Tree {
        /// The manifest.
        path: PathBuf,
        /// Why.
        source: MerkleError,
    },
    /// A bundle cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The bundle.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bundle is not a `custody-proof` document.
    #[error("{path}: not a custody proof bundle ({reason})")]
    Malformed {
        /// The bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What [`prove`] made.
#[derive(Debug, Clone)]
pub struct Proven {
    /// The bundle.
    pub bundle: Bundle,
    /// The manifest's id.
    pub manifest: String,
    /// Its tree.
    pub root: Root,
}

/// Builds the bundle proving the entries `choices` pick from the manifest
/// at `path`, after checking the manifest and its checkpoint against
/// `trust` and against each other.
///
/// # Errors
/// See [`ProofError`]: an unreadable or unsigned manifest or checkpoint, a
/// manifest without a tree, a tree that is not the checkpoint's, a choice
/// that matches nothing.
pub fn prove(path: &Path, trust: &Trust, choices: &[Choice]) -> Result<Proven, ProofError> {
    let signed = manifest::open_signed(path, trust)?;
    let head = &signed.head;
    let Some(declared) = head.tree.as_ref().filter(|_| head.version == VERSION_TREE) else {
        return Err(ProofError::NoTree {
            path: path.to_path_buf(),
            version: head.version,
        });
    };
    let at = checkpoint::path_for(path);
    let cp = checkpoint::read(&at)?;
    cp.verify(trust).map_err(|source| ProofError::Checkpoint {
        path: at.clone(),
        source,
    })?;
    let mismatch = |reason: String| ProofError::CheckpointMismatch {
        path: at.clone(),
        reason,
    };
    let origin = checkpoint::manifest_origin(&head.id);
    if cp.checkpoint.origin != origin {
        return Err(mismatch(format!(
            "names {:?}, not this manifest ({origin:?})",
            cp.checkpoint.origin
        )));
    }
    let stated = cp.checkpoint.root;
    if stated.size != declared.size || merkle::to_hex(&stated.hash) != declared.root {
        return Err(mismatch(format!(
            "states {} entries with root {}; the manifest's tree is {} entries with root {}",
            stated.size,
            merkle::to_hex(&stated.hash),
            declared.size,
            declared.root
        )));
    }
    let tree_err = |source| ProofError::Tree {
        path: path.to_path_buf(),
        source,
    };
    let mut store = merkle::Store::new().map_err(tree_err)?;
    let mut chosen: Vec<(u64, String)> = Vec::new();
    let mut found = vec![false; choices.len()];
    let mut failed = None;
    signed.for_each_file(|f| {
        let leaf = serde_json::to_string(&f).expect("an entry serialises");
        let index = store.size();
        if let Err(e) = store.push(leaf.as_bytes()) {
            failed.get_or_insert(e);
        }
        let mut hit = false;
        for (c, seen) in choices.iter().zip(found.iter_mut()) {
            if c.matches(&f) {
                *seen = true;
                hit = true;
            }
        }
        if hit {
            chosen.push((index, leaf));
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(tree_err(e));
    }
    if let Some(i) = found.iter().position(|seen| !seen) {
        return Err(ProofError::NothingChosen {
            path: path.to_path_buf(),
            choice: choices[i].clone(),
        });
    }
    let proofs = store.finish().map_err(tree_err)?;
    let root = proofs.root();
    if root != stated {
        return Err(mismatch(format!(
            "states root {}, but the manifest's entries hash to {}",
            merkle::to_hex(&stated.hash),
            merkle::to_hex(&root.hash)
        )));
    }
    let mut entries = Vec::with_capacity(chosen.len());
    for (index, leaf) in chosen {
        let proof = proofs.inclusion(index).map_err(tree_err)?;
        entries.push(ProvenEntry {
            index,
            leaf,
            proof: proof.iter().map(merkle::to_hex).collect(),
        });
    }
    Ok(Proven {
        bundle: Bundle {
            checkpoint: cp.text,
            cosignatures: cp.cosignatures,
            entries,
            format: FORMAT.to_owned(),
            signature: cp.signature,
            version: VERSION,
        },
        manifest: head.id.clone(),
        root,
    })
}

/// Reads a bundle file.
///
/// # Errors
/// [`ProofError::Io`] or [`ProofError::Malformed`].
pub fn read_bundle(path: &Path) -> Result<Bundle, ProofError> {
    let bytes = std::fs::read(path).map_err(|source| ProofError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |reason: String| ProofError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    match (value.get("format"), value.get("version")) {
        (Some(f), Some(v)) if f == FORMAT && v == VERSION => {}
        (Some(f), Some(v)) if f == FORMAT => {
            return Err(malformed(format!("unsupported version {v}")));
        }
        _ => return Err(malformed(format!("no \"format\": \"{FORMAT}\""))),
    }
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

/// One entry a bundle proves.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedEntry {
    /// Its leaf index.
    pub index: u64,
    /// Its path.
    pub path: String,
    /// Its study, when it is a DICOM instance.
    pub study: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its BLAKE3.
    pub blake3: String,
}

/// One thing in a bundle that does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct ProofProblem {
    /// The entry concerned (its leaf index), or none for the checkpoint.
    pub index: Option<u64>,
    /// What is wrong.
    pub problem: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The manifest the checkpoint names.
    pub manifest: Option<String>,
    /// The checkpoint's tree size.
    pub size: u64,
    /// Its root, lowercase hex.
    pub root: String,
    /// Who signed the checkpoint, when the signature verified.
    pub signer: Option<Signer>,
    /// The witnesses whose cosignatures verified (with `--witness`).
    pub witnesses: Vec<Signer>,
    /// The entries whose proofs hold.
    pub proven: Vec<CheckedEntry>,
    /// Everything that does not hold; empty when the bundle proves all of
    /// its entries.
    pub problems: Vec<ProofProblem>,
}

impl CheckReport {
    /// Whether the bundle holds.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a bundle offline: the checkpoint's signature against `trust`,
/// its cosignatures against `witnesses` when given, and every entry's
/// inclusion proof against the checkpoint's root.
pub fn check(bundle: &Bundle, trust: &Trust, witnesses: Option<&Trust>) -> CheckReport {
    let mut problems = Vec::new();
    let mut problem = |index: Option<u64>, problem: String| {
        problems.push(ProofProblem { index, problem });
    };
    let signed = match Signed::new(
        bundle.checkpoint.clone(),
        bundle.signature.clone(),
        bundle.cosignatures.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            problem(None, format!("checkpoint: {e}"));
            return CheckReport {
                manifest: None,
                size: 0,
                root: String::new(),
                signer: None,
                witnesses: Vec::new(),
                proven: Vec::new(),
                problems,
            };
        }
    };
    let cp: &Checkpoint = &signed.checkpoint;
    let manifest = cp
        .origin
        .strip_prefix(&checkpoint::manifest_origin(""))
        .map(str::to_owned);
    if manifest.is_none() {
        problem(
            None,
            format!(
                "checkpoint: origin {:?} is not a manifest's (custody-manifest/<id>)",
                cp.origin
            ),
        );
    }
    let signer = match signed.verify(trust) {
        Ok(s) => Some(s),
        Err(e) => {
            problem(None, e.to_string());
            None
        }
    };
    let witnessed = match witnesses.map(|w| signed.witnessed(w)) {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            problem(None, e.to_string());
            Vec::new()
        }
        None => Vec::new(),
    };
    if bundle.entries.is_empty() {
        problem(None, "the bundle proves no entry".into());
    }
    let mut proven = Vec::new();
    let mut last: Option<u64> = None;
    for e in &bundle.entries {
        let at = Some(e.index);
        if last.is_some_and(|l| e.index <= l) {
            problem(
                at,
                format!(
                    "entry {}: leaf indices must rise (repeated or out of order)",
                    e.index
                ),
            );
        }
        last = Some(e.index);
        let entry = match serde_json::from_str::<FileEntry>(&e.leaf) {
            Ok(f) if serde_json::to_string(&f).is_ok_and(|c| c == e.leaf) => f,
            Ok(_) => {
                problem(at, format!("entry {}: not in canonical form", e.index));
                continue;
            }
            Err(err) => {
                problem(
                    at,
                    format!("entry {}: not a manifest entry ({err})", e.index),
                );
                continue;
            }
        };
        let proof: Option<Vec<merkle::Hash>> =
            e.proof.iter().map(|h| merkle::from_hex(h)).collect();
        let Some(proof) = proof else {
            problem(
                at,
                format!(
                    "{}: a proof hash is not 64 lowercase hex digits",
                    entry.path
                ),
            );
            continue;
        };
        match merkle::check_inclusion(
            &proof,
            cp.root,
            e.index,
            merkle::leaf_hash(e.leaf.as_bytes()),
        ) {
            Ok(()) => proven.push(CheckedEntry {
                index: e.index,
                study: entry.dicom.as_ref().and_then(|d| d.study.clone()),
                path: entry.path,
                size: entry.size,
                blake3: entry.blake3,
            }),
            Err(MerkleError::InvalidProof) => problem(
                at,
                format!(
                    "{} (leaf {}): its proof does not lead to the checkpoint's root: the entry or \
                     the proof was changed, reordered or cut, or they belong to another manifest",
                    entry.path, e.index
                ),
            ),
            Err(err) => problem(at, format!("{} (leaf {}): {err}", entry.path, e.index)),
        }
    }
    CheckReport {
        manifest,
        size: cp.root.size,
        root: merkle::to_hex(&cp.root.hash),
        signer,
        witnesses: witnessed,
        proven,
        problems,
    }
}
