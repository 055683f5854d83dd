//! Never destroy or misrecord: what an attacker, or an unlucky operator,
//! can put in custody's way (docs/SECURITY.md, "Hazards"). Each test here
//! failed on the code before the fix it pins (issue 17), with the outcome
//! it names: a rollback that deleted the source, writes and removals
//! through planted symbolic links, a FIFO that hung a nightly run, expired
//! keys accepted, a non-copy-log recorded as a pass, a second run
//! overwriting a sealed one, file names forging output lines, an empty
//! source sealed as a success, and the smaller ones.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// `custody --json rollback MANIFEST DEST --allowed-signers S` plus `extra`.
fn rollback(ws: &Ws, m: &Path, dest: &Path, extra: &[&str]) -> std::process::Output {
    ws.custody(&["--json", "rollback"])
        .arg(m)
        .arg(dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .args(extra)
        .output()
        .unwrap()
}

/// `custody --ledger LEDGER --manifest-dir DIR ARGS` in the workspace: a
/// second operator's ledger beside `ws`'s.
fn custody_with(ws: &Ws, ledger: &str, args: &[&str]) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("custody").unwrap();
    c.current_dir(ws.root())
        .env_remove("CUSTODY_LEDGER")
        .env_remove("CUSTODY_SIGNING_KEY")
        .arg("--ledger")
        .arg(ws.root().join(format!("{ledger}.db")))
        .arg("--manifest-dir")
        .arg(ws.root().join(format!("{ledger}-manifests")))
        .args(args);
    c
}

fn yes(ws: &Ws) -> Vec<String> {
    vec![
        "--yes".into(),
        "--signing-key".into(),
        ws.key().display().to_string(),
    ]
}

