//! Encryption at rest, driven through the binary: encrypted transfer,
//! verify with and without the key, decrypt, tampering, bad keys, and the
//! key staying out of every output.

use std::path::{Path, PathBuf};

use crate::support::*;

const CHUNK: usize = 64 * 1024;

fn encrypted_transfer(ws: &Ws) -> (PathBuf, serde_json::Value) {
    let key = ws.encryption_key();
    let out = ws
        .transfer(&["--encrypt-key"])
        .arg(&key)
        .assert()
        .code(0)
        .get_output()
        .clone();
    (key, json(&out))
}

/// `custody decrypt SRC OUT --decrypt-key KEY [--manifest M --allowed-signers S]`.
fn decrypt(
    ws: &Ws,
    src: &Path,
    out: &Path,
    key: &Path,
    manifest: Option<&Path>,
) -> assert_cmd::Command {
    let mut c = ws.custody(&["decrypt"]);
    c.arg(src).arg(out).arg("--decrypt-key").arg(key);
    if let Some(m) = manifest {
        c.arg("--manifest")
            .arg(m)
            .arg("--allowed-signers")
            .arg(ws.signers());
    }
    c
}

fn verify_with(ws: &Ws, m: &Path, key: Option<&Path>) -> assert_cmd::assert::Assert {
    let mut c = ws.verify(m, &[]);
    if let Some(k) = key {
        c.arg("--decrypt-key").arg(k);
    }
    c.assert()
}

#[test]
fn encrypted_round_trip_at_every_size() {
    let ws = Ws::new();
    ws.file("zero", b"");
    ws.file("one", b"x");
    ws.file("exact/chunk", &bytes(1, CHUNK));
    ws.file("exact/chunk-plus-one", &bytes(2, CHUNK + 1));
    ws.file("many/chunks", &bytes(3, 10 * CHUNK + 123));
    ws.file("large/whole-slide.svs", &bytes(4, 200 << 20));
    let (key, s) = encrypted_transfer(&ws);
    assert_eq!(s["files_copied"], 6);
    assert_eq!(s["verify"]["files_verified"], 6);

    // Only ciphertext landed, under the documented names.
    let landed = files_under(&ws.dest);
    assert!(
        landed.iter().all(|f| f.ends_with(".custody-enc")),
        "{landed:?}"
    );
    let whole = std::fs::read(ws.dest.join("many/chunks.custody-enc")).unwrap();
    assert_eq!(&whole[..8], b"CSTDYENC");
    assert_eq!(whole.len(), 64 + 10 * CHUNK + 123 + 11 * 16);

    // The manifest proves both the plaintext and the stored bytes.
    let m = ws.manifest();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_sealed_as(&v, 4);
    assert_eq!(v["encryption"]["scheme"], "custody-stream-aes256gcm/1");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let id = key_text
        .lines()
        .find_map(|l| l.strip_prefix("id "))
        .unwrap();
    assert_eq!(v["encryption"]["key_id"], id);
    for f in v["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let plain = std::fs::read(ws.src.join(path)).unwrap();
        let stored = std::fs::read(ws.dest.join(format!("{path}.custody-enc"))).unwrap();
        assert_eq!(f["blake3"], blake3::hash(&plain).to_hex().as_str());
        assert_eq!(
            f["stored"]["blake3"],
            blake3::hash(&stored).to_hex().as_str()
        );
        assert_eq!(f["stored"]["size"], stored.len());
    }
    assert_eq!(crate::audit::schema_errors(&m), "");
    ws.custody(&["audit"])
        .arg(&m)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .assert()
        .code(0);
    assert!(
        ssh_keygen_verify(&ws.signers(), IDENTITY, &m)
            .status
            .success()
    );

    // Without the key: stored bytes. With it: plaintext too, in one read.
    verify_with(&ws, &m, None).code(0);
    let out = ws
        .custody(&["--json", "verify"])
        .arg(&m)
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .arg("--decrypt-key")
        .arg(&key)
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert_eq!(json(&out)["report"]["plaintext_verified"], 6);

    // decrypt restores the source byte for byte.
    let restored = ws.root().join("restored");
    decrypt(&ws, &ws.dest, &restored, &key, Some(&m))
        .assert()
        .code(0);
    assert_same_tree(&ws.src, &restored);
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

fn small_encrypted() -> (Ws, PathBuf, PathBuf) {
    let ws = Ws::new();
    for i in 0..4 {
        ws.file(&format!("s/IM{i}"), &bytes(i, 3 * CHUNK + 77));
    }
    let (key, _) = encrypted_transfer(&ws);
    let m = ws.manifest();
    (ws, key, m)
}

#[test]
fn verify_without_the_key_catches_a_flipped_ciphertext_bit() {
    let (ws, key, m) = small_encrypted();
    let p = ws.dest.join("s/IM2.custody-enc");
    let mut b = std::fs::read(&p).unwrap();
    b[70_000] ^= 0x04;
    std::fs::write(&p, b).unwrap();
    let out = verify_with(&ws, &m, None).code(1).get_output().clone();
    assert!(
        stdout(&out).contains("CHANGED    s/IM2.custody-enc: content differs"),
        "{}",
        stdout(&out)
    );
    let out = verify_with(&ws, &m, Some(&key))
        .code(1)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("s/IM2.custody-enc: does not decrypt: chunk 1 failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_with_the_key_catches_an_object_re_encrypted_from_other_plaintext() {
    let (ws, key, m) = small_encrypted();
    // Someone with the key replaces IM1 with a valid encryption of other
    // plaintext (same size), through the tool itself.
    let evil = ws.root().join("evil");
    std::fs::create_dir_all(evil.join("src/s")).unwrap();
    std::fs::write(evil.join("src/s/IM1"), bytes(99, 3 * CHUNK + 77)).unwrap();
    assert_cmd::Command::cargo_bin("custody")
        .unwrap()
        .arg("--ledger")
        .arg(evil.join("l.db"))
        .arg("--manifest-dir")
        .arg(evil.join("m"))
        .arg("transfer")
        .arg(evil.join("src"))
        .arg(evil.join("dest"))
        .arg("--signing-key")
        .arg(ws.key())
        .arg("--encrypt-key")
        .arg(&key)
        .assert()
        .code(0);
    std::fs::copy(
        evil.join("dest/s/IM1.custody-enc"),
        ws.dest.join("s/IM1.custody-enc"),
    )
    .unwrap();
    let out = verify_with(&ws, &m, Some(&key))
        .code(1)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("CHANGED    s/IM1.custody-enc"),
        "{}",
        stdout(&out)
    );
    let out = decrypt(&ws, &ws.dest, &ws.root().join("restored"), &key, Some(&m))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("s/IM1.custody-enc: plaintext differs from the manifest"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.root().join("restored/s/IM1").exists());
}

#[test]
fn decrypt_of_tampered_or_truncated_objects_leaves_nothing_under_their_names() {
    let (ws, key, _m) = small_encrypted();
    let flip = ws.dest.join("s/IM0.custody-enc");
    let mut b = std::fs::read(&flip).unwrap();
    b[100] ^= 0x80;
    std::fs::write(&flip, b).unwrap();
    let cut = ws.dest.join("s/IM3.custody-enc");
    let b = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &b[..64 + 2 * (CHUNK + 16)]).unwrap(); // final chunk dropped
    let restored = ws.root().join("restored");
    let out = decrypt(&ws, &ws.dest, &restored, &key, None)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = stderr(&out);
    assert!(
        err.contains("s/IM0.custody-enc: does not decrypt: chunk 0 failed authentication"),
        "{err}"
    );
    assert!(
        err.contains("s/IM3.custody-enc: does not decrypt: chunk 1 failed authentication"),
        "{err}"
    );
    assert_eq!(files_under(&restored), ["s/IM1", "s/IM2"]);
}

