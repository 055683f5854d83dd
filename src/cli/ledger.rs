//! `custody ledger verify` and `custody log`.

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

Exit codes: 0 intact, 1 tampering or damage found, 2 usage error (e.g. no ledger).")]
    Verify(VerifyArgs),
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
    let ok = report.problems.is_empty();
    if g.json {
        print_json(&serde_json::json!({
            "ledger": g.ledger,
            "result": if ok { "pass" } else { "fail" },
            "report": report,
        }));
    } else {
        for p in &report.problems {
            println!("TAMPERED   {}", p.problem);
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
            println!(
                "{}",
                if ok {
                    "ledger intact".to_owned()
                } else {
                    format!("LEDGER VERIFY FAILED: {} problem(s)", report.problems.len())
                }
            );
        }
    }
    Ok(if ok { Code::Ok } else { Code::Integrity })
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
