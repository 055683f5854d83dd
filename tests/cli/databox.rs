//! `custody databox bom-check` and `copylog-check` against a manifest
//! sealed by a transfer onto a (directory standing in for a) Data Box
//! share: BOM files written from the documented line format
//! (`docs/databox.md`) with CRC64 values from the independent reference
//! `tests/crc64_reference.py`, and copy logs from `tests/fixtures/databox/`
//! (written from Microsoft's documented format).

use std::path::{Path, PathBuf};

use crate::support::{Ws, bytes, json, stderr, stdout};

const FILES: [(&str, usize); 3] = [
    ("PAT1/ST1/IM1.dcm", 70_001),
    ("PAT1/ST1/IM2.dcm", 4096),
    ("PAT2/a&b.dcm", 0),
];

/// Transfers FILES onto `<root>/databox/contoso_BlockBlob/pacs`; returns
/// the share root and the manifest.
pub(crate) fn sealed(ws: &Ws) -> (PathBuf, PathBuf) {
    for (i, (p, n)) in FILES.iter().enumerate() {
        ws.file(p, &bytes(i as u64 + 40, *n));
    }
    let share = ws.root().join("databox/contoso_BlockBlob");
    let dest = share.join("pacs");
    std::fs::create_dir_all(&dest).unwrap();
    ws.transfer_into(&dest).assert().code(0);
    (share, ws.manifest())
}

/// BOM lines for the files under `share`, as Data Box writes them: sizes,
/// CRC64 from the Python reference, `\`-separated share-relative paths,
/// XML-escaped.
pub(crate) fn bom_lines(share: &Path) -> Vec<String> {
    let files: Vec<PathBuf> = FILES
        .iter()
        .map(|(p, _)| share.join("pacs").join(p))
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crc64_reference.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, "  ");
            let (crc, size, path) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let rel = Path::new(path)
                .strip_prefix(share)
                .unwrap()
                .to_str()
                .unwrap();
            let name = rel.replace('/', "\\").replace('&', "&amp;");
            format!("<file size=\"{size}\" crc64=\"0x{crc}\">\\{name}</file>")
        })
        .collect()
}

pub(crate) fn write_bom(ws: &Ws, name: &str, lines: &[String]) -> PathBuf {
    let p = ws.root().join(name);
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<FileList>\r\n");
    for l in lines {
        text.push_str(l);
        text.push_str("\r\n");
    }
    text.push_str("</FileList>\r\n");
    std::fs::write(&p, text).unwrap();
    p
}

/// `custody databox SUBCOMMAND MANIFEST FILES... --allowed-signers S` plus
/// `extra`.
fn databox(
    ws: &Ws,
    subcommand: &str,
    manifest: &Path,
    files: &[&Path],
    extra: &[&str],
) -> std::process::Output {
    ws.custody(&["databox", subcommand])
        .arg(manifest)
        .args(files)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .args(extra)
        .output()
        .unwrap()
}

fn bom_check(ws: &Ws, manifest: &Path, boms: &[&Path], extra: &[&str]) -> std::process::Output {
    databox(ws, "bom-check", manifest, boms, extra)
}

#[test]
fn a_matching_bom_passes_and_is_recorded_as_a_signed_event() {
    let ws = Ws::new();
    let (share, manifest) = sealed(&ws);
    let mut lines = bom_lines(&share);
    // Data Box may prefix the share name; other data on the share is
    // counted, not reported.
    lines[1] = lines[1].replace(">\\pacs\\", ">\\contoso_BlockBlob\\pacs\\");
    lines.push("<file size=\"5\" crc64=\"0x1\">\\other-container\\x.bin</file>".into());
    let bom = write_bom(&ws, "contoso_BlockBlob_BOM.txt", &lines);
    let key = ws.key();
    let out = bom_check(
        &ws,
        &manifest,
        &[&bom],
        &["--signing-key", key.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("3 of 3 files match"), "{text}");
    assert!(text.contains("1 elsewhere than pacs"), "{text}");
    // The signed event is in the chain, and the chain still verifies.
    let kinds: Vec<String> = ws
        .db()
        .prepare("SELECT kind FROM events WHERE signature IS NOT NULL ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds, ["sealed", "verified", "bom_checked"]);
    ws.custody(&["ledger", "verify"]).assert().code(0);
    // Editing the recorded result is caught.
    let report = ws.tampered_ledger_report(
        "UPDATE events SET payload = replace(payload, '\"matched\":3', '\"matched\":2') WHERE kind = 'bom_checked'",
    );
    assert!(
        report.contains("(bom_checked): contents do not match its hash"),
        "{report}"
    );
}

#[test]
fn missing_extra_resized_and_changed_entries_are_each_named() {
    let ws = Ws::new();
    let (share, manifest) = sealed(&ws);
    let lines = bom_lines(&share);
    // IM1.dcm missing; IM2.dcm with one CRC digit changed; the empty file
    // resized; a file the manifest does not list.
    let mut im2 = lines[1].clone();
    let at = im2.find("0x").unwrap() + 2;
    let digit = if &im2[at..at + 1] == "0" { "1" } else { "0" };
    im2.replace_range(at..at + 1, digit);
    let bad = vec![
        im2,
        lines[2].replace("size=\"0\"", "size=\"7\""),
        "<file size=\"9\" crc64=\"0xabc\">\\pacs\\PAT3\\new.dcm</file>".into(),
    ];
    let bom = write_bom(&ws, "bom.txt", &bad);
    let out = bom_check(&ws, &manifest, &[&bom], &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["result"], "fail");
    let findings = j["report"]["findings"].as_array().unwrap();
    let kinds: Vec<(String, String)> = findings
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("crc64".into(), "PAT1/ST1/IM2.dcm".into()),
            ("size".into(), "PAT2/a&b.dcm".into()),
            ("extra".into(), "PAT3/new.dcm".into()),
            ("missing".into(), "PAT1/ST1/IM1.dcm".into()),
        ]
    );
    assert_eq!(j["report"]["matched"], 0);
    // Human output names each, one line.
    let out = bom_check(&ws, &manifest, &[&bom], &[]);
    let text = stdout(&out);
    for l in [
        "MISSING  PAT1/ST1/IM1.dcm",
        "EXTRA    PAT3/new.dcm",
        "SIZE     PAT2/a&b.dcm: manifest 0 bytes, BOM 7",
        "CRC64    PAT1/ST1/IM2.dcm: manifest ",
    ] {
        assert!(text.contains(l), "missing {l:?} in\n{text}");
    }
}