#[test]
fn bad_keys_are_refused_with_exit_2() {
    let (ws, key, m) = small_encrypted();
    // Group-readable key file.
    chmod(&key, 0o640);
    let out = ws
        .transfer(&["--encrypt-key"])
        .arg(&key)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("accessible by group or others (mode 0640)"),
        "{}",
        stderr(&out)
    );
    chmod(&key, 0o600);
    // Another key.
    let other = ws.root().join("other.key");
    ws.custody(&["keygen", "--encryption", "--out"])
        .arg(&other)
        .assert()
        .code(0);
    let out = verify_with(&ws, &m, Some(&other))
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("was encrypted with key"),
        "{}",
        stderr(&out)
    );
    let out = decrypt(&ws, &ws.dest, &ws.root().join("r"), &other, None)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("encrypted with key"),
        "{}",
        stderr(&out)
    );
    assert!(files_under(&ws.root().join("r")).is_empty());
    // Not a key file.
    let junk = ws.root().join("junk.key");
    std::fs::write(&junk, "hello").unwrap();
    chmod(&junk, 0o600);
    let out = ws
        .transfer(&["--encrypt-key"])
        .arg(&junk)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("not a custody encryption key file"),
        "{}",
        stderr(&out)
    );
    // keygen refuses to overwrite.
    ws.custody(&["keygen", "--encryption", "--out"])
        .arg(&key)
        .assert()
        .code(2);
}

#[test]
fn an_encrypted_run_cannot_be_resumed_without_its_key() {
    let ws = Ws::new();
    ws.file("a", b"a");
    let growing = ws.file("growing", &bytes(5, 32 << 20));
    let key = ws.encryption_key();
    let grower = Grower::start(&growing);
    ws.transfer(&["--encrypt-key"]).arg(&key).assert().code(3);
    drop(grower);
    let out = ws.transfer(&[]).assert().code(2).get_output().clone();
    assert!(
        stderr(&out).contains("was started with encryption key"),
        "{}",
        stderr(&out)
    );
    let s = json(
        &ws.transfer(&["--encrypt-key"])
            .arg(&key)
            .assert()
            .code(0)
            .get_output()
            .clone(),
    );
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["files_skipped"], 1);
}

#[test]
fn the_key_never_appears_in_any_output_or_file() {
    let ws = Ws::new();
    ws.file("a/b", &bytes(1, 100_000));
    let key = ws.encryption_key();
    let text = std::fs::read_to_string(&key).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .unwrap()
        .to_owned();
    let mut seen = String::new();
    let mut run = |c: &mut assert_cmd::Command| {
        let o = c.assert().get_output().clone();
        seen.push_str(&stdout(&o));
        seen.push_str(&stderr(&o));
    };
    run(ws
        .custody(&["-vv", "transfer"])
        .arg(&ws.src)
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(ws.key())
        .arg("--encrypt-key")
        .arg(&key));
    let m = ws.manifest();
    run(ws.verify(&m, &["-vv", "--decrypt-key"]).arg(&key));
    run(ws
        .custody(&["-vv", "--json", "decrypt"])
        .arg(&ws.dest)
        .arg(ws.root().join("r"))
        .arg("--decrypt-key")
        .arg(&key));
    run(&mut ws.custody(&["-vv", "log"]));
    assert!(
        seen.contains("transfer started"),
        "-vv logging is on: {seen}"
    );
    for form in [secret.clone(), secret.to_uppercase()] {
        assert!(!seen.contains(&form), "key printed");
        for f in [&m, &ws.ledger] {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&form),
                "key in {f:?}"
            );
        }
    }
}
