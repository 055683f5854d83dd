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
use std::time::Duration;

use azure_core::http::StatusCode;

use azure_core::error::ErrorKind;

use super::{Access, AuthMethod, Blob, auth, url};
use crate::dest::DestError;

/// Attempts per request (the first try plus retries).
pub(super) const ATTEMPTS: u32 = 6;

pub(super) fn status(e: &azure_core::Error) -> Option<StatusCode> {
    e.http_status()
}

/// Whether a failure with this HTTP status (`None`: the request never got
/// an answer: connection refused or reset, timeout, DNS) may pass on a
/// retry: 5xx, 408 and 429 may; no answer may, except a TLS failure to
/// verify the server, which no retry will fix.
pub(super) fn is_transient(status: Option<u16>, tls: bool) -> bool {
    match status {
        Some(code) => code >= 500 || code == 408 || code == 429,
        None => !tls,
    }
}

/// What to do after attempt number `attempt` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Wait, then try again.
    Retry,
    /// Give up on this request: the failure is permanent.
    Fail,
    /// Give up, and take the endpoint as down for the rest of the run: a
    /// transient failure (or no answer) every time.
    Down,
}

/// The retry decision for a failure with `status` (and whether it was a
/// TLS failure) on attempt `attempt` of [`ATTEMPTS`]. A bearer token's
/// first 401 is tried once more: the SDK's policy has dropped the cached
/// token by then and signs in again (a token revoked or expired in
/// flight).
pub(super) fn decide(status: Option<u16>, tls: bool, bearer: bool, attempt: u32) -> Decision {
    if bearer && status == Some(401) && attempt == 1 {
        return Decision::Retry;
    }
    let transient = is_transient(status, tls);
    if attempt >= ATTEMPTS && (status.is_none() || transient) {
        Decision::Down
    } else if attempt < ATTEMPTS && transient {
        Decision::Retry
    } else {
        Decision::Fail
    }
}

/// Exponential backoff: 0.5 s doubling, capped at 16 s, each wait scaled by
/// a jitter factor in [0.5, 1.5].
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    /// The next wait; `jitter` in [0, 1] (uniform random in use).
    fn next(&mut self, jitter: f64) -> Duration {
        let wait = self.delay.mul_f64(0.5 + jitter.clamp(0.0, 1.0));
        self.delay = (self.delay * 2).min(Duration::from_secs(16));
        wait
    }
}

pub(super) fn is_tls_failure(e: &azure_core::Error) -> bool {
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
                    let jitter = f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng))
                        / f64::from(u32::MAX);
                    let wait = backoff.next(jitter);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_throttling_timeouts_and_no_answer_are_retried() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert_eq!(
                decide(Some(code), false, false, 1),
                Decision::Retry,
                "{code}"
            );
        }
        assert_eq!(decide(None, false, false, 1), Decision::Retry, "no answer");
        assert_eq!(decide(None, false, false, ATTEMPTS - 1), Decision::Retry);
    }

    #[test]
    fn client_errors_and_tls_failures_are_never_retried() {
        for code in [400, 401, 403, 404, 409, 412, 416] {
            assert_eq!(
                decide(Some(code), false, false, 1),
                Decision::Fail,
                "{code}"
            );
        }
        assert_eq!(decide(None, true, false, 1), Decision::Fail, "TLS");
        // A permanent failure on the last attempt does not take the
        // endpoint down: it answered.
        assert_eq!(decide(Some(403), false, false, ATTEMPTS), Decision::Fail);
    }

    #[test]
    fn a_bearer_tokens_first_401_is_tried_once_more() {
        assert_eq!(decide(Some(401), false, true, 1), Decision::Retry);
        assert_eq!(decide(Some(401), false, true, 2), Decision::Fail);
        assert_eq!(decide(Some(403), false, true, 1), Decision::Fail);
        assert_eq!(decide(Some(401), false, false, 1), Decision::Fail);
    }

    #[test]
    fn retries_used_up_take_the_endpoint_down() {
        assert_eq!(decide(Some(503), false, false, ATTEMPTS), Decision::Down);
        assert_eq!(decide(None, false, false, ATTEMPTS), Decision::Down);
        // No answer at all on the last attempt, even a TLS one.
        assert_eq!(decide(None, true, false, ATTEMPTS), Decision::Down);
    }

    #[test]
    fn backoff_doubles_to_sixteen_seconds_within_its_jitter() {
        let mut b = Backoff::default();
        let mid: Vec<_> = (0..8).map(|_| b.next(0.5)).collect();
        let secs: Vec<f64> = mid.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]);
        let mut b = Backoff::default();
        assert_eq!(b.next(0.0), Duration::from_millis(250));
        assert_eq!(b.next(1.0), Duration::from_millis(1500));
        assert_eq!(b.next(7.0), Duration::from_millis(3000), "clamped");
    }
}
