//! Shared fixtures for the integration tests: a workspace with a source
//! tree, a destination, keys, a ledger and a manifest directory, and a
//! `custody` command preconfigured to use them.
#![allow(dead_code)] // each test module uses a different subset

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub mod azurite;
pub mod faultfs;
pub mod node_exporter;
pub mod orthanc;
pub mod proxy;
pub mod standin;
pub mod tls;

/// A throwaway workspace.
pub struct Ws {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dest: PathBuf,
    pub keys: PathBuf,
    pub ledger: PathBuf,
    pub manifests: PathBuf,
}

pub const IDENTITY: &str = "ops@hospital.example";

/// The variables that carry operator defaults (docs/operations.md,
/// "Configuration"): a test's custody sees none it did not set.
pub const SETTINGS_ENV: [&str; 13] = [
    "CUSTODY_CONFIG",
    "CUSTODY_SIGNING_KEY",
    "CUSTODY_ALLOWED_SIGNERS",
    "CUSTODY_LEDGER",
    "CUSTODY_MANIFEST_DIR",
    "CUSTODY_LOG_FORMAT",
    "CUSTODY_LOG_FILE",
    "CUSTODY_JOBS",
    "CUSTODY_AZURE_AUTH",
    "CUSTODY_CA_FILE",
    "CUSTODY_DATABOX_REST",
    "CUSTODY_DICOMWEB_PROFILE",
    "CUSTODY_METRICS_FILE",
];

