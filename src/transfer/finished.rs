//! The same transfer run again after its run sealed: finished work is not
//! redone (`docs/ledger.md`, "Runs, attempts, resume and incomplete runs").
//!
//! - The sealed run's verify never completed (killed, rebooted, or sealed
//!   with `--no-verify`), or found the landed copy wrong: it is done now
//!   and recorded; nothing is copied.
//! - It was verified and the source holds nothing new, changed or deleted
//!   (a metadata walk, no file read): nothing is copied or sealed.
//! - Otherwise the transfer goes on as the next run of an implicit job of
//!   its own (named after the source and destination): only what is new
//!   moves, and its delta manifest links to the sealed one, which becomes
//!   the job's first run.
//!
//! A named job (`--job`) run again after its latest run sealed does that
//! run's pending verify; else its next run, as before (its own walk finds
//! what is new, so a nightly job never walks twice).
//!
//! `--full` (`TransferOptions::full`) copies everything again as a new
//! one-off run instead.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::job::{JobOptions, OnSourceChange};
use super::scope::Scope;
use super::{Sealed, Status, TransferError, TransferOptions, TransferSummary};
use crate::dest::Destination;
use crate::ledger::{JobState, Ledger, LedgerError, RunRef, SealedRun};
use crate::manifest::checkpoint;
use crate::manifest::{self, ManifestError};
use crate::source::SourceEntry;

/// What a rerun after the seal found, in a transfer's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    /// The sealed manifest that covers the source.
    pub manifest: String,
    /// When that manifest's latest verify completed (before this run).
    pub verified_at: Option<String>,
    /// Whether this run did the verify that had not completed.
    pub verified_now: bool,
}

/// What to do with a transfer, given the ledger.
#[derive(Debug)]
pub(super) enum Rerun {
    /// What the options say (a first run, a resume, a named job, `--full`).
    AsAsked,
    /// The next run of the implicit job (resumed, when open).
    Implicit(JobOptions),
    /// A sealed run whose verify never completed, or failed: verify it.
    Verify(SealedRun),
    /// A sealed and verified run, and nothing new at the source.
    NothingNew(SealedRun),
}

/// The implicit job of a transfer without `--job` from `source` to
/// `destination` whose first run is the sealed one-off run `first`:
/// `auto-`, 16 hex digits of the pair's BLAKE3, `-`, the run's number. A
/// later `--full` run starts a chain of its own.
pub fn implicit_job(source: &str, destination: &str, first: u64) -> String {
    format!("{}{first}", implicit_prefix(source, destination))
}

/// What every implicit job of `source` → `destination` is named with.
fn implicit_prefix(source: &str, destination: &str) -> String {
    let mut b = Vec::new();
    crate::digest::frame(&mut b, source.as_bytes());
    crate::digest::frame(&mut b, destination.as_bytes());
    format!("auto-{}-", &blake3::hash(&b).to_hex()[..16])
}

/// Decides what a transfer does, given the latest run of its source and
/// destination (with `--job`, of its job).
pub(super) fn rerun(
    ledger: &mut Ledger,
    opts: &TransferOptions,
    scope: &Scope,
    source: &str,
    destination: &str,
) -> Result<Rerun, TransferError> {
    if opts.full {
        return Ok(Rerun::AsAsked);
    }
    let selection = scope.key.as_deref();
    if let Some(job) = &opts.job {
        return named(ledger, opts, job, source, destination, selection);
    }
    let Some(latest) = ledger.latest_run(source, destination, selection)? else {
        return Ok(Rerun::AsAsked);
    };
    let (name, in_implicit) = match ledger.run_job(latest)? {
        Some((j, _)) if j.starts_with(&implicit_prefix(source, destination)) => (j, true),
        // A named job's run into the same place is that job's business.
        Some(_) => return Ok(Rerun::AsAsked),
        None => (implicit_job(source, destination, latest), false),
    };
    let job = JobOptions {
        name: name.clone(),
        on_source_change: OnSourceChange::default(),
    };
    let Some(sealed) = ledger.sealed_run(latest)? else {
        // Open: resumed as what it is.
        return Ok(match in_implicit {
            true => Rerun::Implicit(job),
            false => Rerun::AsAsked,
        });
    };
    // Never verified, or found wrong: verified (again) now.
    let passed = sealed.verified.as_ref().is_some_and(|(_, r)| r == "pass");
    if opts.verify && !passed {
        return Ok(Rerun::Verify(sealed));
    }
    let seed = (!in_implicit).then_some(latest);
    let state = JobState::load(ledger.path(), &name, seed)?;
    if !changed(&state, scope, &opts.ledger)? {
        return Ok(Rerun::NothingNew(sealed));
    }
    if let Some(run) = seed {
        ledger.adopt_into_job(run, &name)?;
        tracing::info!(run, job = %name, "the sealed run becomes the first of its implicit job");
    }
    Ok(Rerun::Implicit(job))
}

/// A named job run again after its latest run sealed: that run's pending
/// verify; else its next run, as before (whose walk finds what is new: a
/// quiet night seals an empty delta, and no walk is made twice).
fn named(
    ledger: &Ledger,
    opts: &TransferOptions,
    job: &JobOptions,
    source: &str,
    destination: &str,
    selection: Option<&str>,
) -> Result<Rerun, TransferError> {
    let Some(latest) = ledger.job_latest_run(&job.name, source, destination, selection)? else {
        return Ok(Rerun::AsAsked);
    };
    let Some(sealed) = ledger.sealed_run(latest)? else {
        return Ok(Rerun::AsAsked);
    };
    let passed = sealed.verified.as_ref().is_some_and(|(_, r)| r == "pass");
    Ok(match opts.verify && !passed {
        true => Rerun::Verify(sealed),
        false => Rerun::AsAsked,
    })
}

