//! A DICOMweb service as the destination (docs/dicomweb.md), against a real
//! one: Orthanc with its DICOMweb plugin on loopback (`support::orthanc`),
//! and, where Azure's DICOM service is stricter or rewrites what it holds,
//! `support/dicomweb_standin.py` in front of it behaving as Azure documents
//! (per-instance validation and Failure Reasons, zeroed preambles, counts
//! only when asked, DELETE). The sources are pydicom's own test files and
//! synthetic studies `tests/dicom_reference.py` writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::orthanc::{self, Config, Orthanc};
use crate::support::standin::Standin;
use crate::support::*;

/// One synthetic instance: its source path and UIDs.
pub(crate) struct Instance {
    pub(crate) path: String,
    pub(crate) study: String,
    pub(crate) instance: String,
}

/// Writes `count` synthetic studies of `per` instances (`pixels` bytes of
/// pixel data each) under `root`.
pub(crate) fn studies(root: &Path, count: u32, per: u32, pixels: u32) -> Vec<Instance> {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom_reference.py"))
        .args(["studies", root.to_str().unwrap()])
        .args([count.to_string(), per.to_string(), pixels.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "dicom_reference.py studies failed (./scripts/test installs pydicom): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Instance {
                path: v["path"].as_str().unwrap().into(),
                study: v["study"].as_str().unwrap().into(),
                instance: v["instance"].as_str().unwrap().into(),
            }
        })
        .collect()
}

/// Real files from pydicom's set, no two holding one SOP Instance UID (its
/// `MR_small_*` variants share `MR_small.dcm`'s, which the preflight
/// refuses): TIFF preambles (CT_small, MR_small), JPEG 2000, explicit big
/// endian without a PatientID (ExplVR_BigEnd), deflated, and implicit VR
/// little endian (rtplan).
const REAL: [&str; 6] = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "ExplVR_BigEnd.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
];

fn real_files(ws: &Ws) {
    let from = pydicom_files();
    for name in REAL {
        let to = ws.src.join("REAL").join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from.join(name), to).unwrap();
    }
}

/// `custody --json ARGS` with HTTP Basic credentials for the server.
fn custody(ws: &Ws, args: &[&str]) -> assert_cmd::Command {
    let mut c = ws.custody(&["--json"]);
    c.args(args)
        .env("CUSTODY_DICOMWEB_USERNAME", orthanc::USER)
        .env("CUSTODY_DICOMWEB_PASSWORD", orthanc::PASSWORD)
        .env_remove("CUSTODY_AZURE_AUTH");
    c
}

fn transfer(ws: &Ws, url: &str, extra: &[&str]) -> assert_cmd::Command {
    let (src, key) = (ws.src.display().to_string(), ws.key().display().to_string());
    let mut c = custody(ws, &["transfer", &src, url, "--signing-key", &key]);
    c.args(extra);
    c
}

fn verify(ws: &Ws, manifest: &Path, url: &str, extra: &[&str]) -> assert_cmd::Command {
    let (m, signers) = (
        manifest.display().to_string(),
        ws.signers().display().to_string(),
    );
    let mut c = custody(ws, &["verify", &m, url, "--allowed-signers", &signers]);
    c.args(extra);
    c
}

fn run(c: &mut assert_cmd::Command, code: i32) -> std::process::Output {
    c.assert().code(code).get_output().clone()
}

