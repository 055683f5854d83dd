//! The audit: everything a signed manifest must hold beyond its signature
//! (totals, paths and their order, version rules, encryption headers, a
//! job's link and versions), as [`Finding`]s an auditor reads.

use serde::Serialize;

use super::{
    FileEntry, Manifest, ManifestError, SignedFile, SignedManifest, VERSION, VERSION_DICOM,
    VERSION_DICOMWEB, VERSION_ENCRYPTED, VERSION_JOB, VERSION_SELECTED, VERSION_TREE, VERSION_WAVE,
    defines_job, defines_wave, has_crc64, stream, versioned_path,
};
use crate::digest;
use crate::keys::Signer;
use crate::relpath::{self, RelPath};

/// One internal inconsistency found by [`audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The manifest path concerned, or the field name.
    pub at: String,
    /// What is wrong.
    pub problem: String,
}

/// Checks a manifest's internal consistency without touching data: canonical
/// bytes, totals, entry order and duplicates, well-formed paths, hashes and
/// times, and that the signer's key is the one the manifest names.
pub fn audit(signed: &SignedManifest) -> Vec<Finding> {
    let mut a = Auditor::new(&signed.manifest, &signed.signer);
    for f in &signed.manifest.files {
        a.file(f);
    }
    a.finish(signed.bytes.len() as u64, blake3::hash(&signed.bytes))
}

/// [`audit`] for a manifest read with [`open_signed`]: one more pass over
/// the file, in memory that does not grow with the number of entries.
///
/// # Errors
/// The file cannot be read again, or changed since it was opened.
pub fn audit_file(signed: &SignedFile) -> Result<Vec<Finding>, ManifestError> {
    let mut a = Auditor::new(&signed.head, &signed.signer);
    signed.for_each_file(|f| {
        a.file(&f);
        Ok(())
    })?;
    Ok(a.finish(signed.len, signed.blake3))
}

/// The audit, fed the manifest's head and then its file entries in order.
struct Auditor<'m> {
    m: &'m Manifest,
    out: Vec<Finding>,
    prev: Option<String>,
    files: u64,
    bytes: u64,
    canonical: stream::Encoder<std::io::Sink>,
    stored_without_encryption: bool,
}

impl<'m> Auditor<'m> {
    fn new(m: &'m Manifest, signer: &Signer) -> Self {
        let mut canonical = stream::Encoder::new(m, std::io::sink());
        for e in &m.excluded {
            canonical.excluded(e).expect("writing to a sink");
        }
        let mut a = Auditor {
            m,
            out: Vec::new(),
            prev: None,
            files: 0,
            bytes: 0,
            canonical,
            stored_without_encryption: false,
        };
        if m.operator.key_fingerprint != signer.fingerprint {
            a.add(
                "operator.key_fingerprint",
                format!(
                    "names {} but the signature was made by {}",
                    m.operator.key_fingerprint, signer.fingerprint
                ),
            );
        }
        if m.created.parse::<jiff::Timestamp>().is_err() {
            a.add(
                "created",
                format!("not an RFC 3339 timestamp: {:?}", m.created),
            );
        }
        a.encryption_header();
        a.job_header();
        a.selection_header();
        a.tree_header();
        match (&m.wave, m.rules_version()) {
            (None, VERSION_WAVE) => {
                a.add("wave", format!("version {} requires it", m.rules_version()))
            }
            (Some(_), v) if !defines_wave(v) => {
                a.add(
                    "wave",
                    format!("version {} does not define it", m.rules_version()),
                );
            }
            (Some(w), _) => {
                for (field, value) in [
                    ("wave.name", &w.name),
                    ("wave.change", &w.change),
                    ("wave.owner", &w.owner),
                    ("wave.rollback_contact", &w.rollback_contact),
                ] {
                    if value.trim().is_empty() {
                        a.add(field, "is empty".into());
                    }
                }
            }
            (None, _) => {}
        }
        if digest::parse_hex(&m.ledger_head.hash).is_none() {
            a.add(
                "ledger_head.hash",
                "not a lowercase hex BLAKE3 digest".into(),
            );
        }
        a
    }

    fn add(&mut self, at: &str, problem: String) {
        self.out.push(Finding {
            at: at.to_owned(),
            problem,
        });
    }

