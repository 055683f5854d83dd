//! When a run stops starting files: at its window's end, after
//! `--max-duration`, or before `--max-bytes` would be passed.
//!
//! Files are never split: the walk stops handing out files, the files in
//! flight finish, and once the grace period after the stop has passed a
//! file still in flight is abandoned between two reads (its landing is
//! dropped, nothing is recorded for it). The run is then left open, as
//! paused, and the next run resumes it.
//!
//! The same limits hold the run's pace: [`Timetable`] is the `--bwlimit`
//! rate the destination's throttle layer keeps to
//! ([`crate::dest::throttle`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::dest::throttle::Rate;
use crate::schedule::{Bwlimit, Clock, Windows, describe_rate};

/// What may stop a run, and whether it has.
#[derive(Debug)]
pub(crate) struct Stopper {
    clock: Clock,
    window: Option<Windows>,
    /// When the window holding the start closes (local time).
    closes: Option<jiff::ZonedDateTime>,
    max_duration: Option<Duration>,
    max_bytes: Option<u64>,
    grace: Duration,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of the files handed out so far.
    bytes: u64,
    files: u64,
    /// Why the run stopped, and when in-flight files must give up.
    stopped: Option<(String, Instant)>,
}

/// The limits of one run.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Allowed windows; outside them nothing starts.
    pub window: Option<Windows>,
    /// The clock the window is read against.
    pub clock: Clock,
    /// Stop starting files after this long.
    pub max_duration: Option<Duration>,
    /// Stop before the bytes of the files started would pass this.
    pub max_bytes: Option<u64>,
    /// How long files in flight may go on after a stop.
    pub grace: Duration,
    /// The bandwidth timetable destination writes keep to.
    pub bwlimit: Option<Bwlimit>,
}

