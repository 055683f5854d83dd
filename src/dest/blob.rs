//! Azure Blob Storage as a destination: an Azure storage account, a Data
//! Box's local Blob REST endpoint, or Azurite.
//!
//! A file lands as a block blob built from explicitly staged blocks, each
//! with its transactional MD5 (so the service rejects a block corrupted in
//! transit), committed with one block list. Block ids are derived from the
//! blob name, the block's index and the block's BLAKE3, so:
//! - an upload interrupted mid-file resumes from the blocks the service
//!   already holds uncommitted, sending only the missing ones;
//! - a committed blob whose block list equals ours holds the same bytes,
//!   which makes `--overwrite never` idempotent across a crash between
//!   commit and record, without trusting blob metadata.
//!
//! Retries live here and only here (`retry`): transient failures (5xx,
//! 408, 429, connection errors) are retried with exponential backoff and
//! jitter, a bounded number of times; authentication and authorisation
//! failures are not retried, and one that says the credential itself is
//! refused ends the run's use of the endpoint ([`Destination::refused`]).
//! The SDK's own retry policy is turned off. `url` reads the destination,
//! `auth` signs in (a key, a SAS, or Microsoft Entra ID), `api` pins what a
//! Data Box's endpoint speaks, `client` connects, `upload` lands a blob
//! block by block.

use retry::{is_not_found, status};
use upload::{BlobLanding, block_list};

pub mod api;
pub mod auth;
pub(crate) mod client;
mod retry;
mod upload;
pub mod url;

use std::io::{self, Read};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use azure_core::http::Transport;
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientDownloadOptions, BlobContainerClientListBlobsOptions,
    BlockListType,
};
use futures::TryStreamExt;

pub use api::Api;
pub use auth::{AuthMethod, Credential};
pub use url::{BlobUrl, is_blob_url};

use super::{DestError, Destination, Landing, Listed, Removal, Version};
use crate::relpath::RelPath;

/// Default block size: large enough for throughput, small enough that
/// blocks in flight × block size stays modest.
pub const DEFAULT_BLOCK_SIZE: usize = 8 * 1024 * 1024;
/// How long a signed account SAS is valid; clients are re-signed per blob.
const SAS_LIFETIME: Duration = Duration::from_secs(4 * 3600);

/// Errors naming a blob destination or its credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The URL is not one custody accepts.
    #[error("destination URL {0}")]
    Url(String),
    /// No usable credential.
    #[error("{0}")]
    Credential(String),
}

/// How to reach a blob endpoint.
#[derive(Debug, Clone, Default)]
pub struct BlobOptions {
    /// What to do with existing blobs of the same name.
    pub overwrite: Overwrite,
    /// Extra CA certificates (PEM) to trust, e.g. a Data Box's own
    /// certificate. `SSL_CERT_FILE` also works, through the system TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// Block size in bytes ([`DEFAULT_BLOCK_SIZE`] when `None`); at most
    /// the endpoint's [`Api::max_block_size`].
    pub block_size: Option<usize>,
    /// How to sign in; `None`: key-based when a key, SAS or connection
    /// string is set ([`Credential::from_env`]).
    pub auth: Option<AuthMethod>,
    /// The URL is a Data Box's own Blob REST endpoint even though its host
    /// does not say so (an IP address on the box's data port).
    pub databox_rest: bool,
    /// What the command does there, so that a refusal names the role the
    /// identity lacks.
    pub access: Access,
}

/// What a command does at a blob destination, and so the Azure role
/// (RBAC) an Entra ID identity needs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Reads and lists (verify, the preflight's existence check).
    #[default]
    Read,
    /// Writes and deletes too (transfer, rollback).
    Write,
}

impl Access {
    /// The built-in role that grants it on a container.
    pub fn role(self) -> &'static str {
        match self {
            Access::Read => "Storage Blob Data Reader",
            Access::Write => "Storage Blob Data Contributor",
        }
    }
}

