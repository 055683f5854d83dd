//! The streaming AES-256-GCM format and encryption key files.
//!
//! An encrypted object is a 64-byte header followed by chunks: the plaintext
//! cut into `chunk_size` pieces, each sealed with AES-256-GCM under the
//! STREAM construction (7-byte nonce prefix, 32-bit big-endian counter,
//! last-chunk flag), with the whole header as associated data of every
//! chunk. The key of each object is derived with HKDF-SHA256 from the
//! master key and the header's random salt. `docs/encryption.md` is the
//! specification; `tests/vectors/encryption/` holds test vectors.
//!
//! [`EncryptWriter`] **must** be finished with [`EncryptWriter::finish`]:
//! only `finish` writes the final chunk, and an object without it fails to
//! decrypt (as truncated), never silently.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aead_stream::{DecryptorBE32, EncryptorBE32, KeyInit};
use aes_gcm::Aes256Gcm;
use zeroize::Zeroizing;

/// Magic bytes opening every encrypted object.
pub const MAGIC: &[u8; 8] = b"CSTDYENC";
/// Format version in the header.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm id 1: AES-256-GCM, STREAM-BE32, HKDF-SHA256.
pub const ALGORITHM: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Tag length appended to every chunk.
pub const TAG_LEN: usize = 16;
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
/// Smallest chunk size a reader accepts.
pub const MIN_CHUNK: u32 = 64;
/// Largest chunk size a reader accepts (bounds memory on hostile input).
pub const MAX_CHUNK: u32 = 16 * 1024 * 1024;
/// Suffix of the landed name of an encrypted file.
pub const SUFFIX: &str = ".custody-enc";
/// The scheme name recorded in manifests.
pub const SCHEME: &str = "custody-stream-aes256gcm/1";
/// First line of an encryption key file.
const KEY_FILE_TAG: &str = "custody-encryption-key v1";
/// HKDF info prefix; the first 32 header bytes follow it.
const HKDF_INFO: &[u8] = b"custody-encryption/1";
/// BLAKE3 derive-key context of key ids.
const KEY_ID_CONTEXT: &str = "custody 2026 encryption key id v1";

/// Errors of the format and of key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A key file is readable by group or others.
    #[error(
        "{path}: encryption key is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file is not in the documented format.
    #[error("{path}: not a custody encryption key file: {reason}")]
    MalformedKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// `keygen` would overwrite a file.
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The header is not one this version reads.
    #[error("bad header: {0}")]
    Header(&'static str),
    /// The object was encrypted under another key.
    #[error("encrypted with key {found}, but the given key is {expected}")]
    WrongKey {
        /// The key id in the header.
        found: String,
        /// The id of the key given.
        expected: String,
    },
    /// A chunk failed authentication (tampered, reordered, or wrong key).
    #[error("chunk {index} failed authentication (tampered, reordered or from another object)")]
    Chunk {
        /// Zero-based chunk index.
        index: u64,
    },
    /// The object ends before its final chunk.
    #[error("truncated: the final chunk is missing")]
    Truncated,
}

impl CryptError {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// Extracts a format error carried inside an `io::Error`.
    pub fn from_io(e: &io::Error) -> Option<&CryptError> {
        e.get_ref()?.downcast_ref::<CryptError>()
    }
}

/// A 256-bit master encryption key with its id. The key bytes are wiped on
/// drop and never printed.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; 32]>,
    id: [u8; 16],
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

fn key_id(bytes: &[u8; 32]) -> [u8; 16] {
    let full = blake3::derive_key(KEY_ID_CONTEXT, bytes);
    full[..16].try_into().expect("16 bytes")
}

