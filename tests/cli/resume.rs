//! Interrupted and failing transfers: kill -9, files that change while
//! read, unreadable files. Each ends resumable, and the rerun completes
//! without copying again what was recorded as landed.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn partials(root: &Path) -> Vec<String> {
    files_under(root)
        .into_iter()
        .filter(|f| f.contains(".custody-partial."))
        .collect()
}

#[test]
fn kill_9_mid_transfer_then_rerun_resumes_without_recopying() {
    let ws = Ws::new();
    // Held to 2 MiB/s, the 25 MiB take 12 s, and a batch is recorded
    // every 250 ms: the kill always lands mid-run, between batches.
    let total = 400u64;
    let mut child = ws.spawn_slow_transfer(total);
    // At least one batch recorded: then SIGKILL.
    wait_while_running(&mut child, "a batch was recorded", || {
        landed_rows(&ws.ledger) > 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let recorded = landed_rows(&ws.ledger) as u64;
    assert!(
        recorded > 0 && recorded < total,
        "killed at {recorded}/{total}"
    );
    // Nothing under a final name is partial: every landed file is whole.
    for f in files_under(&ws.dest) {
        if !f.contains(".custody-partial.") {
            assert_eq!(
                std::fs::read(ws.dest.join(&f)).unwrap(),
                std::fs::read(ws.src.join(&f)).unwrap(),
                "{f} is under its final name but not whole"
            );
        }
    }
    ws.custody(&["ledger", "verify"]).assert().code(0);
    assert!(!ws.manifests.exists() || std::fs::read_dir(&ws.manifests).unwrap().next().is_none());

    let out = ws.transfer(&[]).assert().code(0).get_output().clone();
    let s = json(&out);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["run"]["attempt"], 2);
    assert_eq!(
        s["files_skipped"], recorded,
        "recorded files are not copied again"
    );
    assert_eq!(s["files_copied"], total - recorded);
    assert_eq!(s["verify"]["files_verified"], total);
    assert_eq!(partials(&ws.dest), Vec::<String>::new());
    assert_same_tree(&ws.src, &ws.dest);
    ws.custody(&["ledger", "verify"]).assert().code(0);
    ws.verify(&ws.manifest(), &[]).assert().code(0);
}

#[test]
fn a_file_changing_while_read_fails_alone_and_the_rerun_completes() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 3, 10_000);
    let growing = ws.file("growing.dcm", &bytes(7, 64 << 20));
    let grower = Grower::start(&growing);
    let out = ws.transfer(&[]).assert().code(3).get_output().clone();
    drop(grower);
    let s = json(&out);
    assert_eq!(s["status"], "incomplete");
    assert_eq!(s["failed"], 1);
    assert_eq!(s["files_copied"], 12, "the other files proceed");
    assert!(s["sealed"].is_null(), "an incomplete run is never sealed");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: changed", growing.display())),
        "{err}"
    );
    assert!(!ws.dest.join("growing.dcm").exists());
    assert_eq!(partials(&ws.dest), Vec::<String>::new());
    ws.custody(&["ledger", "verify"]).assert().code(0);

    let out = ws.transfer(&[]).assert().code(0).get_output().clone();
    let s = json(&out);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["files_copied"], 1);
    assert_eq!(s["files_skipped"], 12);
    assert_same_tree(&ws.src, &ws.dest);
}

/// Lets `nobody` (whom [`unprivileged`] runs as under root) use the
/// workspace's folders and the operator's key.
pub(crate) fn open_to_nobody(ws: &Ws) {
    for e in walkdir::WalkDir::new(ws.root()) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            chmod(e.path(), 0o777);
        }
    }
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(ws.key(), Some(65534), Some(65534)).unwrap();
    }
}

/// Runs `custody` without root privileges (as `nobody` via setpriv when the
/// tests run as root, since root reads files whatever their mode).
pub(crate) fn unprivileged(ws: &Ws, args: &[&str]) -> std::process::Output {
    let bin = assert_cmd::cargo::cargo_bin("custody");
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("--ledger")
        .arg(&ws.ledger)
        .arg("--manifest-dir")
        .arg(&ws.manifests)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_unreadable_file_fails_alone_and_the_rerun_completes() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 2, 1_000);
    let locked = ws.file("locked.dcm", b"secret");
    chmod(&locked, 0o000);
    open_to_nobody(&ws);
    let (src, dest, key) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
    );
    let args = ["--json", "transfer", &src, &dest, "--signing-key", &key];
    let out = unprivileged(&ws, &args);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: Permission denied", locked.display())),
        "{err}"
    );
    assert_eq!(json(&out)["files_copied"], 8);

    chmod(&locked, 0o644);
    let out = unprivileged(&ws, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["files_copied"], 1);
    assert_same_tree(&ws.src, &ws.dest);
}

/// Regression: a partial landing left by an interrupted attempt whose source
/// file then disappeared was never removed, so the rerun sealed and then
/// failed its own verify on the leftover (EXTRA .custody-partial.*).
#[test]
fn a_resumed_run_sweeps_partials_left_by_an_interrupted_attempt() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 2, 1_000);
    let growing = ws.file("PAT000/growing.dcm", &bytes(3, 32 << 20));
    let grower = Grower::start(&growing);
    ws.transfer(&[]).assert().code(3);
    drop(grower);
    // What a kill -9 in the middle of that file leaves behind.
    let leftover = ws.dest.join("PAT000/.custody-partial.0123456789abcdef");
    std::fs::write(&leftover, b"half a file").unwrap();
    std::fs::remove_file(&growing).unwrap();

    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["verify"]["discrepancies"].as_array().unwrap().len(), 0);
    assert_eq!(partials(&ws.dest), Vec::<String>::new());
    assert_same_tree(&ws.src, &ws.dest);
}
