//! Connecting: the HTTP client (system TLS, with `--ca-file` added), the
//! credential from the environment, the API the endpoint speaks, and the
//! container client each request is made through.

use std::ops::Deref;
use std::time::Duration;

use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};

use super::retry::status;
use super::{
    Api, Blob, BlobOptions, BlobStats, BlobUrl, Credential, DEFAULT_BLOCK_SIZE, SAS_LIFETIME,
};
use crate::dest::DestError;

/// The container client a request goes through: made for it (with a fresh
/// SAS), or the one shared client (Entra ID).
pub(super) enum Container<'b> {
    Own(BlobContainerClient),
    Shared(&'b BlobContainerClient),
}

impl Deref for Container<'_> {
    type Target = BlobContainerClient;

    fn deref(&self) -> &BlobContainerClient {
        match self {
            Container::Own(c) => c,
            Container::Shared(c) => c,
        }
    }
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
            let container = blob.container().map_err(|e| unusable(blob.explain(&e)))?;
            blob.retry("create the container", || async {
                match container.create(None).await {
                    Err(e) if status(&e).is_some_and(|s| u16::from(s) == 409) => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .map_err(|e| unusable(blob.explain(&e)))?;
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
        let api = Api::of(url, options.databox_rest);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| unusable(format!("cannot start the I/O runtime: {e}")))?;
        let transport = http_client(options.ca_file.as_deref()).map_err(unusable)?;
        let cred = Credential::from_env(url, options.auth, api, &transport)
            .map_err(|e| unusable(e.to_string()))?;
        let max_block = api.max_block_size();
        let block_size = match options.block_size {
            Some(n) if (1..=max_block).contains(&n) => n,
            Some(n) => {
                return Err(unusable(format!(
                    "block size {} MiB is out of range for {} (at most {} MiB)",
                    n >> 20,
                    api.name(),
                    max_block >> 20
                )));
            }
            None => DEFAULT_BLOCK_SIZE,
        };
        let shared = match cred.bearer() {
            Some(token) => Some(
                BlobContainerClient::new(
                    container_url(url).map_err(|e| unusable(e.to_string()))?,
                    Some(token),
                    Some(client_options(api, &transport)),
                )
                .map_err(|e| unusable(e.to_string()))?,
            ),
            None => None,
        };
        let blob = Blob {
            url: url.clone(),
            cred,
            api,
            access: options.access,
            shared,
            refused: std::sync::OnceLock::new(),
            rt,
            transport,
            block_size,
            overwrite: options.overwrite,
            stats: BlobStats::default(),
            unreachable: std::sync::atomic::AtomicBool::new(false),
        };
        // One authenticated request before anything moves: a refused
        // credential, a token that is expired or for another service, or
        // an API version the endpoint does not take ends here.
        let container = blob.container().map_err(|e| unusable(blob.explain(&e)))?;
        let exists = blob
            .retry("check the container", || container.exists())
            .map_err(|e| unusable(blob.explain(&e)))?;
        drop(container);
        tracing::debug!(
            url = %blob.url,
            api = ?blob.api,
            auth = blob.cred.method().as_str(),
            "blob endpoint reached"
        );
        Ok((blob, exists))
    }

    /// The client for the destination's container.
    pub(super) fn container(&self) -> azure_core::Result<Container<'_>> {
        if let Some(shared) = &self.shared {
            return Ok(Container::Shared(shared));
        }
        let mut u = container_url(&self.url)?;
        let https_only = self.url.service.scheme() == "https";
        if let Some(q) = self
            .cred
            .query(https_only, SAS_LIFETIME, self.api.sas_version())
        {
            u.set_query(Some(&q));
        }
        BlobContainerClient::new(u, None, Some(client_options(self.api, &self.transport)))
            .map(Container::Own)
    }
}

/// The container's URL, without any query.
fn container_url(url: &BlobUrl) -> azure_core::Result<azure_core::http::Url> {
    let mut u = url.service.clone();
    u.path_segments_mut()
        .map_err(|()| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, "bad base URL")
        })?
        .pop_if_empty()
        .push(&url.container);
    Ok(u)
}

/// The client's options: no SDK retries (`retry` is the one place), this
/// transport, and the API version the endpoint speaks.
fn client_options(api: Api, transport: &Transport) -> BlobContainerClientOptions {
    let mut options = BlobContainerClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions::none(),
            transport: Some(transport.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(v) = api.version() {
        options.version = v.to_owned();
    }
    options
}

/// The HTTP client: the SDK's settings (connect timeout 20 s, read timeout
/// 60 s, no redirects, no automatic decompression) plus the CA bundle.
pub(super) fn http_client(ca_file: Option<&std::path::Path>) -> Result<Transport, String> {
    Ok(Transport::new(std::sync::Arc::new(reqwest_client(
        ca_file,
    )?)))
}

/// The reqwest client under [`http_client`] (the DICOMweb destination
/// makes its requests with it directly).
pub(crate) fn reqwest_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
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
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
