//! `custody verify`: re-read landed data and compare it with a manifest.

use std::path::{Path, PathBuf};

use custody::manifest::{self, SignedFile};
use custody::verify::{DiscrepancyClass, VerifyReport};

use super::args::TrustArgs;
use super::load::{manifest_failure, open_manifest_file, walk_chain};
use super::metrics::{self, Metrics, WatchedRun};
use super::render::{self, Renderer};
use super::{Code, Failure, Global, Outcome, print_json};

/// Re-read landed data and compare it with a signed manifest.
///
/// Check a manifest's signature, then re-read every landed file under DEST
/// and report each missing, extra, resized or changed file.
///
/// The signature is checked first, against the key(s) you trust. Then every
/// file under DEST is re-read and re-hashed; files present under DEST but
/// absent from the manifest are reported as extra, so files added after
/// sealing are caught. With --signing-key the result is recorded in the
/// ledger as a signed `verified` event.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody verify manifests/20261123T214500Z-3fa9c2d1.json /mnt/databox/acme_BlockBlob/pacs \\
      --allowed-signers allowed_signers

A whole nightly job (every manifest of its chain, as one closed set):
  custody verify --job pacs-nightly /mnt/databox/acme_BlockBlob/pacs --allowed-signers allowed_signers

Exit codes: 0 everything matches, 1 discrepancy, bad signature or broken chain, 2 usage error.")]
pub struct Args {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`); with
    /// --chain, the job's newest. Left out with --job.
    #[arg(value_name = "MANIFEST", required_unless_present_any = ["job", "set"])]
    manifest: Option<PathBuf>,
    /// Where it landed: a directory, or a blob container URL (credentials
    /// from the environment, as for `transfer`).
    #[arg(value_name = "DEST")]
    destination: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Verify a whole job: the union of its manifests (later entries
    /// superseding earlier ones), from its newest in the ledger back to its
    /// first, found in --manifest-dir and checked as `audit --chain` does.
    /// Then only DEST is given.
    #[arg(long, value_name = "NAME", conflicts_with = "chain")]
    job: Option<String>,
    /// MANIFEST is a job's newest: verify against the union of its chain,
    /// finding each earlier manifest in DIR.
    #[arg(long, value_name = "DIR")]
    chain: Option<PathBuf>,
    /// Verify a set (`custody seal-set`): the union of its shards'
    /// manifests as one closed set, against where every device finally
    /// landed (then only DEST is given). Each manifest is found beside
    /// SET.json (or in its manifests/) or in --manifest-dir and must be the
    /// one the set binds. Discrepancies are reported per shard and study.
    #[arg(long, value_name = "SET.json", conflicts_with_all = ["job", "chain"])]
    set: Option<PathBuf>,
    /// Jobs [default: number of cores]; four files per job are read at
    /// once, as re-reads mostly wait on the device.
    #[arg(long, short = 'j', value_name = "N", env = "CUSTODY_JOBS")]
    jobs: Option<usize>,
    /// Record the result in the ledger as an event signed with this key.
    #[arg(long, value_name = "KEY")]
    signing_key: Option<PathBuf>,
    /// Also decrypt every encrypted object and prove its plaintext hash,
    /// in the same read (without it, the stored bytes are proven).
    #[arg(long, value_name = "FILE")]
    decrypt_key: Option<PathBuf>,
    /// Write the verify's metrics to this file in Prometheus' text format
    /// (node_exporter's textfile collector), as `transfer` does
    /// (docs/operations.md, "Monitoring"). Not with --set.
    #[arg(long, value_name = "PATH", env = "CUSTODY_METRICS_FILE")]
    metrics_file: Option<PathBuf>,
    /// Also report each DICOM study's completeness: its instances in the
    /// manifest, landed, and verified (studies come from the manifest's
    /// `dicom` objects, version 4).
    #[arg(long)]
    by_study: bool,
}

/// What `verify` checks against: one manifest, or a job's chain.
enum Against {
    One(PathBuf),
    Chain(PathBuf, PathBuf),
}

impl Args {
    /// The manifest (or newest of a chain) and the destination, from the
    /// positional arguments and --job / --chain.
    fn against(&self, g: &Global) -> Result<(Against, PathBuf), Failure> {
        let usage = |m: &str| Failure::usage(anyhow::anyhow!("{m}"));
        match (&self.job, &self.manifest, &self.destination) {
            (Some(job), Some(dest), None) => {
                let ledger =
                    custody::ledger::Ledger::open_existing(&g.ledger).map_err(Failure::usage)?;
                let id = ledger
                    .job_head(job)
                    .map_err(Failure::usage)?
                    .ok_or_else(|| {
                        usage(&format!(
                            "ledger {}: job {job:?} has no sealed run",
                            g.ledger.display()
                        ))
                    })?;
                let newest = g.manifest_dir.join(format!("{id}.json"));
                Ok((Against::Chain(newest, g.manifest_dir.clone()), dest.clone()))
            }
            (Some(_), _, _) => Err(usage(
                "with --job, give only DEST (the job names its manifests)",
            )),
            (None, Some(m), Some(dest)) => Ok((
                match &self.chain {
                    Some(dir) => Against::Chain(m.clone(), dir.clone()),
                    None => Against::One(m.clone()),
                },
                dest.clone(),
            )),
            (None, _, _) => Err(usage("give MANIFEST and DEST (or --job NAME and DEST)")),
        }
    }
}

/// What reading the landed data takes: the destination opened, the
/// decryption key, the number of readers.
type Reading = (
    Box<dyn custody::dest::Destination>,
    Option<custody::crypt::EncryptionKey>,
    usize,
);

impl Args {
    /// Opens `destination` for reading, with the key and workers asked for.
    fn reading(&self, destination: &Path, g: &Global) -> Result<Reading, Failure> {
        let decrypt = self
            .decrypt_key
            .as_deref()
            .map(super::load_encryption_key)
            .transpose()?;
        let target = custody::dest::Target::parse(destination).map_err(Failure::usage)?;
        let options = g.blob_options(custody::dest::blob::Access::Read);
        let dest = target.open_existing(&options).map_err(Failure::usage)?;
        let jobs = self
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
            .max(1);
        Ok((dest, decrypt, jobs))
    }
}

/// Audits one manifest before its data is read: a manifest that is not
/// sound is not verified against.
fn audited(path: &Path, trust: &TrustArgs) -> Result<SignedFile, Failure> {
    let signed = open_manifest_file(path, trust)?;
    let findings = manifest::audit_file(&signed).map_err(|e| manifest_failure(path, e))?;
    if !findings.is_empty() {
        for f in &findings {
            eprintln!("custody: {}: {}: {}", path.display(), f.at, f.problem);
        }
        return Err(Failure::integrity(anyhow::anyhow!(
            "{}: manifest is internally inconsistent ({} problem(s)); not verifying data against it",
            path.display(),
            findings.len()
        )));
    }
    Ok(signed)
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    if let Some(set) = &args.set {
        return verify_set(args, set, g);
    }
    let launch = metrics::Launch {
        path: args.metrics_file.as_deref(),
        command: "verify",
        // With --job, the one positional argument is DEST.
        destination: args
            .destination
            .as_deref()
            .or(args.job.as_ref().and(args.manifest.as_deref())),
        databox: false,
        job: args.job.as_deref(),
    };
    metrics::run(&launch, g, |progress, m| verify(args, g, m, progress))
}

fn verify(
    args: &Args,
    g: &Global,
    metrics: Option<&Metrics>,
    progress: &dyn custody::progress::Progress,
) -> Outcome {
    let (against, destination) = args.against(g)?;
    let (signed, chain) = match &against {
        Against::One(path) => (audited(path, &args.trust)?, None),
        Against::Chain(newest, dir) => {
            let report = walk_chain(newest, dir, &args.trust)?;
            if !report.ok() {
                for p in &report.problems {
                    eprintln!("custody: {}: {}", p.at, p.problem);
                }
                return Err(Failure::integrity(anyhow::anyhow!(
                    "{}: the job's chain is broken ({} problem(s)); not verifying data against it",
                    newest.display(),
                    report.problems.len()
                ))
                .hint(format!(
                    "`custody audit {} --chain {}` shows each link",
                    newest.display(),
                    dir.display()
                )));
            }
            (open_manifest_file(newest, &args.trust)?, Some(report))
        }
    };
    let key = args
        .signing_key
        .as_deref()
        .map(super::load_signing_key)
        .transpose()?;
    if let Some(m) = metrics.filter(|_| args.job.is_none()) {
        m.watch(
            WatchedRun::Manifest(signed.head.id.clone()),
            signed.head.job.as_ref().map(|j| j.name.clone()),
        );
    }
    let (share, decrypt, jobs) = args.reading(&destination, g)?;
    let opts = custody::verify::VerifyOptions {
        jobs,
        key: decrypt.as_ref(),
        by_study: args.by_study,
        early: None,
    };
    let report = match &chain {
        None => custody::verify::verify(&signed, share.as_ref(), &opts, progress),
        Some(c) => {
            let trust = args.trust.load()?;
            custody::verify::verify_chain(c.reopen(&trust), share.as_ref(), &opts, progress)
        }
    }
    .map_err(Failure::usage)?;
    if let Some(key) = &key {
        let mut ledger = custody::ledger::Ledger::open(&g.ledger).map_err(Failure::usage)?;
        custody::verify::record(&mut ledger, &signed.head, &report, key).map_err(Failure::usage)?;
    }
    if g.json {
        let mut out = serde_json::json!({
            "manifest": signed.head.id,
            "signer": signed.signer,
            "result": if report.ok() { "pass" } else { "fail" },
            "report": report,
        });
        if let Some(c) = &chain {
            out["chain"] = serde_json::json!({ "job": c.job, "links": c.links });
        }
        print_json(&out);
    } else if !g.quiet {
        if let Some(c) = &chain {
            println!(
                "job {:?}: chain of {} manifest(s) intact, verifying their union",
                c.job,
                c.links.len()
            );
        }
        println!(
            "manifest {}: signature OK ({}{})",
            signed.head.id,
            signed.signer.fingerprint,
            signed
                .signer
                .principal
                .as_deref()
                .map(|p| format!(", {p}"))
                .unwrap_or_default()
        );
        print_report(&report);
    } else {
        print_discrepancies(&report);
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

fn print_discrepancies(r: &VerifyReport) {
    for d in &r.discrepancies {
        let label = match d.class {
            DiscrepancyClass::Missing => "MISSING",
            DiscrepancyClass::Extra => "EXTRA",
            DiscrepancyClass::Size => "SIZE",
            DiscrepancyClass::Hash => "CHANGED",
            DiscrepancyClass::Unreadable => "UNREADABLE",
        };
        println!("{label:<10} {}: {}", d.path, d.detail);
    }
}

/// Prints a verify report: one line per discrepancy, each study's
/// completeness (with --by-study), then the counts.
pub fn print_report(r: &VerifyReport) {
    print_discrepancies(r);
    print_totals(r);
}

/// Each study's completeness (with --by-study), then the counts.
fn print_totals(r: &VerifyReport) {
    if let Some(studies) = &r.by_study {
        for s in studies {
            println!(
                "STUDY {}: {} instances, {} landed, {} verified: {}",
                s.study,
                s.instances,
                s.landed,
                s.verified,
                if s.complete() {
                    "complete"
                } else {
                    "INCOMPLETE"
                }
            );
        }
        let complete = studies.iter().filter(|s| s.complete()).count();
        println!(
            "studies: {complete} complete, {} incomplete",
            studies.len() - complete
        );
    }
    let c = &r.counts;
    println!(
        "{}: {} of {} files match{} ({} re-read from {}); {} missing, {} extra, {} size, {} changed, {} unreadable",
        if r.ok() { "verified" } else { "VERIFY FAILED" },
        r.files_verified,
        r.files_expected,
        if r.plaintext_verified > 0 {
            format!(", {} decrypted and plaintext proven", r.plaintext_verified)
        } else {
            String::new()
        },
        render::bytes(r.bytes_read),
        r.destination,
        c.missing,
        c.extra,
        c.size,
        c.hash,
        c.unreadable,
    );
}

/// `verify --set SET.json DEST`.
fn verify_set(args: &Args, set: &Path, g: &Global) -> Outcome {
    let destination = match (&args.manifest, &args.destination) {
        (Some(d), None) => d.clone(),
        _ => {
            return Err(Failure::usage(anyhow::anyhow!(
                "with --set, give only DEST (the set names its manifests)"
            )));
        }
    };
    let trust = args.trust.load()?;
    let (dest, decrypt, jobs) = args.reading(&destination, g)?;
    let opts = custody::verify::VerifyOptions {
        jobs,
        key: decrypt.as_ref(),
        by_study: true,
        early: None,
    };
    let beside = set
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dirs = [beside, g.manifest_dir.as_path()];
    let v = custody::set::verify_set(set, &dirs, dest.as_ref(), &trust, &opts, &Renderer::new(g))
        .map_err(|e| match e.is_integrity() {
        true => Failure::integrity(e),
        false => Failure::usage(e),
    })?;
    if g.json {
        print_json(&serde_json::json!({
            "set": v.set,
            "result": if v.ok() { "pass" } else { "fail" },
            "by_shard": v.by_shard,
            "discrepancies": v.placed,
            "report": v.report,
        }));
    } else if !g.quiet {
        for p in &v.placed {
            let d = &p.discrepancy;
            println!(
                "{:<10} {} ({}; {}{})",
                format!("{:?}", d.class).to_uppercase(),
                d.path,
                d.detail,
                match p.shard {
                    Some(n) => format!("shard {n}"),
                    None => "in no shard".into(),
                },
                p.study
                    .as_ref()
                    .map(|s| format!(", study {s}"))
                    .unwrap_or_default()
            );
        }
        for s in &v.by_shard {
            let c = &s.counts;
            println!(
                "shard {:>3}  manifest {}: {} missing, {} size, {} changed, {} unreadable",
                s.number, s.manifest, c.missing, c.size, c.hash, c.unreadable
            );
        }
        println!("set {}:", v.set);
        print_totals(&v.report);
    } else {
        print_discrepancies(&v.report);
    }
    Ok(if v.ok() { Code::Ok } else { Code::Integrity })
}
