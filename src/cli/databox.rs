//! `custody databox`: Data Box artefacts reconciled with a manifest.

use std::path::{Path, PathBuf};

use custody::databox::bom::{self, BomFinding, BomReport};
use custody::databox::copylog::{self, CopyLogReport};
use custody::keys::SigningKey;
use custody::ledger::{Event, Ledger, LedgerError};
use custody::manifest::{Manifest, SignedFile};

use super::args::TrustArgs;
use super::load::open_manifest_file;
use super::{Code, Failure, Global, Outcome, print_result};

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
    /// Map the copy log Data Box writes to the storage account after the
    /// upload (`databoxcopylog/<order>_<serial>_CopyLog_<guid>.xml`) onto a
    /// manifest: every errored or renamed file, blob or container that
    /// concerns the manifest's files is named with the manifest path it
    /// maps to (a renamed container concerns all of them). See
    /// docs/databox.md.
    #[command(after_help = "\
Example:
  custody databox copylog-check manifests/20261124T021500Z-3fa9c2d1.json \\
      contoso-order_DBX123_CopyLog_5a1e.xml --allowed-signers allowed_signers

Exit codes: 0 nothing concerns the manifest, 1 an entity concerns it (or a bad signature),
2 usage error (e.g. not a copy log).")]
    CopylogCheck(CopylogCheckArgs),
}

/// Options of `databox copylog-check`.
#[derive(Debug, clap::Args)]
pub struct CopylogCheckArgs {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// The copy log (XML).
    #[arg(value_name = "COPYLOG")]
    copylog: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Record the result in the ledger as a `copylog_checked` event signed
    /// with this key.
    #[arg(long, value_name = "KEY")]
    signing_key: Option<PathBuf>,
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
        DataboxCommand::CopylogCheck(a) => copylog_check(a, g),
    }
}

/// A check of a Data Box artefact against a manifest, as both commands run
/// it.
trait Check: serde::Serialize {
    /// Whether nothing is wrong.
    fn ok(&self) -> bool;
    /// Records it as a signed event.
    fn record(
        &self,
        ledger: &mut Ledger,
        manifest: &Manifest,
        key: &SigningKey,
    ) -> Result<Event, LedgerError>;
    /// The human report.
    fn print(&self);
}

impl Check for BomReport {
    fn ok(&self) -> bool {
        BomReport::ok(self)
    }
    fn record(&self, l: &mut Ledger, m: &Manifest, k: &SigningKey) -> Result<Event, LedgerError> {
        bom::record(l, m, self, k)
    }
    fn print(&self) {
        print_report(self);
    }
}

impl Check for CopyLogReport {
    fn ok(&self) -> bool {
        CopyLogReport::ok(self)
    }
    fn record(&self, l: &mut Ledger, m: &Manifest, k: &SigningKey) -> Result<Event, LedgerError> {
        copylog::record(l, m, self, k)
    }
    fn print(&self) {
        print_copylog(self);
    }
}

/// Checks the manifest's signature, runs `check`, records the result when
/// a signing key is given, prints it, and maps it to the exit code.
fn run_check<R: Check, E: Into<anyhow::Error>>(
    manifest: &Path,
    trust: &TrustArgs,
    signing_key: Option<&Path>,
    g: &Global,
    check: impl FnOnce(&SignedFile) -> Result<R, E>,
) -> Outcome {
    let signed = open_manifest_file(manifest, trust)?;
    let key = signing_key.map(super::load_signing_key).transpose()?;
    let report = check(&signed).map_err(Failure::usage)?;
    if let Some(key) = &key {
        let mut ledger = Ledger::open(&g.ledger).map_err(Failure::usage)?;
        report
            .record(&mut ledger, &signed.head, key)
            .map_err(Failure::usage)?;
    }
    if g.json {
        print_result(report.ok(), &report);
    } else if !g.quiet {
        report.print();
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

fn copylog_check(args: &CopylogCheckArgs, g: &Global) -> Outcome {
    run_check(
        &args.manifest,
        &args.trust,
        args.signing_key.as_deref(),
        g,
        |m| copylog::check(m, &args.copylog),
    )
}

fn bom_check(args: &BomCheckArgs, g: &Global) -> Outcome {
    run_check(
        &args.manifest,
        &args.trust,
        args.signing_key.as_deref(),
        g,
        |m| bom::check(m, &args.boms),
    )
}

fn print_copylog(report: &CopyLogReport) {
    for c in &report.concerns {
        let what = match &c.renamed_to {
            Some(new) => format!("renamed to {new}"),
            None => c.message.clone().unwrap_or_default(),
        };
        let path = if c.path == "*" && c.entity.is_empty() {
            "ALL FILES".to_owned()
        } else if c.path == "*" {
            format!("ALL FILES (container or folder {})", c.entity)
        } else {
            c.path.clone()
        };
        println!("{:<16} {path}: {what}", c.category);
    }
    println!(
        "copylog-check {}: {} entit(ies) concern the manifest, {} concern other data; upload status {}, {} of {} files errored",
        report.manifest,
        report.concerns.len(),
        report.outside,
        report.status.as_deref().unwrap_or("unknown"),
        report.files_errored.map_or("?".into(), |n| n.to_string()),
        report.total.map_or("?".into(), |n| n.to_string()),
    );
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
