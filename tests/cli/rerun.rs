//! The same transfer run again after its run sealed never redoes finished
//! work (docs/jobs.md, "Without --job"): a verify that never completed is
//! done then, a source with nothing new is left alone, new files move as
//! the next run of the transfer's implicit job, and only `--full` copies
//! everything again.

use std::time::Duration;

use serde_json::json;

use crate::support::faultfs::FaultFs;
use crate::support::{Ws, bytes, json, stderr};

/// The `.json` manifests in the manifest folder.
fn manifests(ws: &Ws) -> Vec<std::path::PathBuf> {
    let mut m: Vec<_> = std::fs::read_dir(&ws.manifests)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    m.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "json"));
    m.sort();
    m
}

/// `verified` events for manifest `id`.
fn verified_events(ws: &Ws, id: &str) -> i64 {
    ws.db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'verified' AND manifest_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_kill_during_the_verify_costs_no_recopy_the_rerun_verifies_and_then_does_nothing() {
    let ws = Ws::new();
    for i in 0..12u64 {
        ws.file(&format!("PAT1/IM{i:02}.dcm"), &bytes(i, 256 << 10));
    }
    let real = ws.root().join("real-dest");
    let fs = FaultFs::mount(&real, &ws.dest);
    // A slow listing: the verify after the seal lists the destination
    // (each batch's bytes were re-read during the copy already), so the
    // kill lands in the verify, before its `verified` event.
    fs.fail(json!([{"op": "readdir", "delay": 1.0}]));
    let (src, dest, key) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
    );
    let mut child = ws
        .spawnable(&["--json", "transfer", &src, &dest, "--signing-key", &key])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while manifests(&ws).is_empty()
        || !ws
            .manifests
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().path().to_string_lossy().ends_with(".json.sig"))
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before its seal was seen"
        );
        assert!(std::time::Instant::now() < deadline, "no seal");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = manifests(&ws);
    assert_eq!(first.len(), 1);
    let id = first[0].file_stem().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        verified_events(&ws, &id),
        0,
        "killed before its verify completed"
    );
    fs.heal();

    // The same command: nothing copied, the sealed manifest verified and
    // recorded, exit 0.
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["files_copied"], 0, "{s}");
    assert_eq!(s["bytes_copied"], 0, "{s}");
    assert_eq!(s["sealed"]["id"], id.as_str(), "{s}");
    assert_eq!(s["finished"]["verified_now"], true, "{s}");
    assert_eq!(s["verify"]["files_verified"], 12, "{s}");
    assert_eq!(verified_events(&ws, &id), 1);
    assert_eq!(manifests(&ws).len(), 1, "no second manifest");

    // Again: verified and nothing new: one line, nothing sealed, exit 0.
    let out = ws.transfer_into(&ws.dest).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = crate::support::stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!("nothing to do: manifest {id}")),
        "{text}"
    );
    let s = ws.transfer_json(&[], 0);
    assert_eq!(
        (
            s["files_copied"].as_u64(),
            s["finished"]["verified_now"].as_bool()
        ),
        (Some(0), Some(false)),
        "{s}"
    );
    assert_eq!(s["verify"], serde_json::Value::Null);
    assert_eq!(verified_events(&ws, &id), 1, "no verify redone");
    assert_eq!(manifests(&ws).len(), 1);
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn new_files_move_as_the_next_run_of_the_implicit_job_and_full_copies_everything() {
    let ws = Ws::new();
    ws.file("PAT1/IM1.dcm", b"one");
    ws.file("PAT1/IM2.dcm", b"two");
    let first = ws.transfer_json(&[], 0);
    let first_id = first["sealed"]["id"].as_str().unwrap().to_owned();
    ws.file("PAT2/IM3.dcm", b"three");
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["files_copied"], 1, "only what is new: {s}");
    let job = s["job"]["name"].as_str().unwrap().to_owned();
    assert!(job.starts_with("auto-"), "{s}");
    assert_eq!(
        s["run"]["job_run"], 2,
        "the sealed one-off run is the job's first: {s}"
    );
    let delta = ws
        .manifests
        .join(format!("{}.json", s["sealed"]["id"].as_str().unwrap()));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&delta).unwrap()).unwrap();
    assert_eq!(m["job"]["previous"]["id"], first_id.as_str(), "{m}");
    assert_eq!(m["files"].as_array().unwrap().len(), 1, "{m}");
    // The chain audits (its first link, the one-off manifest, included),
    // and the job as a whole verifies as one closed set.
    ws.custody(&["audit", "--chain"])
        .arg(&ws.manifests)
        .arg(&delta)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .assert()
        .code(0);
    let out = ws
        .custody(&["--json", "verify", "--job", &job])
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["report"]["files_verified"], 3);
    // A file gone from the source is reported by the next run, and kept.
    std::fs::remove_file(ws.src.join("PAT1/IM1.dcm")).unwrap();
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["files_copied"], 0, "{s}");
    assert_eq!(s["job"]["deleted"], 1, "{s}");
    assert!(ws.dest.join("PAT1/IM1.dcm").exists());
    // Only when asked: everything again, as a new one-off run (whose
    // closed-set verify names the file the source no longer has).
    ws.file("PAT1/IM1.dcm", b"one");
    let s = ws.transfer_json(&["--full"], 0);
    assert_eq!(s["files_copied"], 3, "{s}");
    assert_eq!(s["job"], serde_json::Value::Null, "{s}");
    // After it, the same command goes on from the full run: a chain of
    // its own.
    ws.file("PAT3/IM4.dcm", b"four");
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["files_copied"], 1, "{s}");
    assert_ne!(s["job"]["name"], job.as_str(), "{s}");
    assert_eq!(s["run"]["job_run"], 2, "{s}");
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn a_sealed_run_whose_verify_never_ran_is_verified_by_the_rerun_and_a_failure_stays_a_failure() {
    let ws = Ws::new();
    ws.file("a.dcm", b"alpha");
    ws.file("b.dcm", b"bravo");
    ws.transfer_json(&["--no-verify"], 0);
    // The manifest files were lost after the seal (the ledger has them).
    for m in manifests(&ws) {
        std::fs::remove_file(m.with_extension("json.sig")).unwrap();
        std::fs::remove_file(m).unwrap();
    }
    // And the landed copy was damaged meanwhile.
    std::fs::write(ws.dest.join("b.dcm"), b"brava").unwrap();
    let out = ws.transfer(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(
        (s["status"].as_str(), s["files_copied"].as_u64()),
        (Some("verify_failed"), Some(0)),
        "{s}"
    );
    assert_eq!(s["verify"]["counts"]["hash"], 1, "{s}");
    assert_eq!(manifests(&ws).len(), 1, "written again from the ledger");
    ws.verify(&manifests(&ws)[0], &[]).assert().code(1);
    // Run again, it does not pretend: the sealed run's verify failed.
    let out = ws.transfer(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json(&out)["status"], "verify_failed");
}
