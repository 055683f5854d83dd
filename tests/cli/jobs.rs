//! Named jobs (`transfer --job`): nightly delta manifests chained to the
//! job's previous one, changed-source detection, and the whole job
//! verified as one closed set.

use std::path::{Path, PathBuf};

use crate::support::*;

const JOB: &str = "pacs-nightly";

impl Ws {
    /// `custody transfer SRC DEST --job pacs-nightly --json` plus `extra`,
    /// which must exit `code`; its summary.
    fn nightly(&self, extra: &[&str], code: i32) -> serde_json::Value {
        self.transfer_json(&[&["--job", JOB], extra].concat(), code)
    }

    /// The manifest a summary says was sealed, parsed.
    fn sealed(&self, summary: &serde_json::Value) -> (PathBuf, serde_json::Value) {
        let path = PathBuf::from(summary["sealed"]["manifest"].as_str().unwrap());
        let path = self.root().join(path);
        let m = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        (path, m)
    }

    /// `custody ARGS --allowed-signers S`.
    fn trusted(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = self.custody(args);
        c.arg("--allowed-signers").arg(self.signers());
        c
    }
}

/// The `path`s a manifest lists.
fn paths(m: &serde_json::Value) -> Vec<&str> {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect()
}

/// `sha256sum FILE`'s digest: the link is checkable with stock tools.
fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    stdout(&out).split_whitespace().next().unwrap().to_owned()
}

/// Copies the manifest directory, to damage the copy.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Three nightly runs of a job: A (run 1), B, C (run 2), D (run 3).
fn three_nights(ws: &Ws) -> [(PathBuf, serde_json::Value); 3] {
    ws.file("PAT1/A", b"first night");
    let s1 = ws.nightly(&[], 0);
    ws.file("PAT2/B", b"second night, one");
    ws.file("PAT2/C", b"second night, two");
    let s2 = ws.nightly(&[], 0);
    ws.file("PAT3/D", b"third night");
    let s3 = ws.nightly(&[], 0);
    [ws.sealed(&s1), ws.sealed(&s2), ws.sealed(&s3)]
}