fn hex(bytes: &[u8]) -> String {
    crate::digest::hex_lower(bytes)
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl EncryptionKey {
    /// A new random key.
    pub fn generate() -> Self {
        use rand_core::RngCore;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand_core::OsRng.fill_bytes(bytes.as_mut());
        Self::from_bytes(*bytes)
    }

    /// A key from its 32 bytes (test vectors, tools).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let id = key_id(&bytes);
        EncryptionKey {
            bytes: Zeroizing::new(bytes),
            id,
        }
    }

    /// The key id: 32 lowercase hex digits, a BLAKE3-derived fingerprint
    /// that reveals nothing about the key.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// Writes the key file (mode 0600), refusing to overwrite.
    ///
    /// # Errors
    /// The file exists or cannot be written.
    pub fn write_new(&self, path: &Path) -> Result<(), CryptError> {
        let io_err = |source| CryptError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.symlink_metadata().is_ok() {
            return Err(CryptError::Exists {
                path: path.to_path_buf(),
            });
        }
        let text = Zeroizing::new(format!(
            "# custody encryption key: anyone holding this file can decrypt. Keep it secret.\n\
             {KEY_FILE_TAG}\nid {}\nkey {}\n",
            self.id_hex(),
            hex(self.bytes.as_ref())
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
        f.write_all(text.as_bytes()).map_err(io_err)?;
        f.sync_all().map_err(io_err)
    }

    /// Reads a key file. It must not be accessible by group or others, and
    /// its recorded id must match the key.
    ///
    /// # Errors
    /// Names the path and the cause.
    pub fn load(path: &Path) -> Result<Self, CryptError> {
        let io_err = |source| CryptError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        let bad = |reason| CryptError::MalformedKey {
            path: path.to_path_buf(),
            reason,
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(KEY_FILE_TAG) {
            return Err(bad("first line must be `custody-encryption-key v1`"));
        }
        let id = lines
            .next()
            .and_then(|l| l.strip_prefix("id "))
            .and_then(unhex::<16>)
            .ok_or_else(|| bad("expected `id <32 hex digits>`"))?;
        let bytes = lines
            .next()
            .and_then(|l| l.strip_prefix("key "))
            .and_then(unhex::<32>)
            .ok_or_else(|| bad("expected `key <64 hex digits>`"))?;
        if lines.next().is_some() {
            return Err(bad("unexpected extra lines"));
        }
        let key = Self::from_bytes(bytes);
        if key.id != id {
            return Err(bad(
                "the recorded id does not match the key (damaged file?)",
            ));
        }
        Ok(key)
    }

    /// The per-object AES key and STREAM nonce prefix for `header`.
    fn object_key(&self, header: &[u8; HEADER_LEN]) -> (Zeroizing<[u8; 32]>, [u8; 7]) {
        let salt = &header[32..64];
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), self.bytes.as_ref());
        let mut okm = Zeroizing::new([0u8; 39]);
        let mut info = Vec::with_capacity(HKDF_INFO.len() + 32);
        info.extend_from_slice(HKDF_INFO);
        info.extend_from_slice(&header[..32]);
        hk.expand(&info, okm.as_mut())
            .expect("39 bytes is a valid HKDF-SHA256 length");
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&okm[..32]);
        let nonce: [u8; 7] = okm[32..].try_into().expect("7 bytes");
        (key, nonce)
    }
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The master key's id.
    pub key_id: [u8; 16],
    /// The per-object salt.
    pub salt: [u8; 32],
}

impl Header {
    /// Encodes the 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8] = FORMAT_VERSION;
        h[9] = ALGORITHM;
        h[12..16].copy_from_slice(&self.chunk_size.to_be_bytes());
        h[16..32].copy_from_slice(&self.key_id);
        h[32..64].copy_from_slice(&self.salt);
        h
    }

    /// Decodes and checks 64 header bytes.
    ///
    /// # Errors
    /// [`CryptError::Header`] naming what is wrong.
    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Self, CryptError> {
        if &h[..8] != MAGIC {
            return Err(CryptError::Header(
                "not a custody encrypted object (bad magic)",
            ));
        }
        if h[8] != FORMAT_VERSION {
            return Err(CryptError::Header("unsupported format version"));
        }
        if h[9] != ALGORITHM {
            return Err(CryptError::Header("unsupported algorithm"));
        }
        if h[10..12] != [0, 0] {
            return Err(CryptError::Header("reserved bytes are not zero"));
        }
        let chunk_size = u32::from_be_bytes(h[12..16].try_into().expect("4 bytes"));
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(CryptError::Header("chunk size out of range"));
        }
        Ok(Header {
            chunk_size,
            key_id: h[16..32].try_into().expect("16 bytes"),
            salt: h[32..64].try_into().expect("32 bytes"),
        })
    }
}

/// The stored size of a plaintext of `size` bytes: the header, then one
/// tag per chunk, at least one chunk (an empty plaintext has one empty
/// final chunk).
pub fn stored_size(size: u64, chunk_size: u32) -> u64 {
    let chunks = size.div_ceil(u64::from(chunk_size)).max(1);
    HEADER_LEN as u64 + size + chunks * TAG_LEN as u64
}

