//! `--metrics-file`: Prometheus text for node_exporter's textfile collector
//! (docs/operations.md, "Monitoring"). Every file written is checked by
//! `promtool check metrics` (Debian's `prometheus`, which scripts/test
//! installs); its values agree with the same run's `--json`; the file is
//! replaced by a rename while a run goes on, never rewritten in place; it
//! carries no path; and a file that cannot be written never fails a run.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::resume::{open_to_nobody, unprivileged};
use crate::support::*;

/// One file's samples: `name{labels}` (labels sorted, the three every
/// custody metric carries left out) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut kept: Vec<&str> = labels
            .split(',')
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("custody_job=")
                    && !l.starts_with("destination_kind=")
                    && !l.starts_with("command=")
            })
            .collect();
        kept.sort_unstable();
        let key = match kept.is_empty() {
            true => name.to_owned(),
            false => format!("{name}{{{}}}", kept.join(",")),
        };
        out.insert(key, value.parse().expect("a number"));
    }
    out
}

/// The labels every sample of `text` carries, as written in the first.
fn common_labels(text: &str) -> BTreeMap<String, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("custody_build_info"))
        .unwrap();
    let labels = line.split_once('{').unwrap().1.split_once('}').unwrap().0;
    labels
        .split(',')
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .filter(|(k, _)| k != "version")
        .collect()
}

/// `promtool check metrics` accepts `text` (its linter too).
fn promtool_accepts(text: &str) {
    let out = with_stdin(
        std::process::Command::new("promtool").args(["check", "metrics"]),
        text.as_bytes(),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        stdout(&out),
        stderr(&out)
    );
}

fn read(path: &Path) -> (String, BTreeMap<String, f64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let s = samples(&text);
    (text, s)
}

fn get(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {s:#?}"))
}

/// No file is left beside the metrics file but the file itself.
fn nothing_beside(path: &Path) {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(name) && n != name)
        .collect();
    assert_eq!(left, Vec::<String>::new(), "temporary files left");
}

/// The time of the ledger's latest event of `kind` (with `pass`, a
/// `verified` event that passed), as Unix seconds.
fn ledger_time(ws: &Ws, kind: &str) -> f64 {
    let at: String = ws
        .db()
        .query_row(
            "SELECT MAX(at) FROM events WHERE kind = ?1 AND (kind <> 'verified' OR payload LIKE '%\"result\":\"pass\"%')",
            [kind],
            |r| r.get(0),
        )
        .unwrap();
    let t: jiff::Timestamp = at.parse().unwrap();
    t.as_millisecond() as f64 / 1000.0
}

