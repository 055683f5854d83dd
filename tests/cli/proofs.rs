//! Proofs an auditor can hold (docs/proofs.md): a bundle proving one
//! study of a multi-study manifest and nothing else, checked by custody,
//! by stock `ssh-keygen` and by an independent Python verifier
//! (`tests/proof_reference.py`); each tamper refused with exit 1 and a
//! reason; ledger checkpoints that a quietly rewritten ledger no longer
//! extends; and a witness that cosigns an extension and refuses a fork.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::support::*;

/// Five synthetic studies of three instances each, and one of pydicom's
/// real files; returns each DICOM file's study.
fn studies(ws: &Ws) -> BTreeMap<String, String> {
    let made = crate::dicomweb::studies(&ws.src, 5, 3, 64);
    let real = ws.src.join("REAL/CT_small.dcm");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::copy(pydicom_files().join("CT_small.dcm"), real).unwrap();
    ws.file("notes/readme.txt", b"not DICOM");
    made.into_iter().map(|i| (i.path, i.study)).collect()
}

fn python(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = std::process::Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proof_reference.py"));
    for a in args {
        c.arg(a);
    }
    c.output().expect("python3")
}

fn prove(ws: &Ws, manifest: &Path, choice: &[&str], out: &Path) -> Output {
    prove_trusting(ws, &ws.signers(), manifest, choice, out)
}

/// `custody prove` with `signers` as the trust file.
fn prove_trusting(ws: &Ws, signers: &Path, manifest: &Path, choice: &[&str], out: &Path) -> Output {
    ws.custody(&["prove"])
        .arg(manifest)
        .args(choice)
        .arg("--out")
        .arg(out)
        .arg("--allowed-signers")
        .arg(signers)
        .output()
        .unwrap()
}

fn check(ws: &Ws, bundle: &Path, extra: &[&str]) -> Output {
    check_trusting(ws, &ws.signers(), bundle, extra)
}

