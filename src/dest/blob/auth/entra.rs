//! Microsoft Entra ID sign-in: the token credential `--azure-auth` names,
//! built by Microsoft's azure_identity from the standard Azure variables,
//! behind a check ([`Checked`]) that every token it hands out is still
//! valid and meant for the service it is sent to.
//!
//! | way | variables |
//! | --- | --- |
//! | `managed-identity` | `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service style), else the VM's instance metadata service; `AZURE_CLIENT_ID` picks a user-assigned identity |
//! | `workload-identity` | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST` |
//! | `service-principal` | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, then `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` (+ `AZURE_CLIENT_CERTIFICATE_PASSWORD`), `AZURE_AUTHORITY_HOST` |
//! | `azure-cli` | whoever `az login` signed in |
//!
//! Tokens are cached and refreshed by the SDK's bearer policy (five
//! minutes before they expire), so a run that lasts days signs in again
//! as often as its tokens need. No token, secret or certificate password
//! is ever logged or shown: only which way failed and why.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientCertificateCredential, ClientCertificateCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use base64::Engine;
use zeroize::Zeroizing;

use super::AuthMethod;
use crate::dest::blob::BlobError;

/// The tenant (directory) of an application.
pub const TENANT_ENV: &str = "AZURE_TENANT_ID";
/// The application (client) id; for managed identity, a user-assigned one.
pub const CLIENT_ENV: &str = "AZURE_CLIENT_ID";
/// A service principal's client secret.
pub const SECRET_ENV: &str = "AZURE_CLIENT_SECRET";
/// A service principal's certificate: PEM (certificate and private key)
/// or PKCS#12.
pub const CERTIFICATE_ENV: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// The certificate's password, when it has one.
pub const CERTIFICATE_PASSWORD_ENV: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
/// A workload identity's federated token file.
pub const FEDERATED_TOKEN_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// App Service style managed identity: the token endpoint.
pub const IDENTITY_ENDPOINT_ENV: &str = "IDENTITY_ENDPOINT";
/// App Service style managed identity: the header it checks.
pub const IDENTITY_HEADER_ENV: &str = "IDENTITY_HEADER";

/// Azure Storage as an audience: what a token for it may carry in `aud`
/// (the resource URI, with or without its slash; the resource's app id;
/// or one account's blob endpoint).
pub const STORAGE: Audience = Audience {
    name: "Azure Storage",
    resource: "https://storage.azure.com",
    also: &["e406a681-f3d4-42a8-90b6-c2b029497af1"],
    blob_hosts: true,
};

/// Azure Health Data Services' DICOM service as an audience (its
/// documentation: "the resource is https://dicom.healthcareapis.azure.com").
pub const DICOM: Audience = Audience {
    name: "the Azure DICOM service",
    resource: "https://dicom.healthcareapis.azure.com",
    also: &[],
    blob_hosts: false,
};

/// The service a token is for.
#[derive(Debug, Clone, Copy)]
pub struct Audience {
    /// What it is called in messages.
    pub name: &'static str,
    /// Its resource URI (the scope is this plus `/.default`).
    pub resource: &'static str,
    /// Other `aud` values that stand for it.
    pub also: &'static [&'static str],
    /// Whether an account's own `https://<account>.blob.…` endpoint is it.
    pub blob_hosts: bool,
}

impl Audience {
    fn accepts(&self, aud: &str) -> bool {
        let bare = aud.trim_end_matches('/');
        bare.eq_ignore_ascii_case(self.resource)
            || self.also.iter().any(|a| a.eq_ignore_ascii_case(bare))
            || (self.blob_hosts
                && url::Url::parse(bare).is_ok_and(|u| {
                    u.scheme() == "https" && u.host_str().is_some_and(|h| h.contains(".blob."))
                }))
    }
}

