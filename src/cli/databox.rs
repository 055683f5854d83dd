//! `custody databox`: Data Box artefacts reconciled with a manifest.

use std::path::PathBuf;

use custody::databox::bom::{self, BomFinding, BomReport};

use super::verify::{TrustArgs, open_manifest_file};
use super::{Code, Failure, Global, Outcome, print_json};

/// Reconcile what a Data Box reports with a sealed manifest.
#[derive(Debug, clap::Subcommand)]
pub enum DataboxCommand {
    /// Reconcile the BOM files a Data Box writes at "Prepare to ship" with
    /// a manifest: every file the manifest lists must be in a BOM with the
    /// same size and CRC64, and nothing else may be under the manifest's
    /// destination (its container and prefix on the share). Entries
    /// elsewhere on the share are counted, not reported. The manifest must
    /// be version 3 (it carries CRC64 values). See docs/databox.md.
    #[command(after_help = "\
Example:
  custody databox bom-check manifests/20261124T021500Z-3fa9c2d1.json \\
      /mnt/databox/DataBoxBOMs/contoso_BlockBlob_BOM.txt --allowed-signers allowed_signers

Exit codes: 0 everything matches, 1 a missing, extra, resized or changed file (or a bad
signature), 2 usage error (a malformed BOM line is named with its line number).")]
    BomCheck(BomCheckArgs),
}

/// Options of `databox bom-check`.
#[derive(Debug, clap::Args)]
pub struct BomCheckArgs {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// The BOM files (one per share type).
    #[arg(value_name = "BOMFILE", required = true)]
    boms: Vec<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Record the result in the ledger as a `bom_checked` event signed with
    /// this key.
    #[arg(long, value_name = "KEY")]
    signing_key: Option<PathBuf>,
}

pub fn run(cmd: &DataboxCommand, g: &Global) -> Outcome {
    match cmd {
        DataboxCommand::BomCheck(a) => bom_check(a, g),
    }
}

fn bom_check(args: &BomCheckArgs, g: &Global) -> Outcome {
    let signed = open_manifest_file(&args.manifest, &args.trust)?;
    let key = args
        .signing_key
        .as_deref()
        .map(super::load_signing_key)
        .transpose()?;
    let report = bom::check(&signed, &args.boms).map_err(Failure::usage)?;
    if let Some(key) = &key {
        let mut ledger = custody::ledger::Ledger::open(&g.ledger).map_err(Failure::usage)?;
        bom::record(&mut ledger, &signed.head, &report, key).map_err(Failure::usage)?;
    }
    if g.json {
        print_json(&serde_json::json!({
            "result": if report.ok() { "pass" } else { "fail" },
            "report": report,
        }));
    } else if !g.quiet {
        print_report(&report);
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

fn print_report(r: &BomReport) {
    for f in &r.findings {
        println!(
            "{}",
            match f {
                BomFinding::Missing { path, size } => format!("MISSING  {path} ({size} bytes)"),
                BomFinding::Extra { path, size } => format!("EXTRA    {path} ({size} bytes)"),
                BomFinding::Size {
                    path,
                    expected,
                    found,
                } => format!("SIZE     {path}: manifest {expected} bytes, BOM {found}"),
                BomFinding::Crc64 {
                    path,
                    expected,
                    found,
                } => format!("CRC64    {path}: manifest {expected}, BOM {found}"),
                BomFinding::Duplicate { path } =>
                    format!("DUPLICATE {path}: listed more than once"),
            }
        );
    }
    let entries: u64 = r.boms.iter().map(|b| b.entries).sum();
    let under = if r.under.is_empty() {
        "the share root".to_owned()
    } else {
        r.under.clone()
    };
    println!(
        "bom-check {}: {} of {} files match in {} BOM file(s) ({entries} entries; {} elsewhere than {under}); {} finding(s)",
        r.manifest,
        r.matched,
        r.files_expected,
        r.boms.len(),
        r.outside,
        r.findings.len()
    );
}
