//! Manifests of any size in bounded memory: written as a stream, signed
//! from their hash, read back entry by entry.
//!
//! The bytes are exactly those of [`Manifest::to_canonical`] for the same
//! content: the writer serialises the manifest without its lists and splices
//! the entries in where the empty `"excluded":[]` and `"files":[]` stand
//! (keys are sorted, so both lists come before `totals`, which is written
//! last, once the totals are known). The reader parses the top-level object
//! with serde, handing each `files` element to a callback instead of
//! collecting it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    Excluded, FORMAT, FileEntry, Manifest, ManifestError, ParseError, Totals, signature_path,
};
use crate::keys::{self, Signer, SigningKey, Trust};

const EXCLUDED_KEY: &[u8] = br#""excluded":["#;
const FILES_KEY: &[u8] = br#""files":["#;

/// What [`write_canonical`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The totals it computed (and wrote).
    pub totals: Totals,
    /// The number of bytes.
    pub len: u64,
    /// BLAKE3 of the bytes.
    pub blake3: blake3::Hash,
    /// SHA-512 of the bytes (what SSHSIG signs).
    pub sha512: [u8; 64],
    /// The Merkle tree over the file entries as written, when the
    /// manifest has one (version 9).
    pub tree: Option<crate::merkle::Root>,
}

/// Errors while streaming a manifest out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError<E> {
    /// Writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An entry source failed.
    #[error(transparent)]
    Source(E),
}

fn position(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("a manifest without lists serialises both empty lists")
}

