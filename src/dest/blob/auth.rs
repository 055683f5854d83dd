//! Credentials for blob endpoints: which way custody signs in
//! (`--azure-auth`), and where the secret comes from.
//!
//! Key-based: a SAS token, an account key (from which custody signs
//! short-lived account SAS, `sas`), or a connection string holding either.
//! Microsoft Entra ID: a token credential from Microsoft's azure_identity
//! (`entra`), sent as a bearer token, for accounts with shared-key access
//! turned off.
//!
//! Secrets come only from the environment (never from flags), are wiped on
//! drop, and never appear in `Debug` output, errors or logs.

pub mod entra;
mod sas;

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

pub use sas::{SasVersion, account_sas};

use super::{Api, BlobError, BlobUrl};

/// Environment variable: the storage account key (base64).
pub const KEY_ENV: &str = "AZURE_STORAGE_KEY";
/// Environment variable: a SAS token (query string, with or without `?`).
pub const SAS_ENV: &str = "AZURE_STORAGE_SAS_TOKEN";
/// Environment variable: a connection string.
pub const CONNECTION_STRING_ENV: &str = "AZURE_STORAGE_CONNECTION_STRING";

/// How custody signs in to a blob endpoint (`--azure-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// An account key, a SAS or a connection string (shared-key access).
    Key,
    /// The host's managed identity (App Service style `IDENTITY_ENDPOINT`
    /// and `IDENTITY_HEADER`, or the VM's instance metadata service).
    ManagedIdentity,
    /// A Kubernetes workload identity (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// A service principal with a client secret or a certificate.
    ServicePrincipal,
    /// Whoever `az login` signed in on this host.
    AzureCli,
}

impl AuthMethod {
    /// Every way, in the order messages list them.
    pub const ALL: [AuthMethod; 5] = [
        AuthMethod::Key,
        AuthMethod::ManagedIdentity,
        AuthMethod::WorkloadIdentity,
        AuthMethod::ServicePrincipal,
        AuthMethod::AzureCli,
    ];

    /// Its name, as `--azure-auth` and `CUSTODY_AZURE_AUTH` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Key => "key",
            AuthMethod::ManagedIdentity => "managed-identity",
            AuthMethod::WorkloadIdentity => "workload-identity",
            AuthMethod::ServicePrincipal => "service-principal",
            AuthMethod::AzureCli => "azure-cli",
        }
    }

    /// The way named `name` ([`AuthMethod::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How requests are authorised.
pub enum Credential {
    /// A SAS token (query string without `?`).
    Sas(Zeroizing<String>),
    /// An account key, from which custody signs short-lived account SAS.
    Key {
        /// The account name.
        account: String,
        /// The decoded key bytes.
        key: Zeroizing<Vec<u8>>,
    },
    /// Microsoft Entra ID: bearer tokens from this credential.
    Entra {
        /// Which way it signs in.
        method: AuthMethod,
        /// The tokens' source (checked: [`entra::Checked`]).
        token: Arc<dyn TokenCredential>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Sas(_) => f.write_str("Credential::Sas(<redacted>)"),
            Credential::Key { account, .. } => write!(f, "Credential::Key({account}, <redacted>)"),
            Credential::Entra { method, .. } => write!(f, "Credential::Entra({method})"),
        }
    }
}