    /// `job` is required in version 6 and defined nowhere else; its link
    /// is well-formed and present exactly when the run is not the first.
    /// `source_changes` belongs to version 6 too.
    fn job_header(&mut self) {
        let m = self.m;
        if m.source_changes.is_some() && !defines_job(m.rules_version()) {
            self.add(
                "source_changes",
                format!("version {} does not define it", m.rules_version()),
            );
        }
        for c in m.source_changes.iter().flatten() {
            if !c.change.is_known() {
                self.add(
                    &c.path,
                    format!("source_changes: unknown change {:?}", c.change.as_str()),
                );
            }
            if !c.action.is_known() {
                self.add(
                    &c.path,
                    format!("source_changes: unknown action {:?}", c.action.as_str()),
                );
            }
        }
        let Some(job) = &m.job else {
            if m.rules_version() == VERSION_JOB {
                self.add("job", format!("version {} requires it", m.rules_version()));
            }
            return;
        };
        if !defines_job(m.rules_version()) {
            self.add(
                "job",
                format!("version {} does not define it", m.rules_version()),
            );
        }
        if job.name.trim().is_empty() {
            self.add("job.name", "is empty".into());
        }
        match (&job.previous, job.run) {
            (_, 0) => self.add("job.run", "must be 1 or more".into()),
            (Some(_), 1) => self.add("job.previous", "the first run of a job has none".into()),
            (None, n) if n > 1 => {
                self.add(
                    "job.previous",
                    format!("run {n} of a job must name the previous manifest"),
                );
            }
            (Some(l), _) => {
                if digest::parse_hex(&l.blake3).is_none() {
                    self.add("job.previous.blake3", "not 64 lowercase hex digits".into());
                }
                if digest::parse_hex(&l.sha256).is_none() {
                    self.add("job.previous.sha256", "not 64 lowercase hex digits".into());
                }
            }
            (None, _) => {}
        }
    }

    /// `tree` exactly in version 9, on a base version it can extend.
    fn tree_header(&mut self) {
        let m = self.m;
        match (&m.tree, m.version) {
            (None, VERSION_TREE) => self.add("tree", format!("version {VERSION_TREE} requires it")),
            (Some(_), v) if v != VERSION_TREE => {
                self.add("tree", format!("version {v} does not define it"));
            }
            (Some(t), _) => {
                if !(VERSION_DICOM..=VERSION_SELECTED).contains(&t.base) {
                    self.add(
                        "tree.base",
                        format!(
                            "{} is not a version a tree extends ({VERSION_DICOM} to {VERSION_SELECTED})",
                            t.base
                        ),
                    );
                }
                if crate::merkle::from_hex(&t.root).is_none() {
                    self.add("tree.root", "not 64 lowercase hex digits".into());
                }
            }
            (None, _) => {}
        }
    }

    /// `selection` and `shard` only in version 8, which needs one of them;
    /// their hashes well-formed.
    fn selection_header(&mut self) {
        let m = self.m;
        if m.rules_version() != VERSION_SELECTED {
            for (field, present) in [
                ("selection", m.selection.is_some()),
                ("shard", m.shard.is_some()),
            ] {
                if present {
                    self.add(
                        field,
                        format!("version {} does not define it", m.rules_version()),
                    );
                }
            }
            return;
        }
        if m.selection.is_none() && m.shard.is_none() {
            self.add(
                "version",
                format!("{VERSION_SELECTED} needs a `selection` or a `shard`"),
            );
        }
        if let Some(h) = m.selection.as_ref().and_then(|s| s.files_from.as_ref())
            && digest::parse_hex(h).is_none()
        {
            self.add("selection.files_from", "not 64 lowercase hex digits".into());
        }
        if let Some(s) = &m.shard {
            for (field, hex) in [
                ("shard.list_blake3", &s.list_blake3),
                ("shard.split.blake3", &s.split.blake3),
                ("shard.split.sha256", &s.split.sha256),
            ] {
                if digest::parse_hex(hex).is_none() {
                    self.add(field, "not 64 lowercase hex digits".into());
                }
            }
            if s.number == 0 || s.number > s.of {
                self.add(
                    "shard.number",
                    format!("{} is not a shard of {}", s.number, s.of),
                );
            }
        }
    }

    /// A `version_of` only in version 6, where `path` is its versioned name.
    fn version_of(&mut self, f: &FileEntry) {
        let Some(of) = &f.version_of else {
            return;
        };
        match &self.m.job {
            Some(job) if defines_job(self.m.rules_version()) => {
                let expect = versioned_path(of, job.run);
                if f.path != expect {
                    self.add(&f.path, format!("version_of {of:?} needs path {expect:?}"));
                }
            }
            _ => self.add(
                &f.path,
                format!(
                    "has version_of, which version {} does not define",
                    self.m.rules_version()
                ),
            ),
        }
    }