/// What to do when a blob with the same name already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Never replace it; the same content (same committed block list) is
    /// accepted as already landed, anything else fails that file.
    #[default]
    Never,
    /// Replace it only when its content differs.
    IfDifferent,
    /// Always replace it.
    Always,
}

/// Transfer counters for the summary.
#[derive(Debug, Default)]
pub struct BlobStats {
    /// Bytes sent to the service in staged blocks.
    pub bytes_sent: AtomicU64,
    /// Bytes not sent because the block was already staged (resume) or the
    /// blob already held the same content.
    pub bytes_reused: AtomicU64,
}

/// A blob container (and prefix) as a destination.
pub struct Blob {
    url: BlobUrl,
    cred: Credential,
    api: Api,
    access: Access,
    /// With Entra ID: the one container client, whose bearer policy caches
    /// and refreshes the token (key-based clients are made per request,
    /// each with a freshly signed SAS).
    shared: Option<azure_storage_blob::BlobContainerClient>,
    /// Set when the service refused the credential itself (shared-key
    /// access disabled, a role missing, the token refused): nothing more
    /// will land, so later requests fail at once and the run says why.
    refused: std::sync::OnceLock<String>,
    rt: tokio::runtime::Runtime,
    transport: Transport,
    block_size: usize,
    overwrite: Overwrite,
    stats: BlobStats,
    /// Set once a request exhausted its retries without an answer: later
    /// requests fail at once instead of each waiting out its own backoff.
    unreachable: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("url", &self.url.to_string())
            .field("api", &self.api)
            .field("auth", &self.cred.method())
            .field("block_size", &self.block_size)
            .finish_non_exhaustive()
    }
}

impl Blob {
    /// Transfer counters.
    pub fn stats(&self) -> &BlobStats {
        &self.stats
    }
}