/// Whether the source differs from what the sealed runs landed: a file new
/// (and not one they left out, unmodified since), of another size or
/// mtime, unreadable, or gone. Reads metadata only.
fn changed(state: &JobState, scope: &Scope, ledger: &Path) -> Result<bool, TransferError> {
    let sql = |source| LedgerError::Sqlite {
        path: ledger.to_path_buf(),
        source,
    };
    for entry in scope.walk() {
        match entry {
            SourceEntry::File(f) => match state.take(f.rel.as_str()).map_err(sql)? {
                Some(p) if p.size == f.size && p.mtime_ns == f.mtime_ns => {}
                None if state
                    .excluded_unchanged(f.rel.as_str(), f.mtime_ns)
                    .map_err(sql)? => {}
                _ => return Ok(true),
            },
            SourceEntry::Failed { .. } => return Ok(true),
            SourceEntry::Excluded { .. } => {}
        }
    }
    let mut gone = false;
    state.for_each_unseen(|_, _| gone = true).map_err(sql)?;
    Ok(gone)
}

/// The summary of a rerun that found finished work: the sealed run's, with
/// nothing copied.
pub(super) fn summary(
    sealed: &SealedRun,
    opts: &TransferOptions,
    ledger: &Ledger,
) -> Result<TransferSummary, TransferError> {
    let run = RunRef {
        id: sealed.run,
        attempt: sealed.attempts,
        resumed: false,
        job_run: sealed.job.as_ref().map(|(_, n)| *n),
    };
    let (manifest, signature) = manifest_files(ledger, opts, &sealed.manifest)?;
    // The totals from the ledger: a rerun with nothing to do reads no
    // manifest (a million entries are a few hundred megabytes).
    let (files, bytes) = sealed.totals;
    let mut summary = TransferSummary::started(run, 0, opts);
    summary.job = None;
    summary.sealed = Some(Sealed {
        id: sealed.manifest.clone(),
        manifest,
        signature,
        files,
        bytes,
    });
    summary.finished = Some(Finished {
        manifest: sealed.manifest.clone(),
        verified_at: sealed.verified.as_ref().map(|(at, _)| at.clone()),
        verified_now: false,
    });
    if let Some((_, result)) = &sealed.verified
        && result != "pass"
    {
        summary.status = Status::VerifyFailed;
    }
    Ok(summary)
}

/// The sealed manifest's file and signature in the manifest folder,
/// written again from the ledger when either is missing (a kill between
/// the seal and the export).
fn manifest_files(
    ledger: &Ledger,
    opts: &TransferOptions,
    id: &str,
) -> Result<(PathBuf, PathBuf), TransferError> {
    let path = opts.manifest_dir.join(format!("{id}.json"));
    let sig = manifest::signature_path(&path);
    let at = checkpoint::path_for(&path);
    if !(at.is_file() && checkpoint::signature_path(&at).is_file())
        && let Some((root, signature)) = ledger.manifest_checkpoint(id)?
    {
        let c = checkpoint::Checkpoint::new(checkpoint::manifest_origin(id), root);
        checkpoint::write(&at, &c, &signature)?;
        tracing::info!(manifest = %id, "wrote the manifest's checkpoint again from the ledger");
    }
    if path.is_file() && sig.is_file() {
        return Ok((path, sig));
    }
    let tmp = opts.manifest_dir.join(format!(".{id}.json.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ManifestError::Io { path: p, source }
    };
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    let signature = ledger.copy_manifest(id, &mut file)?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    manifest::write_durable(&sig, signature.as_bytes())?;
    tracing::info!(manifest = %id, "wrote the sealed manifest again from the ledger");
    Ok((path, sig))
}

/// Verifies a sealed run whose verify never completed, and records it.
pub(super) fn verify_now(
    sealed: &SealedRun,
    opts: &TransferOptions,
    scope: &Scope,
    dest: &dyn Destination,
    ledger: &mut Ledger,
    key: &crate::keys::SigningKey,
    progress: &dyn crate::progress::Progress,
) -> Result<TransferSummary, TransferError> {
    let mut summary = summary(sealed, opts, ledger)?;
    let manifest = summary
        .sealed
        .as_ref()
        .map(|s| s.manifest.clone())
        .expect("a sealed summary");
    tracing::info!(manifest = %sealed.manifest, "the sealed run's verify never completed: verifying it");
    // A job's run (or a shard, beside the other shards) lists what it
    // landed: each is read back by name.
    let listed = sealed.job.is_some() || scope.shard.is_some();
    let verify_opts = crate::verify::VerifyOptions {
        jobs: opts.jobs,
        key: None,
        by_study: false,
        early: None,
    };
    let report =
        super::verify_sealed(&manifest, dest, ledger, &verify_opts, listed, key, progress)?;
    if !report.ok() {
        summary.status = Status::VerifyFailed;
    }
    summary.verify = Some(report);
    if let Some(f) = summary.finished.as_mut() {
        f.verified_now = true;
    }
    Ok(summary)
}