    fn encryption_header(&mut self) {
        let m = self.m;
        let Some(enc) = &m.encryption else {
            if m.rules_version() == VERSION_ENCRYPTED {
                self.add(
                    "encryption",
                    format!("version {} requires it", m.rules_version()),
                );
            }
            return;
        };
        if m.rules_version() == VERSION {
            self.add(
                "version",
                format!(
                    "is {} but `encryption` requires {VERSION_ENCRYPTED} or later",
                    m.rules_version()
                ),
            );
        }
        if m.rules_version() == VERSION_DICOMWEB {
            self.add(
                "encryption",
                format!(
                    "version {VERSION_DICOMWEB} (a DICOMweb service) does not define it: the service holds DICOM instances, not ciphertext"
                ),
            );
        }
        if enc.scheme != crate::crypt::SCHEME {
            self.add(
                "encryption.scheme",
                format!("unknown scheme {:?}", enc.scheme),
            );
        }
        if !(crate::crypt::MIN_CHUNK..=crate::crypt::MAX_CHUNK).contains(&enc.chunk_size) {
            self.add(
                "encryption.chunk_size",
                format!("{} is out of range", enc.chunk_size),
            );
        }
    }

    fn file(&mut self, f: &FileEntry) {
        self.canonical.file(f).expect("writing to a sink");
        if let Err(e) = RelPath::new(f.path.as_str()) {
            self.add(&f.path, format!("invalid path: {e}"));
        }
        // Entries must be strictly increasing, so a duplicate is always
        // next to its twin: no set of paths is needed.
        match self
            .prev
            .as_deref()
            .map(|p| relpath::cmp_components(p, &f.path))
        {
            Some(std::cmp::Ordering::Equal) => {
                self.add(&f.path, "listed more than once".into());
            }
            Some(std::cmp::Ordering::Greater) => self.add(
                &f.path,
                "out of order (entries must be sorted by path components)".into(),
            ),
            _ => {}
        }
        if digest::parse_hex(&f.blake3).is_none() {
            self.add(&f.path, "blake3 is not 64 lowercase hex digits".into());
        }
        if f.mtime.parse::<jiff::Timestamp>().is_err() {
            self.add(&f.path, format!("mtime is not RFC 3339: {:?}", f.mtime));
        }
        self.crc64(&f.path, "crc64", f.crc64.as_deref());
        self.dicom(f);
        self.version_of(f);
        self.encryption_entry(f);
        self.files += 1;
        self.bytes = self.bytes.saturating_add(f.size);
        self.prev = Some(f.path.clone());
    }

    /// A `dicom` object only in version 4, well-formed.
    fn dicom(&mut self, f: &FileEntry) {
        let Some(d) = &f.dicom else {
            return;
        };
        if !(VERSION_DICOM..=VERSION_SELECTED).contains(&self.m.rules_version()) {
            self.add(
                &f.path,
                format!(
                    "has dicom, which version {} does not define",
                    self.m.rules_version()
                ),
            );
        } else if let Some(why) = d.malformed() {
            self.add(&f.path, format!("dicom: {why}"));
        } else if d.is_empty() {
            self.add(&f.path, "dicom is empty".into());
        }
    }

    /// A manifest of version 3 or later has a CRC64 wherever it has a
    /// BLAKE3; older ones have none.
    fn crc64(&mut self, path: &str, field: &str, crc: Option<&str>) {
        match (has_crc64(self.m.rules_version()), crc) {
            (true, Some(c)) if digest::parse_crc64(c).is_none() => {
                self.add(path, format!("{field} is not 16 lowercase hex digits"));
            }
            (true, None) => self.add(
                path,
                format!(
                    "no {field} (version {} requires it)",
                    self.m.rules_version()
                ),
            ),
            (false, Some(_)) => self.add(
                path,
                format!(
                    "has {field}, which version {} does not define",
                    self.m.rules_version()
                ),
            ),
            _ => {}
        }
    }

