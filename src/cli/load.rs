//! What the commands load from their flags: a trust anchor, an encryption
//! or signing key, a signed manifest (checked, its failures mapped to exit
//! codes), a job's chain of manifests.

use std::path::{Path, PathBuf};

use custody::manifest::chain::ChainReport;
use custody::manifest::{self, ManifestError, SignedFile, SignedManifest};

use super::args::TrustArgs;
use super::config::Origin;
use super::{Failure, render};

/// Loads a trust anchor from exactly one of the two flags.
pub fn load_trust(
    allowed_signers: Option<&std::path::Path>,
    public_key: Option<&std::path::Path>,
) -> Result<custody::keys::Trust, Failure> {
    use custody::keys::Trust;
    let trust = match (allowed_signers, public_key) {
        (Some(p), None) => Trust::allowed_signers(p),
        (None, Some(p)) => Trust::public_key(p),
        _ => {
            return Err(Failure::usage(anyhow::anyhow!(
                "give exactly one of --allowed-signers FILE or --public-key FILE"
            )));
        }
    }
    .map_err(Failure::usage)?;
    render::warn_if_example_trust(&trust);
    Ok(trust)
}

/// Loads an encryption key file (exit 2 on any problem).
pub fn load_encryption_key(
    path: &std::path::Path,
) -> Result<custody::crypt::EncryptionKey, Failure> {
    custody::crypt::EncryptionKey::load(path).map_err(|e| {
        Failure::usage(e).hint(
            "make one with `custody keygen --encryption --out FILE`, or pass the right key file",
        )
    })
}

/// Loads the operator's signing key, warning loudly about the demo key.
pub fn load_signing_key(path: &std::path::Path) -> Result<custody::keys::SigningKey, Failure> {
    let key = custody::keys::SigningKey::load(path).map_err(|e| {
        Failure::usage(e)
            .hint("generate a key with `custody keygen --out DIR`, or pass the right --signing-key")
    })?;
    if key.is_example() {
        render::warn_example_key(path);
    }
    Ok(key)
}

/// Reads a manifest and checks its signature and consistency; maps each
/// failure to its exit code.
pub fn open_manifest(path: &Path, trust: &TrustArgs) -> Result<SignedManifest, Failure> {
    manifest::read_signed(path, &trust.load()?).map_err(|e| manifest_failure(path, e))
}

/// As [`open_manifest`], without reading the file list into memory.
pub fn open_manifest_file(path: &Path, trust: &TrustArgs) -> Result<SignedFile, Failure> {
    manifest::open_signed(path, &trust.load()?).map_err(|e| manifest_failure(path, e))
}

impl TrustArgs {
    /// The trust anchor: a flag beats the configured `allowed_signers`
    /// (its variable, or the configuration file).
    pub(super) fn load(&self) -> Result<custody::keys::Trust, Failure> {
        let configured = super::config::setting("allowed_signers");
        let explicit = super::config::origin(configured, "allowed_signers") == Origin::Flag;
        let (signers, public) = match (&self.allowed_signers, &self.public_key) {
            (Some(s), Some(_)) if explicit => (Some(s), self.public_key.as_ref()),
            // A flag's public key over a configured trust file.
            (Some(_), Some(p)) => (None, Some(p)),
            (None, None) => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "no trust anchor: give --allowed-signers FILE or --public-key FILE"
                ))
                .hint(format!(
                    "or configure one: allowed_signers in the configuration file, or {} \
                     (`custody config` shows what is set)",
                    configured.env
                )));
            }
            (s, p) => (s.as_ref(), p.as_ref()),
        };
        super::load_trust(signers.map(PathBuf::as_path), public.map(PathBuf::as_path))
    }
}

/// A manifest that cannot be opened is a usage error; one that is
/// damaged, forged or malformed is an integrity failure.
pub fn manifest_failure(path: &Path, e: ManifestError) -> Failure {
    match &e {
        ManifestError::Io { path: p, .. } if p == path => Failure::usage(e),
        _ => Failure::integrity(e),
    }
}

/// Walks a job's chain from `newest` (`audit --chain`, `verify --chain`).
pub fn walk_chain(newest: &Path, dir: &Path, trust: &TrustArgs) -> Result<ChainReport, Failure> {
    manifest::chain::walk(newest, dir, &trust.load()?).map_err(|e| manifest_failure(newest, e))
}
