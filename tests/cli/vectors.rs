//! The encryption format's test vectors (`tests/vectors/encryption/`), one
//! test each, in the style of age's test kit: a text header stating the
//! key, the plaintext and the expected outcome, a blank line, then the
//! object's bytes.
//!
//! Regenerate (only when the format changes, which means a new version):
//! `CUSTODY_WRITE_VECTORS=1 cargo test --test cli vectors::write -- --ignored`

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use custody::crypt::{CryptError, DecryptReader, EncryptWriter, EncryptionKey, HEADER_LEN};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/encryption")
}

const KEY: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
const CHUNK: u32 = 64;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn encrypt(pt: &[u8], salt: u8) -> Vec<u8> {
    let mut w = EncryptWriter::with_salt(
        Vec::new(),
        &EncryptionKey::from_bytes(KEY),
        CHUNK,
        [salt; 32],
    )
    .unwrap();
    w.write_all(pt).unwrap();
    w.finish().unwrap()
}

fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

struct Vector {
    expect: String,
    key: [u8; 32],
    plaintext: Vec<u8>,
    body: Vec<u8>,
}

fn read_vector(name: &str) -> Vector {
    let raw = std::fs::read(dir().join(name)).unwrap();
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("blank line");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let field = |k: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("{name}: no {k}"))
            .to_owned()
    };
    Vector {
        expect: field("expect"),
        key: unhex(&field("key")).try_into().unwrap(),
        plaintext: unhex(
            head.lines()
                .find_map(|l| l.strip_prefix("plaintext: "))
                .unwrap_or(""),
        ),
        body: raw[split + 2..].to_vec(),
    }
}

fn run(name: &str) {
    let v = read_vector(name);
    let key = EncryptionKey::from_bytes(v.key);
    let mut out = Vec::new();
    let got = DecryptReader::new(&v.body[..], &key).and_then(|mut r| r.read_to_end(&mut out));
    let outcome = match &got {
        Ok(_) => "success",
        Err(e) => match CryptError::from_io(e) {
            Some(CryptError::Header(_)) => "header failure",
            Some(CryptError::WrongKey { .. }) => "wrong key",
            Some(CryptError::Chunk { .. }) => "chunk failure",
            Some(CryptError::Truncated) => "truncated",
            _ => panic!("{name}: unexpected error {e}"),
        },
    };
    assert_eq!(outcome, v.expect, "{name}: {got:?}");
    if v.expect == "success" {
        assert_eq!(out, v.plaintext, "{name}: plaintext");
        // The bytes are pinned: encrypting again with the vector's salt and
        // chunk size reproduces them exactly.
        let salt = v.body[32];
        assert_eq!(
            encrypt(&v.plaintext, salt),
            v.body,
            "{name}: ciphertext bytes"
        );
    }
}

macro_rules! vectors {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run(stringify!($name)); })*
        const ALL: &[&str] = &[$(stringify!($name)),*];
    };
}

vectors!(
    empty,
    one_byte,
    one_chunk,
    one_chunk_plus_one,
    several_chunks,
    last_chunk_dropped,
    header_only,
    cut_mid_chunk,
    chunks_swapped,
    last_chunk_moved_earlier,
    chunk_appended,
    chunk_bit_flipped,
    header_bit_flipped,
    chunk_size_changed,
    header_from_another_object,
    wrong_key,
    bad_magic,
    chunk_size_out_of_range,
    short_header,
);

