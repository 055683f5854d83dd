//! `custody rollback`: exactly what a manifest landed goes, only while it
//! is still what landed; nothing else is touched. On a share and on
//! Azurite.

use std::path::Path;

use crate::support::azurite::{Azurite, with_key};
use crate::support::*;

/// `custody --json rollback MANIFEST DEST --allowed-signers … EXTRA`.
fn rollback(ws: &Ws, m: &Path, dest: &str, extra: &[&str]) -> assert_cmd::Command {
    let mut c = ws.custody(&["--json", "rollback"]);
    c.arg(m)
        .arg(dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .args(extra);
    c
}

fn run(c: &mut assert_cmd::Command, code: i32) -> serde_json::Value {
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    json(&out)
}

/// Paths and classes of what a rollback left.
fn left(r: &serde_json::Value) -> Vec<(String, String)> {
    r["report"]["left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_owned(),
                l["class"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn rolled_back_events(ws: &Ws, id: &str) -> Vec<serde_json::Value> {
    let out = ws
        .custody(&["--json", "log", "--manifest", id])
        .output()
        .unwrap();
    json(&out)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "rolled_back")
        .cloned()
        .collect()
}

#[test]
fn on_a_share_only_unchanged_landed_files_go_and_the_rollback_is_recorded() {
    let ws = Ws::new();
    ws.file("a/IM1", b"one");
    ws.file("a/IM2", b"two");
    ws.file("b/IM3", b"three");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    let id = ws.manifest_json()["id"].as_str().unwrap().to_owned();
    // Since landing: a file nobody should lose beside them, one elsewhere,
    // and one landed file changed.
    std::fs::write(ws.dest.join("a/notes.txt"), b"keep me").unwrap();
    std::fs::create_dir_all(ws.dest.join("other")).unwrap();
    std::fs::write(ws.dest.join("other/keep.dcm"), b"keep me too").unwrap();
    std::fs::write(ws.dest.join("b/IM3"), b"THREE").unwrap();
    let dest = ws.dest.display().to_string();

    // A dry run says what would go, and removes nothing.
    let before = files_under(&ws.dest);
    let r = run(&mut rollback(&ws, &m, &dest, &[]), 1);
    assert_eq!(r["result"], "fail");
    assert_eq!(r["report"]["dry_run"], true);
    assert_eq!(
        (
            r["report"]["removed"].clone(),
            r["report"]["bytes_removed"].clone()
        ),
        (2.into(), 6.into())
    );
    assert_eq!(left(&r), [("b/IM3".into(), "changed".into())]);
    assert_eq!(files_under(&ws.dest), before);
    let out = ws
        .custody(&["rollback"])
        .arg(&m)
        .arg(&dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("CHANGED    b/IM3: not what landed: expected 5 bytes with blake3 "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "DRY RUN: would remove 2 of 3 objects (6 B) from {dest}; 0 already gone; 1 left; \
             run it again with --yes"
        )),
        "{text}"
    );
    assert!(
        rolled_back_events(&ws, &id).is_empty(),
        "a dry run records nothing"
    );

    // Acting needs a key to sign the record.
    let out = rollback(&ws, &m, &dest, &["--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("give --signing-key"),
        "{}",
        stderr(&out)
    );

    let key = ws.key().display().to_string();
    let r = run(
        &mut rollback(&ws, &m, &dest, &["--yes", "--signing-key", &key]),
        1,
    );
    assert_eq!(r["report"]["dry_run"], false);
    assert_eq!(r["report"]["removed"], 2);
    assert_eq!(left(&r), [("b/IM3".into(), "changed".into())]);
    assert_eq!(
        files_under(&ws.dest),
        ["a/notes.txt", "b/IM3", "other/keep.dcm"],
        "only the unchanged landed files went"
    );
    let events = rolled_back_events(&ws, &id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["seq"], r["event"]);
    let p = &events[0]["payload"];
    assert_eq!(
        (p["removed"].clone(), p["left"].clone(), p["result"].clone()),
        (2.into(), 1.into(), "fail".into())
    );

    // The changed file put back as it landed: it goes too, and the
    // directory it leaves empty with it; the others are already gone.
    std::fs::write(ws.dest.join("b/IM3"), b"three").unwrap();
    let r = run(
        &mut rollback(&ws, &m, &dest, &["--yes", "--signing-key", &key]),
        0,
    );
    assert_eq!(
        (
            r["report"]["removed"].clone(),
            r["report"]["missing"].clone()
        ),
        (1.into(), 2.into())
    );
    assert_eq!(
        r["report"]["missing_paths"],
        serde_json::json!(["a/IM1", "a/IM2"])
    );
    assert!(!ws.dest.join("b").exists(), "the emptied directory went");
    assert!(ws.dest.is_dir(), "the destination root stays");
    assert_eq!(files_under(&ws.dest), ["a/notes.txt", "other/keep.dcm"]);
    // Both records are signed and chained: the ledger checks out.
    ws.custody(&["ledger", "verify", "--allowed-signers"])
        .arg(ws.signers())
        .assert()
        .code(0);
    assert_eq!(rolled_back_events(&ws, &id).len(), 2);
}

#[test]
fn a_rollback_waits_for_a_running_transfer_and_refuses_a_forged_manifest() {
    let ws = Ws::new();
    ws.file("IM1", b"one");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    let dest = ws.dest.display().to_string();
    let key = ws.key().display().to_string();
    // A transfer into the same destination is running (its lock held).
    let mut running = ws.spawn_slow_transfer(300);
    wait_while_running(&mut running, "the transfer took its lock", || {
        std::fs::read_dir(ws.root())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".lock"))
            && landed_rows(&ws.ledger) > 1
    });
    let out = rollback(&ws, &m, &dest, &["--yes", "--signing-key", &key])
        .output()
        .unwrap();
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was removed"),
        "{}",
        stderr(&out)
    );
    assert!(ws.dest.join("IM1").exists());

    // A manifest whose bytes changed after signing removes nothing.
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replacen("\"IM1\"", "\"IM2\"", 1)).unwrap();
    let out = rollback(&ws, &m, &dest, &["--yes", "--signing-key", &key])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(ws.dest.join("IM1").exists());
}

