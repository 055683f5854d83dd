//! BLAKE3 (and Azure Storage's CRC64) over streams, and the hex forms used
//! in manifests and the ledger.
//!
//! Digests are written as 64 lowercase hexadecimal characters, CRC64 values
//! as 16; parsing is strict (uppercase is rejected) so a manifest has
//! exactly one spelling of every hash.

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

/// Bytes as lowercase hex digits (a SHA-256, a key id).
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a 16-character lowercase hexadecimal CRC64.
pub fn parse_crc64(s: &str) -> Option<u64> {
    let ok = s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// The CRC64 as the manifest and the ledger write it: 16 lowercase hex
/// digits.
pub fn crc64_hex(crc: u64) -> String {
    format!("{crc:016x}")
}

/// Azure Storage's CRC64, the checksum Data Box lists in its BOM files and
/// Blob Storage accepts as `x-ms-content-crc64`: reflected polynomial
/// 0x9A6C9329AC4BC9B5, initial value and final XOR all ones (the catalogue
/// names it CRC-64/NVME; `docs/manifest.md` has the vectors).
pub struct Crc64(crc_fast::Digest);

impl Crc64 {
    /// An empty CRC.
    pub fn new() -> Self {
        Crc64(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The CRC of everything added so far.
    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc64({})", crc64_hex(self.value()))
    }
}

/// What custody records of one byte stream: its length, BLAKE3 and CRC64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summed {
    /// Bytes seen.
    pub len: u64,
    /// Their BLAKE3.
    pub blake3: Hash,
    /// Their CRC64 ([`Crc64`]).
    pub crc64: u64,
}

/// BLAKE3 and CRC64 of one stream, fed together so each byte is read once.
#[derive(Debug, Default)]
pub struct Sums {
    blake3: blake3::Hasher,
    crc64: Crc64,
    len: u64,
}

impl Sums {
    /// Empty sums.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data` to both.
    pub fn update(&mut self, data: &[u8]) {
        self.blake3.update(data);
        self.crc64.update(data);
        self.len += data.len() as u64;
    }

    /// The sums of everything added so far.
    pub fn finish(&self) -> Summed {
        Summed {
            len: self.len,
            blake3: self.blake3.finalize(),
            crc64: self.crc64.value(),
        }
    }
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

/// A writer that sums ([`Sums`]) every byte on its way to `inner`.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    sums: Sums,
}

impl<W> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sums: Sums::new(),
        }
    }

    /// The inner writer and the sums of what was written.
    pub fn finish(self) -> (W, Summed) {
        let summed = self.sums.finish();
        (self.inner, summed)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sums.update(&buf[..n]);
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

    // Azure Storage's CRC64. The values were computed by the independent
    // bit-at-a-time reference in tests/crc64_reference.py (from the
    // polynomial alone, no library); "123456789" gives the catalogue's check
    // value for CRC-64/NVME. The CLI test `vectors::crc64_*` runs that
    // reference against the manifest.
    #[test]
    fn crc64_vectors() {
        let cases: [(&[u8], u64); 4] = [
            (b"", 0x0000000000000000),
            (b"123456789", 0xae8b14860a799888),
            (b"a", CRC64_A),
            (&[0u8; 4096], CRC64_ZEROS_4096),
        ];
        for (data, want) in cases {
            let mut c = Crc64::new();
            c.update(data);
            assert_eq!(c.value(), want, "{:?}", &data[..data.len().min(9)]);
            // Split anywhere: the same value.
            let mut c = Crc64::new();
            let (a, b) = data.split_at(data.len() / 3);
            c.update(a);
            c.update(b);
            assert_eq!(c.value(), want);
        }
        assert_eq!(crc64_hex(0xae8b14860a799888), "ae8b14860a799888");
        assert_eq!(parse_crc64("ae8b14860a799888"), Some(0xae8b14860a799888));
        assert_eq!(parse_crc64("AE8B14860A799888"), None);
        assert_eq!(parse_crc64("0xae8b14860a7998"), None);
        assert_eq!(parse_crc64("ae8b14860a79988"), None);
    }

    const CRC64_A: u64 = 0x8c2f8445b4cbfc3c;
    const CRC64_ZEROS_4096: u64 = 0x6482d367eb22b64e;

    #[test]
    fn sums_read_once() {
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i * 7 % 253) as u8).collect();
        let mut s = Sums::new();
        for piece in data.chunks(CHUNK / 3) {
            s.update(piece);
        }
        let mut c = Crc64::new();
        c.update(&data);
        assert_eq!(
            s.finish(),
            Summed {
                len: data.len() as u64,
                blake3: blake3::hash(&data),
                crc64: c.value()
            }
        );
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
