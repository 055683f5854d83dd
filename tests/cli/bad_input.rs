//! Bad input: one line naming what and where, exit 2, nothing moved.

use crate::support::*;

fn nothing_moved(ws: &Ws) {
    assert!(!ws.dest.exists() || files_under(&ws.dest).is_empty());
    if ws.ledger.exists() {
        let runs: i64 = ws
            .db()
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 0);
    }
}

fn fails_with(mut cmd: assert_cmd::Command, code: i32, needle: &str) -> String {
    let out = cmd.assert().code(code).get_output().clone();
    let err = stderr(&out);
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(
        err.lines().next().unwrap().starts_with("custody: error: "),
        "{err}"
    );
    err
}

#[test]
fn missing_source() {
    let ws = Ws::new();
    std::fs::remove_dir(&ws.src).unwrap();
    let needle = format!("source {}: No such file or directory", ws.src.display());
    fails_with(ws.transfer(&[]), 2, &needle);
    nothing_moved(&ws);
}

#[test]
fn source_is_a_file() {
    let ws = Ws::new();
    std::fs::remove_dir(&ws.src).unwrap();
    std::fs::write(&ws.src, b"x").unwrap();
    fails_with(ws.transfer(&[]), 2, "not a directory");
    nothing_moved(&ws);
}

#[test]
fn destination_cannot_be_created() {
    let ws = Ws::new();
    ws.file("a", b"a");
    let blocker = ws.root().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let mut cmd = ws.custody(&["transfer"]);
    cmd.arg(&ws.src)
        .arg(blocker.join("dest"))
        .arg("--signing-key")
        .arg(ws.key());
    fails_with(
        cmd,
        2,
        &format!(
            "{}: cannot create directory",
            blocker.join("dest").display()
        ),
    );
    nothing_moved(&ws);
}

#[test]
fn destination_inside_source() {
    let ws = Ws::new();
    ws.file("a", b"a");
    let mut cmd = ws.custody(&["transfer"]);
    cmd.arg(&ws.src)
        .arg(ws.src.join("copy"))
        .arg("--signing-key")
        .arg(ws.key());
    fails_with(cmd, 2, "overlaps the destination");
}

#[test]
fn signing_key_missing_group_readable_or_not_a_key() {
    let ws = Ws::new();
    ws.file("a", b"a");
    let missing = ws.root().join("nope");
    let mut cmd = ws.custody(&["transfer"]);
    cmd.arg(&ws.src)
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(&missing);
    fails_with(cmd, 2, &format!("{}: No such file", missing.display()));

    chmod(&ws.key(), 0o640);
    let err = fails_with(
        ws.transfer(&[]),
        2,
        "accessible by group or others (mode 0640)",
    );
    assert!(err.contains("chmod 600"));
    chmod(&ws.key(), 0o600);

    let junk = ws.root().join("junk");
    std::fs::write(&junk, b"not a key").unwrap();
    chmod(&junk, 0o600);
    let mut cmd = ws.custody(&["transfer"]);
    cmd.arg(&ws.src)
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(&junk);
    fails_with(cmd, 2, "not an OpenSSH private key");
    nothing_moved(&ws);
}

#[test]
fn encrypted_key_needs_the_right_passphrase() {
    let ws = Ws::new();
    ws.file("a", b"a");
    let enc = ws.root().join("enc");
    let st = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "correct horse",
            "-C",
            "ops",
            "-f",
        ])
        .arg(&enc)
        .status()
        .unwrap();
    assert!(st.success());
    let run = |pass: Option<&str>| {
        let mut c = ws.custody(&["transfer"]);
        c.arg(&ws.src).arg(&ws.dest).arg("--signing-key").arg(&enc);
        match pass {
            Some(p) => c.env("CUSTODY_KEY_PASSPHRASE", p),
            None => c.env_remove("CUSTODY_KEY_PASSPHRASE"),
        };
        c
    };
    fails_with(run(None), 2, "key is encrypted; set CUSTODY_KEY_PASSPHRASE");
    let err = fails_with(run(Some("wrong")), 2, "wrong passphrase");
    assert!(!err.contains("wrong\n") && !err.contains("correct horse"));
    run(Some("correct horse")).assert().code(0);
}

#[test]
fn verify_and_audit_bad_arguments() {
    let ws = Ws::new();
    ws.file("a", b"a");
    ws.transfer(&[]).assert().code(0);
    let m = ws.manifest();

    let missing = ws.root().join("missing.json");
    fails_with(
        ws.verify(&missing, &[]),
        2,
        &format!("{}: No such file", missing.display()),
    );

    let mut cmd = ws.custody(&["verify"]);
    cmd.arg(&m)
        .arg(ws.root().join("no-dest"))
        .arg("--allowed-signers")
        .arg(ws.signers());
    fails_with(cmd, 2, "no-dest: No such file");

    // Neither trust flag: a usage error from the parser.
    let mut cmd = ws.custody(&["audit"]);
    cmd.arg(&m);
    cmd.assert().code(2);

    let mut cmd = ws.custody(&["audit"]);
    cmd.arg(&m)
        .arg("--allowed-signers")
        .arg(ws.root().join("nope"));
    fails_with(cmd, 2, "nope: No such file");

    // A signature file that is garbage is an integrity failure.
    std::fs::write(format!("{}.sig", m.display()), b"garbage").unwrap();
    let mut cmd = ws.custody(&["audit"]);
    cmd.arg(&m).arg("--allowed-signers").arg(ws.signers());
    fails_with(cmd, 1, "malformed signature");
}

#[test]
fn ledger_commands_without_a_ledger() {
    let ws = Ws::new();
    fails_with(ws.custody(&["ledger", "verify"]), 2, "no such file");
    fails_with(ws.custody(&["log"]), 2, "no such file");
}

#[test]
fn zero_jobs_is_a_usage_error() {
    let ws = Ws::new();
    ws.file("a", b"a");
    fails_with(
        ws.transfer(&["--jobs", "0"]),
        2,
        "--jobs must be at least 1",
    );
}