#[test]
fn in_blob_storage_a_replaced_blob_and_a_stranger_are_left() {
    let ws = Ws::new();
    let az = Azurite::start(&ws.root().join("azurite"));
    ws.file("s1/IM1", &bytes(1, 5000));
    ws.file("s1/IM2", &bytes(2, 5000));
    ws.file("s2/IM3", &bytes(3, 5000));
    let url = az.url("pacs/wave-1");
    let mut t = ws.custody(&["--json", "transfer"]);
    t.arg(&ws.src).arg(&url).arg("--signing-key").arg(ws.key());
    with_key(t).assert().code(0);
    let m = ws.manifest();
    // Another client replaces one landed blob and adds one of its own.
    az.put("pacs", "wave-1/s2/IM3", b"replaced");
    az.put("pacs", "wave-1/s1/stranger", b"not ours");

    let r = run(&mut with_key(rollback(&ws, &m, &url, &[])), 1);
    assert_eq!(r["report"]["removed"], 2);
    assert_eq!(az.names("pacs").len(), 4, "a dry run removes nothing");

    let key = ws.key().display().to_string();
    let r = run(
        &mut with_key(rollback(&ws, &m, &url, &["--yes", "--signing-key", &key])),
        1,
    );
    assert_eq!(r["report"]["removed"], 2);
    assert_eq!(r["report"]["bytes_removed"], 10_000);
    assert_eq!(left(&r), [("s2/IM3".into(), "changed".into())]);
    assert_eq!(az.names("pacs"), ["wave-1/s1/stranger", "wave-1/s2/IM3"]);
}
