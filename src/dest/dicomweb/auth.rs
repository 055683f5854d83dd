//! Signing in to a DICOMweb service, from the environment only: Microsoft
//! Entra ID (`--azure-auth`, a token for the DICOM service's audience), HTTP
//! Basic for an on-prem server (`CUSTODY_DICOMWEB_USERNAME` and
//! `CUSTODY_DICOMWEB_PASSWORD`), or nothing for an open server. Azure's
//! DICOM service takes only Entra ID tokens.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;
use base64::Engine as _;

use super::DicomwebUrl;
use crate::dest::blob::AuthMethod;
use crate::dest::blob::auth::entra;

/// The user name for HTTP Basic.
pub const USERNAME_ENV: &str = "CUSTODY_DICOMWEB_USERNAME";
/// The password for HTTP Basic.
pub const PASSWORD_ENV: &str = "CUSTODY_DICOMWEB_PASSWORD";

/// How requests are signed.
pub(super) enum Auth {
    /// No `Authorization` header.
    Open,
    /// `Basic …` (the header value, secret).
    Basic(String),
    /// A bearer token from Entra ID, fetched (and cached by the SDK) per
    /// request.
    Bearer(AuthMethod, Arc<dyn TokenCredential>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Auth {
    /// The way to sign in to `url` that `method` and the environment
    /// choose.
    ///
    /// # Errors
    /// Why no usable way is configured, naming the variables or flag.
    pub(super) fn from_env(
        url: &DicomwebUrl,
        method: Option<AuthMethod>,
        transport: &Transport,
    ) -> Result<Self, String> {
        let basic = (var(USERNAME_ENV), var(PASSWORD_ENV));
        match method {
            Some(AuthMethod::Key) => Err(
                "--azure-auth key: a DICOMweb service takes no storage account key; \
                 use an Entra ID way, or HTTP Basic through CUSTODY_DICOMWEB_USERNAME and CUSTODY_DICOMWEB_PASSWORD"
                    .into(),
            ),
            Some(m) => entra::credential_for(m, transport, entra::DICOM)
                .map(|c| Auth::Bearer(m, c))
                .map_err(|e| e.to_string()),
            None if url.azure => Err(format!(
                "the Azure DICOM service takes only Microsoft Entra ID tokens; sign in with --azure-auth {}",
                AuthMethod::ALL[1..]
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            )),
            None => match basic {
                (Some(user), Some(password)) => {
                    if user.contains(':') {
                        return Err(format!(
                            "{USERNAME_ENV} has a ':' in it, which HTTP Basic cannot carry"
                        ));
                    }
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{password}"));
                    Ok(Auth::Basic(format!("Basic {token}")))
                }
                (Some(_), None) => Err(format!("{USERNAME_ENV} is set but {PASSWORD_ENV} is not")),
                (None, Some(_)) => Err(format!("{PASSWORD_ENV} is set but {USERNAME_ENV} is not")),
                (None, None) => Ok(Auth::Open),
            },
        }
    }

    /// What it is called in messages.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Auth::Open => "no sign-in",
            Auth::Basic(_) => "HTTP Basic (CUSTODY_DICOMWEB_USERNAME)",
            Auth::Bearer(m, _) => m.as_str(),
        }
    }

    /// The `Authorization` header's value, if any.
    ///
    /// # Errors
    /// The token could not be had (the message names the way, never the
    /// token).
    pub(super) async fn header(&self) -> Result<Option<String>, String> {
        match self {
            Auth::Open => Ok(None),
            Auth::Basic(h) => Ok(Some(h.clone())),
            Auth::Bearer(m, cred) => {
                let scope = format!("{}/.default", entra::DICOM.resource);
                let token = cred.get_token(&[scope.as_str()], None).await.map_err(|e| {
                    format!(
                        "--azure-auth {m}: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    )
                })?;
                Ok(Some(format!("Bearer {}", token.token.secret())))
            }
        }
    }
}
