//! Running unattended: one transfer at a time per ledger and destination.

use crate::support::*;

/// A second transfer into the same place with the same ledger is refused at
/// once (exit 4), naming the running one; once that one is gone (even by
/// `kill -9`), the next run takes over and resumes.
#[test]
fn a_second_transfer_is_refused_naming_the_running_one() {
    let ws = Ws::new();
    for i in 0..3000u64 {
        ws.file(&format!("S{:02}/IM{i:05}", i / 100), &bytes(i, 64 * 1024));
    }
    let (src, dest, key) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
    );
    let mut first = ws
        .spawnable(&[
            "transfer",
            &src,
            &dest,
            "--signing-key",
            &key,
            "--jobs",
            "1",
        ])
        .spawn()
        .unwrap();
    let lock_of = || {
        std::fs::read_dir(ws.root())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".lock"))
    };
    wait_while_running(&mut first, "the lock was taken", || {
        lock_of().is_some_and(|l| std::fs::read_to_string(l).is_ok_and(|t| t.contains("pid")))
    });
    let out = ws.transfer(&[]).assert().code(4).get_output().clone();
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "another transfer is running into {} with this ledger: process {} on ",
            ws.dest.display(),
            first.id()
        )),
        "{err}"
    );
    assert!(err.contains("started 20"), "{err}");
    // A different destination is not held.
    let other = ws.root().join("elsewhere");
    let mut c = ws.custody(&["transfer"]);
    c.arg(&ws.src)
        .arg(&other)
        .arg("--signing-key")
        .arg(ws.key())
        .arg("--no-verify");
    c.assert().code(0);
    // The holder dies without a chance to clean up: the lock goes with it.
    first.kill().unwrap();
    first.wait().unwrap();
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["run"]["resumed"], true);
    assert_same_tree(&ws.src, &ws.dest);
}
