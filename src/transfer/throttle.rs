//! `--bwlimit`: one token bucket shared by all workers, refilled at the
//! rate the timetable has in force, taken from before every destination
//! write.
//!
//! The bucket holds one second's worth of bytes (so a write never waits
//! for more than it could ever hold, a write larger than that is taken in
//! pieces). The timetable is read at every write: when the rate in force
//! changes, a fresh bucket at the new rate replaces the old one, and the
//! change is logged.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::schedule::{Bwlimit, Clock, describe_rate};

/// The longest one wait sleeps before the timetable is read again.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// The bandwidth limit of one run.
#[derive(Debug)]
pub(crate) struct Throttle {
    table: Option<Bwlimit>,
    clock: Clock,
    /// `None` before the first write.
    in_force: Mutex<Option<InForce>>,
}

/// The rate in force (bytes per second, `None`: no limit) and its bucket.
#[derive(Debug)]
struct InForce {
    rate: Option<u64>,
    bucket: Option<Arc<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

impl Throttle {
    pub(crate) fn new(table: Option<Bwlimit>, clock: Clock) -> Self {
        Throttle {
            table,
            clock,
            in_force: Mutex::default(),
        }
    }

    /// The bucket for the rate in force now (`None`: no limit).
    fn bucket(&self, table: &Bwlimit) -> Option<Arc<Bucket>> {
        let rate = table.rate_at(&self.clock.now());
        let mut current = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some(now) if now.rate == rate => now.bucket.clone(),
            _ => {
                tracing::info!(
                    "bandwidth limit {} (--bwlimit {table})",
                    describe_rate(rate)
                );
                let bucket = rate.map(|r| {
                    // `Bwlimit` keeps rates within 1..=u32::MAX.
                    let rate = NonZeroU32::new(u32::try_from(r).unwrap_or(u32::MAX))
                        .unwrap_or(NonZeroU32::MIN);
                    Arc::new(Bucket {
                        rate,
                        limiter: DefaultDirectRateLimiter::direct(Quota::per_second(rate)),
                    })
                });
                *current = Some(InForce {
                    rate,
                    bucket: bucket.clone(),
                });
                bucket
            }
        }
    }

    /// Waits until `n` bytes may be written.
    pub(crate) fn take(&self, n: usize) {
        let Some(table) = &self.table else {
            return;
        };
        let mut left = n as u64;
        while left > 0 {
            let Some(bucket) = self.bucket(table) else {
                return;
            };
            let piece = left.min(u64::from(bucket.rate.get()));
            let cells = NonZeroU32::new(piece as u32).unwrap_or(NonZeroU32::MIN);
            match bucket.limiter.check_n(cells) {
                Ok(Ok(())) | Err(_) => left -= piece,
                Ok(Err(not_until)) => std::thread::sleep(
                    not_until
                        .wait_time_from(DefaultClock::default().now())
                        .min(LONGEST_WAIT),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn writes_past_the_first_seconds_worth_wait_for_the_rate() {
        let now: jiff::ZonedDateTime = "2026-11-24T12:00[UTC]".parse().unwrap();
        let t = Throttle::new(
            Some("06:00,64K 19:00,off".parse().unwrap()),
            Clock::starting_at(&now),
        );
        let started = Instant::now();
        // A full bucket (64 KiB), then 64 KiB more in pieces: one second.
        t.take(64 << 10);
        t.take(48 << 10);
        t.take(16 << 10);
        assert!(started.elapsed() >= Duration::from_millis(990));
        // Off from 19:00: no bucket.
        let now: jiff::ZonedDateTime = "2026-11-24T19:00[UTC]".parse().unwrap();
        let t = Throttle::new(
            Some("06:00,64K 19:00,off".parse().unwrap()),
            Clock::starting_at(&now),
        );
        t.take(1 << 30);
        assert!(
            t.in_force
                .lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .bucket
                .is_none(),
            "no limit in force"
        );
    }
}
