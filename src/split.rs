//! `split`: partitions a source tree into the fewest shards that each fit
//! one device, keeping every DICOM study whole (by the StudyInstanceUID of
//! its headers) and every other file with its top-level folder, and writes
//! the shard lists and the signed `split.json` (`docs/split.md`).
//!
//! Memory does not grow with the number of files: the walk streams, each
//! file's path, size and group go to a private temporary SQLite database on
//! disk, the groups are packed from a sorted query, and the lists are
//! written from another. What stays in memory is one entry per shard (and
//! the top-level folders it spans).
//!
//! Packing is first-fit decreasing over the groups (largest first, ties by
//! file count, then by key), which is deterministic: the same tree gives
//! the same lists. Its result is compared with the lower bound every split
//! needs (bytes, files and containers alone), so the report says when it is
//! provably the fewest.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::databox::device::{Device, Load};
use crate::keys::{KeyError, SigningKey};
use crate::manifest::split::{self as format, DeviceLimits, Shard, Split, SplitTotals};
use crate::manifest::{self, Operator, Tool};
use crate::progress::{Notice, Phase, Progress};
use crate::source::select::{self, LeftOut, Selection};
use crate::source::{self, SourceEntry, dicom::Outcome};

/// What to split.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// The source tree.
    pub source: PathBuf,
    /// The device every shard must fit.
    pub device: Device,
    /// The share of the device's bytes left free, in percent.
    pub headroom_percent: u64,
    /// Which files of the tree to split (`--include`, `--exclude`,
    /// `--files-from`); the rest are left out of every shard.
    pub selection: Selection,
    /// Parallel header readers.
    pub jobs: usize,
}