/// The SOP Instance UIDs of the STOW-RS requests a stand-in logged.
fn posted(proxy: &Standin) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .filter(|r| r["method"] == "POST")
        .flat_map(|r| r["sops"].as_array().cloned().unwrap_or_default())
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn real_and_synthetic_studies_land_verify_and_a_rerun_does_nothing() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    let synthetic = studies(&ws.src, 3, 4, 4096);
    real_files(&ws);
    ws.file("README.txt", b"not an instance");
    let url = o.dicomweb_url();
    let s = json(&run(&mut transfer(&ws, &url, &[]), 0));
    let n = synthetic.len() + REAL.len();
    assert_eq!(s["files_copied"], n as u64);
    assert_eq!(s["excluded"], 1);
    assert_eq!(o.instance_count(), n as u64);
    // What Orthanc holds is the source file, byte for byte (its own REST
    // API, not custody's reading of it): nothing was re-encoded.
    for name in ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"] {
        let bytes = std::fs::read(ws.src.join("REAL").join(name)).unwrap();
        let sop = manifest_entry(&ws, &format!("REAL/{name}"))["dicom"]["instance"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(o.file(&sop), bytes, "{name}");
    }
    let m = ws.manifest_json();
    assert_sealed_as(&m, 7);
    assert_eq!(m["destination"], format!("{url}/"));
    assert_eq!(
        ws.manifest_excluded(),
        [(
            "README.txt".to_owned(),
            "not a DICOM Part 10 file (no DICM magic); a DICOMweb service holds only DICOM instances"
                .to_owned()
        )]
    );
    // The held identity: the bytes after the 128-byte preamble.
    let ct = manifest_entry(&ws, "REAL/CT_small.dcm");
    let bytes = std::fs::read(ws.src.join("REAL/CT_small.dcm")).unwrap();
    assert_ne!(
        &bytes[..4],
        &[0, 0, 0, 0],
        "CT_small.dcm has a TIFF preamble"
    );
    assert_eq!(
        ct["stored"]["blake3"],
        blake3::hash(&bytes[128..]).to_hex().to_string()
    );
    assert_eq!(ct["stored"]["size"], bytes.len() as u64 - 128);
    assert_eq!(
        ct["stored"]["path"],
        format!(
            "studies/{}/series/{}/instances/{}",
            ct["dicom"]["study"].as_str().unwrap(),
            ct["dicom"]["series"].as_str().unwrap(),
            ct["dicom"]["instance"].as_str().unwrap()
        )
    );
    let manifest = ws.manifest();
    assert_eq!(crate::audit::schema_errors(&manifest), "");
    assert!(
        ssh_keygen_verify(&ws.signers(), IDENTITY, &manifest)
            .status
            .success()
    );
    run(
        &mut custody(
            &ws,
            &[
                "audit",
                manifest.to_str().unwrap(),
                "--allowed-signers",
                ws.signers().to_str().unwrap(),
            ],
        ),
        0,
    );
    let r = json(&run(&mut verify(&ws, &manifest, &url, &["--by-study"]), 0));
    assert_eq!(r["report"]["files_verified"], n as u64);
    let studies = r["report"]["by_study"].as_array().unwrap();
    assert_eq!(
        studies.len(),
        3 + 6,
        "three synthetic studies, one per real file"
    );
    assert!(
        studies.iter().all(|s| s["verified"] == s["instances"]),
        "{studies:?}"
    );
    // Run again: nothing new (the excluded README included), nothing sent.
    let again = json(&run(&mut transfer(&ws, &url, &[]), 0));
    assert_eq!(again["files_copied"], 0);
    assert!(again["finished"].is_object(), "{again}");
    // One manifest: its file, its signature, its checkpoint and the checkpoint's.
    assert_eq!(std::fs::read_dir(&ws.manifests).unwrap().count(), 4);
}

fn manifest_entry(ws: &Ws, path: &str) -> Value {
    ws.manifest_json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the manifest"))
        .clone()
}