#[test]
fn rollback_refuses_the_source_inside_it_above_it_and_a_stranger() {
    let ws = Ws::new();
    ws.file("a/IM1", b"one");
    ws.file("a/IM2", b"two");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    let src_before = tree_digest(&ws.src);
    let signed: Vec<String> = yes(&ws);
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    // The source itself, a folder inside it, and a folder holding it:
    // refused, dry run or not, and nothing read or removed.
    for (target, relation) in [
        (ws.src.clone(), "is"),
        (ws.src.join("a"), "is inside"),
        (ws.root().to_path_buf(), "holds"),
    ] {
        for extra in [&[][..], &signed[..], &["--destination-moved"][..]] {
            let out = rollback(&ws, &m, &target, extra);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{target:?} {extra:?}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains(&format!(
                    "{}: {relation} {}, the source this manifest was copied from",
                    std::fs::canonicalize(&target).unwrap().display(),
                    ws.src.display()
                )),
                "{err}"
            );
            assert!(err.contains("hint: nothing was removed"), "{err}");
            assert_eq!(json(&out)["error"]["exit_code"], 2);
        }
    }
    assert_eq!(tree_digest(&ws.src), src_before, "the source is untouched");
    // A copy elsewhere is not the destination the manifest records...
    let copy = ws.root().join("copy");
    std::fs::create_dir_all(copy.join("a")).unwrap();
    for f in ["a/IM1", "a/IM2"] {
        std::fs::copy(ws.dest.join(f), copy.join(f)).unwrap();
    }
    let out = rollback(&ws, &m, &copy, &signed);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not the destination this manifest records"),
        "{}",
        stderr(&out)
    );
    assert_eq!(files_under(&copy), ["a/IM1", "a/IM2"]);
    // ... unless the operator says the share was remounted there.
    let out = rollback(&ws, &m, &copy, &["--destination-moved"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["report"]["removed"], 2);
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn rollback_never_removes_through_a_symbolic_link() {
    let ws = Ws::new();
    ws.file("sub/a.dcm", b"aaa");
    ws.file("sub/b.dcm", b"bbb");
    ws.file("top.dcm", b"top");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    // The landed folder replaced by a link to the source's: every file
    // "matches", and the originals are what would go.
    std::fs::remove_dir_all(ws.dest.join("sub")).unwrap();
    symlink(ws.src.join("sub"), ws.dest.join("sub")).unwrap();
    let src_before = tree_digest(&ws.src);
    let signed = yes(&ws);
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    let out = rollback(&ws, &m, &ws.dest, &signed);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = json(&out);
    let left: Vec<(String, String)> = r["report"]["left"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().into(),
                l["detail"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    for ((path, detail), want) in left.iter().zip(["sub/a.dcm", "sub/b.dcm"]) {
        assert_eq!(path, want);
        assert!(
            detail.contains(&format!(
                "{}: is a symbolic link",
                ws.dest.join("sub").display()
            )),
            "{detail}"
        );
    }
    assert_eq!(r["report"]["removed"], 1, "top.dcm is a real file and goes");
    assert_eq!(
        tree_digest(&ws.src),
        src_before,
        "nothing behind the link went"
    );
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn transfer_refuses_a_symbolic_link_in_dest_before_anything_moves() {
    let ws = Ws::new();
    ws.file("sub/a.txt", b"new");
    ws.file("other.txt", b"other");
    let outside = ws.root().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("a.txt"), b"original").unwrap();
    std::fs::create_dir_all(&ws.dest).unwrap();
    symlink(&outside, ws.dest.join("sub")).unwrap();
    let before = tree_digest(&outside);
    let out = ws.transfer(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "sub/a.txt (exists-at-destination: {}: is a symbolic link",
            ws.dest.join("sub").display()
        )),
        "{err}"
    );
    assert_eq!(tree_digest(&outside), before);
    assert!(!ws.dest.join("other.txt").exists(), "nothing moved");
    assert!(!ws.manifests.exists() || std::fs::read_dir(&ws.manifests).unwrap().count() == 0);
    // --overwrite allows replacing files, never writing through a link.
    let out = ws.transfer(&["--overwrite", "always"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(tree_digest(&outside), before);
}

#[test]
fn a_link_planted_while_a_transfer_runs_fails_only_the_files_behind_it() {
    let ws = Ws::new();
    let outside = ws.root().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let mut child = ws.spawn_slow_transfer(300);
    // Once the first folder is landing, plant a link where the last one
    // will go.
    wait_while_running(&mut child, "the first landing", || {
        ws.dest.join("S00").exists()
    });
    symlink(&outside, ws.dest.join("S02")).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(
        landed_rows(&ws.ledger),
        200,
        "S00 and S01 landed; S02 failed"
    );
    ws.custody(&["ledger", "verify"]).assert().code(0);
    // The link removed, the same command completes.
    std::fs::remove_file(ws.dest.join("S02")).unwrap();
    let j = ws.transfer_json(&["--jobs", "1"], 0);
    assert_eq!(j["files_copied"], 100);
    assert_same_tree(&ws.src, &ws.dest);
}

#[test]
fn decrypt_never_writes_through_links_and_never_overwrites_unasked() {
    let ws = Ws::new();
    let key = ws.encryption_key();
    ws.file("sub/a.dcm", b"secret a");
    ws.file("b.dcm", b"secret b");
    ws.file("c.dcm", b"secret c");
    ws.transfer_json(&["--encrypt-key", key.to_str().unwrap()], 0);
    let restored = ws.root().join("restored");
    let outside = ws.root().join("elsewhere");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    symlink(&outside, restored.join("sub")).unwrap();
    std::fs::write(restored.join("b.dcm"), b"mine").unwrap();
    let decrypt = |extra: &[&str]| {
        ws.custody(&["decrypt"])
            .arg(&ws.dest)
            .arg(&restored)
            .arg("--decrypt-key")
            .arg(&key)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = decrypt(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: is a symbolic link",
            restored.join("sub").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}: already exists; not overwritten (see --overwrite)",
            restored.join("b.dcm").display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(std::fs::read(restored.join("b.dcm")).unwrap(), b"mine");
    assert_eq!(std::fs::read(restored.join("c.dcm")).unwrap(), b"secret c");
    // Asked to, it replaces; the link still stops what is behind it.
    let out = decrypt(&["--overwrite"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(restored.join("b.dcm")).unwrap(), b"secret b");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    std::fs::remove_file(restored.join("sub")).unwrap();
    let out = decrypt(&["--overwrite"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(&ws.src, &restored);
}

#[test]
fn a_source_file_swapped_for_a_fifo_fails_alone_and_the_run_ends() {
    let ws = Ws::new();
    ws.file("a.bin", &bytes(1, 3 << 20));
    let z = ws.file("z.dat", b"last");
    let mut child = ws
        .transfer_at(&ws.dest, "1M")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Walked as a regular file; a FIFO by the time the worker opens it.
    // The walker runs ahead of the one worker, but on a loaded host it can
    // be descheduled just after handing over a.bin: waiting until 2 MiB of
    // a.bin have landed (a second or more at 1M/s) leaves it that long to
    // have met z.dat, so the swap cannot beat the walk.
    wait_while_running(&mut child, "2 MiB of a.bin landing", || {
        std::fs::read_dir(&ws.dest).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".custody-partial.")
                    && e.metadata().is_ok_and(|m| m.len() >= 2 << 20)
            })
        })
    });
    std::fs::remove_file(&z).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&z)
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the transfer hung on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("{}: is no longer a regular file", z.display())),
        "{err}"
    );
    assert_eq!(landed_rows(&ws.ledger), 1, "a.bin landed, z.dat did not");
    // The lock went with the run: the next one is not refused, and once
    // the file is a file again it lands and the run seals.
    std::fs::remove_file(&z).unwrap();
    std::fs::write(&z, b"last").unwrap();
    let j = ws.transfer_json(&[], 0);
    assert_eq!(j["files_copied"], 1);
    assert_same_tree(&ws.src, &ws.dest);
}

