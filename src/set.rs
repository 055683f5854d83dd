//! Sets: a split and the sealed manifest of each of its shards, bound by
//! one signed document (`custody seal-set`), audited as a whole (`custody
//! audit SET.json --chain DIR`) and verified as one closed set against the
//! place every device finally lands (`custody verify --set`); see
//! `docs/split.md`.
//!
//! A shard's manifest covers its list when the manifest's files and the
//! list name exactly the same paths: both are in component order, so the
//! check is a streaming merge, in memory that does not grow with the
//! number of files. The shards' lists together are the split's files, with
//! no path in two lists (a k-way merge of the lists proves it).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dest::Destination;
use crate::keys::{KeyError, Signer, SigningKey, Trust};
use crate::manifest::set::{self as format, Set, SetShard, Signed};
use crate::manifest::split::{self as split_format, SignedSplit};
use crate::manifest::{self, ManifestError, Operator, SignedFile, Tool};
use crate::progress::Progress;
use crate::relpath::{RelPath, cmp_components};
use crate::source::select;
use crate::verify::{self, VerifyError, VerifyOptions, VerifyReport};

/// Errors that stop a set command as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// The split, a manifest or the set cannot be read or does not verify.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifests given do not make a whole set of the split.
    #[error("{0}")]
    NotASet(String),
    /// A file cannot be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The verify could not run.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl SetError {
    /// Whether the error is a finding about signed content (exit 1) rather
    /// than a file that cannot be used (exit 2).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            SetError::NotASet(_)
                | SetError::Manifest(
                    ManifestError::Signature { .. } | ManifestError::Malformed { .. }
                )
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetError + '_ {
    move |source| SetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a manifest's files compare with its shard's list.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    /// Paths the list names that the manifest does not carry (the first
    /// few; `missing_count` counts them all).
    pub missing: Vec<String>,
    /// How many listed paths the manifest does not carry.
    pub missing_count: u64,
    /// Paths the manifest carries that the list does not name.
    pub unexpected: Vec<String>,
    /// How many.
    pub unexpected_count: u64,
}

impl Coverage {
    /// Whether the manifest covers exactly its list.
    pub fn exact(&self) -> bool {
        self.missing_count == 0 && self.unexpected_count == 0
    }

    fn missing(&mut self, p: String) {
        self.missing_count += 1;
        if self.missing.len() < NAMED {
            self.missing.push(p);
        }
    }

    fn unexpected(&mut self, p: String) {
        self.unexpected_count += 1;
        if self.unexpected.len() < NAMED {
            self.unexpected.push(p);
        }
    }
}

/// How many paths a finding names.
const NAMED: usize = 5;

/// Compares `manifest`'s files with the shard list at `list` (both in
/// component order), streaming both.
///
/// # Errors
/// The list or the manifest cannot be read.
pub fn coverage(manifest: &SignedFile, list: &Path) -> Result<Coverage, SetError> {
    let mut paths = select::read_shard_list(list)
        .map_err(|e| SetError::NotASet(e.to_string()))?
        .peekable();
    let mut cov = Coverage::default();
    let mut list_error = None;
    let merged = manifest.for_each_file(|f| {
        loop {
            match paths.peek() {
                Some(Ok(p)) => match cmp_components(p.as_str(), &f.path) {
                    std::cmp::Ordering::Less => {
                        let p = paths.next().expect("peeked").expect("peeked Ok");
                        cov.missing(p.to_string());
                    }
                    std::cmp::Ordering::Equal => {
                        paths.next();
                        return Ok(());
                    }
                    std::cmp::Ordering::Greater => break,
                },
                Some(Err(_)) => {
                    list_error = paths.next().and_then(Result::err);
                    return Err("the list cannot be read".into());
                }
                None => break,
            }
        }
        cov.unexpected(f.path);
        Ok(())
    });
    // A list that cannot be read is the finding, not the manifest.
    if let Some(e) = list_error {
        return Err(SetError::NotASet(e.to_string()));
    }
    merged?;
    for p in paths {
        let p = p.map_err(|e| SetError::NotASet(e.to_string()))?;
        cov.missing(p.to_string());
    }
    Ok(cov)
}

