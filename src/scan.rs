//! `scan`: an inventory of a source tree before anything moves; optionally
//! the BLAKE3 of every file (the hash path of a transfer, without a
//! destination), and the Data Box preflight: every rule of the destination
//! ([`crate::databox`]) that a file would break, reading no file contents.
//!
//! With `dicom` (the default in the CLI), the header of every DICOM file is
//! read too, up to its pixel data ([`crate::source::dicom`]): the
//! inventory counts instances, series, studies and modalities, names the
//! same instance stored twice, and counts files that may identify a
//! patient, which the [`ScanSink`] is told of one by one (by attribute
//! name, never value).
//!
//! Memory does not depend on the number of files: the walk streams, the
//! inventory keeps counters, a fixed histogram and the few largest files
//! (distinct UIDs are counted in an on-disk set), and hashes and
//! violations are handed to a [`ScanSink`] as they are found.

pub mod dicom;

use std::collections::BTreeMap;

use std::path::PathBuf;

use serde::Serialize;

use crate::databox::dicom::DicomProfile;
use crate::databox::{self, Linter, Placement, Rule, Violation};
use crate::digest;
use crate::progress::{Notice, Phase, Progress, ProgressReader};
use crate::source::dicom::{Outcome, Privacy, Probe, Probed};
use crate::source::{self, SourceEntry};

/// What to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The source tree.
    pub source: PathBuf,
    /// Read and hash every file.
    pub hash: bool,
    /// Parallel hashing workers.
    pub jobs: usize,
    /// Check every file against this destination's Data Box rules.
    pub placement: Option<Placement>,
    /// What the destination already holds, to report names taken there.
    pub existing: Option<std::sync::Arc<dyn crate::databox::Occupied>>,
    /// Read every DICOM header (up to the pixel data).
    pub dicom: bool,
    /// Check every header against what a DICOMweb service of this profile
    /// refuses (`--dest` naming a DICOMweb service); implies reading them.
    pub dicomweb: Option<DicomProfile>,
    /// Which files of the tree to take (`--include`, `--exclude`,
    /// `--files-from`).
    pub selection: crate::source::select::Selection,
    /// Whether the tree fits one device of this kind (`--device`).
    pub device: Option<crate::databox::device::Device>,
}

/// Receives what a scan finds as it goes; the inventory itself is returned
/// at the end.
pub trait ScanSink {
    /// A file was hashed (with [`ScanOptions::hash`]), in completion order.
    fn hashed(&mut self, _file: &Hashed) {}
    /// The destination, or a file, breaks a Data Box rule (with
    /// [`ScanOptions::placement`]).
    fn violation(&mut self, _violation: &Violation) {}
    /// A DICOM file is not marked de-identified and carries an identifying
    /// attribute (with [`ScanOptions::dicom`]); `privacy` names which.
    fn may_identify(&mut self, _path: &str, _privacy: &Privacy) {}
}

/// The preflight's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// Where the files would land.
    pub placement: Placement,
    /// Violations found.
    pub violations: u64,
    /// Violations by rule.
    pub by_rule: BTreeMap<Rule, u64>,
    /// Whether names already taken at the destination were looked for
    /// (not for a blob URL without a credential in the environment).
    pub existing_checked: bool,
}

/// The DICOMweb preflight's summary.
#[derive(Debug, Clone, Serialize)]
pub struct DicomwebPreflight {
    /// Whose rules.
    pub profile: DicomProfile,
    /// Violations found.
    pub violations: u64,
    /// Violations by rule.
    pub by_rule: BTreeMap<Rule, u64>,
}

/// Upper bounds (exclusive) of the size histogram's buckets; the last
/// bucket holds everything larger.
pub const BUCKETS: [u64; 7] = [1, 4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 4 << 30];

/// One bucket of the size histogram.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Smallest size in the bucket.
    pub from: u64,
    /// First size past the bucket (`None`: unbounded).
    pub below: Option<u64>,
    /// Files in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A file named in the inventory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Named {
    /// Relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// How many of the largest files the inventory names.
pub const LARGEST: usize = 5;

