//! `custody rollback`: remove from a destination exactly what a manifest
//! landed, and only what is still as it landed.

use std::path::PathBuf;

use custody::lock::{LockError, RunLock};
use custody::rollback::{LeftClass, RollbackOptions, RollbackReport};

use super::args::{ManifestAt, TrustArgs};
use super::load::{manifest_failure, open_manifest_file};
use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_json};

/// Remove exactly what a manifest landed, where it is unchanged.
///
/// Remove from DEST exactly the objects a manifest landed, each only if it
/// still holds the bytes the manifest records (re-read and re-hashed);
/// never anything else. An object changed since landing is reported and
/// left. Without --yes this is a dry run that says what would be removed.
///
/// With --yes the rollback takes the destination's transfer lock (it
/// refuses, exit 4, while a transfer into DEST runs with this ledger) and
/// is recorded as a signed `rolled_back` custody event. On a share,
/// directories the removals leave empty are removed too.
///
/// DEST must be the destination the manifest records (its `destination`),
/// and is never its source, a folder inside the source or one holding it:
/// those are refused (exit 2) before anything is read, dry run or not. On
/// a share nothing is removed, or read, through a symbolic link.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody rollback manifests/20261124T021500Z-3fa9c2d1.json /mnt/databox/contoso_BlockBlob/pacs \\
      --allowed-signers allowed_signers                      # dry run: what would go
  custody rollback manifests/20261124T021500Z-3fa9c2d1.json /mnt/databox/contoso_BlockBlob/pacs \\
      --allowed-signers allowed_signers --yes --signing-key ~/.custody/custody_ed25519

Exit codes: 0 everything the manifest landed is gone (or would be), 1 something was left
(changed since landing or unreadable) or the manifest's signature is bad, 2 usage error,
4 a transfer into DEST is running.")]
pub struct Args {
    #[command(flatten)]
    at: ManifestAt,
    #[command(flatten)]
    trust: TrustArgs,
    /// Remove (without it, only say what would be removed).
    #[arg(long)]
    yes: bool,
    /// With --yes: the operator's key, which signs the `rolled_back` event.
    #[arg(long, value_name = "KEY", env = "CUSTODY_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// DEST is the manifest's destination remounted at another path (the
    /// share's new mount point): accept it although the manifest records
    /// another. The manifest's source is refused all the same.
    #[arg(long)]
    destination_moved: bool,
    /// Objects checked in parallel [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", env = "CUSTODY_JOBS")]
    jobs: Option<usize>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let key = match (&args.signing_key, args.yes) {
        (Some(k), true) => Some(super::load_signing_key(k)?),
        (None, true) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--yes removes data and records it as a signed custody event: give --signing-key"
            )));
        }
        (_, false) => None,
    };
    let signed = open_manifest_file(&args.at.manifest, &args.trust)?;
    let findings = custody::manifest::audit_file(&signed)
        .map_err(|e| manifest_failure(&args.at.manifest, e))?;
    if let Some(f) = findings.first() {
        return Err(Failure::integrity(anyhow::anyhow!(
            "{}: manifest is internally inconsistent ({} problem(s), first: {}: {}); not removing anything by it",
            args.at.manifest.display(),
            findings.len(),
            f.at,
            f.problem
        )));
    }
    let target = custody::dest::Target::parse(&args.at.destination).map_err(Failure::usage)?;
    let options = g.blob_options(custody::dest::blob::Access::Write);
    let dest = target.open_existing(&options).map_err(Failure::usage)?;
    custody::rollback::check_target(&signed.head, dest.as_ref(), args.destination_moved)
        .map_err(|e| {
            let hint = match e {
                custody::rollback::TargetError::Elsewhere { .. } => {
                    "nothing was removed; name the destination the manifest records, or add --destination-moved if the share was remounted at another path"
                }
                _ => "nothing was removed; name the destination the manifest records",
            };
            Failure::usage(e).hint(hint)
        })?;
    // Not while a transfer lands files there.
    let busy = |e: LockError| match e {
        LockError::Busy { .. } => Failure::not_now(e)
            .hint("nothing was removed; run it again once that transfer has ended"),
        _ => Failure::usage(e),
    };
    let _lock = match args.yes {
        true => Some(RunLock::acquire(&g.ledger, &dest.describe()).map_err(busy)?),
        false => None,
    };
    // A directory is also locked in itself, against transfers with any
    // ledger.
    let _dest_lock = match (args.yes, &target) {
        (true, custody::dest::Target::Share(_)) => {
            let root = PathBuf::from(dest.describe());
            Some(RunLock::in_destination(&root, &dest.describe(), &g.ledger).map_err(busy)?)
        }
        _ => None,
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let renderer = Renderer::new(g);
    let opts = RollbackOptions {
        jobs,
        act: args.yes,
    };
    let report = custody::rollback::rollback(&signed, dest.as_ref(), &opts, &renderer)
        .map_err(Failure::usage)?;
    let event = match &key {
        Some(key) => {
            let mut ledger = custody::ledger::Ledger::open(&g.ledger).map_err(Failure::usage)?;
            Some(
                custody::rollback::record(&mut ledger, &signed.head, &report, key)
                    .map_err(Failure::usage)?,
            )
        }
        None => None,
    };
    if g.json {
        print_json(&serde_json::json!({
            "result": if report.ok() { "pass" } else { "fail" },
            "report": report,
            "event": event.as_ref().map(|e| e.seq),
        }));
    } else {
        print_report(&report, g.quiet);
        if let Some(e) = &event {
            println!("recorded as custody event {} (rolled_back)", e.seq);
        }
    }
    // A destination that removes nothing (a DICOMweb service without
    // DELETE) is said once, with what to do instead.
    if let Some(l) = report
        .left
        .iter()
        .find(|l| l.class == LeftClass::Unsupported)
    {
        return Err(
            Failure::usage(anyhow::anyhow!("{}: {}", dest.describe(), l.detail)).hint(
                "the objects listed KEPT are still there; the manifest names each one (stored.path)",
            ),
        );
    }
    // What was removed is recorded above; a refused credential is a
    // configuration problem, not something rollback left behind.
    if let Some(reason) = dest.refused() {
        return Err(
            Failure::usage(anyhow::anyhow!("{}: {reason}", dest.describe()))
                .hint("what was removed is recorded; fix the sign-in or the role and run it again"),
        );
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

fn print_report(r: &RollbackReport, quiet: bool) {
    for l in &r.left {
        let label = match l.class {
            LeftClass::Changed => "CHANGED",
            LeftClass::Unreadable => "UNREADABLE",
            // The reason is the same for every object: said once, below.
            LeftClass::Unsupported => {
                println!("{:<10} {} (left in place)", "KEPT", l.path);
                continue;
            }
        };
        println!("{label:<10} {}: {} (left in place)", l.path, l.detail);
    }
    if quiet {
        return;
    }
    let (verb, tail) = if r.dry_run {
        (
            "DRY RUN: would remove",
            "; run it again with --yes (and --signing-key) to remove them",
        )
    } else {
        ("removed", "")
    };
    println!(
        "{verb} {} of {} objects ({}) from {}; {} already gone; {} left{tail}",
        r.removed,
        r.files_in_manifest,
        render::bytes(r.bytes_removed),
        r.destination,
        r.missing,
        r.left.len(),
    );
}