#[test]
fn a_malformed_bom_is_refused_with_its_line() {
    let ws = Ws::new();
    let (share, manifest) = sealed(&ws);
    let mut lines = bom_lines(&share);
    lines.insert(1, "<file size=\"12\" crc64=\"xyz\">\\pacs\\x</file>".into());
    let bom = write_bom(&ws, "broken.txt", &lines);
    let out = bom_check(&ws, &manifest, &[&bom], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    // Line 1 is the XML declaration, 2 the root element, 3 the first file.
    assert!(
        err.contains("broken.txt:4: crc64 \"xyz\" is not 0x and 1 to 16 hex digits"),
        "{err}"
    );
    // Nothing was recorded.
    let n: i64 = ws
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'bom_checked'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/databox")
        .join(name)
}

fn copylog_check(ws: &Ws, manifest: &Path, copylog: &Path, extra: &[&str]) -> std::process::Output {
    databox(ws, "copylog-check", manifest, &[copylog], extra)
}

#[test]
fn copy_log_entities_are_mapped_back_to_manifest_files() {
    let ws = Ws::new();
    let (_, manifest) = sealed(&ws);
    let out = copylog_check(&ws, &manifest, &fixture("copylog-errors.xml"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("BlobRenamed      PAT1/ST1/IM1.dcm: renamed to DataBox-0f4ad3c9a7e14b0c"),
        "{text}"
    );
    assert!(
        text.contains("UploadErrorCloudHttp PAT2/a&b.dcm: UnsupportBlobType"),
        "{text}"
    );
    assert!(
        text.contains("2 entit(ies) concern the manifest, 1 concern other data"),
        "{text}"
    );
    assert!(
        text.contains("upload status Failed, 3 of 5 files errored"),
        "{text}"
    );
    assert!(!text.contains("x.bin"), "{text}");

    // A renamed container concerns every file; recorded as a signed event.
    let key = ws.key();
    let out = copylog_check(
        &ws,
        &manifest,
        &fixture("copylog-container-renamed.xml"),
        &["--json", "--signing-key", key.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["report"]["concerns"][0]["path"], "*");
    assert_eq!(
        j["report"]["concerns"][0]["renamed_to"],
        "DataBox-3fcd02debee6471e"
    );
    let n: i64 = ws
        .db()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'copylog_checked' AND signature IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    ws.custody(&["ledger", "verify"]).assert().code(0);

    let out = copylog_check(&ws, &manifest, &fixture("copylog-clean.xml"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 entit(ies) concern the manifest"));
}

#[test]
fn a_file_that_is_not_a_copy_log_is_refused() {
    let ws = Ws::new();
    let (_, manifest) = sealed(&ws);
    let bad = ws.root().join("bad.xml");
    std::fs::write(
        &bad,
        "<CopyLog><ErroredEntity Path=\"pacs/x\"></ErroredEntity></CopyLog>",
    )
    .unwrap();
    let out = copylog_check(&ws, &manifest, &bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bad.xml: not a Data Box copy log: "),
        "{}",
        stderr(&out)
    );
    std::fs::write(&bad, "not xml at all <<<").unwrap();
    assert_eq!(
        copylog_check(&ws, &manifest, &bad, &[]).status.code(),
        Some(2)
    );
}
