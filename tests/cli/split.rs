//! Beyond one device (docs/split.md): device profiles in the preflight,
//! `custody split` keeping studies whole, shards copied concurrently by
//! several processes with their own ledgers and keys into one Azurite
//! container prefix, the signed set (`seal-set`), its audit and its
//! verify as one closed set; and selection (`--include`, `--exclude`,
//! `--files-from`) as the manifest records it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::azurite::{self, Azurite, with_key};
use crate::support::*;

/// 40 synthetic studies of 10 instances each, spread the way a PACS
/// export by acquisition day spreads them: instance `i` of study `n` under
/// `day{(n + i) % 3}/`, so every study spans three top-level folders and
/// only its StudyInstanceUID keeps it together; plus files that are not
/// DICOM (thumbnails) in folders of their own. Returns each DICOM file's
/// study.
fn pacs(ws: &Ws) -> BTreeMap<String, String> {
    let made_in = ws.root().join("gen");
    let made = crate::dicomweb::studies(&made_in, 40, 10, 64);
    let mut study_of = BTreeMap::new();
    for inst in made {
        let (dir, file) = inst.path.split_once('/').unwrap();
        let n: u32 = dir["STUDY".len()..].parse().unwrap();
        let i: u32 = file[..4].parse().unwrap();
        let rel = format!("day{}/{}", (n + i) % 3, inst.path);
        let to = ws.src.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(made_in.join(&inst.path), &to).unwrap();
        study_of.insert(rel, inst.study);
    }
    for t in 0..3 {
        for k in 0..5 {
            ws.file(&format!("thumbs{t}/{k}.jpg"), &bytes(k, 100));
        }
    }
    study_of
}

