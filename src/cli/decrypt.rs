//! `custody decrypt`: restore the plaintext tree from encrypted objects.

use std::path::PathBuf;

use super::args::TrustArgs;
use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_result};

/// Decrypt encrypted objects back into a plaintext tree.
///
/// Decrypt every *.custody-enc object under SRC into DEST (names without
/// the suffix), checking every chunk's tag.
///
/// Plaintext is written to a temporary name and renamed only after the
/// final chunk authenticated, so a tampered or truncated object leaves
/// nothing under its final name; it is named in the error and the exit code
/// is 1. With --manifest, each file's plaintext must also match its size and
/// BLAKE3, and the set is closed (objects missing from SRC or absent from the
/// manifest are reported); give --allowed-signers or --public-key to check
/// the manifest's signature first.
///
/// Nothing is written through a symbolic link under DEST, and a file
/// already there under a plaintext's name is left as it is (that object
/// fails, exit 1) unless --overwrite.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody decrypt /mnt/restore/pacs-archive /srv/pacs-restored --decrypt-key ~/.custody/archive.key \\
      --manifest manifests/<id>.json --allowed-signers allowed_signers

Exit codes: 0 every object restored, 1 an object failed to decrypt or match,
2 usage error (wrong, unreadable or group-readable key; missing directories).")]
pub struct Args {
    /// The tree of encrypted objects (e.g. the landed copy).
    #[arg(value_name = "SRC")]
    source: PathBuf,
    /// Where to write the plaintext tree.
    #[arg(value_name = "DEST")]
    destination: PathBuf,
    /// The encryption key file.
    #[arg(long, value_name = "FILE")]
    decrypt_key: PathBuf,
    /// The manifest of the transfer: check each plaintext against it.
    #[arg(long, value_name = "MANIFEST")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    trust: OptionalTrust,
    /// Replace files already in DEST under a plaintext's name (without it,
    /// each such object fails, named, and the file is left as it is).
    #[arg(long)]
    overwrite: bool,
    /// Files decrypted in parallel [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", env = "CUSTODY_JOBS")]
    jobs: Option<usize>,
}

/// Like [`TrustArgs`], but optional.
#[derive(Debug, clap::Args)]
pub struct OptionalTrust {
    /// Check the manifest's signature against this allowed_signers file.
    #[arg(
        long,
        value_name = "FILE",
        requires = "manifest",
        conflicts_with = "public_key"
    )]
    allowed_signers: Option<PathBuf>,
    /// Check the manifest's signature against this public key.
    #[arg(long, value_name = "FILE", requires = "manifest")]
    public_key: Option<PathBuf>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    let key = super::load_encryption_key(&args.decrypt_key)?;
    let manifest = match &args.manifest {
        None => None,
        Some(path) if args.trust.allowed_signers.is_some() || args.trust.public_key.is_some() => {
            let trust = TrustArgs {
                allowed_signers: args.trust.allowed_signers.clone(),
                public_key: args.trust.public_key.clone(),
            };
            Some(super::load::open_manifest(path, &trust)?.manifest)
        }
        Some(path) => {
            eprintln!(
                "custody: warning: {}: signature not checked (give --allowed-signers or --public-key)",
                path.display()
            );
            let bytes = std::fs::read(path)
                .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", path.display())))?;
            Some(custody::manifest::Manifest::parse(&bytes).map_err(|r| {
                Failure::integrity(anyhow::anyhow!(
                    "{}: not a valid custody manifest: {r}",
                    path.display()
                ))
            })?)
        }
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let report = custody::restore::restore(
        &args.source,
        &args.destination,
        &key,
        manifest.as_ref(),
        jobs,
        args.overwrite,
        &Renderer::new(g),
    )
    // Every whole-run failure (unusable directories, a key or manifest that
    // does not fit) is a configuration problem: nothing was restored.
    .map_err(Failure::usage)?;
    if g.json {
        print_result(report.ok(), &report);
    } else if !g.quiet {
        for s in &report.skipped {
            println!("SKIPPED    {s}: not an encrypted custody object");
        }
        println!(
            "{}: {} files restored ({}){}; {} problem(s)",
            if report.ok() {
                "decrypted"
            } else {
                "DECRYPT FAILED"
            },
            report.restored,
            render::bytes(report.bytes),
            if manifest.is_some() {
                format!(", {} matched the manifest", report.matched_manifest)
            } else {
                String::new()
            },
            report.problems.len()
        );
    }
    if report.only_wrong_key() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: key {} does not open these objects (they were encrypted with another key)",
            args.decrypt_key.display(),
            key.id_hex()
        ))
        .hint("pass the key file whose id the objects' headers and the manifest name"));
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}
