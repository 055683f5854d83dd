//! `custody scan`: inventory a source tree, optionally hashing every file,
//! and (with `--dest`) the Data Box preflight.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use custody::databox::dicom::DicomProfile;
use custody::databox::{Occupied, Placement, Profile, Violation};
use custody::dest;
use custody::dest::blob::Blob;
use custody::dest::names::Names;
use custody::scan::dicom::DicomInventory;
use custody::scan::{self, Hashed, Inventory, ScanOptions, ScanSink};
use custody::source::dicom::Privacy;

use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_json};

/// Inventory a source tree (and a destination's rules) before anything moves.
///
/// Inventory a source tree before anything moves: files, bytes, a size
/// histogram, the largest files, the deepest and longest paths, and what
/// would not be carried (links, special files, names that are not UTF-8).
/// From the DICOM headers (read up to the pixel data): instances, series,
/// studies, modalities, the same instance stored twice, de-identification
/// (see docs/dicom.md); --phi-check lists files that may identify a patient
/// (attribute names only, never values).
/// With --dest, also the Data Box preflight: every file that the
/// destination's rules would refuse or rename, with the rule (see
/// docs/databox.md). Reads only the start of each file (132 bytes, or a
/// DICOM header up to its pixel data) unless --hash; nothing with --no-dicom.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  custody scan /srv/pacs
  custody scan /srv/pacs --dest /mnt/databox/contoso_BlockBlob/pacs-2024
  custody scan /srv/pacs --dest /mnt/export --profile page-blob
  custody scan /srv/pacs --hash --b3sum pacs.b3     # then: cd /srv/pacs && b3sum --check pacs.b3
  custody scan /srv/pacs --phi-check

Exit codes: 0 scanned (no violations), 2 usage error, a Data Box rule broken (each named on
stdout) or, with --require-deidentified, a file that may identify a patient, 3 some entries
could not be read (named on stderr).")]
pub struct Args {
    /// The source tree.
    #[arg(value_name = "SRC")]
    source: PathBuf,
    /// Read every file and compute its BLAKE3 (as a transfer does, without
    /// a destination).
    #[arg(long)]
    hash: bool,
    /// Write a list that `b3sum --check` accepts (run from SRC) to FILE;
    /// implies --hash.
    #[arg(long, value_name = "FILE")]
    b3sum: Option<PathBuf>,
    /// Files hashed in parallel [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", env = "CUSTODY_JOBS")]
    jobs: Option<usize>,
    /// Lint the tree against this destination's Data Box rules: a mounted
    /// share (`…/<account>_BlockBlob|_PageBlob|_AzFile[/container[/prefix]]`)
    /// or a blob URL. Names already taken in a destination directory are
    /// reported too.
    #[arg(long, value_name = "DEST")]
    dest: Option<PathBuf>,
    /// The object type, when DEST's name does not say it (a plain directory
    /// is then taken as a share root of this type).
    #[arg(long, value_enum, value_name = "TYPE", requires = "dest")]
    profile: Option<ProfileArg>,
    /// Do not read DICOM headers (names and sizes only, unless --hash).
    #[arg(long, conflicts_with_all = ["phi_check", "require_deidentified"])]
    no_dicom: bool,
    /// List the DICOM files that are not marked de-identified
    /// (PatientIdentityRemoved YES) and carry a non-empty PatientName,
    /// PatientID or PatientBirthDate: the path and the attribute names,
    /// never their values.
    #[arg(long)]
    phi_check: bool,
    /// As --phi-check, and exit 2 if any file may identify a patient or is
    /// a DICOM file whose header cannot be read (so cannot be checked).
    #[arg(long)]
    require_deidentified: bool,
    #[command(flatten)]
    select: super::args::SelectionArgs,
    #[command(flatten)]
    device: super::args::DeviceArgs,
}

