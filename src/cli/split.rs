//! `custody split` and `custody seal-set`: a source larger than one device,
//! divided into shards that each fit one, and the shards' manifests bound
//! back into one signed set (docs/split.md).

use std::path::PathBuf;

use custody::split::{SplitOptions, SplitSummary};

use super::args::{DeviceArgs, SelectionArgs, TrustArgs};
use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_json};

/// Divide a source into shards that each fit one device.
///
/// Divide SRC into the fewest shards that each fit one device of --device
/// (with --headroom left free), keeping every DICOM study whole (by the
/// StudyInstanceUID in its headers) and every other file with its
/// top-level folder. Writes DIR/shard-01.list, DIR/shard-02.list, … (one
/// relative path a line, in component order) and DIR/split.json, signed
/// like a manifest: the source, the device and its limits, and per shard
/// its files, bytes, studies and the BLAKE3 of its list. The same tree
/// gives the same lists. A study larger than one device is refused, named.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody split /srv/pacs --device databox --out /srv/custody/split-2026
  # on each transfer host, one shard each:
  custody transfer /srv/pacs /mnt/databox/acme_BlockBlob/pacs --shard /srv/custody/split-2026/shard-02.list

Exit codes: 0 written, 2 usage error, unreadable source, or a study larger than one device
(nothing written).")]
pub struct Args {
    /// The source tree.
    #[arg(value_name = "SRC")]
    source: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// The directory the lists and split.json are written to (made if
    /// missing; one that already holds a split is refused).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Share of each device's bytes left free, in percent.
    #[arg(long, value_name = "PCT", default_value_t = custody::databox::device::DEFAULT_HEADROOM_PERCENT,
          value_parser = clap::value_parser!(u64).range(0..=90))]
    headroom: u64,
    #[command(flatten)]
    select: SelectionArgs,
    /// The operator's OpenSSH Ed25519 private key, which signs split.json.
    #[arg(long, value_name = "KEY", env = "CUSTODY_SIGNING_KEY")]
    signing_key: PathBuf,
    /// Headers read in parallel [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", env = "CUSTODY_JOBS")]
    jobs: Option<usize>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let device = args.device.device()?.ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "--device KIND is required: the device each shard must fit"
        ))
    })?;
    let key = super::load_signing_key(&args.signing_key)?;
    let opts = SplitOptions {
        source: args.source.clone(),
        device,
        headroom_percent: args.headroom,
        selection: args.select.selection()?,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
            .max(1),
    };
    let summary =
        custody::split::split(&opts, &args.out, &key, &Renderer::new(g)).map_err(|e| {
            Failure::usage(e).hint("nothing was written; fix the above and run it again")
        })?;
    if g.json {
        print_json(&summary);
    } else if !g.quiet {
        print_summary(&summary);
    }
    Ok(Code::Ok)
}

fn print_summary(s: &SplitSummary) {
    println!(
        "split {}: {} files, {} in {} shard(s) of one {} ({} each, {}% headroom; {} files{})",
        s.id,
        s.totals.files,
        render::bytes(s.totals.bytes),
        s.shards.len(),
        s.device.kind,
        render::bytes(s.device.shard_bytes),
        s.device.headroom_percent,
        s.device.files,
        s.device
            .containers
            .map(|c| format!(", {c} containers"))
            .unwrap_or_default(),
    );
    for sh in &s.shards {
        println!(
            "  {}  {:>10} files {:>12}  {:>6} studies  {:>4} folders  blake3 {}",
            sh.list,
            sh.files,
            render::bytes(sh.bytes),
            sh.studies,
            sh.containers,
            &sh.blake3[..16]
        );
    }
    println!(
        "{} (at least {} device(s) by bytes, files and folders alone){}",
        if s.fewest {
            "the fewest shards possible"
        } else {
            "shards found by first-fit decreasing"
        },
        s.totals.lower_bound,
        match (s.excluded, s.left_out) {
            (0, 0) => String::new(),
            (e, l) => format!(
                "; {e} excluded (links, special files, bad names), {l} left out by the filters"
            ),
        }
    );
    println!("  {}", s.split.display());
    println!("  {}", s.signature.display());
}

/// Bind a split and each shard's sealed manifest into one signed set.
///
/// Bind SPLIT (a split.json, its lists beside it) and one sealed manifest
/// per shard into SET.json (+ .sig), signed: the split and each manifest
/// by id, SHA-256, BLAKE3 and signer. Each manifest must be signed by a
/// trusted key (several operators may sign, each in allowed_signers), name
/// this split and its shard, and carry exactly the files of its list.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody seal-set split-2026/split.json host1/manifests/A.json host2/manifests/B.json \\
      host3/manifests/C.json --out pacs-2026.set.json --allowed-signers allowed_signers

Exit codes: 0 sealed, 1 a manifest that is not the split's, not signed, or not covering its
list exactly, or a shard without a manifest, 2 usage error.")]
pub struct SealSetArgs {
    /// The split (DIR/split.json).
    #[arg(value_name = "SPLIT")]
    split: PathBuf,
    /// Each shard's sealed manifest (<id>.json, with its .sig).
    #[arg(value_name = "MANIFEST", required = true)]
    manifests: Vec<PathBuf>,
    /// Where to write the set (its signature goes beside it, + .sig).
    #[arg(long, value_name = "SET.json")]
    out: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// The operator's OpenSSH Ed25519 private key, which signs the set.
    #[arg(long, value_name = "KEY", env = "CUSTODY_SIGNING_KEY")]
    signing_key: PathBuf,
}

pub fn seal_set(args: &SealSetArgs, g: &Global) -> Outcome {
    let key = super::load_signing_key(&args.signing_key)?;
    let trust = args.trust.load()?;
    let sealed = custody::set::seal(&args.split, &args.manifests, &trust, &key, &args.out)
        .map_err(|e| {
            if e.is_integrity() {
                Failure::integrity(e).hint("nothing was written")
            } else {
                Failure::usage(e).hint("nothing was written")
            }
        })?;
    if g.json {
        print_json(&sealed);
    } else if !g.quiet {
        println!(
            "sealed set {}: {} shard manifest(s)",
            sealed.id, sealed.shards
        );
        println!("  {}", sealed.set.display());
        println!("  {}", sealed.signature.display());
    }
    Ok(Code::Ok)
}
