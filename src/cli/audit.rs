//! `custody audit`: check a manifest's signature and consistency, no data.

use std::path::PathBuf;

use super::render;
use super::verify::{TrustArgs, manifest_failure, open_manifest_file};
use super::{Code, Global, Outcome, print_json};

/// Check a manifest's signature and internal consistency without touching
/// the data: canonical form, totals, duplicate or unordered paths,
/// well-formed hashes, paths and times, and that the signing key is the one
/// the manifest names.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody audit manifests/20261123T214500Z-3fa9c2d1.json --allowed-signers allowed_signers

The same signature check with stock OpenSSH:
  ssh-keygen -Y verify -f allowed_signers -I <identity> -n custody-manifest \\
      -s <id>.json.sig < <id>.json

Exit codes: 0 sound, 1 bad signature or inconsistency, 2 usage error.")]
pub struct Args {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let signed = open_manifest_file(&args.manifest, &args.trust)?;
    let findings =
        custody::manifest::audit_file(&signed).map_err(|e| manifest_failure(&args.manifest, e))?;
    let m = &signed.head;
    if g.json {
        print_json(&serde_json::json!({
            "manifest": m.id,
            "signer": signed.signer,
            "operator": m.operator,
            "totals": m.totals,
            "result": if findings.is_empty() { "pass" } else { "fail" },
            "findings": findings,
        }));
    } else {
        for f in &findings {
            println!("PROBLEM    {}: {}", f.at, f.problem);
        }
        if !g.quiet {
            println!(
                "manifest {}: signature OK ({}, {}); {} files, {}; sealed {} on {} by {}",
                m.id,
                signed.signer.fingerprint,
                m.operator.identity,
                m.totals.files,
                render::bytes(m.totals.bytes),
                m.created,
                m.host,
                m.operator.identity,
            );
            println!(
                "{}",
                if findings.is_empty() {
                    "audit passed".to_owned()
                } else {
                    format!("AUDIT FAILED: {} problem(s)", findings.len())
                }
            );
        }
    }
    Ok(if findings.is_empty() {
        Code::Ok
    } else {
        Code::Integrity
    })
}