/// `custody check-proof` with `signers` as the trust file.
fn check_trusting(ws: &Ws, signers: &Path, bundle: &Path, extra: &[&str]) -> Output {
    ws.custody(&["check-proof"])
        .arg(bundle)
        .arg("--allowed-signers")
        .arg(signers)
        .args(extra)
        .output()
        .unwrap()
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// `ssh-keygen -Y verify` of a checkpoint signed by [`IDENTITY`], as
/// docs/proofs.md shows it.
fn ssh_keygen_checks(signers: &Path, checkpoint: &Path) -> Output {
    ssh_keygen_checks_for(signers, IDENTITY, checkpoint)
}

fn ssh_keygen_checks_for(signers: &Path, identity: &str, checkpoint: &Path) -> Output {
    std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(signers)
        .args(["-I", identity, "-n", "custody-checkpoint", "-s"])
        .arg(format!("{}.sig", checkpoint.display()))
        .stdin(std::fs::File::open(checkpoint).unwrap())
        .output()
        .unwrap()
}

#[test]
fn a_study_bundle_proves_that_study_alone_with_custody_ssh_keygen_and_python() {
    let ws = Ws::new();
    let study_of = studies(&ws);
    ws.transfer(&[]).assert().code(0);
    let manifest = ws.manifest();
    let m = ws.manifest_json();
    assert_eq!(m["version"], 9);
    assert_eq!(m["tree"]["base"], 4);
    assert_eq!(m["tree"]["size"], 17);
    // The seal's tree is the one Python computes from the entries.
    let py = python(&[&"tree", &manifest]);
    let tree: Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(tree["root"], m["tree"]["root"], "{}", stderr(&py));
    assert_eq!(tree["size"], 17);
    // The checkpoint beside it, checked by stock OpenSSH.
    let checkpoint = manifest.with_extension("checkpoint");
    let cp_text = std::fs::read_to_string(&checkpoint).unwrap();
    let id = m["id"].as_str().unwrap();
    assert!(
        cp_text.starts_with(&format!("custody-manifest/{id}\n17\n")),
        "{cp_text}"
    );
    let ok = ssh_keygen_checks(&ws.signers(), &checkpoint);
    assert!(ok.status.success(), "{}", stderr(&ok));

    let (study, chosen): (&String, Vec<&String>) = {
        let s = study_of.values().nth(4).unwrap();
        (
            s,
            study_of
                .iter()
                .filter(|(_, st)| *st == s)
                .map(|(p, _)| p)
                .collect(),
        )
    };
    assert_eq!(chosen.len(), 3);
    // A bare file name as --out, in the current directory (a bundle written
    // by name alone once failed its directory fsync on "").
    let out = prove(
        &ws,
        &manifest,
        &["--study", study],
        Path::new("study.proof.json"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bundle = ws.root().join("study.proof.json");
    let b = read(&bundle);
    let entries = b["entries"].as_array().unwrap();
    let paths: Vec<String> = entries
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["leaf"].as_str().unwrap()).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(paths.iter().collect::<Vec<_>>(), chosen);
    // Nothing else of the manifest: no other file's path, no other study.
    let text = std::fs::read_to_string(&bundle).unwrap();
    for (path, st) in &study_of {
        if st != study {
            assert!(
                !text.contains(path.as_str()),
                "{path} leaked into the bundle"
            );
            assert!(
                !text.contains(st.as_str()),
                "study {st} leaked into the bundle"
            );
        }
    }
    for other in [
        "REAL/CT_small.dcm",
        "notes/readme.txt",
        "/src",
        "hospital.example",
    ] {
        assert!(!text.contains(other), "{other} leaked into the bundle");
    }
    let ok = check(&ws, &bundle, &[]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("proof holds: 3 entries of manifest"));
    // A checkpoint lost after the seal is written again from the ledger by
    // the next run, the same bytes.
    let signature = std::fs::read(format!("{}.sig", checkpoint.display())).unwrap();
    std::fs::remove_file(&checkpoint).unwrap();
    std::fs::remove_file(format!("{}.sig", checkpoint.display())).unwrap();
    ws.transfer(&[]).assert().code(0);
    assert_eq!(std::fs::read_to_string(&checkpoint).unwrap(), cp_text);
    assert_eq!(
        std::fs::read(format!("{}.sig", checkpoint.display())).unwrap(),
        signature
    );
    let py = python(&[&"check", &bundle, &ws.signers()]);
    assert_eq!(py.status.code(), Some(0), "{}", stdout(&py));
    assert_eq!(stdout(&py).matches("PROVEN").count(), 3);
    // The short script docs/proofs.md shows auditors, run as printed.
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/proofs.md"))
        .unwrap();
    let script = doc
        .split("```python\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(ws.root())
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).matches(" PROVEN").count(),
        3,
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // A path, and a folder; a choice that matches nothing is a usage error.
    let two = ws.root().join("two.json");
    let out = prove(
        &ws,
        &manifest,
        &["--path", "REAL", "--path", "notes/readme.txt"],
        &two,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(&two)["entries"].as_array().unwrap().len(), 2);
    assert_eq!(check(&ws, &two, &[]).status.code(), Some(0));
    let none = prove(&ws, &manifest, &["--study", "1.2.3.4"], &two);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("no entry matches --study 1.2.3.4"));
}

/// The bundle of one study, the manifest, and a second manifest of a tree
/// with one more file (so a tree of another size) in the same workspace.
fn two_manifests(ws: &Ws) -> (PathBuf, PathBuf, String) {
    let study_of = studies(ws);
    ws.transfer(&[]).assert().code(0);
    let first = ws.manifest();
    let study = study_of.values().next().unwrap().clone();
    ws.file("late/extra.bin", b"one more file");
    let other_dest = ws.root().join("dest2");
    ws.transfer_into(&other_dest).assert().code(0);
    let second = std::fs::read_dir(&ws.manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json") && *p != first)
        .unwrap();
    (first, second, study)
}

#[test]
fn each_tamper_fails_with_exit_1_and_says_what() {
    let ws = Ws::new();
    let (first, second, study) = two_manifests(&ws);
    let good_path = ws.root().join("good.json");
    assert!(
        prove(&ws, &first, &["--study", &study], &good_path)
            .status
            .success()
    );
    let good = read(&good_path);
    let theirs_path = ws.root().join("theirs.json");
    assert!(
        prove(&ws, &second, &["--study", &study], &theirs_path)
            .status
            .success()
    );
    let theirs = read(&theirs_path);
    assert_eq!(read(&second)["tree"]["size"], 18);

    let tampered = ws.root().join("tampered.json");
    let refused = |b: &Value, says: &str| {
        write(&tampered, b);
        let out = check(&ws, &tampered, &[]);
        assert_eq!(out.status.code(), Some(1), "{says}: {}", stdout(&out));
        assert!(stdout(&out).contains(says), "{says}: {}", stdout(&out));
        let py = python(&[&"check", &tampered, &ws.signers()]);
        assert_eq!(py.status.code(), Some(1), "python, {says}: {}", stdout(&py));
    };
    let leaf = |b: &Value| -> Value {
        serde_json::from_str(b["entries"][0]["leaf"].as_str().unwrap()).unwrap()
    };
    let path0 = leaf(&good)["path"].as_str().unwrap().to_owned();
    let not_led = "its proof does not lead to the checkpoint's root";

    // An edited entry: another size, canonically written.
    let mut b = good.clone();
    let mut e = leaf(&b);
    e["size"] = json!(e["size"].as_u64().unwrap() + 1);
    b["entries"][0]["leaf"] = json!(serde_json::to_string(&e).unwrap());
    refused(&b, &format!("{path0} (leaf"));
    refused(&b, not_led);
    // An entry (and its proof) from another manifest.
    let mut b = good.clone();
    b["entries"][0] = theirs["entries"][0].clone();
    refused(&b, not_led);
    // The same entry's proof in the tree of another size.
    let mut b = good.clone();
    b["entries"][0]["proof"] = theirs["entries"][0]["proof"].clone();
    assert_ne!(b, good);
    refused(&b, not_led);
    // A checkpoint that claims another size.
    let mut b = good.clone();
    let text = b["checkpoint"]
        .as_str()
        .unwrap()
        .replacen("\n17\n", "\n18\n", 1);
    b["checkpoint"] = json!(text);
    refused(&b, "checkpoint signature");
    // A reordered proof, a truncated proof.
    let mut b = good.clone();
    let proof = b["entries"][0]["proof"].as_array_mut().unwrap();
    assert!(proof.len() >= 2);
    proof.swap(0, 1);
    refused(&b, not_led);
    let mut b = good.clone();
    b["entries"][0]["proof"].as_array_mut().unwrap().pop();
    refused(&b, not_led);
    // The checkpoint signed by another key.
    let eve = ws.root().join("eve");
    ws.custody(&["keygen", "--out"])
        .arg(&eve)
        .args(["--identity", "eve@elsewhere.example"])
        .assert()
        .success();
    let key = custody::keys::SigningKey::load(&eve.join("custody_ed25519")).unwrap();
    let mut b = good.clone();
    b["signature"] = json!(
        key.sign(
            "custody-checkpoint",
            good["checkpoint"].as_str().unwrap().as_bytes()
        )
        .unwrap()
    );
    refused(&b, "checkpoint signature");
    // No bundle: a usage error.
    let out = check(&ws, &ws.root().join("no-such.json"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Not a bundle at all.
    std::fs::write(&tampered, "{\"format\":\"custody-proof\",\"version\":1}").unwrap();
    let out = check(&ws, &tampered, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a custody proof bundle"),
        "{}",
        stderr(&out)
    );
    // And the untouched bundle still holds.
    write(&tampered, &good);
    assert_eq!(check(&ws, &tampered, &[]).status.code(), Some(0));
}

/// Edits event `seq`'s payload, then re-hashes the chain from there and
/// re-signs every signed event with the operator's own key, as whoever
/// holds the key and the ledger could: the ledger stays self-consistent.
fn rewrite_from(ws: &Ws, seq: u64, edit: impl Fn(&mut Value)) {
    rewrite(ws, seq, true, edit)
}

/// As [`rewrite_from`]; with `retree` false, the signed events keep the
/// `ledger_tree` they recorded (a rewrite that forgot them).
fn rewrite(ws: &Ws, seq: u64, retree: bool, edit: impl Fn(&mut Value)) {
    use custody::merkle::{Builder, to_hex};
    let key = custody::keys::SigningKey::load(&ws.key()).unwrap();
    let db = ws.db();
    let before: Vec<String> = db
        .prepare("SELECT hash FROM events WHERE seq < ?1 ORDER BY seq")
        .unwrap()
        .query_map([seq], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut tree = Builder::new();
    for h in &before {
        tree.push(h.as_bytes());
    }
    let mut prev = before.last().cloned().unwrap_or_else(|| "0".repeat(64));
    type Row = (
        u64,
        String,
        String,
        Option<u64>,
        Option<String>,
        String,
        Option<String>,
    );
    let rows: Vec<Row> = db
        .prepare(
            "SELECT seq, at, kind, run_id, manifest_id, payload, signature FROM events
             WHERE seq >= ?1 ORDER BY seq",
        )
        .unwrap()
        .query_map([seq], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (s, at, kind, run, manifest, payload, signature) in rows {
        let mut p: Value = serde_json::from_str(&payload).unwrap();
        if s == seq {
            edit(&mut p);
        }
        if retree && p.get("ledger_tree").is_some() {
            let r = tree.root();
            p["ledger_tree"] = json!({ "root": to_hex(&r.hash), "size": r.size });
        }
        let text = serde_json::to_string(&p).unwrap();
        let hash =
            custody::ledger::event_hash(s, &at, &kind, run, manifest.as_deref(), &text, &prev);
        let sig = signature.map(|_| key.sign("custody-ledger", hash.as_bytes()).unwrap());
        db.execute(
            "UPDATE events SET payload = ?1, prev_hash = ?2, hash = ?3, signature = ?4 WHERE seq = ?5",
            rusqlite::params![text, prev, hash, sig, s],
        )
        .unwrap();
        tree.push(hash.as_bytes());
        prev = hash;
    }
}

fn handoff(ws: &Ws, manifest: &Path, to: &str) {
    ws.custody(&["handoff"])
        .arg(manifest)
        .arg("--signing-key")
        .arg(ws.key())
        .args([
            "--from",
            "J. Doe (hospital IT)",
            "--to",
            to,
            "--purpose",
            "ship",
        ])
        .assert()
        .success();
}

fn ledger_checkpoint(ws: &Ws, out: &Path) -> Value {
    let o = ws
        .custody(&["--json", "ledger", "checkpoint", "--out"])
        .arg(out)
        .arg("--signing-key")
        .arg(ws.key())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    json(&o)
}

fn since(ws: &Ws, checkpoint: &Path, extra: &[&str]) -> Output {
    ws.custody(&["ledger", "verify", "--since"])
        .arg(checkpoint)
        .args(extra)
        .output()
        .unwrap()
}

/// The witness's key, and an allowed_signers file naming it for the
/// witness namespace.
fn witness_key(ws: &Ws) -> (PathBuf, PathBuf) {
    let dir = ws.root().join("compliance");
    ws.custody(&["keygen", "--out"])
        .arg(&dir)
        .args(["--identity", "compliance@hospital.example"])
        .assert()
        .success();
    let public = std::fs::read_to_string(dir.join("custody_ed25519.pub")).unwrap();
    let key = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let signers = ws.root().join("witnesses");
    std::fs::write(
        &signers,
        format!("compliance@hospital.example namespaces=\"custody-witness\" {key}\n"),
    )
    .unwrap();
    (dir.join("custody_ed25519"), signers)
}

fn cosign(ws: &Ws, checkpoint: &Path, key: &Path, state: &Path) -> Output {
    ws.custody(&["witness", "cosign"])
        .arg(checkpoint)
        .arg("--key")
        .arg(key)
        .arg("--state")
        .arg(state)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap()
}

#[test]
fn a_ledger_rewritten_after_a_checkpoint_passes_plain_verify_but_not_since_and_the_witness_sees_the_fork()
 {
    let ws = Ws::new();
    studies(&ws);
    ws.transfer(&[]).assert().code(0);
    let manifest = ws.manifest();
    handoff(&ws, &manifest, "Courier 1Z999");
    let (wkey, witnesses) = witness_key(&ws);
    let state = ws.root().join("witness-state");

    let old = ws.root().join("audit/ledger-1.checkpoint");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    let c = ledger_checkpoint(&ws, &old);
    let size = c["size"].as_u64().unwrap();
    let ok = ssh_keygen_checks(&ws.signers(), &old);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let out = cosign(&ws, &old, &wkey, &state);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("the first checkpoint seen"));

    // Signed events carry the tree of the events before them.
    let handoff_payload: String = ws
        .db()
        .query_row("SELECT payload FROM events WHERE seq = ?1", [size], |r| {
            r.get(0)
        })
        .unwrap();
    let p: Value = serde_json::from_str(&handoff_payload).unwrap();
    assert_eq!(p["ledger_tree"]["size"], size - 1);

    // The ledger grows: it still extends the checkpoint, proven, and the
    // witness cosigns the extension.
    handoff(&ws, &manifest, "Azure datacenter AMS");
    let out = since(&ws, &old, &["--witness", witnesses.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("extends checkpoint custody-ledger/"));
    let grown = ws.root().join("audit/ledger-2.checkpoint");
    ledger_checkpoint(&ws, &grown);
    let out = cosign(&ws, &grown, &wkey, &state);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("extends size {size}")),
        "{}",
        stdout(&out)
    );

    // A rewrite that re-hashes and re-signs but leaves the trees the signed
    // events recorded is caught by `ledger verify` alone.
    let kept = ws.root().join("kept.db");
    std::fs::copy(&ws.ledger, &kept).unwrap();
    rewrite(&ws, size, false, |p| {
        p["to"] = json!("Courier 0000 (forged)")
    });
    let plain = ws.custody(&["ledger", "verify"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(1), "{}", stdout(&plain));
    assert!(
        stdout(&plain).contains(&format!(
            "event {} (handoff): its ledger_tree is not the tree of the events before it",
            size + 1
        )),
        "{}",
        stdout(&plain)
    );
    std::fs::copy(&kept, &ws.ledger).unwrap();

    // Rewrite the first handoff (the event the old checkpoint ends with):
    // the chain is re-hashed and re-signed with the operator's own key.
    rewrite_from(&ws, size, |p| p["to"] = json!("Courier 0000 (forged)"));
    let plain = ws.custody(&["ledger", "verify"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(0), "{}", stdout(&plain));
    let out = since(&ws, &old, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let said = stdout(&out);
    assert!(
        said.contains("the ledger does not extend the checkpoint"),
        "{said}"
    );
    assert!(
        said.contains(&format!("event {size} (handoff at "))
            && said.contains("is the first that differs"),
        "{said}"
    );
    let j = json(
        &ws.custody(&["--json", "ledger", "verify", "--since"])
            .arg(&old)
            .output()
            .unwrap(),
    );
    assert_eq!(j["result"], "fail");
    assert_eq!(j["since"]["first_difference"], size);

    // The rewritten ledger's checkpoint is a fork: the witness refuses it.
    let forged = ws.root().join("audit/ledger-3.checkpoint");
    ledger_checkpoint(&ws, &forged);
    let out = cosign(&ws, &forged, &wkey, &state);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused: a fork of custody-ledger/"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new(&format!("{}.cosig", forged.display())).exists());
    // A rollback (an older checkpoint after a newer one) is refused too.
    let out = cosign(&ws, &old, &wkey, &state);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("a rollback"), "{}", stderr(&out));

    // An event list edited to hide the rewrite (the old list's hashes
    // replaced by today's) no longer hashes to its signed checkpoint.
    let list = format!("{}.events", old.display());
    let mut l: Value = read(Path::new(&list));
    let today: Vec<String> = ws
        .db()
        .prepare("SELECT hash FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    l["events"] = json!(today[..size as usize]);
    write(Path::new(&list), &l);
    let out = since(&ws, &old, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("the checkpoint's event list does not hash to the checkpoint"),
        "{}",
        stdout(&out)
    );
    // A checkpoint that is not there is a usage error; one without its
    // signature does not verify.
    let missing = ws.root().join("audit/none.checkpoint");
    assert_eq!(since(&ws, &missing, &[]).status.code(), Some(2));
    std::fs::remove_file(format!("{}.sig", grown.display())).unwrap();
    let out = since(&ws, &grown, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ledger-2.checkpoint.sig"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_proof_with_witness_requires_a_trusted_cosignature() {
    let ws = Ws::new();
    let study_of = studies(&ws);
    ws.transfer(&[]).assert().code(0);
    let manifest = ws.manifest();
    let study = study_of.values().next().unwrap();
    let (wkey, witnesses) = witness_key(&ws);
    let bundle = ws.root().join("b.json");
    assert!(
        prove(&ws, &manifest, &["--study", study], &bundle)
            .status
            .success()
    );
    let w = witnesses.to_str().unwrap();
    let out = check(&ws, &bundle, &["--witness", w]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no cosignature by a trusted witness (it has no cosignature)"));

    // The operator cannot witness their own checkpoint.
    let checkpoint = manifest.with_extension("checkpoint");
    let own = cosign(&ws, &checkpoint, &ws.key(), &ws.root().join("own-state"));
    assert!(own.status.success(), "{}", stderr(&own));
    assert!(
        prove(&ws, &manifest, &["--study", study], &bundle)
            .status
            .success()
    );
    let out = check(&ws, &bundle, &["--witness", ws.signers().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("one is by the checkpoint's own signer"),
        "{}",
        stdout(&out)
    );

    let out = cosign(&ws, &checkpoint, &wkey, &ws.root().join("state"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        prove(&ws, &manifest, &["--study", study], &bundle)
            .status
            .success()
    );
    assert_eq!(read(&bundle)["cosignatures"].as_array().unwrap().len(), 2);
    let out = check(&ws, &bundle, &["--witness", w]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("WITNESSED  by SHA256:"));
    // A witness that has not seen the log's keys refuses to guess.
    let out = ws
        .custody(&["witness", "cosign"])
        .arg(&checkpoint)
        .arg("--key")
        .arg(&wkey)
        .arg("--state")
        .arg(ws.root().join("state2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs the log's keys"));
    // A manifest sealed before version 9 has no tree to prove with.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = prove_trusting(
        &ws,
        &root.join("keys-example/allowed_signers"),
        &root.join("manifests/example.json"),
        &["--path", "p1"],
        Path::new("x.json"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("manifest version 1 has no Merkle tree"),
        "{}",
        stderr(&out)
    );
}

/// The worked example (`manifests/proof-example/`, docs/proofs.md "Test
/// vector"): a version 9 manifest of three synthetic studies signed with
/// the demo key, its checkpoint, and a bundle proving the first study.
#[test]
fn the_worked_example_proves_its_study_with_custody_ssh_keygen_and_python() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("manifests/proof-example");
    let m = dir.join("20261207T111901Z-1f0b4700.json");
    let signers = root.join("keys-example/allowed_signers");
    assert_eq!(crate::audit::schema_errors(&m), "");
    let ws = Ws::new();
    let audited = ws
        .custody(&["audit"])
        .arg(&m)
        .arg("--allowed-signers")
        .arg(&signers)
        .output()
        .unwrap();
    assert_eq!(audited.status.code(), Some(0), "{}", stdout(&audited));
    let v = read(&m);
    assert_sealed_as(&v, 4);
    // Each entry's BLAKE3 is its synthetic source file's.
    for f in v["files"].as_array().unwrap() {
        let bytes = std::fs::read(dir.join("source").join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["blake3"], blake3::hash(&bytes).to_hex().to_string());
    }
    // The values docs/proofs.md quotes.
    assert_eq!(
        v["tree"]["root"],
        "b455af2edc56fad2f1460ae7f30b0fef7013e830626b78a34358a131d97a0627"
    );
    let py = python(&[&"tree", &m]);
    assert_eq!(read_json(&py)["root"], v["tree"]["root"]);
    let checkpoint = dir.join("20261207T111901Z-1f0b4700.checkpoint");
    let ok = ssh_keygen_checks_for(&signers, "demo-operator@custody.example", &checkpoint);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let bundle = dir.join("study.proof.json");
    let checked = check_trusting(&ws, &signers, &bundle, &[]);
    assert_eq!(checked.status.code(), Some(0), "{}", stdout(&checked));
    assert!(stdout(&checked).contains(
        "proof holds: 2 entries of manifest 20261207T111901Z-1f0b4700 (a tree of 7 entries"
    ));
    let indices: Vec<u64> = read(&bundle)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [1, 2]);
    let py = python(&[&"check", &bundle, &signers]);
    assert_eq!(py.status.code(), Some(0), "{}", stdout(&py));
    // What `prove` writes today for the same study is the same bundle.
    let again = ws.root().join("again.json");
    let study = "1.2.826.0.1.3680043.8.498.56293327470616781562569826667489157473";
    let out = prove_trusting(&ws, &signers, &m, &["--study", study], &again);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&bundle).unwrap()
    );
}

fn read_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}
