//! Blob destinations against a real Azurite on loopback: transfer, verify,
//! tampering through another client, credentials, resume from staged blocks.

use std::process::Stdio;

use crate::support::azurite::{self, Azurite, with_key};
use crate::support::*;

/// A workspace plus a running Azurite.
fn setup() -> (Ws, Azurite) {
    let ws = Ws::new();
    let az = Azurite::start(&ws.root().join("azurite"));
    (ws, az)
}

/// A transfer that must succeed; its `--json` summary.
fn transfer_ok(ws: &Ws, url: &str, extra: &[&str]) -> serde_json::Value {
    json(
        &transfer_to(ws, url, extra)
            .assert()
            .code(0)
            .get_output()
            .clone(),
    )
}

fn transfer_to(ws: &Ws, url: &str, extra: &[&str]) -> assert_cmd::Command {
    let mut c = ws.custody(&["--json", "transfer"]);
    c.arg(&ws.src)
        .arg(url)
        .arg("--signing-key")
        .arg(ws.key())
        .args(extra);
    with_key(c)
}

fn verify_at(ws: &Ws, m: &std::path::Path, url: &str) -> assert_cmd::Command {
    let mut c = ws.custody(&["verify"]);
    c.arg(m).arg(url).arg("--allowed-signers").arg(ws.signers());
    with_key(c)
}

#[test]
fn transfer_and_verify_a_mixed_tree_in_blob_storage() {
    let (ws, az) = setup();
    let n = pacs_tree(&ws, 2, 3, 30_000);
    ws.file("empty.dcm", b"");
    ws.file("wsi/slide.svs", &bytes(9, 300 << 20)); // a whole-slide image: 38 blocks
    let url = az.url("pacs/wave-1");
    let s = transfer_ok(&ws, &url, &[]);
    assert_eq!(s["status"], "complete");
    assert_eq!(s["files_copied"], n + 2);
    let total: u64 = files_under(&ws.src)
        .iter()
        .map(|f| std::fs::metadata(ws.src.join(f)).unwrap().len())
        .sum();
    assert_eq!(s["bytes_sent"], total, "every byte sent once");
    assert_eq!(s["verify"]["files_verified"], n + 2);
    let m = ws.manifest();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_eq!(v["destination"], url);
    verify_at(&ws, &m, &url).assert().code(0);
    ws.custody(&["ledger", "verify"]).assert().code(0);
    // Convenience metadata for people browsing the container (verify never
    // relies on it: it re-reads every byte).
    let meta = az.metadata("pacs", "wave-1/wsi/slide.svs");
    let expect = blake3::hash(&std::fs::read(ws.src.join("wsi/slide.svs")).unwrap());
    assert_eq!(
        meta.get("custody_blake3").map(String::as_str),
        Some(expect.to_hex().as_str())
    );
}

