//! Argument types several commands share: a manifest and where it landed,
//! the trust-anchor flags, and the duration parser.

use std::path::PathBuf;

/// A manifest and where it landed: the positional arguments of `verify`
/// and `rollback`.
#[derive(Debug, clap::Args)]
pub struct ManifestAt {
    /// The manifest (`<id>.json`; its signature is `<id>.json.sig`).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// Where it landed: a directory, or a blob container URL (credentials
    /// from the environment, as for `transfer`).
    #[arg(value_name = "DEST")]
    pub destination: PathBuf,
}

/// The trust anchor flags of every command that reads a signed manifest:
/// one of them, or the configured `allowed_signers` (checked when loaded,
/// so that a configured trust file satisfies them and a flag beats it).
#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// An OpenSSH allowed_signers file; the manifest's operator identity
    /// must be a principal of the signing key.
    #[arg(long, value_name = "FILE", env = "CUSTODY_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,
    /// The operator's OpenSSH public key.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

/// A duration: "90m", "6h", "1h 30m", or ISO 8601 "PT1H30M".
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    std::time::Duration::try_from(d).map_err(|_| "must not be negative".to_owned())
}
