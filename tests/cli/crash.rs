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
fn crash_loop(
    ws: &Ws,
    dest: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (u64, u64, serde_json::Value) {
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
        c.args(extra)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    for _ in 0..kills {
        let mut child = attempt();
        let deadline = std::time::Instant::now() + Duration::from_millis(50 + rng.below(3000));
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
        // Killed after it sealed (during its verify, under load): the same
        // command run again verifies what it sealed and copies nothing
        // (a kill after the seal costs no re-copy); the loop goes on.
        if sealed(ws).is_some() {
            eprintln!("killed {killed} attempts; the last one sealed before its kill");
        }
    }
    eprintln!("killed {killed} attempts, which wrote {wrote} bytes");
    let out = attempt().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stderr(&out));
    (wrote, killed, json(&out))
}

/// The manifest file of a sealed run, if one was sealed (and, the loop
/// over, checks there is exactly one).
fn sealed(ws: &Ws) -> Option<std::path::PathBuf> {
    std::fs::read_dir(&ws.manifests)
        .ok()?
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
}

/// The one manifest the loop sealed, re-verified against `dest` from
/// scratch: its `--json` report.
fn verified_once(ws: &Ws, dest: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let all: Vec<_> = std::fs::read_dir(&ws.manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(all.len(), 1, "exactly one sealed manifest: {all:?}");
    let out = ws
        .custody(&["--json", "verify"])
        .arg(&all[0])
        .arg(dest)
        .arg("--allowed-signers")
        .arg(ws.signers())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    json(&out)["report"].clone()
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
    let dest = ws.dest.display().to_string();
    // Paced (about 2.5 s a run), so that kills land all through it on a
    // fast host too.
    let (wrote, killed, last) = crash_loop(&ws, &dest, &[], &["--bwlimit", "16M"]);
    let report = verified_once(&ws, &dest, &[]);
    assert_eq!(report["files_verified"], SMALL + LARGE, "{last}");
    assert_eq!(report["discrepancies"], serde_json::json!([]));
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
    let (wrote, killed, last) = crash_loop(&ws, &url, &env, &[]);
    // A verify lists the container and re-reads every blob: the closed
    // set matches.
    let report = verified_once(&ws, &url, &env);
    assert_eq!(report["files_verified"], SMALL_BLOB + LARGE, "{last}");
    assert_eq!(report["discrepancies"], serde_json::json!([]));
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

#[test]
fn a_transfer_killed_again_and_again_into_a_dicomweb_service_still_lands_every_instance_once() {
    use crate::support::orthanc::{self, Config, Orthanc};
    let ws = Ws::new();
    let o = Orthanc::start(ws.root(), Config::default());
    // 600 instances of about 12 KiB in 20 studies.
    let all = crate::dicomweb::studies(&ws.src, 20, 30, 12_000);
    let url = o.dicomweb_url();
    let env = [
        ("CUSTODY_DICOMWEB_USERNAME", orthanc::USER),
        ("CUSTODY_DICOMWEB_PASSWORD", orthanc::PASSWORD),
    ];
    // Paced (about 7 s for the tree), so that kills land all through it:
    // in a request, between a request and its record, in the seal.
    let (_, killed, last) = crash_loop(&ws, &url, &env, &["--bwlimit", "1M"]);
    assert!(killed > 0, "no attempt was killed");
    // Every instance landed once (the service holds each UID once, and
    // nothing else), the one sealed manifest lists each, and a verify from
    // scratch re-reads every one.
    let n = all.len() as u64;
    assert_eq!(o.instance_count(), n);
    let report = verified_once(&ws, &url, &env);
    assert_eq!(report["files_verified"], n, "{last}");
    assert_eq!(report["discrepancies"], serde_json::json!([]));
    ws.custody(&["ledger", "verify"]).assert().code(0);
    let recorded: i64 = ws
        .db()
        .query_row("SELECT COUNT(DISTINCT path) FROM landed", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recorded as u64, n);
}

/// Sealed runs in the ledger (0 while it does not exist yet).
fn sealed_runs(ledger: &std::path::Path) -> i64 {
    rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM runs WHERE status = 'sealed'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

/// The same command killed once in each phase of a run (the walk, the
/// copy, the seal, the verify), then run to the end. Returns the bytes
/// the killed attempts wrote and the last attempt's summary.
fn kill_in_every_phase(ws: &Ws, extra: &[&str]) -> (u64, u64, serde_json::Value) {
    let (src, dest, key) = (
        ws.src.display().to_string(),
        ws.dest.display().to_string(),
        ws.key().display().to_string(),
    );
    let mut args = vec!["--json", "transfer", &src, &dest, "--signing-key", &key];
    // Paced, so that the copy spans many batches.
    args.extend(["--jobs", JOBS, "--bwlimit", "8M"]);
    args.extend(extra);
    let (mut wrote, mut killed) = (0, 0);
    let signatures = || {
        std::fs::read_dir(&ws.manifests)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .to_string_lossy()
                        .ends_with(".sig")
                })
                .count()
            })
            .unwrap_or(0)
    };
    for phase in ["walk", "copy", "seal", "verify"] {
        let (rows, sealed, sigs) = (
            landed_rows(&ws.ledger),
            sealed_runs(&ws.ledger),
            signatures(),
        );
        let mut child = ws
            .spawnable(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let due = || match phase {
            "walk" => started.elapsed() >= Duration::from_millis(5),
            "copy" => landed_rows(&ws.ledger) > rows,
            "seal" => sealed_runs(&ws.ledger) > sealed,
            _ => signatures() > sigs,
        };
        let mut last = 0;
        while !due() && child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{phase}: never reached"
            );
            last = written(child.id()).max(last);
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_some() {
            // Finished before its kill: that attempt is the last one.
            eprintln!("{phase}: the attempt finished before its kill");
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{phase}: {}", stderr(&out));
            return (wrote, killed, json(&out));
        }
        wrote += written(child.id()).max(last);
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
        eprintln!("killed in the {phase}");
    }
    let out = ws
        .spawnable(&args)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (wrote, killed, json(&out))
}