fn split(ws: &Ws, out: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut c = ws.custody(&["--json", "split"]);
    c.arg(&ws.src)
        .args([
            "--device",
            "custom",
            "--device-bytes",
            "1G",
            "--device-files",
            "150",
        ])
        .arg("--out")
        .arg(out)
        .arg("--signing-key")
        .arg(ws.key())
        .args(extra);
    c
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_split_keeps_every_study_on_one_shard_is_deterministic_and_signed() {
    let ws = Ws::new();
    let study_of = pacs(&ws);
    let out = ws.root().join("split");
    let s = json(&split(&ws, &out, &[]).assert().code(0).get_output().clone());
    let shards = s["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "415 files, 150 a device: three");
    assert_eq!(s["totals"]["files"], 415);
    assert_eq!(s["totals"]["studies"], 40);
    assert_eq!(s["fewest"], true);
    let mut seen = BTreeSet::new();
    let mut shard_of_study: BTreeMap<&str, u64> = BTreeMap::new();
    let mut shard_of_folder: BTreeMap<String, u64> = BTreeMap::new();
    for (i, sh) in shards.iter().enumerate() {
        let n = i as u64 + 1;
        let list = out.join(sh["list"].as_str().unwrap());
        assert_eq!(sh["list"], format!("shard-{n:02}.list"));
        let bytes = std::fs::read(&list).unwrap();
        assert_eq!(sh["blake3"], blake3::hash(&bytes).to_hex().to_string());
        let paths = lines(&list);
        assert!(paths.len() <= 150);
        assert_eq!(sh["files"], paths.len() as u64);
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| {
            let key = |s: &str| {
                s.bytes()
                    .map(|c| if c == b'/' { 0 } else { c })
                    .collect::<Vec<_>>()
            };
            key(a).cmp(&key(b))
        });
        assert_eq!(paths, sorted, "component order");
        for p in paths {
            assert!(seen.insert(p.clone()), "{p} is in two shards");
            match study_of.get(&p) {
                Some(study) => {
                    let at = *shard_of_study.entry(study).or_insert(n);
                    assert_eq!(at, n, "study {study} is on shards {at} and {n}");
                }
                None => {
                    let top = p.split('/').next().unwrap().to_owned();
                    let at = *shard_of_folder.entry(top.clone()).or_insert(n);
                    assert_eq!(at, n, "folder {top} is on shards {at} and {n}");
                }
            }
        }
    }
    assert_eq!(
        seen,
        files_under(&ws.src).into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(shard_of_study.len(), 40);
    // Signed like a manifest: stock ssh-keygen checks it.
    let ok = ssh_keygen_verify(&ws.signers(), IDENTITY, &out.join("split.json"));
    assert!(ok.status.success(), "{}", stderr(&ok));
    // The same tree again: the same lists, byte for byte.
    let again = ws.root().join("split-again");
    split(&ws, &again, &[]).assert().code(0);
    for sh in shards {
        let name = sh["list"].as_str().unwrap();
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap()
        );
    }
    // A directory that holds a split is not written over.
    let err = stderr(&split(&ws, &out, &[]).assert().code(2).get_output().clone());
    assert!(err.contains("already holds a split"), "{err}");
}

#[test]
fn a_study_larger_than_a_device_is_refused_by_name_and_nothing_is_written() {
    let ws = Ws::new();
    let study_of = pacs(&ws);
    let out = ws.root().join("split");
    let mut c = ws.custody(&["split"]);
    c.arg(&ws.src)
        .args([
            "--device",
            "custom",
            "--device-bytes",
            "1G",
            "--device-files",
            "9",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--signing-key")
        .arg(ws.key());
    let err = stderr(&c.assert().code(2).get_output().clone());
    let studies: BTreeSet<&String> = study_of.values().collect();
    assert!(
        studies
            .iter()
            .any(|s| err.contains(&format!("study {s} (10 files"))),
        "{err}"
    );
    assert!(!out.join("split.json").exists());
    assert!(!out.join("shard-01.list").exists());
}

#[test]
fn the_preflight_refuses_a_tree_that_does_not_fit_one_device_and_says_how_many() {
    let ws = Ws::new();
    assert_eq!(pacs_tree(&ws, 3, 10, 100), 120);
    let dev = [
        "--device",
        "custom",
        "--device-bytes",
        "10G",
        "--device-files",
        "40",
    ];
    let out = ws
        .custody(&["scan"])
        .arg(&ws.src)
        .args(dev)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    assert!(
        err.contains("120 files (one custom holds 40)") && err.contains("at least 3 devices"),
        "{err}"
    );
    assert!(err.contains("custody split"), "{err}");
    let out = ws.transfer(&dev).assert().code(2).get_output().clone();
    assert!(
        stderr(&out).contains("at least 3 devices"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.dest.exists() || files_under(&ws.dest).is_empty());
    assert!(!ws.ledger.exists() || landed_rows(&ws.ledger) == 0);
    // A documented profile: Data Box Disk holds 100,000 files; this fits.
    ws.custody(&["scan"])
        .arg(&ws.src)
        .args(["--device", "databox-disk"])
        .assert()
        .code(0);
    // Custom limits need a custom device, and the reverse.
    ws.custody(&["scan"])
        .arg(&ws.src)
        .args(["--device", "databox", "--device-files", "3"])
        .assert()
        .code(2);
    ws.custody(&["scan"])
        .arg(&ws.src)
        .args(["--device", "custom"])
        .assert()
        .code(2);
}

/// `custody audit SET --chain DIR --allowed-signers SIGNERS`.
fn audit_set(ws: &Ws, set: &Path, dir: &Path, signers: &Path) -> assert_cmd::Command {
    let mut c = ws.custody(&["audit"]);
    c.arg(set)
        .arg("--chain")
        .arg(dir)
        .arg("--allowed-signers")
        .arg(signers);
    c
}

/// A second operator: another key, another identity.
fn second_operator(ws: &Ws) -> (PathBuf, PathBuf) {
    let dir = ws.root().join("keys-2");
    ws.custody(&["keygen", "--out"])
        .arg(&dir)
        .args(["--identity", "ops2@hospital.example"])
        .assert()
        .success();
    // One allowed_signers naming both operators.
    let both = ws.root().join("allowed_signers");
    let mut text = std::fs::read_to_string(ws.signers()).unwrap();
    text.push_str(&std::fs::read_to_string(dir.join("allowed_signers")).unwrap());
    std::fs::write(&both, text).unwrap();
    (dir.join("custody_ed25519"), both)
}

/// Shard `n`'s transfer as a host would run it: its own ledger and
/// manifest folder under `host<n>/`.
fn shard_transfer(ws: &Ws, n: u32, key: &Path, url: &str, list: &Path) -> std::process::Command {
    let host = ws.root().join(format!("host{n}"));
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("custody"));
    for var in SETTINGS_ENV {
        c.env_remove(var);
    }
    c.env("XDG_CONFIG_HOME", ws.root().join("xdg"))
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env("AZURE_STORAGE_KEY", azurite::KEY)
        .arg("--ledger")
        .arg(host.join("custody.db"))
        .arg("--manifest-dir")
        .arg(host.join("manifests"))
        .args(["--json", "transfer"])
        .arg(&ws.src)
        .arg(url)
        .arg("--shard")
        .arg(list)
        .arg("--signing-key")
        .arg(key)
        .arg("--allowed-signers")
        .arg(ws.root().join("allowed_signers"))
        .args(["--jobs", "2"]);
    c
}

fn only_manifest(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[test]
fn three_hosts_copy_three_shards_at_once_into_one_prefix_and_the_set_verifies_as_one() {
    let ws = Ws::new();
    let study_of = pacs(&ws);
    let az = Azurite::start(&ws.root().join("azurite"));
    let (key2, both) = second_operator(&ws);
    let out = ws.root().join("split");
    split(&ws, &out, &[]).assert().code(0);
    let url = az.url("pacs/set-1");
    // Three processes at once, three ledgers, two operators' keys.
    let keys = [ws.key(), key2.clone(), ws.key()];
    let children: Vec<_> = (1..=3u32)
        .map(|n| {
            shard_transfer(
                &ws,
                n,
                &keys[n as usize - 1],
                &url,
                &out.join(format!("shard-0{n}.list")),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut manifests = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "shard {}: {}",
            i + 1,
            String::from_utf8_lossy(&o.stderr)
        );
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            s["verify"]["counts"]["extra"], 0,
            "a shard's verify reads its own objects"
        );
        let m = only_manifest(&ws.root().join(format!("host{}/manifests", i + 1)));
        let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        assert_sealed_as(&v, 8);
        assert_eq!(v["shard"]["number"], i as u64 + 1);
        assert_eq!(v["shard"]["of"], 3);
        assert!(
            v["excluded"].as_array().unwrap().is_empty(),
            "outside the shard is not excluded"
        );
        assert_eq!(crate::audit::schema_errors(&m), "");
        manifests.push(m);
    }
    assert_eq!(az.names("pacs").len(), 415);
    // The set, signed by a third party's view of both operators.
    let set = ws.root().join("pacs.set.json");
    let mut c = ws.custody(&["seal-set"]);
    c.arg(out.join("split.json"))
        .args(&manifests)
        .arg("--out")
        .arg(&set)
        .arg("--signing-key")
        .arg(ws.key())
        .arg("--allowed-signers")
        .arg(&both);
    c.assert().code(0);
    // Everything the auditor needs, gathered in one folder.
    let gathered = ws.root().join("audit");
    std::fs::create_dir_all(gathered.join("manifests")).unwrap();
    for f in std::fs::read_dir(&out).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, gathered.join(f.file_name().unwrap())).unwrap();
    }
    for m in &manifests {
        for p in [m.clone(), m.with_extension("json.sig")] {
            std::fs::copy(&p, gathered.join("manifests").join(p.file_name().unwrap())).unwrap();
        }
    }
    let audit = |dir: &Path| audit_set(&ws, &set, dir, &both);
    audit(&gathered).assert().code(0);
    let verify = || {
        let mut c = ws.custody(&["--json", "verify", "--set"]);
        c.arg(&set)
            .arg(&url)
            .arg("--allowed-signers")
            .arg(&both)
            .arg("--manifest-dir")
            .arg(gathered.join("manifests"));
        with_key(c)
    };
    let v = json(&verify().assert().code(0).get_output().clone());
    assert_eq!(v["report"]["files_verified"], 415);
    // A blob deleted after import: exit 1, named with its shard and study.
    let (gone, study) = study_of.iter().nth(17).unwrap();
    az.delete("pacs", &format!("set-1/{gone}"));
    let v = json(&verify().assert().code(1).get_output().clone());
    let d = &v["discrepancies"][0];
    assert_eq!(d["class"], "missing");
    assert_eq!(d["path"], gone.as_str());
    assert_eq!(d["study"], study.as_str());
    let shard = d["shard"].as_u64().unwrap();
    assert!(lines(&out.join(format!("shard-0{shard}.list"))).contains(gone));
    let counts = &v["by_shard"][shard as usize - 1]["counts"];
    assert_eq!(counts["missing"], 1);
    // A shard manifest missing, then replaced by another: the audit fails.
    let first = gathered
        .join("manifests")
        .join(manifests[0].file_name().unwrap());
    let kept = std::fs::read(&first).unwrap();
    std::fs::remove_file(&first).unwrap();
    let o = audit(&gathered).assert().code(1).get_output().clone();
    assert!(
        stdout(&o).contains("shard 1: manifest") && stdout(&o).contains("is missing"),
        "{}",
        stdout(&o)
    );
    std::fs::copy(&manifests[1], &first).unwrap();
    let o = audit(&gathered).assert().code(1).get_output().clone();
    assert!(
        stdout(&o).contains("not the manifest the set binds"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&first, kept).unwrap();
    audit(&gathered).assert().code(0);
    // A set that leaves a shard out cannot be sealed.
    let mut c = ws.custody(&["seal-set"]);
    c.arg(out.join("split.json"))
        .args(&manifests[..2])
        .arg("--out")
        .arg(ws.root().join("partial.json"))
        .arg("--signing-key")
        .arg(ws.key())
        .arg("--allowed-signers")
        .arg(&both);
    let o = c.assert().code(1).get_output().clone();
    assert!(
        stderr(&o).contains("shard 3 (shard-03.list) has no manifest"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_edited_shard_list_is_refused_before_anything_moves() {
    let ws = Ws::new();
    pacs(&ws);
    let out = ws.root().join("split");
    split(&ws, &out, &[]).assert().code(0);
    let list = out.join("shard-02.list");
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str("thumbs9/extra.jpg\n");
    std::fs::write(&list, text).unwrap();
    let o = ws
        .transfer(&["--shard", list.to_str().unwrap()])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&o);
    assert!(
        err.contains("shard-02.list")
            && err.contains("the list was changed since the split was signed"),
        "{err}"
    );
    assert!(!ws.dest.exists() || files_under(&ws.dest).is_empty());
    assert!(!ws.ledger.exists() || landed_rows(&ws.ledger) == 0);
    // Its split signed by a key nobody trusts: refused too.
    let other = Ws::new();
    let o = other
        .transfer(&["--shard", out.join("shard-01.list").to_str().unwrap()])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));
}

#[test]
fn a_shard_pauses_resumes_encrypts_and_two_shards_on_one_ledger_are_two_runs() {
    let ws = Ws::new();
    pacs(&ws);
    let out = ws.root().join("split");
    split(&ws, &out, &[]).assert().code(0);
    let key = ws.encryption_key();
    let shard = |n: u32| out.join(format!("shard-0{n}.list")).display().to_string();
    // `transfer --shard N --encrypt-key K` plus `extra`: its exit code and
    // summary.
    let run = |n: u32, extra: &[&str], code: i32| {
        let mut args = vec!["--shard".to_owned(), shard(n), "--encrypt-key".to_owned()];
        args.push(key.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        json(&ws.transfer(&args).assert().code(code).get_output().clone())
    };
    // Paused after a few files (--max-bytes), then resumed: nothing twice.
    let copied = run(1, &["--max-bytes", "20K"], 4)["files_copied"]
        .as_u64()
        .unwrap();
    assert!(copied > 0 && copied < 150, "{copied}");
    let done = run(1, &[], 0);
    assert_eq!(done["files_copied"].as_u64().unwrap() + copied, 150);
    assert_eq!(done["files_skipped"], copied);
    // Shard 2 on the same ledger and destination: a run of its own.
    let two = run(2, &[], 0);
    assert_eq!(two["files_copied"], 150);
    assert_ne!(two["run"]["id"], done["run"]["id"]);
    // Shard 1 again: its work is finished, nothing is redone.
    let again = run(1, &[], 0);
    assert_eq!(again["files_copied"], 0);
    assert_eq!(files_under(&ws.dest).len(), 300);
    assert!(
        files_under(&ws.dest)
            .iter()
            .all(|f| f.ends_with(".custody-enc"))
    );
}

#[test]
fn filters_leave_files_out_the_manifest_says_which_and_a_job_keeps_its_filters() {
    let ws = Ws::new();
    pacs_tree(&ws, 2, 3, 1000);
    ws.file("PAT0000/thumbs/1.jpg", b"thumb");
    ws.file("PAT0001/a.tmp", b"tmp");
    ws.file("index.db", b"db");
    let filters = [
        "--exclude",
        "*.tmp",
        "--exclude",
        "thumbs/",
        "--exclude",
        "/index.db",
    ];
    let s = json(
        &ws.transfer(&[&filters[..], &["--job", "nightly"][..]].concat())
            .assert()
            .code(0)
            .get_output()
            .clone(),
    );
    assert_eq!(s["files_copied"], 24);
    let m = ws.manifest();
    let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_sealed_as(&v, 8);
    assert_eq!(v["selection"]["left_out"], 3);
    assert_eq!(v["selection"]["filters"][1]["pattern"], "thumbs/");
    assert_eq!(v["selection"]["filters"][1]["action"], "exclude");
    assert!(v["excluded"].as_array().unwrap().is_empty());
    assert_eq!(crate::audit::schema_errors(&m), "");
    // Another night with other filters: refused, as another source is.
    let o = ws
        .transfer(&["--exclude", "*.tmp", "--job", "nightly"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&o).contains(r#"job "nightly" was started with exclude "*.tmp"; exclude "thumbs/"; exclude "/index.db", not with exclude "*.tmp""#),
        "{}",
        stderr(&o)
    );
    // --include: only what matches, everything else left out.
    let ws2 = Ws::new();
    pacs_tree(&ws2, 2, 3, 1000);
    ws2.file("notes/readme.txt", b"x");
    let s = json(
        &ws2.transfer(&["--include", "/PAT001/**"])
            .assert()
            .code(0)
            .get_output()
            .clone(),
    );
    assert_eq!(s["files_copied"], 12);
    // --files-from: a listed file that is not there fails the run (exit 3).
    let ws3 = Ws::new();
    pacs_tree(&ws3, 1, 3, 100);
    let list = ws3.root().join("list.txt");
    let files = files_under(&ws3.src);
    std::fs::write(
        &list,
        format!("# wanted\n{}\nPAT9999/missing.dcm\n", files[0]),
    )
    .unwrap();
    let o = ws3
        .transfer(&["--files-from", list.to_str().unwrap()])
        .assert()
        .code(3)
        .get_output()
        .clone();
    assert_eq!(json(&o)["files_copied"], 1);
    assert!(stderr(&o).contains("PAT9999/missing.dcm"), "{}", stderr(&o));
    // A pattern that is not a glob: exit 2, nothing read.
    ws3.transfer(&["--include", "{{.*}}"]).assert().code(2);
}

#[test]
fn the_split_and_set_vector_audits_and_ssh_keygen_checks_each_signature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("manifests/split-example");
    let signers = root.join("keys-example/allowed_signers");
    let ws = Ws::new();
    let set = dir.join("example.set.json");
    audit_set(&ws, &set, &dir, &signers).assert().code(0);
    for doc in [dir.join("split.json"), set.clone()] {
        let ok = ssh_keygen_verify(&signers, "demo-operator@custody.example", &doc);
        assert!(ok.status.success(), "{}: {}", doc.display(), stderr(&ok));
    }
    // Each list is the one the split records; each manifest's entries are
    // the source files beside them, byte for byte.
    let split: Value =
        serde_json::from_slice(&std::fs::read(dir.join("split.json")).unwrap()).unwrap();
    for sh in split["shards"].as_array().unwrap() {
        let list = std::fs::read(dir.join(sh["list"].as_str().unwrap())).unwrap();
        assert_eq!(sh["blake3"], blake3::hash(&list).to_hex().to_string());
    }
    let mut carried = BTreeSet::new();
    for m in std::fs::read_dir(dir.join("manifests")).unwrap() {
        let m = m.unwrap().path();
        if m.extension().is_none_or(|e| e != "json") {
            continue;
        }
        assert_eq!(crate::audit::schema_errors(&m), "");
        let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        assert_eq!(v["version"], 8, "the vector predates version 9");
        for f in v["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            let bytes = std::fs::read(dir.join("source").join(path)).unwrap();
            assert_eq!(f["blake3"], blake3::hash(&bytes).to_hex().to_string());
            assert!(carried.insert(path.to_owned()));
        }
    }
    assert_eq!(carried.len(), 5);
    // One byte of a list changed: the audit names the shard.
    let copy = ws.root().join("vector");
    std::fs::create_dir_all(copy.join("manifests")).unwrap();
    for d in [&dir, &dir.join("manifests")] {
        for f in std::fs::read_dir(d).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                let to = copy.join(f.strip_prefix(&dir).unwrap());
                std::fs::copy(&f, to).unwrap();
            }
        }
    }
    let list = copy.join("shard-02.list");
    let text = std::fs::read_to_string(&list)
        .unwrap()
        .replace("0001.dcm", "0002.dcm");
    std::fs::write(&list, text).unwrap();
    let o = audit_set(&ws, &copy.join("example.set.json"), &copy, &signers)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(stdout(&o).contains("PROBLEM    shard 2:"), "{}", stdout(&o));
}

#[test]
fn a_dicomweb_destination_takes_no_selection_yet_and_says_so() {
    let ws = Ws::new();
    ws.file("a.dcm", b"x");
    let o = ws
        .custody(&["transfer"])
        .arg(&ws.src)
        .arg("dicomweb+http://127.0.0.1:9/dicom-web")
        .arg("--signing-key")
        .arg(ws.key())
        .args(["--exclude", "*.tmp"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&o).contains(
            "a DICOMweb destination takes no --include, --exclude, --files-from or --shard"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_split_of_a_tree_with_an_unreadable_file_writes_nothing_and_names_it() {
    let ws = Ws::new();
    pacs(&ws);
    let locked = ws.file("day1/locked.dcm", b"secret");
    chmod(&locked, 0o000);
    // The tests may run as root, who reads anything: run as `nobody`.
    crate::resume::open_to_nobody(&ws);
    let (src, out, key) = (
        ws.src.display().to_string(),
        ws.root().join("split").display().to_string(),
        ws.key().display().to_string(),
    );
    let args = [
        "split",
        &src,
        "--device",
        "custom",
        "--device-bytes",
        "1G",
        "--device-files",
        "150",
        "--out",
        &out,
        "--signing-key",
        &key,
    ];
    let o = crate::resume::unprivileged(&ws, &args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("1 entr(ies) of the source could not be read")
            && err.contains(&format!("{}: Permission denied", locked.display())),
        "{err}"
    );
    assert!(!Path::new(&out).join("split.json").exists());
    // Readable again: the same command splits it, the file in a shard.
    chmod(&locked, 0o644);
    let o = crate::resume::unprivileged(&ws, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed: Vec<String> = (1..=3)
        .flat_map(|n| lines(&Path::new(&out).join(format!("shard-0{n}.list"))))
        .collect();
    assert!(listed.contains(&"day1/locked.dcm".to_owned()));
}