/// Errors that stop a split; nothing is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The source cannot be walked.
    #[error("source {path}: {reason}")]
    Source {
        /// The source root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Entries of the tree could not be read: a split must account for
    /// every file.
    #[error("{count} entr(ies) of the source could not be read, first: {}; nothing was written", first.join("; "))]
    Unreadable {
        /// How many.
        count: u64,
        /// The first few, with the cause.
        first: Vec<String>,
    },
    /// One study (or one folder of other files) is larger than a device.
    #[error(
        "{what} ({files} files, {bytes} bytes) does not fit one {device} ({limit}); it cannot be kept whole, so nothing was written"
    )]
    TooLarge {
        /// The study or folder, named.
        what: String,
        /// Its files.
        files: u64,
        /// Its bytes.
        bytes: u64,
        /// The device kind.
        device: String,
        /// The limit it passes.
        limit: String,
    },
    /// The output directory cannot be used.
    #[error("--out {path}: {reason}")]
    Out {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The selection cannot be read.
    #[error(transparent)]
    Select(#[from] select::SelectError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The temporary database failed.
    #[error("temporary database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// One shard as planned (before its list is written).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Planned {
    /// Its number, from 1.
    pub number: u64,
    /// Its files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// DICOM studies it holds.
    pub studies: u64,
    /// Top-level folders its files are in.
    pub containers: u64,
    #[serde(skip)]
    tops: BTreeSet<String>,
}

/// A partition of a tree, held in its temporary database.
pub struct Partition {
    db: Connection,
    /// The shards.
    pub shards: Vec<Planned>,
    /// Totals.
    pub totals: SplitTotals,
    /// Entries no shard carries (links, special files, bad names).
    pub excluded: u64,
    /// Files the selection left out.
    pub left_out: u64,
    /// The most bytes a shard holds.
    pub shard_bytes: u64,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("shards", &self.shards)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

/// What `split` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSummary {
    /// The split's id.
    pub id: String,
    /// `DIR/split.json`.
    pub split: PathBuf,
    /// Its signature.
    pub signature: PathBuf,
    /// The device and its limits.
    pub device: DeviceLimits,
    /// The shards.
    pub shards: Vec<Shard>,
    /// Totals.
    pub totals: SplitTotals,
    /// Entries no shard carries.
    pub excluded: u64,
    /// Files the selection left out.
    pub left_out: u64,
    /// Whether the shards are provably the fewest (as many as the lower
    /// bound).
    pub fewest: bool,
    /// Seconds taken.
    pub seconds: f64,
}

const SCHEMA: &str = "
PRAGMA temp_store = FILE;
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE groups (
    id      INTEGER PRIMARY KEY,
    key     TEXT NOT NULL UNIQUE,
    study   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    files   INTEGER NOT NULL
);
CREATE TABLE files (
    seq  INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    grp  INTEGER NOT NULL
);
CREATE TABLE tops (
    grp INTEGER NOT NULL,
    top TEXT NOT NULL,
    PRIMARY KEY (grp, top)
) WITHOUT ROWID;
CREATE TABLE assign (
    grp   INTEGER PRIMARY KEY,
    shard INTEGER NOT NULL
);
";

/// A file as the walk found it, with its place in component order.
struct Found {
    seq: u64,
    rel: String,
    path: PathBuf,
    size: u64,
}

/// How many unreadable entries an error names.
const LISTED: usize = 10;

/// Walks the tree, reads each file's DICOM header, and packs the groups
/// into shards; writes nothing but its temporary database.
///
/// # Errors
/// An unreadable source or entry, a study or folder larger than a device,
/// or the temporary database failing.
pub fn partition(opts: &SplitOptions, progress: &dyn Progress) -> Result<Partition, SplitError> {
    let source_err = |reason: String| SplitError::Source {
        path: opts.source.clone(),
        reason,
    };
    match std::fs::metadata(&opts.source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(source_err("not a directory".into())),
        Err(e) => return Err(source_err(e.to_string())),
    }
    let mut db = Connection::open("")?;
    db.execute_batch(SCHEMA)?;
    let left_out = LeftOut::default();
    let mut excluded = 0u64;
    let mut unreadable = (0u64, Vec::new());
    let mut seq = 0u64;
    let found = select::walk(&opts.source, &opts.selection, left_out.clone())?.filter_map(|e| {
        match e {
            SourceEntry::File(f) => {
                seq += 1;
                return Some(Found {
                    seq,
                    rel: f.rel.to_string(),
                    path: f.path,
                    size: f.size,
                });
            }
            SourceEntry::Excluded { .. } => excluded += 1,
            SourceEntry::Failed { path, error } => {
                unreadable.0 += 1;
                if unreadable.1.len() < LISTED {
                    unreadable.1.push(format!("{}: {error}", path.display()));
                }
            }
        }
        None
    });
    progress.begin(Phase::Scan, None, None);
    db.execute_batch("BEGIN")?;
    let mut pending = 0u32;
    let mut read_failed = (0u64, Vec::new());
    crate::pool::parallel_map(
        opts.jobs,
        found,
        |f| {
            let study = source::open(&f.path)
                .and_then(source::dicom::probe_reader)
                .map(|o| match o {
                    Outcome::Dicom(h) => h.instance.study,
                    _ => None,
                });
            (f, study)
        },
        |(f, study)| {
            progress.file_done();
            let study = match study {
                Ok(s) => s,
                Err(e) => {
                    progress.notice(Notice::Failed {
                        path: &f.path.display().to_string(),
                        error: &e.to_string(),
                    });
                    read_failed.0 += 1;
                    if read_failed.1.len() < LISTED {
                        read_failed.1.push(format!("{}: {e}", f.path.display()));
                    }
                    return Ok(());
                }
            };
            add(&db, &f, study.as_deref())?;
            pending += 1;
            if pending == 10_000 {
                db.execute_batch("COMMIT; BEGIN")?;
                pending = 0;
            }
            Ok::<(), SplitError>(())
        },
    )?;
    db.execute_batch("COMMIT")?;
    progress.end(Phase::Scan);
    let (count, mut first) = unreadable;
    first.extend(read_failed.1);
    first.truncate(LISTED);
    if count + read_failed.0 > 0 {
        return Err(SplitError::Unreadable {
            count: count + read_failed.0,
            first,
        });
    }
    let shard_bytes = opts.device.shard_bytes(opts.headroom_percent);
    too_large(&db, &opts.device, shard_bytes)?;
    let shards = pack(&mut db, &opts.device, shard_bytes)?;
    let totals = totals(&db, &opts.device, shard_bytes)?;
    Ok(Partition {
        db,
        shards,
        totals,
        excluded,
        left_out: left_out.get(),
        shard_bytes,
    })
}

/// Records one file and its group: its study, or (not DICOM, or no study
/// UID) its top-level folder (`""` for files at the root).
fn add(tx: &Connection, f: &Found, study: Option<&str>) -> rusqlite::Result<()> {
    let top = f.rel.split_once('/').map(|(t, _)| t);
    let key = match study {
        Some(uid) => format!("study {uid}"),
        None => format!("folder {}", top.unwrap_or("")),
    };
    let grp: i64 = tx
        .prepare_cached(
            "INSERT INTO groups (key, study, bytes, files) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (key) DO UPDATE SET bytes = bytes + excluded.bytes, files = files + 1
             RETURNING id",
        )?
        .query_row(params![key, study.is_some(), f.size], |r| r.get(0))?;
    tx.prepare_cached("INSERT INTO files (seq, path, size, grp) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![f.seq, f.rel, f.size, grp])?;
    if let Some(top) = top {
        tx.prepare_cached("INSERT OR IGNORE INTO tops (grp, top) VALUES (?1, ?2)")?
            .execute(params![grp, top])?;
    }
    Ok(())
}

/// Refuses a study or folder no device can hold whole, naming it.
fn too_large(db: &Connection, device: &Device, shard_bytes: u64) -> Result<(), SplitError> {
    let row = db
        .query_row(
            "SELECT key, files, bytes FROM groups WHERE bytes > ?1 OR files > ?2
             ORDER BY bytes DESC, key LIMIT 1",
            params![shard_bytes, device.files],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, u64>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((key, files, bytes)) = row else {
        return Ok(());
    };
    let what = match key.split_once(' ') {
        Some(("study", uid)) => format!("study {uid}"),
        Some((_, "")) => "the files at the source's top level".to_owned(),
        Some((_, folder)) => format!("folder {folder:?} (its files that are not DICOM)"),
        None => key.clone(),
    };
    let limit = if bytes > shard_bytes {
        format!("{shard_bytes} bytes with headroom")
    } else {
        format!("{} files", device.files)
    };
    Err(SplitError::TooLarge {
        what,
        files,
        bytes,
        device: device.kind.to_string(),
        limit,
    })
}

/// First-fit decreasing: each group, largest first, into the first shard
/// with room for its bytes, files and containers.
fn pack(db: &mut Connection, device: &Device, shard_bytes: u64) -> rusqlite::Result<Vec<Planned>> {
    let tx = db.transaction()?;
    let mut shards: Vec<Planned> = Vec::new();
    {
        let mut groups = tx.prepare(
            "SELECT id, bytes, files, study FROM groups ORDER BY bytes DESC, files DESC, key",
        )?;
        let mut tops_of = tx.prepare("SELECT top FROM tops WHERE grp = ?1 ORDER BY top")?;
        let mut assign = tx.prepare("INSERT INTO assign (grp, shard) VALUES (?1, ?2)")?;
        let mut rows = groups.query([])?;
        while let Some(r) = rows.next()? {
            let (id, bytes, files, study): (i64, u64, u64, bool) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let tops: Vec<String> = tops_of
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let fits = |s: &Planned| {
                let new = tops.iter().filter(|t| !s.tops.contains(*t)).count() as u64;
                device.holds(
                    &Load {
                        bytes: s.bytes + bytes,
                        files: s.files + files,
                        containers: s.containers + new,
                    },
                    shard_bytes,
                )
            };
            let at = match shards.iter().position(fits) {
                Some(i) => i,
                None => {
                    shards.push(Planned {
                        number: shards.len() as u64 + 1,
                        ..Planned::default()
                    });
                    shards.len() - 1
                }
            };
            let s = &mut shards[at];
            s.bytes += bytes;
            s.files += files;
            s.studies += u64::from(study);
            s.tops.extend(tops);
            s.containers = s.tops.len() as u64;
            assign.execute(params![id, s.number])?;
        }
    }
    tx.commit()?;
    Ok(shards)
}

fn totals(db: &Connection, device: &Device, shard_bytes: u64) -> rusqlite::Result<SplitTotals> {
    let (bytes, files, studies): (u64, u64, u64) = db.query_row(
        "SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(files), 0), COALESCE(SUM(study), 0) FROM groups",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let containers: u64 = db.query_row("SELECT COUNT(DISTINCT top) FROM tops", [], |r| r.get(0))?;
    let fit = device.fit(
        Load {
            bytes,
            files,
            containers,
        },
        shard_bytes,
    );
    Ok(SplitTotals {
        bytes,
        files,
        lower_bound: if files == 0 { 0 } else { fit.devices },
        studies,
    })
}

/// Splits the tree and writes `out/shard-NN.list` and the signed
/// `out/split.json` (written last: its presence means the split is whole).
///
/// # Errors
/// Those of [`partition`]; an output directory that already holds a split
/// or cannot be written; signing errors.
pub fn split(
    opts: &SplitOptions,
    out: &Path,
    key: &SigningKey,
    progress: &dyn Progress,
) -> Result<SplitSummary, SplitError> {
    let started = Instant::now();
    let out_err = |reason: String| SplitError::Out {
        path: out.to_path_buf(),
        reason,
    };
    let split_path = out.join("split.json");
    if split_path.exists() {
        return Err(out_err(
            "already holds a split (split.json); shards may be copying from it: choose another directory".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| out_err(e.to_string()))?;
    let source = std::path::absolute(&opts.source).map_err(|e| out_err(e.to_string()))?;
    let part = partition(opts, progress)?;
    let lists = write_lists(&part, out).map_err(|e| match e {
        ListError::Io(e) => out_err(e.to_string()),
        ListError::Sqlite(e) => SplitError::Sqlite(e),
    })?;
    let created = jiff::Timestamp::now();
    let shards: Vec<Shard> = part
        .shards
        .iter()
        .zip(lists)
        .map(|(p, blake3)| Shard {
            blake3,
            bytes: p.bytes,
            containers: p.containers,
            files: p.files,
            list: format::list_name(p.number),
            number: p.number,
            studies: p.studies,
        })
        .collect();
    let selection = match opts.selection.is_everything() {
        true => None,
        false => Some(manifest::Selection {
            files_from: match &opts.selection.list {
                Some(l) => Some(
                    File::open(l.path())
                        .and_then(crate::digest::hash_reader)
                        .map(|(_, h)| h.to_hex().to_string())
                        .map_err(|e| out_err(e.to_string()))?,
                ),
                None => None,
            },
            filters: opts.selection.filters.rules().to_vec(),
            left_out: part.left_out,
        }),
    };
    let device = DeviceLimits {
        bytes: opts.device.bytes,
        containers: opts.device.containers,
        files: opts.device.files,
        headroom_percent: opts.headroom_percent,
        kind: opts.device.kind.to_string(),
        shard_bytes: part.shard_bytes,
    };
    let doc = Split {
        created: created.to_string(),
        device: device.clone(),
        excluded: part.excluded,
        format: format::FORMAT.to_owned(),
        host: crate::host_name(),
        id: manifest::new_id(created),
        operator: Operator {
            identity: key.identity(),
            key_fingerprint: key.fingerprint(),
        },
        selection,
        shards: shards.clone(),
        source: source.display().to_string(),
        tool: Tool {
            name: "custody".to_owned(),
            version: crate::TOOL_VERSION.to_owned(),
        },
        totals: part.totals.clone(),
        version: format::VERSION,
    };
    let bytes = doc.to_bytes();
    let signature = key.sign(crate::keys::MANIFEST_NAMESPACE, &bytes)?;
    let sig_path = manifest::signature_path(&split_path);
    manifest::write_durable(&sig_path, signature.as_bytes())
        .and_then(|()| manifest::write_durable(&split_path, &bytes))
        .map_err(|e| out_err(e.to_string()))?;
    tracing::info!(split = %doc.id, shards = shards.len(), "split written");
    Ok(SplitSummary {
        id: doc.id,
        split: split_path,
        signature: sig_path,
        device,
        fewest: shards.len() as u64 <= part.totals.lower_bound,
        shards,
        totals: part.totals,
        excluded: part.excluded,
        left_out: part.left_out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

enum ListError {
    Io(std::io::Error),
    Sqlite(rusqlite::Error),
}

impl From<std::io::Error> for ListError {
    fn from(e: std::io::Error) -> Self {
        ListError::Io(e)
    }
}

impl From<rusqlite::Error> for ListError {
    fn from(e: rusqlite::Error) -> Self {
        ListError::Sqlite(e)
    }
}

/// A list being written, hashed on the way.
struct ListOut {
    tmp: PathBuf,
    path: PathBuf,
    w: BufWriter<File>,
    hash: blake3::Hasher,
}

/// Writes every shard's list in one pass over the files in component
/// order; returns each list's BLAKE3.
fn write_lists(part: &Partition, out: &Path) -> Result<Vec<String>, ListError> {
    let mut lists = Vec::with_capacity(part.shards.len());
    for s in &part.shards {
        let name = format::list_name(s.number);
        let tmp = out.join(format!(".{name}.tmp"));
        lists.push(ListOut {
            w: BufWriter::new(File::create(&tmp)?),
            tmp,
            path: out.join(name),
            hash: blake3::Hasher::new(),
        });
    }
    let mut stmt = part.db.prepare(
        "SELECT f.path, a.shard FROM files f JOIN assign a ON a.grp = f.grp ORDER BY f.seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let path: String = r.get(0)?;
        let shard: usize = r.get(1)?;
        let l = &mut lists[shard - 1];
        for chunk in [path.as_bytes(), b"\n"] {
            l.w.write_all(chunk)?;
            l.hash.update(chunk);
        }
    }
    let mut hashes = Vec::with_capacity(lists.len());
    for l in lists {
        let file = l.w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&l.tmp, &l.path)?;
        hashes.push(l.hash.finalize().to_hex().to_string());
    }
    Ok(hashes)
}
