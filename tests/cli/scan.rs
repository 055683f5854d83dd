//! `custody scan`: the inventory, and the hash list `b3sum --check` reads.

use crate::support::{Ws, bytes, json, stderr};

#[test]
fn inventory_counts_sizes_and_names_what_would_not_be_carried() {
    let ws = Ws::new();
    ws.file("PAT1/ST1/SE1/IM1", &bytes(1, 100));
    ws.file("PAT1/ST1/SE1/IM2", &bytes(2, 5000));
    ws.file("PAT1/ST1/SE2/deeper/IM3", &bytes(3, 70_000));
    ws.file("empty", b"");
    std::os::unix::fs::symlink("PAT1", ws.src.join("link")).unwrap();
    let out = ws
        .custody(&["--json", "scan"])
        .arg(&ws.src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["files"], 4);
    assert_eq!(j["bytes"], 75_100);
    assert_eq!(j["excluded"], 1);
    assert_eq!(j["hashed_files"], 0, "no --hash: no contents read");
    assert_eq!(j["largest"][0]["path"], "PAT1/ST1/SE2/deeper/IM3");
    assert_eq!(j["deepest"], "PAT1/ST1/SE2/deeper/IM3");
    assert_eq!(j["max_depth"], 5);
    let per_bucket: Vec<u64> = j["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["files"].as_u64().unwrap())
        .collect();
    // empty, <4K, <64K, <1M, ...
    assert_eq!(&per_bucket[..4], &[1, 1, 1, 1]);
}

#[test]
fn hash_list_holds_every_file_with_its_blake3_in_b3sum_form() {
    let ws = Ws::new();
    let files = [
        ("a/one", bytes(10, 1)),
        ("a/two", bytes(11, 3 << 20)),
        ("b/with space", bytes(12, 4096)),
        ("b/back\\slash", bytes(13, 10)),
        ("zero", Vec::new()),
    ];
    for (p, d) in &files {
        ws.file(p, d);
    }
    let list = ws.root().join("list.b3");
    let out = ws
        .custody(&["--json", "scan"])
        .arg(&ws.src)
        .arg("--b3sum")
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["hashed_files"], files.len());
    let text = std::fs::read_to_string(&list).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut expect: Vec<String> = files
        .iter()
        .map(|(p, d)| {
            let h = blake3::hash(d).to_hex().to_string();
            if p.contains('\\') {
                format!("\\{h}  {}", p.replace('\\', "\\\\"))
            } else {
                format!("{h}  {p}")
            }
        })
        .collect();
    expect.sort();
    assert_eq!(lines, expect);
}

#[test]
fn a_missing_source_is_a_usage_error_naming_it() {
    let ws = Ws::new();
    let missing = ws.root().join("nope");
    let out = ws.custody(&["scan"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}