#[test]
fn a_transfers_metrics_pass_promtool_and_agree_with_its_json() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 3, 5_000);
    let locked = ws.file("PAT000/locked.dcm", b"unreadable to the service user");
    chmod(&locked, 0o000);
    open_to_nobody(&ws);
    let prom = ws.root().join("textfile/custody-nightly.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    chmod(prom.parent().unwrap(), 0o777);
    let (src, dest, key, metrics) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
        prom.display().to_string(),
    );
    let args = [
        "--json",
        "transfer",
        &src,
        &dest,
        "--signing-key",
        &key,
        "--job",
        "pacs-nightly",
        "--metrics-file",
        &metrics,
    ];

    // An attempt with an unreadable file: incomplete, and said so.
    let out = unprivileged(&ws, &args);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let j = json(&out);
    let (text, s) = read(&prom);
    promtool_accepts(&text);
    assert_eq!(
        common_labels(&text),
        BTreeMap::from([
            ("command".into(), "transfer".into()),
            ("custody_job".into(), "pacs-nightly".into()),
            ("destination_kind".into(), "share".into()),
        ])
    );
    assert_eq!(
        get(&s, "custody_files_copied_total"),
        j["files_copied"].as_f64().unwrap()
    );
    assert_eq!(
        get(&s, "custody_bytes_copied_total"),
        j["bytes_copied"].as_f64().unwrap()
    );
    assert_eq!(j["failed"], 1);
    assert_eq!(j["failures"][0]["class"], "source_unreadable");
    assert_eq!(
        get(&s, "custody_failures_total{class=\"source_unreadable\"}"),
        1.0
    );
    let failures: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("custody_failures_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(failures, 1.0, "one failure, one class");
    assert_eq!(get(&s, "custody_run_status{status=\"incomplete\"}"), 1.0);
    assert_eq!(get(&s, "custody_run_status{status=\"running\"}"), 0.0);
    assert_eq!(get(&s, "custody_run_exit_code"), 3.0);
    assert_eq!(get(&s, "custody_phase{phase=\"done\"}"), 1.0);
    assert!(
        !s.contains_key("custody_last_seal_timestamp_seconds"),
        "never sealed"
    );
    // Readable by the collector (another user); nothing of the source in it.
    let meta = std::fs::metadata(&prom).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    for private in [&src, "PAT000", "locked.dcm", "STUDY0"] {
        assert!(!text.contains(private), "{private} in the metrics:\n{text}");
    }
    nothing_beside(&prom);

    // The rerun lands the rest: skipped, copied and verified agree with
    // its summary, and the ledger's seal and verify times are the job's.
    chmod(&locked, 0o644);
    let out = unprivileged(&ws, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = json(&out);
    let (text, s) = read(&prom);
    promtool_accepts(&text);
    assert_eq!(get(&s, "custody_files_copied_total"), 1.0);
    assert_eq!(
        get(&s, "custody_files_copied_total"),
        j["files_copied"].as_f64().unwrap()
    );
    assert_eq!(
        get(&s, "custody_files_skipped_total"),
        j["files_skipped"].as_f64().unwrap()
    );
    assert_eq!(
        get(&s, "custody_bytes_skipped_total"),
        j["bytes_skipped"].as_f64().unwrap()
    );
    assert_eq!(
        get(&s, "custody_files_verified_total"),
        j["verify"]["files_verified"].as_f64().unwrap()
    );
    assert_eq!(
        get(&s, "custody_bytes_verified_total"),
        j["verify"]["bytes_read"].as_f64().unwrap()
    );
    assert_eq!(get(&s, "custody_files_verified_total"), 13.0);
    for class in ["missing", "extra", "size", "hash", "unreadable"] {
        assert_eq!(
            get(
                &s,
                &format!("custody_integrity_failures_total{{class=\"{class}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(get(&s, "custody_run_status{status=\"ok\"}"), 1.0);
    assert_eq!(get(&s, "custody_run_exit_code"), 0.0);
    let events: f64 = ws
        .db()
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
        .unwrap() as f64;
    assert_eq!(get(&s, "custody_ledger_events_total"), events);
    let close = |a: f64, b: f64| (a - b).abs() < 0.002;
    assert!(close(
        get(&s, "custody_last_seal_timestamp_seconds"),
        ledger_time(&ws, "sealed")
    ));
    assert!(close(
        get(&s, "custody_last_verify_timestamp_seconds"),
        ledger_time(&ws, "verified")
    ));
    assert!(get(&s, "custody_throughput_bytes_per_second{phase=\"copy\"}") > 0.0);
    assert!(
        get(&s, "custody_run_start_timestamp_seconds")
            <= get(&s, "custody_metrics_write_timestamp_seconds")
    );
    nothing_beside(&prom);
}

#[test]
fn a_verify_that_finds_a_changed_file_says_integrity_failure() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 2, 3_000);
    ws.transfer_json(&[], 0);
    let manifest = ws.manifest();
    let landed = ws.dest.join("PAT000/STUDY1/SERIES0/IM0001.dcm");
    let mut b = std::fs::read(&landed).unwrap();
    b[10] ^= 1;
    std::fs::write(&landed, b).unwrap();
    std::fs::remove_file(ws.dest.join("PAT000/STUDY0/SERIES0/IM0000.dcm")).unwrap();
    let prom = ws.root().join("verify.prom");
    let out = ws
        .verify(&manifest, &["--json", "--metrics-file"])
        .arg(&prom)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = json(&out);
    let (text, s) = read(&prom);
    promtool_accepts(&text);
    assert_eq!(common_labels(&text)["command"], "verify");
    assert_eq!(
        common_labels(&text)["custody_job"],
        "",
        "a one-off run has no job"
    );
    for class in ["missing", "extra", "size", "hash", "unreadable"] {
        assert_eq!(
            get(
                &s,
                &format!("custody_integrity_failures_total{{class=\"{class}\"}}")
            ),
            j["report"]["counts"][class].as_f64().unwrap(),
            "{class}"
        );
    }
    assert_eq!(
        get(&s, "custody_integrity_failures_total{class=\"hash\"}"),
        1.0
    );
    assert_eq!(
        get(&s, "custody_integrity_failures_total{class=\"missing\"}"),
        1.0
    );
    assert_eq!(
        get(&s, "custody_files_verified_total"),
        j["report"]["files_verified"].as_f64().unwrap()
    );
    assert_eq!(
        get(&s, "custody_run_status{status=\"integrity_failure\"}"),
        1.0
    );
    assert_eq!(get(&s, "custody_run_exit_code"), 1.0);
    // The last verify that passed is the transfer's: this one failed.
    assert_eq!(
        get(&s, "custody_last_verify_timestamp_seconds"),
        ledger_time(&ws, "verified")
    );
}

#[test]
fn the_file_is_replaced_whole_while_a_run_goes_on() {
    let ws = Ws::new();
    let prom = ws.root().join("running.prom");
    // 96 files of 64 KiB at 2 MiB/s: three seconds of copying.
    for i in 0..96u64 {
        ws.file(&format!("S{:02}/IM{i:05}", i / 32), &bytes(i, 64 * 1024));
    }
    let mut c = ws.transfer_at(&ws.dest, "2M");
    c.arg("--metrics-file")
        .arg(&prom)
        .args(["--progress-interval", "50ms"]);
    let mut child = c.spawn().unwrap();
    let mut seen = Vec::new();
    // Inode numbers a rename replaced (freed numbers come back, so count
    // changes, not distinct numbers).
    let (mut inode, mut replaced) = (None, 0);
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&prom) {
            // A reader never sees half a file: every read holds the first
            // family and one of the last, and ends with a whole line.
            assert!(
                text.starts_with("# HELP custody_build_info")
                    && text.ends_with('\n')
                    && text.contains("\ncustody_run_status{"),
                "a partial file:\n{text}"
            );
            if let Ok(m) = std::fs::metadata(&prom) {
                replaced += usize::from(inode.is_some_and(|i| i != m.ino()));
                inode = Some(m.ino());
            }
            seen.push(samples(&text));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let running: Vec<&BTreeMap<String, f64>> = seen
        .iter()
        .filter(|s| get(s, "custody_run_status{status=\"running\"}") == 1.0)
        .collect();
    let copying: Vec<f64> = running
        .iter()
        .filter(|s| get(s, "custody_phase{phase=\"copy\"}") == 1.0)
        .map(|s| get(s, "custody_files_copied_total"))
        .collect();
    // Written at each interval while copying: the count moves, never back.
    assert!(copying.len() >= 5, "{} reads while copying", copying.len());
    assert!(copying.windows(2).all(|w| w[0] <= w[1]), "{copying:?}");
    assert!(copying.iter().any(|&n| n > 0.0 && n < 96.0), "{copying:?}");
    assert!(replaced >= 5, "replaced by renames: {replaced} times");
    let (text, s) = read(&prom);
    promtool_accepts(&text);
    assert_eq!(get(&s, "custody_files_copied_total"), 96.0);
    assert_eq!(get(&s, "custody_run_status{status=\"ok\"}"), 1.0);
    nothing_beside(&prom);
}

#[test]
fn a_metrics_file_that_cannot_be_written_never_fails_the_run() {
    let ws = Ws::new();
    ws.file("a.dcm", b"a");
    let out = ws
        .transfer(&["--metrics-file"])
        .arg(ws.root().join("no-such-dir/custody.prom"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("the run goes on without it").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains("no-such-dir/custody.prom"), "{err}");
    assert_same_tree(&ws.src, &ws.dest);
}

#[test]
fn a_job_file_runs_its_job_with_the_configured_metrics_file() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 2, 2_000);
    let jobs = ws.root().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("pacs-nightly.toml"),
        format!(
            "source = {:?}\ndestination = {:?}\nwindow = \"Mon-Sun 00:00-24:00\"\nflags = [\"--grace\", \"1m\"]\n",
            ws.src.display().to_string(),
            ws.dest.display().to_string(),
        ),
    )
    .unwrap();
    let prom = ws.root().join("job.prom");
    std::fs::write(
        ws.root().join("custody.toml"),
        format!(
            "signing_key = {:?}\nmetrics_file = {:?}\n",
            ws.key().display().to_string(),
            prom.display().to_string()
        ),
    )
    .unwrap();
    let job = |args: &[&str]| {
        ws.custody(&["--json", "job"])
            .args(args)
            .arg(jobs.join("pacs-nightly.toml"))
            .output()
            .unwrap()
    };
    let check = job(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    let c = json(&check);
    assert_eq!(c["job"], "pacs-nightly");
    let argv: Vec<&str> = c["transfer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        argv.windows(2).any(|w| w == ["--job", "pacs-nightly"]),
        "{argv:?}"
    );
    assert!(!prom.exists(), "check runs nothing");

    let first = job(&["run"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(json(&first)["job"]["run"], 1);
    ws.file("PAT000/STUDY9/SERIES0/IM0000.dcm", b"new tonight");
    let second = job(&["run"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let j = json(&second);
    assert_eq!(j["job"]["run"], 2);
    let (text, s) = read(&prom);
    promtool_accepts(&text);
    let labels = common_labels(&text);
    assert_eq!(
        (labels["command"].as_str(), labels["custody_job"].as_str()),
        ("job", "pacs-nightly")
    );
    assert_eq!(get(&s, "custody_files_copied_total"), 1.0);
    // Unchanged since the job's first run: skipped, not copied.
    assert_eq!(
        get(&s, "custody_files_skipped_total"),
        j["files_skipped"].as_f64().unwrap() + j["job"]["unchanged_files"].as_f64().unwrap()
    );
    assert_eq!(get(&s, "custody_files_skipped_total"), 8.0);
    assert_eq!(
        get(&s, "custody_last_seal_timestamp_seconds"),
        ledger_time(&ws, "sealed")
    );

    // A job file that is not one: exit 2 naming the file and the key.
    std::fs::write(
        jobs.join("broken.toml"),
        "source = \"/s\"\ndestinaton = \"/d\"\n",
    )
    .unwrap();
    let out = ws
        .custody(&["job", "check"])
        .arg(jobs.join("broken.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("broken.toml") && stderr(&out).contains("destinaton"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_contrib_alert_rules_fire_when_they_should_and_only_then() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    for args in [
        ["check", "rules", "custody.rules.yml"],
        ["test", "rules", "custody.rules.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (scripts/test installs Debian's prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // Every metric the rules read is one custody writes.
    let rules = std::fs::read_to_string(dir.join("custody.rules.yml")).unwrap();
    let ws = Ws::new();
    ws.file("a.dcm", b"a");
    let prom = ws.root().join("m.prom");
    ws.transfer(&["--metrics-file"]).arg(&prom).assert().code(0);
    let written = std::fs::read_to_string(&prom).unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("custody_") && word.len() > "custody_".len() && !word.ends_with("_job")
        {
            assert!(
                written.contains(&format!("# TYPE {word} ")),
                "the rules read {word}, which custody does not write"
            );
        }
    }
}

/// node_exporter (Debian's prometheus-node-exporter, the collector a
/// hospital already runs) reads custody's files from its textfile
/// directory without a scrape error, and serves their samples.
#[test]
fn node_exporter_serves_the_metrics_from_its_textfile_directory() {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 2, 1_000);
    let textfile = ws.root().join("node-exporter");
    std::fs::create_dir_all(&textfile).unwrap();
    let s = ws.transfer_json(
        &[
            "--job",
            "pacs-nightly",
            "--metrics-file",
            textfile.join("custody-pacs-nightly.prom").to_str().unwrap(),
        ],
        0,
    );
    // The job's verify, a second file in the same directory.
    let verify = ws
        .custody(&["verify", "--job", "pacs-nightly"])
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .arg("--metrics-file")
        .arg(textfile.join("custody-pacs-nightly-verify.prom"))
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));

    let page = crate::support::node_exporter::scrape(&textfile, None);
    let served = samples(&page);
    assert_eq!(
        get(&served, "node_textfile_scrape_error"),
        0.0,
        "node_exporter could not read a file:\n{page}"
    );
    let copied: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("custody_files_copied_total{"))
        .collect();
    assert_eq!(copied.len(), 2, "one series per file: {copied:?}");
    let transfer = copied
        .iter()
        .find(|l| l.contains("command=\"transfer\""))
        .unwrap();
    assert!(
        transfer.contains("custody_job=\"pacs-nightly\""),
        "{transfer}"
    );
    assert!(
        transfer.ends_with(&format!(" {}", s["files_copied"])),
        "{transfer}"
    );
    assert!(
        page.lines()
            .any(|l| l.starts_with("custody_files_verified_total{")
                && l.contains("command=\"verify\"")
                && l.ends_with(" 8")),
        "{page}"
    );
}