/// `--profile` values (Data Box's share suffixes are accepted too).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProfileArg {
    /// Block blobs (`<account>_BlockBlob`).
    #[value(alias = "BlockBlob")]
    BlockBlob,
    /// Page blobs (`<account>_PageBlob`): sizes must be 512-byte aligned.
    #[value(alias = "PageBlob")]
    PageBlob,
    /// Azure Files (`<account>_AzFile`).
    #[value(alias = "AzFile")]
    AzureFiles,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::BlockBlob => Profile::BlockBlob,
            ProfileArg::PageBlob => Profile::PageBlob,
            ProfileArg::AzureFiles => Profile::AzureFiles,
        }
    }
}

/// Where `--dest` (with `--profile`) places files, and what it already
/// holds: a directory is asked name by name, a blob container is listed
/// (nothing, if it does not exist yet).
///
/// # Errors
/// A malformed URL, a plain directory without `--profile`, or a container
/// that cannot be listed.
fn placement(
    dest_arg: &std::path::Path,
    profile: Option<ProfileArg>,
    g: &Global,
) -> Result<(Placement, Option<Arc<dyn Occupied>>), Failure> {
    let target = dest::Target::parse(dest_arg).map_err(Failure::usage)?;
    let mut placement = Placement::for_destination(&target, profile.map(Profile::from))
        .ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{}: not a Data Box share (no path component named <account>_BlockBlob, \
             <account>_PageBlob or <account>_AzFile) and not a blob URL; pass --profile",
                dest_arg.display()
            ))
        })?;
    placement.rest |= g.databox_rest;
    let existing: Option<Arc<dyn Occupied>> = match target {
        dest::Target::Share(p) => Some(Arc::new(p)),
        // Without a credential the names are still linted; the report
        // says that existing blobs were not looked for.
        dest::Target::Blob(_) if !dest::blob::auth::is_configured(g.azure_auth) => None,
        dest::Target::Dicomweb(_) => None,
        dest::Target::Blob(url) => {
            let options = g.blob_options(dest::blob::Access::Read);
            // A container that does not exist yet holds nothing.
            let listed = Blob::open_if_exists(&url, &options)
                .and_then(|b| match b {
                    Some(b) => Names::list(&b),
                    None => Names::empty(url.to_string()),
                })
                .map_err(|e| {
                    Failure::usage(e).hint(
                        "the preflight lists the container to find names already taken; \
                         check the credential and that the endpoint answers",
                    )
                })?;
            Some(Arc::new(listed))
        }
    };
    Ok((placement, existing))
}

/// Writes hashes to the b3sum list and prints violations (and, when asked,
/// files that may identify a patient) as they come.
struct Sink {
    list: Option<std::io::BufWriter<std::fs::File>>,
    write_error: Option<std::io::Error>,
    json: bool,
    found: Vec<Violation>,
    phi: bool,
    phi_found: Vec<MayIdentify>,
}

/// A file that may identify a patient, for `--json`.
#[derive(serde::Serialize)]
struct MayIdentify {
    path: String,
    attributes: Vec<&'static str>,
}

impl ScanSink for Sink {
    fn hashed(&mut self, h: &Hashed) {
        if let Some(w) = &mut self.list
            && self.write_error.is_none()
            && let Err(e) = w.write_all(scan::b3sum_line(&h.blake3, &h.path).as_bytes())
        {
            self.write_error = Some(e);
        }
    }

    fn violation(&mut self, v: &Violation) {
        if self.json {
            self.found.push(v.clone());
        } else {
            println!("{}", violation_line(v));
        }
    }

    fn may_identify(&mut self, path: &str, privacy: &Privacy) {
        if !self.phi {
            return;
        }
        if self.json {
            self.phi_found.push(MayIdentify {
                path: path.to_owned(),
                attributes: privacy.identifying.clone(),
            });
        } else {
            println!("{}", phi_line(path, privacy));
        }
    }
}

/// One file that may identify a patient: the path and the attribute names.
pub fn phi_line(path: &str, privacy: &Privacy) -> String {
    format!(
        "PHI {path}: {} (not marked de-identified)",
        privacy.identifying.join(", ")
    )
}

/// One violation as a line: the rule, the path (or "destination"), what is
/// wrong.
pub fn violation_line(v: &Violation) -> String {
    let at = if v.path.is_empty() {
        "destination"
    } else {
        v.path.as_str()
    };
    format!("VIOLATION {}: {at}: {}", v.rule, v.detail)
}

