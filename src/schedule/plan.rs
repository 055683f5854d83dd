//! Wave plans: a migration as named waves, each with its source,
//! destination, window, bandwidth timetable and change-board reference
//! (`docs/waves.md`); and the estimate of when each wave would finish.

use std::path::{Path, PathBuf};

use jiff::ZonedDateTime as Zoned;
use jiff::civil::DateTime;
use serde::{Deserialize, Serialize};

use super::{Bwlimit, Windows};
use crate::manifest::Wave;

/// How far ahead an estimate looks before it says "does not finish".
const HORIZON_DAYS: i64 = 366;

/// A plan that cannot be used; the message says where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The plan file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid plan.
    #[error("{path}: {reason}")]
    Invalid {
        /// The plan file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
}

/// One wave's keys as written (each may come from `[defaults]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    name: Option<String>,
    source: Option<PathBuf>,
    destination: Option<String>,
    window: Option<String>,
    bwlimit: Option<String>,
    change: Option<String>,
    owner: Option<String>,
    rollback_contact: Option<String>,
    start: Option<String>,
    deadline: Option<String>,
    signing_key: Option<PathBuf>,
    job: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    defaults: Keys,
    #[serde(default)]
    wave: Vec<Keys>,
}

/// One wave of a plan.
#[derive(Debug, Clone)]
pub struct WavePlan {
    /// Its name (unique in the plan).
    pub name: String,
    /// The tree it moves.
    pub source: PathBuf,
    /// Where it lands (a directory or a blob URL).
    pub destination: String,
    /// When it may run; `None`: any time.
    pub window: Option<Windows>,
    /// Its bandwidth timetable.
    pub bwlimit: Option<Bwlimit>,
    /// The change board's approval id.
    pub change: String,
    /// Who owns it.
    pub owner: String,
    /// Whom to call to roll it back.
    pub rollback_contact: String,
    /// Not before this local time.
    pub start: Option<DateTime>,
    /// Must have finished by this local time.
    pub deadline: Option<DateTime>,
    /// The operator's signing key, if the plan names it.
    pub signing_key: Option<PathBuf>,
    /// The named job its runs belong to (`transfer --job`), if the plan
    /// names one: each run then moves only what is new since the last.
    pub job: Option<String>,
}

impl WavePlan {
    /// What its manifest and events record.
    pub fn wave(&self) -> Wave {
        Wave {
            change: self.change.clone(),
            name: self.name.clone(),
            owner: self.owner.clone(),
            rollback_contact: self.rollback_contact.clone(),
        }
    }
}

/// A wave plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan file.
    pub path: PathBuf,
    /// Its waves, in file order.
    pub waves: Vec<WavePlan>,
}

