//! The retry policy every network destination keeps to (blob, DICOMweb):
//! which failures are worth another attempt ([`decide`]: no answer, 5xx,
//! 408, 429; never a TLS failure to verify the server, never another 4xx
//! but a bearer token's first 401), how long to wait (0.5 s doubling to
//! 16 s, with jitter), and when the endpoint is taken as down for the rest
//! of the run. Each destination applies it in its own `retry`, the only
//! places requests are retried.

use std::time::Duration;

/// Attempts per request (the first try plus retries).
pub(crate) const ATTEMPTS: u32 = 6;

/// Whether a failure with this HTTP status (`None`: the request never got
/// an answer: connection refused or reset, timeout, DNS) may pass on a
/// retry: 5xx, 408 and 429 may; no answer may, except a TLS failure to
/// verify the server, which no retry will fix.
pub(crate) fn is_transient(status: Option<u16>, tls: bool) -> bool {
    match status {
        Some(code) => code >= 500 || code == 408 || code == 429,
        None => !tls,
    }
}

/// Whether `e`, or anything in its chain of causes, is a TLS failure (the
/// server's certificate not trusted, a handshake refused): no retry fixes
/// that.
pub(crate) fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("ssl") || text.contains("tls") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// What to do after attempt number `attempt` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
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
pub(crate) fn decide(status: Option<u16>, tls: bool, bearer: bool, attempt: u32) -> Decision {
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
pub(crate) struct Backoff {
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
    pub(crate) fn next(&mut self, jitter: f64) -> Duration {
        let wait = self.delay.mul_f64(0.5 + jitter.clamp(0.0, 1.0));
        self.delay = (self.delay * 2).min(Duration::from_secs(16));
        wait
    }

    /// The next wait, with a uniform random jitter.
    pub(crate) fn next_jittered(&mut self) -> Duration {
        let jitter =
            f64::from(rand_core::RngCore::next_u32(&mut rand_core::OsRng)) / f64::from(u32::MAX);
        self.next(jitter)
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
