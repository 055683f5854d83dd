//! `--json` on every command: stdout is exactly one object, valid against
//! its definition in docs/json.schema.json (checked with Python's
//! `jsonschema`, independently of the code that prints it), and a command
//! that fails prints the error object.

use std::path::Path;
use std::process::Output;

use crate::support::*;

/// Asserts stdout is one JSON object valid against `$defs/<def>`;
/// returns it.
fn valid(out: &Output, def: &str) -> serde_json::Value {
    let text = stdout(out);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{def}: stdout is not one JSON object ({e}): {text}\n{}",
            stderr(out)
        )
    });
    assert!(value.is_object(), "{def}: {text}");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.schema.json");
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1])); v=json.loads(sys.stdin.read())\n\
        root={'$defs': s['$defs'], '$ref': '#/$defs/'+sys.argv[2]}\n\
        print('\\n'.join(e.message for e in jsonschema.Draft202012Validator(root).iter_errors(v)))";
    let check = with_stdin(
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&schema)
            .arg(def),
        text.as_bytes(),
    );
    assert!(
        check.status.success(),
        "jsonschema (scripts/test installs it): {}",
        stderr(&check)
    );
    assert_eq!(
        stdout(&check).trim(),
        "",
        "{def} does not match docs/json.schema.json: {text}"
    );
    value
}

fn run(ws: &Ws, args: &[&str]) -> Output {
    ws.custody(&["--json"]).args(args).output().unwrap()
}