#[test]
fn every_vector_file_is_run() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
#[ignore = "writes the vector files; run only when the format changes"]
fn write() {
    if std::env::var_os("CUSTODY_WRITE_VECTORS").is_none() {
        return;
    }
    let several = encrypt(&plaintext(200), 0x55); // chunks of 80 bytes: 4 (last 8 + 16)
    let c = |i: usize| HEADER_LEN + i * 80;
    // (file name, expected outcome, comment, plaintext, object bytes, key)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<u8>,
        Vec<u8>,
        [u8; 32],
    );
    let mut cases: Vec<Case> = vec![
        (
            "empty",
            "success",
            "empty plaintext: one final chunk holding only a tag",
            vec![],
            encrypt(&[], 0x11),
            KEY,
        ),
        (
            "one_byte",
            "success",
            "one byte",
            plaintext(1),
            encrypt(&plaintext(1), 0x22),
            KEY,
        ),
        (
            "one_chunk",
            "success",
            "exactly one chunk: no empty chunk follows",
            plaintext(64),
            encrypt(&plaintext(64), 0x33),
            KEY,
        ),
        (
            "one_chunk_plus_one",
            "success",
            "one chunk plus one byte",
            plaintext(65),
            encrypt(&plaintext(65), 0x44),
            KEY,
        ),
        (
            "several_chunks",
            "success",
            "200 bytes: three full chunks and a final 8-byte chunk",
            plaintext(200),
            several.clone(),
            KEY,
        ),
    ];
    let mut neg = |name, expect, comment, body: Vec<u8>, key| {
        cases.push((name, expect, comment, vec![], body, key))
    };
    neg(
        "last_chunk_dropped",
        "chunk failure",
        "several_chunks without its final chunk: chunk 2 is not marked last",
        several[..c(3)].to_vec(),
        KEY,
    );
    neg(
        "header_only",
        "truncated",
        "several_chunks cut back to its header",
        several[..HEADER_LEN].to_vec(),
        KEY,
    );
    neg(
        "cut_mid_chunk",
        "chunk failure",
        "several_chunks cut in the middle of chunk 1",
        several[..c(1) + 40].to_vec(),
        KEY,
    );
    let mut swapped = several.clone();
    swapped[c(0)..c(1)].copy_from_slice(&several[c(1)..c(2)]);
    swapped[c(1)..c(2)].copy_from_slice(&several[c(0)..c(1)]);
    neg(
        "chunks_swapped",
        "chunk failure",
        "chunks 0 and 1 swapped",
        swapped,
        KEY,
    );
    let mut early = several[..c(1)].to_vec();
    early.extend_from_slice(&several[c(3)..]);
    neg(
        "last_chunk_moved_earlier",
        "chunk failure",
        "the final chunk moved to position 1",
        early,
        KEY,
    );
    let mut appended = several.clone();
    appended.extend_from_slice(&several[c(1)..c(2)]);
    neg(
        "chunk_appended",
        "chunk failure",
        "a copy of chunk 1 appended after the final chunk",
        appended,
        KEY,
    );
    let mut flipped = several.clone();
    flipped[c(2) + 5] ^= 0x01;
    neg(
        "chunk_bit_flipped",
        "chunk failure",
        "one bit of chunk 2 flipped",
        flipped,
        KEY,
    );
    let mut hflip = several.clone();
    hflip[40] ^= 0x01;
    neg(
        "header_bit_flipped",
        "chunk failure",
        "one bit of the header's salt flipped",
        hflip,
        KEY,
    );
    let mut resized = several.clone();
    resized[15] = 80;
    neg(
        "chunk_size_changed",
        "chunk failure",
        "chunk size field changed from 64 to 80",
        resized,
        KEY,
    );
    let other = encrypt(&plaintext(200), 0x66);
    let mut foreign = other[..HEADER_LEN].to_vec();
    foreign.extend_from_slice(&several[HEADER_LEN..]);
    neg(
        "header_from_another_object",
        "chunk failure",
        "the header of another object under the same key",
        foreign,
        KEY,
    );
    let mut wrong = KEY;
    wrong[0] ^= 0xff;
    neg(
        "wrong_key",
        "wrong key",
        "several_chunks opened with another key (its key id differs)",
        several.clone(),
        wrong,
    );
    let mut magic = several.clone();
    magic[0] = b'X';
    neg(
        "bad_magic",
        "header failure",
        "magic bytes changed",
        magic,
        KEY,
    );
    let mut range = several.clone();
    range[12..16].copy_from_slice(&32u32.to_be_bytes());
    neg(
        "chunk_size_out_of_range",
        "header failure",
        "chunk size 32, below the minimum of 64",
        range,
        KEY,
    );
    neg(
        "short_header",
        "header failure",
        "fewer bytes than a header",
        several[..40].to_vec(),
        KEY,
    );
    for (name, expect, comment, pt, body, key) in cases {
        let mut f = std::fs::File::create(dir().join(name)).unwrap();
        write!(
            f,
            "expect: {expect}\ncomment: {comment}\nkey: {}\n",
            hex(&key)
        )
        .unwrap();
        if expect == "success" {
            writeln!(f, "plaintext: {}", hex(&pt)).unwrap();
        }
        f.write_all(b"\n").unwrap();
        f.write_all(&body).unwrap();
    }
}

