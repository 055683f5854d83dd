//! `--bwlimit` as a layer of the destination: [`Throttled`] wraps any
//! [`Destination`], and every write to one of its landings first takes its
//! bytes from one token bucket shared by all workers, refilled at the rate
//! in force ([`Rate`]: for a transfer, the `--bwlimit` timetable read
//! against the run's clock).
//!
//! The bucket holds one second's worth of bytes (so a write never waits
//! for more than it could ever hold, a write larger than that is taken in
//! pieces). The rate is read at every write: when the rate in force
//! changes, a fresh bucket at the new rate replaces the old one, and the
//! rate says so ([`Rate::changed`]). Reads, listings and removals pass
//! through unthrottled.

use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use super::{DestError, Destination, Fan, Landing, Listed, Removal, Version};
use crate::relpath::RelPath;

/// The longest one wait sleeps before the rate is read again.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// The rate a [`Throttle`] keeps to, read before every write.
pub trait Rate: Send + Sync + std::fmt::Debug {
    /// Bytes per second in force now (`None`: no limit; at least 1).
    fn now(&self) -> Option<u64>;

    /// The rate in force became `rate` (the first write included).
    fn changed(&self, rate: Option<u64>) {
        let _ = rate;
    }
}

/// The bandwidth limit of one run.
#[derive(Debug)]
pub struct Throttle {
    rate: Box<dyn Rate>,
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
    /// A throttle keeping to `rate`.
    pub fn new(rate: impl Rate + 'static) -> Self {
        Throttle {
            rate: Box::new(rate),
            in_force: Mutex::default(),
        }
    }

    /// The bucket for the rate in force now (`None`: no limit).
    fn bucket(&self) -> Option<Arc<Bucket>> {
        let rate = self.rate.now();
        let mut current = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some(now) if now.rate == rate => now.bucket.clone(),
            _ => {
                self.rate.changed(rate);
                let bucket = rate.map(|r| {
                    // Rates past 4 GiB/s are 4 GiB/s.
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
    pub fn take(&self, n: usize) {
        let mut left = n as u64;
        while left > 0 {
            let Some(bucket) = self.bucket() else {
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

/// A destination whose landings keep to a [`Throttle`].
pub struct Throttled<'d> {
    inner: &'d dyn Destination,
    throttle: Throttle,
}

impl<'d> Throttled<'d> {
    /// Wraps `inner`.
    pub fn new(inner: &'d dyn Destination, throttle: Throttle) -> Self {
        Throttled { inner, throttle }
    }
}

/// A landing whose writes wait for the bucket first.
struct ThrottledLanding<'t> {
    inner: Box<dyn Landing + 't>,
    throttle: &'t Throttle,
}

impl Write for ThrottledLanding<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.throttle.take(buf.len());
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Landing for ThrottledLanding<'_> {
    fn held(&self) -> Result<Option<crate::dest::Held>, DestError> {
        self.inner.held()
    }

    fn commit(self: Box<Self>) -> Result<(), DestError> {
        self.inner.commit()
    }
}

impl Destination for Throttled<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn landed_size(&self, rel: &RelPath) -> Result<Option<u64>, DestError> {
        self.inner.landed_size(rel)
    }

    fn holds(&self, rel: &RelPath, size: u64) -> Result<bool, DestError> {
        self.inner.holds(rel, size)
    }

    fn create(&self, rel: &RelPath, mtime_ns: i64) -> Result<Box<dyn Landing + '_>, DestError> {
        Ok(Box::new(ThrottledLanding {
            inner: self.inner.create(rel, mtime_ns)?,
            throttle: &self.throttle,
        }))
    }

    fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send + '_>, DestError> {
        self.inner.open(rel)
    }

    fn list(&self) -> Box<dyn Iterator<Item = Result<Listed, DestError>> + Send + '_> {
        self.inner.list()
    }

    fn sweep_partials(&self) -> Result<u64, DestError> {
        self.inner.sweep_partials()
    }

    fn version(&self, rel: &RelPath) -> Result<Option<Version>, DestError> {
        self.inner.version(rel)
    }

    fn remove_if(&self, rel: &RelPath, version: &Version) -> Result<Removal, DestError> {
        self.inner.remove_if(rel, version)
    }

    fn flush(&self) -> Result<(), DestError> {
        self.inner.flush()
    }

    fn flush_fanned(&self, fan: &dyn Fan) -> Result<(), DestError> {
        self.inner.flush_fanned(fan)
    }

    fn refused(&self) -> Option<String> {
        self.inner.refused()
    }

    fn naming(&self) -> crate::dest::Naming {
        self.inner.naming()
    }

    fn rejected(&self, rel: &RelPath) -> Option<String> {
        self.inner.rejected(rel)
    }

    fn lists_sizes(&self) -> bool {
        self.inner.lists_sizes()
    }

    fn expect(&self, object: &RelPath) {
        self.inner.expect(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A fixed rate, counting the changes it is told of.
    #[derive(Debug)]
    struct Fixed(Option<u64>, Arc<Mutex<Vec<Option<u64>>>>);

    impl Rate for Fixed {
        fn now(&self) -> Option<u64> {
            self.0
        }
        fn changed(&self, rate: Option<u64>) {
            self.1.lock().unwrap().push(rate);
        }
    }

    #[test]
    fn writes_past_the_first_seconds_worth_wait_for_the_rate() {
        let told = Arc::default();
        let t = Throttle::new(Fixed(Some(64 << 10), Arc::clone(&told)));
        let started = Instant::now();
        // A full bucket (64 KiB), then 64 KiB more in pieces: one second.
        t.take(64 << 10);
        t.take(48 << 10);
        t.take(16 << 10);
        assert!(started.elapsed() >= Duration::from_millis(990));
        assert_eq!(*told.lock().unwrap(), [Some(64 << 10)], "told once");
        // No limit: no bucket, no wait.
        let t = Throttle::new(Fixed(None, Arc::default()));
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
