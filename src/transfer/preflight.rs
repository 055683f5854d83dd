//! The preflight: before anything moves, every name the walk meets is
//! checked against the destination's rules and what is already there
//! ([`Linter`]), and `--require-deidentified` reads every DICOM header.

use std::path::Path;
use std::sync::Arc;

use super::copy::object_rel;
use super::scope::Scope;
use super::setup::Opened;
use super::{LISTED_VIOLATIONS, TransferError, TransferOptions};
use crate::crypt;
use crate::databox::dicom::DicomProfile;
use crate::databox::{Linter, Occupied, Placement, Rule, ShareNames, Violation};
use crate::dest::blob::Overwrite;
use crate::dest::names::Names;
use crate::dest::share::Share;
use crate::dest::{Destination, Target};
use crate::ledger::{JobState, LandedLookup, Ledger};
use crate::scan::{self, ScanOptions, ScanSink};
use crate::source::{self, SourceEntry, SourceFile};

/// What the destination already holds, for the preflight's
/// `exists-at-destination` rule: a directory is asked name by name, never
/// following links (and a link or file in the way of a path is always
/// named, whatever `--overwrite` says); a container is listed once into an
/// on-disk set, unless `--overwrite` already says that existing blobs may
/// be replaced.
pub(super) fn existing(
    opts: &TransferOptions,
    dest: &dyn Destination,
) -> Result<Option<Arc<dyn Occupied>>, TransferError> {
    let never = opts.blob.overwrite == Overwrite::Never;
    Ok(match &opts.destination {
        Target::Share(_) => {
            let share = Share::existing(Path::new(&dest.describe()))?;
            Some(Arc::new(ShareNames::new(share, !never)))
        }
        Target::Blob(_) if never => {
            let names = Names::list(dest)?;
            tracing::debug!(
                names = names.len(),
                "listed the container for the preflight"
            );
            Some(Arc::new(names))
        }
        Target::Blob(_) => None,
        // Instances the service already holds are told apart by their bytes
        // when it says so (Failure Reason 45070), not by names up front.
        Target::Dicomweb(_) => None,
    })
}

/// The rules every file is checked against before it moves: the Data Box
/// rules of its placement, and names already taken at the destination
/// (every directory destination has those, Data Box or not). `None`:
/// nothing to check.
pub(super) fn linter(
    opts: &TransferOptions,
    dest: &dyn Destination,
) -> Result<Option<Linter>, TransferError> {
    let existing = existing(opts, dest)?;
    Ok(match (opts.placement.clone(), existing) {
        (Some(p), existing) => Some(Linter::new(p, existing)),
        (None, Some(existing)) => Some(Linter::names_only(existing)),
        (None, None) => None,
    })
}

/// Whether a directory holds nothing (or only custody's own lock): no name
/// can be taken there, so the preflight's walk can be skipped.
pub(super) fn is_empty_dir(root: &Path) -> bool {
    std::fs::read_dir(root).is_ok_and(|mut entries| {
        entries.all(|e| e.is_ok_and(|e| e.file_name() == crate::lock::DEST_LOCK))
    })
}

/// The rules `f` breaks, as the object it lands as (encrypted objects carry
/// a suffix and are larger).
///
/// In a resumed run (`own` is its landings), a name already taken at the
/// destination is the run's own if the run recorded it, or if it holds
/// exactly the size this file lands as: an attempt killed between making
/// a batch visible and recording it leaves such names behind. (Its first
/// attempt's preflight found every name free; and a blob's content is
/// still compared at landing under `--overwrite never`.)
pub(super) fn lint(
    linter: &mut Linter,
    f: &SourceFile,
    encrypted: bool,
    own: Option<(&LandedLookup, &dyn Destination)>,
) -> Vec<Violation> {
    let object = object_rel(&f.rel, encrypted);
    let size = match encrypted {
        true => crypt::stored_size(f.size, crypt::DEFAULT_CHUNK),
        false => f.size,
    };
    let mut found = linter.check(object.as_str(), size);
    let ours = |(run, dest): (&LandedLookup, &dyn Destination)| {
        matches!(run.get(f.rel.as_str()), Ok(Some(_)))
            || matches!(dest.landed_size(&object), Ok(Some(s)) if s == size)
    };
    found.retain(|v| v.rule != Rule::ExistsAtDestination || !own.is_some_and(ours));
    found
}