#[test]
fn the_request_body_carries_each_file_byte_for_byte() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    real_files(&ws);
    std::fs::remove_file(ws.src.join("REAL/rtplan.dcm")).unwrap();
    let bodies = ws.root().join("bodies");
    std::fs::create_dir(&bodies).unwrap();
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &["--record", bodies.to_str().unwrap()],
        &ws.root().join("proxy.log"),
    );
    run(
        &mut transfer(&ws, &proxy.dicomweb_url(), &["--no-verify"]),
        0,
    );
    let mut sent = Vec::new();
    for e in std::fs::read_dir(&bodies).unwrap() {
        sent.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    for name in REAL.iter().filter(|n| **n != "rtplan.dcm") {
        let file = std::fs::read(ws.src.join("REAL").join(name)).unwrap();
        // Each part: its own Content-Type, a blank line, the file exactly,
        // CRLF and the next boundary.
        let mut part = b"\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        part.extend_from_slice(&file);
        part.extend_from_slice(b"\r\n--");
        let found = sent.iter().filter(|b| contains(b, &part)).count();
        assert_eq!(found, 1, "{name} is not in exactly one request as read");
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_deleted_instance_is_missing_and_names_its_file_and_study() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    let s = studies(&ws.src, 2, 3, 4096);
    let url = o.dicomweb_url();
    run(&mut transfer(&ws, &url, &[]), 0);
    let victim = &s[4];
    o.delete_instance(&victim.instance);
    let out = run(&mut verify(&ws, &ws.manifest(), &url, &["--by-study"]), 1);
    let r = json(&out);
    let d = &r["report"]["discrepancies"][0];
    assert_eq!(d["class"], "missing");
    assert!(d["path"].as_str().unwrap().contains(&victim.instance));
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("(source file {})", victim.path)),
        "{d}"
    );
    let one = r["report"]["by_study"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["study"] == victim.study.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (one["instances"].clone(), one["verified"].clone()),
        (3.into(), 2.into()),
        "{one}"
    );
}

#[test]
fn other_bytes_under_the_same_uid_are_changed_and_a_stranger_is_extra() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config { overwrite: true });
    let s = studies(&ws.src, 1, 3, 4096);
    let url = o.dicomweb_url();
    run(&mut transfer(&ws, &url, &[]), 0);
    // Another client replaces an instance: same UIDs and size, one pixel
    // byte different.
    let mut bytes = std::fs::read(ws.src.join(&s[1].path)).unwrap();
    *bytes.last_mut().unwrap() ^= 0x5a;
    o.store(&bytes);
    // And stores an instance of its own into the same study.
    let stranger = ws.root().join("stranger.dcm");
    let py = format!(
        "import pydicom; from pydicom.uid import generate_uid\n\
         ds = pydicom.dcmread({src:?}); ds.SOPInstanceUID = generate_uid()\n\
         ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID\n\
         ds.save_as({out:?}, enforce_file_format=True)",
        src = ws.src.join(&s[0].path).display().to_string(),
        out = stranger.display().to_string()
    );
    assert!(
        Command::new("python3")
            .args(["-c", &py])
            .status()
            .unwrap()
            .success()
    );
    o.store(&std::fs::read(&stranger).unwrap());
    let r = json(&run(&mut verify(&ws, &ws.manifest(), &url, &[]), 1));
    let classes: BTreeSet<(String, bool)> = r["report"]["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let path = d["path"].as_str().unwrap();
            (
                d["class"].as_str().unwrap().to_owned(),
                path.contains(&s[1].instance),
            )
        })
        .collect();
    assert_eq!(
        classes,
        BTreeSet::from([("hash".to_owned(), true), ("extra".to_owned(), false)]),
        "{r}"
    );
}

