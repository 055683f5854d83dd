//! `custody ledger verify`, `custody ledger checkpoint` and `custody log`.

use std::path::PathBuf;

use custody::ledger::Ledger;

use super::{Code, Failure, Global, Outcome, print_json};

/// Inspect the custody ledger, check its chain, export it.
///
/// Inspect the custody ledger.
#[derive(Debug, clap::Subcommand)]
pub enum LedgerCommand {
    /// Check the ledger: every event hash and link, every signature, every
    /// landed-file row, every stored manifest. Names each edited, deleted,
    /// inserted or reordered row.
    #[command(after_help = "\
Example:
  custody ledger verify --ledger /var/lib/custody/custody.db --allowed-signers allowed_signers

Against a checkpoint taken earlier (and kept elsewhere): the ledger must extend it, proven by an
RFC 6962 consistency proof; when it does not, the first event that differs is named:
  custody ledger verify --since ledger-2026-11-01.checkpoint --allowed-signers allowed_signers

Exit codes: 0 intact, 1 tampering or damage found, 2 usage error (e.g. no ledger).")]
    Verify(VerifyArgs),
    /// Write a signed checkpoint of the ledger's events so far: FILE (the
    /// tree's size and root, C2SP tlog-checkpoint), FILE.sig (SSHSIG,
    /// namespace custody-checkpoint) and FILE.events (the event hashes).
    /// Keep it elsewhere, or have a witness cosign it.
    #[command(after_help = "\
Example:
  custody ledger checkpoint --out /srv/audit/ledger-$(date +%F).checkpoint

Check it with stock OpenSSH:
  ssh-keygen -Y verify -f allowed_signers -I <identity> -n custody-checkpoint \\
      -s FILE.sig < FILE

Exit codes: 0 written, 2 usage error (no ledger, no key, cannot write).")]
    Checkpoint(CheckpointArgs),
}

/// Options of `ledger checkpoint`.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Where to write the checkpoint (and FILE.sig, FILE.events).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The operator's OpenSSH Ed25519 private key, which signs it.
    #[arg(long, value_name = "KEY", env = "CUSTODY_SIGNING_KEY")]
    signing_key: PathBuf,
}

/// Options of `ledger verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Also require every signed event to be signed by a key in this
    /// allowed_signers file (otherwise the keys registered in the ledger
    /// are used).
    #[arg(long, value_name = "FILE", conflicts_with = "public_key")]
    allowed_signers: Option<PathBuf>,
    /// Also require every signed event to be signed by this public key.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Also prove that the ledger extends this checkpoint (`ledger
    /// checkpoint --out`), naming the first event that differs when it
    /// does not.
    #[arg(long, value_name = "FILE")]
    since: Option<PathBuf>,
    /// With --since: require the checkpoint to carry a cosignature by a
    /// witness listed in this allowed_signers file.
    #[arg(long, value_name = "FILE", requires = "since")]
    witness: Option<PathBuf>,
}

/// List custody events, oldest first, with their signers.
///
/// List custody events, oldest first, with each signed event's signer
/// fingerprint: the custody timeline (transfer, seal, verify, BOM checks,
/// handoffs).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  custody log --manifest 20261123T214500Z-3fa9c2d1
  custody log --manifest 20261123T214500Z-3fa9c2d1 --export timeline.json
      # for an auditor without the ledger: see docs/ledger.md, \"Exported timelines\"
  custody log --job pacs-nightly")]
pub struct LogArgs {
    /// Only the events of this manifest and of the run it sealed.
    #[arg(long, value_name = "ID")]
    manifest: Option<String>,
    /// Write the manifest's events, with their signatures and the signers'
    /// public keys, to FILE: checkable with `ssh-keygen -Y verify` and the
    /// documented hash, without the ledger.
    #[arg(long, value_name = "FILE", requires = "manifest")]
    export: Option<PathBuf>,
    /// Show a job's runs instead (`transfer --job NAME`): when each
    /// started, its result, files and bytes landed, and its manifest.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["manifest", "export"])]
    job: Option<String>,
}

pub fn run(cmd: &LedgerCommand, g: &Global) -> Outcome {
    match cmd {
        LedgerCommand::Verify(a) => verify(a, g),
        LedgerCommand::Checkpoint(a) => checkpoint(a, g),
    }
}

fn verify(a: &VerifyArgs, g: &Global) -> Outcome {
    let trust = match (&a.allowed_signers, &a.public_key) {
        (None, None) => None,
        (s, p) => Some(super::load_trust(s.as_deref(), p.as_deref())?),
    };
    let ledger = Ledger::open_existing(&g.ledger).map_err(Failure::usage)?;
    let report = ledger
        .verify_chain(trust.as_ref())
        .map_err(Failure::usage)?;
    let since = match &a.since {
        Some(file) => {
            let old = custody::manifest::checkpoint::read(file)
                .map_err(|e| super::load::manifest_failure(file, e))?;
            let listed = custody::manifest::checkpoint::EventList::read(file)
                .map_err(|e| super::load::manifest_failure(file, e))?;
            let witnesses = match &a.witness {
                Some(w) => Some(super::load_trust(Some(w), None)?),
                None => None,
            };
            Some(
                ledger
                    .verify_since(&old, listed.as_ref(), trust.as_ref(), witnesses.as_ref())
                    .map_err(Failure::usage)?,
            )
        }
        None => None,
    };
    let ok = report.problems.is_empty() && since.as_ref().is_none_or(|s| s.problems.is_empty());
    if g.json {
        print_json(&serde_json::json!({
            "ledger": g.ledger,
            "result": if ok { "pass" } else { "fail" },
            "report": report,
            "since": since,
        }));
    } else {
        for p in &report.problems {
            println!("TAMPERED   {}", p.problem);
        }
        for p in since.iter().flat_map(|s| &s.problems) {
            println!("TAMPERED   {p}");
        }
        if !g.quiet {
            println!(
                "ledger {}: {} events, {} signatures, {} landed rows; head {} {}",
                g.ledger.display(),
                report.events,
                report.signatures,
                report.landed_rows,
                report.head.seq,
                report.head.hash
            );
            if let Some(s) = since.as_ref().filter(|s| s.problems.is_empty()) {
                println!(
                    "extends checkpoint {} at {} events (root {}): consistency proof of {} hashes to {} events (root {})",
                    s.origin,
                    s.size,
                    s.root,
                    s.consistency.len(),
                    s.now_size,
                    s.now_root
                );
            }
            println!(
                "{}",
                if ok {
                    "ledger intact".to_owned()
                } else {
                    let n = report.problems.len() + since.as_ref().map_or(0, |s| s.problems.len());
                    format!("LEDGER VERIFY FAILED: {n} problem(s)")
                }
            );
        }
    }
    Ok(if ok { Code::Ok } else { Code::Integrity })
}

