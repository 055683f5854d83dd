//! The happy path and the odd trees a PACS export really contains.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn transfer_copies_seals_and_verifies_end_to_end() {
    let ws = Ws::new();
    let n = pacs_tree(&ws, 3, 5, 40_000);
    ws.file("empty.dcm", b"");

    let out = ws.transfer(&[]).assert().success().get_output().clone();
    let s = json(&out);
    assert_eq!(s["status"], "complete");
    assert_eq!(s["files_copied"], n + 1);
    assert_eq!(s["files_skipped"], 0);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["verify"]["files_verified"], n + 1);
    assert_eq!(s["verify"]["discrepancies"].as_array().unwrap().len(), 0);
    assert_same_tree(&ws.src, &ws.dest);

    // The manifest lists every file with its real BLAKE3, in order.
    let manifest = ws.manifest();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["format"], "custody-manifest");
    assert_sealed_as(&m, 4);
    assert_eq!(m["operator"]["identity"], IDENTITY);
    assert_eq!(m["totals"]["files"], n + 1);
    let files = m["files"].as_array().unwrap();
    for f in files {
        let data = std::fs::read(ws.src.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["blake3"], blake3::hash(&data).to_hex().as_str());
        assert_eq!(f["size"], data.len());
    }
    assert_eq!(m["id"], s["sealed"]["id"]);

    // An auditor with only the manifest, its signature and the public key.
    let ok = ssh_keygen_verify(&ws.signers(), IDENTITY, &manifest);
    assert!(ok.status.success(), "ssh-keygen: {}", stderr(&ok));
    ws.custody(&["audit"])
        .arg(&manifest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .assert()
        .code(0);
    ws.custody(&["audit"])
        .arg(&manifest)
        .arg("--public-key")
        .arg(ws.keys.join("custody_ed25519.pub"))
        .assert()
        .code(0);
    ws.verify(&manifest, &[]).assert().code(0);
    ws.custody(&["ledger", "verify"]).assert().code(0);

    // The ledger holds the same bytes and signature as the files.
    let db = ws.db();
    let (bytes, sig): (Vec<u8>, String) = db
        .query_row(
            "SELECT bytes, signature FROM manifests WHERE id = ?1",
            [m["id"].as_str().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(bytes, std::fs::read(&manifest).unwrap());
    assert_eq!(
        sig,
        std::fs::read_to_string(format!("{}.sig", manifest.display())).unwrap()
    );

    // The custody timeline of the manifest.
    let log = ws
        .custody(&["--json", "log", "--manifest", m["id"].as_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .clone();
    let kinds: Vec<String> = json(&log)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["run_started", "files_landed", "sealed", "verified"]);
}

#[test]
fn odd_names_links_empty_and_deep_files() {
    let ws = Ws::new();
    ws.file("with space/ünïcødé 名前.dcm", b"unicode");
    ws.file("zero.bin", b"");
    let deep: String = (0..60).map(|i| format!("d{i}/")).collect::<String>() + "leaf";
    ws.file(&deep, b"deep");
    std::os::unix::fs::symlink(ws.src.join("zero.bin"), ws.src.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink(&ws.src, ws.src.join("with space/loop")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"latin1-\xe9.dcm");
    std::fs::write(ws.src.join(bad), b"x").unwrap();

    let out = ws.transfer(&[]).assert().code(0).get_output().clone();
    let s = json(&out);
    assert_eq!(s["files_copied"], 3);
    assert_eq!(s["excluded"], 3);
    let excluded = ws.manifest_excluded();
    assert_eq!(
        excluded,
        [
            (
                "latin1-\u{fffd}.dcm".into(),
                "name is not valid UTF-8".into()
            ),
            ("link-to-file".into(), "symbolic link (not followed)".into()),
            (
                "with space/loop".into(),
                "symbolic link (not followed)".into()
            ),
        ]
    );
    // Reported on stderr too, naming the entry.
    assert!(stderr(&out).contains("link-to-file: symbolic link"));
    assert_eq!(std::fs::read(ws.dest.join(&deep)).unwrap(), b"deep");
    assert_eq!(
        std::fs::read(ws.dest.join("with space/ünïcødé 名前.dcm")).unwrap(),
        b"unicode"
    );
    assert!(ws.dest.join("zero.bin").is_file());
    assert!(!ws.dest.join("link-to-file").exists());
}

#[test]
fn keygen_writes_0600_and_refuses_to_overwrite() {
    let ws = Ws::new();
    let mode = std::fs::metadata(ws.key()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(ws.key()).unwrap();
    let out = ws
        .custody(&["keygen", "--out"])
        .arg(&ws.keys)
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(ws.key()).unwrap(), before);
    let line = std::fs::read_to_string(ws.signers()).unwrap();
    assert!(line.starts_with(&format!(
        "{IDENTITY} namespaces=\"custody-manifest,custody-ledger,custody-checkpoint\" ssh-ed25519 "
    )));
}

/// The demo, as a new user runs it: every step passes, the tamper is
/// caught, and its lines are lines (regression: once control characters
/// were escaped in human output, the demo's embedded "\n" printed as the
/// two characters `\n` before "Try it yourself").
#[test]
fn the_demo_runs_every_step_and_prints_plain_lines() {
    let ws = Ws::new();
    let dir = ws.dir.path().join("demo");
    let out = ws
        .custody(&["demo", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for step in 1..=6 {
        assert!(text.contains(&format!("[{step}/6] ")), "{text}");
    }
    assert!(
        text.contains("caught: `custody verify` would exit 1"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "Try it yourself:"), "{text}");
    assert!(!text.contains("\\n"), "{text}");
}

/// `custody --help` lists each command on one line, as cargo and git do;
/// the long explanation stays in `custody <command> --help`.
#[test]
fn top_level_help_lists_each_command_on_one_line() {
    let ws = Ws::new();
    let out = ws
        .custody(&["--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let commands: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(commands.len() >= 17, "{text}");
    for line in &commands {
        // `  name  one line`: a continuation would start with spaces only.
        let name = line.split_whitespace().next().unwrap_or_default();
        assert!(
            line.starts_with(&format!("  {name} ")) && line.len() <= 100,
            "not one line: {line:?}\n{text}"
        );
    }
    let scan = ws
        .custody(&["scan", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        stdout(&scan).contains("a size histogram"),
        "{}",
        stdout(&scan)
    );
}

#[test]
fn every_command_help_has_an_example() {
    let ws = Ws::new();
    for cmd in [
        vec!["keygen"],
        vec!["transfer"],
        vec!["verify"],
        vec!["audit"],
        vec!["ledger", "verify"],
        vec!["log"],
        vec!["demo"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = ws.custody(&args).assert().success().get_output().clone();
        assert!(
            stdout(&out).contains("Example"),
            "{cmd:?} --help has no example"
        );
    }
}

#[test]
fn the_demo_key_is_loudly_flagged() {
    let ws = Ws::new();
    ws.file("a", b"a");
    let demo = ws.root().join("demo_key");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/keys-example/custody_ed25519"),
        &demo,
    )
    .unwrap();
    chmod(&demo, 0o600);
    let out = ws
        .custody(&["transfer"])
        .arg(&ws.src)
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(&demo)
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(stderr(&out).contains("PUBLIC DEMO KEY"), "{}", stderr(&out));
}
