//! BLAKE3 over streams, and the hex form used in manifests and the ledger.
//!
//! Digests are written as 64 lowercase hexadecimal characters; parsing is
//! strict (uppercase is rejected) so a manifest has exactly one spelling of
//! every hash.

use std::io::{self, Read};

pub use blake3::Hash;

/// Size of the read buffer each worker uses: large enough for BLAKE3's SIMD
/// paths and for few system calls, small enough that workers × buffer stays
/// a few MiB.
pub const CHUNK: usize = 1 << 20;

/// Parses a 64-character lowercase hexadecimal BLAKE3 digest.
pub fn parse_hex(s: &str) -> Option<Hash> {
    let ok = s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok { Hash::from_hex(s).ok() } else { None }
}

/// Hashes everything `reader` yields, returning the byte count and digest.
///
/// # Errors
/// Returns the reader's I/O error.
pub fn hash_reader(mut reader: impl Read) -> io::Result<(u64, Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize()))
}

/// A writer that hashes and counts every byte on its way to `inner`.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }

    /// The inner writer, the byte count and the digest of what was written.
    pub fn finish(self) -> (W, u64, Hash) {
        (self.inner, self.count, self.hasher.finalize())
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
        }
    }

    /// The byte count and digest of what was read so far.
    pub fn finish(&self) -> (u64, Hash) {
        (self.count, self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Appends `field` to `out` as a length-prefixed string: its byte length as a
/// little-endian `u64`, then its bytes. This is the framing of every hash
/// input the ledger defines (`docs/ledger.md`), so no two field lists encode
/// to the same bytes.
pub fn frame(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_le_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_strict_lowercase() {
        let h = blake3::hash(b"");
        let hex = h.to_hex().to_string();
        assert_eq!(
            hex,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(parse_hex(&hex), Some(h));
        assert_eq!(parse_hex(&hex.to_uppercase()), None);
        assert_eq!(parse_hex(&hex[1..]), None);
    }

    #[test]
    fn hash_reader_sizes() {
        for len in [0usize, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (n, h) = hash_reader(&data[..]).unwrap();
            assert_eq!(n, len as u64);
            assert_eq!(h, blake3::hash(&data));
        }
    }

    #[test]
    fn framing_separates_fields() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        frame(&mut a, b"ab");
        frame(&mut a, b"c");
        frame(&mut b, b"a");
        frame(&mut b, b"bc");
        assert_ne!(a, b);
        assert_eq!(&a[..8], &2u64.to_le_bytes());
    }
}