fn missing(method: AuthMethod, names: &[&str]) -> BlobError {
    BlobError::Credential(format!(
        "--azure-auth {method} needs {} in the environment",
        names.join(", ")
    ))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn sdk_error(method: AuthMethod, e: &azure_core::Error) -> BlobError {
    BlobError::Credential(format!(
        "--azure-auth {method}: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

/// The token credential of `method` (not [`AuthMethod::Key`]) for Azure
/// Storage, its requests sent through `transport`, checked by [`Checked`].
///
/// # Errors
/// [`BlobError::Credential`] naming the variables the way needs that are
/// missing, or why the SDK refused them.
pub fn credential(
    method: AuthMethod,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, BlobError> {
    credential_for(method, transport, STORAGE)
}

/// [`credential`] for another service: its tokens are checked against
/// `audience`.
///
/// # Errors
/// As [`credential`].
pub fn credential_for(
    method: AuthMethod,
    transport: &Transport,
    audience: Audience,
) -> Result<Arc<dyn TokenCredential>, BlobError> {
    let client_options = ClientOptions {
        transport: Some(transport.clone()),
        ..Default::default()
    };
    let inner: Arc<dyn TokenCredential> = match method {
        AuthMethod::Key => {
            return Err(BlobError::Credential(
                "an account key is not an Entra ID credential".into(),
            ));
        }
        AuthMethod::ManagedIdentity => {
            // With the endpoint and no header, the SDK would quietly try the
            // VM's metadata service instead, and time out off Azure.
            if var(IDENTITY_ENDPOINT_ENV).is_some() && var(IDENTITY_HEADER_ENV).is_none() {
                return Err(BlobError::Credential(format!(
                    "--azure-auth {method}: {IDENTITY_ENDPOINT_ENV} is set but {IDENTITY_HEADER_ENV} is not; \
                     an App Service style identity endpoint needs both"
                )));
            }
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: var(CLIENT_ENV).map(UserAssignedId::ClientId),
                client_options,
            }))
            .map_err(|e| sdk_error(method, &e))?
        }
        AuthMethod::WorkloadIdentity => {
            let absent: Vec<&str> = [TENANT_ENV, CLIENT_ENV, FEDERATED_TOKEN_ENV]
                .into_iter()
                .filter(|n| var(n).is_none())
                .collect();
            if !absent.is_empty() {
                return Err(missing(method, &absent));
            }
            let mut options = WorkloadIdentityCredentialOptions::default();
            options.credential_options.client_options = client_options;
            WorkloadIdentityCredential::new(Some(options)).map_err(|e| sdk_error(method, &e))?
        }
        AuthMethod::ServicePrincipal => {
            let (Some(tenant), Some(client)) = (var(TENANT_ENV), var(CLIENT_ENV)) else {
                let absent: Vec<&str> = [TENANT_ENV, CLIENT_ENV]
                    .into_iter()
                    .filter(|n| var(n).is_none())
                    .collect();
                return Err(missing(method, &absent));
            };
            if let Some(secret) = var(SECRET_ENV) {
                ClientSecretCredential::new(
                    &tenant,
                    client,
                    Secret::new(secret),
                    Some(ClientSecretCredentialOptions { client_options }),
                )
                .map_err(|e| sdk_error(method, &e))?
            } else if let Some(path) = var(CERTIFICATE_ENV) {
                let password = var(CERTIFICATE_PASSWORD_ENV).map(Zeroizing::new);
                let pkcs12 =
                    certificate(Path::new(&path), password.as_deref().map(String::as_str))?;
                ClientCertificateCredential::new(
                    tenant,
                    client,
                    pkcs12.into(),
                    Some(ClientCertificateCredentialOptions {
                        client_options,
                        password: password.map(|p| Secret::new(p.to_string())),
                    }),
                )
                .map_err(|e| sdk_error(method, &e))?
            } else {
                return Err(BlobError::Credential(format!(
                    "--azure-auth {method} needs {SECRET_ENV} or {CERTIFICATE_ENV} in the environment"
                )));
            }
        }
        AuthMethod::AzureCli => AzureCliCredential::new(None).map_err(|e| sdk_error(method, &e))?,
    };
    Ok(Arc::new(Checked {
        inner,
        method,
        audience,
    }))
}

/// A certificate file as the PKCS#12 bytes the SDK takes: PKCS#12 as it
/// is, PEM (a certificate and its private key, as `az ad sp
/// create-for-rbac --create-cert` writes) converted.
fn certificate(path: &Path, password: Option<&str>) -> Result<Vec<u8>, BlobError> {
    let bad =
        |why: String| BlobError::Credential(format!("{CERTIFICATE_ENV} {}: {why}", path.display()));
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
    if !bytes.starts_with(b"-----BEGIN") && !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Ok(bytes.to_vec());
    }
    let cert = openssl::x509::X509::from_pem(&bytes)
        .map_err(|_| bad("no PEM certificate in it".into()))?;
    let key = match password {
        Some(p) => openssl::pkey::PKey::private_key_from_pem_passphrase(&bytes, p.as_bytes()),
        None => openssl::pkey::PKey::private_key_from_pem(&bytes),
    }
    .map_err(|_| {
        bad("no readable private key in it (wrong AZURE_CLIENT_CERTIFICATE_PASSWORD?)".into())
    })?;
    let der = openssl::pkcs12::Pkcs12::builder()
        .name("custody")
        .pkey(&key)
        .cert(&cert)
        .build2(password.unwrap_or(""))
        .and_then(|p| p.to_der())
        .map_err(|e| bad(format!("cannot bundle it: {e}")))?;
    Ok(der)
}

/// A token credential whose every token is checked before use: one that
/// has already expired, or is for another service, is refused with a line
/// saying so, instead of being sent for the service to refuse.
pub struct Checked {
    inner: Arc<dyn TokenCredential>,
    method: AuthMethod,
    audience: Audience,
}

impl fmt::Debug for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checked")
            .field("method", &self.method)
            .field("audience", &self.audience.name)
            .finish_non_exhaustive()
    }
}