struct Tee<W> {
    out: W,
    len: u64,
    blake3: blake3::Hasher,
    sha512: sha2::Sha512,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.out.write(buf)?;
        self.len += n as u64;
        self.blake3.update(&buf[..n]);
        self.sha512.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes the canonical bytes of `head` with `excluded` and `files` as its
/// lists (given in component order; `head`'s own lists must be empty), and
/// fills in the totals. Memory does not depend on the number of entries.
///
/// # Errors
/// Write errors, and the first error an entry source yields.
pub fn write_canonical<E>(
    head: &Manifest,
    excluded: impl IntoIterator<Item = Result<Excluded, E>>,
    files: impl IntoIterator<Item = Result<FileEntry, E>>,
    out: impl Write,
) -> Result<Written, WriteError<E>> {
    let mut enc = Encoder::new(head, BufWriter::with_capacity(256 * 1024, out));
    for e in excluded {
        enc.excluded(&e.map_err(WriteError::Source)?)?;
    }
    for f in files {
        enc.file(&f.map_err(WriteError::Source)?)?;
    }
    Ok(enc.finish()?)
}

/// [`write_canonical`] for a manifest with a tree (version 9), whose
/// leaves go to `leaves` (a [`crate::merkle::Feed`] building the tree on
/// another thread, say) instead of a builder on this one.
///
/// # Errors
/// As [`write_canonical`].
pub fn write_canonical_with<E>(
    head: &Manifest,
    excluded: impl IntoIterator<Item = Result<Excluded, E>>,
    files: impl IntoIterator<Item = Result<FileEntry, E>>,
    out: impl Write,
    leaves: Box<dyn crate::merkle::Leaves>,
) -> Result<Written, WriteError<E>> {
    let mut enc = Encoder::new(head, BufWriter::with_capacity(256 * 1024, out));
    if head.tree.is_some() {
        enc.tree = Some(leaves);
    }
    for e in excluded {
        enc.excluded(&e.map_err(WriteError::Source)?)?;
    }
    for f in files {
        enc.file(&f.map_err(WriteError::Source)?)?;
    }
    Ok(enc.finish()?)
}

/// The canonical encoder behind [`write_canonical`], fed one entry at a
/// time: all excluded entries first, then all files.
pub(super) struct Encoder<W: Write> {
    w: Tee<W>,
    head: Manifest,
    skeleton: Vec<u8>,
    at_excluded: usize,
    at_files: usize,
    in_files: bool,
    totals: Totals,
    /// The tree over the entries, for a manifest that records one.
    tree: Option<Box<dyn crate::merkle::Leaves>>,
    entry: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    pub(super) fn new(head: &Manifest, out: W) -> Self {
        use sha2::Digest as _;
        let head = Manifest {
            excluded: Vec::new(),
            files: Vec::new(),
            ..head.clone()
        };
        let skeleton = head.to_canonical();
        let at_excluded = position(&skeleton, EXCLUDED_KEY) + EXCLUDED_KEY.len();
        let at_files = position(&skeleton, FILES_KEY) + FILES_KEY.len();
        Encoder {
            w: Tee {
                out,
                len: 0,
                blake3: blake3::Hasher::new(),
                sha512: sha2::Sha512::new(),
            },
            skeleton,
            at_excluded,
            at_files,
            in_files: false,
            totals: Totals {
                bytes: 0,
                excluded: 0,
                files: 0,
            },
            tree: head
                .tree
                .as_ref()
                .map(|_| Box::new(crate::merkle::Builder::new()) as Box<dyn crate::merkle::Leaves>),
            head,
            entry: Vec::with_capacity(512),
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        if self.w.len == 0 {
            self.w.write_all(&self.skeleton[..self.at_excluded])?;
        }
        Ok(())
    }

    pub(super) fn excluded(&mut self, e: &Excluded) -> std::io::Result<()> {
        assert!(!self.in_files, "excluded entries come before files");
        self.start()?;
        if self.totals.excluded > 0 {
            self.w.write_all(b",")?;
        }
        serde_json::to_writer(&mut self.w, e)?;
        self.totals.excluded += 1;
        Ok(())
    }

    pub(super) fn file(&mut self, f: &FileEntry) -> std::io::Result<()> {
        self.start()?;
        if !self.in_files {
            self.in_files = true;
            self.w
                .write_all(&self.skeleton[self.at_excluded..self.at_files])?;
        }
        if self.totals.files > 0 {
            self.w.write_all(b",")?;
        }
        match &mut self.tree {
            // An entry's canonical bytes are its tree leaf.
            Some(tree) => {
                self.entry.clear();
                serde_json::to_writer(&mut self.entry, f)?;
                self.w.write_all(&self.entry)?;
                tree.push(&self.entry);
            }
            None => serde_json::to_writer(&mut self.w, f)?,
        }
        self.totals.files += 1;
        self.totals.bytes += f.size;
        Ok(())
    }

    pub(super) fn finish(mut self) -> std::io::Result<Written> {
        let totals = self.totals.clone();
        let root = self.tree.as_mut().map(|t| t.root());
        if let (Some(declared), Some(root)) = (&mut self.head.tree, root) {
            declared.root = crate::merkle::to_hex(&root.hash);
            declared.size = root.size;
        }
        self.finish_rooted(totals, root)
    }

    /// Finishes with `totals` (and the head's `tree`) written as given (an
    /// audit re-encodes what a manifest declares); [`Written::totals`] and
    /// [`Written::tree`] are still the counted ones.
    pub(super) fn finish_with(mut self, totals: Totals) -> std::io::Result<Written> {
        let root = self.tree.as_mut().map(|t| t.root());
        self.finish_rooted(totals, root)
    }

    fn finish_rooted(
        mut self,
        totals: Totals,
        tree: Option<crate::merkle::Root>,
    ) -> std::io::Result<Written> {
        use sha2::Digest as _;
        self.start()?;
        if !self.in_files {
            self.w
                .write_all(&self.skeleton[self.at_excluded..self.at_files])?;
        }
        // Everything after the files list, with the real totals.
        let tail = Manifest {
            totals,
            ..self.head
        }
        .to_canonical();
        let at_tail = position(&tail, FILES_KEY) + FILES_KEY.len();
        self.w.write_all(&tail[at_tail..])?;
        self.w.flush()?;
        Ok(Written {
            totals: self.totals,
            len: self.w.len,
            blake3: self.w.blake3.finalize(),
            sha512: self.w.sha512.finalize().into(),
            tree,
        })
    }
}

/// Signs what [`write_canonical`] wrote; the same signature
/// [`Manifest::sign`] gives for the same bytes.
///
/// # Errors
/// Only if signing fails.
pub fn sign_written(written: &Written, key: &SigningKey) -> Result<String, keys::KeyError> {
    key.sign_sha512(keys::MANIFEST_NAMESPACE, &written.sha512)
}

/// Reads the top-level object, handing each `files` element to `on_file`
/// (or, without it, skipping them), and returns the rest as a [`Manifest`]
/// with an empty `files` list, plus the number of file entries.
struct Top<'f> {
    on_file: Option<&'f mut dyn FnMut(FileEntry) -> Result<(), String>>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = (Manifest, u64);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = (Manifest, u64);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a custody manifest object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = serde_json::Map::new();
        let mut count = None;
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) || (key == "files" && count.is_some()) {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            if key == "files" {
                count = Some(map.next_value_seed(Files {
                    on_file: self.on_file.take(),
                })?);
                obj.insert(key, serde_json::Value::Array(Vec::new()));
            } else {
                obj.insert(key, map.next_value()?);
            }
        }
        check_format(&obj).map_err(de::Error::custom)?;
        let m = serde_json::from_value::<Manifest>(serde_json::Value::Object(obj))
            .map_err(de::Error::custom)?;
        Ok((m, count.unwrap_or(0)))
    }
}

