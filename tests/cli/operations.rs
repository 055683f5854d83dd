//! Running unattended: one transfer at a time per ledger and destination.

use crate::support::*;

/// A second transfer into the same place with the same ledger is refused at
/// once (exit 4), naming the running one; once that one is gone (even by
/// `kill -9`), the next run takes over and resumes.
#[test]
fn a_second_transfer_is_refused_naming_the_running_one() {
    let ws = Ws::new();
    let mut first = ws.spawn_slow_transfer(400);
    let lock_of = || {
        std::fs::read_dir(ws.root())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".lock"))
    };
    // The lock is taken before the run begins; wait for both, so that the
    // kill below interrupts a run (a kill before its first record would
    // leave nothing to resume).
    wait_while_running(
        &mut first,
        "the lock was taken and a batch recorded",
        || {
            lock_of().is_some_and(|l| std::fs::read_to_string(l).is_ok_and(|t| t.contains("pid")))
                && landed_rows(&ws.ledger) > 0
        },
    );
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
    // Its run (the ledger's first) is resumed: held to 2 MiB/s, it was
    // far from done.
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["run"]["resumed"], true, "{s}");
    assert_same_tree(&ws.src, &ws.dest);
}

/// `custody --json transfer … --jobs 1` plus `extra`, on a stepped clock:
/// its first reading is `now` and each later one a second on, so a run
/// reaches a window's end or `--max-duration` after a set number of
/// readings (a few per file), however fast the machine copies.
fn transfer_at(ws: &Ws, now: &str, extra: &[&str]) -> std::process::Output {
    let mut c = ws.transfer(&["--jobs", "1"]);
    c.args(extra)
        .env("CUSTODY_NOW", now)
        .env("CUSTODY_CLOCK_STEP", "1s");
    c.output().unwrap()
}

/// More small files than a run can start in the minute it is given.
fn small_tree(ws: &Ws) -> u64 {
    let n = 200u64;
    for i in 0..n {
        ws.file(&format!("S{:02}/IM{i:04}", i / 20), &bytes(i, 512));
    }
    n
}

fn manifests(ws: &Ws) -> usize {
    std::fs::read_dir(&ws.manifests)
        .map(|d| d.count())
        .unwrap_or(0)
}

const NIGHTLY: &str = "Mon-Fri 19:00-06:00, Sat-Sun 00:00-24:00";

