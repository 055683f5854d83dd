//! The bandwidth timetable: rclone's `--bwlimit` grammar.
//!
//! A spec is either one rate for all the time, or entries separated by
//! spaces or semicolons, each `[Day-]HH:MM,RATE`:
//!
//! ```text
//! 20M
//! 06:00,20M 19:00,off
//! Mon-06:00,10M Sat-00:00,off
//! ```
//!
//! An entry with a day applies from that time on that day; one without a
//! day applies from that time every day. The rate in force at a moment is
//! the latest entry at or before it in the week, wrapping round from the
//! week's last entry. A rate is `off` (no limit) or bytes per second with
//! rclone's units: a bare number is KiB/s, `B` bytes, and `K M G T` (also
//! `Ki`/`KiB`, …) powers of 1024. Fractions are allowed (`1.5M`).

use std::fmt;

use jiff::ZonedDateTime as Zoned;

use super::{SpecError, day, time};

/// The largest rate the token bucket takes (4 GiB/s less a byte).
const MAX_RATE: u64 = u32::MAX as u64;

/// A bandwidth timetable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bwlimit {
    spec: String,
    /// (minute of the week, Monday 00:00 first; bytes per second or
    /// `None` for off), sorted, one per minute.
    slots: Vec<(u32, Option<u64>)>,
}

impl fmt::Display for Bwlimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Why a rate does not parse; each names the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// The unit is none of B, K, M, G, T (or their `Ki`/`KiB` forms).
    #[error(
        "{0:?} is not a rate (off, or a number with B, K, M, G or T: powers of 1024, \
         bare numbers are KiB/s)"
    )]
    Unit(String),
    /// The number does not parse.
    #[error("{0:?} is not a rate (off, 512K, 20M, 1.5G)")]
    Number(String),
    /// Below one byte per second.
    #[error("{0:?} is below 1 byte per second (use off for no limit, --window to stop)")]
    TooLow(String),
    /// Above what the token bucket takes.
    #[error("{0:?} is above 4 GiB/s (use off for no limit)")]
    TooHigh(String),
}

/// A rate: `off` (`None`), or a number with an optional unit, in bytes
/// per second.
///
/// # Errors
/// [`RateError`]: what is wrong with it.
pub fn rate(s: &str) -> Result<Option<u64>, RateError> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let power = match unit.to_ascii_uppercase().as_str() {
        "" | "K" | "KI" | "KIB" => 1,
        "B" => 0,
        "M" | "MI" | "MIB" => 2,
        "G" | "GI" | "GIB" => 3,
        "T" | "TI" | "TIB" => 4,
        _ => return Err(RateError::Unit(s.to_owned())),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| RateError::Number(s.to_owned()))?;
    let bytes = n * 1024f64.powi(power);
    if bytes.is_nan() || bytes < 1.0 {
        return Err(RateError::TooLow(s.to_owned()));
    }
    if bytes > MAX_RATE as f64 {
        return Err(RateError::TooHigh(s.to_owned()));
    }
    Ok(Some(bytes as u64))
}

impl std::str::FromStr for Bwlimit {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let err = SpecError::of("bandwidth timetable", spec);
        let entries: Vec<&str> = spec.split([' ', ';']).filter(|e| !e.is_empty()).collect();
        let mut slots = Vec::new();
        match entries.as_slice() {
            [] => return Err(err("is empty".into())),
            [only] if !only.contains(',') => {
                slots.push((0, rate(only).map_err(|e| err(e.to_string()))?))
            }
            _ => {
                for entry in entries {
                    let Some((when, r)) = entry.split_once(',') else {
                        return Err(err(format!("{entry:?} is not an entry [Day-]HH:MM,RATE")));
                    };
                    let r = rate(r).map_err(|e| err(e.to_string()))?;
                    let (days, hhmm) = match when.split_once('-') {
                        Some((d, t)) => match day(d) {
                            Some(d) => (d..=d, t),
                            None => {
                                return Err(err(format!("{d:?} is not a day (Mon, Tue, …, Sun)")));
                            }
                        },
                        None => (0..=6, when),
                    };
                    let Some(Some(t)) = time(hhmm, false) else {
                        return Err(err(format!(
                            "{hhmm:?} is not a time HH:MM (00:00 to 23:59)"
                        )));
                    };
                    let minute = t.hour() as u32 * 60 + t.minute() as u32;
                    for d in days {
                        slots.push((d as u32 * 1440 + minute, r));
                    }
                }
            }
        }
        slots.sort_by_key(|&(m, _)| m);
        if let Some(w) = slots.windows(2).find(|w| w[0].0 == w[1].0) {
            let (d, m) = (w[0].0 / 1440, w[0].0 % 1440);
            return Err(err(format!(
                "two rates from {} {:02}:{:02}",
                super::DAY_NAMES[d as usize],
                m / 60,
                m % 60
            )));
        }
        Ok(Bwlimit {
            spec: spec.to_owned(),
            slots,
        })
    }
}

impl Bwlimit {
    /// The rate in force at `t`, in bytes per second (`None`: no limit).
    pub fn rate_at(&self, t: &Zoned) -> Option<u64> {
        let minute = t.weekday().to_monday_zero_offset() as u32 * 1440
            + t.hour() as u32 * 60
            + t.minute() as u32;
        self.slots
            .iter()
            .rev()
            .find(|&&(m, _)| m <= minute)
            .or(self.slots.last())
            .and_then(|&(_, r)| r)
    }
}

/// A rate for people: "1 MiB/s", "off".
pub fn describe(rate: Option<u64>) -> String {
    match rate {
        None => "off".to_owned(),
        Some(r) => format!("{}/s", bytesize::ByteSize(r).display().iec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        format!("{s}[UTC]").parse().unwrap()
    }

    #[test]
    fn the_latest_entry_before_now_is_in_force_wrapping_round_the_week() {
        let t: Bwlimit = "06:00,20M 19:00,off".parse().unwrap();
        // 2026-11-24 is a Tuesday.
        assert_eq!(t.rate_at(&at("2026-11-24T12:00")), Some(20 << 20));
        assert_eq!(t.rate_at(&at("2026-11-24T19:00")), None);
        assert_eq!(
            t.rate_at(&at("2026-11-24T05:59")),
            None,
            "from 19:00 Monday"
        );
        let t: Bwlimit = "Mon-06:00,512 Sat-00:00,off; Wed-12:00,1.5M"
            .parse()
            .unwrap();
        // Sunday night wraps round to the week's last entry (Saturday's).
        assert_eq!(t.rate_at(&at("2026-11-23T05:00")), None);
        assert_eq!(t.rate_at(&at("2026-11-24T05:00")), Some(512 << 10));
        assert_eq!(t.rate_at(&at("2026-11-25T12:00")), Some(3 << 19));
        assert_eq!(t.rate_at(&at("2026-11-29T23:59")), None);
        let t: Bwlimit = "100B".parse().unwrap();
        assert_eq!(t.rate_at(&at("2026-11-29T23:59")), Some(100));
        assert_eq!(describe(Some(1 << 20)), "1.0 MiB/s");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (bad, says) in [
            ("", "is empty"),
            ("20MB", "is not a rate"),
            ("0", "below 1 byte"),
            ("5T", "above 4 GiB/s"),
            ("06:00", "is not a rate"),
            ("06:00,1M 7:00,off", "is not a time"),
            ("Funday-06:00,1M", "is not a day"),
            ("06:00,1M Mon-06:00,off", "two rates from Mon 06:00"),
            ("06:00;1M", "is not an entry"),
        ] {
            let e = bad.parse::<Bwlimit>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