/// The `format` / `version` check of [`Manifest::parse`], for a clear
/// message before field-level errors.
fn check_format(obj: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    match (obj.get("format"), obj.get("version")) {
        (Some(f), Some(v)) if f == FORMAT && v.as_u64().is_some_and(super::supported_version) => {
            Ok(())
        }
        (Some(f), Some(v)) if f == FORMAT => Err(format!("unsupported manifest version {v}")),
        _ => Err(format!("no \"format\": \"{FORMAT}\" with a version")),
    }
}

struct Files<'f> {
    on_file: Option<&'f mut dyn FnMut(FileEntry) -> Result<(), String>>,
}

impl<'de> DeserializeSeed<'de> for Files<'_> {
    type Value = u64;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Files<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of file entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        match self.on_file {
            Some(on_file) => {
                while let Some(e) = seq.next_element::<FileEntry>()? {
                    on_file(e).map_err(de::Error::custom)?;
                    n += 1;
                }
            }
            None => {
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn parse_top(
    reader: impl Read,
    on_file: Option<&mut dyn FnMut(FileEntry) -> Result<(), String>>,
) -> Result<(Manifest, u64), serde_json::Error> {
    let mut de =
        serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, reader));
    let top = Top { on_file }.deserialize(&mut de)?;
    de.end()?;
    Ok(top)
}

/// Reads manifest bytes once, to the end: their BLAKE3, and the manifest
/// without its file list (or why it does not parse), in memory independent
/// of the number of files. For bytes held elsewhere than in a signed file
/// (the ledger's copy).
///
/// # Errors
/// I/O errors from `reader`; a manifest that does not parse is not an
/// error here but the inner `Err`.
pub fn hash_head(
    reader: impl Read,
) -> std::io::Result<(blake3::Hash, Result<Manifest, ParseError>)> {
    let mut hasher = blake3::Hasher::new();
    let mut reader = HashRead {
        inner: reader,
        hasher: &mut hasher,
    };
    let head = parse_top(&mut reader, None)
        .map(|(m, _)| m)
        .map_err(ParseError::Fields);
    std::io::copy(&mut reader, &mut std::io::sink())?;
    Ok((hasher.finalize(), head))
}

/// A manifest file whose signature has been checked, read without holding
/// its file list: [`SignedFile::head`] has every field but `files` (empty),
/// and [`SignedFile::for_each_file`] streams the entries.
#[derive(Debug)]
pub struct SignedFile {
    /// The manifest without its `files` (an empty list).
    pub head: Manifest,
    /// How many file entries it lists.
    pub file_count: u64,
    /// Its exact bytes' length and hash, as read when checking the
    /// signature.
    pub blake3: blake3::Hash,
    /// Who signed it.
    pub signer: Signer,
    /// Its length in bytes.
    pub len: u64,
    path: PathBuf,
    file: File,
}

struct HashRead<'a, R> {
    inner: R,
    hasher: &'a mut blake3::Hasher,
}

impl<R: Read> Read for HashRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens `path`, checks `path.sig` against `trust` over the whole file, and
/// reads everything but the file list, in memory independent of the number
/// of files. The signature is checked before anything else is believed;
/// the operator identity it is checked for is read first, as with
/// [`super::read_signed`].
///
/// # Errors
/// As [`super::read_signed`].
pub fn open_signed(path: &Path, trust: &Trust) -> Result<SignedFile, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let sig_path = signature_path(path);
    let sig = std::fs::read_to_string(&sig_path).map_err(|source| ManifestError::Io {
        path: sig_path.clone(),
        source,
    })?;
    let parsed = parse_top(&file, None);
    let identity = parsed
        .as_ref()
        .map(|(m, _)| m.operator.identity.clone())
        .unwrap_or_default();
    let created = parsed
        .as_ref()
        .ok()
        .and_then(|(m, _)| m.created.parse().ok());
    file.rewind().map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    let mut reader = HashRead {
        inner: &file,
        hasher: &mut hasher,
    };
    let (signer, len) = trust
        .verify_reader(
            &identity,
            keys::MANIFEST_NAMESPACE,
            created,
            &mut reader,
            &sig,
        )
        .map_err(|source| ManifestError::Signature {
            path: sig_path,
            source,
        })?;
    let (head, file_count) = parsed.map_err(|reason| ManifestError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })?;
    Ok(SignedFile {
        head,
        file_count,
        signer,
        len,
        path: path.to_path_buf(),
        file,
        blake3: hasher.finalize(),
    })
}

