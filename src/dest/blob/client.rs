//! Connecting: the HTTP client (system TLS, with `--ca-file` added), the
//! credential and SAS from the environment, and the container client each
//! request is made through.

use std::time::Duration;

use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};

use super::retry::{describe, status};
use super::{
    Blob, BlobOptions, BlobStats, BlobUrl, Credential, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE,
    SAS_LIFETIME,
};
use crate::dest::DestError;

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
    pub(super) fn connect(url: &BlobUrl, options: &BlobOptions) -> Result<(Self, bool), DestError> {
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

    pub(super) fn container(&self) -> azure_core::Result<BlobContainerClient> {
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
}

/// The HTTP client: the SDK's settings (connect timeout 20 s, read timeout
/// 60 s, no redirects, no automatic decompression) plus the CA bundle.
pub(super) fn http_client(ca_file: Option<&std::path::Path>) -> Result<Transport, String> {
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