#[test]
fn azures_zeroed_preambles_still_verify_and_its_refusals_are_per_instance() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    let synthetic = studies(&ws.src, 2, 3, 4096);
    real_files(&ws);
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &["--azure"],
        &ws.root().join("azure.log"),
    );
    let url = proxy.dicomweb_url();
    // Azure's rules: the implicit-VR file is refused before anything moves,
    // named, whichever command finds it.
    let out = run(
        &mut custody(
            &ws,
            &[
                "scan",
                ws.src.to_str().unwrap(),
                "--dest",
                &url,
                "--dicomweb-profile",
                "azure",
            ],
        ),
        2,
    );
    let text = stdout(&out);
    assert!(
        text.contains("implicit-vr") && text.contains("missing-attribute"),
        "{text}"
    );
    let out = run(
        &mut transfer(&ws, &url, &["--dicomweb-profile", "azure"]),
        2,
    );
    let err = stderr(&out);
    assert!(
        err.contains("REAL/rtplan.dcm") && err.contains("implicit-vr"),
        "{err}"
    );
    assert!(
        proxy.requests().iter().all(|r| r["method"] != "POST"),
        "nothing moved"
    );
    assert_eq!(o.instance_count(), 0);
    // Another client stored two of the instances already: one with the
    // same bytes (an earlier run, say), one with other bytes under the
    // same UIDs. Azure answers 45070 for both, in a 202 with the others
    // stored: the first is landed, the second fails alone.
    let same = &synthetic[0];
    o.store(&std::fs::read(ws.src.join(&same.path)).unwrap());
    let other = &synthetic[1];
    let mut bytes = std::fs::read(ws.src.join(&other.path)).unwrap();
    *bytes.last_mut().unwrap() ^= 0x5a;
    o.store(&bytes);
    let skip = ["--dicomweb-profile", "azure", "--skip-violations"];
    let out = run(&mut transfer(&ws, &url, &skip), 3);
    let s1 = json(&out);
    assert_eq!(
        (s1["files_copied"].clone(), s1["failed"].clone()),
        (9.into(), 1.into()),
        "{s1}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&other.path)
            && err.contains("Failure Reason 45070")
            && err.contains("differs"),
        "{err}"
    );
    assert!(
        proxy.requests().iter().any(|r| r["status"] == 202),
        "a partial success"
    );
    // Removed by its owner, the instance goes on the rerun; then everything
    // verifies although every preamble comes back as zeros (CT_small and
    // MR_small carry TIFF preambles).
    o.delete_instance(&other.instance);
    let s = json(&run(&mut transfer(&ws, &url, &skip), 0));
    assert_eq!(
        (s["files_skipped"].clone(), s["files_copied"].clone()),
        (9.into(), 1.into()),
        "{s}"
    );
    assert_eq!(s["verify"]["files_verified"], 10, "{s}");
    let zeroed = proxy
        .requests()
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"].as_str().unwrap().contains("/instances/"))
        .count();
    assert!(
        zeroed >= 10,
        "every instance was read back through the proxy"
    );
}

#[test]
fn a_part_the_server_drops_fails_that_file_and_the_run_is_not_sealed() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    let s = studies(&ws.src, 2, 3, 4096);
    let victim = &s[2];
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &["--drop-instance", &victim.instance, "--drop-once"],
        &ws.root().join("drop.log"),
    );
    let out = run(&mut transfer(&ws, &proxy.dicomweb_url(), &[]), 3);
    let s1 = json(&out);
    assert_eq!(s1["failed"], 1);
    assert_eq!(s1["files_copied"], 5);
    assert!(s1["sealed"].is_null());
    let err = stderr(&out);
    assert!(
        err.contains(&victim.path) && err.contains("a dropped part"),
        "{err}"
    );
    // Its ledger knows the five; the rerun (the server drops nothing this
    // time) sends only the dropped one, and seals all six.
    run(&mut custody(&ws, &["ledger", "verify"]), 0);
    let before = posted(&proxy).len();
    let s2 = json(&run(&mut transfer(&ws, &proxy.dicomweb_url(), &[]), 0));
    assert_eq!(
        (s2["files_skipped"].clone(), s2["files_copied"].clone()),
        (5.into(), 1.into())
    );
    assert_eq!(
        posted(&proxy)[before..],
        *std::slice::from_ref(&victim.instance)
    );
    assert_eq!(ws.manifest_json()["totals"]["files"], 6);
    assert_eq!(o.instance_count(), 6);
}

