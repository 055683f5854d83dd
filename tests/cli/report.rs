//! `custody report`: the post-migration report, as Markdown, JSON and a
//! self-contained HTML page that headless Chromium renders.

use std::path::Path;

use crate::support::*;

/// A sealed and verified manifest whose run needed two attempts (a file
/// kept changing in the first), handed off once. Returns the manifest id.
fn migrated(ws: &Ws) -> String {
    pacs_tree(ws, 1, 3, 10_000);
    let growing = ws.file("growing.dcm", &bytes(7, 64 << 20));
    let grower = Grower::start(&growing);
    ws.transfer(&[]).assert().code(3);
    drop(grower);
    ws.transfer_json(&[], 0);
    let id = ws.manifest_json()["id"].as_str().unwrap().to_owned();
    ws.custody(&[
        "handoff",
        &id,
        "--from",
        "IT",
        "--to",
        "Courier",
        "--purpose",
        "ship",
    ])
    .arg("--signing-key")
    .arg(ws.key())
    .assert()
    .code(0);
    id
}

fn report(ws: &Ws, extra: &[&str]) -> std::process::Output {
    ws.custody(&["report"])
        .arg(ws.manifest())
        .arg("--allowed-signers")
        .arg(ws.signers())
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_report_says_what_moved_when_how_fast_and_who_signed_naming_no_file() {
    let ws = Ws::new();
    let id = migrated(&ws);
    let out = report(&ws, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let md = stdout(&out);
    for want in [
        format!("# Custody report: {id}"),
        "**VERIFIED: every file re-read and matched at ".into(),
        "| Files | 13 |".into(),
        "| Attempts | 2 |".into(),
        "| source changed while copied | 1 |".into(),
        "| handoff | handed from IT to Courier: ship |".into(),
    ] {
        assert!(md.contains(&want), "{want:?} in:\n{md}");
    }
    // PHI stays out: no file name (a PACS path can name a patient).
    for name in ["growing.dcm", "IM-", "PAT"] {
        assert!(!md.contains(name), "{name} in the report:\n{md}");
    }

    let out = report(&ws, &["--format", "json"]);
    let r = json(&out);
    assert_eq!(r["manifest"]["id"], id.as_str());
    assert_eq!(r["manifest"]["files"], 13);
    assert_eq!(r["timing"]["attempts"], 2);
    assert_eq!(r["errors"]["source changed while copied"], 1);
    assert_eq!(r["verifications"][0]["result"], "pass");
    let landed: u64 = r["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        landed,
        r["manifest"]["bytes"].as_u64().unwrap(),
        "every landed byte is charted"
    );
    let signer = r["signature"]["fingerprint"].as_str().unwrap();
    assert_eq!(r["signers"][0]["fingerprint"], signer);
    assert_eq!(r["signers"][0]["events"], 3, "seal, verify, handoff");

    // From an exported timeline, without the ledger: the same report.
    let timeline = ws.root().join("timeline.json");
    ws.custody(&["log", "--manifest", &id, "--export"])
        .arg(&timeline)
        .assert()
        .code(0);
    std::fs::remove_file(&ws.ledger).unwrap();
    let out = report(
        &ws,
        &[
            "--format",
            "json",
            "--events",
            &timeline.display().to_string(),
        ],
    );
    assert_eq!(json(&out), r);
    // Without either: a usage error that says what to give.
    let out = report(&ws, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--events FILE"), "{}", stderr(&out));
}

#[test]
fn the_timeline_of_another_manifest_is_refused() {
    let ws = Ws::new();
    ws.file("a", b"a");
    ws.transfer_json(&[], 0);
    let first = ws.manifest_json()["id"].as_str().unwrap().to_owned();
    let timeline = ws.root().join("timeline.json");
    ws.custody(&["log", "--manifest", &first, "--export"])
        .arg(&timeline)
        .assert()
        .code(0);
    let ws2 = Ws::new();
    ws2.file("b", b"b");
    ws2.transfer_json(&[], 0);
    let out = ws2
        .custody(&["report"])
        .arg(ws2.manifest())
        .arg("--allowed-signers")
        .arg(ws2.signers())
        .arg("--events")
        .arg(&timeline)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("they are the timeline of manifest {first}")),
        "{}",
        stderr(&out)
    );
}

fn chromium(args: &[&str], page: &Path) -> std::process::Output {
    std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium must be installed (scripts/test installs it)")
}

#[test]
fn the_html_report_is_one_self_contained_page_that_chromium_renders() {
    let ws = Ws::new();
    let id = migrated(&ws);
    let page = ws.root().join("report.html");
    let out = report(
        &ws,
        &["--format", "html", "--out", &page.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["src=", "href=", "<link", "<script", "@import", "url("] {
        assert!(
            !html.contains(external),
            "{external} in a self-contained page"
        );
    }

    // The page as Chromium loaded it.
    let dom = stdout(&chromium(&["--dump-dom"], &page));
    assert!(
        dom.contains(&format!("<title>Custody report: {id}</title>")),
        "{dom}"
    );
    assert!(
        dom.contains("<th>Files</th><td class=\"mono\">13</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<th>Attempts</th><td class=\"mono\">2</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("id=\"verdict\">VERIFIED: every file re-read"),
        "{dom}"
    );
    assert!(dom.contains("<svg id=\"throughput\""), "{dom}");

    // And as it looks: a screenshot the window's size, with the chart's
    // bars drawn in their blue.
    let shot = ws.root().join("report.png");
    let out = chromium(
        &[
            "--window-size=1200,1600",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(shot.exists(), "{}", stderr(&out));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (1200, 1600));
    let channels = frame.color_type.samples();
    let pixels = buf[..frame.buffer_size()].chunks(channels);
    let bar_blue = pixels.filter(|p| p[..3] == [0x2f, 0x81, 0xf7]).count();
    assert!(
        bar_blue > 100,
        "the throughput bars were drawn ({bar_blue} px)"
    );
}
