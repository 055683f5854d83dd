//! `custody audit`: check a manifest's signature and consistency, no data.

use std::path::PathBuf;

use super::args::TrustArgs;
use super::load::{manifest_failure, open_manifest_file};
use super::{Code, Global, Outcome, print_json, render};

/// Check a manifest's signature and consistency, without the data.
///
/// Check a manifest's signature and internal consistency without touching
/// the data: canonical form, totals, duplicate or unordered paths,
/// well-formed hashes, paths and times, and that the signing key is the one
/// the manifest names.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody audit manifests/20261123T214500Z-3fa9c2d1.json --allowed-signers allowed_signers

The same signature check with stock OpenSSH:
  ssh-keygen -Y verify -f allowed_signers -I <identity> -n custody-manifest \\
      -s <id>.json.sig < <id>.json

A job's chain of nightly manifests, back to its first run:
  custody audit manifests/<newest>.json --chain manifests --allowed-signers allowed_signers

A set (custody seal-set): the split, its lists and every shard's manifest gathered in DIR:
  custody audit pacs-2026.set.json --chain split-2026 --allowed-signers allowed_signers

Exit codes: 0 sound, 1 bad signature, inconsistency or broken chain, 2 usage error.")]
pub struct Args {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// MANIFEST is a job's newest: walk its chain back to the job's first
    /// run, finding each previous manifest (<id>.json + .sig) in DIR, and
    /// report any link that is missing, altered, unsigned or out of
    /// sequence. For a set (MANIFEST is a SET.json), DIR holds the split
    /// (split.json and its lists) and each shard's manifest (<id>.json +
    /// .sig, or under DIR/manifests) [default: the set's directory].
    #[arg(long, value_name = "DIR")]
    chain: Option<PathBuf>,
}

pub fn run(args: &Args, g: &Global) -> Outcome {
    if is_set(&args.manifest) {
        return set(args, g);
    }
    if let Some(dir) = &args.chain {
        return chain(args, dir, g);
    }
    let signed = open_manifest_file(&args.manifest, &args.trust)?;
    let findings =
        custody::manifest::audit_file(&signed).map_err(|e| manifest_failure(&args.manifest, e))?;
    let m = &signed.head;
    if g.json {
        print_json(&serde_json::json!({
            "manifest": m.id,
            "signer": signed.signer,
            "operator": m.operator,
            "totals": m.totals,
            "job": m.job,
            "source_changes": m.source_changes,
            "result": if findings.is_empty() { "pass" } else { "fail" },
            "findings": findings,
        }));
    } else {
        for f in &findings {
            println!("PROBLEM    {}: {}", f.at, f.problem);
        }
        for c in m.source_changes.iter().flatten() {
            println!(
                "SOURCE     {}: {} at source since it landed (manifest {}); {}",
                c.path, c.change, c.landed_in, c.action
            );
        }
        if let Some(job) = m.job.as_ref().filter(|_| !g.quiet) {
            println!(
                "job {:?} run {}{}",
                job.name,
                job.run,
                match &job.previous {
                    Some(l) => format!(", after manifest {} (sha256 {})", l.id, l.sha256),
                    None => " (its first)".to_owned(),
                }
            );
        }
        if !g.quiet {
            println!(
                "manifest {}: signature OK ({}, {}); {} files, {}; sealed {} on {} by {}",
                m.id,
                signed.signer.fingerprint,
                m.operator.identity,
                m.totals.files,
                render::bytes(m.totals.bytes),
                m.created,
                m.host,
                m.operator.identity,
            );
            println!(
                "{}",
                if findings.is_empty() {
                    "audit passed".to_owned()
                } else {
                    format!("AUDIT FAILED: {} problem(s)", findings.len())
                }
            );
        }
    }
    Ok(if findings.is_empty() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

/// Walks and prints a job's chain (`--chain DIR`).
fn chain(args: &Args, dir: &std::path::Path, g: &Global) -> Outcome {
    let report = super::load::walk_chain(&args.manifest, dir, &args.trust)?;
    if g.json {
        print_json(&serde_json::json!({
            "manifest": report.links.last().map(|l| &l.id),
            "job": report.job,
            "result": if report.ok() { "pass" } else { "fail" },
            "links": report.links,
            "problems": report.problems,
        }));
    } else {
        for p in &report.problems {
            println!("PROBLEM    {}: {}", p.at, p.problem);
        }
        if !g.quiet {
            for l in &report.links {
                println!(
                    "run {:>4}  {}  {} files, {}",
                    l.job_run,
                    l.id,
                    l.files,
                    render::bytes(l.bytes)
                );
            }
            println!(
                "{}",
                if report.ok() {
                    format!(
                        "chain intact: job {:?}, {} manifest(s), every link signed and matching, back to run 1",
                        report.job,
                        report.links.len()
                    )
                } else {
                    format!("CHAIN BROKEN: {} problem(s)", report.problems.len())
                }
            );
        }
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

/// Whether `path` holds a set (`custody seal-set`) rather than a manifest.
fn is_set(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
        .is_ok_and(|_| custody::manifest::set::is_set(&head))
}

/// Audits a set: the split, every shard's list and manifest, the union.
fn set(args: &Args, g: &Global) -> Outcome {
    let trust = args.trust.load()?;
    let dir = match &args.chain {
        Some(d) => d.clone(),
        None => args
            .manifest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf(),
    };
    let report = custody::set::audit(&args.manifest, &dir, &trust).map_err(|e| {
        if e.is_integrity() {
            super::Failure::integrity(e)
        } else {
            super::Failure::usage(e)
        }
    })?;
    if g.json {
        print_json(&serde_json::json!({
            "set": report.set,
            "split": report.split,
            "signer": report.signer,
            "result": if report.ok() { "pass" } else { "fail" },
            "shards": report.shards,
            "problems": report.problems,
        }));
    } else {
        for p in &report.problems {
            println!("PROBLEM    set: {p}");
        }
        for s in &report.shards {
            for p in &s.problems {
                println!("PROBLEM    shard {}: {p}", s.number);
            }
        }
        if !g.quiet {
            for s in &report.shards {
                println!(
                    "shard {:>3}  manifest {}  {} files  signed by {}",
                    s.number,
                    s.manifest.as_deref().unwrap_or("(none)"),
                    s.files,
                    s.signer
                        .as_ref()
                        .map(|x| match &x.principal {
                            Some(p) => format!("{} ({p})", x.fingerprint),
                            None => x.fingerprint.clone(),
                        })
                        .unwrap_or_else(|| "-".into())
                );
            }
            println!(
                "{}",
                if report.ok() {
                    format!(
                        "set {} intact: split {}, {} shard(s), each manifest signed and covering exactly its list, the lists disjoint",
                        report.set,
                        report.split,
                        report.shards.len()
                    )
                } else {
                    "SET AUDIT FAILED".to_owned()
                }
            );
        }
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}
