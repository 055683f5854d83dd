//! Destination faults on a real filesystem: a share that fills up, one
//! that turns read-only, and one unmounted under a running transfer. Each uses a small tmpfs
//! mounted for the test (it needs CAP_SYS_ADMIN, which CI has; without it
//! the test says so and fails rather than pass untested).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (needs root / CAP_SYS_ADMIN): {}",
            stderr(&out)
        );
        Tmpfs(at.to_owned())
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// Remounts it read-only under a running transfer. The kernel refuses
    /// (EBUSY) while a file is open for writing, so this retries until it
    /// meets the moment between two files: a few milliseconds.
    fn remount_read_only(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match rustix::mount::mount_remount(&self.0, rustix::mount::MountFlags::RDONLY, "") {
                Ok(()) => return,
                Err(rustix::io::Errno::BUSY) if std::time::Instant::now() < deadline => {}
                Err(e) => panic!("remount read-only: {e}"),
            }
        }
    }

    fn remount_read_write(&self) {
        rustix::mount::mount_remount(&self.0, rustix::mount::MountFlags::empty(), "").unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Every landed row's file is whole at the destination.
fn recorded_files_are_whole(ws: &Ws, dest: &Path) -> i64 {
    let db = ws.db();
    let mut stmt = db.prepare("SELECT path FROM landed").unwrap();
    let paths: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for p in &paths {
        assert_eq!(
            std::fs::read(dest.join(p)).ok(),
            Some(std::fs::read(ws.src.join(p)).unwrap()),
            "{p} is recorded as landed but is not whole at the destination"
        );
    }
    paths.len() as i64
}

#[test]
fn a_share_that_fills_up_fails_what_does_not_fit_and_the_rerun_completes() {
    let ws = Ws::new();
    for i in 0..12u64 {
        ws.file(&format!("S1/IM{i:02}"), &bytes(i, 512 << 10));
    }
    let fs = Tmpfs::mount(&ws.root().join("box"), "3m");
    let dest = ws.root().join("box/pacs");
    let mut c = ws.custody(&["--json", "transfer"]);
    c.arg(&ws.src)
        .arg(&dest)
        .arg("--signing-key")
        .arg(ws.key())
        .args(["--jobs", "1"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    let s = json(&out);
    assert_eq!(s["status"], "incomplete");
    assert!(s["failed"].as_u64().unwrap() > 0, "{s}");
    // Nothing is recorded that did not land whole.
    let recorded = recorded_files_are_whole(&ws, &dest);
    assert_eq!(recorded as u64, s["files_copied"].as_u64().unwrap());
    assert!(recorded < 12);
    ws.custody(&["ledger", "verify"]).assert().code(0);

    // More room: the same command finishes the run.
    fs.resize("16m");
    let s = rerun_into(&ws, &dest);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["files_skipped"].as_i64().unwrap(), recorded);
    assert_eq!(s["verify"]["files_verified"], 12);
    assert_same_tree(&ws.src, &dest);
}

/// 200 files of 64 KiB, and a transfer of them into `dest` held to 2 MiB/s
/// (so about 6 s), once it has recorded a batch.
fn slow_transfer_under_way(ws: &Ws, dest: &Path) -> std::process::Child {
    for i in 0..200u64 {
        ws.file(&format!("S{:02}/IM{i:04}", i / 50), &bytes(i, 64 << 10));
    }
    let mut child = ws
        .slow_transfer_to(dest)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "a batch was recorded", || {
        landed_rows(&ws.ledger) > 0
    });
    child
}

/// The same transfer into `dest` again, which must seal: its summary.
fn rerun_into(ws: &Ws, dest: &Path) -> serde_json::Value {
    let mut c = ws.custody(&["--json", "transfer"]);
    c.arg(&ws.src).arg(dest).arg("--signing-key").arg(ws.key());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json(&out)
}

#[test]
fn a_share_unmounted_under_a_running_transfer_records_nothing_after_and_the_rerun_completes() {
    let ws = Ws::new();
    let fs = Tmpfs::mount(&ws.root().join("box"), "64m");
    let dest = ws.root().join("box/pacs");
    // Held to 2 MiB/s, the run is mid-way when the share goes.
    let child = slow_transfer_under_way(&ws, &dest);
    // The share is unmounted (lazily, as a dropped SMB session would be):
    // the path now names the empty mount point.
    drop(fs);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("is no longer the directory this run opened (unmounted, or replaced?)"),
        "{err}"
    );
    let recorded = landed_rows(&ws.ledger);
    assert!(recorded > 0 && recorded < 200, "{recorded}");
    ws.custody(&["ledger", "verify"]).assert().code(0);

    // Mounted again (empty: a tmpfs keeps nothing): the rerun finds what
    // it recorded is gone, copies everything again, and seals.
    let _fs = Tmpfs::mount(&ws.root().join("box"), "64m");
    let s = rerun_into(&ws, &dest);
    assert_eq!(s["files_copied"], 200, "{s}");
    assert_eq!(s["verify"]["files_verified"], 200);
    assert_same_tree(&ws.src, &dest);
}

#[test]
fn a_share_turning_read_only_mid_run_fails_cleanly_and_the_rerun_completes() {
    let ws = Ws::new();
    let fs = Tmpfs::mount(&ws.root().join("box"), "64m");
    let dest = ws.root().join("box/pacs");
    let child = slow_transfer_under_way(&ws, &dest);
    fs.remount_read_only();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    // Nothing is recorded that did not land whole, and the record holds.
    let recorded = recorded_files_are_whole(&ws, &dest);
    assert!(recorded > 0 && recorded < 200, "{recorded}");
    ws.custody(&["ledger", "verify"]).assert().code(0);

    // Writable again: the same command resumes and seals.
    fs.remount_read_write();
    let s = rerun_into(&ws, &dest);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["files_skipped"].as_i64().unwrap(), recorded);
    assert_eq!(s["verify"]["files_verified"], 200);
    assert_same_tree(&ws.src, &dest);
}