impl Stopper {
    /// Starts the clock; `Err` with when the window next opens (if known)
    /// when the run starts outside its window.
    pub(crate) fn start(limits: &Limits) -> Result<Stopper, Option<jiff::ZonedDateTime>> {
        let now = limits.clock.now();
        let closes = match &limits.window {
            Some(w) => Some(w.closes_after(&now).ok_or_else(|| w.opens_after(&now))?),
            None => None,
        };
        Ok(Stopper {
            clock: limits.clock.clone(),
            window: limits.window.clone(),
            closes,
            max_duration: limits.max_duration,
            max_bytes: limits.max_bytes,
            grace: limits.grace,
            started: limits.clock.instant(),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the run must stop now on the clock (its window closed, or
    /// `--max-duration` passed), if it must.
    fn out_of_time(&self) -> Option<String> {
        if let Some(end) = self
            .closes
            .as_ref()
            .filter(|e| self.clock.timestamp() >= e.timestamp())
        {
            let window = self.window.as_ref().map(ToString::to_string);
            return Some(format!(
                "the window {} closed at {}",
                window.unwrap_or_default(),
                end.strftime("%a %H:%M")
            ));
        }
        let d = self
            .max_duration
            .filter(|d| self.clock.instant().duration_since(self.started) >= *d)?;
        let d = jiff::SignedDuration::try_from(d).unwrap_or_default();
        Some(format!("--max-duration {d:#} reached"))
    }

    /// Records the stop: files in flight may go on for the grace period.
    fn stop(&self, st: &mut State, reason: String) {
        st.stopped = Some((reason, self.clock.instant() + self.grace));
    }

    /// Whether a file of `size` bytes may start now; once `false`, always
    /// `false`.
    pub(crate) fn admit(&self, size: u64) -> bool {
        let mut st = self.state();
        if st.stopped.is_some() {
            return false;
        }
        let reason = self.out_of_time().or_else(|| {
            self.max_bytes
                .filter(|&max| st.files > 0 && st.bytes.saturating_add(size) > max)
                .map(|max| format!("--max-bytes {max} reached"))
        });
        match reason {
            Some(r) => {
                self.stop(&mut st, r);
                false
            }
            None => {
                st.bytes += size;
                st.files += 1;
                true
            }
        }
    }

    /// Whether a file in flight must give up now: the run has stopped
    /// (checked here too, so that a window closing during one long file is
    /// noticed) and the grace period after the stop has passed.
    pub(crate) fn abandon(&self) -> bool {
        let mut st = self.state();
        if st.stopped.is_none() {
            match self.out_of_time() {
                Some(r) => self.stop(&mut st, r),
                None => return false,
            }
        }
        st.stopped
            .as_ref()
            .is_some_and(|(_, deadline)| self.clock.instant() >= *deadline)
    }

    /// Why the run stopped, if it did.
    pub(crate) fn stopped(&self) -> Option<String> {
        self.state().stopped.as_ref().map(|(r, _)| r.clone())
    }
}

/// The `--bwlimit` timetable read against the run's clock: the rate the
/// destination's throttle keeps to.
#[derive(Debug)]
pub(crate) struct Timetable {
    table: Bwlimit,
    clock: Clock,
}

impl Timetable {
    pub(crate) fn new(table: Bwlimit, clock: Clock) -> Self {
        Timetable { table, clock }
    }
}

impl Rate for Timetable {
    fn now(&self) -> Option<u64> {
        self.table.rate_at(&self.clock.now())
    }

    fn changed(&self, rate: Option<u64>) {
        tracing::info!(
            "bandwidth limit {} (--bwlimit {})",
            describe_rate(rate),
            self.table
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_bytes_stops_before_the_file_that_would_pass_it() {
        let s = Stopper::start(&Limits {
            max_bytes: Some(100),
            ..Limits::default()
        })
        .unwrap();
        assert!(s.admit(60));
        assert!(s.admit(40));
        assert!(!s.admit(1));
        assert!(!s.admit(0), "once stopped, stopped");
        assert_eq!(s.stopped().unwrap(), "--max-bytes 100 reached");
        // No grace: files in flight give up at once.
        assert!(s.abandon());
        // The first file always starts, however large.
        let s = Stopper::start(&Limits {
            max_bytes: Some(10),
            ..Limits::default()
        })
        .unwrap();
        assert!(s.admit(1000));
    }

    #[test]
    fn a_window_closing_during_a_file_stops_the_run_and_the_grace_runs_out() {
        // Each reading of this clock is a second after the last: the start
        // reads it twice (05:59:57, :58), the first admission at :59.
        let now: jiff::ZonedDateTime = "2026-11-24T05:59:57[UTC]".parse().unwrap();
        let s = Stopper::start(&Limits {
            window: Some("Mon-Fri 19:00-06:00".parse().unwrap()),
            clock: Clock::stepped(&now, Duration::from_secs(1)),
            grace: Duration::from_secs(3),
            ..Limits::default()
        })
        .unwrap();
        assert!(s.admit(1 << 30));
        // The file is being read: at 06:00 the run stops, and the file
        // goes on until the grace period has passed.
        assert!(!s.abandon(), "06:00 stops the run, the grace begins");
        assert_eq!(
            s.stopped().unwrap(),
            "the window Mon-Fri 19:00-06:00 closed at Tue 06:00"
        );
        // (That call read the clock three times: 06:00 to stop, :01 for
        // the deadline, :02 to compare.)
        assert!(!s.abandon(), "06:00:03");
        assert!(s.abandon(), "06:00:04, 3 s after the deadline was set");
        assert!(!s.admit(1), "nothing starts after a stop");
    }

    #[test]
    fn max_duration_is_read_on_the_runs_clock() {
        let now: jiff::ZonedDateTime = "2026-11-24T12:00[UTC]".parse().unwrap();
        let s = Stopper::start(&Limits {
            max_duration: Some(Duration::from_secs(3)),
            clock: Clock::stepped(&now, Duration::from_secs(1)),
            ..Limits::default()
        })
        .unwrap();
        assert!(s.admit(1));
        assert!(s.admit(1));
        assert!(!s.admit(1));
        assert_eq!(s.stopped().unwrap(), "--max-duration 3s reached");
    }

    #[test]
    fn outside_the_window_nothing_starts_and_it_says_when_it_opens() {
        let now: jiff::ZonedDateTime = "2026-11-24T12:00[UTC]".parse().unwrap();
        let limits = Limits {
            window: Some("Mon-Fri 19:00-06:00".parse().unwrap()),
            clock: Clock::starting_at(&now),
            ..Limits::default()
        };
        let opens = Stopper::start(&limits).unwrap_err().unwrap();
        assert_eq!(opens.strftime("%a %H:%M").to_string(), "Tue 19:00");
    }
}
