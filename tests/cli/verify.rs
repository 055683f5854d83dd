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