/// Whether any of the key-based credential variables is set (not whether
/// it works).
pub fn is_set() -> bool {
    [SAS_ENV, KEY_ENV, CONNECTION_STRING_ENV]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// Whether a way to sign in is there: `method` names one, or a key-based
/// variable is set (what `Credential::from_env` falls back to).
pub fn is_configured(method: Option<AuthMethod>) -> bool {
    method.is_some_and(|m| m != AuthMethod::Key) || is_set()
}

/// The ways to sign in, for a message that lists them.
fn ways() -> String {
    format!(
        "an account key, SAS or connection string ({KEY_ENV}, {SAS_ENV}, {CONNECTION_STRING_ENV}), \
         or Microsoft Entra ID: --azure-auth {} (or CUSTODY_AZURE_AUTH)",
        AuthMethod::ALL[1..]
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

impl Credential {
    /// The credential for `url`, the way `method` names. With no method,
    /// key-based when a key, SAS or connection string is set (as before
    /// Entra ID sign-in existed), and an error listing the ways otherwise.
    /// Token requests go through `transport` (with `--ca-file`).
    ///
    /// # Errors
    /// [`BlobError::Credential`] when nothing is set, a variable the way
    /// needs is missing or malformed, or Entra ID is asked of a plain-http
    /// endpoint (never echoing a secret).
    pub fn from_env(
        url: &BlobUrl,
        method: Option<AuthMethod>,
        api: Api,
        transport: &Transport,
    ) -> Result<Self, BlobError> {
        let method = match method {
            Some(m) => m,
            None if is_set() => AuthMethod::Key,
            None if api == Api::DataBox => {
                return Err(BlobError::Credential(format!(
                    "no credential: a Data Box's Blob REST endpoint signs in with its account key \
                     (the device's local web UI shows it): set {KEY_ENV} or {CONNECTION_STRING_ENV}"
                )));
            }
            None => {
                return Err(BlobError::Credential(format!(
                    "no credential: sign in with {}",
                    ways()
                )));
            }
        };
        if method == AuthMethod::Key {
            return Self::key_from_env(url).map_err(|e| match e {
                BlobError::Credential(m) => BlobError::Credential(format!(
                    "{m} (--azure-auth key); or sign in with {}",
                    ways()
                )),
                other => other,
            });
        }
        if url.service.scheme() != "https" {
            return Err(BlobError::Credential(format!(
                "--azure-auth {method} needs an https:// endpoint: custody never sends a token in clear"
            )));
        }
        if api == Api::DataBox {
            tracing::warn!(
                method = method.as_str(),
                "Microsoft does not document Entra ID sign-in for a Data Box's Blob REST endpoint; \
                 its account key is the documented way"
            );
        }
        let token = entra::credential(method, transport)?;
        Ok(Credential::Entra { method, token })
    }

    /// Reads the key-based credential for `url` from the environment, in
    /// this order:
    /// `AZURE_STORAGE_SAS_TOKEN`, `AZURE_STORAGE_KEY` (for the URL's
    /// account), `AZURE_STORAGE_CONNECTION_STRING` (`AccountKey=` or
    /// `SharedAccessSignature=`).
    ///
    /// # Errors
    /// [`BlobError::Credential`] when none is set or one is malformed
    /// (never echoing the secret).
    fn key_from_env(url: &BlobUrl) -> Result<Self, BlobError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(sas) = get(SAS_ENV) {
            return Ok(Credential::Sas(Zeroizing::new(
                sas.trim().trim_start_matches('?').to_owned(),
            )));
        }
        if let Some(key) = get(KEY_ENV) {
            return Self::key(&url.account, key.trim(), KEY_ENV);
        }
        if let Some(cs) = get(CONNECTION_STRING_ENV) {
            let cs = Zeroizing::new(cs);
            let field = |name: &str| {
                cs.split(';').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
            };
            if let Some(sas) = field("SharedAccessSignature") {
                return Ok(Credential::Sas(Zeroizing::new(
                    sas.trim_start_matches('?').to_owned(),
                )));
            }
            let account = field("AccountName").unwrap_or_else(|| url.account.clone());
            if account != url.account {
                return Err(BlobError::Credential(format!(
                    "{CONNECTION_STRING_ENV} is for account {account}, but the URL names {}",
                    url.account
                )));
            }
            if let Some(key) = field("AccountKey") {
                return Self::key(&account, &key, CONNECTION_STRING_ENV);
            }
            return Err(BlobError::Credential(format!(
                "{CONNECTION_STRING_ENV} has neither AccountKey nor SharedAccessSignature"
            )));
        }
        Err(BlobError::Credential(format!(
            "no key-based credential: set {SAS_ENV}, {KEY_ENV} or {CONNECTION_STRING_ENV}"
        )))
    }

    fn key(account: &str, b64: &str, from: &str) -> Result<Self, BlobError> {
        let key = B64
            .decode(b64)
            .map_err(|_| BlobError::Credential(format!("{from}: the account key is not base64")))?;
        Ok(Credential::Key {
            account: account.to_owned(),
            key: Zeroizing::new(key),
        })
    }

    /// The query string that authorises requests now: the SAS token, or a
    /// freshly signed account SAS at `version` valid for `valid_for`;
    /// `None` for bearer tokens.
    pub fn query(
        &self,
        https_only: bool,
        valid_for: std::time::Duration,
        version: SasVersion,
    ) -> Option<Zeroizing<String>> {
        match self {
            Credential::Sas(t) => Some(t.clone()),
            Credential::Key { account, key } => {
                let now = jiff::Timestamp::now();
                let start = now - jiff::SignedDuration::from_secs(300); // clock skew
                let expiry = now + jiff::SignedDuration::try_from(valid_for).unwrap_or_default();
                Some(account_sas(
                    account, key, start, expiry, https_only, version,
                ))
            }
            Credential::Entra { .. } => None,
        }
    }

    /// The token source, for Entra ID sign-in.
    pub fn bearer(&self) -> Option<Arc<dyn TokenCredential>> {
        match self {
            Credential::Entra { token, .. } => Some(Arc::clone(token)),
            _ => None,
        }
    }

    /// The way it signs in.
    pub fn method(&self) -> AuthMethod {
        match self {
            Credential::Entra { method, .. } => *method,
            _ => AuthMethod::Key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_their_names() {
        for m in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(m.as_str()), Some(m));
        }
        assert_eq!(AuthMethod::parse("msi"), None);
        assert!(
            ways().contains("managed-identity | workload-identity | service-principal | azure-cli")
        );
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let key = B64.decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==").unwrap();
        let shown = format!(
            "{:?}",
            Credential::Key {
                account: "a".into(),
                key: Zeroizing::new(key)
            }
        );
        assert!(!shown.contains("Eby8"), "{shown}");
    }
}
