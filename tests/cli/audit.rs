//! `custody audit` and stock `ssh-keygen -Y verify` on edited, re-signed and
//! hostile manifests.

use std::path::{Path, PathBuf};

use crate::support::*;

fn sealed() -> (Ws, PathBuf) {
    let ws = Ws::new();
    pacs_tree(&ws, 1, 3, 5_000);
    ws.transfer(&["--no-verify"]).assert().code(0);
    let m = ws.manifest();
    (ws, m)
}

fn audit(ws: &Ws, m: &Path) -> assert_cmd::assert::Assert {
    ws.custody(&["audit"])
        .arg(m)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .assert()
}

/// Signs `manifest` with `key` using stock OpenSSH, replacing its `.sig`.
fn ssh_sign(key: &Path, manifest: &Path) {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "custody-manifest", "-f"])
        .arg(key)
        .stdin(std::fs::File::open(manifest).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(format!("{}.sig", manifest.display()), out.stdout).unwrap();
}

fn edit(m: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
    f(&mut v);
    // serde_json's map is sorted: compact output stays canonical.
    std::fs::write(m, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn an_edited_byte_breaks_the_signature_for_both_tools() {
    let (ws, m) = sealed();
    let text = std::fs::read_to_string(&m).unwrap();
    let edited = text.replacen("\"size\":", "\"size\":1", 1);
    assert_ne!(text, edited);
    std::fs::write(&m, edited).unwrap();
    let out = audit(&ws, &m).code(1).get_output().clone();
    assert!(
        stderr(&out).contains("signature does not match"),
        "{}",
        stderr(&out)
    );
    assert!(
        !ssh_keygen_verify(&ws.signers(), IDENTITY, &m)
            .status
            .success()
    );
}

#[test]
fn a_signature_from_another_key_is_rejected_by_both_tools() {
    let (ws, m) = sealed();
    let other = ws.root().join("mallory");
    ws.custody(&["keygen", "--out"])
        .arg(&other)
        .args(["--identity", IDENTITY])
        .assert()
        .success();
    ssh_sign(&other.join("custody_ed25519"), &m);
    let out = audit(&ws, &m).code(1).get_output().clone();
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    assert!(
        !ssh_keygen_verify(&ws.signers(), IDENTITY, &m)
            .status
            .success()
    );
}

#[test]
fn a_signature_made_by_ssh_keygen_with_the_operator_key_is_accepted() {
    let (ws, m) = sealed();
    ssh_sign(&ws.key(), &m);
    audit(&ws, &m).code(0);
}

#[test]
fn inconsistent_but_validly_signed_manifests_fail_audit() {
    let (ws, m) = sealed();
    edit(&m, |v| v["totals"]["files"] = 999.into());
    ssh_sign(&ws.key(), &m);
    let out = audit(&ws, &m).code(1).get_output().clone();
    assert!(
        stdout(&out).contains("totals.files: says 999"),
        "{}",
        stdout(&out)
    );

    let (ws, m) = sealed();
    edit(&m, |v| {
        let files = v["files"].as_array_mut().unwrap();
        let dup = files[0].clone();
        files.insert(1, dup);
    });
    ssh_sign(&ws.key(), &m);
    let out = audit(&ws, &m).code(1).get_output().clone();
    assert!(
        stdout(&out).contains("listed more than once"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_missing_or_malformed_crc64_fails_audit_and_the_schema() {
    let (ws, m) = sealed();
    edit(&m, |v| {
        v["files"][0]
            .as_object_mut()
            .unwrap()
            .remove("crc64")
            .unwrap();
        v["files"][1]["crc64"] = "0xAE8B14860A799888".into();
    });
    ssh_sign(&ws.key(), &m);
    let out = audit(&ws, &m).code(1).get_output().clone();
    let text = stdout(&out);
    assert!(text.contains("no crc64 (version 4 requires it)"), "{text}");
    assert!(
        text.contains("crc64 is not 16 lowercase hex digits"),
        "{text}"
    );
    assert!(!schema_errors(&m).is_empty());

    // A version 1 manifest must not carry one.
    let (ws, m) = sealed();
    edit(&m, |v| v["version"] = 1.into());
    ssh_sign(&ws.key(), &m);
    let out = audit(&ws, &m).code(1).get_output().clone();
    assert!(
        stdout(&out).contains("has crc64, which version 1 does not define"),
        "{}",
        stdout(&out)
    );
    assert!(!schema_errors(&m).is_empty());
}

#[test]
fn a_pretty_printed_manifest_is_not_canonical() {
    let (ws, m) = sealed();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    std::fs::write(&m, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    ssh_sign(&ws.key(), &m);
    let out = audit(&ws, &m).code(1).get_output().clone();
    assert!(
        stdout(&out).contains("not in canonical form"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_path_escaping_the_destination_is_refused_by_verify() {
    let (ws, m) = sealed();
    edit(&m, |v| v["files"][0]["path"] = "../../etc/passwd".into());
    ssh_sign(&ws.key(), &m);
    let out = ws.verify(&m, &[]).assert().code(1).get_output().clone();
    assert!(
        stderr(&out).contains("../../etc/passwd: invalid path"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not verifying data"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_worked_example_in_manifests_audits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = root.join("manifests/example.json");
    let signers = root.join("keys-example/allowed_signers");
    let ws = Ws::new();
    let out = ws
        .custody(&["audit"])
        .arg(&m)
        .arg("--allowed-signers")
        .arg(&signers)
        .assert()
        .code(0)
        .get_output()
        .clone();
    // Verifying against the demo key is flagged as proving nothing.
    assert!(stderr(&out).contains("PUBLIC DEMO KEY"));
    let ok = ssh_keygen_verify(&signers, "demo-operator@custody.example", &m);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// Validates `manifest` against manifests/manifest.schema.json with
/// Python's `jsonschema` (installed by scripts/test): an independent check
/// that the schema and the writer agree.
pub(crate) fn schema_errors(manifest: &Path) -> String {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/manifest.schema.json");
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1])); m=json.load(open(sys.argv[2]))\n\
        v=jsonschema.Draft202012Validator(s)\n\
        print('\\n'.join(e.message for e in v.iter_errors(m)))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&schema)
        .arg(manifest)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 jsonschema failed (scripts/test installs it): {}",
        stderr(&out)
    );
    stdout(&out).trim().to_owned()
}

#[test]
fn manifests_match_the_json_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(schema_errors(&root.join("manifests/example.json")), "");
    let (ws, m) = sealed();
    assert_eq!(schema_errors(&m), "");
    edit(&m, |v| v["files"][0]["path"] = "a/../b".into());
    assert!(!schema_errors(&m).is_empty(), "the schema must reject '..'");
    let _ = ws;
}

/// Hostile manifests, validly signed so that the parser itself is reached:
/// deep nesting, a huge field, wrong types, invalid UTF-8, duplicate keys,
/// a number too large. Each gets exit 1 and one line saying what is wrong,
/// never a panic (exit 101) or a runaway allocation.
#[test]
fn hostile_manifests_get_one_clear_line_never_a_panic() {
    let (ws, m) = sealed();
    let good = std::fs::read_to_string(&m).unwrap();
    let huge = format!(
        r#"{{"format":"custody-manifest","version":4,"host":"{}"}}"#,
        "A".repeat(64 << 20)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "deep nesting",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
        ("a 64 MiB field", huge.into_bytes()),
        (
            "wrong types",
            good.replacen(r#""version":9"#, r#""version":"9""#, 1)
                .into_bytes(),
        ),
        ("invalid UTF-8", {
            let mut b = good.clone().into_bytes();
            let at = b.iter().position(|&c| c == b'"').unwrap() + 1;
            b[at] = 0xff;
            b
        }),
        (
            "duplicate keys",
            good.replacen(r#"{"created":"#, r#"{"run":9,"created":"#, 1)
                .into_bytes(),
        ),
        (
            "a number too large",
            good.replacen(r#""run":1"#, r#""run":1e400"#, 1)
                .into_bytes(),
        ),
        ("not JSON", b"\x00\x01\x02 custody".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&m, &bytes).unwrap();
        ssh_sign(&ws.key(), &m);
        let out = ws
            .custody(&["audit"])
            .arg(&m)
            .arg("--allowed-signers")
            .arg(ws.signers())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("custody: error: "))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: {err}");
        assert!(lines[0].contains(&m.display().to_string()), "{what}: {err}");
        assert!(
            lines[0].len() < 400,
            "{what}: the message quotes no huge input: {}",
            lines[0].len()
        );
    }
}
