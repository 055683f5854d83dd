//! Azure Storage's CRC64 in version 3 manifests, checked against the
//! independent bit-at-a-time reference `tests/crc64_reference.py` (written
//! from the polynomial alone): for plaintext copies, and for the stored
//! objects of encrypted ones (what a Data Box BOM lists).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Sizes around the widths a SIMD CRC folds by, and more than one chunk of
/// the encryption format.
const SIZES: [usize; 12] = [0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 4096, 70_001];

fn tree(ws: &Ws) {
    for (i, size) in SIZES.into_iter().enumerate() {
        ws.file(&format!("d{}/f{size}", i % 3), &bytes(i as u64, size));
    }
    ws.file("check/123456789", b"123456789");
}

/// The reference's CRC64 of each file, by path.
fn reference(files: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crc64_reference.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(files)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, "  ");
            let crc = parts.next().unwrap().to_owned();
            let _size = parts.next().unwrap();
            (PathBuf::from(parts.next().unwrap()), crc)
        })
        .collect()
}

#[test]
fn every_file_carries_the_reference_crc64() {
    let ws = Ws::new();
    tree(&ws);
    ws.transfer(&[]).assert().code(0);
    let m = ws.manifest_json();
    assert_sealed_as(&m, 4);
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), SIZES.len() + 1);
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|f| ws.src.join(f["path"].as_str().unwrap()))
        .collect();
    let want = reference(&paths);
    for (f, p) in files.iter().zip(&paths) {
        assert_eq!(f["crc64"].as_str(), Some(want[p].as_str()), "{p:?}");
    }
    // The catalogue's check value, through the whole pipeline.
    let check = files
        .iter()
        .find(|f| f["path"] == "check/123456789")
        .unwrap();
    assert_eq!(check["crc64"], "ae8b14860a799888");
    assert_eq!(crate::audit::schema_errors(&ws.manifest()), "");
}

#[test]
fn encrypted_objects_carry_the_crc64_of_their_stored_bytes() {
    let ws = Ws::new();
    tree(&ws);
    let key = ws.encryption_key();
    ws.transfer(&["--encrypt-key"]).arg(&key).assert().code(0);
    let m = ws.manifest_json();
    assert_sealed_as(&m, 4);
    let files = m["files"].as_array().unwrap();
    let plain: Vec<PathBuf> = files
        .iter()
        .map(|f| ws.src.join(f["path"].as_str().unwrap()))
        .collect();
    let stored: Vec<PathBuf> = files
        .iter()
        .map(|f| ws.dest.join(f["stored"]["path"].as_str().unwrap()))
        .collect();
    let want = reference(&[plain.clone(), stored.clone()].concat());
    for (f, (p, s)) in files.iter().zip(plain.iter().zip(&stored)) {
        assert_eq!(f["crc64"].as_str(), Some(want[p].as_str()), "{p:?}");
        assert_eq!(
            f["stored"]["crc64"].as_str(),
            Some(want[s].as_str()),
            "{s:?}"
        );
        assert_ne!(want[p], want[s]);
    }
    assert_eq!(crate::audit::schema_errors(&ws.manifest()), "");
}