type Enc = EncryptorBE32<Aes256Gcm>;
type Dec = DecryptorBE32<Aes256Gcm>;

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// Encrypts everything written to it into `inner`, in the format above.
///
/// You **MUST** call [`EncryptWriter::finish`]: it writes the final chunk.
/// Dropping the writer without it leaves an object that fails to decrypt.
pub struct EncryptWriter<W: Write> {
    inner: W,
    enc: Option<Enc>,
    header: [u8; HEADER_LEN],
    chunk: usize,
    buf: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// Starts an object with a random salt and writes its header.
    ///
    /// # Errors
    /// Writing the header failed.
    pub fn new(inner: W, key: &EncryptionKey, chunk_size: u32) -> io::Result<Self> {
        use rand_core::RngCore;
        let mut salt = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut salt);
        Self::with_salt(inner, key, chunk_size, salt)
    }

    /// Starts an object with a given salt. Only for test vectors: a salt
    /// must never be reused under one key.
    ///
    /// # Errors
    /// Writing the header failed, or the chunk size is out of range.
    #[doc(hidden)]
    pub fn with_salt(
        mut inner: W,
        key: &EncryptionKey,
        chunk_size: u32,
        salt: [u8; 32],
    ) -> io::Result<Self> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(CryptError::Header("chunk size out of range").into_io());
        }
        let header = Header {
            chunk_size,
            key_id: key.id,
            salt,
        }
        .encode();
        let (k, nonce) = key.object_key(&header);
        let enc = Enc::from_aead(cipher(&k), (&nonce).into());
        inner.write_all(&header)?;
        let chunk = chunk_size as usize;
        Ok(EncryptWriter {
            inner,
            enc: Some(enc),
            header,
            chunk,
            buf: Vec::with_capacity(chunk + TAG_LEN),
        })
    }

    /// Seals the buffered chunk and writes it; `last` consumes the STREAM.
    fn seal(&mut self, last: bool) -> io::Result<()> {
        let enc = self
            .enc
            .as_mut()
            .ok_or_else(|| io::Error::other("encrypted object already finished"))?;
        let fail = |_| io::Error::other("AES-GCM encryption failed (STREAM counter overflow)");
        if last {
            let enc = self.enc.take().expect("checked above");
            enc.encrypt_last_in_place(&self.header, &mut self.buf)
                .map_err(fail)?;
        } else {
            enc.encrypt_next_in_place(&self.header, &mut self.buf)
                .map_err(fail)?;
        }
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the final chunk and returns the inner writer.
    ///
    /// # Errors
    /// Writing failed.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full chunk is sealed only once more data arrives: until then it
        // may be the last one.
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.len() == self.chunk {
                self.seal(false)?;
            }
            let take = (self.chunk - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts an object from `inner`, yielding plaintext. Every chunk is
/// authenticated before any of its bytes are returned; a missing final
/// chunk is an error at the end, so consumers must not trust output until
/// `read` has returned 0.
pub struct DecryptReader<R: Read> {
    inner: R,
    dec: Option<Dec>,
    header: [u8; HEADER_LEN],
    chunk: usize,
    buf: Vec<u8>,
    pos: usize,
    carry: Option<u8>,
    index: u64,
    done: bool,
}

impl<R: Read> DecryptReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    /// I/O errors, or (as `InvalidData` carrying a [`CryptError`]) a bad
    /// header or an object made under another key.
    pub fn new(mut inner: R, key: &EncryptionKey) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        let n = read_full(&mut inner, &mut header)?;
        if n < HEADER_LEN {
            return Err(CryptError::Header("shorter than a header").into_io());
        }
        let h = Header::decode(&header).map_err(CryptError::into_io)?;
        if h.key_id != key.id {
            return Err(CryptError::WrongKey {
                found: hex(&h.key_id),
                expected: key.id_hex(),
            }
            .into_io());
        }
        let (k, nonce) = key.object_key(&header);
        let chunk = h.chunk_size as usize;
        Ok(DecryptReader {
            inner,
            dec: Some(Dec::from_aead(cipher(&k), (&nonce).into())),
            header,
            chunk,
            buf: Vec::with_capacity(chunk + TAG_LEN),
            pos: 0,
            carry: None,
            index: 0,
            done: false,
        })
    }

    /// Reads and opens the next chunk into `buf`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let want = self.chunk + TAG_LEN;
        self.buf.clear();
        self.buf.resize(want, 0);
        let mut n = 0;
        if let Some(b) = self.carry.take() {
            self.buf[0] = b;
            n = 1;
        }
        n += read_full(&mut self.inner, &mut self.buf[n..])?;
        // The chunk is the last one exactly when nothing follows it.
        let last = if n == want {
            let mut one = [0u8; 1];
            match read_full(&mut self.inner, &mut one)? {
                0 => true,
                _ => {
                    self.carry = Some(one[0]);
                    false
                }
            }
        } else {
            true
        };
        self.buf.truncate(n);
        if n < TAG_LEN {
            return Err(CryptError::Truncated.into_io());
        }
        let bad = CryptError::Chunk { index: self.index };
        let dec = self
            .dec
            .as_mut()
            .ok_or_else(|| CryptError::Truncated.into_io())?;
        let opened = if last {
            let dec = self.dec.take().expect("checked above");
            dec.decrypt_last_in_place(&self.header, &mut self.buf)
        } else {
            dec.decrypt_next_in_place(&self.header, &mut self.buf)
        };
        opened.map_err(|_| bad.into_io())?;
        self.done = last;
        self.index += 1;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = (self.buf.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::from_bytes([7u8; 32])
    }

    fn encrypt(pt: &[u8], chunk: u32, salt: u8) -> Vec<u8> {
        let mut w = EncryptWriter::with_salt(Vec::new(), &key(), chunk, [salt; 32]).unwrap();
        // Uneven writes exercise the chunk boundary logic.
        for piece in pt.chunks(37) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn decrypt(ct: &[u8], k: &EncryptionKey) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        DecryptReader::new(ct, k)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn err(ct: &[u8]) -> String {
        let e = decrypt(ct, &key()).unwrap_err();
        CryptError::from_io(&e).map_or(e.to_string(), ToString::to_string)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let chunk = 64u32;
        for len in [0usize, 1, 63, 64, 65, 128, 129, 1000] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ct = encrypt(&pt, chunk, 1);
            assert_eq!(ct.len() as u64, stored_size(len as u64, chunk), "len {len}");
            assert_eq!(decrypt(&ct, &key()).unwrap(), pt, "len {len}");
        }
    }

    #[test]
    fn every_tamper_is_detected() {
        let pt = vec![0xabu8; 64 * 3 + 10]; // 4 chunks of 80 bytes (last 26)
        let ct = encrypt(&pt, 64, 2);
        let c = |i: usize| HEADER_LEN + i * 80;
        let cut = |n: usize| ct[..n].to_vec();
        assert_eq!(
            err(&cut(c(3))),
            "chunk 2 failed authentication (tampered, reordered or from another object)"
        );
        assert_eq!(
            err(&cut(HEADER_LEN)),
            "truncated: the final chunk is missing"
        );
        assert_eq!(
            err(&cut(c(1) + 40)),
            "chunk 1 failed authentication (tampered, reordered or from another object)"
        );
        let mut swapped = ct.clone();
        swapped[c(0)..c(1)].copy_from_slice(&ct[c(1)..c(2)]);
        swapped[c(1)..c(2)].copy_from_slice(&ct[c(0)..c(1)]);
        assert!(err(&swapped).starts_with("chunk 0 failed"));
        let mut last_early = ct[..c(1)].to_vec();
        last_early.extend_from_slice(&ct[c(3)..]);
        assert!(err(&last_early).starts_with("chunk 1 failed"));
        let mut appended = ct.clone();
        appended.extend_from_slice(&ct[c(1)..c(2)]);
        assert!(err(&appended).starts_with("chunk 3 failed"));
        let mut flipped = ct.clone();
        flipped[c(2) + 5] ^= 1;
        assert!(err(&flipped).starts_with("chunk 2 failed"));
        let mut header = ct.clone();
        header[40] ^= 1; // salt: another key, every chunk fails
        assert!(err(&header).starts_with("chunk 0 failed"));
        let mut size = ct.clone();
        size[15] = 65; // chunk size field
        assert!(err(&size).starts_with("chunk 0 failed"));
        let other = encrypt(&pt, 64, 3);
        let mut foreign = other[..HEADER_LEN].to_vec();
        foreign.extend_from_slice(&ct[HEADER_LEN..]);
        assert!(err(&foreign).starts_with("chunk 0 failed"));
        let wrong = EncryptionKey::from_bytes([8u8; 32]);
        let e = decrypt(&ct, &wrong).unwrap_err();
        assert!(matches!(
            CryptError::from_io(&e),
            Some(CryptError::WrongKey { .. })
        ));
        assert_eq!(err(b"CSTDYENC"), "bad header: shorter than a header");
    }

    #[test]
    fn unfinished_writer_leaves_an_undecryptable_object() {
        let mut out = Vec::new();
        {
            let mut w = EncryptWriter::with_salt(&mut out, &key(), 64, [4; 32]).unwrap();
            w.write_all(&[1u8; 200]).unwrap();
            // dropped without finish()
        }
        assert!(decrypt(&out, &key()).is_err());
    }

    #[test]
    fn key_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = EncryptionKey::generate();
        k.write_new(&p).unwrap();
        assert!(matches!(k.write_new(&p), Err(CryptError::Exists { .. })));
        let back = EncryptionKey::load(&p).unwrap();
        assert_eq!(back.id_hex(), k.id_hex());
        let text = fs::read_to_string(&p).unwrap();
        assert!(!format!("{back:?}").contains(&text.lines().last().unwrap()[4..]));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            EncryptionKey::load(&p),
            Err(CryptError::InsecurePermissions { mode: 0o644, .. })
        ));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(
            &p,
            text.replace("id ", "id 0")
                .replacen("id 0", "id ", 1)
                .replace(&k.id_hex(), &"0".repeat(32)),
        )
        .unwrap();
        assert!(matches!(
            EncryptionKey::load(&p),
            Err(CryptError::MalformedKey { .. })
        ));
    }
}
