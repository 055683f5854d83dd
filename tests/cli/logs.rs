//! Logs for a run nobody watches: progress as periodic one-line summaries,
//! JSON lines for log shippers, a log file, and never a bar in a log.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// The log file's lines, each parsed as one JSON object.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        !text.contains('\r') && !text.contains('\x1b'),
        "no bar or terminal escape in a log file: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn progress<'a>(
    lines: &'a [serde_json::Value],
    phase: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    lines
        .iter()
        .filter(move |l| l["target"] == "custody::progress" && l["phase"] == phase)
}

#[test]
fn a_log_file_gets_json_progress_lines_and_each_phase_ends_with_its_totals() {
    let ws = Ws::new();
    for i in 0..3u64 {
        ws.file(&format!("IM{i}"), &bytes(i, 1 << 20));
    }
    let log = ws.root().join("custody.log");
    let log_arg = log.display().to_string();
    // Held to 1 MiB/s, the copy takes 2 s or more: a line every 200 ms
    // comes at least once before the end.
    let out = ws
        .transfer(&[
            "--log-format",
            "json",
            "--log-file",
            &log_arg,
            "--progress-interval",
            "200ms",
            "--bwlimit",
            "1M",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("copy"),
        "progress goes to the file: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let lines = json_lines(&log);
    let copy: Vec<_> = progress(&lines, "copy").collect();
    let (running, done): (Vec<&serde_json::Value>, Vec<_>) =
        copy.iter().partition(|l| l["done"] == false);
    assert!(!running.is_empty(), "{lines:#?}");
    assert_eq!(done.len(), 1, "{lines:#?}");
    assert_eq!(
        (
            done[0]["files"].clone(),
            done[0]["bytes"].clone(),
            done[0]["errors"].clone()
        ),
        (3.into(), (3u64 << 20).into(), 0.into())
    );
    assert_eq!(done[0]["level"], "INFO");
    assert!(
        done[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("copy done: 3 files, 3.00 MiB, "),
        "{}",
        done[0]
    );
    // Verify knows its totals, so its lines say how far along it is.
    let verify: Vec<_> = progress(&lines, "verify").collect();
    let last = verify.last().expect("a verify line");
    assert_eq!(
        (last["files_total"].clone(), last["bytes_total"].clone()),
        (3.into(), (3u64 << 20).into())
    );

    // A second run appends, and an error is logged as well as printed.
    let before = lines.len();
    let out = ws
        .custody(&["--log-format", "json", "--log-file", &log_arg, "transfer"])
        .arg(&ws.src)
        .arg(&ws.dest)
        .args(["--signing-key", "no-such-key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&log);
    let error = &lines[before..]
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("the error is in the log");
    assert!(
        error["message"].as_str().unwrap().contains("no-such-key"),
        "{error}"
    );
    assert!(
        stderr(&out).contains("custody: error: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn without_a_terminal_progress_goes_to_stderr_as_text_and_quiet_silences_it() {
    let ws = Ws::new();
    ws.file("a/IM1", b"one");
    ws.file("a/IM2", b"two");
    let out = ws.transfer(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("copy done: "))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(" INFO copy done: 2 files, 6 B, "), "{line}");
    assert!(
        line.ends_with("0 error(s)"),
        "fields stay out of text: {line}"
    );
    assert!(err.contains("verify done: 2/2 files, 6 B/6 B"), "{err}");

    let ws = Ws::new();
    ws.file("IM1", b"one");
    let out = ws.transfer(&["-q"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains("done: "), "{}", stderr(&out));
}

#[test]
fn a_log_file_that_cannot_be_opened_is_a_usage_error() {
    let ws = Ws::new();
    ws.file("IM1", b"one");
    let out = ws
        .custody(&["--log-file"])
        .arg(ws.root())
        .args(["ledger", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "custody: error: log file {}: ",
            ws.root().display()
        )),
        "{}",
        stderr(&out)
    );
}
