//! When a transfer may run: allowed windows in local time, and the clock
//! they are read against.
//!
//! A window spec lists windows separated by commas, each an optional day
//! range and a time range (grammar in `docs/operations.md`):
//!
//! ```text
//! Mon-Fri 19:00-06:00, Sat-Sun 00:00-24:00
//! ```
//!
//! A window whose end is not after its start crosses midnight: `Mon-Fri
//! 19:00-06:00` is open from Monday 19:00 to Tuesday 06:00, …, Friday 19:00
//! to Saturday 06:00. Windows that touch or overlap make one longer
//! opening. Times are local (the `TZ` environment variable, else the
//! system's zone), so a window follows daylight saving time as a wall
//! clock does.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jiff::civil::Time;
use jiff::{SignedDuration, ZonedDateTime as Zoned};

mod bwlimit;
mod job_file;

pub use bwlimit::{Bwlimit, RateError, describe as describe_rate, rate as parse_rate};
pub use job_file::JobFile;
pub use plan::{Estimate, Plan, PlanError, WavePlan, calendar, estimate};

mod plan;

/// A window or bandwidth spec that does not parse; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {spec:?}: {reason}")]
pub struct SpecError {
    what: &'static str,
    spec: String,
    reason: String,
}

impl SpecError {
    /// The error for `spec`, given why.
    fn of(what: &'static str, spec: &str) -> impl Fn(String) -> SpecError + Copy {
        move |reason| SpecError {
            what,
            spec: spec.to_owned(),
            reason,
        }
    }
}

/// One window: on these days, from `start` to `end` (next day's `end` when
/// it is not after `start`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// Days it starts on, Monday first.
    days: [bool; 7],
    start: Time,
    /// `None`: 24:00.
    end: Option<Time>,
}

/// Allowed windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    spec: String,
    windows: Vec<Window>,
}

impl fmt::Display for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn day(s: &str) -> Option<usize> {
    let s = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| s.starts_with(d) && d.len() <= s.len() && s.len() <= 9)
}

fn time(s: &str, end: bool) -> Option<Option<Time>> {
    let (h, m) = s.split_once(':')?;
    let valid = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
    if !valid(h) || !valid(m) {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(None),
        (0..=23, 0..=59) => Some(Some(Time::new(h, m, 0, 0).ok()?)),
        _ => None,
    }
}

impl std::str::FromStr for Windows {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let err = SpecError::of("window", spec);
        let mut windows = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (days_part, times) = match part.rsplit_once(' ') {
                Some((d, t)) => (Some(d.trim()), t),
                None => (None, part),
            };
            let mut days = [days_part.is_none(); 7];
            if let Some(d) = days_part {
                let (from, to) = d.split_once('-').unwrap_or((d, d));
                let (Some(from), Some(to)) = (day(from), day(to)) else {
                    return Err(err(format!(
                        "{d:?} is not a day or day range (Mon, Mon-Fri, Sat-Sun, …)"
                    )));
                };
                let mut i = from;
                loop {
                    days[i] = true;
                    if i == to {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            let parsed = times
                .split_once('-')
                .and_then(|(a, b)| Some((time(a, false)??, time(b, true)?)));
            let Some((start, end)) = parsed else {
                return Err(err(format!(
                    "{times:?} is not a time range HH:MM-HH:MM (00:00 to 24:00)"
                )));
            };
            if end == Some(start) {
                return Err(err(format!("{times:?} is empty")));
            }
            windows.push(Window { days, start, end });
        }
        Ok(Windows {
            spec: spec.to_owned(),
            windows,
        })
    }
}

impl Windows {
    /// Each opening (start, end) of a window starting on `t`'s day or on
    /// one of the `back` days before.
    fn openings(&self, t: &Zoned, back: i64, ahead: i64) -> Vec<(Zoned, Zoned)> {
        let mut out = Vec::new();
        for offset in -back..=ahead {
            let date = t.date().saturating_add(jiff::Span::new().days(offset));
            let weekday = date.weekday().to_monday_zero_offset() as usize;
            for w in self.windows.iter().filter(|w| w.days[weekday]) {
                let at = |d: jiff::civil::Date, tm: Time| {
                    d.to_datetime(tm)
                        .to_zoned_datetime(t.time_zone().clone())
                        .ok()
                };
                let Some(start) = at(date, w.start) else {
                    continue;
                };
                let end = match w.end {
                    Some(e) if e > w.start => at(date, e),
                    Some(e) => at(date.tomorrow().ok().unwrap_or(date), e),
                    None => at(date.tomorrow().ok().unwrap_or(date), Time::midnight()),
                };
                if let Some(end) = end {
                    out.push((start, end));
                }
            }
        }
        out
    }

    /// When the opening that holds `t` closes (openings that touch or
    /// overlap count as one), or `None` if `t` is outside every window.
    pub fn closes_after(&self, t: &Zoned) -> Option<Zoned> {
        let openings = self.openings(t, 1, 8);
        let mut end: Option<Zoned> = None;
        let mut at = t.clone();
        // Follow touching openings forward, at most a week of them.
        for _ in 0..64 {
            let next = openings
                .iter()
                .filter(|(s, e)| *s <= at && at < *e)
                .map(|(_, e)| e.clone())
                .max();
            match next {
                Some(e) if end.as_ref().is_none_or(|cur| &e > cur) => {
                    end = Some(e.clone());
                    at = e;
                }
                _ => break,
            }
        }
        end
    }