/// `--json` output: the inventory, every violation and, with --phi-check
/// or --require-deidentified, every file that may identify a patient.
#[derive(serde::Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    inventory: &'a Inventory,
    violation_list: &'a [Violation],
    #[serde(skip_serializing_if = "Option::is_none")]
    phi_list: Option<&'a [MayIdentify]>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    if jobs == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--jobs must be at least 1")));
    }
    let target = args
        .dest
        .as_deref()
        .map(dest::Target::parse)
        .transpose()
        .map_err(Failure::usage)?;
    let (placement, existing, dicomweb) = match (&args.dest, target) {
        (_, Some(dest::Target::Dicomweb(url))) => {
            if args.profile.is_some() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--profile is a Data Box share's type; a DICOMweb destination's rules are chosen with --dicomweb-profile"
                )));
            }
            let profile = DicomProfile::for_destination(url.azure, g.dicomweb_profile);
            (None, None, Some(profile))
        }
        (Some(d), _) => {
            let (p, e) = placement(d, args.profile, g)?;
            (Some(p), e, None)
        }
        (None, _) => (None, None, None),
    };
    let list = match &args.b3sum {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("{}: cannot create", p.display()))
                .map_err(Failure::usage)?,
        )),
        None => None,
    };
    let opts = ScanOptions {
        source: args.source.clone(),
        hash: args.hash || list.is_some(),
        jobs,
        placement,
        existing,
        dicom: !args.no_dicom,
        dicomweb,
        selection: args.select.selection()?,
        device: args.device.device()?,
    };
    let phi = args.phi_check || args.require_deidentified;
    let mut sink = Sink {
        list,
        write_error: None,
        json: g.json,
        found: Vec::new(),
        phi,
        phi_found: Vec::new(),
    };
    let inv = scan::scan(&opts, &Renderer::new(g), &mut sink)
        .with_context(|| format!("source {}", args.source.display()))
        .map_err(Failure::usage)?;
    if let Some(w) = &mut sink.list
        && sink.write_error.is_none()
    {
        sink.write_error = w.flush().err();
    }
    if let (Some(e), Some(p)) = (sink.write_error, &args.b3sum) {
        return Err(Failure::usage(
            anyhow::Error::new(e).context(format!("{}: write failed", p.display())),
        ));
    }
    if g.json {
        // Headers are read in parallel: list them in path order.
        sink.phi_found.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        print_json(&Report {
            inventory: &inv,
            violation_list: &sink.found,
            phi_list: phi.then_some(&sink.phi_found[..]),
        });
    } else if !g.quiet {
        print_inventory(&inv);
    }
    if let Some(fit) = inv.device.as_ref().filter(|f| !f.fits()) {
        // With --json, the inventory (its `device`) is the one object.
        if g.json {
            return Ok(Code::Usage);
        }
        return Err(Failure::usage(anyhow::anyhow!("{}: {fit}", args.source.display())).hint(
            format!(
                "`custody split {} --device {} --out DIR` divides it into shards that each fit, keeping studies whole",
                args.source.display(),
                fit.device.kind
            ),
        ));
    }
    let violations = inv.violations();
    let refused = inv
        .dicom
        .as_ref()
        .map_or(0, |d| d.may_identify + d.unreadable);
    if args.require_deidentified && refused > 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--require-deidentified: {refused} file(s) may identify a patient or could not be \
             checked (listed above)"
        ))
        .hint("de-identify them, or leave them out of the source, before this tree goes to a test or lab environment"));
    }
    Ok(if violations > 0 {
        Code::Usage
    } else if inv.failed > 0 {
        Code::Incomplete
    } else {
        Code::Ok
    })
}