#[test]
fn allowed_signers_options_are_honoured_as_ssh_keygen_honours_them() {
    let ws = Ws::new();
    ws.file("a.dcm", b"a");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    let public = std::fs::read_to_string(ws.keys.join("custody_ed25519.pub")).unwrap();
    let signers = |name: &str, line: &str| {
        let p = ws.root().join(name);
        std::fs::write(&p, format!("{line} {public}")).unwrap();
        p
    };
    let audit = |trust: &Path| {
        ws.custody(&["audit"])
            .arg(&m)
            .arg("--allowed-signers")
            .arg(trust)
            .output()
            .unwrap()
    };
    for (name, options, why) in [
        ("expired", r#"valid-before="20200101Z""#, "has expired"),
        ("future", r#"valid-after="20990101Z""#, "is not yet valid"),
        (
            "other-namespace",
            r#"namespaces="file""#,
            "namespaces= does not allow it",
        ),
    ] {
        let trust = signers(name, &format!("{IDENTITY} {options}"));
        // Stock OpenSSH refuses them...
        assert!(
            !ssh_keygen_verify(&trust, IDENTITY, &m).status.success(),
            "{name}"
        );
        // ... and so does every custody command that reads a manifest.
        let out = audit(&trust);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{name}: {}", stderr(&out));
        for command in ["verify", "rollback"] {
            let out = ws
                .custody(&[command])
                .arg(&m)
                .arg(&ws.dest)
                .arg("--allowed-signers")
                .arg(&trust)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name} {command}: {}",
                stderr(&out)
            );
            if command == "verify" {
                assert!(stderr(&out).contains(why), "{name}: {}", stderr(&out));
            }
        }
    }
    // A window around the sealing time is fine for both.
    let trust = signers(
        "window",
        &format!(r#"{IDENTITY} valid-after="20200101",valid-before="20990101""#),
    );
    assert!(ssh_keygen_verify(&trust, IDENTITY, &m).status.success());
    assert_eq!(audit(&trust).status.code(), Some(0));
    // An option custody does not know is refused, not ignored.
    let trust = signers("unknown", &format!(r#"{IDENTITY} no-touch-required"#));
    let out = audit(&trust);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unsupported option"),
        "{}",
        stderr(&out)
    );

    // `ledger verify --allowed-signers` binds the key to its principal and
    // to the ledger namespace, like every other check.
    let ledger_verify = |trust: &Path| {
        ws.custody(&["ledger", "verify", "--allowed-signers"])
            .arg(trust)
            .output()
            .unwrap()
    };
    assert_eq!(ledger_verify(&ws.signers()).status.code(), Some(0));
    for (name, line) in [
        (
            "manifest-only",
            format!(r#"{IDENTITY} namespaces="custody-manifest""#),
        ),
        (
            "someone-else",
            r#"eve@elsewhere.example namespaces="custody-ledger""#.to_owned(),
        ),
        (
            "ledger-expired",
            format!(r#"{IDENTITY} valid-before="20200101Z""#),
        ),
    ] {
        let out = ledger_verify(&signers(name, &line));
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("does not verify against the trust file"),
            "{name}: {}",
            stdout(&out)
        );
    }
}

/// A sealed transfer into a Data Box-shaped share (container `pacs`).
fn sealed_on_a_databox(ws: &Ws) -> PathBuf {
    ws.file("PAT1/IM1.dcm", b"one");
    ws.file("PAT1/IM2.dcm", b"two");
    let dest = ws.root().join("databox/contoso_BlockBlob/pacs");
    std::fs::create_dir_all(&dest).unwrap();
    ws.transfer_into(&dest).assert().code(0);
    ws.manifest()
}

#[test]
fn copylog_check_records_no_pass_for_what_is_not_a_clean_copy_log() {
    let ws = Ws::new();
    let m = sealed_on_a_databox(&ws);
    let check = |doc: &str| {
        let p = ws.root().join("copylog.xml");
        std::fs::write(&p, doc).unwrap();
        ws.custody(&["databox", "copylog-check"])
            .arg(&m)
            .arg(&p)
            .arg("--allowed-signers")
            .arg(ws.signers())
            .arg("--signing-key")
            .arg(ws.key())
            .output()
            .unwrap()
    };
    let deep = format!("{}{}", "<a>".repeat(50_000), "</a>".repeat(50_000));
    let deep_inside = format!(
        "<CopyLog><Status>Succeeded</Status><TotalFiles_Blobs>2</TotalFiles_Blobs><FilesErrored>0</FilesErrored>{}{}</CopyLog>",
        "<x>".repeat(50_000),
        "</x>".repeat(50_000)
    );
    for (doc, why) in [
        ("<foo/>", "its root element is <foo>, not <CopyLog>"),
        (deep.as_str(), "its root element is <a>"),
        (deep_inside.as_str(), "elements nest deeper than"),
        (
            "<CopyLog></CopyLog>",
            "its summary (Status, TotalFiles_Blobs and FilesErrored) is missing",
        ),
    ] {
        let out = check(doc);
        assert_eq!(out.status.code(), Some(2), "{why}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("not a Data Box copy log: {why}")),
            "{}",
            stderr(&out)
        );
    }
    // A copy log that reports failure, even naming no file, is a failure.
    let out = check(
        "<CopyLog Summary=\"Summary\"><Status>Failed</Status><TotalFiles_Blobs>2</TotalFiles_Blobs><FilesErrored>2</FilesErrored></CopyLog>",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Summary          ALL FILES: the copy log reports upload status Failed and 2 errored file(s) but names 0"),
        "{}",
        stdout(&out)
    );
    let results: Vec<String> = ws
        .db()
        .prepare(
            "SELECT json_extract(payload, '$.result') FROM events WHERE kind = 'copylog_checked'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, ["fail"], "no pass was ever recorded");
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn a_plain_directory_is_never_overwritten_by_another_run_nor_written_by_two_at_once() {
    let ws = Ws::new();
    ws.file("x.dcm", b"first run");
    ws.file("y.dcm", b"first run too");
    ws.transfer_json(&[], 0);
    let first = ws.manifest();
    let other = ws.root().join("srcB");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("x.dcm"), b"another source").unwrap();
    std::fs::write(other.join("z.dcm"), b"new").unwrap();
    let second = |extra: &[&str]| {
        ws.custody(&["transfer"])
            .arg(&other)
            .arg(&ws.dest)
            .arg("--signing-key")
            .arg(ws.key())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = second(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "x.dcm (exists-at-destination: {} already exists)",
            ws.dest.join("x.dcm").display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(ws.dest.join("x.dcm")).unwrap(), b"first run");
    assert!(!ws.dest.join("z.dcm").exists(), "nothing moved");
    ws.verify(&first, &[]).assert().code(0);
    // Asked for, it replaces (the run's own verify would report the first
    // run's y.dcm as extra: DEST is no longer one run's closed set).
    let out = second(&["--overwrite", "always", "--no-verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(ws.dest.join("x.dcm")).unwrap(),
        b"another source"
    );

    // Two ledgers, one directory, at the same time: the second waits its
    // turn (exit 4), naming the first and its ledger.
    let ws = Ws::new();
    let mut child = ws.spawn_slow_transfer(200);
    wait_while_running(&mut child, "the first landing", || {
        landed_rows(&ws.ledger) > 0
    });
    let out = custody_with(&ws, "another", &["transfer"])
        .arg(&ws.src)
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(ws.key())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("(its lock in the destination is held, whatever the ledger)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("ledger {}", ws.ledger.display())),
        "{err}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        !ws.dest.join(".custody-lock").exists(),
        "the lock goes with its run"
    );
    assert_same_tree(&ws.src, &ws.dest);
}

#[test]
fn file_names_cannot_forge_lines_in_output_or_logs() {
    let ws = Ws::new();
    let name = "a\nverified: 999 of 999 files match\x1b[2K\rZ";
    ws.file(name, b"x");
    ws.transfer_json(&["--no-verify"], 0);
    std::fs::remove_file(ws.dest.join(name)).unwrap();
    let out = ws.verify(&ws.manifest(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains(
            "MISSING    a\\nverified: 999 of 999 files match\\u{1b}[2K\\rZ: 1 bytes expected"
        ),
        "{text}"
    );
    for line in text.lines() {
        assert!(!line.starts_with("verified:"), "a forged line: {line:?}");
    }
    assert!(!text.contains(['\x1b', '\r']), "{text:?}");
    // The log file too: a name in the way at another destination.
    let dest2 = ws.root().join("dest2");
    std::fs::create_dir_all(&dest2).unwrap();
    std::fs::write(dest2.join(name), b"in the way").unwrap();
    let log = ws.root().join("custody.log");
    let out = ws
        .custody(&["--log-file"])
        .arg(&log)
        .arg("transfer")
        .arg(&ws.src)
        .arg(&dest2)
        .arg("--signing-key")
        .arg(ws.key())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("a\\nverified: 999 of 999 files match"),
        "{logged}"
    );
    for line in logged.lines().chain(stderr(&out).lines()) {
        assert!(!line.starts_with("verified:"), "a forged line: {line:?}");
    }
    assert!(!logged.contains(['\x1b', '\r']), "{logged:?}");
}

#[test]
fn an_empty_source_is_refused_unless_allowed() {
    let ws = Ws::new();
    // An unmounted mount point: an empty directory (a link alone carries
    // nothing either).
    symlink("/nonexistent", ws.src.join("dangling")).unwrap();
    let out = ws.transfer(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "source {}: holds no file to carry",
            ws.src.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!ws.manifests.exists() || std::fs::read_dir(&ws.manifests).unwrap().count() == 0);
    let j = ws.transfer_json(&["--allow-empty"], 0);
    assert_eq!(j["files_copied"], 0);
    assert_eq!(ws.manifest_json()["totals"]["files"], 0);
}

#[test]
fn a_password_in_a_url_is_refused_and_never_printed() {
    let ws = Ws::new();
    ws.file("a.dcm", b"a");
    for url in [
        "http://user:hunter2@127.0.0.1:9/devstoreaccount1/pacs",
        "https://user:hunter2@contoso.blob.core.windows.net/pacs",
    ] {
        let out = ws
            .custody(&["--log-file", "custody.log", "transfer"])
            .arg(&ws.src)
            .arg(url)
            .arg("--signing-key")
            .arg(ws.key())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let all = stdout(&out)
            + &stderr(&out)
            + &std::fs::read_to_string(ws.root().join("custody.log")).unwrap();
        assert!(all.contains("has a user name or password in it"), "{all}");
        assert!(!all.contains("hunter2"), "{all}");
    }
}

#[test]
fn what_custody_writes_is_not_readable_by_others_whatever_the_umask() {
    let ws = Ws::new();
    let key = ws.encryption_key();
    ws.file("PAT/IM1.dcm", b"patient data");
    let loose = |args: &[&str]| {
        let mut c = std::process::Command::new("sh");
        c.current_dir(ws.root())
            .arg("-c")
            .arg("umask 000 && exec \"$@\"")
            .arg("sh")
            .arg(assert_cmd::cargo::cargo_bin("custody"))
            .arg("--ledger")
            .arg(&ws.ledger)
            .arg("--manifest-dir")
            .arg(&ws.manifests)
            .args(args);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    let (src, dest, k) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
    );
    loose(&[
        "transfer",
        &src,
        &dest,
        "--signing-key",
        &k,
        "--encrypt-key",
        key.to_str().unwrap(),
    ]);
    let m = ws.manifest();
    let restored = ws.root().join("restored");
    loose(&[
        "decrypt",
        &dest,
        restored.to_str().unwrap(),
        "--decrypt-key",
        key.to_str().unwrap(),
    ]);
    let report = ws.root().join("report.md");
    loose(&[
        "report",
        m.to_str().unwrap(),
        "--allowed-signers",
        ws.signers().to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    let export = ws.root().join("events.json");
    let id = m.file_stem().unwrap().to_str().unwrap().to_owned();
    loose(&[
        "log",
        "--manifest",
        &id,
        "--export",
        export.to_str().unwrap(),
    ]);
    let mut sig = m.clone().into_os_string();
    sig.push(".sig");
    for p in [
        ws.ledger.clone(),
        m.clone(),
        PathBuf::from(sig),
        restored.join("PAT/IM1.dcm"),
        ws.dest.join("PAT/IM1.dcm.custody-enc"),
        report,
        export,
    ] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o027, 0, "{} is {mode:03o}", p.display());
    }
    for lock in std::fs::read_dir(ws.root()).unwrap().flatten() {
        let name = lock.file_name().to_string_lossy().into_owned();
        if name.starts_with("custody.db") {
            let mode = lock.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o027, 0, "{name} is {mode:03o}");
        }
    }
}

#[test]
fn the_markdown_report_shows_operator_and_handoff_fields_as_written() {
    let ws = Ws::new();
    ws.file("a.dcm", b"a");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    ws.custody(&["handoff"])
        .arg(&m)
        .args([
            "--from",
            "J. Doe | <img src=x onerror=alert(1)>",
            "--to",
            "*Courier* [link](http://x.example)",
            "--purpose",
            "ship\n# injected heading",
        ])
        .arg("--signing-key")
        .arg(ws.key())
        .assert()
        .code(0);
    let out = ws
        .custody(&["report"])
        .arg(&m)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(
        md.contains(r"J. Doe \| \<img src=x onerror=alert(1)\>")
            && md.contains(r"\*Courier\* \[link\](http://x.example)"),
        "{md}"
    );
    // Every < is escaped, and no line starts a heading of its own.
    assert_eq!(md.matches('<').count(), md.matches("\\<").count(), "{md}");
    assert!(!md.contains("\n# injected"), "{md}");
}

#[test]
fn keygen_refuses_identities_an_allowed_signers_file_cannot_carry() {
    let ws = Ws::new();
    for (identity, why) in [
        (r#"ops"@x"#, "has a double quote"),
        ("ops @x", "white space"),
        ("a@x,b@y", "has a comma"),
        ("*", "pattern"),
        ("", "is empty"),
    ] {
        let dir = ws.root().join("k");
        let out = ws
            .custody(&["keygen", "--out"])
            .arg(&dir)
            .args(["--identity", identity])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{identity:?}");
        assert!(stderr(&out).contains(why), "{identity:?}: {}", stderr(&out));
        assert!(!dir.exists(), "{identity:?}: nothing written");
    }
}

#[test]
fn an_overlapping_destination_is_refused_before_it_is_created() {
    let ws = Ws::new();
    ws.file("a.dcm", b"a");
    let inner = ws.src.join("inner/dst");
    let out = ws.transfer_into(&inner).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("overlaps the destination"),
        "{}",
        stderr(&out)
    );
    assert!(
        !ws.src.join("inner").exists(),
        "nothing created in the source"
    );
}

/// Plants a link at every depth under `root`, each to its own folder of
/// `outside` holding a file of the same name as the one custody would
/// write there: a top-level file, a first-level folder, a second-level one
/// and a third-level one.
fn plant_links(root: &Path, outside: &Path) {
    for (at, rel) in [
        ("f0.dcm", "f0.dcm"),
        ("d1", "d1"),
        ("e1/d2", "d2"),
        ("g1/g2/d3", "d3"),
    ] {
        let target = outside.join(rel.replace('/', "_"));
        if at.ends_with(".dcm") {
            std::fs::write(&target, b"outside file").unwrap();
        } else {
            std::fs::create_dir_all(&target).unwrap();
            std::fs::write(target.join("f.dcm"), b"outside").unwrap();
        }
        let link = root.join(at);
        if link.symlink_metadata().is_ok() {
            if link.is_dir() && !link.symlink_metadata().unwrap().file_type().is_symlink() {
                std::fs::remove_dir_all(&link).unwrap();
            } else {
                std::fs::remove_file(&link).unwrap();
            }
        }
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&target, &link).unwrap();
    }
}

#[test]
fn links_at_every_depth_change_nothing_outside_the_destination() {
    let ws = Ws::new();
    let key = ws.encryption_key();
    for f in [
        "f0.dcm",
        "d1/f.dcm",
        "e1/d2/f.dcm",
        "g1/g2/d3/f.dcm",
        "g1/keep.dcm",
    ] {
        ws.file(f, f.as_bytes());
    }
    let outside = ws.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();

    // Rollback of a sealed run whose destination then grew links.
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    plant_links(&ws.dest, &outside);
    let before = tree_digest(&outside);
    let src_before = tree_digest(&ws.src);
    let signed = yes(&ws);
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    let out = rollback(&ws, &m, &ws.dest, &signed);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        json(&out)["report"]["removed"],
        1,
        "only g1/keep.dcm is a real landed file"
    );

    // A transfer into a destination seeded with them.
    let dest2 = ws.root().join("dest2");
    std::fs::create_dir_all(&dest2).unwrap();
    plant_links(&dest2, &outside);
    let out = ws.transfer_into(&dest2).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("preflight: 4 violation(s)"),
        "{}",
        stderr(&out)
    );

    // A decrypt into a restore folder seeded with them.
    let enc = ws.root().join("enc");
    let out = custody_with(&ws, "enc", &["transfer"])
        .arg(&ws.src)
        .arg(&enc)
        .arg("--signing-key")
        .arg(ws.key())
        .arg("--encrypt-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let restored = ws.root().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    plant_links(&restored, &outside);
    let out = ws
        .custody(&["decrypt"])
        .arg(&enc)
        .arg(&restored)
        .arg("--decrypt-key")
        .arg(&key)
        .arg("--overwrite")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(restored.join("g1/keep.dcm")).unwrap(),
        b"g1/keep.dcm"
    );

    assert_eq!(tree_digest(&outside), before, "nothing outside changed");
    assert_eq!(tree_digest(&ws.src), src_before, "nor the source");
}