    /// When the next opening after `t` starts (within a week), for when `t`
    /// is outside every window.
    pub fn opens_after(&self, t: &Zoned) -> Option<Zoned> {
        self.openings(t, 0, 8)
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| s > t)
            .min()
    }
}

/// The clock a run reads: the system's, possibly shifted (tests set "now"
/// with `CUSTODY_NOW` to start a run just before a window closes), in the
/// local time zone (or the zone "now" was given in).
///
/// For tests that must not depend on how fast the machine is, a clock can
/// also be *stepped*: it stands still between readings and each reading is
/// one step later than the last, so a run reaches a window's end after a
/// set number of readings, whatever the speed.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    shift: SignedDuration,
    zone: Option<jiff::tz::TimeZone>,
    stepped: Option<Stepped>,
}

#[derive(Debug, Clone)]
struct Stepped {
    start: jiff::Timestamp,
    origin: Instant,
    step: Duration,
    readings: Arc<AtomicU32>,
}

impl Clock {
    /// The system clock, in the system's zone.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that reads `now` at this moment and runs on from there, in
    /// `now`'s zone.
    pub fn starting_at(now: &Zoned) -> Self {
        Clock {
            shift: now.timestamp().duration_since(jiff::Timestamp::now()),
            zone: Some(now.time_zone().clone()),
            stepped: None,
        }
    }

    /// A clock whose first reading is `now` and each later reading `step`
    /// after the one before, in `now`'s zone: for tests.
    pub fn stepped(now: &Zoned, step: Duration) -> Self {
        Clock {
            shift: SignedDuration::ZERO,
            zone: Some(now.time_zone().clone()),
            stepped: Some(Stepped {
                start: now.timestamp(),
                origin: Instant::now(),
                step,
                readings: Arc::default(),
            }),
        }
    }

    /// How far a stepped clock has moved, counting this reading.
    fn tick(s: &Stepped) -> Duration {
        s.step
            .saturating_mul(s.readings.fetch_add(1, Ordering::Relaxed))
    }

    /// Now, as an instant on the time line.
    pub fn timestamp(&self) -> jiff::Timestamp {
        let t = match &self.stepped {
            Some(s) => s.start.checked_add(Self::tick(s)).ok(),
            None => jiff::Timestamp::now().checked_add(self.shift).ok(),
        };
        t.unwrap_or_else(jiff::Timestamp::now)
    }

    /// Now, in the clock's zone.
    pub fn now(&self) -> Zoned {
        let zone = self.zone.clone().unwrap_or_else(jiff::tz::TimeZone::system);
        self.timestamp().to_zoned_datetime(zone)
    }

    /// Now, for measuring how long something took: monotonic, never
    /// shifted, and stepped like the rest of a stepped clock.
    pub fn instant(&self) -> Instant {
        match &self.stepped {
            Some(s) => s.origin + Self::tick(s),
            None => Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        format!("{s}[UTC]").parse().unwrap()
    }

    fn w(spec: &str) -> Windows {
        spec.parse().unwrap()
    }

    #[test]
    fn windows_cross_midnight_and_join_when_they_touch() {
        let nightly = w("Mon-Fri 19:00-06:00, Sat-Sun 00:00-24:00");
        // 2026-11-23 is a Monday.
        assert_eq!(nightly.closes_after(&at("2026-11-23T12:00")), None);
        assert_eq!(
            nightly.closes_after(&at("2026-11-23T19:00")),
            Some(at("2026-11-24T06:00"))
        );
        assert_eq!(
            nightly.closes_after(&at("2026-11-24T05:59:58")),
            Some(at("2026-11-24T06:00"))
        );
        assert_eq!(nightly.closes_after(&at("2026-11-24T06:00")), None);
        // Friday night runs into the weekend, which ends at Sunday 24:00
        // (Monday's window opens at 19:00).
        assert_eq!(
            nightly.closes_after(&at("2026-11-27T20:00")),
            Some(at("2026-11-30T00:00"))
        );
        assert_eq!(
            nightly.opens_after(&at("2026-11-24T06:00")),
            Some(at("2026-11-24T19:00"))
        );
        // No day range: every day.
        assert_eq!(
            w("22:00-23:30").closes_after(&at("2026-11-25T22:10")),
            Some(at("2026-11-25T23:30"))
        );
        // A day range that wraps the week.
        let weekend = w("Sat-Mon 08:00-09:00");
        assert!(weekend.closes_after(&at("2026-11-30T08:30")).is_some());
        assert!(weekend.closes_after(&at("2026-11-25T08:30")).is_none());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for bad in [
            "",
            "Mon-Fri",
            "Mon-Fri 19:00",
            "Mon-Fri 25:00-06:00",
            "Funday 19:00-06:00",
            "Mon 19:00-19:00",
            "Mon 24:00-06:00",
            "Mon 7:00-08:00",
        ] {
            assert!(bad.parse::<Windows>().is_err(), "{bad:?} parsed");
        }
    }
}