#[test]
fn every_command_prints_one_object_that_matches_the_documented_schema() {
    let ws = Ws::new();
    ws.file("PAT1/IM1", b"one");
    ws.file("PAT1/IM2", b"two");
    let root = ws.root().to_path_buf();
    let p = |s: &str| root.join(s).display().to_string();
    let (src, dest, key, signers) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
        ws.signers().display().to_string(),
    );

    valid(
        &run(
            &ws,
            &["keygen", "--out", &p("k2"), "--identity", "t@example"],
        ),
        "keygen",
    );
    valid(
        &run(&ws, &["keygen", "--encryption", "--out", &p("enc.key")]),
        "keygen_encryption",
    );
    valid(&run(&ws, &["config"]), "config");
    valid(
        &ws.custody(&["--json", "config"])
            .env("CUSTODY_JOBS", "3")
            .output()
            .unwrap(),
        "config",
    );
    valid(&run(&ws, &["scan", &src]), "scan");
    std::fs::write(
        root.join("nightly.toml"),
        format!("source = {src:?}\ndestination = {dest:?}\nsigning_key = {key:?}\n"),
    )
    .unwrap();
    valid(
        &run(&ws, &["job", "check", &p("nightly.toml")]),
        "job_check",
    );
    let t = valid(
        &run(&ws, &["transfer", &src, &dest, "--signing-key", &key]),
        "transfer",
    );
    assert_eq!(t["status"], "complete");
    // Run again: the work is finished (`finished`, nothing copied).
    let again = valid(
        &run(&ws, &["transfer", &src, &dest, "--signing-key", &key]),
        "transfer",
    );
    assert_eq!(again["finished"]["verified_now"], false, "{again}");
    let m = ws.manifest().display().to_string();
    let id = ws.manifest_json()["id"].as_str().unwrap().to_owned();
    let trust = ["--allowed-signers", signers.as_str()];
    fn with<'a>(args: &[&'a str], trust: &[&'a str]) -> Vec<&'a str> {
        [args, trust].concat()
    }
    valid(&run(&ws, &with(&["verify", &m, &dest], &trust)), "verify");
    valid(&run(&ws, &with(&["audit", &m], &trust)), "audit");
    valid(&run(&ws, &["ledger", "verify"]), "ledger_verify");
    // Proofs (docs/proofs.md): a bundle, its check, a ledger checkpoint,
    // the ledger verified since it, a witness's cosignature.
    let bundle = p("one.proof.json");
    let proved = valid(
        &run(
            &ws,
            &with(
                &["prove", &m, "--path", "PAT1/IM1", "--out", &bundle],
                &trust,
            ),
        ),
        "prove",
    );
    assert_eq!(proved["entries"], 1);
    let checked = valid(
        &run(&ws, &with(&["check-proof", &bundle], &trust)),
        "check_proof",
    );
    assert_eq!(checked["result"], "pass");
    let cp = p("ledger.checkpoint");
    valid(
        &run(
            &ws,
            &["ledger", "checkpoint", "--out", &cp, "--signing-key", &key],
        ),
        "ledger_checkpoint",
    );
    let since = valid(
        &run(&ws, &["ledger", "verify", "--since", &cp]),
        "ledger_verify",
    );
    assert_eq!(since["since"]["problems"], serde_json::json!([]));
    valid(
        &run(
            &ws,
            &[
                "witness",
                "cosign",
                &cp,
                "--key",
                &p("k2/custody_ed25519"),
                "--state",
                &p("wstate"),
                "--allowed-signers",
                &signers,
            ],
        ),
        "witness_cosign",
    );
    valid(&run(&ws, &["log", "--manifest", &id]), "log");
    valid(&run(&ws, &["log"]), "log");
    // A job's runs, chain and union.
    let job_dest = p("job-dest");
    let nightly = || {
        run(
            &ws,
            &[
                "transfer",
                &src,
                &job_dest,
                "--signing-key",
                &key,
                "--job",
                "nightly",
            ],
        )
    };
    let t = valid(&nightly(), "transfer");
    assert_eq!(t["job"]["run"], 1);
    ws.file("PAT2/IM1", b"three");
    let t = valid(&nightly(), "transfer");
    assert_eq!(t["job"]["unchanged_files"], 2);
    let newest = root.join(t["sealed"]["manifest"].as_str().unwrap());
    let newest = newest.display().to_string();
    let dir = ws.manifests.display().to_string();
    let a = valid(
        &run(&ws, &with(&["audit", &newest, "--chain", &dir], &trust)),
        "audit_chain",
    );
    assert_eq!(a["links"].as_array().unwrap().len(), 2);
    let v = valid(
        &run(
            &ws,
            &with(&["verify", "--job", "nightly", &job_dest], &trust),
        ),
        "verify",
    );
    assert_eq!(v["report"]["files_verified"], 3);
    valid(&run(&ws, &["log", "--job", "nightly"]), "job_log");
    valid(
        &run(
            &ws,
            &[
                "handoff",
                &m,
                "--from",
                "a",
                "--to",
                "b",
                "--purpose",
                "c",
                "--signing-key",
                &key,
            ],
        ),
        "handoff",
    );
    valid(&run(&ws, &with(&["report", &m], &trust)), "report");
    valid(
        &run(&ws, &with(&["rollback", &m, &dest], &trust)),
        "rollback",
    );

    // Encrypted, then restored: decrypt's check object.
    let enc_dest = p("enc-dest");
    let t = valid(
        &run(
            &ws,
            &[
                "transfer",
                &src,
                &enc_dest,
                "--signing-key",
                &key,
                "--encrypt-key",
                &p("enc.key"),
            ],
        ),
        "transfer",
    );
    let enc_manifest = t["sealed"]["manifest"].as_str().unwrap().to_owned();
    let (plain, enc_key) = (p("plain"), p("enc.key"));
    valid(
        &run(
            &ws,
            &with(
                &[
                    "decrypt",
                    &enc_dest,
                    &plain,
                    "--decrypt-key",
                    &enc_key,
                    "--manifest",
                    &enc_manifest,
                ],
                &trust,
            ),
        ),
        "check",
    );

    // Waves.
    let plan = root.join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[[wave]]\nname = \"w\"\nsource = \"src\"\ndestination = \"wave-dest\"\nchange = \"C1\"\n\
             owner = \"o\"\nrollback_contact = \"r\"\nsigning_key = \"{key}\"\n"
        ),
    )
    .unwrap();
    let plan = plan.display().to_string();
    valid(&run(&ws, &["plan", &plan, "--rate", "10M"]), "plan");
    let custom = [
        "--device",
        "custom",
        "--device-bytes",
        "1M",
        "--device-files",
        "2",
    ];
    let d = valid(
        &run(
            &ws,
            &[&["plan", &plan, "--rate", "10M"][..], &custom[..]].concat(),
        ),
        "plan",
    );
    assert_eq!(d["devices"][0]["devices"], 2, "{d}");
    valid(&run(&ws, &["run", &plan, "--wave", "w"]), "transfer");

    // A split, a shard, a set of one... of two shards.
    let split_dir = p("split");
    let sp = valid(
        &run(
            &ws,
            &[
                &["split", &src, "--out", &split_dir, "--signing-key", &key][..],
                &custom[..],
            ]
            .concat(),
        ),
        "split",
    );
    assert_eq!(sp["shards"].as_array().unwrap().len(), 2);
    let fit = run(&ws, &[&["scan", &src][..], &custom[..]].concat());
    assert_eq!(fit.status.code(), Some(2));
    assert_eq!(valid(&fit, "scan")["device"]["devices"], 2);
    let mut shard_manifests = Vec::new();
    for n in 1..=2 {
        let list = p(&format!("split/shard-0{n}.list"));
        let t = valid(
            &run(
                &ws,
                &[
                    "transfer",
                    &src,
                    &p("set-dest"),
                    "--signing-key",
                    &key,
                    "--shard",
                    &list,
                ],
            ),
            "transfer",
        );
        shard_manifests.push(
            root.join(t["sealed"]["manifest"].as_str().unwrap())
                .display()
                .to_string(),
        );
    }
    let set = p("set.json");
    let split_json = p("split/split.json");
    let mut seal = vec![
        "seal-set",
        "--out",
        &set,
        "--signing-key",
        &key,
        &split_json,
    ];
    seal.extend(shard_manifests.iter().map(String::as_str));
    valid(&run(&ws, &with(&seal, &trust)), "seal_set");
    let audit_set = || {
        valid(
            &run(&ws, &with(&["audit", &set, "--chain", &dir], &trust)),
            "audit_set",
        )
    };
    let a = audit_set();
    assert_eq!(
        a["result"], "fail",
        "the lists are not in the manifest folder: {a}"
    );
    for f in [
        "split.json",
        "split.json.sig",
        "shard-01.list",
        "shard-02.list",
    ] {
        std::fs::copy(root.join("split").join(f), ws.manifests.join(f)).unwrap();
    }
    let a = audit_set();
    assert_eq!(a["result"], "pass", "{a}");
    let v = valid(
        &run(
            &ws,
            &with(&["verify", "--set", &set, &p("set-dest")], &trust),
        ),
        "verify_set",
    );
    assert_eq!(v["result"], "pass", "{v}");

    // The demo, in its own directory.
    valid(&run(&ws, &["demo", "--dir", &p("demo")]), "demo");
}

#[test]
fn a_command_that_fails_prints_the_error_object_with_its_exit_code() {
    let ws = Ws::new();
    ws.file("IM1", b"one");
    let key = ws.key().display().to_string();
    let src = ws.src.display().to_string();
    let dest = ws.dest.display().to_string();
    for (args, code, says) in [
        (
            vec!["transfer", "/no/such/tree", &dest, "--signing-key", &key],
            2,
            "/no/such/tree",
        ),
        (
            vec!["transfer", &src, &dest, "--no-such-flag"],
            2,
            "unexpected argument '--no-such-flag'",
        ),
        (vec!["completions", "bash"], 2, "no JSON form"),
    ] {
        let out = run(&ws, &args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        let e = valid(&out, "error");
        assert_eq!(e["error"]["exit_code"], code);
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
    // Not now (exit 4): outside the window.
    let out = ws
        .custody(&[
            "--json",
            "transfer",
            &src,
            &dest,
            "--signing-key",
            &key,
            "--window",
            "Mon 01:00-02:00",
        ])
        .env("CUSTODY_NOW", "2026-11-24T12:00:00[UTC]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let e = valid(&out, "error");
    assert_eq!(e["error"]["exit_code"], 4);
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("run the same command later"),
        "{e}"
    );
}
