//! Operator defaults: the configuration file and the `CUSTODY_*`
//! variables (docs/operations.md, "Configuration"). A flag beats the
//! variable beats the file beats the default; the commands the earlier
//! issues wrote without a trust anchor or a key work as written once the
//! operator's defaults are configured; `custody config` says where each
//! setting came from and never prints a key.

use crate::databox::{bom_lines, sealed, write_bom};
use crate::support::{IDENTITY, Ws, json, stderr, stdout};

/// Writes `<root>/custody.toml` (the file `./custody.toml` finds).
fn config(ws: &Ws, text: &str) {
    std::fs::write(ws.root().join("custody.toml"), text).unwrap();
}

/// `custody GLOBAL… transfer SRC DEST` with only the operator's defaults
/// (no key flag, no ledger flag).
fn transfer(ws: &Ws, global: &[&str]) -> std::process::Output {
    let mut c = ws.bare(global);
    c.arg("transfer").arg(&ws.src).arg(&ws.dest);
    c.output().unwrap()
}

/// `custody config --json`'s line for `key`.
fn setting(out: &std::process::Output, key: &str) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    json(out)["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap()
        .clone()
}

/// The operator's entries for the workspace's key, as a configuration.
fn operator(ws: &Ws) -> String {
    format!(
        "signing_key = {:?}\nallowed_signers = {:?}\n",
        ws.key().display().to_string(),
        ws.signers().display().to_string()
    )
}

#[test]
fn a_flag_beats_the_variable_beats_the_file_beats_the_default() {
    let ws = Ws::new();
    let cfg = |extra: &[&str], env: Option<&str>| {
        let mut c = ws.bare(&["--json"]);
        c.args(extra).arg("config");
        if let Some(v) = env {
            c.env("CUSTODY_LEDGER", v);
        }
        setting(&c.output().unwrap(), "ledger")
    };
    let d = cfg(&[], None);
    assert_eq!(
        (d["from"].as_str(), d["value"].is_null()),
        (Some("default"), true)
    );
    // Relative paths in the file are relative to the file's folder.
    std::fs::create_dir_all(ws.root().join("etc")).unwrap();
    std::fs::write(
        ws.root().join("etc/c.toml"),
        "ledger = \"state/from-file.db\"\n",
    )
    .unwrap();
    let from_file = |extra: &[&str], env: Option<&str>| {
        let mut c = ws.bare(&["--json"]);
        c.env("CUSTODY_CONFIG", ws.root().join("etc/c.toml"))
            .args(extra)
            .arg("config");
        if let Some(v) = env {
            c.env("CUSTODY_LEDGER", v);
        }
        setting(&c.output().unwrap(), "ledger")
    };
    let f = from_file(&[], None);
    assert_eq!(f["from"], "file", "{f}");
    assert_eq!(
        f["value"],
        ws.root()
            .join("etc/state/from-file.db")
            .display()
            .to_string()
    );
    let e = from_file(&[], Some("env.db"));
    assert_eq!(
        (e["from"].as_str(), e["value"].as_str()),
        (Some("env"), Some("env.db"))
    );
    let g = from_file(&["--ledger", "flag.db"], Some("env.db"));
    assert_eq!(
        (g["from"].as_str(), g["value"].as_str()),
        (Some("flag"), Some("flag.db"))
    );
    // ./custody.toml is found too, and a command really uses what it says.
    ws.file("IM1.dcm", b"one");
    config(
        &ws,
        &format!("{}ledger = \"conf.db\"\njobs = 1\n", operator(&ws)),
    );
    let out = transfer(&ws, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ws.root().join("conf.db").is_file(), "the configured ledger");
    assert!(
        !ws.root().join("custody.db").exists(),
        "not the default one"
    );
    let jobs = setting(&ws.bare(&["--json", "config"]).output().unwrap(), "jobs");
    assert_eq!(
        (jobs["from"].as_str(), jobs["value"].as_str()),
        (Some("file"), Some("1"))
    );
    let jobs = setting(
        &ws.bare(&["--json", "config"])
            .env("CUSTODY_JOBS", "2")
            .output()
            .unwrap(),
        "jobs",
    );
    assert_eq!(jobs["from"], "env");
}

