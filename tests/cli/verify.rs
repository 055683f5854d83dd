//! `custody verify` against a tampered landed copy: each case names the
//! path, counts it in its class, and exits 1.

use crate::support::*;

fn landed() -> (Ws, std::path::PathBuf) {
    let ws = Ws::new();
    pacs_tree(&ws, 2, 3, 20_000);
    ws.transfer(&[]).assert().code(0);
    let m = ws.manifest();
    (ws, m)
}

fn verify_json(ws: &Ws, m: &std::path::Path) -> serde_json::Value {
    let out = ws
        .custody(&["--json", "verify"])
        .arg(m)
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .assert()
        .code(1)
        .get_output()
        .clone();
    json(&out)
}

const VICTIM: &str = "PAT001/STUDY1/SERIES0/IM0001.dcm";

#[test]
fn flipped_byte_is_a_hash_mismatch() {
    let (ws, m) = landed();
    let p = ws.dest.join(VICTIM);
    let mut b = std::fs::read(&p).unwrap();
    b[1234] ^= 0x80;
    std::fs::write(&p, b).unwrap();
    let out = ws.verify(&m, &[]).assert().code(1).get_output().clone();
    assert!(
        stdout(&out).contains(&format!("CHANGED    {VICTIM}: content differs")),
        "{}",
        stdout(&out)
    );
    let r = verify_json(&ws, &m);
    assert_eq!(r["report"]["counts"]["hash"], 1);
    assert_eq!(r["report"]["discrepancies"][0]["path"], VICTIM);
    assert_eq!(r["result"], "fail");
}

#[test]
fn truncated_file_is_a_size_mismatch() {
    let (ws, m) = landed();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(ws.dest.join(VICTIM))
        .unwrap();
    f.set_len(100).unwrap();
    let out = ws.verify(&m, &[]).assert().code(1).get_output().clone();
    assert!(
        stdout(&out).contains(&format!("SIZE       {VICTIM}: expected")),
        "{}",
        stdout(&out)
    );
    assert_eq!(verify_json(&ws, &m)["report"]["counts"]["size"], 1);
}