#[test]
fn a_ledger_whose_disk_fills_up_stops_the_run_cleanly_and_the_rerun_completes() {
    let ws = Ws::new();
    // Long names make the ledger grow fast: 400 files, a 1 MiB ledger disk.
    for i in 0..400u64 {
        ws.file(&format!("{}/IM{i:04}", "S".repeat(200)), &bytes(i, 100));
    }
    let fs = Tmpfs::mount(&ws.root().join("ledger-disk"), "512k");
    let ledger = ws.root().join("ledger-disk/custody.db");
    let run = |code: i32| {
        let out = ws
            .custody(&["--json", "transfer"])
            .arg("--ledger")
            .arg(&ledger)
            .arg(&ws.src)
            .arg(&ws.dest)
            .arg("--signing-key")
            .arg(ws.key())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        out
    };
    let out = run(3);
    let err = stderr(&out);
    assert!(err.contains("database or disk is full"), "{err}");
    // What the ledger holds is consistent, and every row it holds landed.
    ws.custody(&["ledger", "verify", "--ledger"])
        .arg(&ledger)
        .assert()
        .code(0);

    fs.resize("16m");
    let s = json(&run(0));
    assert_eq!(s["run"]["resumed"], true, "{s}");
    assert_eq!(s["verify"]["files_verified"], 400);
    assert_same_tree(&ws.src, &ws.dest);
}

/// Also a regression: the ledger's set-up lock was a second descriptor of
/// the ledger file, closed after SQLite had opened it; closing it dropped
/// this process's POSIX locks, so the other process, closing, took itself
/// for the last connection and checkpointed and removed the WAL under this
/// one (`disk I/O error`, on the rerun after the seal that reads the
/// ledger on a second connection).
#[test]
fn a_ledger_locked_by_another_process_is_waited_for() {
    let ws = Ws::new();
    ws.file("IM1", b"one");
    ws.transfer_json(&[], 0);
    ws.file("IM2", b"two");
    // Another process holds the ledger's write lock for two seconds.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\n\
             c=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(2); c.execute('COMMIT')",
        ])
        .arg(&ws.ledger)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    // The transfer waits for it (SQLite's busy timeout) instead of failing.
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["status"], "complete");
    assert!(holder.wait().unwrap().success());
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

/// A transfer into Azurite through the fault proxy, `--jobs 1`.
fn through_proxy(ws: &Ws, url: &str, extra: &[&str]) -> std::process::Command {
    let (src, key) = (ws.src.display().to_string(), ws.key().display().to_string());
    let mut c = ws.spawnable(&[
        "--json",
        "transfer",
        &src,
        url,
        "--signing-key",
        &key,
        "--jobs",
        "1",
    ]);
    c.args(extra)
        .env("AZURE_STORAGE_KEY", crate::support::azurite::KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

#[test]
fn http_503_storms_are_retried_and_a_storm_past_the_retries_fails_files_not_the_record() {
    use std::sync::atomic::Ordering;
    let ws = Ws::new();
    let az = crate::support::azurite::Azurite::start(&ws.root().join("azurite"));
    let proxy = crate::support::proxy::Proxy::start(az.port);
    for i in 0..40u64 {
        ws.file(&format!("s/IM{i:03}"), &bytes(i, 256 << 10));
    }
    let url = proxy.url(&az.url("pacs/storm"), az.port);

    // A short storm (three refusals): retried with backoff, unnoticed.
    proxy.faults.storm(3);
    let out = through_proxy(&ws, &url, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(proxy.faults.failed.load(Ordering::SeqCst), 3);
    assert!(
        stderr(&out).contains("transient failure; retrying"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&out)["verify"]["files_verified"], 40);

    // A storm that outlasts the retries, mid-run: the files in it fail,
    // nothing is recorded for them, exit 3; after it, the rerun completes.
    let ws = Ws::new();
    for i in 0..40u64 {
        ws.file(&format!("s/IM{i:03}"), &bytes(i, 256 << 10));
    }
    let url = proxy.url(&az.url("pacs/long-storm"), az.port);
    let mut child = through_proxy(&ws, &url, &["--bwlimit", "2M"])
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "files landed", || landed_rows(&ws.ledger) >= 3);
    proxy.faults.storm(1_000_000);
    let out = child.wait_with_output().unwrap();
    proxy.faults.fail_next.store(0, Ordering::SeqCst);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let s = json(&out);
    assert!(s["failed"].as_u64().unwrap() > 0, "{s}");
    assert!(s["sealed"].is_null());
    let landed = landed_rows(&ws.ledger) as u64;
    assert_eq!(landed, s["files_copied"].as_u64().unwrap());
    ws.custody(&["ledger", "verify"]).assert().code(0);
    let out = through_proxy(&ws, &url, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["files_skipped"].as_u64().unwrap(), landed);
    assert_eq!(s["verify"]["files_verified"], 40);
}

#[test]
fn a_slow_endpoint_is_waited_for() {
    use std::sync::atomic::Ordering;
    let ws = Ws::new();
    let az = crate::support::azurite::Azurite::start(&ws.root().join("azurite"));
    let proxy = crate::support::proxy::Proxy::start(az.port);
    proxy.faults.delay_ms.store(300, Ordering::SeqCst);
    for i in 0..10u64 {
        ws.file(&format!("s/IM{i:03}"), &bytes(i, 100 << 10));
    }
    let url = proxy.url(&az.url("pacs/slow"), az.port);
    let out = through_proxy(&ws, &url, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["verify"]["files_verified"], 10);
}
