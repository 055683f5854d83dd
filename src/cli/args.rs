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

/// `--include`, `--exclude`, `--files-from`: which files of the source a
/// command takes (docs/selection.md), in rclone's syntax and order.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectionArgs {
    /// Carry only files matching this glob (repeatable; rclone's syntax:
    /// `*.dcm`, `/PAT1/**`, `thumbs/`). With any --include, everything no
    /// --include matches is left out.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable; tried after every
    /// --include, as rclone does).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Carry only the files this list names (one relative path a line;
    /// `#` comments). A listed file missing from the source fails.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,
}

impl SelectionArgs {
    /// The engine's selection.
    pub fn selection(&self) -> Result<custody::source::select::Selection, super::Failure> {
        let filters = custody::source::select::Filters::new(&self.include, &self.exclude)
            .map_err(|e| super::Failure::usage(e).hint("nothing was read or copied"))?;
        Ok(custody::source::select::Selection {
            filters,
            list: self
                .files_from
                .clone()
                .map(custody::source::select::ListSource::FilesFrom),
        })
    }
}

/// `--device KIND` and a custom device's limits.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// The device the tree must fit: databox-disk, databox, databox-120,
    /// databox-525, databox-heavy (one node), or custom (with
    /// --device-bytes and --device-files). Limits: docs/databox.md.
    #[arg(long, value_name = "KIND", value_parser = device_kind)]
    pub device: Option<custody::databox::device::DeviceKind>,
    /// A custom device's usable bytes, e.g. 8T, 500GiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub device_bytes: Option<u64>,
    /// A custom device's most files.
    #[arg(long, value_name = "N")]
    pub device_files: Option<u64>,
    /// A custom device's most containers (top-level folders).
    #[arg(long, value_name = "N")]
    pub device_containers: Option<u64>,
}

impl DeviceArgs {
    /// The device, when one was named.
    pub fn device(&self) -> Result<Option<custody::databox::device::Device>, super::Failure> {
        use custody::databox::device::{Device, DeviceKind};
        let given = self.device_bytes.is_some()
            || self.device_files.is_some()
            || self.device_containers.is_some();
        match self.device {
            None if given => Err(super::Failure::usage(anyhow::anyhow!(
                "--device-bytes, --device-files and --device-containers need --device custom"
            ))),
            None => Ok(None),
            Some(DeviceKind::Custom) => match (self.device_bytes, self.device_files) {
                (Some(b), Some(f)) if b > 0 && f > 0 => {
                    Ok(Some(Device::custom(b, f, self.device_containers)))
                }
                _ => Err(super::Failure::usage(anyhow::anyhow!(
                    "--device custom needs --device-bytes and --device-files (both above 0)"
                ))),
            },
            Some(_) if given => Err(super::Failure::usage(anyhow::anyhow!(
                "--device-bytes, --device-files and --device-containers go with --device custom only; {} has documented limits",
                self.device.expect("matched Some")
            ))),
            Some(kind) => Ok(kind.profile()),
        }
    }
}

fn device_kind(s: &str) -> Result<custody::databox::device::DeviceKind, String> {
    use custody::databox::device::DeviceKind;
    DeviceKind::parse(s).ok_or_else(|| {
        format!(
            "unknown device {s:?}; one of: {}",
            DeviceKind::ALL.map(|k| k.name()).join(", ")
        )
    })
}

/// A byte count: "8T", "500GiB", "1048576".
pub fn size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>().map(|b| b.as_u64())
}