#[test]
fn the_log_format_and_file_come_from_the_configuration_too() {
    let ws = Ws::new();
    ws.file("IM1.dcm", b"one");
    config(
        &ws,
        &format!(
            "{}log_format = \"json\"\nlog_file = \"logs/custody.log\"\n",
            operator(&ws)
        ),
    );
    std::fs::create_dir_all(ws.root().join("logs")).unwrap();
    let out = transfer(&ws, &["-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = std::fs::read_to_string(ws.root().join("logs/custody.log")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(first["timestamp"].is_string(), "{log}");
    // The variable beats the file.
    let out = ws
        .bare(&["-v", "config"])
        .env("CUSTODY_LOG_FORMAT", "human")
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("log_format       human  (env CUSTODY_LOG_FORMAT)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn with_a_configured_trust_file_the_commands_work_as_their_issues_wrote_them() {
    let ws = Ws::new();
    let (share, manifest) = sealed(&ws);
    config(&ws, &operator(&ws));
    let m = manifest.to_str().unwrap();
    let dest = share.join("pacs");
    let run = |args: &[&str]| ws.custody(args).output().unwrap();
    // custody rollback MANIFEST DEST (a dry run).
    let out = ws.custody(&["rollback", m]).arg(&dest).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("DRY RUN: would remove 3 of 3"),
        "{}",
        stdout(&out)
    );
    // custody report MANIFEST --format html.
    let out = run(&["report", m, "--format", "html"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("<html"), "{}", stdout(&out));
    // custody databox bom-check MANIFEST BOM.
    let bom = write_bom(&ws, "contoso_BlockBlob_BOM.txt", &bom_lines(&share));
    let out = ws
        .custody(&["databox", "bom-check", m])
        .arg(&bom)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("3 of 3 files match"),
        "{}",
        stdout(&out)
    );
    // custody handoff MANIFEST --from A --to B --purpose P (the key from the
    // configuration).
    let out = run(&["handoff", m, "--from", "A", "--to", "B", "--purpose", "P"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("handoff recorded"),
        "{}",
        stdout(&out)
    );
    ws.custody(&["ledger", "verify"]).assert().code(0);
}

#[test]
fn a_flag_beats_a_configured_trust_file() {
    let ws = Ws::new();
    ws.file("IM1.dcm", b"one");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    // The configured trust file names someone else's key.
    let other = ws.root().join("other");
    ws.custody(&["keygen", "--out"])
        .arg(&other)
        .args(["--identity", "eve@elsewhere.example"])
        .assert()
        .code(0);
    config(
        &ws,
        &format!(
            "allowed_signers = {:?}\n",
            other.join("allowed_signers").display().to_string()
        ),
    );
    let audit = |extra: &[&str]| ws.custody(&["audit"]).arg(&m).args(extra).output().unwrap();
    assert_eq!(
        audit(&[]).status.code(),
        Some(1),
        "the configured trust refuses it"
    );
    let public = ws.keys.join("custody_ed25519.pub");
    let out = audit(&["--public-key", public.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = ws
        .custody(&["audit"])
        .arg(&m)
        .env("CUSTODY_ALLOWED_SIGNERS", ws.signers())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the variable beats the file: {}",
        stderr(&out)
    );
}

#[test]
fn a_command_that_needs_a_trust_anchor_and_has_none_says_how_to_configure_one() {
    let ws = Ws::new();
    ws.file("IM1.dcm", b"one");
    ws.transfer_json(&[], 0);
    let m = ws.manifest();
    for args in [
        vec!["audit"],
        vec!["rollback"],
        vec!["report"],
        vec!["verify"],
    ] {
        let mut c = ws.custody(&args);
        c.arg(&m);
        if args[0] == "rollback" || args[0] == "verify" {
            c.arg(&ws.dest);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("no trust anchor"), "{args:?}: {err}");
        assert!(err.contains("CUSTODY_ALLOWED_SIGNERS"), "{args:?}: {err}");
    }
    // A transfer without a key says which flag, variable or key it needs.
    let out = transfer(&ws, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--signing-key"), "{}", stderr(&out));
}

#[test]
fn custody_config_names_paths_never_what_the_key_files_hold() {
    let ws = Ws::new();
    config(&ws, &operator(&ws));
    let key = std::fs::read_to_string(ws.key()).unwrap();
    let public = std::fs::read_to_string(ws.keys.join("custody_ed25519.pub")).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    let public_b64 = public.split_whitespace().nth(1).unwrap();
    for args in [
        vec!["config"],
        vec!["--json", "config"],
        vec!["-vv", "config"],
    ] {
        let out = ws.bare(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.contains(&ws.key().display().to_string()), "{all}");
        for secret in [secret_line, public_b64, "PRIVATE KEY"] {
            assert!(!all.contains(secret), "{args:?} printed key material");
        }
    }
    let text = stdout(&ws.bare(&["config"]).output().unwrap());
    assert!(
        text.starts_with(&format!(
            "configuration file: {}",
            ws.root().join("custody.toml").display()
        )),
        "{text}"
    );
}

#[test]
fn a_configuration_that_does_not_read_is_refused_naming_it() {
    let ws = Ws::new();
    for (text, says) in [
        (
            "ledger = \"a.db\"\nsigning_kye = \"k\"\n",
            "unknown key \"signing_kye\"",
        ),
        ("jobs = 0\n", "jobs must be a whole number of at least 1"),
        ("ledger = 5\n", "ledger must be a non-empty string"),
        ("ledger = \n", "configuration"),
    ] {
        config(&ws, text);
        let out = ws.bare(&["config"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{text:?}");
        let err = stderr(&out);
        assert!(err.contains("custody.toml"), "{text:?}: {err}");
        assert!(err.contains(says), "{text:?}: {err}");
    }
    std::fs::remove_file(ws.root().join("custody.toml")).unwrap();
    let out = ws
        .bare(&["config"])
        .env("CUSTODY_CONFIG", ws.root().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("CUSTODY_CONFIG="), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no such configuration file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keygen_writes_the_operator_entries_once_when_asked() {
    let ws = Ws::new();
    let dir = ws.root().join("opkey");
    let out = ws
        .bare(&[
            "--json",
            "keygen",
            "--write-config",
            "--identity",
            IDENTITY,
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = ws.root().join("xdg/custody/config.toml");
    assert_eq!(json(&out)["config"], file.display().to_string());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!(
            "signing_key = {:?}",
            dir.join("custody_ed25519").display().to_string()
        )),
        "{text}"
    );
    // The entries are the defaults now: a transfer needs no key flag.
    ws.file("IM1.dcm", b"one");
    let out = transfer(&ws, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A second keygen refuses and writes nothing, not even the key.
    let again = ws.root().join("again");
    let out = ws
        .bare(&["keygen", "--write-config", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already sets signing_key"),
        "{}",
        stderr(&out)
    );
    assert!(!again.exists());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // Without --write-config, keygen says how to make them the defaults.
    let out = ws
        .bare(&["keygen", "--out"])
        .arg(ws.root().join("third"))
        .output()
        .unwrap();
    assert!(stdout(&out).contains("--write-config"), "{}", stdout(&out));
}
