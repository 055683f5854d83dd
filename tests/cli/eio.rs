//! Real I/O errors, injected: the source or the destination is a FUSE
//! file system over a real directory (tests/support/faultfs.py) that
//! returns EIO, as a failing disk or controller does, on a chosen read,
//! stat, write, fsync or rename. Whatever fails, the file that met it
//! fails alone (exit 3, named, its class recorded), nothing false is
//! recorded, the ledger still verifies, and the same command completes
//! once the disk works again; a verify never calls an unreadable object
//! verified.

use std::path::Path;

use serde_json::json;

use crate::support::faultfs::FaultFs;
use crate::support::{Ws, assert_same_tree, bytes, json, landed_rows, stderr};

const BIG: usize = 256 << 10;

/// Three files; `PAT1/IM2.dcm` is the only one past 64 KiB.
fn files(at: &Path) {
    for (rel, data) in [
        ("PAT1/IM1.dcm", bytes(1, 4096)),
        ("PAT1/IM2.dcm", bytes(2, BIG)),
        ("PAT2/IM3.dcm", bytes(3, 10)),
    ] {
        let p = at.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// A transfer that must exit 3 with one failure: `PAT1/IM2.dcm`, of
/// `class`, with the OS's EIO text, named on stderr. Its summary.
fn fails_im2_alone(ws: &Ws, name: &str, class: &str) -> serde_json::Value {
    let out = ws.transfer(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["status"], "incomplete", "{name}: {s}");
    assert_eq!(s["sealed"], serde_json::Value::Null, "{name}: {s}");
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{name}: {s}");
    let f = &failures[0];
    assert!(
        f["path"].as_str().unwrap().ends_with("PAT1/IM2.dcm"),
        "{name}: {f}"
    );
    assert_eq!(f["class"], class, "{name}: {f}");
    assert!(
        f["error"].as_str().unwrap().contains("Input/output error"),
        "{name}: {f}"
    );
    assert!(
        stderr(&out).contains("PAT1/IM2.dcm"),
        "{name}: {}",
        stderr(&out)
    );
    s
}

#[test]
fn a_source_that_fails_a_read_or_a_stat_fails_that_file_alone() {
    for (name, rule) in [
        (
            "read part-way",
            json!([{"op": "read", "path": "PAT1/IM2.dcm", "after": 65536}]),
        ),
        ("stat", json!([{"op": "getattr", "path": "PAT1/IM2.dcm"}])),
    ] {
        let ws = Ws::new();
        let real = ws.root().join("real-src");
        files(&real);
        let fs = FaultFs::mount(&real, &ws.src);
        fs.fail(rule);
        let s = fails_im2_alone(&ws, name, "source_unreadable");
        // Nothing false: the two others landed and are recorded, the
        // failed one is neither landed nor recorded.
        assert_eq!(s["files_copied"], 2, "{name}: {s}");
        assert_eq!(landed_rows(&ws.ledger), 2, "{name}");
        assert!(!ws.dest.join("PAT1/IM2.dcm").exists(), "{name}");
        ws.custody(&["ledger", "verify"]).assert().code(0);
        // The disk works again: the same command copies just that file.
        fs.heal();
        let s = ws.transfer_json(&[], 0);
        assert_eq!(
            (s["files_copied"].as_u64(), s["files_skipped"].as_u64()),
            (Some(1), Some(2)),
            "{name}: {s}"
        );
        assert_eq!(s["verify"]["files_verified"], 3, "{name}: {s}");
        drop(fs);
        assert_same_tree(&real, &ws.dest);
        ws.custody(&["ledger", "verify"]).assert().code(0);
    }
}

#[test]
fn a_destination_that_fails_a_write_an_fsync_or_a_rename_records_nothing_false() {
    for (name, rule) in [
        (
            "write",
            json!([{"op": "write", "contains": ".custody-partial.", "after": 65536}]),
        ),
        (
            "fsync",
            json!([{"op": "fsync", "contains": ".custody-partial.", "larger_than": 65536}]),
        ),
        ("rename", json!([{"op": "rename", "path": "PAT1/IM2.dcm"}])),
    ] {
        let ws = Ws::new();
        files(&ws.src);
        let real = ws.root().join("real-dest");
        std::fs::create_dir_all(&real).unwrap();
        let fs = FaultFs::mount(&real, &ws.dest);
        fs.fail(rule);
        fails_im2_alone(&ws, name, "destination");
        assert_eq!(
            landed_rows(&ws.ledger),
            2,
            "{name}: the failed file is not recorded"
        );
        assert!(
            !real.join("PAT1/IM2.dcm").exists(),
            "{name}: never under its name"
        );
        ws.custody(&["ledger", "verify"]).assert().code(0);
        fs.heal();
        let s = ws.transfer_json(&[], 0);
        assert_eq!(s["files_copied"], 1, "{name}: {s}");
        assert_eq!(s["verify"]["files_verified"], 3, "{name}: {s}");
        drop(fs);
        assert_same_tree(&ws.src, &real);
        let m = ws.manifest();
        ws.custody(&["verify"])
            .arg(&m)
            .arg(&real)
            .arg("--allowed-signers")
            .arg(ws.signers())
            .assert()
            .code(0);
        ws.custody(&["ledger", "verify"]).assert().code(0);
    }
}

#[test]
fn a_verify_that_cannot_read_an_object_reports_it_unreadable_never_verified() {
    let ws = Ws::new();
    files(&ws.src);
    let real = ws.root().join("real-dest");
    std::fs::create_dir_all(&real).unwrap();
    let fs = FaultFs::mount(&real, &ws.dest);
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    fs.fail(json!([{"op": "read", "path": "PAT1/IM2.dcm", "after": 65536}]));
    let out = ws
        .custody(&["--json", "verify"])
        .arg(&m)
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["result"], "fail", "{v}");
    let r = &v["report"];
    assert_eq!(r["files_verified"], 2, "{v}");
    assert_eq!(r["counts"]["unreadable"], 1, "{v}");
    let d = &r["discrepancies"].as_array().unwrap()[0];
    assert_eq!(
        (d["class"].as_str(), d["path"].as_str()),
        (Some("unreadable"), Some("PAT1/IM2.dcm")),
        "{v}"
    );
    assert!(
        d["detail"].as_str().unwrap().contains("Input/output error"),
        "{v}"
    );
    // Healed, the same verify passes.
    fs.heal();
    ws.custody(&["verify"])
        .arg(&m)
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .assert()
        .code(0);
}