#[test]
fn three_nightly_runs_each_list_exactly_the_new_files_chain_and_the_job_verifies() {
    let ws = Ws::new();
    let [(p1, m1), (p2, m2), (p3, m3)] = three_nights(&ws);
    assert_eq!(paths(&m1), ["PAT1/A"]);
    assert_eq!(paths(&m2), ["PAT2/B", "PAT2/C"]);
    assert_eq!(paths(&m3), ["PAT3/D"]);
    for (m, run) in [(&m1, 1), (&m2, 2), (&m3, 3)] {
        assert_sealed_as(m, 6);
        assert_eq!(m["job"]["name"], JOB);
        assert_eq!(m["job"]["run"], run);
    }
    assert!(m1["job"].get("previous").is_none());
    for p in [&p1, &p2, &p3] {
        assert_eq!(crate::audit::schema_errors(p), "", "{}", p.display());
    }
    // Each link names the previous manifest by id and by the hashes of its
    // exact bytes; sha256sum confirms it.
    for ((prev_path, prev), m) in [((&p1, &m1), &m2), ((&p2, &m2), &m3)] {
        let link = &m["job"]["previous"];
        assert_eq!(link["id"], prev["id"]);
        assert_eq!(link["sha256"].as_str().unwrap(), sha256sum(prev_path));
        assert_eq!(
            link["blake3"].as_str().unwrap(),
            blake3::hash(&std::fs::read(prev_path).unwrap())
                .to_hex()
                .as_str()
        );
    }
    let p3s = p3.display().to_string();
    let dir = ws.manifests.display().to_string();
    let out = ws
        .trusted(&["audit", &p3s, "--chain", &dir])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(stdout(&out).contains("chain intact"), "{}", stdout(&out));
    assert_eq!(
        stdout(&out).matches("\nrun ").count() + 1,
        3,
        "{}",
        stdout(&out)
    );

    // The whole job: 4 files, as one closed set; then an extra file at the
    // destination is caught, as in a single manifest's verify.
    let dest = ws.dest.display().to_string();
    let out = ws
        .trusted(&["verify", "--job", JOB, &dest])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("4 of 4 files match"),
        "{}",
        stdout(&out)
    );
    std::fs::write(ws.dest.join("PAT3/stray"), b"not sent by custody").unwrap();
    let out = ws
        .trusted(&["verify", &p3s, &dest, "--chain", &dir])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("EXTRA      PAT3/stray"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(ws.dest.join("PAT3/stray")).unwrap();

    let log = json(
        &ws.custody(&["--json", "log", "--job", JOB])
            .assert()
            .code(0)
            .get_output()
            .clone(),
    );
    let runs = log["runs"].as_array().unwrap();
    let summary: Vec<(u64, &str, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["job_run"].as_u64().unwrap(),
                r["manifest"].as_str().unwrap(),
                r["files"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, m1["id"].as_str().unwrap(), 1),
            (2, m2["id"].as_str().unwrap(), 2),
            (3, m3["id"].as_str().unwrap(), 1)
        ]
    );
    ws.custody(&["ledger", "verify"]).assert().code(0);
    // A job belongs to one destination.
    let other = ws.root().join("elsewhere").display().to_string();
    let out = ws
        .custody(&["transfer"])
        .arg(&ws.src)
        .arg(&other)
        .args([
            "--signing-key",
            &ws.key().display().to_string(),
            "--job",
            JOB,
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains(&format!("job \"{JOB}\" lands in")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_nightly_run_reads_only_what_is_new() {
    let ws = Ws::new();
    let a = ws.file("PAT1/A", b"landed on the first night");
    let b = ws.file("PAT1/B", b"touched, never changed");
    ws.nightly(&[], 0);
    // A's bytes change under the same size and mtime: a run that read A
    // would notice. It must not read it: unchanged metadata means
    // unchanged (the documented limit of a metadata comparison).
    let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::fs::write(&a, b"LANDED ON THE FIRST NIGHT").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // B is touched: its mtime differs, so it is read and hashed, and found
    // the same.
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    ws.file("PAT2/N", b"new tonight");
    let s = ws.nightly(&[], 0);
    assert_eq!(s["files_copied"], 1);
    assert_eq!(s["job"]["unchanged_files"], 2);
    assert_eq!(s["job"]["touched_files"], 1);
    assert_eq!(s["job"]["changed"], 0);
    let (_, m) = ws.sealed(&s);
    assert_eq!(paths(&m), ["PAT2/N"]);
    assert!(m.get("source_changes").is_none());
}

#[test]
fn a_deleted_middle_manifest_or_an_edited_link_is_detected() {
    let ws = Ws::new();
    let [_, (p2, m2), (p3, _)] = three_nights(&ws);
    let name = |p: &Path| p.file_name().unwrap().to_owned();
    let id2 = m2["id"].as_str().unwrap();

    // The middle manifest deleted.
    let gone = ws.root().join("gone");
    copy_dir(&ws.manifests, &gone);
    std::fs::remove_file(gone.join(name(&p2))).unwrap();
    let newest = gone.join(name(&p3)).display().to_string();
    let dir = gone.display().to_string();
    let out = ws
        .trusted(&["audit", &newest, "--chain", &dir])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(
        text.contains(&format!("missing link: manifest {id2} (run 2)")),
        "{text}"
    );
    assert!(text.contains("CHAIN BROKEN: 1 problem(s)"), "{text}");
    // verify refuses to check data against a broken chain.
    let dest = ws.dest.display().to_string();
    let out = ws
        .trusted(&["verify", &newest, &dest, "--chain", &dir])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("chain is broken"), "{}", stderr(&out));

    // The middle manifest edited (one file's size): the newest's link no
    // longer matches it, and its own signature fails.
    let edited = ws.root().join("edited");
    copy_dir(&ws.manifests, &edited);
    let text = std::fs::read_to_string(edited.join(name(&p2))).unwrap();
    let forged = text.replacen("\"size\":17", "\"size\":18", 1);
    assert_ne!(forged, text);
    std::fs::write(edited.join(name(&p2)), forged).unwrap();
    let newest = edited.join(name(&p3)).display().to_string();
    let out = ws
        .trusted(&["audit", &newest, "--chain", &edited.display().to_string()])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(text.contains("altered link"), "{text}");
    assert!(text.contains("signature check failed"), "{text}");

    // The newest's link re-pointed without the key: its signature fails.
    let relinked = ws.root().join("relinked");
    copy_dir(&ws.manifests, &relinked);
    let text = std::fs::read_to_string(relinked.join(name(&p3))).unwrap();
    let sha = m2_sha(&text);
    std::fs::write(
        relinked.join(name(&p3)),
        text.replace(&sha, &"0".repeat(64)),
    )
    .unwrap();
    let newest = relinked.join(name(&p3)).display().to_string();
    let out = ws
        .trusted(&["audit", &newest, "--chain", &relinked.display().to_string()])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr(&out).contains("signature check failed"),
        "{}",
        stderr(&out)
    );
    // The real chain is untouched.
    ws.trusted(&[
        "audit",
        &p3.display().to_string(),
        "--chain",
        &ws.manifests.display().to_string(),
    ])
    .assert()
    .code(0);
}

/// The `job.previous.sha256` written in a manifest's text.
fn m2_sha(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["job"]["previous"]["sha256"].as_str().unwrap().to_owned()
}

#[test]
fn a_source_file_changed_after_landing_is_reported_not_resent_or_resent_as_a_version() {
    let ws = Ws::new();
    let a = ws.file("PAT1/A", b"slice as acquired");
    ws.file("PAT1/B", b"another slice");
    let s1 = ws.nightly(&[], 0);
    let (_, m1) = ws.sealed(&s1);
    let id1 = m1["id"].as_str().unwrap();
    // The same size, other content, a later mtime: found by its hash.
    std::fs::write(&a, b"SLICE AS ACQUIRED").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();

    // Default policy: reported, not sent again, exit 3; the run seals.
    let out = ws
        .transfer(&["--job", JOB])
        .assert()
        .code(3)
        .get_output()
        .clone();
    let s2 = json(&out);
    assert_eq!(s2["status"], "source_changed");
    assert_eq!(s2["job"]["changed"], 1);
    let change = serde_json::json!({
        "action": "reported", "change": "changed", "landed_in": id1, "path": "PAT1/A"
    });
    assert_eq!(s2["job"]["source_changes"], serde_json::json!([change]));
    assert!(
        stderr(&out).contains("PAT1/A: changed at source since it landed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(ws.dest.join("PAT1/A")).unwrap(),
        b"slice as acquired"
    );
    let (p2, m2) = ws.sealed(&s2);
    assert_eq!(crate::audit::schema_errors(&p2), "");
    assert_eq!(paths(&m2), Vec::<&str>::new());
    assert_eq!(m2["source_changes"], serde_json::json!([change]));

    // `fail`: the file fails, nothing is sealed, exit 3.
    let s3 = ws.nightly(&["--on-source-change", "fail"], 3);
    assert_eq!(s3["status"], "incomplete");
    assert!(s3["sealed"].is_null());
    assert!(
        s3["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("changed at source since it landed"),
        "{s3}"
    );
    // Recorded with its class, for reports.
    assert_eq!(s3["failures"][0]["class"], "changed_since_landed");
    let log = json(
        &ws.custody(&["--json", "log"])
            .assert()
            .code(0)
            .get_output()
            .clone(),
    );
    let failed: Vec<&serde_json::Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "file_failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["payload"]["class"], "changed_since_landed");

    // `resend-as-version`: the new content lands beside the old one; the
    // same run (resumed) seals with it.
    let s4 = ws.nightly(&["--on-source-change", "resend-as-version"], 0);
    assert_eq!(s4["run"]["attempt"], 2);
    let run = s4["job"]["run"].as_u64().unwrap();
    assert_eq!(run, 3);
    let versioned = format!("PAT1/A.custody-v{run}");
    assert_eq!(
        std::fs::read(ws.dest.join("PAT1/A")).unwrap(),
        b"slice as acquired"
    );
    assert_eq!(
        std::fs::read(ws.dest.join(&versioned)).unwrap(),
        b"SLICE AS ACQUIRED"
    );
    let (p4, m4) = ws.sealed(&s4);
    assert_eq!(crate::audit::schema_errors(&p4), "");
    assert_eq!(paths(&m4), [versioned.as_str()]);
    assert_eq!(m4["files"][0]["version_of"], "PAT1/A");
    assert_eq!(m4["source_changes"][0]["action"], "resent");
    // The job's union holds both; the next night finds nothing changed.
    let dest = ws.dest.display().to_string();
    ws.trusted(&["verify", "--job", JOB, &dest])
        .assert()
        .code(0);
    let s5 = ws.nightly(&[], 0);
    assert_eq!(s5["job"]["changed"], 0);
    assert_eq!(s5["job"]["unchanged_files"], 2);
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn a_file_deleted_at_source_is_reported_once_and_kept_at_the_destination() {
    let ws = Ws::new();
    ws.file("PAT1/A", b"kept");
    let b = ws.file("PAT1/B", b"purged at the source later");
    let s1 = ws.nightly(&[], 0);
    let (_, m1) = ws.sealed(&s1);
    std::fs::remove_file(&b).unwrap();
    let out = ws
        .transfer(&["--job", JOB])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let s2 = json(&out);
    assert_eq!(s2["job"]["deleted"], 1);
    assert_eq!(
        s2["job"]["source_changes"],
        serde_json::json!([{
            "action": "reported", "change": "deleted",
            "landed_in": m1["id"], "path": "PAT1/B"
        }])
    );
    assert!(
        stderr(&out).contains("PAT1/B: deleted at source since it landed"),
        "{}",
        stderr(&out)
    );
    let (_, m2) = ws.sealed(&s2);
    assert_eq!(m2["source_changes"][0]["path"], "PAT1/B");
    // The destination keeps it, and the job still verifies with it.
    assert_eq!(
        std::fs::read(ws.dest.join("PAT1/B")).unwrap(),
        b"purged at the source later"
    );
    let dest = ws.dest.display().to_string();
    ws.trusted(&["verify", "--job", JOB, &dest])
        .assert()
        .code(0);
    // Reported once: the next night is quiet.
    let s3 = ws.nightly(&[], 0);
    assert_eq!(s3["job"]["deleted"], 0);
    // If it comes back with other content, it is a change, never a new
    // file sent over the landed copy.
    ws.file("PAT1/B", b"something else entirely!!");
    let s4 = ws.nightly(&[], 3);
    assert_eq!(s4["job"]["changed"], 1);
    assert_eq!(
        std::fs::read(ws.dest.join("PAT1/B")).unwrap(),
        b"purged at the source later"
    );
}

#[test]
fn an_interrupted_nightly_run_resumes_and_its_delta_manifest_is_exact() {
    let ws = Ws::new();
    ws.file("OLD/A", b"landed on night one");
    ws.nightly(&[], 0);
    let total = 300u64;
    for i in 0..total {
        ws.file(&format!("NEW{:02}/IM{i:05}", i / 100), &bytes(i, 64 * 1024));
    }
    let before = landed_rows(&ws.ledger);
    let (src, dest, key) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
    );
    let mut child = ws
        .spawnable(&[
            "transfer",
            &src,
            &dest,
            "--signing-key",
            &key,
            "--job",
            JOB,
            "--jobs",
            "1",
            "--bwlimit",
            "2M",
        ])
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "a batch of night two was recorded", || {
        landed_rows(&ws.ledger) > before
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let recorded = (landed_rows(&ws.ledger) - before) as u64;
    assert!(
        recorded > 0 && recorded < total,
        "killed at {recorded}/{total}"
    );

    let s = ws.nightly(&[], 0);
    assert_eq!(s["run"]["attempt"], 2);
    assert_eq!(s["job"]["run"], 2);
    assert_eq!(s["files_skipped"], recorded);
    assert_eq!(s["files_copied"], total - recorded);
    assert_eq!(s["job"]["unchanged_files"], 1);
    let (p2, m2) = ws.sealed(&s);
    let listed = paths(&m2);
    assert_eq!(listed.len() as u64, total);
    assert!(listed.iter().all(|p| p.starts_with("NEW")), "{listed:?}");
    assert!(m2.get("source_changes").is_none(), "nothing was deleted");
    ws.trusted(&[
        "audit",
        &p2.display().to_string(),
        "--chain",
        &ws.manifests.display().to_string(),
    ])
    .assert()
    .code(0);
    ws.trusted(&["verify", "--job", JOB, &dest])
        .assert()
        .code(0);
    assert_same_tree(&ws.src, &ws.dest);
}

/// The worked example of a job's chain (`manifests/job-example/`, quoted
/// in docs/manifest.md): custody audits it back to run 1, and stock tools
/// check each link.
#[test]
fn the_example_chain_audits_with_custody_and_with_stock_tools() {
    let ws = Ws::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("manifests/job-example");
    let first = dir.join("20261124T124747Z-293a5b37.json");
    let second = dir.join("20261124T124748Z-2c7d3c36.json");
    let signers = root.join("keys-example/allowed_signers");
    let out = ws
        .custody(&["audit"])
        .arg(&second)
        .arg("--chain")
        .arg(&dir)
        .arg("--allowed-signers")
        .arg(&signers)
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(stdout(&out).contains("chain intact"), "{}", stdout(&out));
    for m in [&first, &second] {
        assert_eq!(crate::audit::schema_errors(m), "");
        let ok = ssh_keygen_verify(&signers, "demo-operator@custody.example", m);
        assert!(ok.status.success(), "{}", stderr(&ok));
    }
    let m2: serde_json::Value = serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(
        m2["job"]["previous"]["sha256"].as_str().unwrap(),
        sha256sum(&first)
    );
}