/// SHA-256 and BLAKE3 record of a signed file's bytes, read as a stream.
fn signed_record(path: &Path, id: &str, signer: &Signer) -> Result<Signed, SetError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let (mut b3, mut sha) = (blake3::Hasher::new(), sha2::Sha256::new());
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    Ok(Signed {
        blake3: b3.finalize().to_hex().to_string(),
        id: id.to_owned(),
        sha256: crate::digest::hex_lower(&sha.finalize()),
        signer: signer.fingerprint.clone(),
        signer_principal: signer.principal.clone(),
    })
}

/// The shard a manifest says it carried, checked against `split`.
fn shard_of(m: &SignedFile, split: &SignedSplit, at: &Path) -> Result<u64, String> {
    let Some(s) = &m.head.shard else {
        return Err(format!(
            "{}: manifest {} records no shard of a split",
            at.display(),
            m.head.id
        ));
    };
    let b3 = blake3::hash(&split.bytes).to_hex().to_string();
    if s.split.blake3 != b3 || s.split.id != split.split.id {
        return Err(format!(
            "{}: manifest {} is of split {} ({}), not this one ({}, {})",
            at.display(),
            m.head.id,
            s.split.id,
            s.split.blake3,
            split.split.id,
            b3
        ));
    }
    match split.split.shards.get((s.number as usize).wrapping_sub(1)) {
        Some(sh) if sh.blake3 == s.list_blake3 => Ok(s.number),
        Some(sh) => Err(format!(
            "{}: manifest {} names list {} for shard {}, the split records {}",
            at.display(),
            m.head.id,
            s.list_blake3,
            s.number,
            sh.blake3
        )),
        None => Err(format!(
            "{}: manifest {} names shard {}, which the split does not have",
            at.display(),
            m.head.id,
            s.number
        )),
    }
}

/// What `seal-set` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    /// The set's id.
    pub id: String,
    /// The set file.
    pub set: PathBuf,
    /// Its signature.
    pub signature: PathBuf,
    /// Shards bound.
    pub shards: u64,
}

/// Binds the split at `split_path` (and its lists beside it) to one sealed
/// manifest per shard, each checked (signature, shard, list covered
/// exactly), and writes the signed set to `out` (+ `.sig`).
///
/// # Errors
/// A manifest or the split that does not verify, a shard with no manifest
/// or two, a manifest that does not cover its list exactly; write errors.
pub fn seal(
    split_path: &Path,
    manifests: &[PathBuf],
    trust: &Trust,
    key: &SigningKey,
    out: &Path,
) -> Result<Sealed, SetError> {
    let split = split_format::read(split_path, trust)?;
    let dir = split_path.parent().unwrap_or(Path::new("."));
    let mut bound: BTreeMap<u64, Signed> = BTreeMap::new();
    for path in manifests {
        let m = manifest::open_signed(path, trust)?;
        let n = shard_of(&m, &split, path).map_err(SetError::NotASet)?;
        let list = dir.join(split_format::list_name(n));
        let cov = coverage(&m, &list)?;
        if !cov.exact() {
            return Err(SetError::NotASet(format!(
                "{}: manifest {} does not cover {} exactly: {}",
                path.display(),
                m.head.id,
                list.display(),
                describe(&cov)
            )));
        }
        let record = signed_record(path, &m.head.id, &m.signer)?;
        if bound.insert(n, record).is_some() {
            return Err(SetError::NotASet(format!(
                "shard {n} is given two manifests; a set binds one per shard"
            )));
        }
    }
    if let Some(s) = split
        .split
        .shards
        .iter()
        .find(|s| !bound.contains_key(&s.number))
    {
        return Err(SetError::NotASet(format!(
            "shard {} ({}) has no manifest; a set binds every shard of the split",
            s.number, s.list
        )));
    }
    let created = jiff::Timestamp::now();
    let set = Set {
        created: created.to_string(),
        format: format::FORMAT.to_owned(),
        id: manifest::new_id(created),
        operator: Operator {
            identity: key.identity(),
            key_fingerprint: key.fingerprint(),
        },
        shards: bound
            .into_iter()
            .map(|(number, manifest)| SetShard { manifest, number })
            .collect(),
        split: Signed::of(&split.split.id, &split.bytes, &split.signer),
        tool: Tool {
            name: "custody".to_owned(),
            version: crate::TOOL_VERSION.to_owned(),
        },
        version: format::VERSION,
    };
    let bytes = set.to_bytes();
    let signature = key.sign(crate::keys::MANIFEST_NAMESPACE, &bytes)?;
    let sig = manifest::signature_path(out);
    manifest::write_durable(&sig, signature.as_bytes())?;
    manifest::write_durable(out, &bytes)?;
    Ok(Sealed {
        id: set.id,
        set: out.to_path_buf(),
        signature: sig,
        shards: set.shards.len() as u64,
    })
}