/// The inventory of a tree.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The source root.
    pub source: PathBuf,
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries that would not be carried (links, special files, names that
    /// are not UTF-8).
    pub excluded: u64,
    /// Entries that could not be read or listed.
    pub failed: u64,
    /// Files by size.
    pub histogram: Vec<Bucket>,
    /// The largest files, largest first.
    pub largest: Vec<Named>,
    /// The path with the most components.
    pub deepest: Option<String>,
    /// Its number of components.
    pub max_depth: usize,
    /// The longest path, in bytes.
    pub longest_path: usize,
    /// Files hashed (with [`ScanOptions::hash`]).
    pub hashed_files: u64,
    /// Bytes hashed.
    pub hashed_bytes: u64,
    /// The Data Box preflight, when a destination was given.
    pub preflight: Option<Preflight>,
    /// The DICOMweb preflight, when the destination is a DICOMweb service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicomweb_preflight: Option<DicomwebPreflight>,
    /// What the DICOM headers say (with [`ScanOptions::dicom`]).
    pub dicom: Option<dicom::DicomInventory>,
    /// Files the selection left out (neither counted nor checked).
    pub left_out: u64,
    /// Whether the tree fits one device (with [`ScanOptions::device`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::databox::device::Fit>,
}

impl Inventory {
    fn new(source: PathBuf, placement: Option<Placement>, existing_checked: bool) -> Self {
        let mut from = 0;
        let histogram = BUCKETS
            .iter()
            .map(|&b| Some(b))
            .chain([None])
            .map(|below| {
                let bucket = Bucket {
                    from,
                    below,
                    files: 0,
                    bytes: 0,
                };
                from = below.unwrap_or(0);
                bucket
            })
            .collect();
        Inventory {
            source,
            files: 0,
            bytes: 0,
            excluded: 0,
            failed: 0,
            histogram,
            largest: Vec::with_capacity(LARGEST + 1),
            deepest: None,
            max_depth: 0,
            longest_path: 0,
            hashed_files: 0,
            hashed_bytes: 0,
            preflight: placement.map(|placement| Preflight {
                placement,
                violations: 0,
                by_rule: BTreeMap::new(),
                existing_checked,
            }),
            dicom: None,
            dicomweb_preflight: None,
            left_out: 0,
            device: None,
        }
    }

    fn violation(&mut self, v: &Violation) {
        if let Some(p) = &mut self.preflight {
            p.violations += 1;
            *p.by_rule.entry(v.rule).or_default() += 1;
        }
        if let Some(p) = &mut self.dicomweb_preflight {
            p.violations += 1;
            *p.by_rule.entry(v.rule).or_default() += 1;
        }
    }

    /// Violations of either preflight.
    pub fn violations(&self) -> u64 {
        self.preflight.as_ref().map_or(0, |p| p.violations)
            + self.dicomweb_preflight.as_ref().map_or(0, |p| p.violations)
    }

    fn add(&mut self, path: &str, size: u64) {
        self.files += 1;
        self.bytes += size;
        let i = BUCKETS
            .iter()
            .position(|&b| size < b)
            .unwrap_or(BUCKETS.len());
        self.histogram[i].files += 1;
        self.histogram[i].bytes += size;
        let depth = path.split('/').count();
        if depth > self.max_depth {
            self.max_depth = depth;
            self.deepest = Some(path.to_owned());
        }
        self.longest_path = self.longest_path.max(path.len());
        if self.largest.len() < LARGEST || self.largest.last().is_some_and(|l| size > l.size) {
            let at = self.largest.partition_point(|l| l.size >= size);
            self.largest.insert(
                at,
                Named {
                    path: path.to_owned(),
                    size,
                },
            );
            self.largest.truncate(LARGEST);
        }
    }
}

/// One hashed file.
#[derive(Debug, Clone)]
pub struct Hashed {
    /// Relative path.
    pub path: String,
    /// Bytes read.
    pub size: u64,
    /// Its BLAKE3.
    pub blake3: blake3::Hash,
}

enum Item {
    Violations(Vec<Violation>),
    File {
        path: String,
        abs: PathBuf,
        size: u64,
    },
    Excluded {
        path: String,
        reason: &'static str,
    },
    Failed {
        path: String,
        error: String,
    },
}

enum Done {
    Violations(Vec<Violation>),
    Scanned {
        path: String,
        size: u64,
        hashed: Option<Hashed>,
        dicom: Option<Box<Outcome>>,
    },
    Excluded {
        path: String,
        reason: &'static str,
    },
    Failed {
        path: String,
        error: String,
    },
}

/// What the scan read of one file.
struct FileRead {
    /// Its length and BLAKE3 (when hashing).
    sums: Option<(u64, blake3::Hash)>,
    /// What its header is (when reading DICOM headers).
    dicom: Option<Outcome>,
}

