//! `custody scan`: inventory a source tree, optionally hashing every file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use custody::scan::{self, Inventory, ScanOptions};

use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_json};

/// Inventory a source tree before anything moves: files, bytes, a size
/// histogram, the largest files, the deepest and longest paths, and what
/// would not be carried (links, special files, names that are not UTF-8).
/// Reads no file contents unless --hash is given.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  custody scan /srv/pacs
  custody scan /srv/pacs --hash --b3sum pacs.b3     # then: cd /srv/pacs && b3sum --check pacs.b3

Exit codes: 0 scanned, 2 usage error, 3 some entries could not be read (named on stderr).")]
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
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    if jobs == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--jobs must be at least 1")));
    }
    let mut list = match &args.b3sum {
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
    };
    let mut write_error = None;
    let inv = scan::scan(&opts, &Renderer::new(g), |h| {
        if let Some(w) = &mut list
            && write_error.is_none()
            && let Err(e) = w.write_all(scan::b3sum_line(&h.blake3, &h.path).as_bytes())
        {
            write_error = Some(e);
        }
    })
    .with_context(|| format!("source {}", args.source.display()))
    .map_err(Failure::usage)?;
    if let Some(w) = &mut list
        && write_error.is_none()
    {
        write_error = w.flush().err();
    }
    if let (Some(e), Some(p)) = (write_error, &args.b3sum) {
        return Err(Failure::usage(
            anyhow::Error::new(e).context(format!("{}: write failed", p.display())),
        ));
    }
    if g.json {
        print_json(&inv);
    } else if !g.quiet {
        print_inventory(&inv);
    }
    Ok(if inv.failed > 0 {
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
}