#[test]
fn verify_names_overwritten_deleted_and_extra_blobs() {
    let (ws, az) = setup();
    pacs_tree(&ws, 1, 3, 10_000);
    let url = az.url("pacs/w");
    transfer_to(&ws, &url, &["--no-verify"]).assert().code(0);
    let m = ws.manifest();
    az.put(
        "pacs",
        "w/PAT000/STUDY0/SERIES0/IM0001.dcm",
        b"overwritten by someone else",
    );
    az.delete("pacs", "w/PAT000/STUDY1/SERIES1/IM0002.dcm");
    az.put("pacs", "w/PAT000/planted.dcm", b"extra");
    let out = verify_at(&ws, &m, &url)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(
        text.contains("SIZE       PAT000/STUDY0/SERIES0/IM0001.dcm"),
        "{text}"
    );
    assert!(
        text.contains("MISSING    PAT000/STUDY1/SERIES1/IM0002.dcm"),
        "{text}"
    );
    assert!(text.contains("EXTRA      PAT000/planted.dcm"), "{text}");
    // Same size, other bytes: a hash mismatch, found only by re-reading.
    let real = std::fs::read(ws.src.join("PAT000/STUDY0/SERIES0/IM0000.dcm")).unwrap();
    let mut fake = real.clone();
    fake[10] ^= 1;
    az.put("pacs", "w/PAT000/STUDY0/SERIES0/IM0000.dcm", &fake);
    let out = verify_at(&ws, &m, &url)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("CHANGED    PAT000/STUDY0/SERIES0/IM0000.dcm"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn existing_blobs_are_refused_before_anything_moves_unless_overwrite_allows() {
    let (ws, az) = setup();
    ws.file("a.dcm", b"ours");
    ws.file("b.dcm", b"also ours");
    az.create_container("pacs");
    az.put("pacs", "a.dcm", b"theirs, already there");
    let url = az.url("pacs");
    // The preflight lists the container: `scan` names the blob in the way…
    let mut scan = ws.custody(&["scan"]);
    scan.arg(&ws.src).arg("--dest").arg(&url);
    let out = with_key(scan).assert().code(2).get_output().clone();
    assert!(
        stdout(&out).contains(&format!(
            "VIOLATION exists-at-destination: a.dcm: {url}/a.dcm already exists"
        )),
        "{}",
        stdout(&out)
    );
    // …and `transfer` refuses before anything moves.
    let out = transfer_to(&ws, &url, &[])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("a.dcm"), "{}", stderr(&out));
    assert_eq!(az.names("pacs"), ["a.dcm"]);
    assert_eq!(landed_rows(&ws.ledger), 0);
    // An explicit overwrite policy says existing blobs may be replaced.
    let s = transfer_ok(&ws, &url, &["--overwrite", "if-different"]);
    assert_eq!(s["files_copied"], 2);
    assert_eq!(az.names("pacs"), ["a.dcm", "b.dcm"]);
}

/// In a resumed run, a blob of exactly the size a file lands as is taken
/// to be the run's own unrecorded landing (a kill after the commit and
/// before the record): the preflight lets it through, and the landing
/// still compares content, so a stranger of the same size is never
/// overwritten under `--overwrite never`.
#[test]
fn a_resumed_run_still_never_overwrites_a_same_size_stranger() {
    let (ws, az) = setup();
    ws.file("a.dcm", &bytes(1, 3000));
    let growing = ws.file("growing.dcm", &bytes(2, 16 << 20));
    let url = az.url("pacs");
    let grower = Grower::start(&growing);
    let first = transfer_to(&ws, &url, &["--no-verify"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    drop(grower);
    assert_eq!(json(&first)["files_copied"], 1);

    ws.file("c.dcm", &bytes(3, 100));
    az.put("pacs", "c.dcm", &bytes(4, 100));
    let out = transfer_to(&ws, &url, &[])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("a different blob already exists under this name"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&out)["run"]["resumed"], true);
    let mut scan = ws.custody(&["scan"]);
    scan.arg(&ws.src).arg("--dest").arg(&url);
    with_key(scan).assert().code(2);

    az.delete("pacs", "c.dcm");
    let s = transfer_ok(&ws, &url, &[]);
    assert_eq!(s["verify"]["discrepancies"].as_array().unwrap().len(), 0);
    assert_eq!(az.names("pacs"), ["a.dcm", "c.dcm", "growing.dcm"]);
}

#[test]
fn credentials_wrong_key_tampered_sas_valid_sas_and_no_secret_in_output() {
    let (ws, az) = setup();
    ws.file("a.dcm", b"a");
    let url = az.url("pacs");
    // A wrong account key: refused at once, exit 2, nothing recorded.
    let mut c = transfer_to(&ws, &url, &[]);
    c.env(
        "AZURE_STORAGE_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let out = c.assert().code(2).get_output().clone();
    assert!(
        stderr(&out).contains("authentication or authorisation failed (HTTP 403)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !ws.ledger.exists() || {
            let n: i64 = ws
                .db()
                .query_row("SELECT COUNT(*) FROM landed", [], |r| r.get(0))
                .unwrap();
            n == 0
        }
    );
    // A connection string with the account key works.
    let mut c = transfer_to(&ws, &url, &["--no-verify"]);
    c.env_remove("AZURE_STORAGE_KEY").env(
        "AZURE_STORAGE_CONNECTION_STRING",
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}",
            azurite::ACCOUNT,
            azurite::KEY,
            az.url("")
        ),
    );
    let s = json(&c.assert().code(0).get_output().clone());
    assert_eq!(s["files_copied"], 1);
    // A connection string for another account is refused.
    let mut c = transfer_to(&ws, &url, &[]);
    c.env_remove("AZURE_STORAGE_KEY").env(
        "AZURE_STORAGE_CONNECTION_STRING",
        format!("AccountName=other;AccountKey={}", azurite::KEY),
    );
    let out = c.assert().code(2).get_output().clone();
    assert!(
        stderr(&out).contains("is for account other"),
        "{}",
        stderr(&out)
    );
    // A SAS signed by custody's signer works; the same with its signature
    // altered is refused.
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(azurite::KEY)
        .unwrap();
    let now = jiff::Timestamp::now();
    let sas = custody::dest::blob::auth::account_sas(
        azurite::ACCOUNT,
        &key,
        now - jiff::SignedDuration::from_secs(60),
        now + jiff::SignedDuration::from_secs(3600),
        false,
        custody::dest::blob::auth::SasVersion::V2022_11_02,
    )
    .to_string();
    let tampered = sas
        .replace("sp=racwdl", "sp=racwdl&x=1")
        .replacen("sig=", "sig=A", 1);
    let mut c = ws.custody(&["transfer"]);
    c.arg(&ws.src).arg(&url).arg("--signing-key").arg(ws.key());
    c.env_remove("AZURE_STORAGE_KEY")
        .env("AZURE_STORAGE_SAS_TOKEN", &tampered);
    c.assert().code(2);
    // (Into a new container: `pacs` holds the tree already, which the
    // preflight would refuse.)
    let mut c = ws.custody(&["-vv", "transfer"]);
    c.arg(&ws.src)
        .arg(az.url("pacs-sas"))
        .arg("--signing-key")
        .arg(ws.key());
    c.env_remove("AZURE_STORAGE_KEY")
        .env("AZURE_STORAGE_SAS_TOKEN", &sas);
    let out = c.assert().code(0).get_output().clone();
    // No secret anywhere: output at -vv, manifest, ledger.
    let sig = sas.split("sig=").nth(1).unwrap().to_owned();
    let mut seen = stdout(&out) + &stderr(&out);
    for m in std::fs::read_dir(&ws.manifests).unwrap() {
        seen.push_str(&String::from_utf8_lossy(
            &std::fs::read(m.unwrap().path()).unwrap(),
        ));
    }
    seen.push_str(&String::from_utf8_lossy(
        &std::fs::read(&ws.ledger).unwrap(),
    ));
    assert!(seen.contains("transfer started"), "-vv logging is on");
    for secret in [azurite::KEY, sig.as_str(), "sig="] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
}

#[test]
fn kill_9_mid_upload_resumes_from_the_staged_blocks() {
    let (ws, az) = setup();
    let size = 96usize << 20; // twelve 8 MiB blocks
    ws.file("wsi/big.svs", &bytes(11, size));
    let url = az.url("pacs");
    let (src, key) = (ws.src.display().to_string(), ws.key().display().to_string());
    let mut child = ws
        .spawnable(&["transfer", &src, &url, "--signing-key", &key])
        .env("AZURE_STORAGE_KEY", azurite::KEY)
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "blocks were staged", || {
        az.uncommitted_blocks("pacs", "wsi/big.svs") >= 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let s = transfer_ok(&ws, &url, &[]);
    let sent = s["bytes_sent"].as_u64().unwrap();
    let reused = s["bytes_reused"].as_u64().unwrap();
    assert!(
        reused >= 3 * (8 << 20),
        "resumed from the staged blocks: reused {reused}"
    );
    assert_eq!(sent + reused, size as u64);
    assert!(sent < size as u64, "fewer bytes sent than the file's size");
    assert_eq!(s["verify"]["files_verified"], 1);
}

#[test]
fn azurite_stopped_mid_transfer_then_restarted_the_rerun_completes() {
    let (ws, mut az) = setup();
    let total = 60u64;
    for i in 0..total {
        ws.file(&format!("s/IM{i:03}"), &bytes(i, 2 << 20));
    }
    let url = az.url("pacs");
    let (src, key) = (ws.src.display().to_string(), ws.key().display().to_string());
    let mut child = ws
        .spawnable(&[
            "--json",
            "transfer",
            &src,
            &url,
            "--signing-key",
            &key,
            "--jobs",
            "1",
        ])
        .env("AZURE_STORAGE_KEY", azurite::KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let some files land, then take the server away mid-transfer.
    wait_while_running(&mut child, "files landed", || landed_rows(&ws.ledger) >= 5);
    let port = az.port;
    az.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let s = json(&out);
    assert!(s["failed"].as_u64().unwrap() > 0);
    assert!(s["sealed"].is_null(), "an interrupted run is not sealed");
    let landed = s["files_copied"].as_u64().unwrap();
    ws.custody(&["ledger", "verify"]).assert().code(0);

    // Same data directory, same port: the rerun completes and verifies.
    let _az2 = Azurite::start_on(&az.data, port);
    let s = transfer_ok(&ws, &url, &[]);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(
        s["files_skipped"], landed,
        "landed files are not sent again"
    );
    assert_eq!(s["files_copied"], total - landed);
    assert_eq!(s["verify"]["files_verified"], total);
}

#[test]
fn https_with_a_private_ca_as_on_a_data_box() {
    let ws = Ws::new();
    let tls = crate::support::tls::TestCa::new(&ws.root().join("tls"));
    let (ca, cert, key) = (tls.ca.clone(), tls.cert.clone(), tls.key.clone());
    let az = Azurite::start_tls(&ws.root().join("azurite"), &cert, &key);
    ws.file("a.dcm", &bytes(1, 100_000));
    let url = format!("https://127.0.0.1:{}/{}/pacs", az.port, azurite::ACCOUNT);
    // Not trusted: a clear TLS error at once (no retry loop), exit 2.
    let out = transfer_to(&ws, &url, &[])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("TLS failed"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("retrying"),
        "a TLS failure is not retried: {}",
        stderr(&out)
    );
    // Trusted with --ca-file.
    let mut c = ws.custody(&["--json", "--ca-file"]);
    c.arg(&ca)
        .arg("transfer")
        .arg(&ws.src)
        .arg(&url)
        .arg("--signing-key")
        .arg(ws.key());
    let s = json(&with_key(c).assert().code(0).get_output().clone());
    assert_eq!(s["verify"]["files_verified"], 1);
    // And through SSL_CERT_FILE, the system TLS library's own variable.
    let mut c = verify_at(&ws, &ws.manifest(), &url);
    c.env("SSL_CERT_FILE", &ca);
    c.assert().code(0);
}

/// Regression: the same transfer run again after its run sealed (a nightly
/// timer, or a rerun after a kill during the verify) was refused, every
/// blob of its own earlier run "already exists" (found by the crash loop).
/// Now they are its own: run again, it finds nothing new and redoes
/// nothing; asked for a full copy (`--full`), it runs, and identical blobs
/// are not sent again.
#[test]
fn the_same_transfer_again_after_its_run_sealed_is_not_refused_by_its_own_blobs() {
    let (ws, az) = setup();
    for i in 0..5u64 {
        ws.file(&format!("s/IM{i}"), &bytes(i, 50_000));
    }
    let url = az.url("pacs/again");
    let first = transfer_ok(&ws, &url, &[]);
    let s = transfer_ok(&ws, &url, &[]);
    assert_eq!(s["files_copied"], 0, "{s}");
    assert_eq!(s["finished"]["manifest"], first["sealed"]["id"], "{s}");
    let s = transfer_ok(&ws, &url, &["--full"]);
    assert_eq!(s["run"]["resumed"], false, "a new run");
    assert_eq!(s["status"], "complete");
    assert_eq!(s["verify"]["files_verified"], 5);
    // A stranger's blob is still in the way.
    az.put("pacs", "again/s/IM9", b"not ours");
    ws.file("s/IM9", b"ours");
    transfer_to(&ws, &url, &[]).assert().code(2);
}

#[test]
fn a_nightly_job_into_blob_storage_moves_only_what_is_new_and_verifies_as_a_whole() {
    let (ws, az) = setup();
    for i in 0..3u64 {
        ws.file(&format!("s/IM{i}"), &bytes(i, 30_000));
    }
    let url = az.url("pacs/nightly");
    let job = ["--job", "pacs-nightly"];
    let s1 = transfer_ok(&ws, &url, &job);
    assert_eq!(s1["files_copied"], 3);
    ws.file("s/IM3", &bytes(3, 30_000));
    // A blob that is not the job's is in the container: tonight's preflight
    // does not mind it (it is not in tonight's way), the whole-job verify
    // does (extra).
    az.put("pacs", "nightly/stranger", b"not the job's");
    let s2 = transfer_ok(&ws, &url, &job);
    assert_eq!(s2["files_copied"], 1);
    assert_eq!(s2["job"]["unchanged_files"], 3);
    // The night's verify re-read only its own blob, by name.
    assert_eq!(s2["verify"]["files_verified"], 1);
    let signers = ws.signers().display().to_string();
    let verify = |code| {
        let c = ws.custody(&[
            "--json",
            "verify",
            "--job",
            "pacs-nightly",
            &url,
            "--allowed-signers",
            &signers,
        ]);
        json(&with_key(c).assert().code(code).get_output().clone())
    };
    let v = verify(1);
    assert_eq!(v["report"]["counts"]["extra"], 1, "{v}");
    assert_eq!(v["report"]["files_verified"], 4);
    az.delete("pacs", "nightly/stranger");
    assert_eq!(verify(0)["chain"]["links"].as_array().unwrap().len(), 2);
}