/// Reads a blob in ranged requests of one block size each.
struct BlobReader<'b> {
    blob: &'b Blob,
    name: String,
    rel: String,
    size: u64,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let end = (self.pos + self.blob.block_size as u64).min(self.size);
            let container = self
                .blob
                .container()
                .map_err(|e| io::Error::other(self.blob.explain(&e)))?;
            let client = container.blob_client(&self.name);
            let range = self.pos..end;
            let data = self
                .blob
                .retry("download a range", || {
                    let options = BlobClientDownloadOptions {
                        range: Some(range.clone().into()),
                        ..Default::default()
                    };
                    let client = &client;
                    async move { client.download(Some(options)).await?.body.collect().await }
                })
                .map_err(|e| {
                    io::Error::other(format!("{}: {}", self.rel, self.blob.explain(&e)))
                })?;
            if data.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "blob shorter than its listed size",
                ));
            }
            self.pos += data.len() as u64;
            self.buf = data.to_vec();
            self.at = 0;
        }
        let n = (self.buf.len() - self.at).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Blob {
    /// A blob's size and ETag, or `None` if there is no such blob.
    fn properties(&self, rel: &RelPath) -> Result<Option<(u64, Version)>, DestError> {
        use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
        let name = self.url.blob_name(rel.as_str());
        let container = self
            .container()
            .map_err(|e| self.io_err(rel.as_str(), &e))?;
        let client = container.blob_client(&name);
        match self.retry("read blob properties", || client.get_properties(None)) {
            Ok(r) => Ok(Some((
                r.content_length().ok().flatten().unwrap_or(0),
                Version(
                    r.etag()
                        .ok()
                        .flatten()
                        .map(String::from)
                        .unwrap_or_default(),
                ),
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.io_err(rel.as_str(), &e)),
        }
    }
}

impl Destination for Blob {
    fn describe(&self) -> String {
        self.url.to_string()
    }

    fn landed_size(&self, rel: &RelPath) -> Result<Option<u64>, DestError> {
        Ok(self.properties(rel)?.map(|(size, _)| size))
    }

    fn version(&self, rel: &RelPath) -> Result<Option<Version>, DestError> {
        Ok(self.properties(rel)?.map(|(_, etag)| etag))
    }

    fn remove_if(&self, rel: &RelPath, version: &Version) -> Result<Removal, DestError> {
        let name = self.url.blob_name(rel.as_str());
        let container = self
            .container()
            .map_err(|e| self.io_err(rel.as_str(), &e))?;
        let client = container.blob_client(&name);
        // The service deletes only that version (If-Match its ETag): a blob
        // replaced since it was hashed is left.
        let deleted = self.retry("delete blob", || {
            client.delete(Some(BlobClientDeleteOptions {
                if_match: Some(version.0.clone().into()),
                ..Default::default()
            }))
        });
        match deleted {
            Ok(_) => Ok(Removal::Removed),
            Err(e) if is_not_found(&e) => Ok(Removal::Gone),
            Err(e) if status(&e).is_some_and(|s| u16::from(s) == 412) => Ok(Removal::Changed),
            Err(e) => Err(self.io_err(rel.as_str(), &e)),
        }
    }

    fn create(&self, rel: &RelPath, _mtime_ns: i64) -> Result<Box<dyn Landing + '_>, DestError> {
        let name = self.url.blob_name(rel.as_str());
        let container = self
            .container()
            .map_err(|e| self.io_err(rel.as_str(), &e))?;
        let client = container.blob_client(&name).block_blob_client();
        // Blocks the service already holds: staged by an interrupted
        // earlier upload, or committed by one that was not recorded (the
        // commit's `latest` list may name either), so neither is sent, or
        // left staged, again.
        let staged = block_list(self, &client, BlockListType::All, rel.as_str())?
            .into_iter()
            .collect();
        Ok(Box::new(BlobLanding {
            blob: self,
            name,
            rel: rel.to_string(),
            buf: Vec::with_capacity(self.block_size),
            ids: Vec::new(),
            staged,
            hasher: blake3::Hasher::new(),
        }))
    }

    fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send + '_>, DestError> {
        let size = self.landed_size(rel)?.ok_or_else(|| DestError::Io {
            path: format!("{}/{}", self.url, rel).into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        Ok(Box::new(BlobReader {
            blob: self,
            name: self.url.blob_name(rel.as_str()),
            rel: rel.to_string(),
            size,
            pos: 0,
            buf: Vec::new(),
            at: 0,
        }))
    }

    fn list(&self) -> Box<dyn Iterator<Item = Result<Listed, DestError>> + Send + '_> {
        let prefix = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        let pager = self.container().and_then(|c| {
            c.list_blobs(Some(BlobContainerClientListBlobsOptions {
                prefix: (!prefix.is_empty()).then(|| prefix.clone()),
                ..Default::default()
            }))
        });
        let mut pager = match pager {
            Ok(p) => Some(p),
            Err(e) => return Box::new(std::iter::once(Err(self.io_err("(listing)", &e)))),
        };
        // One page at a time: nothing holds the whole container's listing.
        Box::new(std::iter::from_fn(move || {
            let p = pager.as_mut()?;
            match self.rt.block_on(p.try_next()) {
                Ok(Some(item)) => {
                    let name = item.name.unwrap_or_default();
                    let rel = name.strip_prefix(&prefix).unwrap_or(&name).to_owned();
                    let size = item.properties.and_then(|p| p.content_length).unwrap_or(0);
                    Some(match RelPath::new(rel.clone()) {
                        Ok(rel) => Ok(Listed::Object { rel, size }),
                        Err(_) => Ok(Listed::Other {
                            path: rel,
                            what: "blob whose name is not a valid relative path",
                        }),
                    })
                }
                Ok(None) => None,
                Err(e) => {
                    pager = None;
                    Some(Err(self.io_err("(listing)", &e)))
                }
            }
        }))
    }

    fn flush(&self) -> Result<(), DestError> {
        // A committed block list is durable when the service answers.
        Ok(())
    }

    fn refused(&self) -> Option<String> {
        self.refused.get().cloned()
    }
}
