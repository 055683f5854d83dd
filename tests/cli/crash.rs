//! Crash loops: a transfer killed with SIGKILL at a random moment, again
//! and again, each time rerun, ends with the destination equal to the
//! source, verified, the ledger intact, no leftovers, and no more written
//! than the tree plus what the kills interrupted (resume works; it does not
//! start over).
//!
//! `CUSTODY_CRASH_KILLS` sets the number of kills (default 5, the CI run);
//! `CUSTODY_CRASH_SEED` the seed of the kill times (default: from the
//! clock). The seed is printed, so a failure can be replayed exactly.

use std::time::Duration;

use crate::support::azurite::{self, Azurite};
use crate::support::*;

/// The tree: a few thousand small files (fewer into Azurite, where each
/// costs a few requests of a debug build) and a few large ones.
const SMALL: u64 = 2000;
const SMALL_BLOB: u64 = 800;
const LARGE: u64 = 3;
const LARGE_SIZE: usize = 12 << 20;
const JOBS: &str = "2";

fn tree(ws: &Ws, small: u64) -> u64 {
    let mut total = 0;
    for i in 0..small {
        let data = bytes(i, 1000 + (i as usize * 37) % 7000);
        total += data.len() as u64;
        ws.file(&format!("PAT{:02}/IM{i:05}", i / 100), &data);
    }
    for i in 0..LARGE {
        ws.file(&format!("WSI/slide{i}.svs"), &bytes(900 + i, LARGE_SIZE));
        total += LARGE_SIZE as u64;
    }
    total
}

/// A small seeded generator (xorshift64*), so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes a process has written so far (every write(2): data, ledger, WAL).
fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Kills `custody transfer SRC DEST` at random moments, `kills` times (or
/// until an attempt finishes first), then runs it to the end. Returns the
/// bytes written by the killed attempts and the final summary.
fn crash_loop(ws: &Ws, dest: &str, env: &[(&str, &str)]) -> (u64, u64, serde_json::Value) {
    let kills = setting("CUSTODY_CRASH_KILLS", 5);
    let seed = setting(
        "CUSTODY_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("crash loop into {dest}: {kills} kills, CUSTODY_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let (src, key) = (ws.src.display().to_string(), ws.key().display().to_string());
    let (src, key) = (src.as_str(), key.as_str());
    let mut wrote = 0;
    let mut killed = 0;
    let attempt = || {
        let mut c = ws.spawnable(&[
            "--json",
            "transfer",
            src,
            dest,
            "--signing-key",
            key,
            "--jobs",
            JOBS,
        ]);
        c.envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    for _ in 0..kills {
        let mut child = attempt();
        let deadline = std::time::Instant::now() + Duration::from_millis(50 + rng.below(1500));
        let mut last = 0;
        while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            last = written(child.id()).max(last);
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_some() {
            // It finished before its kill: that attempt is the last one.
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stderr(&out));
            eprintln!("killed {killed} attempts, which wrote {wrote} bytes; the next one finished");
            return (wrote, killed, json(&out));
        }
        last = written(child.id()).max(last);
        child.kill().unwrap();
        child.wait().unwrap();
        wrote += last;
        killed += 1;
        // Killed after it sealed (during its verify, under load): it had
        // landed everything, and running the same one-off transfer again
        // would start a new run. The verify it did not finish is run
        // instead.
        if let Some(manifest) = sealed(ws) {
            eprintln!("killed {killed} attempts; the last one sealed before its kill");
            let out = ws
                .spawnable(&["--json", "verify"])
                .arg(&manifest)
                .arg(dest)
                .arg("--allowed-signers")
                .arg(ws.signers())
                .envs(env.iter().copied())
                .stdout(std::process::Stdio::piped())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stderr(&out));
            let report = json(&out)["report"].clone();
            return (
                wrote,
                killed,
                serde_json::json!({"verify": report, "bytes_copied": 0}),
            );
        }
    }
    eprintln!("killed {killed} attempts, which wrote {wrote} bytes");
    let out = attempt().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stderr(&out));
    (wrote, killed, json(&out))
}

/// The manifest file of a sealed run, if one was sealed.
fn sealed(ws: &Ws) -> Option<std::path::PathBuf> {
    std::fs::read_dir(&ws.manifests)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
}

/// Nothing was started over: the killed attempts and the last one wrote
/// at most the tree, plus per kill what `--jobs` workers can have in
/// flight (a large file each) and a little ledger bookkeeping.
fn assert_bounded(wrote: u64, killed: u64, last: &serde_json::Value, tree: u64) {
    let bound = tree + killed * (2 * LARGE_SIZE as u64 + (8 << 20)) + tree / 10;
    let total = wrote + last["bytes_copied"].as_u64().unwrap();
    assert!(
        total <= bound,
        "wrote {total} bytes for a {tree}-byte tree over {killed} kills (bound {bound})"
    );
}

#[test]
fn a_transfer_killed_again_and_again_into_a_share_still_lands_everything_once() {
    let ws = Ws::new();
    let tree = tree(&ws, SMALL);
    let (wrote, killed, last) = crash_loop(&ws, &ws.dest.display().to_string(), &[]);
    assert_eq!(last["verify"]["files_verified"], SMALL + LARGE, "{last}");
    assert_eq!(last["verify"]["discrepancies"], serde_json::json!([]));
    assert_same_tree(&ws.src, &ws.dest);
    let leftovers: Vec<String> = files_under(&ws.dest)
        .into_iter()
        .filter(|f| f.contains(".custody-partial."))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "no temporary files remain");
    ws.custody(&["ledger", "verify"]).assert().code(0);
    assert_bounded(wrote, killed, &last, tree);
}

#[test]
fn a_transfer_killed_again_and_again_into_blob_storage_still_lands_everything_once() {
    let ws = Ws::new();
    let az = Azurite::start(&ws.root().join("azurite"));
    let tree = tree(&ws, SMALL_BLOB);
    let url = az.url("pacs/crash");
    let env = [("AZURE_STORAGE_KEY", azurite::KEY)];
    let (wrote, killed, last) = crash_loop(&ws, &url, &env);
    // The final run's verify listed the container and re-read every blob:
    // the closed set matched.
    assert_eq!(
        last["verify"]["files_verified"],
        SMALL_BLOB + LARGE,
        "{last}"
    );
    assert_eq!(last["verify"]["discrepancies"], serde_json::json!([]));
    // The large files, interrupted mid-upload, hold no staged blocks.
    for i in 0..LARGE {
        let name = format!("crash/WSI/slide{i}.svs");
        assert_eq!(
            az.uncommitted_blocks("pacs", &name),
            0,
            "{name}: staged blocks left"
        );
    }
    ws.custody(&["ledger", "verify"]).assert().code(0);
    // An independent listing (the SDK's own pager, not custody's) sees
    // every blob, each under the run's prefix, and nothing else.
    let names = az.names("pacs");
    assert_eq!(
        names.len() as u64,
        SMALL_BLOB + LARGE,
        "{:?}",
        &names[..5.min(names.len())]
    );
    assert!(names.iter().all(|n| n.starts_with("crash/")), "{names:?}");
    assert_bounded(wrote, killed, &last, tree);
}
