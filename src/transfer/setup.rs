//! Setting a run up: the source and manifest folder checked, the
//! destination opened (a directory inside the source refused before
//! anything is created).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::stop::Stopper;
use super::{TransferError, TransferOptions};
use crate::dest::blob::{Blob, BlobStats};
use crate::dest::dicomweb::DicomWeb;
use crate::dest::share::Share;
use crate::dest::{DestError, Destination, Target};
use crate::lock::RunLock;

/// Absolute, normalised form of a user path: its longest existing
/// ancestor with links resolved, then the components that do not exist yet.
pub(super) fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut missing = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                at = parent;
            }
            _ => return abs,
        }
    }
}

pub(super) fn check_source(source: &Path) -> Result<PathBuf, TransferError> {
    let err = |reason: String| TransferError::Source {
        path: source.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(source).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    std::fs::read_dir(source).map_err(|e| err(format!("cannot list: {e}")))?;
    Ok(absolute(source))
}

pub(super) fn check_manifest_dir(dir: &Path) -> Result<(), TransferError> {
    let err = |reason: String| TransferError::ManifestDir {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create: {e}")))?;
    let probe = dir.join(format!(".custody-probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| err(format!("not writable: {e}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The destination a run writes to, open.
pub(super) enum Opened {
    Share(Share),
    Blob(Box<Blob>),
    Dicomweb(Box<DicomWeb>),
}

impl Opened {
    pub(super) fn dest(&self) -> &dyn Destination {
        match self {
            Opened::Share(s) => s,
            Opened::Blob(b) => b.as_ref(),
            Opened::Dicomweb(d) => d.as_ref(),
        }
    }

    pub(super) fn share(&self) -> Option<&Share> {
        match self {
            Opened::Share(s) => Some(s),
            Opened::Blob(_) | Opened::Dicomweb(_) => None,
        }
    }

    pub(super) fn blob_stats(&self) -> Option<&BlobStats> {
        match self {
            Opened::Share(_) | Opened::Dicomweb(_) => None,
            Opened::Blob(b) => Some(b.stats()),
        }
    }
}

/// Opens the destination; a directory inside the source (or holding it) is
/// refused as it stands, before anything is created.
pub(super) fn open(opts: &TransferOptions, source_root: &Path) -> Result<Opened, TransferError> {
    match &opts.destination {
        Target::Share(path) => {
            let dest_root = absolute(path);
            if dest_root.starts_with(source_root) || source_root.starts_with(&dest_root) {
                return Err(TransferError::Source {
                    path: source_root.to_path_buf(),
                    reason: format!("overlaps the destination {}", dest_root.display()),
                });
            }
            Ok(Opened::Share(Share::for_writing(path)?))
        }
        Target::Blob(url) => Ok(Opened::Blob(Box::new(Blob::open(url, true, &opts.blob)?))),
        Target::Dicomweb(url) if opts.encryption.is_some() => Err(DestError::Unusable {
            path: url.to_string().into(),
            reason: "--encrypt: a DICOMweb service stores DICOM instances, which it parses, \
                     not ciphertext; encrypt on the wire (https) and at rest in the service instead"
                .into(),
        }
        .into()),
        Target::Dicomweb(url) => Ok(Opened::Dicomweb(Box::new(DicomWeb::open(url, &opts.blob)?))),
    }
}

/// The locks a run holds until it ends.
pub(super) struct Locks {
    _ledger: RunLock,
    _dest: Option<RunLock>,
}

/// Takes the run's locks: a second transfer into the same place with the
/// same ledger is refused, naming this one; and a directory is locked in
/// itself, so that no transfer with another ledger (or from another host)
/// writes into it at the same time.
pub(super) fn lock(opts: &TransferOptions, opened: &Opened) -> Result<Locks, TransferError> {
    let describe = opened.dest().describe();
    let ledger = RunLock::acquire(&opts.ledger, &describe)?;
    let dest = match opened.share() {
        Some(s) => Some(RunLock::in_destination(s.root(), &describe, &opts.ledger)?),
        None => None,
    };
    Ok(Locks {
        _ledger: ledger,
        _dest: dest,
    })
}

/// Starts the run's clock: refused outside its window, saying when the
/// window next opens.
pub(super) fn stopper(opts: &TransferOptions) -> Result<Stopper, TransferError> {
    Stopper::start(&opts.limits).map_err(|opens| TransferError::OutsideWindow {
        window: opts
            .limits
            .window
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        opens: opens.map(|o| o.strftime("%a %Y-%m-%d %H:%M %Z").to_string()),
    })
}
