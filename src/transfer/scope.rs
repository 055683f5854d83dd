//! What part of the source a run carries: its filters, its `--files-from`
//! list or its shard of a split (checked against the signed split before
//! anything moves), the key that makes it a run of its own in the ledger,
//! and what the manifest records of it (version 8).

use std::path::{Path, PathBuf};

use super::{TransferError, TransferOptions};
use crate::databox::Placement;
use crate::databox::device::{Device, Fit, Load};
use crate::manifest::{self, Link, ShardRef};
use crate::source::SourceEntry;
use crate::source::select::{self, LeftOut, ListSource, Selection};

/// A run's part of the source, resolved.
#[derive(Debug)]
pub(super) struct Scope {
    /// The source root.
    pub root: PathBuf,
    selection: Selection,
    /// The ledger's key for it (`None`: the whole tree).
    pub key: Option<String>,
    /// The manifest's `selection` (its `left_out` filled in at the seal).
    record: Option<manifest::Selection>,
    /// The manifest's `shard`.
    pub shard: Option<ShardRef>,
    /// The device the shard's split was made for.
    pub split_device: Option<Device>,
    /// What the copying walk left out.
    left_out: LeftOut,
}

impl Scope {
    /// Resolves `opts`' selection: a shard list is checked against its
    /// signed `split.json` (beside it) before anything else.
    pub(super) fn resolve(opts: &TransferOptions, root: &Path) -> Result<Scope, TransferError> {
        let mut selection = opts.selection.clone();
        let mut parts = Vec::new();
        for r in selection.filters.rules() {
            parts.push(format!("{} {:?}", r.action.as_str(), r.pattern));
        }
        let mut files_from = None;
        if let Some(ListSource::FilesFrom(p)) = &selection.list {
            let hash = hash_file(p)?;
            parts.push(format!("files-from {}", &hash[..16]));
            files_from = Some(hash);
        }
        let record = match parts.is_empty() {
            true => None,
            false => Some(manifest::Selection {
                files_from,
                filters: selection.filters.rules().to_vec(),
                left_out: 0,
            }),
        };
        let (shard, split_device) = match &opts.shard {
            None => (None, None),
            Some(s) => {
                if !selection.is_everything() {
                    return Err(shard_error(
                        &s.list,
                        "--shard takes no --include, --exclude or --files-from: the split applied its own"
                            .into(),
                    ));
                }
                let (shard, device) = check_shard(&s.list, &s.trust)?;
                parts.push(format!(
                    "shard {} of split {}",
                    shard.number, shard.split.id
                ));
                selection.list = Some(ListSource::Shard(s.list.clone()));
                (Some(shard), Some(device))
            }
        };
        Ok(Scope {
            root: root.to_path_buf(),
            selection,
            key: (!parts.is_empty()).then(|| parts.join("; ")),
            record,
            shard,
            split_device,
            left_out: LeftOut::default(),
        })
    }

    /// Whether the run is limited at all.
    pub(super) fn is_selected(&self) -> bool {
        self.key.is_some()
    }

    /// The selected walk, for a check (what it leaves out is not counted).
    pub(super) fn walk(&self) -> Box<dyn Iterator<Item = SourceEntry> + Send> {
        self.walk_into(LeftOut::default())
    }

    /// The selected walk whose files are copied: what it leaves out is
    /// what the manifest records.
    pub(super) fn walk_counted(&self) -> Box<dyn Iterator<Item = SourceEntry> + Send> {
        self.walk_into(self.left_out.clone())
    }

    fn walk_into(&self, left_out: LeftOut) -> Box<dyn Iterator<Item = SourceEntry> + Send> {
        match select::walk(&self.root, &self.selection, left_out) {
            Ok(w) => w,
            // Opened when resolved; gone since: the run fails, unsealed.
            Err(e) => Box::new(std::iter::once(SourceEntry::Failed {
                path: e.path().to_path_buf(),
                error: std::io::Error::other(e.to_string()),
            })),
        }
    }

    /// The manifest's `selection`, with what the copying walk left out.
    pub(super) fn record(&self) -> Option<manifest::Selection> {
        self.record.clone().map(|mut r| {
            r.left_out = self.left_out.get();
            r
        })
    }

    /// Whether the selected tree fits `device` (placed by `placement`:
    /// into one container, or one per top-level folder), reading names
    /// and sizes only.
    pub(super) fn fit(&self, device: &Device, placement: Option<&Placement>) -> Fit {
        let one_container = placement.is_some_and(|p| p.container.is_some());
        let mut load = Load::default();
        let mut last_top: Option<String> = None;
        for e in self.walk() {
            let SourceEntry::File(f) = e else { continue };
            load.files += 1;
            load.bytes += f.size;
            // The walk is in component order: a top-level folder's files
            // come together.
            if let Some((top, _)) = f.rel.as_str().split_once('/')
                && last_top.as_deref() != Some(top)
            {
                last_top = Some(top.to_owned());
                load.containers += 1;
            }
        }
        if one_container {
            load.containers = load.containers.min(1);
        }
        device.fit(load, device.bytes)
    }
}

fn shard_error(list: &Path, reason: String) -> TransferError {
    TransferError::Shard {
        list: list.to_path_buf(),
        reason,
    }
}

/// BLAKE3 of a file's bytes, read as a stream.
fn hash_file(path: &Path) -> Result<String, TransferError> {
    std::fs::File::open(path)
        .and_then(crate::digest::hash_reader)
        .map(|(_, h)| h.to_hex().to_string())
        .map_err(|e| shard_error(path, e.to_string()))
}

/// Reads the signed split beside `list`, finds `list`'s shard in it and
/// checks the list's bytes are the ones the split names.
fn check_shard(
    list: &Path,
    trust: &crate::keys::Trust,
) -> Result<(ShardRef, Device), TransferError> {
    let name = list
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| shard_error(list, "is not a shard list's file name".into()))?;
    let dir = list.parent().filter(|p| !p.as_os_str().is_empty());
    let split_path = dir.unwrap_or(Path::new(".")).join("split.json");
    let signed = manifest::split::read(&split_path, trust)
        .map_err(|e| shard_error(list, format!("its split: {e}")))?;
    let split = &signed.split;
    let shard = split.shard_by_list(name).ok_or_else(|| {
        shard_error(
            list,
            format!("{} names no shard {name:?}", split_path.display()),
        )
    })?;
    let hash = hash_file(list)?;
    if hash != shard.blake3 {
        return Err(shard_error(
            list,
            format!(
                "its BLAKE3 is {hash} but {} records {} for shard {}: the list was changed since the split was signed; nothing was copied",
                split_path.display(),
                shard.blake3,
                shard.number
            ),
        ));
    }
    use sha2::Digest;
    let d = &split.device;
    let kind = crate::databox::device::DeviceKind::parse(&d.kind)
        .unwrap_or(crate::databox::device::DeviceKind::Custom);
    Ok((
        ShardRef {
            list: name.to_owned(),
            list_blake3: hash,
            number: shard.number,
            of: split.shards.len() as u64,
            split: Link {
                blake3: blake3::hash(&signed.bytes).to_hex().to_string(),
                id: split.id.clone(),
                sha256: crate::digest::hex_lower(&sha2::Sha256::digest(&signed.bytes)),
            },
        },
        Device {
            kind,
            bytes: d.bytes,
            files: d.files,
            containers: d.containers,
        },
    ))
}