/// Two nights (a first tree, then new files), each killed in every phase:
/// for a one-off transfer (whose second night goes on as its implicit job)
/// and for a named job.
#[test]
fn kills_in_the_walk_the_copy_the_seal_and_the_verify_cost_no_recopy() {
    for extra in [vec![], vec!["--job", "nightly"]] {
        let ws = Ws::new();
        let mut size = 0;
        for i in 0..40u64 {
            let data = bytes(i, 512 << 10);
            size += data.len() as u64;
            ws.file(&format!("N1/IM{i:03}"), &data);
        }
        let (wrote, killed, last) = kill_in_every_phase(&ws, &extra);
        assert_bounded(wrote, killed, &last, size);
        assert_same_tree(&ws.src, &ws.dest);
        // Night two: only what is new moves, into a manifest chained to
        // the first.
        let mut size2 = 0;
        for i in 0..20u64 {
            let data = bytes(100 + i, 512 << 10);
            size2 += data.len() as u64;
            ws.file(&format!("N2/IM{i:03}"), &data);
        }
        let (wrote, killed, last) = kill_in_every_phase(&ws, &extra);
        assert_bounded(wrote, killed, &last, size2);
        assert_same_tree(&ws.src, &ws.dest);
        let mut manifests: Vec<_> = std::fs::read_dir(&ws.manifests)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        manifests.sort();
        assert_eq!(
            manifests.len(),
            2,
            "{extra:?}: one manifest a night: {manifests:?}"
        );
        // The newest: the one the second night sealed (ids sort by second,
        // then at random).
        let newest = ws
            .manifests
            .join(format!("{}.json", last["sealed"]["id"].as_str().unwrap()));
        ws.custody(&["audit", "--chain"])
            .arg(&ws.manifests)
            .arg(&newest)
            .arg("--allowed-signers")
            .arg(ws.signers())
            .assert()
            .code(0);
        let out = ws.custody(&["ledger", "verify"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stdout(&out));
        let leftovers: Vec<String> = files_under(&ws.dest)
            .into_iter()
            .filter(|f| f.contains(".custody-partial."))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new(), "{extra:?}");
    }
}
