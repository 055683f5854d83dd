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
//! Retries live here and only here: transient failures (5xx, 408, 429,
//! connection errors) are retried with exponential backoff and jitter, a
//! bounded number of times; authentication and authorisation failures are
//! not retried. The SDK's own retry policy is turned off.

pub mod auth;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use azure_core::http::{ClientOptions, RequestContent, RetryOptions, StatusCode, Transport};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientDownloadOptions, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions, BlockListType,
    BlockLookupList,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures::TryStreamExt;

pub use auth::{BlobUrl, Credential, is_blob_url};

use super::{DestError, Destination, Landing, Listed, Removal, Version};
use crate::relpath::RelPath;

/// Default block size: large enough for throughput, small enough that
/// blocks in flight × block size stays modest.
pub const DEFAULT_BLOCK_SIZE: usize = 8 * 1024 * 1024;
/// Attempts per request (the first try plus retries).
const ATTEMPTS: u32 = 6;
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
    /// [`MAX_BLOCK_SIZE`].
    pub block_size: Option<usize>,
}

/// The largest block size custody stages (the service allows 4000 MiB;
/// custody holds one block per worker in memory).
pub const MAX_BLOCK_SIZE: usize = 256 * 1024 * 1024;

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
            .field("block_size", &self.block_size)
            .finish_non_exhaustive()
    }
}

fn status(e: &azure_core::Error) -> Option<StatusCode> {
    e.http_status()
}

fn is_transient(e: &azure_core::Error) -> bool {
    match status(e) {
        Some(s) => {
            let code = u16::from(s);
            code >= 500 || code == 408 || code == 429
        }
        // No HTTP status: the request never got an answer (connection
        // refused or reset, timeout, DNS): transient, except a TLS failure
        // to verify the server, which no retry will fix.
        None => !is_tls_failure(e),
    }
}

fn is_tls_failure(e: &azure_core::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("ssl") || text.contains("tls") {
            return true;
        }
        cause = c.source();
    }
    false
}

fn is_not_found(e: &azure_core::Error) -> bool {
    status(e).is_some_and(|s| u16::from(s) == 404)
}

fn describe(e: &azure_core::Error) -> String {
    match status(e).map(u16::from) {
        Some(401 | 403) => format!(
            "authentication or authorisation failed (HTTP {}): check the credential in {}, {} or {}",
            u16::from(status(e).expect("checked")),
            auth::SAS_ENV,
            auth::KEY_ENV,
            auth::CONNECTION_STRING_ENV
        ),
        Some(code) => format!("HTTP {code}: {}", first_line(e)),
        None if is_tls_failure(e) => format!(
            "TLS failed (is the server's certificate trusted? see --ca-file): {}",
            first_line(e)
        ),
        None => format!("no answer: {}", first_line(e)),
    }
}

