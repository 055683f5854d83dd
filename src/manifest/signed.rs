//! Signed reading: a manifest file and its detached SSHSIG signature
//! (`<manifest>.sig`), checked against a trust (a public key or an
//! `allowed_signers` file) before anything in it is believed.

use std::path::{Path, PathBuf};

use super::{Manifest, ManifestError};
use crate::keys::{self, Signer, Trust};

/// A manifest read from disk with its signature checked.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
    /// Who signed it.
    pub signer: Signer,
}

/// The signature path for a manifest path (`<file>.sig`).
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Reads `path` and `path.sig`, checks the signature against `trust` first,
/// then parses.
///
/// # Errors
/// I/O errors, a bad signature, or malformed content, each naming the file.
pub fn read_signed(path: &Path, trust: &Trust) -> Result<SignedManifest, ManifestError> {
    let (bytes, signer) = read_verified(path, trust)?;
    let manifest = Manifest::parse(&bytes).map_err(|reason| ManifestError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })?;
    Ok(SignedManifest {
        manifest,
        bytes,
        signer,
    })
}

/// Reads the bytes of `path` and checks `path.sig` over them against
/// `trust`, believing nothing else in them: the identity the signature
/// must be bound to is read from their `operator.identity`, and the time
/// a key's validity is checked against from their `created`. Manifests,
/// splits and sets are all signed this way.
///
/// # Errors
/// I/O errors or a bad signature, naming the file.
pub fn read_verified(path: &Path, trust: &Trust) -> Result<(Vec<u8>, Signer), ManifestError> {
    let bytes = std::fs::read(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let sig_path = signature_path(path);
    let sig = std::fs::read_to_string(&sig_path).map_err(|source| ManifestError::Io {
        path: sig_path.clone(),
        source,
    })?;
    let top = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let field = |p: &str| top.as_ref()?.pointer(p)?.as_str().map(str::to_owned);
    let identity = field("/operator/identity").unwrap_or_default();
    let created = field("/created").and_then(|t| t.parse().ok());
    let signer = trust
        .verify(&identity, keys::MANIFEST_NAMESPACE, created, &bytes, &sig)
        .map_err(|source| ManifestError::Signature {
            path: sig_path,
            source,
        })?;
    Ok((bytes, signer))
}

/// Writes `bytes` to `path` atomically and durably (temporary file, fsync,
/// rename, directory fsync).
///
/// # Errors
/// I/O errors naming `path`.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    use std::io::Write;
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A bare file name's parent is "", which names no directory.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    // Readable by owner and group only: a manifest names every file.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(io)?
    };
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}