fn describe(cov: &Coverage) -> String {
    let mut parts = Vec::new();
    if cov.missing_count > 0 {
        parts.push(format!(
            "{} listed file(s) not carried, first {}",
            cov.missing_count,
            cov.missing.join(", ")
        ));
    }
    if cov.unexpected_count > 0 {
        parts.push(format!(
            "{} carried file(s) not listed, first {}",
            cov.unexpected_count,
            cov.unexpected.join(", ")
        ));
    }
    parts.join("; ")
}

/// One shard as the audit found it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardAudit {
    /// Its number.
    pub number: u64,
    /// Its manifest's id, as the set records it.
    pub manifest: Option<String>,
    /// Who signed the manifest.
    pub signer: Option<Signer>,
    /// Files its manifest carries.
    pub files: u64,
    /// What is wrong with it (empty: nothing).
    pub problems: Vec<String>,
}

/// The audit of a set.
#[derive(Debug, Clone, Serialize)]
pub struct SetAudit {
    /// The set's id.
    pub set: String,
    /// Who signed the set.
    pub signer: Signer,
    /// The split's id.
    pub split: String,
    /// Each shard.
    pub shards: Vec<ShardAudit>,
    /// Problems of the set as a whole.
    pub problems: Vec<String>,
}

impl SetAudit {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.shards.iter().all(|s| s.problems.is_empty())
    }
}

/// Where a set's manifest with `id` is: `dir/<id>.json` or
/// `dir/manifests/<id>.json`.
pub fn find_manifest(dirs: &[&Path], id: &str) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|d| {
            [
                d.join(format!("{id}.json")),
                d.join("manifests").join(format!("{id}.json")),
            ]
        })
        .find(|p| p.is_file())
}

/// Audits the set at `set_path` against the split, lists and manifests in
/// `dir`: every signature, every manifest present and the one the set
/// names, each covering exactly its shard's list, each list the split's,
/// and no path in two lists.
///
/// # Errors
/// The set itself cannot be read or does not verify; everything else is a
/// finding in the report.
pub fn audit(set_path: &Path, dir: &Path, trust: &Trust) -> Result<SetAudit, SetError> {
    let signed = format::read(set_path, trust)?;
    let set = &signed.set;
    let mut report = SetAudit {
        set: set.id.clone(),
        signer: signed.signer.clone(),
        split: set.split.id.clone(),
        shards: Vec::new(),
        problems: Vec::new(),
    };
    let split_path = dir.join("split.json");
    let split = match split_format::read(&split_path, trust) {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
    };
    if !set.split.matches(&split.bytes) {
        report.problems.push(format!(
            "{}: not the split the set binds ({} {})",
            split_path.display(),
            set.split.id,
            set.split.blake3
        ));
        return Ok(report);
    }
    let mut lists = Vec::new();
    for s in &split.split.shards {
        let list = dir.join(&s.list);
        let mut a = ShardAudit {
            number: s.number,
            manifest: None,
            signer: None,
            files: 0,
            problems: Vec::new(),
        };
        match std::fs::File::open(&list).and_then(crate::digest::hash_reader) {
            Ok((_, h)) if h.to_hex().as_str() == s.blake3 => lists.push(list.clone()),
            Ok((_, h)) => a.problems.push(format!(
                "{}: BLAKE3 {} differs from the split's {}",
                list.display(),
                h.to_hex(),
                s.blake3
            )),
            Err(e) => a.problems.push(format!("{}: {e}", list.display())),
        }
        match set.shards.iter().find(|b| b.number == s.number) {
            None => a.problems.push("the set binds no manifest for it".into()),
            Some(b) => {
                a.manifest = Some(b.manifest.id.clone());
                audit_shard(&mut a, b, dir, &split, &list, trust);
            }
        }
        report.shards.push(a);
    }
    if set.shards.len() != split.split.shards.len() {
        report.problems.push(format!(
            "the set binds {} manifests for {} shards",
            set.shards.len(),
            split.split.shards.len()
        ));
    }
    if lists.len() == split.split.shards.len() {
        match disjoint(&lists) {
            Ok(None) => {}
            Ok(Some(p)) => report.problems.push(format!("{p} is in two shards' lists")),
            Err(e) => report.problems.push(e),
        }
    }
    Ok(report)
}