/// An SDK error and its causes on one line, with any query string (a SAS)
/// cut off.
fn first_line(e: &azure_core::Error) -> String {
    let mut text = e.to_string().lines().next().unwrap_or_default().to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(c_text.lines().next().unwrap_or_default());
        }
        cause = c.source();
    }
    text.split_whitespace()
        .map(|w| {
            if w.contains("sig=") {
                auth::redact(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Blob {
    /// Opens a blob destination: reads the credential from the environment
    /// and checks (with one authenticated request) that the container can
    /// be reached, creating it when `create` is set.
    ///
    /// # Errors
    /// [`DestError::Unusable`] naming the URL and the cause (bad URL, no
    /// credential, authentication refused, endpoint not answering).
    pub fn open(url: &BlobUrl, create: bool, options: &BlobOptions) -> Result<Self, DestError> {
        let (blob, exists) = Self::connect(url, options)?;
        let unusable = |reason: String| DestError::Unusable {
            path: url.to_string().into(),
            reason,
        };
        if !exists {
            if !create {
                return Err(unusable(format!(
                    "container {} does not exist",
                    url.container
                )));
            }
            let container = blob.container().map_err(|e| unusable(describe(&e)))?;
            blob.retry("create the container", || async {
                match container.create(None).await {
                    Err(e) if status(&e).is_some_and(|s| u16::from(s) == 409) => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .map_err(|e| unusable(describe(&e)))?;
        }
        Ok(blob)
    }

    /// Opens a blob destination that may not exist yet, as [`Blob::open`]
    /// does without creating anything: `None` if the container does not
    /// exist.
    ///
    /// # Errors
    /// As [`Blob::open`].
    pub fn open_if_exists(url: &BlobUrl, options: &BlobOptions) -> Result<Option<Self>, DestError> {
        let (blob, exists) = Self::connect(url, options)?;
        Ok(exists.then_some(blob))
    }

    /// A client for `url`, and whether its container exists.
    fn connect(url: &BlobUrl, options: &BlobOptions) -> Result<(Self, bool), DestError> {
        let unusable = |reason: String| DestError::Unusable {
            path: url.to_string().into(),
            reason,
        };
        let cred = Credential::from_env(url).map_err(|e| unusable(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| unusable(format!("cannot start the I/O runtime: {e}")))?;
        let transport = http_client(options.ca_file.as_deref()).map_err(unusable)?;
        let blob = Blob {
            url: url.clone(),
            cred,
            rt,
            transport,
            block_size: match options.block_size {
                Some(n) if (1..=MAX_BLOCK_SIZE).contains(&n) => n,
                Some(n) => {
                    return Err(unusable(format!(
                        "block size {n} is out of range (1 byte to 256 MiB)"
                    )));
                }
                None => DEFAULT_BLOCK_SIZE,
            },
            overwrite: options.overwrite,
            stats: BlobStats::default(),
            unreachable: std::sync::atomic::AtomicBool::new(false),
        };
        let container = blob.container().map_err(|e| unusable(describe(&e)))?;
        let exists = blob
            .retry("check the container", || container.exists())
            .map_err(|e| unusable(describe(&e)))?;
        drop(container);
        Ok((blob, exists))
    }

    /// Transfer counters.
    pub fn stats(&self) -> &BlobStats {
        &self.stats
    }

    fn container(&self) -> azure_core::Result<BlobContainerClient> {
        let mut u = self.url.service.clone();
        u.path_segments_mut()
            .map_err(|()| {
                azure_core::Error::with_message(azure_core::error::ErrorKind::Other, "bad base URL")
            })?
            .pop_if_empty()
            .push(&self.url.container);
        let https_only = self.url.service.scheme() == "https";
        u.set_query(Some(&self.cred.query(https_only, SAS_LIFETIME)));
        let options = BlobContainerClientOptions {
            client_options: ClientOptions {
                retry: RetryOptions::none(),
                transport: Some(self.transport.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        BlobContainerClient::new(u, None, Some(options))
    }

    /// Runs `op` on the runtime, retrying transient failures with
    /// exponential backoff (0.5 s doubling, capped at 16 s) and jitter.
    fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> azure_core::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = azure_core::Result<T>>,
    {
        // Once a request has used up its retries on a transient failure
        // (no answer, or 5xx/408/429 every time), the endpoint is taken as
        // down for the rest of the run: later files fail at once instead of
        // each waiting through its own backoff, and the run ends incomplete
        // for the next one to resume.
        if self.unreachable.load(Ordering::Relaxed) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Io,
                "the endpoint kept failing earlier in this run (retries used up)",
            ));
        }
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.rt.block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= ATTEMPTS && (status(&e).is_none() || is_transient(&e)) => {
                    self.unreachable.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    let jitter = 0.5
                        + f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng))
                            / f64::from(u32::MAX);
                    let wait = delay.mul_f64(jitter);
                    tracing::warn!(what, attempt, wait_ms = wait.as_millis() as u64, error = %first_line(&e), "transient failure; retrying");
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(Duration::from_secs(16));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn io_err(&self, rel: &str, e: &azure_core::Error) -> DestError {
        DestError::Io {
            path: format!("{}/{}", self.url, rel).into(),
            source: io::Error::other(describe(e)),
        }
    }
}

/// A blob's committed or uncommitted block list as (id, size) pairs;
/// empty when the blob does not exist.
fn block_list(
    blob: &Blob,
    client: &azure_storage_blob::BlockBlobClient,
    kind: BlockListType,
    rel: &str,
) -> Result<Vec<(Vec<u8>, u64)>, DestError> {
    let (committed, uncommitted) = match kind {
        BlockListType::Committed => (true, false),
        BlockListType::Uncommitted => (false, true),
        _ => (true, true),
    };
    match blob.retry("read the block list", || client.get_block_list(kind, None)) {
        Ok(r) => {
            let list = r.into_model().map_err(|e| blob.io_err(rel, &e))?;
            let pick = |on: bool, blocks: Option<Vec<_>>| {
                if on {
                    blocks.unwrap_or_default()
                } else {
                    Vec::new()
                }
            };
            Ok(pick(committed, list.committed_blocks)
                .into_iter()
                .chain(pick(uncommitted, list.uncommitted_blocks))
                .filter_map(|b| Some((b.name?, u64::try_from(b.size?).ok()?)))
                .collect())
        }
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(blob.io_err(rel, &e)),
    }
}

/// The HTTP client: the SDK's settings (connect timeout 20 s, read timeout
/// 60 s, no redirects, no automatic decompression) plus the CA bundle.
fn http_client(ca_file: Option<&std::path::Path>) -> Result<Transport, String> {
    let mut builder = reqwest::ClientBuilder::new()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: not PEM certificates ({e})", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-file {}: no certificate in it",
                path.display()
            ));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(Transport::new(std::sync::Arc::new(client)))
}

/// The id of block `index` of blob `name` holding `data`.
fn block_id(name: &str, index: u64, data: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(b"custody-block/1\0");
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(&index.to_le_bytes());
    h.update(blake3::hash(data).as_bytes());
    h.finalize().as_bytes().to_vec()
}

struct BlobLanding<'b> {
    blob: &'b Blob,
    name: String,
    rel: String,
    buf: Vec<u8>,
    ids: Vec<Vec<u8>>,
    staged: HashMap<Vec<u8>, u64>,
    /// BLAKE3 of the blob's bytes, for the convenience metadata.
    hasher: blake3::Hasher,
}

impl BlobLanding<'_> {
    fn stage(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let id = block_id(&self.name, self.ids.len() as u64, &data);
        let len = data.len() as u64;
        if self.staged.get(&id) == Some(&len) {
            self.blob
                .stats
                .bytes_reused
                .fetch_add(len, Ordering::Relaxed);
        } else {
            let md5 = block_md5(&data);
            let container = self
                .blob
                .container()
                .map_err(|e| io::Error::other(describe(&e)))?;
            let client = container.blob_client(&self.name).block_blob_client();
            self.blob
                .retry("stage a block", || {
                    let options = BlockBlobClientStageBlockOptions {
                        transactional_content_md5: Some(md5.clone()),
                        ..Default::default()
                    };
                    client.stage_block(&id, len, RequestContent::from(data.clone()), Some(options))
                })
                .map_err(|e| io::Error::other(describe(&e)))?;
            self.blob.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
        }
        self.ids.push(id);
        self.buf = Vec::with_capacity(self.blob.block_size);
        Ok(())
    }
}

/// MD5 of a block, for the service's transactional check (integrity in
/// transit only; custody's own proof is BLAKE3).
fn block_md5(data: &[u8]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(data).to_vec()
}

impl Write for BlobLanding<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = (self.blob.block_size - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            self.hasher.update(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == self.blob.block_size {
                self.stage()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Landing for BlobLanding<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), DestError> {
        let rel = self.rel.clone();
        let fail = |e: io::Error| DestError::Io {
            path: format!("{}/{}", self.blob.url, rel).into(),
            source: e,
        };
        if !self.buf.is_empty() {
            self.stage().map_err(fail)?;
        }
        let blob = self.blob;
        let container = blob.container().map_err(|e| blob.io_err(&rel, &e))?;
        let blob_client = container.blob_client(&self.name);
        let client = blob_client.block_blob_client();
        // The overwrite policy, decided on content: equal committed block
        // lists mean equal bytes (block ids are content hashes). A blob
        // exists only once committed: staged blocks alone are not one.
        let existing_len =
            match blob.retry("read blob properties", || blob_client.get_properties(None)) {
                Ok(r) => {
                    use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
                    Some(r.content_length().ok().flatten().unwrap_or(0))
                }
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(blob.io_err(&rel, &e)),
            };
        if let Some(existing_len) = existing_len {
            let committed: Vec<Vec<u8>> =
                block_list(blob, &client, BlockListType::Committed, &rel)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
            let same = committed == self.ids && (!self.ids.is_empty() || existing_len == 0);
            match blob.overwrite {
                _ if same && blob.overwrite != Overwrite::Always => return Ok(()),
                Overwrite::Never => {
                    return Err(DestError::Io {
                        path: format!("{}/{}", blob.url, rel).into(),
                        source: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "a different blob already exists under this name; not overwritten (see --overwrite)",
                        ),
                    });
                }
                Overwrite::IfDifferent | Overwrite::Always => {}
            }
        }
        let list = BlockLookupList {
            committed: None,
            latest: Some(self.ids.clone()),
            uncommitted: None,
        };
        // Metadata for people browsing the container; verify never trusts
        // it (it re-reads and re-hashes the bytes).
        let metadata = HashMap::from([(
            "custody_blake3".to_owned(),
            self.hasher.finalize().to_hex().to_string(),
        )]);
        blob.retry("commit the block list", || {
            let body = list.clone().try_into();
            let client = &client;
            let options = BlockBlobClientCommitBlockListOptions {
                metadata: Some(metadata.clone()),
                ..Default::default()
            };
            async move { client.commit_block_list(body?, Some(options)).await }
        })
        .map_err(|e| blob.io_err(&rel, &e))?;
        Ok(())
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
                .map_err(|e| io::Error::other(describe(&e)))?;
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
                .map_err(|e| io::Error::other(format!("{}: {}", self.rel, describe(&e))))?;
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
}
