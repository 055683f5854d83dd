//! RFC 6962 Merkle trees: the tree over a manifest's file entries and the
//! tree over the ledger's events (`docs/proofs.md`).
//!
//! The hashing and the proofs are `tlog_tiles`' (Cloudflare's port of Go's
//! `sumdb/tlog`, the code behind the Go checksum database): a leaf hashes
//! as SHA-256(0x00 ‖ data), a node as SHA-256(0x01 ‖ left ‖ right), and
//! proofs are built from *stored hashes* (every complete subtree's hash,
//! in the order `tlog` defines) read through a [`HashReader`]. This module
//! supplies the two readers custody needs:
//!
//! - [`Builder`] keeps only the newest stored hash of each level, which is
//!   all that appending and the root need: O(log n) memory, so a seal of
//!   any size computes its root as the entries stream past.
//! - [`Store`] also writes every stored hash to an unnamed temporary file,
//!   so that inclusion and consistency proofs can be read back afterwards
//!   for a tree of any size, again in bounded memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

pub use tlog_tiles::Hash;
use tlog_tiles::HashReader;

/// Size in bytes of every hash in a tree.
pub const HASH_LEN: usize = 32;

/// The hash of the tree of no leaves: SHA-256 of nothing.
pub const EMPTY: Hash = tlog_tiles::EMPTY_HASH;

/// Errors of the tree and its proofs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The proof does not lead to the root it was checked against.
    #[error("the proof does not lead to the root")]
    InvalidProof,
    /// The question has no answer: an index outside the tree, a
    /// consistency proof from a larger tree, a tree of no leaves.
    #[error("{0}")]
    OutOfRange(String),
    /// The temporary file of stored hashes failed.
    #[error("temporary hash store: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tlog_tiles::Error> for MerkleError {
    fn from(e: tlog_tiles::Error) -> Self {
        match e {
            tlog_tiles::Error::InvalidProof => MerkleError::InvalidProof,
            other => MerkleError::OutOfRange(other.to_string()),
        }
    }
}

/// The hash of a leaf holding `data`: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    tlog_tiles::record_hash(data)
}

/// A tree's size and root: what a checkpoint states.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Root {
    /// The number of leaves.
    pub size: u64,
    /// The root hash (RFC 6962's MTH).
    pub hash: Hash,
}

/// Lowercase hex of a hash, as manifests and ledger payloads spell hashes.
pub fn to_hex(h: &Hash) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from exactly 64 lowercase hex digits.
pub fn from_hex(s: &str) -> Option<Hash> {
    let lower = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if s.len() != 2 * HASH_LEN || !s.bytes().all(lower) {
        return None;
    }
    let mut h = [0u8; HASH_LEN];
    for (i, byte) in h.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Hash(h))
}

/// Builds a tree one leaf at a time, keeping only the roots of its
/// maximal complete subtrees (its "compact range": one per set bit of the
/// size, largest first): O(log n) memory for any number of leaves.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    size: u64,
    stack: Vec<Hash>,
}

impl Builder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf holding `data`.
    pub fn push(&mut self, data: &[u8]) {
        self.push_hash(leaf_hash(data));
    }

    /// Appends a leaf by its hash.
    pub fn push_hash(&mut self, leaf: Hash) {
        self.append(leaf, |_| {});
    }

    /// Appends a leaf, handing `stored` each hash the append completes, in
    /// the order `tlog` stores them: the leaf's, then that of each subtree
    /// it completes, smallest first (`tlog_tiles::stored_hashes`).
    fn append(&mut self, leaf: Hash, mut stored: impl FnMut(&Hash)) {
        stored(&leaf);
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            let left = self.stack.pop().expect("a set bit has its subtree");
            h = tlog_tiles::node_hash(left, h);
            stored(&h);
            n >>= 1;
        }
        self.stack.push(h);
        self.size += 1;
    }

    /// The number of leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves so far: RFC 6962's MTH, the subtrees' roots
    /// folded from the right.
    pub fn root(&self) -> Root {
        let mut subtrees = self.stack.iter().rev();
        let hash = match subtrees.next() {
            None => EMPTY,
            Some(&last) => subtrees.fold(last, |right, &left| tlog_tiles::node_hash(left, right)),
        };
        Root {
            size: self.size,
            hash,
        }
    }
}

/// Where a tree's leaves go as they are written: a [`Builder`] on the same
/// thread, or a [`Feed`] to one on another.
pub trait Leaves {
    /// Appends a leaf holding `data`.
    fn push(&mut self, data: &[u8]);
    /// The root of every leaf pushed; waits for it when it is built
    /// elsewhere. Called once, after the last push.
    fn root(&mut self) -> Root;
}

