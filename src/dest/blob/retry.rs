//! Retries, and the circuit breakers, of the blob destination: the one
//! place requests are retried. Which failures are worth another attempt
//! ([`decide`]: no answer, 5xx, 408, 429; never a TLS failure to verify
//! the server, never another 4xx but a bearer token's first 401), how long
//! to wait (0.5 s doubling to 16 s, with jitter), when the endpoint is
//! taken as down for the rest of the run, and when the credential is
//! taken as refused ([`refusal`]: what the service's 401 or 403 says, in
//! one line naming what to do).

use std::io;
use std::sync::atomic::Ordering;

use azure_core::http::StatusCode;

use azure_core::error::ErrorKind;

use super::{Access, AuthMethod, Blob, auth, url};
use crate::dest::DestError;
use crate::dest::retry::{Backoff, Decision, decide};

pub(super) fn status(e: &azure_core::Error) -> Option<StatusCode> {
    e.http_status()
}

pub(super) fn is_tls_failure(e: &azure_core::Error) -> bool {
    crate::dest::retry::is_tls_failure(e)
}

pub(super) fn is_not_found(e: &azure_core::Error) -> bool {
    status(e).is_some_and(|s| u16::from(s) == 404)
}

/// The service's error code (`x-ms-error-code`), when it sent one.
fn error_code(e: &azure_core::Error) -> Option<&str> {
    match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// What a refusal of the credential means, in one line naming what to do;
/// `None` when `e` is not one. Refusals are a 401 or 403 from the service
/// (shared-key access disabled on the account, a role the identity lacks,
/// a token or signature it does not take) and a sign-in that failed before
/// any request was sent.
pub(super) fn refusal(e: &azure_core::Error, method: AuthMethod, access: Access) -> Option<String> {
    if matches!(e.kind(), ErrorKind::Credential) {
        return Some(format!("sign-in failed: {}", first_line(e)));
    }
    let code = u16::from(status(e)?);
    if code != 401 && code != 403 {
        return None;
    }
    let detail = error_code(e).unwrap_or("no error code");
    let entra = AuthMethod::ALL[1..]
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    Some(match error_code(e) {
        Some("KeyBasedAuthenticationNotPermitted") => format!(
            "shared-key access is disabled on this storage account (HTTP {code} KeyBasedAuthenticationNotPermitted): \
             account keys and every SAS made from them are refused; sign in with Microsoft Entra ID: --azure-auth {entra}"
        ),
        Some("AuthorizationPermissionMismatch") if method != AuthMethod::Key => format!(
            "the identity signed in with --azure-auth {method} lacks a role here (HTTP {code} {detail}): \
             this command needs {} on the container or the account",
            access.role()
        ),
        _ if method == AuthMethod::Key => format!(
            "authentication or authorisation failed (HTTP {code}): {detail}: check the credential in {}, {} or {}",
            auth::SAS_ENV,
            auth::KEY_ENV,
            auth::CONNECTION_STRING_ENV
        ),
        _ => format!(
            "the service refused the token from --azure-auth {method} (HTTP {code} {detail}): {}",
            first_line(e)
        ),
    })
}

/// An SDK error in one line: what the service or the connection said.
pub(super) fn describe(e: &azure_core::Error) -> String {
    match status(e).map(u16::from) {
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
pub(super) fn first_line(e: &azure_core::Error) -> String {
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
                url::redact(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Blob {
    /// Runs `op` on the runtime, retrying transient failures with
    /// exponential backoff (0.5 s doubling, capped at 16 s) and jitter.
    pub(super) fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> azure_core::Result<T>
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
        // A refused credential stays refused: no request is sent with it
        // again (the first refusal's message is what the run reports).
        if let Some(why) = self.refused.get() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!("not sent: {why}"),
            ));
        }
        let mut backoff = Backoff::default();
        let mut attempt = 1;
        loop {
            let e = match self.rt.block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let bearer = self.shared.is_some();
            let first_bearer_401 = attempt == 1 && bearer && status(&e).map(u16::from) == Some(401);
            if !first_bearer_401 && let Some(why) = refusal(&e, self.cred.method(), self.access) {
                let _ = self.refused.set(why);
                return Err(e);
            }
            match decide(
                status(&e).map(u16::from),
                is_tls_failure(&e),
                bearer,
                attempt,
            ) {
                Decision::Fail => return Err(e),
                Decision::Down => {
                    self.unreachable.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Decision::Retry => {
                    let wait = backoff.next_jittered();
                    tracing::warn!(what, attempt, wait_ms = wait.as_millis() as u64, error = %first_line(&e), "transient failure; retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }

    /// An SDK error in one line: the refusal's meaning when it is one,
    /// what was said otherwise.
    pub(super) fn explain(&self, e: &azure_core::Error) -> String {
        self.refused
            .get()
            .cloned()
            .or_else(|| refusal(e, self.cred.method(), self.access))
            .unwrap_or_else(|| describe(e))
    }

    pub(super) fn io_err(&self, rel: &str, e: &azure_core::Error) -> DestError {
        DestError::Io {
            path: format!("{}/{}", self.url, rel).into(),
            source: io::Error::other(self.explain(e)),
        }
    }
}
