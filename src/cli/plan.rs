//! `custody plan` and `custody run`: migration waves from a plan file
//! (`docs/waves.md`).

use std::path::PathBuf;

use clap::Parser;
use custody::schedule::{self, Estimate, Plan};

use super::{Code, Failure, Global, Outcome, print_json, render};

/// Estimate each wave of a migration plan against its windows.
///
/// Estimate each wave of a plan: its files and bytes now (a walk, no
/// hashing), how long it copies at the throughput earlier runs in the
/// ledger achieved (or --rate), and, inside its windows and held to its
/// bandwidth timetable, when it would start and finish and whether that is
/// by its deadline. Waves run one after another, in the plan's order.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody plan waves.toml --ics waves.ics       # the change calendar, one event per window

Exit codes: 0 estimated (see `fits` per wave), 2 usage error (bad plan, unreadable source,
no throughput known: give --rate).")]
pub struct PlanArgs {
    /// The wave plan (TOML, docs/waves.md).
    #[arg(value_name = "PLAN")]
    plan: PathBuf,
    /// Assume this throughput instead of the one measured in the ledger
    /// (rclone's units: 100M is 100 MiB/s).
    #[arg(long, value_name = "RATE")]
    rate: Option<String>,
    /// Also write an iCalendar file with each wave's windows.
    #[arg(long, value_name = "FILE")]
    ics: Option<PathBuf>,
    /// Also plan each wave onto devices of this kind: how many it needs
    /// (studies kept whole, as `custody split` divides it; headers are
    /// read), and per device its files, bytes and copy time at the rate.
    #[command(flatten)]
    device: super::args::DeviceArgs,
    /// Pretend it is this local time (RFC 3339 with zone): for tests.
    #[arg(long, env = "CUSTODY_NOW", hide = true)]
    now: Option<jiff::ZonedDateTime>,
}

/// One wave on devices (`plan --device`).
#[derive(Debug, serde::Serialize)]
struct OnDevices {
    wave: String,
    device: String,
    devices: usize,
    lower_bound: u64,
    shards: Vec<DevicePlan>,
}

#[derive(Debug, serde::Serialize)]
struct DevicePlan {
    number: u64,
    files: u64,
    bytes: u64,
    studies: u64,
    copy_seconds: f64,
}

/// Each wave's shards on `device`, as `custody split` would make them.
fn on_devices(
    plan: &Plan,
    device: custody::databox::device::Device,
    rate: f64,
    g: &Global,
) -> Result<Vec<OnDevices>, Failure> {
    let mut out = Vec::new();
    for w in &plan.waves {
        let opts = custody::split::SplitOptions {
            source: w.source.clone(),
            device,
            headroom_percent: custody::databox::device::DEFAULT_HEADROOM_PERCENT,
            selection: Default::default(),
            jobs: std::thread::available_parallelism().map_or(2, usize::from),
        };
        let part = custody::split::partition(&opts, &super::render::Renderer::new(g))
            .map_err(|e| Failure::usage(anyhow::anyhow!("wave {:?}: {e}", w.name)))?;
        out.push(OnDevices {
            wave: w.name.clone(),
            device: device.kind.to_string(),
            devices: part.shards.len(),
            lower_bound: part.totals.lower_bound,
            shards: part
                .shards
                .iter()
                .map(|s| DevicePlan {
                    number: s.number,
                    files: s.files,
                    bytes: s.bytes,
                    studies: s.studies,
                    copy_seconds: s.bytes as f64 / rate,
                })
                .collect(),
        });
    }
    Ok(out)
}

/// Run one wave of a plan inside its window and bandwidth timetable.
///
/// Run one wave of a plan: `custody transfer` of its source to its
/// destination inside its window and bandwidth timetable (then seal and
/// verify, as transfer does), with the wave's name and change reference
/// recorded in the run's custody events and its manifest (version 5).
/// Flags after `--` go to the transfer as they are.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  custody run waves.toml --wave ct-2019 -- --jobs 8