impl Leaves for Builder {
    fn push(&mut self, data: &[u8]) {
        Builder::push(self, data);
    }
    fn root(&mut self) -> Root {
        Builder::root(self)
    }
}

/// Leaves, packed one after another, with where each ends.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Bytes of leaves a [`Feed`] packs before handing them over.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches a [`Feed`] may have waiting: bounded memory (about 2 MiB).
const BATCHES_WAITING: usize = 8;

/// The sending half of a tree built on another thread: packs leaves into
/// batches and hands them to [`build`] through a bounded queue, so that
/// a seal's SHA-256 hashing runs beside its encoding rather than after it.
#[derive(Debug)]
pub struct Feed {
    batch: Batch,
    to: Option<crossbeam_channel::Sender<Batch>>,
    root: crossbeam_channel::Receiver<Root>,
}

/// What the other thread runs: [`build`] over these.
#[derive(Debug)]
pub struct Fed {
    from: crossbeam_channel::Receiver<Batch>,
    root: crossbeam_channel::Sender<Root>,
}

/// A [`Feed`] and the [`Fed`] end to give [`build`] on another thread.
pub fn feed() -> (Feed, Fed) {
    let (to, from) = crossbeam_channel::bounded(BATCHES_WAITING);
    let (root_to, root_from) = crossbeam_channel::bounded(1);
    (
        Feed {
            batch: Batch::default(),
            to: Some(to),
            root: root_from,
        },
        Fed {
            from,
            root: root_to,
        },
    )
}

/// Builds the tree of everything fed, in order, and hands back its root.
/// Returns when the [`Feed`] is finished or dropped.
pub fn build(fed: Fed) {
    let mut tree = Builder::new();
    for batch in fed.from {
        let mut start = 0;
        for &end in &batch.ends {
            tree.push(&batch.bytes[start..end]);
            start = end;
        }
    }
    // The feed may be gone (its seal failed): nobody waits for the root.
    let _ = fed.root.send(tree.root());
}

impl Feed {
    fn send(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if let Some(to) = &self.to
            && to.send(batch).is_err()
        {
            self.to = None;
        }
    }
}

impl Leaves for Feed {
    fn push(&mut self, data: &[u8]) {
        self.batch.bytes.extend_from_slice(data);
        self.batch.ends.push(self.batch.bytes.len());
        if self.batch.bytes.len() >= BATCH_BYTES {
            self.send();
        }
    }

    fn root(&mut self) -> Root {
        self.send();
        self.to = None;
        self.root
            .recv()
            .expect("the building thread hands back a root unless it panicked")
    }
}

/// A tree whose every stored hash is kept in an unnamed temporary file,
/// so that proofs can be read for any leaf and any earlier size.
pub struct Store {
    builder: Builder,
    out: BufWriter<File>,
    written: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("size", &self.builder.size)
            .finish()
    }
}

/// A finished [`Store`]: read-only, answering proofs.
#[derive(Debug)]
pub struct Proofs {
    file: File,
    root: Root,
}

impl Store {
    /// An empty tree backed by a new temporary file (removed when dropped).
    ///
    /// # Errors
    /// The temporary file cannot be made.
    pub fn new() -> Result<Self, MerkleError> {
        Ok(Store {
            builder: Builder::new(),
            out: BufWriter::with_capacity(256 * 1024, unnamed_temp()?),
            written: 0,
        })
    }

    /// Appends a leaf holding `data`.
    ///
    /// # Errors
    /// Writing the temporary file failed.
    pub fn push(&mut self, data: &[u8]) -> Result<(), MerkleError> {
        self.push_hash(leaf_hash(data))
    }

