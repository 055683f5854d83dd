//! `custody demo`: the whole custody story on a synthetic PACS-like tree.
//!
//! Makes a small tree of incompressible synthetic files laid out as
//! patient/study/series/instance (no real patient data), then runs keygen,
//! transfer (with verify), audit, the stock `ssh-keygen -Y verify` check, a
//! tamper that verify must catch, and `ledger verify`, explaining each step.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use custody::keys::{self, Trust};
use custody::manifest::SignedManifest;
use custody::transfer::{Status, TransferOptions};

use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome};

/// Run every step on a synthetic PACS tree, explaining each.
///
/// Run keygen, transfer, verify, audit and a tamper check on a synthetic
/// PACS-like tree, explaining each step.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  cargo run --release -- demo")]
pub struct Args {
    /// Workspace directory (must not exist) [default: a new directory under
    /// the system temp dir]. It is kept so you can look around.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Seed of the synthetic tree.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The shape of a synthetic tree.
#[derive(Debug, Clone, Copy)]
pub struct TreeShape {
    pub patients: u32,
    pub studies: u32,
    pub series: u32,
    pub instances: u32,
    pub slice_bytes: (u64, u64),
    pub radiograph_bytes: u64,
}

/// What [`make_tree`] wrote.
#[derive(Debug, Default)]
pub struct TreeStats {
    pub files: u64,
    pub bytes: u64,
}

/// Writes a synthetic PACS-like tree under `root`: deterministic for a
/// seed, incompressible (BLAKE3 output stream), names only synthetic.
pub fn make_tree(root: &Path, seed: u64, shape: TreeShape) -> std::io::Result<TreeStats> {
    let mut stats = TreeStats::default();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut n = 0u64;
    for p in 1..=shape.patients {
        for s in 1..=shape.studies {
            let modality = ["CT", "MR", "CR"][(p + s) as usize % 3];
            for se in 1..=shape.series {
                let dir = root
                    .join(format!("PAT{p:04}"))
                    .join(format!("STUDY-2024{:02}{:02}-{modality}", s, p))
                    .join(format!("SERIES-{se:03}"));
                std::fs::create_dir_all(&dir)?;
                let count = if modality == "CR" { 1 } else { shape.instances };
                for i in 1..=count {
                    n += 1;
                    let size = if modality == "CR" {
                        shape.radiograph_bytes
                    } else {
                        let (lo, hi) = shape.slice_bytes;
                        lo + (n.wrapping_mul(2_654_435_761) % (hi - lo + 1))
                    };
                    let mut reader = blake3::Hasher::new_keyed(&key)
                        .update(&n.to_le_bytes())
                        .finalize_xof();
                    let mut f = std::io::BufWriter::new(std::fs::File::create(
                        dir.join(format!("IM-{i:04}")),
                    )?);
                    let mut left = size;
                    let mut buf = [0u8; 64 * 1024];
                    while left > 0 {
                        let k = left.min(buf.len() as u64) as usize;
                        reader.fill(&mut buf[..k]);
                        f.write_all(&buf[..k])?;
                        left -= k as u64;
                    }
                    f.flush()?;
                    stats.files += 1;
                    stats.bytes += size;
                }
            }
        }
    }
    Ok(stats)
}

/// The story goes to stdout, or to stderr with `--json` (stdout then
/// carries only the result object).
static TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

macro_rules! say {
    ($($t:tt)*) => {
        if TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!($($t)*)
        } else {
            println!($($t)*)
        }
    };
}

fn step(n: u32, title: &str) {
    say!();
    say!("[{n}/6] {title}");
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    demo(args, g).map_err(|e| Failure::new(Code::Usage, e))
}