Exit codes: those of `custody transfer` (4: paused at the window's end or outside it; the
next run of the same wave resumes).")]
pub struct RunArgs {
    /// The wave plan (TOML, docs/waves.md).
    #[arg(value_name = "PLAN")]
    plan: PathBuf,
    /// The wave to run.
    #[arg(long, value_name = "NAME")]
    wave: String,
    /// More `custody transfer` flags (after `--`).
    #[arg(last = true, value_name = "TRANSFER_FLAGS")]
    transfer: Vec<String>,
}

fn load(path: &std::path::Path) -> Result<Plan, Failure> {
    Plan::load(path).map_err(Failure::usage)
}

pub fn plan(args: &PlanArgs, g: &Global) -> Outcome {
    let plan = load(&args.plan)?;
    let (rate, measured) = match &args.rate {
        Some(r) => match schedule::parse_rate(r) {
            Ok(Some(r)) => (r as f64, false),
            Ok(None) => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--rate {r}: give a throughput (e.g. 100M), not off"
                )));
            }
            Err(e) => return Err(Failure::usage(anyhow::anyhow!("--rate {e}"))),
        },
        None => {
            let rate = custody::ledger::Ledger::open_existing(&g.ledger)
                .and_then(|l| l.copying())
                .ok()
                .and_then(|c| c.rate());
            match rate {
                Some(r) => (r, true),
                None => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "no throughput measured yet: {} records no copying",
                        g.ledger.display()
                    ))
                    .hint("give the expected throughput with --rate, e.g. --rate 100M"));
                }
            }
        }
    };
    // Each wave's size now: a walk, no hashing.
    let mut unreadable = None;
    let now = args.now.clone().unwrap_or_else(jiff::ZonedDateTime::now);
    let estimates = schedule::estimate(&plan, rate, &now, |w| {
        let (mut files, mut bytes) = (0, 0);
        for entry in custody::source::walk(&w.source) {
            match entry {
                custody::source::SourceEntry::File(f) => {
                    files += 1;
                    bytes += f.size;
                }
                custody::source::SourceEntry::Failed { path, error } => {
                    unreadable.get_or_insert_with(|| {
                        format!("wave {:?}: source {}: {error}", w.name, path.display())
                    });
                }
                custody::source::SourceEntry::Excluded { .. } => {}
            }
        }
        (files, bytes)
    });
    if let Some(e) = unreadable {
        return Err(Failure::usage(anyhow::anyhow!(e)));
    }
    if let Some(path) = &args.ics {
        std::fs::write(path, schedule::calendar(&plan, &estimates))
            .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", path.display())))?;
    }
    let devices = match args.device.device()? {
        Some(d) => Some(on_devices(&plan, d, rate, g)?),
        None => None,
    };
    if g.json {
        let mut out = serde_json::json!({
            "plan": plan.path,
            "rate": rate,
            "rate_measured": measured,
            "waves": estimates,
        });
        if let Some(d) = &devices {
            out["devices"] = serde_json::json!(d);
        }
        print_json(&out);
        return Ok(Code::Ok);
    }
    println!(
        "plan {}: {} wave(s) at {}/s ({})",
        plan.path.display(),
        plan.waves.len(),
        render::bytes(rate as u64),
        if measured {
            format!("measured by earlier runs in {}", g.ledger.display())
        } else {
            "--rate".into()
        }
    );
    for (i, (w, e)) in plan.waves.iter().zip(&estimates).enumerate() {
        print_estimate(w, e);
        if let Some(d) = devices.as_ref().and_then(|d| d.get(i)) {
            println!(
                "  devices: {} × {} (at least {} by bytes, files and folders alone)",
                d.devices, d.device, d.lower_bound
            );
            for s in &d.shards {
                let copying = jiff::SignedDuration::from_secs(s.copy_seconds.ceil() as i64);
                println!(
                    "    device {}: {} files, {}, {} studies; {copying:#} of copying",
                    s.number,
                    s.files,
                    render::bytes(s.bytes),
                    s.studies
                );
            }
        }
    }
    if let Some(path) = &args.ics {
        println!("calendar written to {}", path.display());
    }
    Ok(Code::Ok)
}

