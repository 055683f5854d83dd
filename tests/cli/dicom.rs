//! DICOM awareness, against real files: pydicom's own test files (read in
//! place from its installed wheel, never copied) checked against what
//! pydicom reads from them (`tests/dicom_reference.py`), and synthetic
//! files the reference writes for the cases the real set lacks:
//! identifiable and de-identified instances with made-up patient values, a
//! duplicate instance, a truncated header, a huge header element, a file
//! without the preamble and a text file named `.dcm`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{Ws, assert_sealed_as, json, pydicom_files, stderr, stdout};

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom_reference.py")
}

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(reference())
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "dicom_reference.py {args:?} failed (./scripts/test installs pydicom): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What pydicom reads from each of its Part 10 test files, by path
/// relative to the test files directory.
fn pydicom_reads() -> BTreeMap<String, Value> {
    let root = pydicom_files();
    python(&["files"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let rel = Path::new(v["path"].as_str().unwrap())
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, v)
        })
        .collect()
}

/// The six Part 10 files of pydicom 3.0.2 whose headers custody does not
/// read: four are malformed on purpose (no transfer syntax, no group length,
/// truncated, no offsets), two declare lengths past their end. pydicom reads
/// all six leniently; custody carries them as plain files, with a note.
const UNREAD: [&str; 6] = [
    "SC_rgb_jpeg.dcm",
    "UN_sequence.dcm",
    "dicomdirtests/DICOMDIR-nooffset",
    "meta_missing_tsyntax.dcm",
    "no_meta_group_length.dcm",
    "rtplan_truncated.dcm",
];