fn demo(args: &Args, g: &Global) -> anyhow::Result<Code> {
    let work = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "custody-demo-{}",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S")
        )),
    };
    if work.exists() {
        anyhow::bail!("{}: already exists; pass a new --dir", work.display());
    }
    std::fs::create_dir_all(&work).with_context(|| format!("{}", work.display()))?;
    TO_STDERR.store(g.json, std::sync::atomic::Ordering::Relaxed);
    let src = work.join("pacs");
    let dest = work
        .join("databox")
        .join("demoacct_BlockBlob")
        .join("pacs-archive");
    let keydir = work.join("keys");
    let manifests = work.join("manifests");
    let ledger = work.join("custody.db");

    say!("custody demo: move a synthetic PACS-like tree to a stand-in Azure Data Box share,");
    say!("seal a signed custody manifest, and prove the landed copy.");
    say!(
        "workspace: {} (kept, so you can look around)",
        work.display()
    );

    step(
        1,
        "make a synthetic source tree (patient/study/series/instance; no real patient data)",
    );
    let shape = TreeShape {
        patients: 4,
        studies: 3,
        series: 3,
        instances: 10,
        slice_bytes: (64 * 1024, 320 * 1024),
        radiograph_bytes: 6 * 1024 * 1024,
    };
    let stats = make_tree(&src, args.seed, shape).context("writing the demo tree")?;
    say!(
        "      {} files, {} in {}",
        stats.files,
        render::bytes(stats.bytes),
        src.display()
    );

    step(
        2,
        "custody keygen: the operator's Ed25519 signing key (OpenSSH format)",
    );
    let identity = "demo-operator@custody.example";
    let generated = keys::generate(&keydir, identity)?;
    say!(
        "      {} ({})",
        generated.private_key.display(),
        generated.fingerprint
    );
    say!(
        "      {}  <- what an auditor gets",
        generated.allowed_signers.display()
    );

    step(
        3,
        "custody transfer: copy while hashing, record in the ledger, seal, re-read and verify",
    );
    say!(
        "      destination (stands in for a mounted Data Box SMB/NFS share): {}",
        dest.display()
    );
    let key = keys::SigningKey::load(&generated.private_key)?;
    let opts = options(&src, &dest, &manifests, &ledger);
    let summary = custody::transfer::transfer(&opts, &key, &Renderer::new(g))?;
    if !g.json {
        super::transfer::print_summary(&summary);
    }
    let sealed = summary
        .sealed
        .clone()
        .context("the demo transfer was not sealed")?;
    if summary.status != Status::Complete {
        anyhow::bail!("the demo transfer did not complete");
    }

    step(
        4,
        "audit: an auditor checks the manifest with stock OpenSSH, no custody needed",
    );
    let cmd = format!(
        "ssh-keygen -Y verify -f {} -I {identity} -n {} -s {} < {}",
        generated.allowed_signers.display(),
        keys::MANIFEST_NAMESPACE,
        sealed.signature.display(),
        sealed.manifest.display()
    );
    say!("      $ {cmd}");
    let ssh_keygen = run_ssh_keygen(&cmd);
    let trust = Trust::allowed_signers(&generated.allowed_signers)?;
    let signed = custody::manifest::read_signed(&sealed.manifest, &trust)?;
    let findings = custody::manifest::audit(&signed);
    say!(
        "      custody audit: signature OK, {} consistency problem(s)",
        findings.len()
    );

    step(
        5,
        "tamper: flip one byte of a landed file; verify must name it",
    );
    let caught = tamper(&dest, &signed, &sealed.manifest, &trust, opts.jobs, g)?;

    step(
        6,
        "custody ledger verify: the hash-chained, signed custody events are intact",
    );
    let l = custody::ledger::Ledger::open_existing(&ledger)?;
    let chain = l.verify_chain(None)?;
    say!(
        "      {} events, {} signatures, {} landed rows, {} problem(s)",
        chain.events,
        chain.signatures,
        chain.landed_rows,
        chain.problems.len()
    );

    say!("");
    say!("Try it yourself:");
    say!(
        "  custody verify {} {} --allowed-signers {}",
        sealed.manifest.display(),
        dest.display(),
        generated.allowed_signers.display()
    );
    say!("  custody log --ledger {}", ledger.display());
    let ok = caught && chain.problems.is_empty() && findings.is_empty();
    if g.json {
        super::print_json(&serde_json::json!({
            "result": if ok { "pass" } else { "fail" },
            "workspace": work,
            "source": {"files": stats.files, "bytes": stats.bytes},
            "transfer": summary,
            "ssh_keygen_verified": ssh_keygen,
            "audit_findings": findings.len(),
            "tamper_caught": caught,
            "ledger_problems": chain.problems.len(),
            "allowed_signers": generated.allowed_signers,
        }));
    }
    Ok(if ok { Code::Ok } else { Code::Integrity })
}

/// The demo's transfer: every core, verified, DICOM headers read.
fn options(src: &Path, dest: &Path, manifests: &Path, ledger: &Path) -> TransferOptions {
    TransferOptions {
        source: src.to_path_buf(),
        destination: custody::dest::Target::Share(dest.to_path_buf()),
        blob: Default::default(),
        jobs: std::thread::available_parallelism().map_or(2, usize::from),
        verify: true,
        manifest_dir: manifests.to_path_buf(),
        ledger: ledger.to_path_buf(),
        encryption: None,
        placement: None,
        skip_violations: false,
        require_deidentified: false,
        dicom: true,
        dicomweb_profile: None,
        limits: custody::transfer::Limits::default(),
        wave: None,
        job: None,
        allow_empty: false,
        full: false,
        selection: Default::default(),
        shard: None,
        device: None,
    }
}

/// Runs the auditor's `ssh-keygen -Y verify` line: whether it verified
/// (`None`: it could not run).
fn run_ssh_keygen(cmd: &str) -> Option<bool> {
    match std::process::Command::new("sh").arg("-c").arg(cmd).output() {
        Ok(o) if o.status.success() => {
            say!("      {}", String::from_utf8_lossy(&o.stdout).trim());
            Some(true)
        }
        Ok(o) => {
            say!(
                "      ssh-keygen said: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            Some(false)
        }
        Err(e) => {
            say!("      (could not run ssh-keygen: {e})");
            None
        }
    }
}

/// Flips one byte of a landed file, verifies, says whether verify named
/// it, and puts the byte back.
fn tamper(
    dest: &Path,
    signed: &SignedManifest,
    manifest: &Path,
    trust: &Trust,
    jobs: usize,
    g: &Global,
) -> anyhow::Result<bool> {
    let victim = signed
        .manifest
        .files
        .get(signed.manifest.files.len() / 2)
        .context("empty manifest")?;
    let victim_path = dest.join(&victim.path);
    let mut bytes = std::fs::read(&victim_path)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim_path, &bytes)?;
    say!("      flipped byte {mid} of {}", victim.path);
    let share = custody::dest::share::Share::existing(dest)?;
    let streamed = custody::manifest::open_signed(manifest, trust)?;
    let verify_opts = custody::verify::VerifyOptions {
        jobs,
        key: None,
        by_study: false,
        early: None,
    };
    let report = custody::verify::verify(&streamed, &share, &verify_opts, &Renderer::new(g))?;
    if !g.json {
        super::verify::print_report(&report);
    }
    let caught = report.discrepancies.iter().any(|d| d.path == victim.path);
    say!(
        "      {}",
        if caught {
            "caught: `custody verify` would exit 1"
        } else {
            "NOT CAUGHT (this is a bug)"
        }
    );
    bytes[mid] ^= 0x01;
    std::fs::write(&victim_path, &bytes)?;
    Ok(caught)
}