    /// Version 7: every file is an instance, and `stored` names it as the
    /// service holds it (its bytes after the preamble).
    fn dicomweb_entry(&mut self, f: &FileEntry) {
        let uids = f
            .dicom
            .as_ref()
            .and_then(crate::source::dicom::InstanceUids::of);
        let Some(uids) = uids else {
            self.add(
                &f.path,
                format!(
                    "no dicom study, series and instance (version {VERSION_DICOMWEB} requires them)"
                ),
            );
            return;
        };
        let Some(st) = &f.stored else {
            self.add(
                &f.path,
                format!("no `stored` object (version {VERSION_DICOMWEB} requires it)"),
            );
            return;
        };
        if st.path != uids.path() {
            self.add(
                &f.path,
                format!("stored.path {:?} is not {:?}", st.path, uids.path()),
            );
        }
        if digest::parse_hex(&st.blake3).is_none() {
            self.add(
                &f.path,
                "stored.blake3 is not 64 lowercase hex digits".into(),
            );
        }
        self.crc64(&f.path, "stored.crc64", st.crc64.as_deref());
        let preamble = crate::source::dicom::PREAMBLE as u64;
        if f.size.checked_sub(preamble) != Some(st.size) {
            self.add(
                &f.path,
                format!(
                    "stored.size {} is not size {} less the {preamble}-byte preamble",
                    st.size, f.size
                ),
            );
        }
    }

    fn encryption_entry(&mut self, f: &FileEntry) {
        if self.m.rules_version() == VERSION_DICOMWEB {
            return self.dicomweb_entry(f);
        }
        let Some(enc) = &self.m.encryption else {
            if f.stored.is_some() && !self.stored_without_encryption {
                self.stored_without_encryption = true;
                self.add(
                    &f.path,
                    "has `stored` but the manifest has no `encryption`".into(),
                );
            }
            return;
        };
        let Some(st) = &f.stored else {
            self.add(
                &f.path,
                "no `stored` object in an encrypted manifest".into(),
            );
            return;
        };
        if st.path != format!("{}{}", f.path, crate::crypt::SUFFIX) {
            self.add(
                &f.path,
                format!(
                    "stored.path {:?} is not path + {:?}",
                    st.path,
                    crate::crypt::SUFFIX
                ),
            );
        }
        if digest::parse_hex(&st.blake3).is_none() {
            self.add(
                &f.path,
                "stored.blake3 is not 64 lowercase hex digits".into(),
            );
        }
        self.crc64(&f.path, "stored.crc64", st.crc64.as_deref());
        let chunk_ok =
            (crate::crypt::MIN_CHUNK..=crate::crypt::MAX_CHUNK).contains(&enc.chunk_size);
        let expect = crate::crypt::stored_size(f.size, enc.chunk_size);
        if chunk_ok && st.size != expect {
            self.add(
                &f.path,
                format!(
                    "stored.size {} does not fit a {}-byte plaintext (expected {expect})",
                    st.size, f.size
                ),
            );
        }
    }

    /// The last checks, given the length and BLAKE3 of the exact bytes.
    fn finish(mut self, len: u64, blake3: blake3::Hash) -> Vec<Finding> {
        let m = self.m;
        // Re-encoded with the totals as declared (wrong totals are their
        // own finding): canonical bytes are exactly these.
        let canonical = self
            .canonical
            .finish_with(m.totals.clone())
            .expect("writing to a sink");
        if canonical.len != len || canonical.blake3 != blake3 {
            self.out.insert(
                0,
                Finding {
                    at: "(bytes)".into(),
                    problem: "not in canonical form (RFC 8785; see docs/manifest.md)".into(),
                },
            );
        }
        let mut out = self.out;
        let mut add = |at: &str, problem: String| {
            out.push(Finding {
                at: at.to_owned(),
                problem,
            })
        };
        if m.totals.files != self.files {
            add(
                "totals.files",
                format!(
                    "says {} but {} files are listed",
                    m.totals.files, self.files
                ),
            );
        }
        if m.totals.bytes != self.bytes {
            add(
                "totals.bytes",
                format!(
                    "says {} but the listed sizes sum to {}",
                    m.totals.bytes, self.bytes
                ),
            );
        }
        if let (Some(t), Some(root)) = (&m.tree, canonical.tree) {
            if t.size != root.size {
                add(
                    "tree.size",
                    format!("says {} but {} files are listed", t.size, root.size),
                );
            } else if crate::merkle::from_hex(&t.root).is_some_and(|h| h != root.hash) {
                add(
                    "tree.root",
                    format!(
                        "does not match the listed files (their tree's root is {})",
                        crate::merkle::to_hex(&root.hash)
                    ),
                );
            }
        }
        if m.totals.excluded != m.excluded.len() as u64 {
            add(
                "totals.excluded",
                format!(
                    "says {} but {} entries are listed",
                    m.totals.excluded,
                    m.excluded.len()
                ),
            );
        }
        out
    }
}