fn is_uid(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn is_code(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
}

/// The manifest's `dicom` object custody should write for what pydicom
/// read: the well-formed UIDs and modality.
fn expected_entry(r: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for key in ["instance", "series", "sop_class", "study"] {
        if let Some(v) = r[key].as_str().filter(|v| is_uid(v)) {
            m.insert(key.into(), v.into());
        }
    }
    if let Some(v) = r["modality"].as_str().filter(|v| is_code(v)) {
        m.insert("modality".into(), v.into());
    }
    Value::Object(m)
}

/// Writes the synthetic files under the workspace's source; returns the
/// made-up patient values and UIDs the reference used.
fn synthetic(ws: &Ws) -> Value {
    serde_json::from_str(&python(&["write", ws.src.to_str().unwrap()])).unwrap()
}

fn known_values(known: &Value) -> Vec<String> {
    ["names", "ids", "births"]
        .iter()
        .flat_map(|k| known["known"][k].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn scan_inventories_pydicoms_real_files_as_pydicom_reads_them() {
    let ws = Ws::new();
    let reads = pydicom_reads();
    assert_eq!(reads.len(), 163, "pydicom 3.0.2 ships 163 Part 10 files");
    let out = ws
        .custody(&["--json", "scan"])
        .arg(pydicom_files())
        .assert()
        .code(0)
        .get_output()
        .clone();
    let d = &json(&out)["dicom"];
    let unread: BTreeSet<String> = d["unreadable_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(unread, UNREAD.iter().map(|s| s.to_string()).collect());
    // Everything else, counted as pydicom reads it.
    let read: Vec<Value> = reads
        .iter()
        .filter(|(p, _)| !UNREAD.contains(&p.as_str()))
        .map(|(_, r)| expected_entry(r))
        .collect();
    assert_eq!(d["instances"], read.len() as u64);
    let distinct = |key: &str| {
        read.iter()
            .filter_map(|e| e[key].as_str())
            .collect::<BTreeSet<_>>()
            .len() as u64
    };
    assert_eq!(d["studies"], distinct("study"));
    assert_eq!(d["series"], distinct("series"));
    let with_uid = read.iter().filter(|e| e["instance"].is_string()).count() as u64;
    assert_eq!(d["duplicate_instances"], with_uid - distinct("instance"));
    let mut modalities: BTreeMap<String, u64> = BTreeMap::new();
    for e in &read {
        *modalities
            .entry(e["modality"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    assert_eq!(d["by_modality"], serde_json::to_value(&modalities).unwrap());
    let flag = |f: &dyn Fn(&Value) -> bool| {
        reads
            .iter()
            .filter(|(p, r)| !UNREAD.contains(&p.as_str()) && f(r))
            .count() as u64
    };
    assert_eq!(
        d["marked_deidentified"],
        flag(&|r| r["identity_removed"] == true)
    );
    assert_eq!(
        d["method_recorded"],
        flag(&|r| r["method_recorded"] == true)
    );
    assert_eq!(
        d["may_identify"],
        flag(
            &|r| r["identity_removed"] == false && !r["identifying"].as_array().unwrap().is_empty()
        )
    );
}

#[test]
fn transfer_records_each_instance_as_pydicom_reads_it() {
    let ws = Ws::new();
    let reads = pydicom_reads();
    let out = ws
        .custody(&["--json", "transfer"])
        .arg(pydicom_files())
        .arg(&ws.dest)
        .arg("--signing-key")
        .arg(ws.key())
        .assert()
        .code(0)
        .get_output()
        .clone();
    let s = json(&out);
    // Every header read, less those with no UIDs or modality at all.
    let recorded = reads
        .iter()
        .filter(|(p, r)| {
            !UNREAD.contains(&p.as_str()) && expected_entry(r) != serde_json::json!({})
        })
        .count();
    assert_eq!(s["dicom_instances"], recorded as u64);
    assert_eq!(s["dicom_unread"], 6);
    for name in UNREAD {
        assert!(
            stderr(&out).contains(&format!("note: {name}: DICOM header not read")),
            "{name} not noted: {}",
            stderr(&out)
        );
    }
    let m = ws.manifest_json();
    assert_sealed_as(&m, 4);
    let mut checked = 0;
    for f in m["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        match reads.get(path) {
            Some(r) if !UNREAD.contains(&path) && expected_entry(r) != serde_json::json!({}) => {
                assert_eq!(f["dicom"], expected_entry(r), "{path}");
                checked += 1;
            }
            // Not Part 10, or not read: no identity recorded.
            _ => assert!(f.get("dicom").is_none(), "{path}: {}", f["dicom"]),
        }
    }
    assert_eq!(checked, recorded);
}

#[test]
fn malformed_and_unusual_files_are_carried_with_a_note_never_a_stop() {
    let ws = Ws::new();
    synthetic(&ws);
    let out = ws.transfer(&[]).assert().code(0).get_output().clone();
    let s = json(&out);
    assert_eq!(s["files_copied"], 10);
    assert_eq!(s["dicom_instances"], 7);
    assert_eq!(s["dicom_unread"], 2);
    let err = stderr(&out);
    assert!(
        err.contains("note: STUDY3/truncated.dcm: DICOM header not read"),
        "{err}"
    );
    assert!(
        err.contains("note: STUDY3/huge-header.dcm: DICOM header not read (header not parsed within its first 4 MiB"),
        "{err}"
    );
    assert!(!err.contains("not-dicom.dcm"), "{err}");
    let m = ws.manifest_json();
    let by_path: BTreeMap<&str, &Value> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f))
        .collect();
    for plain in [
        "STUDY3/truncated.dcm",
        "STUDY3/huge-header.dcm",
        "STUDY3/not-dicom.dcm",
    ] {
        assert!(by_path[plain].get("dicom").is_none(), "{plain}");
    }
    // No preamble, magic first: read all the same.
    assert_eq!(by_path["STUDY2/no-preamble.dcm"]["dicom"]["modality"], "CT");
    // Everything landed byte for byte, notes or not.
    crate::support::assert_same_tree(&ws.src, &ws.dest);
}

#[test]
fn phi_check_names_the_file_and_the_attributes_never_the_values() {
    let ws = Ws::new();
    let known = synthetic(&ws);
    let out = ws
        .custody(&["scan"])
        .arg(&ws.src)
        .arg("--phi-check")
        .assert()
        .code(0)
        .get_output()
        .clone();
    let text = stdout(&out);
    // One line per file, as each file's header is read (files are read in
    // parallel, so in no fixed order).
    let mut phi: Vec<&str> = text.lines().filter(|l| l.starts_with("PHI ")).collect();
    phi.sort_unstable();
    assert_eq!(
        phi,
        [
            "PHI STUDY1/identifiable.dcm: PatientName, PatientID, PatientBirthDate (not marked de-identified)",
            "PHI STUDY1/name-only.dcm: PatientName (not marked de-identified)",
            "PHI STUDY1/removed-no.dcm: PatientBirthDate (not marked de-identified)",
        ]
    );
    assert!(text.contains("duplicate instances: 1"), "{text}");
    assert!(
        text.contains(&format!(
            "{} in STUDY2/copy-of-blank.dcm (first in STUDY2/blank.dcm)",
            known["duplicate"].as_str().unwrap()
        )),
        "{text}"
    );
    // --require-deidentified: the same files and the two unreadable
    // headers refuse the scan.
    let out = ws
        .custody(&["--json", "scan"])
        .arg(&ws.src)
        .arg("--require-deidentified")
        .assert()
        .code(2)
        .get_output()
        .clone();
    let j = json(&out);
    let listed: Vec<&str> = j["phi_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "STUDY1/identifiable.dcm",
            "STUDY1/name-only.dcm",
            "STUDY1/removed-no.dcm"
        ]
    );
    assert_eq!(j["dicom"]["may_identify"], 3);
    assert_eq!(j["dicom"]["unreadable"], 2);
    assert!(
        stderr(&out).contains(
            "--require-deidentified: 5 file(s) may identify a patient or could not be checked"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn transfer_require_deidentified_refuses_before_anything_moves() {
    let ws = Ws::new();
    synthetic(&ws);
    let out = ws
        .transfer(&["--require-deidentified"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    assert!(
        err.contains("STUDY1/identifiable.dcm (carries PatientName, PatientID, PatientBirthDate and is not marked de-identified)"),
        "{err}"
    );
    assert!(
        err.contains("STUDY3/huge-header.dcm (DICOM header could not be read"),
        "{err}"
    );
    assert!(!ws.dest.exists() || crate::support::files_under(&ws.dest).is_empty());
    assert_eq!(crate::support::landed_rows(&ws.ledger), 0);
    // Without the identifying and unreadable files, it goes.
    for f in [
        "STUDY1/identifiable.dcm",
        "STUDY1/name-only.dcm",
        "STUDY1/removed-no.dcm",
        "STUDY3/truncated.dcm",
        "STUDY3/huge-header.dcm",
    ] {
        std::fs::remove_file(ws.src.join(f)).unwrap();
    }
    let s = ws.transfer_json(&["--require-deidentified"], 0);
    assert_eq!(s["files_copied"], 5);
}

#[test]
fn verify_by_study_says_which_studies_are_complete() {
    let ws = Ws::new();
    let known = synthetic(&ws);
    ws.transfer(&[]).assert().code(0);
    let m = ws.manifest();
    // Lose one instance of study 1 at the destination.
    std::fs::remove_file(ws.dest.join("STUDY1/name-only.dcm")).unwrap();
    let out = ws
        .verify(&m, &["--by-study"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = stdout(&out);
    let study = known["study"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "STUDY {study}: 4 instances, 3 landed, 3 verified: INCOMPLETE"
        )),
        "{text}"
    );
    assert!(text.contains("studies: 3 complete, 1 incomplete"), "{text}");
    // A changed instance is landed but not verified.
    std::fs::copy(
        ws.src.join("STUDY1/name-only.dcm"),
        ws.dest.join("STUDY1/name-only.dcm"),
    )
    .unwrap();
    crate::support::append(&ws.dest.join("STUDY1/deidentified.dcm"), b"x");
    let changed = ws.dest.join("STUDY1/removed-no.dcm");
    let mut bytes = std::fs::read(&changed).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&changed, bytes).unwrap();
    let out = ws
        .custody(&["--json", "verify"])
        .arg(&m)
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .arg("--by-study")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let studies = json(&out)["report"]["by_study"].clone();
    let one = studies
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["study"] == study)
        .unwrap();
    assert_eq!(
        (
            one["instances"].clone(),
            one["landed"].clone(),
            one["verified"].clone()
        ),
        (4.into(), 4.into(), 2.into())
    );
    // Without --by-study, no study list.
    let out = ws
        .custody(&["--json", "verify"])
        .arg(&m)
        .arg(&ws.dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .output()
        .unwrap();
    assert!(json(&out)["report"].get("by_study").is_none());
}

/// Every command, at -vv, over files with known patient values: none of
/// the values appears in any output or any file custody writes.
#[test]
fn no_patient_value_appears_anywhere_even_at_vv() {
    let ws = Ws::new();
    let known = synthetic(&ws);
    let values = known_values(&known);
    let mut seen = String::new();
    let mut run = |args: &[&str], extra: &[&std::ffi::OsStr]| {
        let out = ws.custody(args).args(extra).output().unwrap();
        seen.push_str(&stdout(&out));
        seen.push_str(&stderr(&out));
        out
    };
    let src = ws.src.as_os_str();
    let b3 = ws.root().join("list.b3");
    for flags in [&["-vv", "scan"][..], &["-vv", "--json", "scan"]] {
        run(flags, &[src, "--phi-check".as_ref()]);
        run(flags, &[src, "--require-deidentified".as_ref()]);
        run(
            flags,
            &[src, "--hash".as_ref(), "--b3sum".as_ref(), b3.as_os_str()],
        );
    }
    let key = ws.key();
    let dest = ws.dest.as_os_str();
    run(
        &["-vv", "transfer"],
        &[
            src,
            dest,
            "--signing-key".as_ref(),
            key.as_os_str(),
            "--require-deidentified".as_ref(),
        ],
    );
    let out = run(
        &["-vv", "--json", "transfer"],
        &[src, dest, "--signing-key".as_ref(), key.as_os_str()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = ws.manifest();
    let signers = ws.signers();
    let trust = ["--allowed-signers".as_ref(), signers.as_os_str()];
    for flags in [&["-vv", "verify"][..], &["-vv", "--json", "verify"]] {
        let mut a = vec![m.as_os_str(), dest, "--by-study".as_ref()];
        a.extend(trust);
        a.extend([std::ffi::OsStr::new("--signing-key"), key.as_os_str()]);
        run(flags, &a);
    }
    let mut a = vec![m.as_os_str()];
    a.extend(trust);
    run(&["-vv", "audit"], &a);
    run(&["-vv", "ledger", "verify"], &[]);
    run(
        &[
            "-vv",
            "handoff",
            "--from",
            "IT",
            "--to",
            "Courier",
            "--purpose",
            "ship",
        ],
        &[m.as_os_str(), "--signing-key".as_ref(), key.as_os_str()],
    );
    // Encrypted: the transfer, then the plaintext restored.
    let enc = ws.root().join("enc.key");
    run(&["keygen", "--encryption", "--out"], &[enc.as_os_str()]);
    let dest2 = ws.root().join("dest-enc");
    let restored = ws.root().join("restored");
    run(
        &["-vv", "transfer"],
        &[
            src,
            dest2.as_os_str(),
            "--signing-key".as_ref(),
            key.as_os_str(),
            "--encrypt-key".as_ref(),
            enc.as_os_str(),
        ],
    );
    let out2 = run(
        &["-vv", "decrypt"],
        &[
            dest2.as_os_str(),
            restored.as_os_str(),
            "--decrypt-key".as_ref(),
            enc.as_os_str(),
        ],
    );
    assert_eq!(out2.status.code(), Some(0), "{}", stderr(&out2));
    assert!(restored.join("STUDY1/identifiable.dcm").exists());
    let id = json(&out)["sealed"]["id"].as_str().unwrap().to_owned();
    let timeline = ws.root().join("timeline.json");
    run(
        &["-vv", "log", "--manifest", &id, "--export"],
        &[timeline.as_os_str()],
    );
    run(&["-vv", "--json", "log", "--manifest", &id], &[]);
    // Everything custody wrote: manifests, signatures, the ledger (and its
    // WAL), the b3sum list, the exported timeline. (Not the copies of the
    // files themselves, which hold the values by design.)
    let mut written = vec![b3.clone(), timeline.clone()];
    for dir in [&ws.manifests, &ws.root().to_path_buf()] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_file() && (dir == &ws.manifests || name.starts_with("custody.db")) {
                written.push(p);
            }
        }
    }
    assert!(written.len() >= 5, "{written:?}");
    for p in &written {
        seen.push_str(&String::from_utf8_lossy(&std::fs::read(p).unwrap()));
    }
    assert!(
        seen.contains("STUDY1/identifiable.dcm"),
        "the runs did happen"
    );
    for v in &values {
        assert!(!seen.contains(v.as_str()), "{v:?} leaked");
    }
}

#[test]
fn no_dicom_carries_every_file_as_a_plain_one() {
    let ws = Ws::new();
    synthetic(&ws);
    let s = ws.transfer_json(&["--no-dicom"], 0);
    assert_eq!(s["files_copied"], 10);
    assert_eq!(s["dicom_instances"], 0);
    let m = ws.manifest_json();
    assert!(
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f.get("dicom").is_none())
    );
    ws.transfer(&["--no-dicom", "--require-deidentified"])
        .assert()
        .code(2);
}