fn audit_shard(
    a: &mut ShardAudit,
    bound: &SetShard,
    dir: &Path,
    split: &SignedSplit,
    list: &Path,
    trust: &Trust,
) {
    let id = &bound.manifest.id;
    let Some(path) = find_manifest(&[dir], id) else {
        a.problems.push(format!(
            "manifest {id} is missing (looked for {id}.json in {} and its manifests/)",
            dir.display()
        ));
        return;
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            a.problems.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    if !bound.manifest.matches(&bytes) {
        a.problems.push(format!(
            "{}: not the manifest the set binds (its bytes were replaced or edited)",
            path.display()
        ));
        return;
    }
    let m = match manifest::open_signed(&path, trust) {
        Ok(m) => m,
        Err(e) => {
            a.problems.push(e.to_string());
            return;
        }
    };
    a.signer = Some(m.signer.clone());
    a.files = m.file_count;
    match shard_of(&m, split, &path) {
        Ok(n) if n == a.number => {}
        Ok(n) => a
            .problems
            .push(format!("manifest {id} carried shard {n}, not {}", a.number)),
        Err(e) => a.problems.push(e),
    }
    match manifest::audit_file(&m) {
        Ok(findings) => a.problems.extend(
            findings
                .into_iter()
                .map(|f| format!("manifest {id}: {}: {}", f.at, f.problem)),
        ),
        Err(e) => a.problems.push(e.to_string()),
    }
    match coverage(&m, list) {
        Ok(c) if c.exact() => {}
        Ok(c) => a.problems.push(format!(
            "manifest {id} does not cover {} exactly: {}",
            list.display(),
            describe(&c)
        )),
        Err(e) => a.problems.push(e.to_string()),
    }
}

/// The first path found in two of `lists` (each in component order), by
/// a k-way merge.
fn disjoint(lists: &[PathBuf]) -> Result<Option<String>, String> {
    let mut heads = Vec::new();
    for l in lists {
        let mut it = select::read_shard_list(l).map_err(|e| e.to_string())?;
        let first = it.next().transpose().map_err(|e| e.to_string())?;
        heads.push((first, it));
    }
    let mut last: Option<RelPath> = None;
    loop {
        let min = heads
            .iter()
            .enumerate()
            .filter_map(|(i, (h, _))| h.as_ref().map(|p| (i, p)))
            .min_by(|a, b| a.1.cmp_components(b.1))
            .map(|(i, _)| i);
        let Some(i) = min else { return Ok(None) };
        let (head, it) = &mut heads[i];
        let p = head.take().expect("a head");
        if last.as_ref() == Some(&p) {
            return Ok(Some(p.to_string()));
        }
        *head = it.next().transpose().map_err(|e| e.to_string())?;
        last = Some(p);
    }
}

/// A discrepancy of a set's verify, placed in its shard and study.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    /// The discrepancy.
    #[serde(flatten)]
    pub discrepancy: verify::Discrepancy,
    /// The shard whose manifest lists it (`None`: extra, in no shard).
    pub shard: Option<u64>,
    /// Its DICOM study, when its manifest entry names one.
    pub study: Option<String>,
}