#[test]
fn wrong_password_or_an_unknown_scheme_stops_before_anything_moves() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    studies(&ws.src, 1, 2, 4096);
    let url = o.dicomweb_url();
    let wrong = "Tr0ub4dor-and-3";
    let out = run(
        transfer(&ws, &url, &["-vv"]).env("CUSTODY_DICOMWEB_PASSWORD", wrong),
        2,
    );
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(err.contains("refused the sign-in"), "{err}");
    for secret in [wrong, orthanc::PASSWORD] {
        assert!(!err.contains(secret) && !text.contains(secret), "{err}");
    }
    assert_eq!(o.instance_count(), 0);
    assert_eq!(landed_rows(&ws.ledger), 0);
    // A URL custody does not serve is refused, never made a local folder.
    for dest in [
        "ftp://127.0.0.1/pacs",
        "dicomweb+ftp://127.0.0.1/x",
        "s3://bucket/key",
    ] {
        let err = stderr(&run(&mut transfer(&ws, dest, &[]), 2));
        assert!(err.contains("dicomweb+https"), "{dest}: {err}");
        assert!(
            !ws.root().join(dest.split(':').next().unwrap()).exists(),
            "{dest}"
        );
        assert!(
            !ws.root()
                .join(format!("{}:", dest.split(':').next().unwrap()))
                .exists()
        );
    }
    // Plain http to a host that is not loopback is refused too.
    let err = stderr(&run(
        &mut transfer(&ws, "dicomweb+http://pacs.example.org/dicom-web", &[]),
        2,
    ));
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn kill_9_mid_transfer_resumes_without_resending_what_was_recorded() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    let all = studies(&ws.src, 4, 10, 60_000);
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &[],
        &ws.root().join("proxy.log"),
    );
    let url = proxy.dicomweb_url();
    let mut child = ws
        .transfer_at(Path::new(&url), "512K")
        .env("CUSTODY_DICOMWEB_USERNAME", orthanc::USER)
        .env("CUSTODY_DICOMWEB_PASSWORD", orthanc::PASSWORD)
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "some instances recorded", || {
        landed_rows(&ws.ledger) >= 5
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let recorded: BTreeSet<String> = {
        let db = ws.db();
        let mut stmt = db.prepare("SELECT path FROM landed").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(recorded.len() < all.len(), "killed before the end");
    let before = posted(&proxy).len();
    let s = json(&run(&mut transfer(&ws, &url, &[]), 0));
    assert_eq!(s["files_skipped"], recorded.len() as u64, "{s}");
    let after = posted(&proxy);
    let resent: Vec<&String> = after[before..]
        .iter()
        .filter(|sop| {
            all.iter()
                .any(|i| &&i.instance == sop && recorded.contains(&i.path))
        })
        .collect();
    assert!(
        resent.is_empty(),
        "recorded instances sent again: {resent:?}"
    );
    assert_eq!(o.instance_count(), all.len() as u64);
    assert_eq!(ws.manifest_json()["totals"]["files"], all.len() as u64);
}

#[test]
fn a_nightly_job_moves_only_new_instances() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    studies(&ws.src.join("night1"), 1, 3, 4096);
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &[],
        &ws.root().join("proxy.log"),
    );
    let url = proxy.dicomweb_url();
    run(&mut transfer(&ws, &url, &["--job", "pacs-nightly"]), 0);
    let first = posted(&proxy).len();
    assert_eq!(first, 3);
    let new = studies(&ws.src.join("night2"), 1, 2, 4096);
    let night1 = proxy.requests().len();
    let s = json(&run(
        &mut transfer(&ws, &url, &["--job", "pacs-nightly"]),
        0,
    ));
    assert_eq!(s["files_copied"], 2);
    // The night's verify downloads each new instance once (it asks
    // whether the service holds one by a search, not a second download).
    let downloads = proxy.requests()[night1..]
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"].as_str().unwrap().contains("/instances/"))
        .count();
    assert_eq!(downloads, 2);
    let sent: BTreeSet<String> = posted(&proxy)[first..].iter().cloned().collect();
    let expected: BTreeSet<String> = new.iter().map(|i| i.instance.clone()).collect();
    assert_eq!(sent, expected);
    let id = s["sealed"]["id"].as_str().unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(ws.manifests.join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert_sealed_as(&m, 7);
    assert_eq!(m["job"]["run"], 2);
    let out = run(
        &mut custody(
            &ws,
            &[
                "verify",
                "--job",
                "pacs-nightly",
                &url,
                "--allowed-signers",
                ws.signers().to_str().unwrap(),
            ],
        ),
        0,
    );
    assert_eq!(json(&out)["report"]["files_verified"], 5);
}