fn print_estimate(w: &schedule::WavePlan, e: &Estimate) {
    let when = |s: &str| {
        s.parse::<jiff::ZonedDateTime>()
            .map(|z| z.strftime("%a %Y-%m-%d %H:%M %Z").to_string())
            .unwrap_or_else(|_| s.to_owned())
    };
    let copying = jiff::SignedDuration::from_secs(e.copy_seconds.ceil() as i64);
    println!(
        "wave {} ({}): {} files, {}; {copying:#} of copying",
        e.name,
        e.change,
        e.files,
        render::bytes(e.bytes),
    );
    let window = match &w.window {
        Some(win) => format!("window {win}: {} opening(s)", e.windows),
        None => "no window".into(),
    };
    let finish = match &e.finish {
        Some(f) => format!("finish {}", when(f)),
        None => "does not finish within a year".into(),
    };
    let fits = match (&e.deadline, e.fits) {
        (Some(d), Some(true)) => format!("; deadline {}: fits", when(d)),
        (Some(d), _) => format!("; deadline {}: DOES NOT FIT", when(d)),
        (None, _) => String::new(),
    };
    println!("  {window}; start {}, {finish}{fits}", when(&e.start));
}

/// `custody transfer`'s flags, parsed as that command would.
#[derive(Debug, Parser)]
#[command(name = "custody run … --")]
struct TransferFlags {
    #[command(flatten)]
    args: super::transfer::Args,
}

/// `custody transfer`'s flags in `argv` (its first item the command's
/// name), parsed as that command would, with the configuration file's
/// defaults; an error names `at` (the wave, the job file).
pub(super) fn transfer_flags(argv: &[String], at: &str) -> Result<super::transfer::Args, Failure> {
    use clap::{CommandFactory, FromArgMatches};
    super::config::apply(TransferFlags::command(), super::config::file())
        .try_get_matches_from(argv)
        .and_then(|m| TransferFlags::from_arg_matches(&m))
        .map(|f| f.args)
        .map_err(|e| {
            Failure::usage(anyhow::anyhow!(
                "{at}: {}",
                e.to_string().lines().next().unwrap_or("bad transfer flags")
            ))
        })
}

pub fn run(args: &RunArgs, g: &Global) -> Outcome {
    let plan = load(&args.plan)?;
    let wave = plan.wave(&args.wave).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "{}: no wave {:?} (waves: {})",
            plan.path.display(),
            args.wave,
            plan.waves
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut argv: Vec<String> = vec![
        "custody run".into(),
        wave.source.display().to_string(),
        wave.destination.clone(),
    ];
    let given = |flag: &str| {
        args.transfer
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if let Some(key) = wave
        .signing_key
        .as_ref()
        .filter(|_| !given("--signing-key"))
    {
        argv.extend(["--signing-key".into(), key.display().to_string()]);
    }
    if let Some(w) = wave.window.as_ref().filter(|_| !given("--window")) {
        argv.extend(["--window".into(), w.to_string()]);
    }
    if let Some(b) = wave.bwlimit.as_ref().filter(|_| !given("--bwlimit")) {
        argv.extend(["--bwlimit".into(), b.to_string()]);
    }
    if let Some(j) = wave.job.as_ref().filter(|_| !given("--job")) {
        argv.extend(["--job".into(), j.clone()]);
    }
    argv.extend(args.transfer.iter().cloned());
    let flags = transfer_flags(&argv, &format!("wave {:?}", wave.name))?;
    if !g.quiet && !g.json {
        eprintln!(
            "custody: wave {} ({}): {} -> {}",
            wave.name,
            wave.change,
            wave.source.display(),
            wave.destination
        );
    }
    super::transfer::run_as(&flags, g, Some(wave.wave()), "run")
}