fn checkpoint(a: &CheckpointArgs, g: &Global) -> Outcome {
    let key = super::load_signing_key(&a.signing_key)?;
    let ledger = Ledger::open_existing(&g.ledger).map_err(Failure::usage)?;
    let written = ledger
        .write_checkpoint(&a.out, &key)
        .map_err(Failure::usage)?;
    let c = &written.checkpoint;
    if g.json {
        print_json(&serde_json::json!({
            "checkpoint": a.out,
            "signature": written.signature,
            "events": written.events,
            "origin": c.origin,
            "size": c.root.size,
            "root": custody::merkle::to_hex(&c.root.hash),
        }));
    } else if !g.quiet {
        println!(
            "checkpoint of {} at {} events (root {}) written to {}",
            c.origin,
            c.root.size,
            custody::merkle::to_hex(&c.root.hash),
            super::render::escape_controls(&a.out.display().to_string())
        );
    }
    Ok(Code::Ok)
}

pub fn log(a: &LogArgs, g: &Global) -> Outcome {
    let ledger = Ledger::open_existing(&g.ledger).map_err(Failure::usage)?;
    if let Some(job) = &a.job {
        return job_log(&ledger, job, g);
    }
    if let Some(id) = &a.manifest
        && !ledger.has_manifest(id).map_err(Failure::usage)?
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "ledger {}: no manifest {id}",
            g.ledger.display()
        )));
    }
    if let (Some(id), Some(file)) = (&a.manifest, &a.export) {
        let exported = ledger.export_events(id).map_err(Failure::usage)?;
        let text = serde_json::to_string_pretty(&exported).expect("JSON serialises");
        std::fs::write(file, text + "\n").map_err(|e| {
            Failure::usage(anyhow::anyhow!("{}: cannot write: {e}", file.display()))
        })?;
        let events = exported["events"].as_array().map_or(0, Vec::len);
        let signed = exported["events"].as_array().map_or(0, |e| {
            e.iter().filter(|e| e["signature"].is_string()).count()
        });
        if g.json {
            print_json(&serde_json::json!({
                "manifest": id,
                "export": file,
                "events": events,
                "signed": signed,
            }));
        } else if !g.quiet {
            println!(
                "exported {events} events ({signed} signed) of manifest {id} to {}",
                file.display()
            );
        }
        return Ok(Code::Ok);
    }
    let events = ledger
        .events(a.manifest.as_deref())
        .map_err(Failure::usage)?;
    if g.json {
        print_json(&serde_json::json!({ "events": events }));
        return Ok(Code::Ok);
    }
    for e in &events {
        println!(
            "{:>6}  {}  {:<14} run {:<4} {}{}  {}",
            e.seq,
            e.at,
            e.kind,
            e.run.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            e.manifest.as_deref().unwrap_or(""),
            e.signer
                .as_deref()
                .map(|s| format!(" signed {s}"))
                .unwrap_or_default(),
            serde_json::to_string(&e.payload).unwrap_or_default(),
        );
    }
    Ok(Code::Ok)
}

/// `custody log --job NAME`: one line per run of the job.
fn job_log(ledger: &Ledger, job: &str, g: &Global) -> Outcome {
    let runs = ledger.job_runs(job).map_err(Failure::usage)?;
    if runs.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "ledger {}: no runs of job {job:?}",
            g.ledger.display()
        )));
    }
    if g.json {
        print_json(&serde_json::json!({ "job": job, "runs": runs }));
        return Ok(Code::Ok);
    }
    println!(
        "{:>4}  {:<30}  {:<10}  {:>8}  {:>10}  {:<25}  {:>7}  {:>7}",
        "run", "started", "result", "files", "bytes", "manifest", "changes", "ledger"
    );
    for r in &runs {
        let result = match r.status.as_str() {
            "sealed" if r.source_changes > 0 => "sealed*",
            "sealed" => "sealed",
            "incomplete" => "incomplete",
            _ => "open",
        };
        println!(
            "{:>4}  {:<30}  {:<10}  {:>8}  {:>10}  {:<25}  {:>7}  {:>7}",
            r.job_run,
            r.started_at,
            result,
            r.files,
            super::render::bytes(r.bytes),
            r.manifest.as_deref().unwrap_or("-"),
            r.source_changes,
            format!("run {}", r.run),
        );
    }
    if runs
        .iter()
        .any(|r| r.status == "sealed" && r.source_changes > 0)
    {
        println!(
            "* sealed with source changes listed in its manifest (`custody audit` shows them)"
        );
    }
    Ok(Code::Ok)
}