impl SignedFile {
    /// The manifest file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file entries again, in order, handing each to `on_file`.
    /// The bytes are hashed on the way and must be the ones whose signature
    /// was checked.
    ///
    /// # Errors
    /// I/O errors, an error `on_file` returns, or a file that changed since
    /// its signature was checked.
    pub fn for_each_file(
        &self,
        mut on_file: impl FnMut(FileEntry) -> Result<(), String>,
    ) -> Result<(), ManifestError> {
        let malformed = |reason| ManifestError::Malformed {
            path: self.path.clone(),
            reason,
        };
        let mut file = &self.file;
        file.rewind().map_err(|source| ManifestError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut hasher = blake3::Hasher::new();
        let reader = HashRead {
            inner: file,
            hasher: &mut hasher,
        };
        parse_top(reader, Some(&mut on_file)).map_err(|e| malformed(e.to_string()))?;
        if hasher.finalize() != self.blake3 {
            return Err(malformed(
                "changed while being read, after its signature was checked".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ChainHead, Encryption, Operator, StoredEntry, Tool, VERSION_CRC64};

    fn head() -> Manifest {
        Manifest {
            created: "2026-11-24T10:00:00Z".into(),
            destination: "/mnt/databox/Contoso_BlockBlob/pacs".into(),
            encryption: None,
            excluded: vec![],
            files: vec![],
            format: FORMAT.into(),
            host: "transfer-01".into(),
            id: "m-1".into(),
            ledger_head: ChainHead {
                hash: "ab".repeat(32),
                seq: 7,
            },
            operator: Operator {
                identity: "it@example.org".into(),
                key_fingerprint: "SHA256:x".into(),
            },
            run: 1,
            source: "/srv/pacs".into(),
            tool: Tool {
                name: "custody".into(),
                version: "0".into(),
            },
            totals: Totals {
                bytes: 0,
                excluded: 0,
                files: 0,
            },
            version: VERSION_CRC64,
            wave: None,
            job: None,
            source_changes: None,
            selection: None,
            shard: None,
            tree: None,
        }
    }

    fn entry(i: u64) -> FileEntry {
        FileEntry {
            blake3: format!("{i:064x}"),
            crc64: Some(format!("{:016x}", i * 0x0101_0101)),
            mtime: "2026-11-24T10:00:00Z".into(),
            // Names that need escaping, too.
            path: format!("p\"{i}/\u{e9}t\u{e9}\\{i}.dcm"),
            size: i * 3,
            stored: None,
            dicom: None,
            version_of: None,
        }
    }

    #[test]
    fn streamed_bytes_equal_the_in_memory_encoding() {
        for (n_ex, n_files, encrypted) in
            [(0, 0, false), (0, 1, false), (2, 3, true), (1, 500, false)]
        {
            let mut full = head();
            full.excluded = (0..n_ex)
                .map(|i| Excluded {
                    path: format!("link{i}"),
                    reason: "symbolic link".into(),
                })
                .collect();
            full.files = (0..n_files).map(entry).collect();
            if encrypted {
                full.encryption = Some(Encryption {
                    chunk_size: 65536,
                    key_id: "k".into(),
                    scheme: "s".into(),
                });
                for f in &mut full.files {
                    f.stored = Some(StoredEntry {
                        blake3: "0".repeat(64),
                        crc64: Some("f".repeat(16)),
                        path: format!("{}.custody-enc", f.path),
                        size: f.size + 80,
                    });
                }
            }
            full.totals = Totals {
                bytes: full.files.iter().map(|f| f.size).sum(),
                excluded: n_ex,
                files: n_files,
            };
            let mut out = Vec::new();
            let skeleton = Manifest {
                excluded: vec![],
                files: vec![],
                ..full.clone()
            };
            let written = write_canonical::<()>(
                &skeleton,
                full.excluded.iter().cloned().map(Ok),
                full.files.iter().cloned().map(Ok),
                &mut out,
            )
            .unwrap();
            assert_eq!(out, full.to_canonical(), "{n_ex} excluded, {n_files} files");
            assert_eq!(written.totals, full.totals);
            assert_eq!(written.len, out.len() as u64);
            assert_eq!(written.blake3, blake3::hash(&out));

            // And back: the head and every entry, in order.
            let mut seen = Vec::new();
            let (m, count) = parse_top(
                &out[..],
                Some(&mut |f| {
                    seen.push(f);
                    Ok(())
                }),
            )
            .unwrap();
            assert_eq!(count, n_files);
            assert_eq!(seen, full.files);
            assert_eq!(
                m,
                Manifest {
                    files: vec![],
                    ..full.clone()
                }
            );
        }
    }

    #[test]
    fn streamed_reader_rejects_what_parse_rejects() {
        let good = String::from_utf8(head().to_canonical()).unwrap();
        for (bad, expect) in [
            (
                good.replace("\"version\":3", "\"version\":10"),
                "unsupported manifest version 10",
            ),
            (
                good.replace("\"files\":[]", "\"files\":[],\"files\":[]"),
                "duplicate field `files`",
            ),
            (
                good.replace("\"host\"", "\"hostname\""),
                "unknown field `hostname`",
            ),
            (format!("{good} x"), "trailing characters"),
        ] {
            let err = parse_top(bad.as_bytes(), None).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(super::super::Manifest::parse(bad.as_bytes()).is_err());
        }
    }
}