impl Ws {
    /// A new workspace with an operator key (identity [`IDENTITY`]).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let ws = Ws {
            src: root.join("src"),
            dest: root.join("dest"),
            keys: root.join("keys"),
            ledger: root.join("custody.db"),
            manifests: root.join("manifests"),
            dir,
        };
        std::fs::create_dir_all(&ws.src).unwrap();
        ws.custody(&["keygen", "--out"])
            .arg(&ws.keys)
            .args(["--identity", IDENTITY])
            .assert()
            .success();
        ws
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn key(&self) -> PathBuf {
        self.keys.join("custody_ed25519")
    }

    pub fn signers(&self) -> PathBuf {
        self.keys.join("allowed_signers")
    }

    /// `custody ARGS --ledger L --manifest-dir M`, run in the workspace.
    pub fn custody(&self, args: &[&str]) -> Command {
        let mut c = self.bare(&[]);
        c.arg("--ledger")
            .arg(&self.ledger)
            .arg("--manifest-dir")
            .arg(&self.manifests)
            .args(args);
        c
    }

    /// `custody ARGS`, run in the workspace with no operator defaults but
    /// those a test sets: none of the settings' variables, and a user
    /// configuration folder of the workspace's own (`<root>/xdg`).
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("custody").expect("custody binary");
        c.current_dir(self.root());
        for var in SETTINGS_ENV {
            c.env_remove(var);
        }
        c.env("XDG_CONFIG_HOME", self.root().join("xdg")).args(args);
        c
    }

    /// `custody transfer SRC DEST --signing-key KEY --json` plus `extra`.
    pub fn transfer(&self, extra: &[&str]) -> Command {
        let mut c = self.custody(&["--json", "transfer"]);
        c.arg(&self.src)
            .arg(&self.dest)
            .arg("--signing-key")
            .arg(self.key())
            .args(extra);
        c
    }

    /// The workspace's encryption key file (`archive.key`), made with
    /// `custody keygen --encryption` the first time it is asked for.
    pub fn encryption_key(&self) -> PathBuf {
        let p = self.root().join("archive.key");
        if !p.exists() {
            self.custody(&["keygen", "--encryption", "--out"])
                .arg(&p)
                .assert()
                .code(0);
        }
        p
    }

    /// `custody transfer` of the source into `dest` with the operator's key,
    /// human output (as a cron job runs it).
    pub fn transfer_into(&self, dest: &Path) -> Command {
        let mut c = self.custody(&["transfer"]);
        c.arg(&self.src)
            .arg(dest)
            .arg("--signing-key")
            .arg(self.key());
        c
    }

    /// [`Ws::transfer`] with `extra`, which must exit `code`; its `--json`
    /// summary.
    pub fn transfer_json(&self, extra: &[&str], code: i32) -> serde_json::Value {
        json(
            &self
                .transfer(extra)
                .assert()
                .code(code)
                .get_output()
                .clone(),
        )
    }

    /// `custody verify MANIFEST DEST --allowed-signers S` plus `extra`.
    pub fn verify(&self, manifest: &Path, extra: &[&str]) -> Command {
        let mut c = self.custody(&["verify"]);
        c.arg(manifest)
            .arg(&self.dest)
            .arg("--allowed-signers")
            .arg(self.signers())
            .args(extra);
        c
    }

    /// Writes `data` at `rel` under the source.
    pub fn file(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    /// The only manifest in the manifest directory.
    pub fn manifest(&self) -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.manifests)
            .expect("manifest dir")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(found.len(), 1, "expected one manifest, found {found:?}");
        found.pop().unwrap()
    }

    /// The only manifest, parsed.
    pub fn manifest_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.manifest()).unwrap()).unwrap()
    }

    /// The only manifest's `excluded` entries, as (path, reason).
    pub fn manifest_excluded(&self) -> Vec<(String, String)> {
        self.manifest_json()["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_owned(),
                    e["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Runs `sql` on the ledger, then `custody ledger verify`, which must
    /// exit 1; returns its report.
    pub fn tampered_ledger_report(&self, sql: &str) -> String {
        self.db().execute_batch(sql).unwrap();
        let out = self.custody(&["ledger", "verify"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        stdout(&out)
    }

    /// Opens the ledger for direct (tampering) access.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.ledger).unwrap()
    }
}

/// Deterministic incompressible bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A small PACS-like tree: `patients` × 2 studies × 2 series × `per` files.
pub fn pacs_tree(ws: &Ws, patients: u32, per: u32, size: usize) -> u64 {
    let mut n = 0;
    for p in 0..patients {
        for s in 0..2 {
            for se in 0..2 {
                for i in 0..per {
                    let rel = format!("PAT{p:03}/STUDY{s}/SERIES{se}/IM{i:04}.dcm");
                    ws.file(&rel, &bytes(n, size + (n as usize % 7) * 1000));
                    n += 1;
                }
            }
        }
    }
    n
}

/// Parses stdout as one JSON object.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `cmd` with `input` on its stdin; its output.
pub fn with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `root` (relative paths, sorted), but for the lock a
/// killed transfer leaves at a directory destination's root
/// (`.custody-lock`, custody's own bookkeeping, which verify leaves out
/// too and the next run removes).
pub fn files_under(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .filter(|e| !(e.depth() == 1 && e.file_name() == ".custody-lock"))
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// A digest of everything under `root` as it stands, links not followed:
/// each entry's path, type and mode, a file's bytes, a link's target. Equal
/// digests: nothing under `root` was created, changed or removed.
pub fn tree_digest(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut h = blake3::Hasher::new();
    let mut entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    for e in entries {
        let meta = e.path().symlink_metadata().unwrap();
        h.update(e.path().as_os_str().as_encoded_bytes());
        h.update(&meta.mode().to_le_bytes());
        if meta.is_file() {
            h.update(&std::fs::read(e.path()).unwrap());
        } else if meta.file_type().is_symlink() {
            h.update(
                std::fs::read_link(e.path())
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        }
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

/// Asserts the two trees hold the same regular files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (files_under(a), files_under(b));
    assert_eq!(fa, fb, "file lists differ");
    for f in fa {
        assert!(
            std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
            "{f} differs"
        );
    }
}

/// Runs `ssh-keygen -Y verify` the way an auditor would.
pub fn ssh_keygen_verify(signers: &Path, identity: &str, manifest: &Path) -> Output {
    let sig = format!("{}.sig", manifest.display());
    std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(signers)
        .args(["-I", identity, "-n", "custody-manifest", "-s", &sig])
        .stdin(std::fs::File::open(manifest).unwrap())
        .output()
        .expect("ssh-keygen must be installed (scripts/test installs openssh-client)")
}

/// Sets a file's permission bits.
pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Appends to a file (for "changed while being read" cases).
pub fn append(p: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(data).unwrap();
}

/// Appends to a file every millisecond until dropped: a source file that
/// keeps changing while custody reads it.
pub struct Grower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Grower {
    pub fn start(path: &Path) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, p) = (stop.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                append(&p, b"more");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Grower {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Grower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Ws {
    /// `custody --ledger L --manifest-dir M ARGS` as a std command, to spawn
    /// and kill (output discarded unless the caller pipes it).
    pub fn spawnable(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("custody"));
        for var in SETTINGS_ENV {
            c.env_remove(var);
        }
        c.env("XDG_CONFIG_HOME", self.root().join("xdg"))
            .arg("--ledger")
            .arg(&self.ledger)
            .arg("--manifest-dir")
            .arg(&self.manifests)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    }
}

impl Ws {
    /// Writes `n` files of 64 KiB, 100 to a folder, and starts
    /// `custody transfer` of them on one job as a child process (to
    /// interrupt or race), held to 2 MiB/s (`--bwlimit`) so that it runs
    /// for `n` / 32 seconds however fast the machine.
    pub fn spawn_slow_transfer(&self, n: u64) -> std::process::Child {
        for i in 0..n {
            self.file(&format!("S{:02}/IM{i:05}", i / 100), &bytes(i, 64 * 1024));
        }
        self.slow_transfer_to(&self.dest).spawn().unwrap()
    }

    /// `custody transfer` of the source into `dest` on one job, held to
    /// 2 MiB/s, as a std command to spawn.
    pub fn slow_transfer_to(&self, dest: &Path) -> std::process::Command {
        self.transfer_at(dest, "2M")
    }

    /// `custody transfer` of the source into `dest` on one job, held to
    /// `rate` (`--bwlimit`), as a std command to spawn.
    pub fn transfer_at(&self, dest: &Path, rate: &str) -> std::process::Command {
        let (src, dest, key) = (
            self.src.display().to_string(),
            dest.display().to_string(),
            self.key().display().to_string(),
        );
        self.spawnable(&[
            "transfer",
            &src,
            &dest,
            "--signing-key",
            &key,
            "--jobs",
            "1",
            "--bwlimit",
            rate,
        ])
    }
}

/// Landed-file rows in a ledger (0 while it does not exist yet).
pub fn landed_rows(ledger: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| db.query_row("SELECT COUNT(*) FROM landed", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Polls `ready` until it holds, failing the test if `child` exits first or
/// two minutes pass: the moment to interrupt a running transfer.
pub fn wait_while_running(
    child: &mut std::process::Child,
    what: &str,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before {what}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// pydicom's test files directory (read only).
pub fn pydicom_files() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pydicom is not installed (./scripts/test installs it)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Asserts a sealed manifest is version 9 (every seal carries the Merkle
/// tree over its entries, docs/proofs.md) whose rules are those of version
/// `base` (4 a transfer, 5 a wave's run, 6 a job's, 7 into a DICOMweb
/// service, 8 a selection or a shard), and that its tree covers every entry.
pub fn assert_sealed_as(m: &serde_json::Value, base: u64) {
    assert_eq!(m["version"], 9, "manifest version");
    assert_eq!(m["tree"]["base"], base, "tree.base");
    assert_eq!(m["tree"]["size"], m["totals"]["files"], "tree.size");
}