fn print_inventory(inv: &Inventory) {
    println!(
        "{}: {} files, {}; {} excluded, {} unreadable{}",
        inv.source.display(),
        inv.files,
        render::bytes(inv.bytes),
        inv.excluded,
        inv.failed,
        match inv.left_out {
            0 => String::new(),
            n => format!("; {n} left out by --include/--exclude/--files-from"),
        }
    );
    if let Some(fit) = &inv.device {
        println!("device: {fit}");
    }
    if inv.hashed_files > 0 {
        println!(
            "hashed: {} files, {} (BLAKE3)",
            inv.hashed_files,
            render::bytes(inv.hashed_bytes)
        );
    }
    println!("sizes:");
    for b in inv.histogram.iter().filter(|b| b.files > 0) {
        let range = match b.below {
            Some(1) => "empty".to_owned(),
            Some(below) => format!("{} – < {}", render::bytes(b.from), render::bytes(below)),
            None => format!("≥ {}", render::bytes(b.from)),
        };
        println!(
            "  {range:<24} {:>10} files {:>12}",
            b.files,
            render::bytes(b.bytes)
        );
    }
    if !inv.largest.is_empty() {
        println!("largest:");
        for n in &inv.largest {
            println!("  {:>12}  {}", render::bytes(n.size), n.path);
        }
    }
    if let Some(d) = &inv.deepest {
        println!(
            "deepest: {} components ({d}); longest path: {} bytes",
            inv.max_depth, inv.longest_path
        );
    }
    if let Some(d) = &inv.dicom {
        print_dicom(d);
    }
    if let Some(p) = &inv.dicomweb_preflight {
        print_dicomweb(p);
    }
    if let Some(p) = &inv.preflight {
        let into = match &p.placement.container {
            Some(c) => format!("container {c}"),
            None => "containers named by each first folder".to_owned(),
        };
        if !p.existing_checked {
            eprintln!(
                "note: no blob credential in the environment, so names already in the \
                 container were not looked for (`custody transfer` always looks)"
            );
        }
        if p.violations == 0 {
            println!("preflight ({}, {into}): no violations", p.placement.profile);
        } else {
            let rules: Vec<String> = p.by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
            println!(
                "preflight ({}, {into}): {} violations ({}); `custody transfer` refuses to start until they are fixed or skipped",
                p.placement.profile,
                p.violations,
                rules.join(", ")
            );
        }
    }
}

fn print_dicomweb(p: &custody::scan::DicomwebPreflight) {
    let whose = match p.profile {
        DicomProfile::Azure => "the Azure DICOM service's rules",
        DicomProfile::Generic => "a DICOMweb service's rules",
    };
    if p.violations == 0 {
        println!("preflight ({whose}): no violations");
    } else {
        let rules: Vec<String> = p.by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "preflight ({whose}): {} violations ({}); `custody transfer` refuses to start until they are fixed or skipped",
            p.violations,
            rules.join(", ")
        );
    }
}

fn print_dicom(d: &DicomInventory) {
    let modalities: Vec<String> = d
        .by_modality
        .iter()
        .map(|(m, n)| format!("{} {n}", if m.is_empty() { "(none)" } else { m }))
        .collect();
    println!(
        "dicom: {} instances in {} series of {} studies{}",
        d.instances,
        d.series,
        d.studies,
        if modalities.is_empty() {
            String::new()
        } else {
            format!("; modalities: {}", modalities.join(", "))
        }
    );
    println!(
        "de-identification: {} marked PatientIdentityRemoved YES, {} record a method, \
         {} may identify a patient{}",
        d.marked_deidentified,
        d.method_recorded,
        d.may_identify,
        if d.may_identify > 0 {
            " (--phi-check lists them)"
        } else {
            ""
        }
    );
    if d.duplicate_instances > 0 {
        println!(
            "duplicate instances: {} (the same SOPInstanceUID in more than one file)",
            d.duplicate_instances
        );
        for dup in &d.duplicates {
            println!(
                "  {} in {} (first in {})",
                dup.instance, dup.path, dup.first
            );
        }
    }
    if d.unreadable > 0 {
        println!(
            "DICOM headers not read: {} (carried as plain files)",
            d.unreadable
        );
        for u in &d.unreadable_list {
            println!("  {}: {}", u.path, u.reason);
        }
    }
}
