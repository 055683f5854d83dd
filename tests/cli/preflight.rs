//! `custody scan SRC --dest DEST`: the Data Box preflight, driven through
//! the binary. Each rule's passing and failing cases are unit tests in
//! `src/databox.rs`; here, the destination decides the rules, every
//! violation is named with its path and rule, and the exit code is 2.

use std::path::PathBuf;

use crate::support::{Ws, bytes, json, stderr, stdout};

fn scan(ws: &Ws, dest: &std::path::Path, extra: &[&str]) -> std::process::Output {
    ws.custody(&["scan"])
        .arg(&ws.src)
        .arg("--dest")
        .arg(dest)
        .args(extra)
        .output()
        .unwrap()
}

/// `custody [--json] transfer SRC DEST --signing-key K` plus `extra`.
fn transfer_to(
    ws: &Ws,
    dest: &std::path::Path,
    json: bool,
    extra: &[&str],
) -> std::process::Output {
    let global: &[&str] = if json {
        &["--json", "transfer"]
    } else {
        &["transfer"]
    };
    ws.custody(global)
        .arg(&ws.src)
        .arg(dest)
        .arg("--signing-key")
        .arg(ws.key())
        .args(extra)
        .output()
        .unwrap()
}

fn share(ws: &Ws, rest: &str) -> PathBuf {
    let p = ws.root().join("databox/contoso_BlockBlob").join(rest);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn a_clean_tree_passes_into_a_container() {
    let ws = Ws::new();
    ws.file("PAT1/ST1/IM1.dcm", &bytes(1, 1000));
    ws.file("PAT1/ST1/IM2.dcm", &bytes(2, 1000));
    let dest = share(&ws, "pacs-2024/wave-1");
    let out = ws
        .custody(&["--json", "scan"])
        .arg(&ws.src)
        .arg("--dest")
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let j = json(&out);
    assert_eq!(j["preflight"]["violations"], 0);
    assert_eq!(j["preflight"]["placement"]["profile"], "block-blob");
    assert_eq!(j["preflight"]["placement"]["container"], "pacs-2024");
    assert_eq!(j["preflight"]["placement"]["prefix"], "wave-1");
    assert_eq!(j["violation_list"].as_array().unwrap().len(), 0);
    let out = scan(&ws, &dest, &[]);
    assert!(stdout(&out).contains("no violations"), "{}", stdout(&out));
}

#[test]
fn every_violation_is_named_with_its_path_and_rule() {
    let ws = Ws::new();
    ws.file("at-root.dcm", b"x");
    ws.file("Study_1/IM1.dcm", b"x");
    ws.file("study-2/IM1./x.dcm", b"x");
    ws.file("study-3/IM1.dcm", b"x");
    ws.file("study-3/im1.dcm", b"x");
    ws.file("study-4/taken.dcm", b"x");
    ws.file("study-4/fine.dcm", b"x");
    let dest = share(&ws, "");
    std::fs::create_dir_all(dest.join("study-4")).unwrap();
    std::fs::write(dest.join("study-4/taken.dcm"), b"already here").unwrap();
    let out = scan(&ws, &dest, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "VIOLATION share-root: at-root.dcm: ",
        "VIOLATION container-name: Study_1/IM1.dcm: first folder \"Study_1\" becomes the container",
        "VIOLATION trailing-dot: study-2/IM1./x.dcm: ",
        "VIOLATION case-collision: study-3/im1.dcm: \"study-3/im1.dcm\" differs only by case from \"study-3/IM1.dcm\"",
        "VIOLATION exists-at-destination: study-4/taken.dcm: ",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert_eq!(text.matches("VIOLATION").count(), 5, "{text}");
    assert!(
        !text.contains("VIOLATION exists-at-destination: study-4/fine.dcm"),
        "{text}"
    );
    assert!(text.contains("5 violations"), "{text}");
    // The scan wrote nothing at the destination.
    assert_eq!(
        std::fs::read(dest.join("study-4/taken.dcm")).unwrap(),
        b"already here"
    );
    assert!(!dest.join("study-3").exists());
}

#[test]
fn profile_decides_the_rules_for_a_plain_directory() {
    let ws = Ws::new();
    ws.file("vhds/disk.vhd", &bytes(3, 1024));
    ws.file("vhds/odd.vhd", &bytes(4, 1000));
    let plain = ws.root().join("export");
    std::fs::create_dir_all(&plain).unwrap();
    // No share name and no --profile: nothing to check against.
    let out = scan(&ws, &plain, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pass --profile"), "{}", stderr(&out));
    let out = scan(&ws, &plain, &["--profile", "page-blob"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "VIOLATION page-alignment: vhds/odd.vhd: 1000 bytes is not a multiple of 512"
        ),
        "{text}"
    );
    assert_eq!(text.matches("VIOLATION").count(), 1, "{text}");
    // Data Box's share suffix is accepted as the profile's name too.
    let out = scan(&ws, &plain, &["--profile", "BlockBlob"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn the_data_box_rest_endpoint_has_the_shorter_name_limit() {
    let ws = Ws::new();
    // 4 components of 230 characters: 923 characters, over 880, under 1024.
    let long = ["a", "b", "c", "d"].map(|c| c.repeat(230)).join("/");
    ws.file(&long, b"x");
    let rest = PathBuf::from("https://contoso.blob.abc123.microsoftdatabox.com/pacs");
    let out = scan(&ws, &rest, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("VIOLATION name-too-long: aaaa"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("(880 allowed)"), "{}", stdout(&out));
    // Without a credential the names are linted, and the report says that
    // existing blobs were not looked for.
    let azure = PathBuf::from("https://contoso.blob.core.windows.net/pacs");
    let out = scan(&ws, &azure, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("names already in the container were not looked for"),
        "{}",
        stderr(&out)
    );
    // A bad container in the URL is the destination's own violation.
    let bad = PathBuf::from("https://contoso.blob.core.windows.net/PACS");
    let out = scan(&ws, &bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("VIOLATION container-name: destination: container \"PACS\""),
        "{}",
        stdout(&out)
    );
}

/// A tree with two violations and two good files, for the transfer tests.
fn mixed_tree(ws: &Ws) {
    ws.file("PAT1/IM1.dcm", &bytes(5, 3000));
    ws.file("PAT1/im1.DCM", &bytes(6, 3000));
    ws.file("PAT2/notes.", b"trailing dot");
    ws.file("PAT2/IM9.dcm", &bytes(7, 3000));
}

#[test]
fn transfer_refuses_to_start_on_a_violation() {
    let ws = Ws::new();
    mixed_tree(&ws);
    let dest = share(&ws, "pacs");
    let out = transfer_to(&ws, &dest, false, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("preflight: 2 violation(s)"), "{err}");
    assert!(err.contains("PAT1/im1.DCM (case-collision: "), "{err}");
    assert!(err.contains("PAT2/notes. (trailing-dot: "), "{err}");
    assert!(err.contains("--skip-violations"), "{err}");
    // Nothing moved and nothing was recorded or sealed.
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    assert!(!ws.manifests.exists() || std::fs::read_dir(&ws.manifests).unwrap().count() == 0);
    let events: i64 = ws
        .db()
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 0);
}

#[test]
fn skip_violations_carries_the_rest_and_lists_the_skipped_as_excluded() {
    let ws = Ws::new();
    mixed_tree(&ws);
    let dest = share(&ws, "pacs");
    let out = transfer_to(&ws, &dest, true, &["--skip-violations"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["files_copied"], 2);
    assert_eq!(j["excluded"], 2);
    assert_eq!(j["verify"]["files_verified"], 2, "{j}");
    let excluded = ws.manifest_excluded();
    assert_eq!(excluded.len(), 2, "{excluded:?}");
    assert_eq!(excluded[0].0, "PAT1/im1.DCM");
    assert!(
        excluded[0].1.starts_with("Data Box rule case-collision: "),
        "{excluded:?}"
    );
    assert_eq!(excluded[1].0, "PAT2/notes.");
    assert!(
        excluded[1].1.starts_with("Data Box rule trailing-dot: "),
        "{excluded:?}"
    );
    assert!(dest.join("PAT1/IM1.dcm").exists());
    assert!(!dest.join("PAT1/im1.DCM").exists());
    assert!(!dest.join("PAT2/notes.").exists());
    // Regression: the same command again took the skipped files for new
    // ones and started another run. Left out and unmodified, they are no
    // new work; modified, they are looked at again (and left out again).
    let again = json(&transfer_to(&ws, &dest, true, &["--skip-violations"]));
    assert!(again["finished"].is_object(), "{again}");
    // The manifest, its signature, its checkpoint and the checkpoint's.
    assert_eq!(std::fs::read_dir(&ws.manifests).unwrap().count(), 4);
    let notes = ws.src.join("PAT2/notes.");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&notes)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let third = json(&transfer_to(&ws, &dest, true, &["--skip-violations"]));
    assert!(third["finished"].is_null(), "{third}");
    assert_eq!(third["files_copied"], 0);
    // Regression: the files the first run landed were "skipped" as names
    // already taken at the destination, where the job itself put them.
    assert_eq!(third["excluded"], 2, "{third}");
    assert_eq!(third["job"]["unchanged_files"], 2, "{third}");
}

// Regression: --skip-violations once checked no existing names, so a file
// already at the destination was overwritten instead of left out.
#[test]
fn skip_violations_leaves_names_already_at_the_destination_alone() {
    let ws = Ws::new();
    ws.file("PAT3/taken.dcm", b"new bytes");
    ws.file("PAT3/free.dcm", b"free");
    let dest = share(&ws, "pacs");
    std::fs::create_dir_all(dest.join("PAT3")).unwrap();
    std::fs::write(dest.join("PAT3/taken.dcm"), b"already here").unwrap();
    let out = transfer_to(&ws, &dest, true, &["--skip-violations", "--no-verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["files_copied"], 1);
    let excluded = ws.manifest_excluded();
    assert_eq!(excluded.len(), 1, "{excluded:?}");
    assert_eq!(excluded[0].0, "PAT3/taken.dcm");
    assert!(
        excluded[0]
            .1
            .starts_with("Data Box rule exists-at-destination: "),
        "{excluded:?}"
    );
    assert_eq!(
        std::fs::read(dest.join("PAT3/taken.dcm")).unwrap(),
        b"already here"
    );
    assert_eq!(std::fs::read(dest.join("PAT3/free.dcm")).unwrap(), b"free");
}

/// A resumed run against a Data Box share: names its first attempt landed
/// (recorded, or left unrecorded by a kill between making a batch visible
/// and recording it) are its own; a different file that appeared under one
/// of its names is still refused, before anything moves.
#[test]
fn a_resumed_run_owns_its_landings_and_still_refuses_strangers() {
    let ws = Ws::new();
    ws.file("PAT1/a.dcm", &bytes(1, 4000));
    ws.file("PAT1/b.dcm", &bytes(2, 4000));
    let growing = ws.file("PAT1/growing.dcm", &bytes(3, 16 << 20));
    let dest = share(&ws, "pacs");
    let grower = crate::support::Grower::start(&growing);
    let first = transfer_to(&ws, &dest, true, &["--no-verify"]);
    drop(grower);
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    assert_eq!(json(&first)["files_copied"], 2);

    // What a kill after the rename and before the record leaves: c.dcm at
    // its final name with its own bytes, unrecorded.
    let c = bytes(4, 3000);
    ws.file("PAT1/c.dcm", &c);
    std::fs::write(dest.join("PAT1/c.dcm"), &c).unwrap();
    // And a stranger under a name the run has not landed.
    ws.file("PAT1/d.dcm", &bytes(5, 2000));
    std::fs::write(dest.join("PAT1/d.dcm"), b"someone else's file").unwrap();

    let out = transfer_to(&ws, &dest, false, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    let named: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("exists-at-destination"))
        .collect();
    assert_eq!(named.len(), 1, "{said}");
    assert!(named[0].contains("PAT1/d.dcm"), "{said}");
    assert_eq!(
        std::fs::read(dest.join("PAT1/d.dcm")).unwrap(),
        b"someone else's file"
    );

    std::fs::remove_file(dest.join("PAT1/d.dcm")).unwrap();
    let s = json(&transfer_to(&ws, &dest, true, &[]));
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["run"]["resumed"], true);
    assert_eq!(s["files_skipped"], 2);
    assert_eq!(s["verify"]["discrepancies"].as_array().unwrap().len(), 0);
    crate::support::assert_same_tree(&ws.src, &dest);
}
