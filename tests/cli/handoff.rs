//! `custody handoff` and `custody log --export`: signed, chained records
//! of media movements, and the timeline an auditor checks without the
//! ledger, with `contrib/check-events.py` (Python's `blake3` and stock
//! `ssh-keygen -Y verify`).

use std::path::{Path, PathBuf};

use crate::support::{Ws, json, pacs_tree, stderr, stdout};

fn sealed() -> (Ws, String) {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 2, 1_000);
    let out = ws.transfer(&[]).assert().code(0).get_output().clone();
    let id = json(&out)["sealed"]["id"].as_str().unwrap().to_owned();
    (ws, id)
}

/// `custody handoff MANIFEST` with `--from`, `--to` and `--purpose` set
/// unless `flags` sets them, plus `flags`.
fn handoff(ws: &Ws, manifest: &Path, flags: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = ws.custody(&["handoff"]);
    cmd.arg(manifest).arg("--signing-key").arg(ws.key());
    for (flag, default) in [
        ("--from", "J. Doe (hospital IT)"),
        ("--to", "Courier 1Z999"),
        ("--purpose", "return Data Box to Azure"),
    ] {
        if !flags.iter().any(|(f, _)| *f == flag) {
            cmd.args([flag, default]);
        }
    }
    for (flag, value) in flags {
        cmd.args([flag, value]);
    }
    cmd.output().unwrap()
}

#[test]
fn a_handoff_is_a_signed_event_in_the_manifest_timeline() {
    let (ws, id) = sealed();
    let out = handoff(
        &ws,
        &ws.manifest(),
        &[
            ("--location", "Dock B"),
            ("--device-serial", "DBX-1"),
            ("--seal-id", "TS-42"),
            ("--order", "wave1"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("handoff recorded for manifest {id}")));
    // By id as well.
    let out = handoff(
        &ws,
        Path::new(&id),
        &[("--purpose", "received at the datacenter")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = ws
        .custody(&["--json", "log", "--manifest", &id])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let events = json(&out)["events"].as_array().unwrap().clone();
    let handoffs: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["kind"] == "handoff").collect();
    assert_eq!(handoffs.len(), 2);
    let p = &handoffs[0]["payload"];
    assert_eq!(p["from"], "J. Doe (hospital IT)");
    assert_eq!(p["to"], "Courier 1Z999");
    assert_eq!(p["device_serial"], "DBX-1");
    assert_eq!(p["seal_id"], "TS-42");
    assert_eq!(p["order"], "wave1");
    assert_eq!(p["location"], "Dock B");
    assert!(p["manifest_blake3"].as_str().unwrap().len() == 64);
    assert_eq!(
        handoffs[1]["payload"]["purpose"],
        "received at the datacenter"
    );
    assert!(
        handoffs[0]["signer"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn a_tampered_handoff_is_caught_by_ledger_verify() {
    let (ws, _) = sealed();
    assert_eq!(handoff(&ws, &ws.manifest(), &[]).status.code(), Some(0));
    let report = ws.tampered_ledger_report(
        "UPDATE events SET payload = replace(payload, 'Courier 1Z999', 'Someone else') WHERE kind = 'handoff'",
    );
    assert!(
        report.contains("(handoff): contents do not match its hash (row edited)"),
        "{report}"
    );
}

#[test]
fn a_handoff_needs_a_manifest_this_ledger_sealed() {
    let (ws, _) = sealed();
    let stray = ws.root().join("other.json");
    std::fs::write(&stray, b"{}").unwrap();
    for (arg, says) in [
        (stray.clone(), "not a manifest sealed in this ledger"),
        (
            PathBuf::from("20990101T000000Z-00000000"),
            "no manifest with that id",
        ),
    ] {
        let out = handoff(&ws, &arg, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let out = handoff(&ws, &ws.manifest(), &[("--to", " ")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--to must not be empty"),
        "{}",
        stderr(&out)
    );
}

fn check_events(ws: &Ws, timeline: &Path, manifest: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/check-events.py");
    std::process::Command::new("python3")
        .arg(script)
        .arg(timeline)
        .arg(ws.signers())
        .arg(manifest)
        .output()
        .unwrap()
}

#[test]
fn an_exported_timeline_checks_offline_with_stock_tools_and_tampering_fails() {
    let (ws, id) = sealed();
    assert_eq!(handoff(&ws, &ws.manifest(), &[]).status.code(), Some(0));
    let timeline = ws.root().join("timeline.json");
    let out = ws
        .custody(&["log", "--manifest", &id, "--export"])
        .arg(&timeline)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("(3 signed)"), "{}", stdout(&out));
    let out = check_events(&ws, &timeline, &ws.manifest());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    let n = exported["events"].as_array().unwrap().len();
    // The manifest line and one line per event.
    assert_eq!(text.matches("OK ").count(), 1 + n, "{text}");
    assert!(text.contains("handoff"), "{text}");
    assert_eq!(
        text.matches("signed by ops@hospital.example").count(),
        3,
        "{text}"
    );

    // An edited handoff in the export: its hash no longer matches.
    let mut t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    for e in t["events"].as_array_mut().unwrap() {
        if e["kind"] == "handoff" {
            let p = e["payload"]
                .as_str()
                .unwrap()
                .replace("Courier 1Z999", "Someone else");
            e["payload"] = p.into();
        }
    }
    let edited = ws.root().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&t).unwrap()).unwrap();
    let out = check_events(&ws, &edited, &ws.manifest());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("handoff") && stdout(&out).contains("contents do not match its hash"),
        "{}",
        stdout(&out)
    );

    // A manifest that is not the one the timeline names.
    let other = ws.root().join("other.json");
    std::fs::write(&other, b"{}").unwrap();
    let out = check_events(&ws, &timeline, &other);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("is not the one the timeline names"),
        "{}",
        stdout(&out)
    );
}
