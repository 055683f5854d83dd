//! A Data Box's own Blob REST endpoint, which speaks storage API versions
//! up to 2019-02-02 only: Azurite takes any version, so a loopback proxy
//! in front of it answers `400 InvalidHeaderValue` to a newer `x-ms-version`
//! or SAS `sv`, as the device does (docs/blob.md, "Data Box REST").

use crate::support::azurite::{self, Azurite};
use crate::support::standin::Standin;
use crate::support::*;

fn custody(ws: &Ws, args: &[&str]) -> assert_cmd::Command {
    let mut c = ws.custody(&["--json"]);
    c.args(args)
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("CUSTODY_AZURE_AUTH")
        .env("AZURE_STORAGE_KEY", azurite::KEY);
    c
}

#[test]
fn through_a_version_enforcing_stand_in_every_request_is_at_2019_02_02() {
    let ws = Ws::new();
    let az = Azurite::start(&ws.root().join("azurite"));
    let proxy = Standin::proxy(
        &format!("http://127.0.0.1:{}", az.port),
        None,
        &["--max-version", "2019-02-02"],
        &ws.root().join("databox.log"),
    );
    let url = format!("http://127.0.0.1:{}/{}/pacs", proxy.port, azurite::ACCOUNT);
    let n = pacs_tree(&ws, 2, 3, 20_000);
    let size = 48usize << 20; // six 8 MiB blocks
    ws.file("wsi/big.svs", &bytes(11, size));
    let (src, key) = (ws.src.display().to_string(), ws.key().display().to_string());
    let transfer = |extra: &[&str]| {
        let mut c = custody(&ws, &["transfer", &src, &url, "--signing-key", &key]);
        c.args(extra);
        c
    };
    // Taken for Azure Storage, the endpoint refuses today's version: the
    // stand-in is as strict as the device.
    let err = stderr(&transfer(&[]).assert().code(2).get_output().clone());
    assert!(err.contains("HTTP 400"), "{err}");
    assert_eq!(proxy.requests()[0]["status"], 400);
    // A block larger than 2019-02-02's Put Block takes is refused up front.
    let err = stderr(
        &transfer(&["--databox-rest", "--block-size", "128"])
            .assert()
            .code(2)
            .get_output()
            .clone(),
    );
    assert!(err.contains("at most 100 MiB"), "{err}");
    let before = proxy.requests().len();
    // Killed mid-upload, then resumed from the staged blocks.
    let mut child = ws
        .spawnable(&[
            "--databox-rest",
            "transfer",
            &src,
            &url,
            "--signing-key",
            &key,
        ])
        .env("AZURE_STORAGE_KEY", azurite::KEY)
        .env_remove("AZURE_STORAGE_SAS_TOKEN")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "blocks were staged", || {
        az.uncommitted_blocks("pacs", "wsi/big.svs") >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let s = json(
        &transfer(&["--databox-rest"])
            .assert()
            .code(0)
            .get_output()
            .clone(),
    );
    assert!(
        s["bytes_reused"].as_u64().unwrap() >= 2 * (8 << 20),
        "resumed from the staged blocks: {s}"
    );
    assert_eq!(s["verify"]["files_verified"], n + 1);
    // The verify, the preflight's existence check and the rollback speak
    // the same version (CUSTODY_DATABOX_REST, as a nightly unit sets it).
    let m = ws.manifest().display().to_string();
    let signers = ws.signers().display().to_string();
    let mut v = custody(&ws, &["verify", &m, &url, "--allowed-signers", &signers]);
    v.env("CUSTODY_DATABOX_REST", "true");
    assert_eq!(
        json(&v.assert().code(0).get_output().clone())["report"]["files_verified"],
        n + 1
    );
    let out = custody(&ws, &["--databox-rest", "scan", &src, "--dest", &url])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("exists-at-destination"),
        "the existence check listed the container: {}",
        stdout(&out)
    );
    custody(
        &ws,
        &[
            "--databox-rest",
            "rollback",
            &m,
            &url,
            "--allowed-signers",
            &signers,
            "--yes",
            "--signing-key",
            &key,
        ],
    )
    .assert()
    .code(0);
    assert!(az.names("pacs").is_empty(), "{:?}", az.names("pacs"));
    // Every request custody sent with the Data Box profile was at
    // 2019-02-02, its SAS signed at 2019-02-02, and none was refused.
    let reqs = proxy.requests();
    let profiled = &reqs[before..];
    assert!(profiled.len() > 20, "{} requests", profiled.len());
    for r in profiled {
        assert_eq!(r["version"], "2019-02-02", "{r}");
        assert_eq!(r["sv"], "2019-02-02", "{r}");
        assert_ne!(r["status"], 400, "{r}");
    }
}