/// Started a minute before the window closes (2026-11-24 is a Tuesday):
/// it copies until 06:00, then pauses (exit 4, nothing sealed); started
/// again in the evening's window, it resumes and seals.
#[test]
fn a_window_closing_mid_run_pauses_it_and_the_next_window_resumes_it() {
    let ws = Ws::new();
    let n = small_tree(&ws);
    let out = transfer_at(&ws, "2026-11-24T05:59:00[UTC]", &["--window", NIGHTLY]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["status"], "paused");
    assert!(
        s["paused"]
            .as_str()
            .unwrap()
            .starts_with(&format!("the window {NIGHTLY} closed at Tue 06:00")),
        "{s}"
    );
    // At least one reading per file started, and 60 readings to 06:00.
    let copied = s["files_copied"].as_u64().unwrap();
    assert!(copied > 0 && copied < 60, "copied {copied} of {n}");
    assert_eq!(manifests(&ws), 0, "a paused run is not sealed");
    assert_eq!(crate::support::landed_rows(&ws.ledger) as u64, copied);
    // Started outside the window: nothing happens, and it says when.
    let out = transfer_at(&ws, "2026-11-24T12:00:00[UTC]", &["--window", NIGHTLY]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains(&format!(
            "outside the window {NIGHTLY}; it opens Tue 2026-11-24 19:00 UTC"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(crate::support::landed_rows(&ws.ledger) as u64, copied);
    // The evening's window: it resumes where it stopped.
    let out = transfer_at(&ws, "2026-11-24T19:00:00[UTC]", &["--window", NIGHTLY]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["files_skipped"].as_u64().unwrap(), copied);
    assert_eq!(s["files_copied"].as_u64().unwrap(), n - copied);
    assert_same_tree(&ws.src, &ws.dest);
}

/// A window closing while one long file is read stops the run at once:
/// the file goes on for `--grace`, and is given up (nothing landed,
/// nothing recorded) if it has not finished by then; with a longer grace
/// it lands. The next run copies what is left and seals.
#[test]
fn a_file_in_flight_at_the_stop_lands_within_the_grace_or_is_given_up() {
    let ws = Ws::new();
    // 16 reads of 1 MiB, each a second on the stepped clock.
    ws.file("big", &bytes(7, 16 << 20));
    for i in 0..5u64 {
        ws.file(&format!("z{i}"), &bytes(i, 100));
    }
    // The start reads the clock twice (05:59:57, :58), `big` starts at
    // :59, and 06:00 comes with its first read.
    let at = "2026-11-24T05:59:57[UTC]";
    let out = transfer_at(&ws, at, &["--window", NIGHTLY, "--grace", "5s"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["status"], "paused", "{s}");
    assert_eq!(
        (s["files_copied"].clone(), s["files_abandoned"].clone()),
        (0.into(), 1.into()),
        "{s}"
    );
    assert_eq!(crate::support::landed_rows(&ws.ledger), 0);
    assert!(
        files_under(&ws.dest).is_empty(),
        "the given-up landing was removed: {:?}",
        files_under(&ws.dest)
    );
    // As a nightly job would run it, without --json.
    let out = ws
        .transfer_into(&ws.dest)
        .args(["--jobs", "1", "--window", NIGHTLY, "--grace", "1h"])
        .env("CUSTODY_NOW", at)
        .env("CUSTODY_CLOCK_STEP", "1s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "PAUSED: the window {NIGHTLY} closed at Tue 06:00; the run is not sealed. \
             Run the same command again to resume."
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(crate::support::landed_rows(&ws.ledger), 1, "big landed");
    let s = ws.transfer_json(&[], 0);
    assert_eq!(
        (s["files_skipped"].clone(), s["files_copied"].clone()),
        (1.into(), 5.into())
    );
    assert_same_tree(&ws.src, &ws.dest);
}

#[test]
fn max_bytes_and_max_duration_stop_cleanly_and_the_rerun_resumes() {
    let ws = Ws::new();
    for i in 0..10u64 {
        ws.file(&format!("IM{i:02}"), &bytes(i, 1000));
    }
    let out = ws
        .custody(&["--json", "transfer"])
        .arg(&ws.src)
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(ws.key())
        .args(["--max-bytes", "3.5K", "--jobs", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["status"], "paused");
    assert_eq!(s["paused"], "--max-bytes 3500 reached");
    assert_eq!(s["files_copied"], 3);
    let s = ws.transfer_json(&[], 0);
    assert_eq!(
        (s["files_skipped"].clone(), s["files_copied"].clone()),
        (3.into(), 7.into())
    );

    let ws = Ws::new();
    let n = small_tree(&ws);
    let out = transfer_at(&ws, "2026-11-24T12:00:00[UTC]", &["--max-duration", "30s"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["paused"], "--max-duration 30s reached");
    let copied = s["files_copied"].as_u64().unwrap();
    assert!(copied > 0 && copied < 30, "copied {copied} of {n}");
    let s = ws.transfer_json(&[], 0);
    assert_eq!(s["files_copied"].as_u64().unwrap(), n - copied);
}

#[test]
fn bad_limits_are_usage_errors() {
    let ws = Ws::new();
    ws.file("a", b"a");
    for (flag, value, says) in [
        (
            "--window",
            "Mon-Fri 7pm-6am",
            "is not a time range HH:MM-HH:MM",
        ),
        (
            "--window",
            "Funday 19:00-06:00",
            "is not a day or day range",
        ),
        ("--max-bytes", "lots", "--max-bytes"),
        ("--max-duration", "soon", "--max-duration"),
    ] {
        let out = ws.transfer(&[flag, value]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(
            stderr(&out).contains(says),
            "{flag} {value}: {}",
            stderr(&out)
        );
    }
}

/// Completions and the man page come from the CLI definition: bash accepts
/// the script, and both know every command.
#[test]
fn completions_and_man_page_are_generated_from_the_cli() {
    let ws = Ws::new();
    let bash = ws.custody(&["completions", "bash"]).output().unwrap();
    assert_eq!(bash.status.code(), Some(0));
    let script = ws.root().join("custody.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let man = ws.custody(&["manpage"]).output().unwrap();
    assert_eq!(man.status.code(), Some(0));
    let (script, man) = (stdout(&bash), stdout(&man));
    assert!(
        man.starts_with(".ie") && man.contains(".TH custody 1"),
        "{man}"
    );
    for command in [
        "transfer",
        "verify",
        "scan",
        "handoff",
        "databox",
        "job",
        "completions",
    ] {
        assert!(script.contains(command), "completions lack {command}");
        assert!(man.contains(command), "the man page lacks {command}");
    }
}

/// Every command line in `contrib/` runs as written (on a Tuesday evening,
/// inside its window), with this test's paths for the host's: each flag
/// exists and each value parses.
#[test]
fn the_contrib_command_lines_run_as_written() {
    let ws = Ws::new();
    ws.file("IM1", b"one");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let log = ws.root().join("nightly.log");
    let paths = [
        ("/srv/pacs", ws.src.clone()),
        (
            "/mnt/databox/contoso_BlockBlob/pacs-archive",
            ws.dest.clone(),
        ),
        ("/etc/custody/custody_ed25519", ws.key()),
        ("/var/lib/custody/manifests", ws.manifests.clone()),
        ("/var/log/custody/nightly.log", log.clone()),
    ];
    let mut seen = 0;
    for file in ["systemd/custody-nightly.service", "cron/custody-nightly"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // A service's command line continues over "\\\n".
        let text = text.replace("\\\n", " ");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, command)) = line.split_once("/usr/local/bin/custody ") else {
                continue;
            };
            // Each night brings a new file (a night with nothing new does
            // nothing, and logs no progress).
            ws.file(&format!("night{seen}/IM1"), b"new");
            let command = command.split(" >>").next().unwrap();
            let args: Vec<String> = shlex::split(command)
                .unwrap_or_else(|| panic!("{file}: {command}"))
                .into_iter()
                .map(|a| match paths.iter().find(|(host, _)| *host == a) {
                    Some((_, here)) => here.display().to_string(),
                    None => a,
                })
                .collect();
            let out = assert_cmd::Command::cargo_bin("custody")
                .unwrap()
                .current_dir(ws.root())
                .args(&args)
                .env("CUSTODY_LEDGER", &ws.ledger)
                .env("CUSTODY_NOW", "2026-11-24T20:00:00[UTC]")
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{file}: {args:?}: {}",
                stderr(&out)
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 3, "one service, two cron lines");
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("INFO"),
        "the cron lines log to their --log-file"
    );
}

/// `--bwlimit`: destination writes keep to the rate the timetable has in
/// force, and a new rate takes over when its time comes.
#[test]
fn the_bandwidth_timetable_holds_writes_to_its_rate_and_changes_on_time() {
    let ws = Ws::new();
    for i in 0..3u64 {
        ws.file(&format!("IM{i}"), &bytes(i, 1 << 20));
    }
    let table = "06:00,1M 19:00,off";
    // At noon, 1 MiB/s: the bucket's first second's worth goes at once,
    // the other 2 MiB take two seconds at least (a floor the limiter
    // guarantees, however fast or slow the machine).
    let out = ws
        .transfer(&["-v", "--jobs", "2", "--bwlimit", table])
        .env("CUSTODY_NOW", "2026-11-24T12:00:00[UTC]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copy = json(&out)["copy_seconds"].as_f64().unwrap();
    assert!(copy >= 1.9, "3 MiB at 1 MiB/s in {copy} s");
    assert!(
        stderr(&out).contains(&format!("bandwidth limit 1.0 MiB/s (--bwlimit {table})")),
        "{}",
        stderr(&out)
    );

    // Just before 19:00 on a stepped clock (a second per reading; the
    // start reads it twice, each write once): the limit is lifted at
    // 19:00, while the run waits on it.
    let ws = Ws::new();
    for i in 0..3u64 {
        ws.file(&format!("IM{i}"), &bytes(i, 1 << 20));
    }
    let out = ws
        .transfer(&["-v", "--jobs", "1", "--bwlimit", table])
        .env("CUSTODY_NOW", "2026-11-24T18:59:55[UTC]")
        .env("CUSTODY_CLOCK_STEP", "1s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let limited = err.find("bandwidth limit 1.0 MiB/s").expect(&err);
    let lifted = err
        .find(&format!("bandwidth limit off (--bwlimit {table})"))
        .expect(&err);
    assert!(limited < lifted, "{err}");
    assert_same_tree(&ws.src, &ws.dest);

    // A spec that does not parse is a usage error, naming what is wrong.
    let out = ws.transfer(&["--bwlimit", "06:00,20MB"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(r#"bandwidth timetable "06:00,20MB": "20MB" is not a rate"#),
        "{}",
        stderr(&out)
    );
}
