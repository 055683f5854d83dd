//! `custody prove`, `custody check-proof` and `custody witness cosign`:
//! per-study inclusion proofs and the witness (docs/proofs.md).

use std::path::PathBuf;

use custody::proofs::{self, Choice, ProofError};
use custody::witness::{self, WitnessError};

use super::args::TrustArgs;
use super::load::manifest_failure;
use super::{Code, Failure, Global, Outcome, print_json, render};

/// Prove that some entries belong to a sealed manifest, and nothing more.
///
/// Write a proof bundle: the entries of the chosen studies or paths, each
/// with its RFC 6962 inclusion proof, and the manifest's signed checkpoint,
/// and nothing else of the manifest (no other patient's path). An auditor
/// checks it offline with `custody check-proof` or `ssh-keygen` and a short
/// script (docs/proofs.md).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  custody prove manifests/20261123T214500Z-3fa9c2d1.json \\
      --study 1.2.840.113619.2.55.3.604688119 --out study.proof.json
  custody prove manifests/<id>.json --path CT/2026/0042 --path MR/2026/0007/1.dcm --out two.proof.json

The manifest's checkpoint (<id>.checkpoint, <id>.checkpoint.sig, and any
witness cosignatures in <id>.checkpoint.cosig) must be beside it.

Exit codes: 0 written, 1 the manifest, its checkpoint or its tree does not hold, 2 usage error
(no such study or path, a manifest older than version 9, a file that cannot be read).")]
pub struct ProveArgs {
    /// The sealed manifest (version 9; `<id>.json` with `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// Prove every entry of this study (its StudyInstanceUID). Repeatable.
    #[arg(long, value_name = "UID", required_unless_present = "path")]
    study: Vec<String>,
    /// Prove the entry with this path, or every entry under this folder.
    /// Repeatable.
    #[arg(long, value_name = "PATH")]
    path: Vec<String>,
    /// Where to write the bundle.
    #[arg(long, value_name = "BUNDLE.json")]
    out: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Check a proof bundle offline.
///
/// Check a proof bundle from `custody prove`: the checkpoint's signature
/// against the operator's key, each entry's inclusion proof against the
/// checkpoint's root, and with --witness a cosignature by a trusted
/// witness.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody check-proof study.proof.json --allowed-signers allowed_signers

Exit codes: 0 every entry proven, 1 a proof, the checkpoint or its signature does not hold,
2 usage error (no bundle, no trust file).")]
pub struct CheckProofArgs {
    /// The bundle (`custody prove --out`).
    #[arg(value_name = "BUNDLE.json")]
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Also require a cosignature by a witness listed in this
    /// allowed_signers file (namespace custody-witness).
    #[arg(long, value_name = "FILE")]
    witness: Option<PathBuf>,
}

/// Run a witness: cosign checkpoints that extend what it saw.
#[derive(Debug, clap::Subcommand)]
pub enum WitnessCommand {
    /// Cosign a checkpoint if it is consistent with the last one cosigned
    /// for its origin; refuse a fork or a rollback.
    #[command(after_help = "\
Example (on the compliance office's own machine, with its own key):
  custody witness cosign ledger-2026-12-07.checkpoint --key witness_ed25519 --state /var/lib/custody-witness

The checkpoint's signature must verify against the log's keys: --allowed-signers, the configured
allowed_signers, or DIR/allowed_signers. A checkpoint larger than the last cosigned one needs its
event list beside it (<checkpoint>.events, written by `custody ledger checkpoint`). The cosignature
is added to <checkpoint>.cosig.

Exit codes: 0 cosigned, 1 refused (a fork, a rollback, an unproven extension, a bad signature),
2 usage error.")]
    Cosign(CosignArgs),
}

/// Options of `witness cosign`.
#[derive(Debug, clap::Args)]
pub struct CosignArgs {
    /// The checkpoint (its signature is CHECKPOINT.sig).
    #[arg(value_name = "CHECKPOINT")]
    checkpoint: PathBuf,
    /// The witness's OpenSSH Ed25519 private key.
    #[arg(long, value_name = "K")]
    key: PathBuf,
    /// The witness's state directory: the last checkpoint cosigned per
    /// origin.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// The log's keys (allowed_signers, namespace custody-checkpoint)
    /// [default: the configured allowed_signers, else DIR/allowed_signers].
    #[arg(long, value_name = "FILE", env = "CUSTODY_ALLOWED_SIGNERS")]
    allowed_signers: Option<PathBuf>,
}

fn choices(a: &ProveArgs) -> Vec<Choice> {
    a.study
        .iter()
        .cloned()
        .map(Choice::Study)
        .chain(a.path.iter().cloned().map(Choice::Path))
        .collect()
}

pub fn prove(a: &ProveArgs, g: &Global) -> Outcome {
    let trust = a.trust.load()?;
    let proven = proofs::prove(&a.manifest, &trust, &choices(a)).map_err(|e| match e {
        ProofError::Manifest(m) => manifest_failure(&a.manifest, m),
        e @ (ProofError::NoTree { .. } | ProofError::NothingChosen { .. }) => Failure::usage(e),
        e @ ProofError::Tree { .. } => Failure::usage(e),
        e => Failure::integrity(e),
    })?;
    let mut text = serde_json::to_string_pretty(&proven.bundle).expect("a bundle serialises");
    text.push('\n');
    custody::manifest::write_durable(&a.out, text.as_bytes()).map_err(Failure::usage)?;
    let entries = proven.bundle.entries.len();
    if g.json {
        print_json(&serde_json::json!({
            "manifest": proven.manifest,
            "bundle": a.out,
            "entries": entries,
            "size": proven.root.size,
            "root": custody::merkle::to_hex(&proven.root.hash),
            "bytes": text.len(),
            "cosignatures": proven.bundle.cosignatures.len(),
        }));
    } else if !g.quiet {
        println!(
            "wrote {}: {entries} of {} entries of manifest {} with their proofs ({} bytes)",
            render::escape_controls(&a.out.display().to_string()),
            proven.root.size,
            proven.manifest,
            text.len()
        );
    }
    Ok(Code::Ok)
}

pub fn check_proof(a: &CheckProofArgs, g: &Global) -> Outcome {
    let trust = a.trust.load()?;
    let witnesses = match &a.witness {
        Some(w) => Some(super::load_trust(Some(w), None)?),
        None => None,
    };
    let bundle = match proofs::read_bundle(&a.bundle) {
        Ok(b) => b,
        Err(e @ ProofError::Io { .. }) => return Err(Failure::usage(e)),
        Err(e) => return Err(Failure::integrity(e)),
    };
    let report = proofs::check(&bundle, &trust, witnesses.as_ref());
    let ok = report.passed();
    if g.json {
        print_json(&serde_json::json!({
            "bundle": a.bundle,
            "result": if ok { "pass" } else { "fail" },
            "report": report,
        }));
    } else {
        for p in &report.problems {
            println!("FAILED     {}", render::escape_controls(&p.problem));
        }
        if !g.quiet {
            for e in &report.proven {
                println!(
                    "PROVEN     {} ({} bytes, blake3 {}){}",
                    render::escape_controls(&e.path),
                    e.size,
                    e.blake3,
                    e.study
                        .as_deref()
                        .map(|s| format!(" study {s}"))
                        .unwrap_or_default()
                );
            }
            for w in &report.witnesses {
                println!(
                    "WITNESSED  by {}{}",
                    w.fingerprint,
                    w.principal
                        .as_deref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                );
            }
            println!(
                "{}",
                match ok {
                    true => format!(
                        "proof holds: {} entr{} of manifest {} (a tree of {} entries, root {})",
                        report.proven.len(),
                        if report.proven.len() == 1 { "y" } else { "ies" },
                        report.manifest.as_deref().unwrap_or("?"),
                        report.size,
                        report.root
                    ),
                    false => format!("PROOF CHECK FAILED: {} problem(s)", report.problems.len()),
                }
            );
        }
    }
    Ok(if ok { Code::Ok } else { Code::Integrity })
}

pub fn witness(cmd: &WitnessCommand, g: &Global) -> Outcome {
    let WitnessCommand::Cosign(a) = cmd;
    let key = super::load_signing_key(&a.key)?;
    let in_state = a.state.join(custody::keys::ALLOWED_SIGNERS_FILE);
    let log_keys = match &a.allowed_signers {
        Some(p) => super::load_trust(Some(p), None)?,
        None if in_state.is_file() => super::load_trust(Some(&in_state), None)?,
        None => {
            return Err(Failure::usage(anyhow::anyhow!(
                "the witness needs the log's keys to check what it cosigns"
            ))
            .hint(format!(
                "give --allowed-signers FILE, configure allowed_signers, or put the log's allowed_signers at {}",
                in_state.display()
            )));
        }
    };
    let done = witness::cosign(&a.checkpoint, &key, &a.state, &log_keys).map_err(|e| match e {
        WitnessError::Read(m) => manifest_failure(&a.checkpoint, m),
        e if e.is_refusal() => Failure::integrity(e),
        e => Failure::usage(e),
    })?;
    if g.json {
        print_json(&serde_json::json!({
            "checkpoint": a.checkpoint,
            "origin": done.origin,
            "size": done.size,
            "previous_size": done.previous_size,
            "log_signer": done.log_signer,
            "cosignature": done.cosignature,
        }));
    } else if !g.quiet {
        println!(
            "cosigned {} at size {}{}; cosignature in {}",
            done.origin,
            done.size,
            match done.previous_size {
                Some(p) => format!(" (extends size {p}, cosigned before)"),
                None => " (the first checkpoint seen of it)".to_owned(),
            },
            render::escape_controls(&done.cosignature.display().to_string())
        );
    }
    Ok(Code::Ok)
}