#[test]
fn deleted_file_is_missing() {
    let (ws, m) = landed();
    std::fs::remove_file(ws.dest.join(VICTIM)).unwrap();
    let out = ws.verify(&m, &[]).assert().code(1).get_output().clone();
    assert!(
        stdout(&out).contains(&format!("MISSING    {VICTIM}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(verify_json(&ws, &m)["report"]["counts"]["missing"], 1);
}

#[test]
fn added_file_is_extra() {
    // b3sum --check's blind spot: a file added after sealing.
    let (ws, m) = landed();
    std::fs::write(ws.dest.join("PAT000/STUDY0/planted.dcm"), b"new").unwrap();
    let out = ws.verify(&m, &[]).assert().code(1).get_output().clone();
    assert!(
        stdout(&out).contains("EXTRA      PAT000/STUDY0/planted.dcm"),
        "{}",
        stdout(&out)
    );
    let r = verify_json(&ws, &m);
    assert_eq!(r["report"]["counts"]["extra"], 1);
    assert_eq!(r["report"]["counts"]["missing"], 0);
}

#[test]
fn renamed_file_is_missing_and_extra() {
    let (ws, m) = landed();
    std::fs::rename(ws.dest.join(VICTIM), ws.dest.join("PAT001/renamed.dcm")).unwrap();
    let out = ws.verify(&m, &[]).assert().code(1).get_output().clone();
    let text = stdout(&out);
    assert!(text.contains(&format!("MISSING    {VICTIM}")), "{text}");
    assert!(text.contains("EXTRA      PAT001/renamed.dcm"), "{text}");
    let r = verify_json(&ws, &m);
    assert_eq!(r["report"]["counts"]["missing"], 1);
    assert_eq!(r["report"]["counts"]["extra"], 1);
}

#[test]
fn verify_with_signing_key_records_a_signed_event() {
    let (ws, m) = landed();
    ws.verify(&m, &["--signing-key"])
        .arg(ws.key())
        .assert()
        .code(0);
    let n: i64 = ws
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'verified' AND signature IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2, "one from the transfer, one from this verify");
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn verify_against_a_different_key_fails_before_reading_data() {
    let (ws, m) = landed();
    let other = ws.root().join("other");
    ws.custody(&["keygen", "--out"])
        .arg(&other)
        .assert()
        .success();
    let out = ws
        .custody(&["verify"])
        .arg(&m)
        .arg(&ws.dest)
        .arg("--public-key")
        .arg(other.join("custody_ed25519.pub"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
}

/// The verify overlaps the copy: with the copy held to 2 MiB/s, the JSON
/// progress lines of the copy phase already count files re-read and found
/// right before the last file is copied; the verify after the seal then
/// counts them without reading them again, and the run ends verified, with
/// one `verified` event recorded after the seal.
#[test]
fn each_durable_batch_is_re_read_while_later_batches_copy() {
    let ws = Ws::new();
    let n = 128u64;
    for i in 0..n {
        ws.file(&format!("S{:02}/IM{i:05}", i / 32), &bytes(i, 64 * 1024));
    }
    let log = ws.root().join("transfer.log");
    let json = ws.root().join("summary.json");
    let mut c = ws.transfer_at(&ws.dest, "2M");
    c.arg("--json")
        .args([
            "--log-format",
            "json",
            "--progress-interval",
            "100ms",
            "--log-file",
        ])
        .arg(&log)
        .stdout(std::fs::File::create(&json).unwrap());
    let status = c.status().unwrap();
    assert_eq!(status.code(), Some(0));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let copying: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["target"] == "custody::progress" && l["phase"] == "copy" && l["done"] == false
        })
        .collect();
    let overlapped = copying
        .iter()
        .find(|l| l["verified"].as_u64().unwrap() > 0 && l["files"].as_u64().unwrap() < n)
        .unwrap_or_else(|| {
            panic!("no copy line with files re-read before the last copied: {copying:#?}")
        });
    // Only what was copied (and recorded) can have been re-read.
    assert!(
        overlapped["verified"].as_u64() <= overlapped["files"].as_u64(),
        "{overlapped}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["status"], "complete", "{summary}");
    assert_eq!(summary["verify"]["files_verified"], n);
    assert_eq!(summary["verify"]["bytes_read"], n * 64 * 1024);
    let verified: i64 = ws
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'verified' AND seq > (SELECT MAX(seq) FROM events WHERE kind = 'sealed')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(verified, 1, "one verified event, after the seal");
    assert_same_tree(&ws.src, &ws.dest);
}

/// An early re-read never outlives its run: a transfer killed during the
/// copy after some batches were re-read, a landed file of those then
/// changed at the destination, and the resumed run (whose early set died
/// with the first attempt) reads it again and reports it.
#[test]
fn an_early_re_read_never_stands_for_a_resumed_runs_verify() {
    let ws = Ws::new();
    let n = 256u64;
    for i in 0..n {
        ws.file(&format!("S{:02}/IM{i:05}", i / 32), &bytes(i, 64 * 1024));
    }
    let log = ws.root().join("transfer.log");
    let mut c = ws.transfer_at(&ws.dest, "2M");
    c.args([
        "--log-format",
        "json",
        "--progress-interval",
        "50ms",
        "--log-file",
    ])
    .arg(&log);
    let mut child = c.spawn().unwrap();
    wait_while_running(&mut child, "an early re-read", || {
        std::fs::read_to_string(&log).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|l| l["phase"] == "copy" && l["verified"].as_u64() > Some(0))
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // A file the first attempt landed (and, batches going in order,
    // re-read early), changed in place.
    let victim = ws.dest.join("S00/IM00000");
    let mut b = std::fs::read(&victim).unwrap();
    b[100] ^= 1;
    std::fs::write(&victim, b).unwrap();

    let s = ws.transfer_json(&[], 1);
    assert_eq!(s["run"]["resumed"], true, "{s}");
    assert_eq!(s["status"], "verify_failed", "{s}");
    assert_eq!(s["verify"]["counts"]["hash"], 1, "{s}");
    assert_eq!(
        s["verify"]["discrepancies"][0]["path"], "S00/IM00000",
        "{s}"
    );
}

/// A verify keeps several reads outstanding where the device is slow to
/// answer (a share's round trip): with one job and a device that takes
/// 100 ms to open each file, four opens wait at once (one did before), and
/// a 20 KiB file is read in one request plus the one that finds its end
/// (an 8 KiB buffer took four).
#[test]
fn a_verify_keeps_several_reads_in_flight_and_reads_a_small_file_in_one_call() {
    let ws = Ws::new();
    for i in 0..16u64 {
        ws.file(&format!("PAT1/IM{i:02}.dcm"), &bytes(i, 20 << 10));
    }
    let real = ws.root().join("real-dest");
    ws.transfer_into(&real).arg("--no-verify").assert().code(0);
    let fs = crate::support::faultfs::FaultFs::mount(&real, &ws.dest);
    fs.fail(serde_json::json!([{"op": "open", "contains": "IM", "delay": 0.1}]));
    let out = ws
        .verify(&ws.manifest(), &["--json", "--jobs", "1"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert_eq!(json(&out)["report"]["files_verified"], 16);
    let stats = fs.stats();
    assert_eq!(
        stats["peak_delayed"].as_u64(),
        Some(custody::verify::READS_PER_JOB as u64),
        "{stats}"
    );
    let reads = stats["reads"].as_object().unwrap();
    assert_eq!(reads.len(), 16, "{stats}");
    for (path, n) in reads {
        assert_eq!(n.as_u64(), Some(2), "{path}: {stats}");
    }
}
