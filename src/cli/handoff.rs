//! `custody handoff`: record that the media holding a manifest's files
//! changed hands.

use std::path::{Path, PathBuf};

use custody::ledger::{Handoff, Ledger};

use super::{Code, Failure, Global, Outcome, print_json};

/// Record a signed handoff of the media holding a manifest's files.
///
/// Record a physical handoff of the media (a Data Box, a disk) holding a
/// sealed manifest's files: who released it, who received it, why, where,
/// which device and tamper-evident seal. The record is a custody event
/// signed with the operator's key and chained in the ledger, as HIPAA
/// 45 CFR 164.310(d)(2)(iii) asks for media movements; `custody log
/// --manifest ID` lists it and `ledger verify` checks it.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody handoff manifests/20261124T021500Z-3fa9c2d1.json --from \"J. Doe (hospital IT)\" \\
      --to \"UPS courier, tracking 1Z999\" --purpose \"return Data Box to Azure\" \\
      --location \"Loading dock B\" --device-serial DBX-123456 --seal-id TS-0042 \\
      --order contoso-wave1 --signing-key ~/.custody/custody_ed25519

Exit codes: 0 recorded, 2 usage error (e.g. a manifest this ledger did not seal).")]
pub struct Args {
    /// The manifest: its file (`<id>.json`, matched by its bytes) or its id.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// Who released the media.
    #[arg(long, value_name = "NAME")]
    from: String,
    /// Who received it.
    #[arg(long, value_name = "NAME")]
    to: String,
    /// Why it moved.
    #[arg(long, value_name = "TEXT")]
    purpose: String,
    /// Where it happened.
    #[arg(long, value_name = "TEXT")]
    location: Option<String>,
    /// The device's serial number.
    #[arg(long, value_name = "S")]
    device_serial: Option<String>,
    /// The tamper-evident seal's id.
    #[arg(long, value_name = "ID")]
    seal_id: Option<String>,
    /// The order (e.g. the Data Box order name).
    #[arg(long, value_name = "ID")]
    order: Option<String>,
    /// The operator's OpenSSH Ed25519 private key, which signs the event.
    #[arg(long, value_name = "KEY", env = "CUSTODY_SIGNING_KEY")]
    signing_key: PathBuf,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    for (flag, value) in [
        ("--from", &args.from),
        ("--to", &args.to),
        ("--purpose", &args.purpose),
    ] {
        if value.trim().is_empty() {
            return Err(Failure::usage(anyhow::anyhow!("{flag} must not be empty")));
        }
    }
    let key = super::load_signing_key(&args.signing_key)?;
    let mut ledger = Ledger::open_existing(&g.ledger).map_err(Failure::usage)?;
    let id = manifest_id(&ledger, &args.manifest)?;
    let handoff = Handoff {
        from: args.from.clone(),
        to: args.to.clone(),
        purpose: args.purpose.clone(),
        location: args.location.clone(),
        device_serial: args.device_serial.clone(),
        seal_id: args.seal_id.clone(),
        order: args.order.clone(),
    };
    let event = ledger
        .record_handoff(&id, &handoff, &key)
        .map_err(Failure::usage)?;
    if g.json {
        print_json(&event);
    } else if !g.quiet {
        println!(
            "handoff recorded for manifest {id}: event {} ({} -> {}), signed {}",
            event.seq,
            handoff.from,
            handoff.to,
            event.signer.as_deref().unwrap_or("-")
        );
    }
    Ok(Code::Ok)
}

/// The id of the manifest `arg` names: an existing file is matched by the
/// BLAKE3 of its bytes against the manifests sealed in this ledger;
/// anything else is taken as an id.
fn manifest_id(ledger: &Ledger, arg: &Path) -> Result<String, Failure> {
    if arg.is_file() {
        let file = std::fs::File::open(arg)
            .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", arg.display())))?;
        let (_, hash) = custody::digest::hash_reader(file)
            .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", arg.display())))?;
        return ledger
            .manifest_with_blake3(&hash.to_hex())
            .map_err(Failure::usage)?
            .ok_or_else(|| {
                Failure::usage(anyhow::anyhow!(
                    "{}: not a manifest sealed in this ledger (its bytes match none)",
                    arg.display()
                ))
            });
    }
    let id = arg.to_string_lossy().into_owned();
    if !ledger.has_manifest(&id).map_err(Failure::usage)? {
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: no such file, and no manifest with that id in this ledger",
            arg.display()
        )));
    }
    Ok(id)
}
