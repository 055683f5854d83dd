//! Sealing: the manifest of a finished run built from the ledger as a
//! stream, signed, stored in the ledger, then written beside the others.

use std::fs::File;
use std::path::Path;

use super::scope::Scope;
use super::{Sealed, TransferError, TransferOptions};
use crate::crypt;
use crate::keys::SigningKey;
use crate::ledger::{Ledger, RunRef};
use crate::manifest::checkpoint::{self, Checkpoint};
use crate::manifest::{
    self, ChainHead, Encryption, Manifest, ManifestError, Operator, Tool, Totals,
};
use crate::source::dicom::InstanceUids;

/// Builds, signs, stores and writes the manifest of a finished run, as a
/// stream: the entries go from a sorted ledger query to the file without
/// being held in memory, and the signature is made from the file's hash.
pub(super) fn seal(
    ledger: &mut Ledger,
    run: RunRef,
    source: &str,
    destination: &str,
    opts: &TransferOptions,
    scope: &Scope,
    key: &SigningKey,
) -> Result<Sealed, TransferError> {
    let excluded = ledger.manifest_excluded(run.id)?;
    let head: ChainHead = ledger.head()?;
    let created = jiff::Timestamp::now();
    let encryption = opts.encryption.as_ref().map(|k| Encryption {
        chunk_size: crypt::DEFAULT_CHUNK,
        key_id: k.id_hex(),
        scheme: crypt::SCHEME.to_owned(),
    });
    // A run resumed across the upgrade to ledger schema 3 has files
    // without a CRC64: its manifest is written in the older version, with
    // no CRC64 (and no DICOM identity) at all. Files landed before schema 4
    // simply have no `dicom` object.
    let crc64 = ledger.run_has_crc64(run.id)?;
    // The run's wave, as recorded when it started (a later attempt may
    // have been resumed without its plan).
    let wave = ledger.run_wave(run.id)?;
    // A job's run links to the job's previous manifest, and lists the
    // source changes its last attempt found.
    let job = match ledger.run_job(run.id)? {
        Some((name, n)) => Some(manifest::Job {
            previous: ledger.job_link(&name, n)?,
            name,
            run: n,
        }),
        None => None,
    };
    let source_changes = match job {
        Some(_) => Some(ledger.run_source_changes(run.id)?).filter(|c| !c.is_empty()),
        None => None,
    };
    // What a DICOMweb service holds is named by its instance.
    let instances = matches!(opts.destination, crate::dest::Target::Dicomweb(_));
    let (selection, shard) = (scope.record(), scope.shard.clone());
    let selected = selection.is_some() || shard.is_some();
    let version = match (crc64, &encryption) {
        (true, _) if instances => manifest::VERSION_DICOMWEB,
        (true, _) if selected => manifest::VERSION_SELECTED,
        (true, _) if job.is_some() => manifest::VERSION_JOB,
        (true, _) if wave.is_some() => manifest::VERSION_WAVE,
        (true, _) => manifest::VERSION_DICOM,
        (false, Some(_)) => manifest::VERSION_ENCRYPTED,
        (false, None) => manifest::VERSION,
    };
    let mut m = Manifest {
        created: created.to_string(),
        destination: destination.to_owned(),
        encryption,
        excluded: Vec::new(),
        files: Vec::new(),
        format: manifest::FORMAT.to_owned(),
        host: crate::host_name(),
        id: manifest::new_id(created),
        ledger_head: head,
        operator: Operator {
            identity: key.identity(),
            key_fingerprint: key.fingerprint(),
        },
        run: run.id,
        source: source.to_owned(),
        tool: Tool {
            name: "custody".to_owned(),
            version: crate::TOOL_VERSION.to_owned(),
        },
        totals: Totals {
            bytes: 0,
            excluded: 0,
            files: 0,
        },
        // Every manifest with CRC64s is version 9 now: its own rules
        // (`tree.base`) plus the Merkle tree over its entries.
        tree: (version >= manifest::VERSION_DICOM).then(|| manifest::Tree {
            base: version,
            root: String::new(),
            size: 0,
        }),
        version: match version >= manifest::VERSION_DICOM {
            true => manifest::VERSION_TREE,
            false => version,
        },
        wave: wave.filter(|_| version >= manifest::VERSION_WAVE),
        job,
        source_changes,
        selection: selection.filter(|_| version == manifest::VERSION_SELECTED),
        shard: shard.filter(|_| version == manifest::VERSION_SELECTED),
    };
    let json_path = opts.manifest_dir.join(format!("{}.json", m.id));
    let sig_path = manifest::signature_path(&json_path);
    let tmp = opts.manifest_dir.join(format!(".{}.json.tmp", m.id));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    let file = File::create(&tmp).map_err(io(&tmp))?;
    // The tree's SHA-256 hashing runs on a second thread, beside the
    // encoding (docs/PERFORMANCE.md, "Proofs"): the seal is otherwise one
    // thread, with the other core idle.
    let (feed, fed) = crate::merkle::feed();
    let written = std::thread::scope(|s| {
        s.spawn(|| crate::merkle::build(fed));
        ledger.with_manifest_files(run.id, |files| {
            let files = files.map(|f| {
                f.map(|mut f| {
                    if instances
                        && let (Some(st), Some(uids)) =
                            (&mut f.stored, f.dicom.as_ref().and_then(InstanceUids::of))
                    {
                        st.path = uids.path();
                    }
                    if !crc64 {
                        f.crc64 = None;
                        f.dicom = None;
                        if let Some(st) = &mut f.stored {
                            st.crc64 = None;
                        }
                    }
                    f
                })
            });
            let excluded = excluded.into_iter().map(Ok);
            manifest::write_canonical_with(&m, excluded, files, &file, Box::new(feed))
        })
    })?;
    let written = written.map_err(|e| match e {
        manifest::WriteError::Source(e) => TransferError::Ledger(e),
        manifest::WriteError::Io(e) => TransferError::Manifest(io(&tmp)(e)),
    })?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    m.totals = written.totals.clone();
    let signature = manifest::sign_written(&written, key)?;
    // The tree's checkpoint, signed: what a proof of one entry rests on.
    let checkpoint = match written.tree {
        Some(root) => {
            let c = Checkpoint::new(checkpoint::manifest_origin(&m.id), root);
            let sig = c.sign(key)?;
            Some((c, sig))
        }
        None => None,
    };
    // The ledger is the record of truth: seal there first, then export.
    let mut bytes = File::open(&tmp).map_err(io(&tmp))?;
    ledger.seal(
        &m,
        &written,
        &mut bytes,
        &signature,
        checkpoint.as_ref().map(|(_, sig)| sig.as_str()),
        key,
    )?;
    std::fs::rename(&tmp, &json_path).map_err(io(&json_path))?;
    manifest::write_durable(&sig_path, signature.as_bytes())?;
    if let Some((c, sig)) = &checkpoint {
        checkpoint::write(&checkpoint::path_for(&json_path), c, sig)?;
    }
    tracing::info!(manifest = %m.id, files = m.totals.files, bytes = m.totals.bytes, "sealed");
    Ok(Sealed {
        id: m.id.clone(),
        manifest: json_path,
        signature: sig_path,
        files: m.totals.files,
        bytes: m.totals.bytes,
    })
}