#[test]
fn an_independent_implementation_agrees_on_every_vector() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/reference_decrypt.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}\n(scripts/test installs the `cryptography` and `blake3` packages)",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all vectors agree"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok  ")).count(),
        ALL.len()
    );
}

/// Every vector through `custody decrypt`, as a user would meet it: the
/// exact exit code, the object named, nothing under its final name.
#[test]
fn decrypt_command_gives_each_vector_its_exit_code() {
    let ws = crate::support::Ws::new();
    for name in ALL {
        let v = read_vector(name);
        let src = ws.root().join(format!("in-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join(format!("{name}.custody-enc")), &v.body).unwrap();
        let key = ws.root().join(format!("{name}.key"));
        std::fs::write(
            &key,
            format!(
                "custody-encryption-key v1\nid {}\nkey {}\n",
                EncryptionKey::from_bytes(v.key).id_hex(),
                hex(&v.key)
            ),
        )
        .unwrap();
        crate::support::chmod(&key, 0o600);
        let out_dir = ws.root().join(format!("out-{name}"));
        let out = ws
            .custody(&["decrypt"])
            .arg(&src)
            .arg(&out_dir)
            .arg("--decrypt-key")
            .arg(&key)
            .output()
            .unwrap();
        let expected = match v.expect.as_str() {
            "success" => 0,
            "wrong key" => 2,
            _ => 1,
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(expected), "{name}: {err}");
        let restored = out_dir.join(name);
        if expected == 0 {
            assert_eq!(std::fs::read(&restored).unwrap(), v.plaintext, "{name}");
        } else {
            assert!(!restored.exists(), "{name}: left plaintext under its name");
            let named = if expected == 2 {
                "does not open"
            } else {
                &format!("{name}.custody-enc: ")
            };
            assert!(err.contains(named), "{name}: {err}");
        }
    }
}

/// The Merkle tree vectors (`tests/vectors/merkle/rfc6962.json`): custody's
/// tree reproduces every root, inclusion proof and consistency proof
/// exactly, checks each of them, and Python's independent verifier
/// (`tests/proof_reference.py`, RFC 9162's algorithms) accepts them too.
#[test]
fn merkle_vectors_are_reproduced_and_checked_by_both_implementations() {
    use custody::merkle::{self, Store};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/merkle/rfc6962.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let leaves: Vec<Vec<u8>> = v["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| unhex(l.as_str().unwrap()))
        .collect();
    let roots: Vec<&str> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let tree = |n: usize| {
        let mut s = Store::new().unwrap();
        for l in &leaves[..n] {
            s.push(l).unwrap();
        }
        s.finish().unwrap()
    };
    assert_eq!(merkle::to_hex(&merkle::EMPTY), roots[0]);
    for (n, want) in roots.iter().enumerate().skip(1) {
        assert_eq!(merkle::to_hex(&tree(n).root().hash), *want, "root of {n}");
    }
    let hashes = |p: &serde_json::Value| -> Vec<merkle::Hash> {
        p.as_array()
            .unwrap()
            .iter()
            .map(|h| merkle::from_hex(h.as_str().unwrap()).unwrap())
            .collect()
    };
    for c in v["inclusion"].as_array().unwrap() {
        let (n, i) = (c["size"].as_u64().unwrap(), c["index"].as_u64().unwrap());
        let t = tree(n as usize);
        let proof = t.inclusion(i).unwrap();
        assert_eq!(proof, hashes(&c["proof"]), "inclusion of {i} in {n}");
        let leaf = merkle::leaf_hash(&leaves[i as usize]);
        merkle::check_inclusion(&proof, t.root(), i, leaf).unwrap();
    }
    for c in v["consistency"].as_array().unwrap() {
        let (a, b) = (c["from"].as_u64().unwrap(), c["to"].as_u64().unwrap());
        let t = tree(b as usize);
        let proof = t.consistency(a).unwrap();
        assert_eq!(proof, hashes(&c["proof"]), "consistency from {a} to {b}");
        merkle::check_consistency(&proof, t.root_at(a).unwrap(), t.root()).unwrap();
    }
    let py = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proof_reference.py"))
        .arg("vectors")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stdout)
    );
}
