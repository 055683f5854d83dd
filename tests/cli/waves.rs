//! Migration waves: `custody plan` estimates them (and writes the change
//! calendar, read back with Python's `icalendar`), `custody run` runs one
//! inside its window and records it in the events and the manifest.

use std::path::{Path, PathBuf};

use crate::support::*;

const NIGHTLY: &str = "Mon-Fri 19:00-06:00, Sat-Sun 00:00-24:00";

/// Writes `plan.toml` in the workspace: two waves over two source trees
/// (`ct` into the workspace's destination, `mr` elsewhere), nightly.
fn plan(ws: &Ws) -> PathBuf {
    ws.file("CT/IM1", &bytes(1, 1 << 20));
    ws.file("CT/IM2", &bytes(2, 1 << 20));
    ws.file("MR/IM1", &bytes(3, 3 << 20));
    let p = ws.root().join("plan.toml");
    std::fs::write(
        &p,
        format!(
            r#"# Two waves of the PACS migration.
[defaults]
window = "{NIGHTLY}"
owner = "J. Doe, PACS team"
rollback_contact = "PACS on-call +1 555 0100"
signing_key = "{key}"

[[wave]]
name = "ct"
source = "src/CT"
destination = "dest"
change = "CHG0012345"
deadline = "2026-11-25"

[[wave]]
name = "mr"
source = "src/MR"
destination = "elsewhere"
change = "CHG0012346"
bwlimit = "1M"
deadline = "2026-11-24T18:00"
"#,
            key = ws.key().display()
        ),
    )
    .unwrap();
    p
}

fn plan_json(ws: &Ws, p: &Path, extra: &[&str]) -> serde_json::Value {
    let out = ws
        .custody(&["--json", "plan"])
        .arg(p)
        .args(extra)
        .env("CUSTODY_NOW", "2026-11-24T12:00:00[UTC]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json(&out)
}

#[test]
fn plan_estimates_each_wave_inside_its_windows_and_writes_the_calendar() {
    let ws = Ws::new();
    let p = plan(&ws);
    let ics = ws.root().join("waves.ics");
    // 2026-11-24 is a Tuesday; at 1 MiB/s, wave ct's 2 MiB take 2 s from
    // 19:00; wave mr's 3 MiB (held to 1 MiB/s anyway) follow.
    let r = plan_json(
        &ws,
        &p,
        &["--rate", "1M", "--ics", &ics.display().to_string()],
    );
    assert_eq!(r["rate"], 1048576.0);
    assert_eq!(r["rate_measured"], false);
    let (ct, mr) = (&r["waves"][0], &r["waves"][1]);
    assert_eq!(
        (ct["files"].clone(), ct["bytes"].clone()),
        (2.into(), (2u64 << 20).into())
    );
    assert_eq!(ct["start"], "2026-11-24T12:00:00+00:00[UTC]");
    assert_eq!(ct["finish"], "2026-11-24T19:00:02+00:00[UTC]");
    assert_eq!(
        (ct["windows"].clone(), ct["fits"].clone()),
        (1.into(), true.into())
    );
    assert_eq!(mr["start"], "2026-11-24T19:00:02+00:00[UTC]");
    assert_eq!(mr["finish"], "2026-11-24T19:00:05+00:00[UTC]");
    assert_eq!(mr["fits"], false, "its deadline was 18:00");

    // The calendar, as a real iCalendar reader sees it.
    let script = "import sys, icalendar\n\
        cal = icalendar.Calendar.from_ical(open(sys.argv[1], 'rb').read())\n\
        for e in cal.walk('VEVENT'):\n\
        \x20   print(e['SUMMARY'], e.decoded('DTSTART').isoformat(), e.decoded('DTEND').isoformat(), sep=' | ')";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&ics)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "icalendar (scripts/test installs it): {}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            "custody wave ct (CHG0012345): window 1 of 1 | 2026-11-24T19:00:00+00:00 | 2026-11-25T06:00:00+00:00",
            "custody wave mr (CHG0012346): window 1 of 1 | 2026-11-24T19:00:02+00:00 | 2026-11-25T06:00:00+00:00",
        ]
    );
    let text = std::fs::read_to_string(&ics).unwrap();
    assert!(
        text.contains("rollback contact: PACS on-call +1 555 0100"),
        "{text}"
    );

    // Human output says the same.
    let out = ws
        .custody(&["plan"])
        .arg(&p)
        .args(["--rate", "1M"])
        .env("CUSTODY_NOW", "2026-11-24T12:00:00[UTC]")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("wave mr (CHG0012346): 1 files, 3.00 MiB; 3s of copying"),
        "{text}"
    );
    assert!(
        text.contains("deadline Tue 2026-11-24 18:00 UTC: DOES NOT FIT"),
        "{text}"
    );
}