    /// Appends a leaf by its hash.
    ///
    /// # Errors
    /// Writing the temporary file failed.
    pub fn push_hash(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        let (out, written) = (&mut self.out, &mut self.written);
        let mut failed = None;
        self.builder.append(leaf, |h| {
            if failed.is_none() {
                failed = out.write_all(&h.0).err();
                *written += 1;
            }
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The number of leaves so far.
    pub fn size(&self) -> u64 {
        self.builder.size()
    }

    /// Ends the appends.
    ///
    /// # Errors
    /// Flushing the temporary file failed.
    pub fn finish(self) -> Result<Proofs, MerkleError> {
        debug_assert_eq!(
            self.written,
            tlog_tiles::stored_hash_count(self.builder.size)
        );
        let root = self.builder.root();
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(Proofs { file, root })
    }
}

impl HashReader for Proofs {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let count = tlog_tiles::stored_hash_count(self.root.size);
        indexes
            .iter()
            .map(|&i| {
                if i >= count {
                    return Err(tlog_tiles::Error::IndexesNotInTree);
                }
                let mut h = [0u8; HASH_LEN];
                self.file
                    .read_exact_at(&mut h, i * HASH_LEN as u64)
                    .map_err(|e| tlog_tiles::Error::InvalidInput(e.to_string()))?;
                Ok(Hash(h))
            })
            .collect()
    }
}

impl Proofs {
    /// The tree's size and root.
    pub fn root(&self) -> Root {
        self.root
    }

    /// The root of the tree's first `size` leaves.
    ///
    /// # Errors
    /// `size` is larger than the tree, or the file cannot be read.
    pub fn root_at(&self, size: u64) -> Result<Root, MerkleError> {
        if size > self.root.size {
            return Err(MerkleError::OutOfRange(format!(
                "a tree of {} leaves has no prefix of {size}",
                self.root.size
            )));
        }
        Ok(Root {
            size,
            hash: tlog_tiles::tree_hash(size, self)?,
        })
    }

    /// The inclusion proof of leaf `index` (from 0) in the whole tree: the
    /// audit path of RFC 6962 §2.1.1, leaf side first.
    ///
    /// # Errors
    /// `index` is not a leaf of the tree, or the file cannot be read.
    pub fn inclusion(&self, index: u64) -> Result<Vec<Hash>, MerkleError> {
        Ok(tlog_tiles::prove_record(self.root.size, index, self)?)
    }

    /// The consistency proof (RFC 6962 §2.1.2) from the tree's first
    /// `size` leaves to the whole tree.
    ///
    /// # Errors
    /// `size` is 0 or larger than the tree, or the file cannot be read.
    pub fn consistency(&self, size: u64) -> Result<Vec<Hash>, MerkleError> {
        Ok(tlog_tiles::prove_tree(self.root.size, size, self)?)
    }
}

/// Checks that `proof` shows leaf `index`, whose hash is `leaf`, in the
/// tree `root`.
///
/// # Errors
/// [`MerkleError::InvalidProof`] when it does not; `OutOfRange` when
/// `index` is not below the size.
pub fn check_inclusion(
    proof: &[Hash],
    root: Root,
    index: u64,
    leaf: Hash,
) -> Result<(), MerkleError> {
    if index >= root.size {
        return Err(MerkleError::OutOfRange(format!(
            "leaf {index} is not in a tree of {} leaves",
            root.size
        )));
    }
    Ok(tlog_tiles::check_record(
        &proof.to_vec(),
        root.size,
        root.hash,
        index,
        leaf,
    )?)
}

/// Checks that `proof` shows the tree `old` is a prefix of the tree `new`.
///
/// # Errors
/// [`MerkleError::InvalidProof`] when it does not; `OutOfRange` when
/// `old` is empty or larger than `new`.
pub fn check_consistency(proof: &[Hash], old: Root, new: Root) -> Result<(), MerkleError> {
    if old.size == 0 || old.size > new.size {
        return Err(MerkleError::OutOfRange(format!(
            "no consistency proof goes from {} leaves to {}",
            old.size, new.size
        )));
    }
    Ok(tlog_tiles::check_tree(
        &proof.to_vec(),
        new.size,
        new.hash,
        old.size,
        old.hash,
    )?)
}

/// An unnamed temporary file (`O_TMPFILE`), or where the file system
/// cannot make one, a named one removed at once.
fn unnamed_temp() -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let dir = std::env::temp_dir();
    match rustix::fs::open(
        &dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => Ok(File::from(fd)),
        Err(_) => {
            let path = dir.join(format!(
                ".custody-merkle-{}-{}",
                std::process::id(),
                jiff::Timestamp::now().as_nanosecond()
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(file)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of RFC 6962's reference test data (Certificate
    /// Transparency's `merkle_tree_test`, also in Go's `sumdb/tlog`).
    const LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// Their roots at sizes 1 to 8.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn store(n: usize) -> Proofs {
        let mut s = Store::new().unwrap();
        for l in &LEAVES[..n] {
            s.push(l).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn roots_match_rfc6962_reference_data() {
        assert_eq!(Builder::new().root().hash, EMPTY);
        assert_eq!(
            to_hex(&EMPTY),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut b = Builder::new();
        for (i, l) in LEAVES.iter().enumerate() {
            b.push(l);
            assert_eq!(to_hex(&b.root().hash), ROOTS[i], "size {}", i + 1);
            assert_eq!(b.root().size, i as u64 + 1);
        }
        let p = store(8);
        for (i, r) in ROOTS.iter().enumerate() {
            assert_eq!(to_hex(&p.root_at(i as u64 + 1).unwrap().hash), *r);
        }
    }

    #[test]
    fn reference_inclusion_and_consistency_proofs() {
        // RFC 6962 reference paths: leaf 0 of 1 (empty), leaf 0 of 8, leaf
        // 5 of 8, leaf 2 of 3, leaf 1 of 5; consistency 1→8, 6→8, 2→5.
        let p8 = store(8);
        let hex = |v: Vec<Hash>| v.iter().map(to_hex).collect::<Vec<_>>();
        assert!(store(1).inclusion(0).unwrap().is_empty());
        assert_eq!(
            hex(p8.inclusion(0).unwrap()),
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        assert_eq!(
            hex(p8.inclusion(5).unwrap()),
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        );
        assert_eq!(
            hex(store(3).inclusion(2).unwrap()),
            ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]
        );
        assert_eq!(
            hex(store(5).inclusion(1).unwrap()),
            [
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        );
        assert_eq!(
            hex(p8.consistency(1).unwrap()),
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        assert_eq!(
            hex(p8.consistency(6).unwrap()),
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        );
        assert_eq!(
            hex(store(5).consistency(2).unwrap()),
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        );
    }

    #[test]
    fn every_proof_checks_and_every_tamper_fails() {
        for n in 1..=LEAVES.len() {
            let p = store(n);
            let root = p.root();
            for (i, l) in LEAVES[..n].iter().enumerate() {
                let i = i as u64;
                let proof = p.inclusion(i).unwrap();
                check_inclusion(&proof, root, i, leaf_hash(l)).unwrap();
                // Another leaf, another index, another size, a truncated or
                // reordered path: each fails.
                assert!(check_inclusion(&proof, root, i, leaf_hash(b"x")).is_err());
                if n > 1 {
                    let other = (i + 1) % n as u64;
                    assert!(check_inclusion(&proof, root, other, leaf_hash(l)).is_err());
                    // The path of the same leaf in the tree of one leaf fewer.
                    let smaller = store(n - 1);
                    if i < smaller.root().size {
                        let theirs = smaller.inclusion(i).unwrap();
                        assert!(check_inclusion(&theirs, root, i, leaf_hash(l)).is_err());
                    }
                    assert!(
                        check_inclusion(&proof[..proof.len() - 1], root, i, leaf_hash(l)).is_err()
                    );
                }
                if proof.len() > 1 {
                    let mut r = proof.clone();
                    r.swap(0, 1);
                    assert!(check_inclusion(&r, root, i, leaf_hash(l)).is_err());
                }
            }
            for m in 1..=n as u64 {
                let old = p.root_at(m).unwrap();
                let proof = p.consistency(m).unwrap();
                check_consistency(&proof, old, root).unwrap();
                if m < n as u64 {
                    let forged = Root {
                        hash: leaf_hash(b"forged"),
                        ..old
                    };
                    assert!(check_consistency(&proof, forged, root).is_err());
                }
            }
        }
    }

    #[test]
    fn a_tree_fed_to_another_thread_has_the_builders_root() {
        for n in [0u32, 1, 2, 1000, 20_000] {
            let (mut feed, fed) = feed();
            let mut b = Builder::new();
            std::thread::scope(|s| {
                s.spawn(|| build(fed));
                for i in 0..n {
                    let leaf = format!("entry {i} {}", "x".repeat(i as usize % 300));
                    Leaves::push(&mut feed, leaf.as_bytes());
                    b.push(leaf.as_bytes());
                }
                assert_eq!(Leaves::root(&mut feed), b.root(), "{n} leaves");
            });
        }
    }

    #[test]
    fn builder_and_store_agree_at_every_size_to_a_thousand() {
        let mut b = Builder::new();
        let mut s = Store::new().unwrap();
        let mut roots = Vec::new();
        for i in 0u32..1000 {
            b.push(&i.to_be_bytes());
            s.push(&i.to_be_bytes()).unwrap();
            roots.push(b.root());
        }
        // The compact range stays logarithmic: one subtree per set bit.
        assert_eq!(b.stack.len(), 1000u32.count_ones() as usize);
        let p = s.finish().unwrap();
        // The builder's root is tlog's `tree_hash` over the stored hashes
        // at every size.
        for r in 1..=1000u64 {
            assert_eq!(p.root_at(r).unwrap(), roots[r as usize - 1], "size {r}");
        }
        let proof = p.inclusion(617).unwrap();
        check_inclusion(&proof, p.root(), 617, leaf_hash(&617u32.to_be_bytes())).unwrap();
        assert!(p.inclusion(1000).is_err());
        assert!(p.root_at(1001).is_err());
        assert!(check_consistency(&[], p.root(), p.root_at(3).unwrap()).is_err());
    }
}