/// Counts per shard.
#[derive(Debug, Clone, Serialize)]
pub struct ShardCounts {
    /// The shard.
    pub number: u64,
    /// Its manifest.
    pub manifest: String,
    /// Discrepancies per class.
    pub counts: verify::Counts,
}

/// The verify of a set: the union of its manifests as one closed set.
#[derive(Debug, Clone, Serialize)]
pub struct SetVerify {
    /// The set's id.
    pub set: String,
    /// The union's report (its `by_study` says each study's completeness).
    pub report: VerifyReport,
    /// Per shard.
    pub by_shard: Vec<ShardCounts>,
    /// Every discrepancy, with its shard and study.
    pub placed: Vec<Placed>,
}

impl SetVerify {
    /// Whether the destination holds exactly the set.
    pub fn ok(&self) -> bool {
        self.report.ok()
    }
}

/// Verifies `dest` against the union of the set's manifests (found in
/// `dirs`, each checked against the set's record of its bytes and
/// signature), as one closed set; places every discrepancy in its shard
/// and study.
///
/// # Errors
/// The set or a manifest cannot be read or does not verify or is not the
/// one the set binds; the destination cannot be listed.
pub fn verify_set(
    set_path: &Path,
    dirs: &[&Path],
    dest: &dyn Destination,
    trust: &Trust,
    opts: &VerifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<SetVerify, SetError> {
    let signed = format::read(set_path, trust)?;
    let mut paths = Vec::new();
    for s in &signed.set.shards {
        let path = find_manifest(dirs, &s.manifest.id).ok_or_else(|| {
            SetError::NotASet(format!(
                "shard {}: manifest {} not found (looked in {})",
                s.number,
                s.manifest.id,
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if !s.manifest.matches(&bytes) {
            return Err(SetError::NotASet(format!(
                "{}: not the manifest the set binds for shard {}",
                path.display(),
                s.number
            )));
        }
        paths.push((s.number, path));
    }
    let opts = VerifyOptions {
        by_study: true,
        ..*opts
    };
    let mut report = verify::verify_chain(
        paths.iter().map(|(_, p)| manifest::open_signed(p, trust)),
        dest,
        &opts,
        progress,
    )?;
    report.manifest = signed.set.id.clone();
    // Place each discrepancy: one more pass over each manifest, looking
    // up only the (few) discrepant paths.
    let mut at: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    let wanted: std::collections::HashSet<&str> = report
        .discrepancies
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    let mut by_shard = Vec::new();
    for (n, path) in &paths {
        let m = manifest::open_signed(path, trust)?;
        m.for_each_file(|f| {
            let object = f
                .stored
                .as_ref()
                .map_or(f.path.as_str(), |s| s.path.as_str());
            for p in [object, f.path.as_str()] {
                if wanted.contains(p) {
                    at.insert(
                        p.to_owned(),
                        (*n, f.dicom.as_ref().and_then(|d| d.study.clone())),
                    );
                }
            }
            Ok(())
        })?;
        by_shard.push(ShardCounts {
            number: *n,
            manifest: m.head.id.clone(),
            counts: verify::Counts::default(),
        });
    }
    let placed: Vec<Placed> = report
        .discrepancies
        .iter()
        .map(|d| {
            let (shard, study) = match at.get(&d.path) {
                Some((n, s)) => (Some(*n), s.clone()),
                None => (None, None),
            };
            if let Some(c) = shard.and_then(|n| by_shard.iter_mut().find(|c| c.number == n)) {
                let counts = &mut c.counts;
                match d.class {
                    verify::DiscrepancyClass::Missing => counts.missing += 1,
                    verify::DiscrepancyClass::Extra => counts.extra += 1,
                    verify::DiscrepancyClass::Size => counts.size += 1,
                    verify::DiscrepancyClass::Hash => counts.hash += 1,
                    verify::DiscrepancyClass::Unreadable => counts.unreadable += 1,
                }
            }
            Placed {
                discrepancy: d.clone(),
                shard,
                study,
            }
        })
        .collect();
    Ok(SetVerify {
        set: signed.set.id,
        report,
        by_shard,
        placed,
    })
}