#[test]
fn rollback_deletes_exactly_what_landed_or_says_the_service_cannot() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    studies(&ws.src, 2, 2, 4096);
    let m = {
        run(&mut transfer(&ws, &o.dicomweb_url(), &[]), 0);
        ws.manifest()
    };
    let rollback = |url: &str| {
        let (mp, signers, key) = (
            m.display().to_string(),
            ws.signers().display().to_string(),
            ws.key().display().to_string(),
        );
        custody(
            &ws,
            &[
                "rollback",
                &mp,
                url,
                "--allowed-signers",
                &signers,
                "--signing-key",
                &key,
                "--yes",
            ],
        )
    };
    // Orthanc's DICOMweb plugin has no DELETE: said once, nothing removed.
    let out = run(&mut rollback(&o.dicomweb_url()), 2);
    let err = stderr(&out);
    assert!(
        err.contains("does not delete instances (DELETE answered HTTP 405)"),
        "{err}"
    );
    assert_eq!(err.matches("does not delete").count(), 1, "{err}");
    assert_eq!(o.instance_count(), 4);
    // One more instance lands in the same service from another source.
    let other = ws.root().join("other");
    studies(&other, 1, 1, 4096);
    let stranger = std::fs::read_dir(other.join("STUDY0000"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    o.store(&std::fs::read(stranger).unwrap());
    // Azure's service deletes (the stand-in does it as Azure documents).
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &["--azure"],
        &ws.root().join("azure.log"),
    );
    let out = run(
        rollback(&proxy.dicomweb_url()).arg("--destination-moved"),
        0,
    );
    assert_eq!(json(&out)["report"]["removed"], 4, "{}", stdout(&out));
    assert_eq!(o.instance_count(), 1, "the stranger stays");
}

#[test]
fn a_duplicate_instance_with_other_bytes_is_refused_by_the_preflight() {
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    let s = studies(&ws.src, 1, 2, 4096);
    // The same instance again, byte for byte: one file is enough, no
    // refusal. With one byte changed: refused, both files named.
    std::fs::copy(ws.src.join(&s[0].path), ws.src.join("copy.dcm")).unwrap();
    let url = o.dicomweb_url();
    let src = ws.src.display().to_string();
    run(&mut custody(&ws, &["scan", &src, "--dest", &url]), 0);
    let mut b = std::fs::read(ws.src.join(&s[0].path)).unwrap();
    *b.last_mut().unwrap() ^= 1;
    std::fs::write(ws.src.join("copy.dcm"), b).unwrap();
    let out = run(&mut custody(&ws, &["scan", &src, "--dest", &url]), 2);
    assert!(
        stdout(&out).contains("duplicate-instance"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&run(&mut transfer(&ws, &url, &[]), 2));
    assert!(
        err.contains("duplicate-instance") && err.contains(&s[0].path),
        "{err}"
    );
    assert_eq!(o.instance_count(), 0);
}

#[test]
fn the_version_7_vector_audits_and_each_entry_matches_its_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("manifests/dicomweb-example");
    let m = dir.join("20261207T031712Z-391d0d72.json");
    let signers = root.join("keys-example/allowed_signers");
    assert_eq!(crate::audit::schema_errors(&m), "");
    let ws = Ws::new();
    ws.custody(&["audit"])
        .arg(&m)
        .arg("--allowed-signers")
        .arg(&signers)
        .assert()
        .code(0);
    let ok = ssh_keygen_verify(&signers, "demo-operator@custody.example", &m);
    assert!(ok.status.success(), "{}", stderr(&ok));
    // Both hashes of each entry, from the synthetic source files kept
    // beside it: the whole file, and what the service holds (the bytes
    // after the 128-byte preamble).
    let v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert_eq!(v["version"], 7);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        let bytes = std::fs::read(dir.join("source").join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["blake3"], blake3::hash(&bytes).to_hex().to_string());
        assert_eq!(
            f["stored"]["blake3"],
            blake3::hash(&bytes[128..]).to_hex().to_string()
        );
        assert_eq!(f["stored"]["size"], bytes.len() as u64 - 128);
    }
    assert_eq!(v["excluded"][0]["path"], "README.txt");
    // One byte of the held part changed: the schema still holds, the
    // signature does not.
    let tampered = ws.root().join("tampered.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let held = files[0]["stored"]["blake3"].as_str().unwrap();
    let mut flipped = held.to_owned();
    flipped.replace_range(0..1, if held.starts_with('0') { "1" } else { "0" });
    std::fs::write(&tampered, text.replace(held, &flipped)).unwrap();
    std::fs::copy(
        m.with_extension("json.sig"),
        tampered.with_extension("json.sig"),
    )
    .unwrap();
    assert_eq!(crate::audit::schema_errors(&tampered), "");
    ws.custody(&["audit"])
        .arg(&tampered)
        .arg("--allowed-signers")
        .arg(&signers)
        .assert()
        .code(1);
}