/// A date (`2026-12-01`, midnight) or a date and time (`2026-12-01T19:00`).
fn civil(s: &str) -> Result<DateTime, String> {
    s.parse::<DateTime>()
        .or_else(|_| {
            s.parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| {
            format!("{s:?} is not a date (2026-12-01) or local date and time (2026-12-01T19:00)")
        })
}

impl Plan {
    /// Reads and checks a plan file. Relative paths in it are relative to
    /// the plan's own directory.
    ///
    /// # Errors
    /// [`PlanError`], naming the wave and key at fault.
    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads a plan's text, as if from the file at `path` (its directory is
    /// the base of relative paths).
    ///
    /// # Errors
    /// [`PlanError::Invalid`], naming the wave and key at fault.
    pub fn parse(text: &str, path: &Path) -> Result<Plan, PlanError> {
        let invalid = |reason: String| PlanError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let file: PlanFile =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        if file.wave.is_empty() {
            return Err(invalid("no [[wave]]".into()));
        }
        if file.defaults.name.is_some()
            || file.defaults.source.is_some()
            || file.defaults.job.is_some()
        {
            return Err(invalid(
                "[defaults] cannot set a wave's name, source or job".into(),
            ));
        }
        // The defaults' specs are checked once, whatever the waves.
        for (key, spec) in [
            ("window", &file.defaults.window),
            ("bwlimit", &file.defaults.bwlimit),
        ] {
            let bad = match (key, spec) {
                ("window", Some(s)) => s.parse::<Windows>().err().map(|e| e.to_string()),
                (_, Some(s)) => s.parse::<Bwlimit>().err().map(|e| e.to_string()),
                (_, None) => None,
            };
            if let Some(e) = bad {
                return Err(invalid(format!("[defaults]: {e}")));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut waves: Vec<WavePlan> = Vec::new();
        for (i, w) in file.wave.into_iter().enumerate() {
            let d = &file.defaults;
            let at = match &w.name {
                Some(n) => format!("wave {n:?}"),
                None => format!("wave {}", i + 1),
            };
            let need = |v: Option<String>, dv: &Option<String>, key: &str| {
                v.or_else(|| dv.clone())
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| invalid(format!("{at}: no {key}")))
            };
            let name = need(w.name.clone(), &None, "name")?;
            if waves.iter().any(|o| o.name == name) {
                return Err(invalid(format!("{at}: a second wave with that name")));
            }
            let source = w
                .source
                .ok_or_else(|| invalid(format!("{at}: no source")))?;
            let destination = need(w.destination, &d.destination, "destination")?;
            // A wave's own spec, else the default's.
            let window = w
                .window
                .or_else(|| d.window.clone())
                .map(|s| s.parse::<Windows>())
                .transpose()
                .map_err(|e| invalid(format!("{at}: {e}")))?;
            let bwlimit = w
                .bwlimit
                .or_else(|| d.bwlimit.clone())
                .map(|s| s.parse::<Bwlimit>())
                .transpose()
                .map_err(|e| invalid(format!("{at}: {e}")))?;
            let date = |v: Option<String>, dv: &Option<String>, key: &str| {
                v.or_else(|| dv.clone())
                    .map(|s| civil(&s))
                    .transpose()
                    .map_err(|e| invalid(format!("{at}: {key}: {e}")))
            };
            let start = date(w.start, &d.start, "start")?;
            let deadline = date(w.deadline, &d.deadline, "deadline")?;
            let is_url = destination.contains("://");
            waves.push(WavePlan {
                source: base.join(source),
                destination: if is_url {
                    destination
                } else {
                    base.join(destination).display().to_string()
                },
                window,
                bwlimit,
                change: need(w.change, &d.change, "change")?,
                owner: need(w.owner, &d.owner, "owner")?,
                rollback_contact: need(
                    w.rollback_contact,
                    &d.rollback_contact,
                    "rollback_contact",
                )?,
                start,
                deadline,
                signing_key: w
                    .signing_key
                    .or_else(|| d.signing_key.clone())
                    .map(|k| base.join(k)),
                // A job is one source into one destination: per wave only.
                job: w.job,
                name,
            });
        }
        Ok(Plan {
            path: path.to_owned(),
            waves,
        })
    }

    /// The wave called `name`.
    pub fn wave(&self, name: &str) -> Option<&WavePlan> {
        self.waves.iter().find(|w| w.name == name)
    }
}

/// When a wave would run and finish.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The wave.
    pub name: String,
    /// Its change reference.
    pub change: String,
    /// Files in its source now.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The throughput assumed, bytes per second (before the timetable).
    pub rate: f64,
    /// Copying time at that rate, ignoring windows and the timetable.
    pub copy_seconds: f64,
    /// When it would start (RFC 3339 with zone).
    pub start: String,
    /// When it would finish, if within a year.
    pub finish: Option<String>,
    /// Window openings it would use (0 without a window).
    pub windows: u32,
    /// Its deadline, if the plan sets one.
    pub deadline: Option<String>,
    /// Whether it finishes by its deadline (`None`: no deadline; a wave
    /// that does not finish within a year never fits).
    pub fits: Option<bool>,
    /// Each window opening it would use, whole (without a window: its
    /// copy's span), for the calendar.
    #[serde(skip)]
    pub openings: Vec<(Zoned, Zoned)>,
}

/// Estimates each wave in order: a wave starts at its `start` (or `now`),
/// but not before the wave before it finished; it copies at `rate` bytes
/// per second (held to its timetable) only inside its window.
/// `sizes` gives each wave's (files, bytes).
pub fn estimate(
    plan: &Plan,
    rate: f64,
    now: &Zoned,
    mut sizes: impl FnMut(&WavePlan) -> (u64, u64),
) -> Vec<Estimate> {
    let zone = now.time_zone().clone();
    let mut after = now.clone();
    let mut out = Vec::new();
    for w in &plan.waves {
        let (files, bytes) = sizes(w);
        let start = w
            .start
            .and_then(|s| s.to_zoned_datetime(zone.clone()).ok())
            .filter(|s| *s > after)
            .unwrap_or_else(|| after.clone());
        let (finish, openings) = simulate(w, rate, bytes, &start);
        let deadline = w
            .deadline
            .and_then(|d| d.to_zoned_datetime(zone.clone()).ok());
        let fits = deadline
            .as_ref()
            .map(|d| finish.as_ref().is_some_and(|f| f <= d));
        if let Some(f) = &finish {
            after = f.clone();
        }
        out.push(Estimate {
            name: w.name.clone(),
            change: w.change.clone(),
            files,
            bytes,
            rate,
            copy_seconds: bytes as f64 / rate,
            start: start.to_string(),
            finish: finish.map(|f| f.to_string()),
            windows: if w.window.is_some() {
                openings.len() as u32
            } else {
                0
            },
            deadline: deadline.map(|d| d.to_string()),
            fits,
            openings,
        });
    }
    out
}

/// Steps through the wave's openings a minute at a time until `bytes` are
/// copied: (when it finishes, the openings used).
fn simulate(
    w: &WavePlan,
    rate: f64,
    bytes: u64,
    start: &Zoned,
) -> (Option<Zoned>, Vec<(Zoned, Zoned)>) {
    let horizon = start
        .checked_add(jiff::Span::new().days(HORIZON_DAYS))
        .unwrap_or_else(|_| start.clone());
    let minute = jiff::SignedDuration::from_secs(60);
    let mut left = bytes as f64;
    let mut t = start.clone();
    let mut openings = Vec::new();
    while t < horizon {
        // The opening holding t (or the next one), and its end.
        let end = match &w.window {
            None => t
                .checked_add(jiff::Span::new().days(1))
                .unwrap_or_else(|_| horizon.clone()),
            Some(win) => match win.closes_after(&t) {
                Some(end) => end,
                None => match win.opens_after(&t) {
                    Some(next) => {
                        t = next;
                        continue;
                    }
                    None => return (None, openings),
                },
            },
        };
        let opened = t.clone();
        while t < end {
            let step = end.timestamp().duration_since(t.timestamp()).min(minute);
            let r = match w.bwlimit.as_ref().and_then(|b| b.rate_at(&t)) {
                Some(limit) => rate.min(limit as f64),
                None => rate,
            };
            let can = r * step.as_secs_f64();
            if left <= can {
                let at = t
                    .checked_add(jiff::SignedDuration::from_secs_f64(left / r))
                    .unwrap_or_else(|_| end.clone());
                // A window is shown whole (the change board approves
                // windows); without one, the copy's own span.
                let shown = if w.window.is_some() {
                    end.clone()
                } else {
                    at.clone()
                };
                openings.push((opened, shown));
                return (Some(at), openings);
            }
            left -= can;
            t = t.checked_add(step).unwrap_or_else(|_| end.clone());
        }
        if w.window.is_some() {
            openings.push((opened, end.clone()));
        }
        t = end;
    }
    (None, openings)
}

/// The plan's calendar (RFC 5545): one event per window opening each wave
/// would use (without a window, one event for its whole copy), in UTC.
pub fn calendar(plan: &Plan, estimates: &[Estimate]) -> String {
    use icalendar::{Calendar, Component, Event, EventLike};
    let utc = |z: &Zoned| {
        time::OffsetDateTime::from_unix_timestamp(z.timestamp().as_second())
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let mut cal = Calendar::new();
    cal.name(&format!("custody waves ({})", plan.path.display()));
    for (w, e) in plan.waves.iter().zip(estimates) {
        let n = e.openings.len();
        for (i, (start, end)) in e.openings.iter().enumerate() {
            let finish = match (&e.finish, i + 1 == n) {
                (Some(f), true) => format!("estimated to finish at {f}"),
                (None, true) => "not estimated to finish within a year".into(),
                (_, false) => "continues in the next window".into(),
            };
            cal.push(
                Event::new()
                    .uid(&format!("{}-{}-{}@custody", w.change, w.name, i + 1))
                    .summary(&format!(
                        "custody wave {} ({}): window {} of {n}",
                        w.name,
                        w.change,
                        i + 1
                    ))
                    .description(&format!(
                        "{} -> {}\nowner: {}\nrollback contact: {}\n{} files, {} bytes; {finish}",
                        w.source.display(),
                        w.destination,
                        w.owner,
                        w.rollback_contact,
                        e.files,
                        e.bytes
                    ))
                    .starts(utc(start))
                    .ends(utc(end))
                    .done(),
            );
        }
    }
    cal.done().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, PlanError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.toml");
        std::fs::write(&p, text).unwrap();
        Plan::load(&p)
    }

    const TWO: &str = r#"
[defaults]
window = "Mon-Fri 19:00-06:00"
owner = "PACS team"
rollback_contact = "on-call"

[[wave]]
name = "one"
source = "src1"
destination = "/mnt/box/one"
change = "CHG1"

[[wave]]
name = "two"
source = "/srv/two"
destination = "https://acct.blob.core.windows.net/c/two"
change = "CHG2"
bwlimit = "off"
deadline = "2026-11-25"
"#;

    #[test]
    fn waves_inherit_defaults_and_run_one_after_another_inside_their_window() {
        let p = plan(TWO).unwrap();
        assert_eq!(p.waves[0].owner, "PACS team");
        assert!(p.waves[0].source.ends_with("src1") && p.waves[0].source.is_absolute());
        assert_eq!(
            p.waves[1].destination,
            "https://acct.blob.core.windows.net/c/two"
        );
        // Tuesday noon; 1 MB/s. Wave one: 11 hours of copying from 19:00
        // (39,600 s, exactly one night); wave two: one more hour, the next
        // night, past its deadline (the 25th, 00:00).
        let now: Zoned = "2026-11-24T12:00[UTC]".parse().unwrap();
        let e = estimate(&p, 1e6, &now, |w| match w.name.as_str() {
            "one" => (10, 39_600_000_000),
            _ => (1, 3_600_000_000),
        });
        assert_eq!(e[0].start, "2026-11-24T12:00:00+00:00[UTC]");
        assert_eq!(
            e[0].finish.as_deref(),
            Some("2026-11-25T06:00:00+00:00[UTC]")
        );
        assert_eq!((e[0].windows, e[0].fits), (1, None));
        assert_eq!(
            e[1].finish.as_deref(),
            Some("2026-11-25T20:00:00+00:00[UTC]")
        );
        assert_eq!(e[1].fits, Some(false));
        assert_eq!(e[1].openings.len(), 1);
    }

    #[test]
    fn the_documented_example_plan_loads() {
        let p = Plan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/waves.toml"))
            .unwrap();
        let names: Vec<&str> = p.waves.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["ct-2019", "mr-2019", "cr-2019"]);
        assert_eq!(p.waves[2].owner, "A. Smith, radiology IT");
        assert_eq!(p.waves[1].rollback_contact, "PACS on-call, +1 555 0100");
        assert!(p.waves[0].bwlimit.is_some() && p.waves[0].deadline.is_some());
    }

    #[test]
    fn a_timetable_slows_a_wave_and_bad_plans_say_where() {
        let mut p = plan(TWO).unwrap();
        p.waves[0].bwlimit = Some("0.5M".parse().unwrap());
        let now: Zoned = "2026-11-24T19:00[UTC]".parse().unwrap();
        // 512 KiB/s for 1 MiB: two seconds.
        let e = estimate(&p, 1e9, &now, |_| (1, 1 << 20));
        assert_eq!(
            e[0].finish.as_deref(),
            Some("2026-11-24T19:00:02+00:00[UTC]")
        );
        for (text, says) in [
            ("", "no [[wave]]"),
            ("[[wave]]\nname = \"a\"", "wave \"a\": no source"),
            (
                "[[wave]]\nname = \"a\"\nsource = \"s\"\ndestination = \"d\"\nchange = \"c\"\nowner = \"o\"\nrollback_contact = \"r\"\nwindow = \"7pm-6am\"",
                "is not a time range",
            ),
            (
                "[[wave]]\nname = \"a\"\ncolour = \"red\"",
                "unknown field `colour`",
            ),
            (
                "[[wave]]\nname = \"a\"\nsource = \"s\"\ndestination = \"d\"\nchange = \"c\"\nowner = \"o\"\nrollback_contact = \"r\"\nstart = \"soon\"",
                "start: \"soon\" is not a date",
            ),
        ] {
            let e = plan(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
