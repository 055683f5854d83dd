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
            match expect_run {
                // A one-off run that a job adopted as its first: the same
                // transfer run again after it sealed goes on as its
                // implicit job (docs/jobs.md, "Without --job").
                Some(1) => report.links.push(ChainLink {
                    id: head.id.clone(),
                    job_run: 1,
                    path: current.path().to_path_buf(),
                    files: head.totals.files,
                    bytes: head.totals.bytes,
                    blake3: current.blake3,
                }),
                _ => report.add(
                    head.id.clone(),
                    format!("not a job's manifest (version {})", head.version),
                ),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::manifest::{Job, Link, Manifest, VERSION_JOB};

    /// A job's manifest of run `run`, signed by `key`, written as
    /// `<id>.json` and `.sig` in `dir`; returns its path.
    fn write(dir: &Path, key: &SigningKey, run: u64, previous: Option<Link>) -> PathBuf {
        let mut m = super::super::tests::sample();
        m.created = format!("2026-11-2{run}T21:45:00Z");
        m.id = format!("2026112{run}T214500Z-0000000{run}");
        m.run = run;
        m.ledger_head.seq = run;
        m.operator.key_fingerprint = key.fingerprint();
        m.version = VERSION_JOB;
        m.excluded.clear();
        m.totals.excluded = 0;
        m.files[0].crc64 = Some("0".repeat(16));
        m.files[0].path = format!("run{run}/IM0001.dcm");
        m.job = Some(Job {
            name: "pacs-nightly".into(),
            previous,
            run,
        });
        let path = dir.join(format!("{}.json", m.id));
        std::fs::write(&path, m.to_canonical()).unwrap();
        std::fs::write(super::super::signature_path(&path), m.sign(key).unwrap()).unwrap();
        path
    }

    /// The link a later run makes to the manifest at `path`.
    fn link(path: &Path) -> Link {
        let (blake3, sha256) = hashes(path).unwrap();
        let id = path.file_stem().unwrap().to_str().unwrap().to_owned();
        Link { blake3, id, sha256 }
    }

    /// Three runs of a job, chained; the trust in the key that signed them,
    /// and the key.
    fn chain(dir: &Path) -> (Vec<PathBuf>, Trust, SigningKey) {
        let generated = crate::keys::generate(&dir.join("keys"), "ops@hospital.example").unwrap();
        let key = SigningKey::load(&generated.private_key).unwrap();
        let one = write(dir, &key, 1, None);
        let two = write(dir, &key, 2, Some(link(&one)));
        let three = write(dir, &key, 3, Some(link(&two)));
        let trust = Trust::PublicKey(key.public_key().clone());
        (vec![one, two, three], trust, key)
    }

    fn problems(report: &ChainReport) -> Vec<String> {
        report
            .problems
            .iter()
            .map(|f| format!("{}: {}", f.at, f.problem))
            .collect()
    }

    #[test]
    fn a_whole_chain_walks_back_to_the_first_run() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, trust, _) = chain(dir.path());
        let report = walk(&paths[2], dir.path(), &trust).unwrap();
        assert_eq!(problems(&report), Vec::<String>::new());
        assert!(report.ok());
        assert_eq!(report.job, "pacs-nightly");
        let runs: Vec<u64> = report.links.iter().map(|l| l.job_run).collect();
        assert_eq!(runs, [1, 2, 3], "first run first");
        // Walking from a middle run proves the runs up to it.
        let report = walk(&paths[1], dir.path(), &trust).unwrap();
        assert_eq!(report.links.len(), 2);
        assert!(report.ok());
        // Every link reopens, checked against the bytes the walk hashed.
        let whole = walk(&paths[2], dir.path(), &trust).unwrap();
        assert_eq!(whole.reopen(&trust).filter(Result::is_ok).count(), 3);
    }

    #[test]
    fn a_missing_link_ends_the_walk_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, trust, _) = chain(dir.path());
        std::fs::remove_file(&paths[0]).unwrap();
        let report = walk(&paths[2], dir.path(), &trust).unwrap();
        let p = problems(&report);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("20261122T214500Z-00000002: job.previous: missing link: manifest 20261121T214500Z-00000001 (run 1)"),
            "{p:?}"
        );
        assert_eq!(report.links.len(), 2, "runs 2 and 3 were walked");
    }

    #[test]
    fn an_altered_link_is_named_even_when_it_is_signed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, trust, key) = chain(dir.path());
        // Run 1 edited and signed again with the operator's own key: its
        // signature and its audit are good, but run 2 was chained to other
        // bytes.
        let mut edited = Manifest::parse(&std::fs::read(&paths[0]).unwrap()).unwrap();
        edited.host = "elsewhere".into();
        std::fs::write(&paths[0], edited.to_canonical()).unwrap();
        let sig = super::super::signature_path(&paths[0]);
        std::fs::write(sig, edited.sign(&key).unwrap()).unwrap();
        let report = walk(&paths[2], dir.path(), &trust).unwrap();
        let p = problems(&report);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("20261122T214500Z-00000002: job.previous: altered link:"),
            "{p:?}"
        );
        assert!(!report.ok());
    }

    #[test]
    fn a_link_to_another_run_number_or_a_manifest_with_no_job_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let generated = crate::keys::generate(&dir.path().join("keys"), "ops").unwrap();
        let key = SigningKey::load(&generated.private_key).unwrap();
        let trust = Trust::PublicKey(key.public_key().clone());
        // Run 3 chained straight to run 1: run 2 is missing from the chain.
        let one = write(dir.path(), &key, 1, None);
        let three = write(dir.path(), &key, 3, Some(link(&one)));
        let p = problems(&walk(&three, dir.path(), &trust).unwrap());
        assert!(
            p.iter()
                .any(|l| l
                    == "20261121T214500Z-00000001: is run 1 of its job; the link expects run 2"),
            "{p:?}"
        );
    }
}