/// The claims of a JSON Web Token that the check reads. Its signature is
/// not checked: the service does that.
#[derive(Debug, Default, serde::Deserialize)]
struct Claims {
    aud: Option<serde_json::Value>,
    exp: Option<i64>,
}

fn claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Why a token must not be used, if it must not.
fn problem(token: &AccessToken, audience: &Audience, now: i64) -> Option<String> {
    let claims = claims(token.token.secret()).unwrap_or_default();
    let expires = claims
        .exp
        .unwrap_or_else(|| token.expires_on.unix_timestamp());
    if expires <= now {
        let at = jiff::Timestamp::from_second(expires)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| expires.to_string());
        return Some(format!(
            "the token it returned expired at {at} (is this host's clock right?)"
        ));
    }
    let auds: Vec<&str> = match &claims.aud {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(v)) => v.iter().filter_map(|a| a.as_str()).collect(),
        _ => Vec::new(),
    };
    if !auds.is_empty() && !auds.iter().any(|a| audience.accepts(a)) {
        return Some(format!(
            "the token it returned is for {}, not {} ({})",
            auds.join(", "),
            audience.name,
            audience.resource
        ));
    }
    None
}

#[async_trait::async_trait]
impl TokenCredential for Checked {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = self.inner.get_token(scopes, options).await?;
        tracing::debug!(
            method = self.method.as_str(),
            expires = %token.expires_on,
            "signed in with Microsoft Entra ID"
        );
        match problem(&token, &self.audience, jiff::Timestamp::now().as_second()) {
            None => Ok(token),
            Some(why) => Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!("--azure-auth {}: {why}", self.method),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> AccessToken {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b(r#"{"alg":"none"}"#), b(payload));
        AccessToken::new(
            Secret::new(token),
            azure_core::time::OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap(),
        )
    }

    #[test]
    fn a_storage_token_passes_in_every_spelling_of_its_audience() {
        for aud in [
            "https://storage.azure.com",
            "https://storage.azure.com/",
            "e406a681-f3d4-42a8-90b6-c2b029497af1",
            "https://contoso.blob.core.windows.net",
        ] {
            let t = jwt(&format!(r#"{{"aud":"{aud}","exp":1900000000}}"#));
            assert_eq!(problem(&t, &STORAGE, 1_800_000_000), None, "{aud}");
        }
    }

    #[test]
    fn an_expired_token_or_another_services_token_is_refused_by_name() {
        let t = jwt(r#"{"aud":"https://storage.azure.com","exp":1700000000}"#);
        let why = problem(&t, &STORAGE, 1_800_000_000).unwrap();
        assert!(why.contains("expired at 2023-11-14T22:13:20Z"), "{why}");
        let t = jwt(r#"{"aud":"https://management.azure.com/","exp":1900000000}"#);
        let why = problem(&t, &STORAGE, 1_800_000_000).unwrap();
        assert!(
            why.contains("is for https://management.azure.com/, not Azure Storage"),
            "{why}"
        );
        // No token text in the message.
        assert!(!why.contains("eyJ"), "{why}");
    }

    #[test]
    fn an_opaque_token_is_judged_by_its_expiry_alone() {
        let t = AccessToken::new(
            Secret::new("opaque"),
            azure_core::time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap(),
        );
        assert_eq!(problem(&t, &STORAGE, 1_800_000_000), None);
        assert!(problem(&t, &STORAGE, 1_950_000_000).is_some());
    }
}
