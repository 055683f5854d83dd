//! A job's manifests as a hash chain.
//!
//! Each manifest of a job after its first names the job's previous one by
//! id and by the BLAKE3 and SHA-256 of its exact bytes (`job.previous`),
//! and is signed over those bytes. Walking back from the newest manifest
//! to the first (`job.run` 1) therefore proves the whole sequence: a
//! manifest removed, replaced or edited breaks a link, and a link cannot
//! be re-pointed without the operator's key.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest as _;

use super::{Finding, ManifestError, SignedFile, audit_file, open_signed};
use crate::keys::Trust;

/// One manifest of a chain that checked out.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    /// Its id.
    pub id: String,
    /// Its run number within the job.
    pub job_run: u64,
    /// Its file.
    pub path: PathBuf,
    /// Files it lists.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// BLAKE3 of its exact bytes.
    #[serde(skip)]
    pub blake3: blake3::Hash,
}

/// The result of walking a job's chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// The job's name.
    pub job: String,
    /// The manifests walked, first run first (all of them when there is
    /// no problem).
    pub links: Vec<ChainLink>,
    /// Every problem: a missing or altered link, a bad signature, a
    /// manifest of another job or out of sequence, or one that fails its
    /// own audit (`at` starts with the manifest id).
    pub problems: Vec<Finding>,
}

impl ChainReport {
    fn add(&mut self, at: String, problem: String) {
        self.problems.push(Finding { at, problem });
    }

    /// Whether the chain is whole and sound, back to the job's first run.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Opens the chain's manifests again, first run first, each checked
    /// against its signature and against the bytes the walk hashed (a file
    /// swapped since is an error), for a verify to read one at a time.
    pub fn reopen<'a>(
        &'a self,
        trust: &'a Trust,
    ) -> impl Iterator<Item = Result<SignedFile, ManifestError>> + 'a {
        self.links.iter().map(move |l| {
            let m = open_signed(&l.path, trust)?;
            if m.blake3 != l.blake3 {
                return Err(ManifestError::Malformed {
                    path: l.path.clone(),
                    reason: "changed since its chain was checked".into(),
                });
            }
            Ok(m)
        })
    }
}

/// The BLAKE3 and SHA-256 (lowercase hex) of a file's bytes.
fn hashes(path: &Path) -> std::io::Result<(String, String)> {
    let mut file = File::open(path)?;
    let mut b3 = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    Ok((
        b3.finalize().to_hex().to_string(),
        crate::digest::hex_lower(&sha.finalize()),
    ))
}

/// Walks a job's chain back from `newest`, finding each previous manifest
/// as `<id>.json` (+ `.sig`) in `dir`, and checks every link: the file is
/// there, its bytes are the ones the next manifest names, its signature is
/// good against `trust`, it is the same job's run just before, and it
/// passes its own audit. The walk ends at the job's first run, or at the
/// first link it cannot follow (reported as a problem).
///
/// # Errors
/// Only when `newest` itself cannot be opened or its signature fails
/// ([`open_signed`]); everything about earlier links is in the report.
pub fn walk(newest: &Path, dir: &Path, trust: &Trust) -> Result<ChainReport, ManifestError> {
    let first = open_signed(newest, trust)?;
    let mut report = ChainReport {
        job: String::new(),
        links: Vec::new(),
        problems: Vec::new(),
    };
    let mut current = first;
    let mut expect_run: Option<u64> = None;
    loop {
        let head = &current.head;
        for f in audit_file(&current)? {
            report.add(format!("{}: {}", head.id, f.at), f.problem);
        }
        let Some(job) = &head.job else {
            report.add(
                head.id.clone(),
                format!("not a job's manifest (version {})", head.version),
            );
            break;
        };
        match expect_run {
            None => report.job = job.name.clone(),
            Some(n) => {
                if job.name != report.job {
                    report.add(
                        head.id.clone(),
                        format!("belongs to job {:?}, not {:?}", job.name, report.job),
                    );
                }
                if job.run != n {
                    report.add(
                        head.id.clone(),
                        format!("is run {} of its job; the link expects run {n}", job.run),
                    );
                }
            }
        }
        report.links.push(ChainLink {
            id: head.id.clone(),
            job_run: job.run,
            path: current.path().to_path_buf(),
            files: head.totals.files,
            bytes: head.totals.bytes,
            blake3: current.blake3,
        });
        let Some(link) = job.previous.clone() else {
            break;
        };
        let (id, run) = (head.id.clone(), job.run);
        if report.links.len() as u64 > run {
            // Runs strictly decrease along the chain; more links than the
            // newest run's number means a loop.
            report.add(id, "the chain loops back on itself".into());
            break;
        }
        expect_run = Some(run.saturating_sub(1));
        let path = dir.join(format!("{}.json", link.id));
        let at = format!("{id}: job.previous");
        let (blake3, sha256) = match hashes(&path) {
            Ok(h) => h,
            Err(e) => {
                report.add(
                    at,
                    format!(
                        "missing link: manifest {} (run {}) cannot be read at {}: {e}",
                        link.id,
                        run.saturating_sub(1),
                        path.display()
                    ),
                );
                break;
            }
        };
        if sha256 != link.sha256 || blake3 != link.blake3 {
            report.add(
                at,
                format!(
                    "altered link: {} is not the manifest run {run} was chained to \
                     (sha256 {sha256}, expected {})",
                    path.display(),
                    link.sha256
                ),
            );
        }
        current = match open_signed(&path, trust) {
            Ok(m) => m,
            Err(e) => {
                report.add(link.id.clone(), e.to_string());
                break;
            }
        };
        if current.head.id != link.id {
            report.add(
                link.id.clone(),
                format!("the file holds manifest {}", current.head.id),
            );
        }
    }
    report.links.reverse();
    Ok(report)
}