/// Walks the whole tree (names and sizes only) against the destination's
/// rules and refuses the transfer if anything breaks one. A name the open
/// run (`own`) landed is its own, not something in the way (see [`lint`]).
///
/// In a job's later run, files the job already landed are its own and are
/// not checked again (`known`): only what is new would move.
pub(super) fn preflight(
    scope: &Scope,
    mut linter: Linter,
    own: Option<(&LandedLookup, &dyn Destination)>,
    known: Option<&JobState>,
    encrypted: bool,
) -> Result<(), TransferError> {
    let mut first = linter
        .placement()
        .map(Placement::check_destination)
        .unwrap_or_default();
    let mut count = first.len() as u64;
    for entry in scope.walk() {
        let SourceEntry::File(f) = entry else {
            continue;
        };
        if known.is_some_and(|k| matches!(k.contains(f.rel.as_str()), Ok(true))) {
            continue;
        }
        for v in lint(&mut linter, &f, encrypted, own) {
            count += 1;
            if first.len() < LISTED_VIOLATIONS {
                first.push(v);
            }
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(TransferError::Preflight { count, first })
    }
}

/// Reads the DICOM header of every file under `source` (nothing else) and
/// refuses the transfer if any may identify a patient or cannot be checked.
/// A file that cannot be read at all is left to the transfer, which fails
/// it without landing it.
pub(super) fn require_deidentified(scope: &Scope, jobs: usize) -> Result<(), TransferError> {
    let mut count = 0u64;
    let mut first = Vec::new();
    let files = scope.walk().filter_map(|e| match e {
        SourceEntry::File(f) => Some(f),
        _ => None,
    });
    crate::pool::parallel_map(
        jobs,
        files,
        |f| {
            let refusal = source::open(&f.path)
                .and_then(crate::source::dicom::probe_reader)
                .ok()
                .and_then(|o| o.refusal());
            (f.rel, refusal)
        },
        |(rel, refusal)| {
            if let Some(why) = refusal {
                count += 1;
                if first.len() < LISTED_VIOLATIONS {
                    first.push((rel.to_string(), why));
                }
            }
            Ok::<(), TransferError>(())
        },
    )?;
    match count {
        0 => Ok(()),
        _ => Err(TransferError::NotDeidentified { count, first }),
    }
}

/// The preflight of a run, before anything is created or copied: the
/// destination's rules and the names already taken there (skipped for an
/// empty directory with no Data Box placement, where no name is in the way
/// and no rule a walk could find is broken; with `--skip-violations`, the
/// walk excludes instead), then `--require-deidentified`.
pub(super) fn check(
    opts: &TransferOptions,
    scope: &Scope,
    opened: &Opened,
    ledger: &Ledger,
    job_state: Option<&JobState>,
) -> Result<(), TransferError> {
    let source_root = scope.root.as_path();
    let dest = opened.dest();
    // A tree one device cannot hold is refused before anything else.
    if let Some(device) = opts.device.as_ref().or(scope.split_device.as_ref()) {
        let fit = scope.fit(device, opts.placement.as_ref());
        if !fit.fits() {
            return Err(TransferError::DoesNotFit(fit));
        }
    }
    let fresh = opened.share().is_some_and(|s| is_empty_dir(s.root())) && opts.placement.is_none();
    let checks = match opts.skip_violations || fresh {
        true => None,
        false => linter(opts, dest)?,
    };
    if let Some(linter) = checks {
        // What the latest run of this source into this destination landed
        // (open, or sealed: the same command run again, say by a nightly
        // timer after a run that was killed during its verify) is its own,
        // not something in the way.
        let latest = ledger.latest_run(
            &source_root.display().to_string(),
            &dest.describe(),
            scope.key.as_deref(),
        )?;
        let own = match latest {
            Some(id) => Some(LandedLookup::open(ledger.path(), id)?),
            None => None,
        };
        preflight(
            scope,
            linter,
            own.as_ref().map(|o| (o, dest)),
            job_state,
            opts.encryption.is_some(),
        )?;
    }
    if let Some(profile) = dicomweb_profile(opts)
        && !opts.skip_violations
    {
        dicomweb(source_root, profile, opts.jobs)?;
    }
    if opts.require_deidentified {
        require_deidentified(scope, opts.jobs)?;
    }
    Ok(())
}

/// The rules of the DICOMweb service the run lands in, if it does.
pub(super) fn dicomweb_profile(opts: &TransferOptions) -> Option<DicomProfile> {
    match &opts.destination {
        Target::Dicomweb(url) => Some(DicomProfile::for_destination(
            url.azure,
            opts.dicomweb_profile,
        )),
        _ => None,
    }
}

/// Reads every DICOM header under `source` (and hashes the files that
/// share a SOP Instance UID) and refuses the transfer if any breaks what
/// the DICOMweb service of `profile` refuses (`custody scan SRC --dest
/// URL` finds the same).
fn dicomweb(source: &Path, profile: DicomProfile, jobs: usize) -> Result<(), TransferError> {
    struct Found {
        count: u64,
        first: Vec<Violation>,
    }
    impl ScanSink for Found {
        fn violation(&mut self, v: &Violation) {
            self.count += 1;
            if self.first.len() < LISTED_VIOLATIONS {
                self.first.push(v.clone());
            }
        }
    }
    let opts = ScanOptions {
        source: source.to_path_buf(),
        hash: false,
        jobs,
        placement: None,
        existing: None,
        dicom: true,
        dicomweb: Some(profile),
        selection: Default::default(),
        device: None,
    };
    let mut found = Found {
        count: 0,
        first: Vec::new(),
    };
    scan::scan(&opts, &crate::progress::Silent, &mut found).map_err(|e| TransferError::Source {
        path: source.to_path_buf(),
        reason: format!("the DICOMweb preflight could not read it: {e}"),
    })?;
    match found.count {
        0 => Ok(()),
        count => {
            // In manifest order, whatever order the headers were read in.
            found
                .first
                .sort_by(|a, b| crate::relpath::cmp_components(&a.path, &b.path));
            Err(TransferError::Preflight {
                count,
                first: found.first,
            })
        }
    }
}