#[test]
fn azures_service_takes_a_managed_identitys_token_for_its_own_audience_only() {
    use crate::support::tls::TestCa;
    const DICOM: &str = "https://dicom.healthcareapis.azure.com";
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    studies(&ws.src, 1, 3, 4096);
    let tls = TestCa::new(&ws.root().join("tls"));
    let ids = |name: &str, audience: &str| {
        Standin::identity(&tls, &["--audience", audience], &ws.root().join(name))
    };
    let dicom_id = ids("dicom-id.log", DICOM);
    let storage_id = ids("storage-id.log", "https://storage.azure.com");
    let upstream = format!("{}:{}", orthanc::USER, orthanc::PASSWORD);
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let proxy = Standin::dicomweb(
        &format!("{}/dicom-web", o.http_base()),
        &[
            "--azure",
            "--bearer",
            DICOM,
            "--upstream-auth",
            &upstream,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
        &ws.root().join("azure.log"),
    );
    let url = format!("dicomweb+https://127.0.0.1:{}/dicom-web", proxy.port);
    let signed_in = |c: &mut assert_cmd::Command, id: &Standin| {
        c.env_remove("CUSTODY_DICOMWEB_USERNAME")
            .env_remove("CUSTODY_DICOMWEB_PASSWORD")
            .env("CUSTODY_AZURE_AUTH", "managed-identity")
            .env("CUSTODY_CA_FILE", &tls.ca)
            .env(
                "IDENTITY_ENDPOINT",
                format!("https://127.0.0.1:{}/msi/token", id.port),
            )
            .env("IDENTITY_HEADER", "custody-test-header");
    };
    // A token for storage is refused by custody itself, before anything
    // moves: it was not minted for the DICOM service.
    let mut c = transfer(&ws, &url, &[]);
    signed_in(&mut c, &storage_id);
    let err = stderr(&run(&mut c, 2));
    assert!(err.contains("audience") || err.contains(DICOM), "{err}");
    assert!(proxy.requests().iter().all(|r| r["method"] != "POST"));
    // With the service's own audience: stored, sealed and verified.
    let mut c = transfer(&ws, &url, &["-vv"]);
    signed_in(&mut c, &dicom_id);
    let out = run(&mut c, 0);
    assert_eq!(json(&out)["verify"]["files_verified"], 3);
    let reqs = proxy.requests();
    assert!(reqs.iter().all(|r| r["bearer"] == "ok"), "{reqs:?}");
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains("eyJ"), "a token in the output");
    }
    assert_eq!(o.instance_count(), 3);
}