#[test]
fn plan_uses_the_throughput_earlier_runs_measured_and_refuses_bad_plans() {
    let ws = Ws::new();
    let p = plan(&ws);
    // No runs yet: nothing measured.
    let out = ws.custody(&["plan"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--rate 100M"), "{}", stderr(&out));
    // After a run, its throughput is the estimate's.
    ws.transfer_json(&["--bwlimit", "2M"], 0);
    let r = plan_json(&ws, &p, &[]);
    assert_eq!(r["rate_measured"], true);
    let rate = r["rate"].as_f64().unwrap();
    assert!(
        rate > 0.0 && rate <= 5.0 * 1048576.0,
        "held to 2 MiB/s: {rate}"
    );

    for (text, says) in [
        (
            "[[wave]]\nname = \"a\"\nsource = \"s\"",
            "wave \"a\": no destination",
        ),
        ("[[wave]]\nname = \"a\"\nsize = 3", "unknown field `size`"),
        (
            "[defaults]\nwindow = \"Mon-Fri\"\n[[wave]]\nname = \"a\"",
            "[defaults]: window \"Mon-Fri\": ",
        ),
    ] {
        let bad = ws.root().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = ws
            .custody(&["plan"])
            .arg(&bad)
            .args(["--rate", "1M"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            stderr(&out).contains(&format!("{}: ", bad.display())) && stderr(&out).contains(says),
            "{text}: {}",
            stderr(&out)
        );
    }
}

fn run(ws: &Ws, p: &Path, wave: &str, now: &str, extra: &[&str]) -> std::process::Output {
    ws.custody(&["--json", "run"])
        .arg(p)
        .args(["--wave", wave])
        .args(extra)
        .env("CUSTODY_NOW", now)
        .output()
        .unwrap()
}

#[test]
fn run_keeps_to_the_wave_window_and_seals_the_wave_into_the_manifest() {
    let ws = Ws::new();
    let p = plan(&ws);
    // At noon the window is closed: nothing moves.
    let out = run(&ws, &p, "ct", "2026-11-24T12:00:00[UTC]", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("outside the window"),
        "{}",
        stderr(&out)
    );
    // Paused by a limit in the evening, then finished as the same wave.
    let out = run(
        &ws,
        &p,
        "ct",
        "2026-11-24T20:00:00[UTC]",
        &["--", "--max-bytes", "1", "--jobs", "1"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // Resuming that run as another wave is refused.
    let other = ws.root().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("CHG0012345", "CHG9"),
    )
    .unwrap();
    let out = run(&ws, &other, "ct", "2026-11-24T20:00:00[UTC]", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was started as wave \"ct\" (CHG0012345)"),
        "{}",
        stderr(&out)
    );
    let out = run(&ws, &p, "ct", "2026-11-24T20:00:00[UTC]", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["run"]["resumed"], true);

    // The manifest is version 5 and names the wave; it is signed, valid
    // against the schema, and verifies.
    let m = ws.manifest();
    let v = ws.manifest_json();
    assert_sealed_as(&v, 5);
    assert_eq!(
        v["wave"],
        serde_json::json!({
            "change": "CHG0012345",
            "name": "ct",
            "owner": "J. Doe, PACS team",
            "rollback_contact": "PACS on-call +1 555 0100",
        })
    );
    assert_eq!(crate::audit::schema_errors(&m), "");
    let ok = ssh_keygen_verify(
        &ws.signers(),
        v["operator"]["identity"].as_str().unwrap(),
        &m,
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    ws.verify(&m, &[]).assert().code(0);
    // The run's start event records the wave too.
    let id = v["id"].as_str().unwrap();
    let out = ws
        .custody(&["--json", "log", "--manifest", id])
        .output()
        .unwrap();
    let events = json(&out)["events"].as_array().unwrap().clone();
    let started = events.iter().find(|e| e["kind"] == "run_started").unwrap();
    assert_eq!(started["payload"]["wave"]["change"], "CHG0012345");

    // The report names the wave.
    let out = ws
        .custody(&["report"])
        .arg(&m)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap();
    for row in [
        "| Wave | ct |",
        "| Change | CHG0012345 |",
        "| Rollback contact | PACS on-call +1 555 0100 |",
    ] {
        assert!(stdout(&out).contains(row), "{row}: {}", stdout(&out));
    }

    // A wave the plan does not have.
    let out = run(&ws, &p, "xray", "2026-11-24T20:00:00[UTC]", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no wave \"xray\" (waves: ct, mr)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_wave_with_a_job_moves_only_what_is_new_on_each_run() {
    let ws = Ws::new();
    let p = plan(&ws);
    std::fs::write(
        &p,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("name = \"ct\"\n", "name = \"ct\"\njob = \"ct-nightly\"\n"),
    )
    .unwrap();
    let night = "2026-11-24T20:00:00[UTC]";
    let out = run(&ws, &p, "ct", night, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["job"]["run"], 1);
    ws.file("CT/IM3", &bytes(4, 1000));
    let out = run(&ws, &p, "ct", night, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["job"]["run"], 2);
    assert_eq!(s["files_copied"], 1);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.root().join(s["sealed"]["manifest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_sealed_as(&m, 6);
    assert_eq!(m["wave"]["name"], "ct");
    assert_eq!(m["job"]["name"], "ct-nightly");
    assert_eq!(m["files"].as_array().unwrap().len(), 1);
    // A job is one source into one destination: not a default.
    std::fs::write(
        &p,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("[defaults]\n", "[defaults]\njob = \"all\"\n"),
    )
    .unwrap();
    let out = run(&ws, &p, "ct", night, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[defaults] cannot set a wave's name, source or job"),
        "{}",
        stderr(&out)
    );
}