/// Reads what the scan needs of one file: all of it to hash it, else only
/// its DICOM header.
fn read_file(
    abs: &std::path::Path,
    hash: bool,
    dicom: bool,
    progress: &dyn Progress,
) -> std::io::Result<FileRead> {
    let f = source::open(abs)?;
    let (sums, dicom) = match (hash, dicom) {
        (true, true) => {
            let mut r = Probed {
                inner: ProgressReader { inner: f, progress },
                probe: Probe::new(),
            };
            let sums = digest::hash_reader(&mut r)?;
            (Some(sums), Some(r.probe.finish()))
        }
        (true, false) => (
            Some(digest::hash_reader(ProgressReader { inner: f, progress })?),
            None,
        ),
        (false, true) => (None, Some(crate::source::dicom::probe_reader(f)?)),
        (false, false) => (None, None),
    };
    Ok(FileRead { sums, dicom })
}

/// Walks `opts.source`, building the inventory; with `opts.hash`, also
/// reads and hashes every file on `opts.jobs` workers; with
/// `opts.placement`, checks every file against the destination's rules.
/// Hashes and violations go to `sink` as they are found.
///
/// # Errors
/// Only if the source cannot be walked at all (the message names it); a
/// file that cannot be read is counted in [`Inventory::failed`] and
/// reported through `progress`.
pub fn scan(
    opts: &ScanOptions,
    progress: &dyn Progress,
    sink: &mut dyn ScanSink,
) -> Result<Inventory, std::io::Error> {
    let meta = std::fs::metadata(&opts.source)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    std::fs::read_dir(&opts.source)?;
    let mut inv = Inventory::new(
        opts.source.clone(),
        opts.placement.clone(),
        opts.existing.is_some(),
    );
    inv.dicomweb_preflight = opts.dicomweb.map(|profile| DicomwebPreflight {
        profile,
        violations: 0,
        by_rule: BTreeMap::new(),
    });
    let mut linter = opts
        .placement
        .clone()
        .map(|p| Linter::new(p, opts.existing.clone()));
    if let Some(l) = &linter {
        for v in l
            .placement()
            .map(Placement::check_destination)
            .unwrap_or_default()
        {
            inv.violation(&v);
            sink.violation(&v);
        }
    }
    // Rules are checked here, in walk order (case collisions need it),
    // before files are spread over the workers.
    let left_out = crate::source::select::LeftOut::default();
    let containers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = containers.clone();
    let mut last_top: Option<String> = None;
    let walk = crate::source::select::walk(&opts.source, &opts.selection, left_out.clone())
        .map_err(std::io::Error::other)?;
    let items = walk.flat_map(move |e| {
        let (violations, item) = match e {
            SourceEntry::File(f) => {
                let path = f.rel.to_string();
                // The walk is in component order: a top-level folder's
                // files come together.
                if let Some((top, _)) = path.split_once('/')
                    && last_top.as_deref() != Some(top)
                {
                    last_top = Some(top.to_owned());
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let found = linter
                    .as_mut()
                    .map(|l| l.check(&path, f.size))
                    .filter(|v| !v.is_empty());
                (
                    found.map(Item::Violations),
                    Item::File {
                        path,
                        abs: f.path,
                        size: f.size,
                    },
                )
            }
            SourceEntry::Excluded { path, reason } => (None, Item::Excluded { path, reason }),
            SourceEntry::Failed { path, error } => (
                None,
                Item::Failed {
                    path: path.display().to_string(),
                    error: error.to_string(),
                },
            ),
        };
        violations.into_iter().chain(std::iter::once(item))
    });
    progress.begin(Phase::Scan, None, None);
    let (hash, dicom) = (opts.hash, opts.dicom || opts.dicomweb.is_some());
    let mut tally = match dicom {
        true => Some(dicom::Tally::new().map_err(std::io::Error::other)?),
        false => None,
    };
    crate::pool::parallel_map(
        if hash || dicom { opts.jobs } else { 1 },
        items,
        |item| match item {
            Item::File { path, abs, size } => match read_file(&abs, hash, dicom, progress) {
                Ok(FileRead { sums, dicom }) => Done::Scanned {
                    hashed: sums.map(|(n, blake3)| Hashed {
                        path: path.clone(),
                        size: n,
                        blake3,
                    }),
                    size: sums.map_or(size, |(n, _)| n),
                    path,
                    dicom: dicom.map(Box::new),
                },
                Err(e) => Done::Failed {
                    path: abs.display().to_string(),
                    error: format!("read failed: {e}"),
                },
            },
            Item::Excluded { path, reason } => Done::Excluded { path, reason },
            Item::Failed { path, error } => Done::Failed { path, error },
            Item::Violations(v) => Done::Violations(v),
        },
        |done| {
            match done {
                Done::Violations(found) => {
                    for v in &found {
                        inv.violation(v);
                        sink.violation(v);
                    }
                    return Ok(());
                }
                Done::Scanned {
                    path,
                    size,
                    hashed,
                    dicom,
                } => {
                    inv.add(&path, size);
                    if let Some(h) = hashed {
                        inv.hashed_files += 1;
                        inv.hashed_bytes += h.size;
                        sink.hashed(&h);
                    }
                    if let (Some(profile), Some(outcome)) = (opts.dicomweb, &dicom) {
                        for v in databox::dicom::check(&path, outcome, profile) {
                            inv.violation(&v);
                            sink.violation(&v);
                        }
                    }
                    if let (Some(t), Some(outcome)) = (tally.as_mut(), dicom) {
                        let outcome = *outcome;
                        t.add(&path, &outcome).map_err(std::io::Error::other)?;
                        if let Outcome::Dicom(h) = &outcome
                            && h.privacy.may_identify()
                        {
                            sink.may_identify(&path, &h.privacy);
                        }
                    }
                }
                Done::Excluded { path, reason } => {
                    inv.excluded += 1;
                    progress.notice(Notice::Excluded {
                        path: &path,
                        reason,
                    });
                }
                Done::Failed { path, error } => {
                    inv.failed += 1;
                    progress.notice(Notice::Failed {
                        path: &path,
                        error: &error,
                    });
                }
            }
            progress.file_done();
            Ok::<(), std::io::Error>(())
        },
    )?;
    progress.end(Phase::Scan);
    if opts.dicomweb.is_some()
        && let Some(t) = &tally
    {
        for v in different_duplicates(&opts.source, t)? {
            inv.violation(&v);
            sink.violation(&v);
        }
    }
    inv.dicom = tally.map(dicom::Tally::finish);
    inv.left_out = left_out.get();
    if let Some(device) = &opts.device {
        let one_container = opts
            .placement
            .as_ref()
            .is_some_and(|p| p.container.is_some());
        let mut containers = containers.load(std::sync::atomic::Ordering::Relaxed);
        if one_container {
            containers = containers.min(1);
        }
        let load = crate::databox::device::Load {
            bytes: inv.bytes,
            files: inv.files,
            containers,
        };
        inv.device = Some(device.fit(load, device.bytes));
    }
    Ok(inv)
}

/// The files holding an instance an earlier file holds, with other bytes:
/// only those pairs are read and hashed.
fn different_duplicates(
    root: &std::path::Path,
    tally: &dicom::Tally,
) -> std::io::Result<Vec<Violation>> {
    let hash = |rel: &str| -> std::io::Result<blake3::Hash> {
        digest::hash_reader(source::open(&root.join(rel))?).map(|(_, h)| h)
    };
    let mut out = Vec::new();
    let mut failed = None;
    tally
        .for_each_duplicate(|instance, first, again| match (hash(first), hash(again)) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => out.push(databox::dicom::duplicate(again, instance, first)),
            (Err(e), _) | (_, Err(e)) => failed = Some(e),
        })
        .map_err(std::io::Error::other)?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One line of a `b3sum` list that `b3sum --check` accepts: the hex hash,
/// two spaces, the path. As b3sum does, a path holding a backslash or a
/// newline is escaped (`\\`, `\n`) and the line starts with a backslash.
pub fn b3sum_line(hash: &blake3::Hash, path: &str) -> String {
    if path.contains(['\\', '\n']) {
        let escaped = path.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{}  {escaped}\n", hash.to_hex())
    } else {
        format!("{}  {path}\n", hash.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_buckets_largest_and_depth() {
        let mut inv = Inventory::new(PathBuf::from("/src"), None, false);
        for (p, s) in [
            ("a", 0),
            ("b/c", 4095),
            ("b/d", 4096),
            ("b/e/f/g", 5 << 30),
            ("h", 1 << 20),
            ("i", 3),
            ("j", 2),
        ] {
            inv.add(p, s);
        }
        assert_eq!(inv.files, 7);
        let counts: Vec<u64> = inv.histogram.iter().map(|b| b.files).collect();
        assert_eq!(counts, [1, 3, 1, 0, 1, 0, 0, 1]);
        assert_eq!(inv.histogram[7].below, None);
        assert_eq!(inv.histogram[1].from, 1);
        let largest: Vec<&str> = inv.largest.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(largest, ["b/e/f/g", "h", "b/d", "b/c", "i"]);
        assert_eq!(inv.deepest.as_deref(), Some("b/e/f/g"));
        assert_eq!(inv.max_depth, 4);
    }

    #[test]
    fn b3sum_lines_escape_as_b3sum_does() {
        let h = blake3::hash(b"");
        assert_eq!(b3sum_line(&h, "a b"), format!("{}  a b\n", h.to_hex()));
        assert_eq!(
            b3sum_line(&h, "a\\b\nc"),
            format!("\\{}  a\\\\b\\nc\n", h.to_hex())
        );
    }
}
