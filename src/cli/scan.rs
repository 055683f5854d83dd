//! `custody scan`: inventory a source tree, optionally hashing every file,
//! and (with `--dest`) the Data Box preflight.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use custody::databox::{Occupied, Placement, Profile, Violation};
use custody::dest;
use custody::dest::blob::{Blob, BlobOptions};
use custody::dest::names::Names;
use custody::scan::{self, Hashed, Inventory, ScanOptions, ScanSink};

use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_json};

/// Inventory a source tree before anything moves: files, bytes, a size
/// histogram, the largest files, the deepest and longest paths, and what
/// would not be carried (links, special files, names that are not UTF-8).
/// With --dest, also the Data Box preflight: every file that the
/// destination's rules would refuse or rename, with the rule (see
/// docs/databox.md). Reads no file contents unless --hash is given.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  custody scan /srv/pacs
  custody scan /srv/pacs --dest /mnt/databox/contoso_BlockBlob/pacs-2024
  custody scan /srv/pacs --dest /mnt/export --profile page-blob
  custody scan /srv/pacs --hash --b3sum pacs.b3     # then: cd /srv/pacs && b3sum --check pacs.b3

Exit codes: 0 scanned (no violations), 2 usage error or a Data Box rule broken (each named on
stdout), 3 some entries could not be read (named on stderr).")]
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
    #[arg(long, short = 'j', value_name = "N")]
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
    let placement =
        Placement::for_destination(&target, profile.map(Profile::from)).ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{}: not a Data Box share (no path component named <account>_BlockBlob, \
             <account>_PageBlob or <account>_AzFile) and not a blob URL; pass --profile",
                dest_arg.display()
            ))
        })?;
    let existing: Option<Arc<dyn Occupied>> = match target {
        dest::Target::Share(p) => Some(Arc::new(p)),
        // Without a credential the names are still linted; the report
        // says that existing blobs were not looked for.
        dest::Target::Blob(_) if !dest::blob::auth::is_set() => None,
        dest::Target::Blob(url) => {
            let options = BlobOptions {
                ca_file: g.ca_file.clone(),
                ..BlobOptions::default()
            };
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

/// Writes hashes to the b3sum list and prints violations as they come.
struct Sink {
    list: Option<std::io::BufWriter<std::fs::File>>,
    write_error: Option<std::io::Error>,
    json: bool,
    found: Vec<Violation>,
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

/// `--json` output: the inventory and every violation.
#[derive(serde::Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    inventory: &'a Inventory,
    violation_list: &'a [Violation],
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    if jobs == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--jobs must be at least 1")));
    }
    let (placement, existing) = match &args.dest {
        Some(d) => {
            let (p, e) = placement(d, args.profile, g)?;
            (Some(p), e)
        }
        None => (None, None),
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
    };
    let mut sink = Sink {
        list,
        write_error: None,
        json: g.json,
        found: Vec::new(),
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
        print_json(&Report {
            inventory: &inv,
            violation_list: &sink.found,
        });
    } else if !g.quiet {
        print_inventory(&inv);
    }
    let violations = inv.preflight.as_ref().map_or(0, |p| p.violations);
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
        "{}: {} files, {}; {} excluded, {} unreadable",
        inv.source.display(),
        inv.files,
        render::bytes(inv.bytes),
        inv.excluded,
        inv.failed
    );
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
