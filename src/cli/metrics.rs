//! `--metrics-file PATH`: a run's state in the Prometheus text exposition
//! format, for node_exporter's textfile collector (docs/operations.md,
//! "Monitoring").
//!
//! [`Metrics`] is a [`Progress`]: it counts what the engine tallies (files
//! and bytes copied, skipped and verified; failures and discrepancies by
//! class), follows the phase, and asks the ledger when the run's job last
//! sealed and last verified. The file is written whole to a temporary name
//! beside PATH and renamed over it (a scrape never reads half a file): once
//! at the start, at every phase change, every `--progress-interval`, and at
//! the end with the exit code. A failed write is logged once and never
//! fails the run. No label carries a path, a name from the source, or
//! anything of a patient: the job's name (chosen by the operator), the
//! destination's kind and the command are the only labels.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custody::ledger::{Health, Ledger, Watched};
use custody::progress::{DiscrepancyClass, FailureClass, Phase, Progress, RunStarted, Tally};
use prometheus::{Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

use super::Code;

/// The phases a run reports, in order (`custody_phase{phase}`).
pub const PHASES: [&str; 5] = ["preflight", "copy", "seal", "verify", "done"];

/// How a run stands (`custody_run_status{status}`): running, then what its
/// exit code says.
pub const STATUSES: [&str; 6] = [
    "running",
    "ok",
    "integrity_failure",
    "error",
    "incomplete",
    "not_now",
];

/// The status an exit code stands for.
fn status_of(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Integrity => "integrity_failure",
        Code::Usage => "error",
        Code::Incomplete => "incomplete",
        Code::NotNow => "not_now",
    }
}

/// What kind of place a destination is (`destination_kind`): `share`,
/// `databox_share`, `blob`, `databox_blob` or `dicomweb`.
pub fn destination_kind(target: &custody::dest::Target, databox: bool) -> &'static str {
    use custody::dest::Target;
    match (target, databox) {
        (Target::Share(_), false) => "share",
        (Target::Share(_), true) => "databox_share",
        (Target::Blob(_), false) => "blob",
        (Target::Blob(_), true) => "databox_blob",
        (Target::Dicomweb(_), _) => "dicomweb",
    }
}

/// Seconds since the Unix epoch, now.
fn now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// What the run has done so far (monotonic: only the engine's tallies move
/// them).
#[derive(Debug, Default)]
struct Counts {
    files_copied: AtomicU64,
    bytes_copied: AtomicU64,
    files_skipped: AtomicU64,
    bytes_skipped: AtomicU64,
    files_verified: AtomicU64,
    bytes_verified: AtomicU64,
    failures: [AtomicU64; FailureClass::ALL.len()],
    discrepancies: [AtomicU64; DiscrepancyClass::ALL.len()],
}

/// Where the run is.
#[derive(Debug)]
struct State {
    job: Option<String>,
    phase: &'static str,
    phase_started: f64,
    /// Start and end (or now) of the copy and verify phases, for
    /// throughput.
    copy: Option<(f64, Option<f64>)>,
    verify: Option<(f64, Option<f64>)>,
    /// Bytes verified before the verify phase began (a transfer's early
    /// re-reads during the copy): not the phase's throughput.
    verified_before: u64,
    watched: Option<WatchedRun>,
    health: Option<Health>,
    exit: Option<Code>,
}

/// Whose seals and verifies the ledger is asked about.
#[derive(Debug, Clone)]
pub enum WatchedRun {
    /// A job, by name.
    Job(String),
    /// A run, by number.
    Run(u64),
    /// The run that sealed a manifest, by id.
    Manifest(String),
}

/// The metrics of one run, and the file they are written to.
pub struct Metrics {
    inner: Arc<Inner>,
    ticker: Mutex<Option<(crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>)>>,
}

struct Inner {
    path: PathBuf,
    ledger: PathBuf,
    command: &'static str,
    destination_kind: &'static str,
    started: f64,
    counts: Counts,
    /// When a file last finished or a byte last moved (Unix milliseconds;
    /// workers store it, so no lock).
    last_progress: AtomicU64,
    state: Mutex<State>,
    /// A write failed and was logged: later failures are quiet.
    warned: AtomicBool,
}

impl Metrics {
    /// Starts a run's metrics at `path` (writing them once now, and then
    /// every `interval`). `job` is the job's name when the command line
    /// gives it; the engine may name it later.
    pub fn start(
        path: &Path,
        ledger: &Path,
        command: &'static str,
        destination_kind: &'static str,
        job: Option<String>,
        watched: Option<WatchedRun>,
        interval: Duration,
    ) -> Self {
        let started = now();
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            ledger: ledger.to_path_buf(),
            command,
            destination_kind,
            started,
            counts: Counts::default(),
            last_progress: AtomicU64::new(jiff::Timestamp::now().as_millisecond() as u64),
            state: Mutex::new(State {
                job,
                phase: PHASES[0],
                phase_started: started,
                copy: None,
                verify: None,
                verified_before: 0,
                watched,
                health: None,
                exit: None,
            }),
            warned: AtomicBool::new(false),
        });
        inner.refresh_health();
        inner.write();
        let (stop, ticks) = crossbeam_channel::bounded::<()>(0);
        let every = Arc::clone(&inner);
        // (`--progress-interval 0s` must not spin.)
        let interval = interval.max(Duration::from_millis(10));
        let thread = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                ticks.recv_timeout(interval)
            {
                every.write();
            }
        });
        Metrics {
            inner,
            ticker: Mutex::new(Some((stop, thread))),
        }
    }

    /// The run is about `watched` (and `job`, when it has one): the ledger
    /// is asked about it now and at the end.
    pub fn watch(&self, watched: WatchedRun, job: Option<String>) {
        {
            let mut s = self.inner.state();
            if job.is_some() {
                s.job = job;
            }
            s.watched = Some(watched);
        }
        self.inner.refresh_health();
        self.inner.write();
    }

    /// The run ended with `code`: the last write, with the ledger asked
    /// again (the seal and verify this run recorded).
    pub fn finish(&self, code: Code) {
        if let Some((stop, thread)) = self.ticker.lock().expect("metrics lock").take() {
            drop(stop);
            let _ = thread.join();
        }
        {
            let mut guard = self.inner.state();
            let s = &mut *guard;
            let t = now();
            s.exit = Some(code);
            s.phase = "done";
            s.phase_started = t;
            for phase in [&mut s.copy, &mut s.verify] {
                if let Some((_, end @ None)) = phase {
                    *end = Some(t);
                }
            }
        }
        self.inner.refresh_health();
        self.inner.write();
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the ledger about the watched run's job (nothing when there is
    /// no ledger yet, or no run to watch).
    fn refresh_health(&self) {
        let watched = self.state().watched.clone();
        let Some(watched) = watched else { return };
        if !self.ledger.is_file() {
            return;
        }
        let asked = Ledger::open_existing(&self.ledger).and_then(|l| {
            l.health(match &watched {
                WatchedRun::Job(name) => Watched::Job(name),
                WatchedRun::Run(run) => Watched::Run(*run),
                WatchedRun::Manifest(id) => Watched::Manifest(id),
            })
        });
        match asked {
            Ok(h) => {
                let mut s = self.state();
                if s.job.is_none() {
                    s.job.clone_from(&h.job);
                }
                s.health = Some(h);
            }
            Err(e) => self.warn(&format!("{e}")),
        }
    }

    /// Something moved: now is the last progress.
    fn moved(&self) {
        let t = jiff::Timestamp::now().as_millisecond() as u64;
        self.last_progress.store(t, Ordering::Relaxed);
    }

    fn warn(&self, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "metrics file {}: {what}; the run goes on without it",
                self.path.display()
            );
        }
    }

    /// Writes the file: a temporary name in its folder, then a rename.
    fn write(&self) {
        let text = match self.render() {
            Ok(text) => text,
            Err(e) => return self.warn(&e.to_string()),
        };
        if let Err(e) = replace(&self.path, text.as_bytes()) {
            self.warn(&e.to_string());
        }
    }

    /// The metrics as Prometheus text.
    fn render(&self) -> prometheus::Result<String> {
        let s = self.state();
        let t = now();
        let labels = [
            ("custody_job", s.job.clone().unwrap_or_default()),
            ("destination_kind", self.destination_kind.to_owned()),
            ("command", self.command.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let r = Registry::new_custom(None, Some(labels))?;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counts;
        let counter = |name: &str, help: &str, value: u64| -> prometheus::Result<()> {
            let m = IntCounter::with_opts(Opts::new(name, help))?;
            m.inc_by(value);
            r.register(Box::new(m))
        };
        let gauge = |name: &str, help: &str, value: f64| -> prometheus::Result<()> {
            let m = Gauge::with_opts(Opts::new(name, help))?;
            m.set(value);
            r.register(Box::new(m))
        };
        let build = GaugeVec::new(
            Opts::new(
                "custody_build_info",
                "The custody version that wrote this file (always 1).",
            ),
            &["version"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        r.register(Box::new(build))?;
        counter(
            "custody_files_copied_total",
            "Files copied to the destination in this run.",
            get(&c.files_copied),
        )?;
        counter(
            "custody_bytes_copied_total",
            "Bytes (plaintext) copied to the destination in this run.",
            get(&c.bytes_copied),
        )?;
        counter(
            "custody_files_skipped_total",
            "Files not copied because an earlier attempt or an earlier run of the job landed them unchanged.",
            get(&c.files_skipped),
        )?;
        counter(
            "custody_bytes_skipped_total",
            "Bytes of the skipped files.",
            get(&c.bytes_skipped),
        )?;
        counter(
            "custody_files_verified_total",
            "Files re-read at the destination whose size and BLAKE3 match the manifest.",
            get(&c.files_verified),
        )?;
        counter(
            "custody_bytes_verified_total",
            "Bytes re-read at the destination and found to match.",
            get(&c.bytes_verified),
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "custody_failures_total",
                "Files the transfer failed in this run, by class (the class of their file_failed event).",
            ),
            &["class"],
        )?;
        for (i, class) in FailureClass::ALL.iter().enumerate() {
            failures
                .with_label_values(&[class.as_str()])
                .inc_by(get(&c.failures[i]));
        }
        r.register(Box::new(failures))?;
        let integrity = IntCounterVec::new(
            Opts::new(
                "custody_integrity_failures_total",
                "Discrepancies the verify found in this run, by class (missing, extra, size, hash, unreadable).",
            ),
            &["class"],
        )?;
        for (i, class) in DiscrepancyClass::ALL.iter().enumerate() {
            integrity
                .with_label_values(&[class.as_str()])
                .inc_by(get(&c.discrepancies[i]));
        }
        r.register(Box::new(integrity))?;
        let status = GaugeVec::new(
            Opts::new(
                "custody_run_status",
                "1 for the run's status (running, or what its exit code says), 0 for the others.",
            ),
            &["status"],
        )?;
        let current = s.exit.map_or("running", status_of);
        for name in STATUSES {
            status
                .with_label_values(&[name])
                .set(f64::from(u8::from(name == current)));
        }
        r.register(Box::new(status))?;
        if let Some(code) = s.exit {
            gauge(
                "custody_run_exit_code",
                "The run's exit code (0 ok, 1 integrity failure, 2 usage or configuration, 3 incomplete, 4 not now).",
                f64::from(code as u8),
            )?;
        }
        let phase = GaugeVec::new(
            Opts::new(
                "custody_phase",
                "1 for the phase the run is in, 0 for the others.",
            ),
            &["phase"],
        )?;
        for name in PHASES {
            phase
                .with_label_values(&[name])
                .set(f64::from(u8::from(name == s.phase)));
        }
        r.register(Box::new(phase))?;
        gauge(
            "custody_phase_start_timestamp_seconds",
            "When the run entered its current phase (Unix time).",
            s.phase_started,
        )?;
        gauge(
            "custody_run_start_timestamp_seconds",
            "When the run started (Unix time).",
            self.started,
        )?;
        gauge(
            "custody_run_duration_seconds",
            "How long the run has taken so far (all of it, once it ended).",
            t - self.started,
        )?;
        gauge(
            "custody_last_progress_timestamp_seconds",
            "When the run last finished a file or moved a byte (Unix time).",
            self.last_progress.load(Ordering::Relaxed) as f64 / 1000.0,
        )?;
        let throughput = GaugeVec::new(
            Opts::new(
                "custody_throughput_bytes_per_second",
                "Bytes copied (phase copy) or verified (phase verify) per second of that phase.",
            ),
            &["phase"],
        )?;
        for (name, span, bytes) in [
            ("copy", s.copy, get(&c.bytes_copied)),
            (
                "verify",
                s.verify,
                get(&c.bytes_verified).saturating_sub(s.verified_before),
            ),
        ] {
            if let Some((from, to)) = span {
                let seconds = to.unwrap_or(t) - from;
                let rate = if seconds > 0.0 {
                    bytes as f64 / seconds
                } else {
                    0.0
                };
                throughput.with_label_values(&[name]).set(rate);
            }
        }
        r.register(Box::new(throughput))?;
        if let Some(h) = &s.health {
            counter(
                "custody_ledger_events_total",
                "Custody events in the ledger (every run).",
                h.events,
            )?;
            let stamp = |t: jiff::Timestamp| t.as_millisecond() as f64 / 1000.0;
            if let Some(at) = h.last_sealed {
                gauge(
                    "custody_last_seal_timestamp_seconds",
                    "When the job (or, outside a job, this source and destination) last sealed a manifest (Unix time).",
                    stamp(at),
                )?;
            }
            if let Some(at) = h.last_verified {
                gauge(
                    "custody_last_verify_timestamp_seconds",
                    "When a verify of the job's manifests last passed (Unix time).",
                    stamp(at),
                )?;
            }
        }
        gauge(
            "custody_metrics_write_timestamp_seconds",
            "When this file was written (Unix time): a running run rewrites it every --progress-interval.",
            t,
        )?;
        let mut text = Vec::new();
        prometheus::TextEncoder::new().encode(&r.gather(), &mut text)?;
        String::from_utf8(text).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same
/// folder (not ending in `.prom`, so the collector never reads it), mode
/// 0644 (the collector runs as another user; nothing in it is private),
/// then a rename.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Progress for Metrics {
    fn begin(&self, phase: Phase, _files: Option<u64>, _bytes: Option<u64>) {
        let t = now();
        {
            let mut s = self.inner.state();
            let (name, span) = match phase {
                Phase::Transfer => ("copy", Some(&mut s.copy)),
                Phase::Verify => ("verify", Some(&mut s.verify)),
                Phase::Scan => ("preflight", None),
                Phase::Restore | Phase::Rollback => ("copy", None),
            };
            if let Some(span) = span {
                *span = Some((t, None));
            }
            if phase == Phase::Verify {
                s.verified_before = self.inner.counts.bytes_verified.load(Ordering::Relaxed);
            }
            s.phase = name;
            s.phase_started = t;
        }
        self.inner.write();
    }

    fn end(&self, phase: Phase) {
        let t = now();
        {
            let mut s = self.inner.state();
            match phase {
                Phase::Transfer => {
                    if let Some((_, end)) = s.copy.as_mut() {
                        *end = Some(t);
                    }
                    s.phase = "seal";
                    s.phase_started = t;
                }
                Phase::Verify => {
                    if let Some((_, end)) = s.verify.as_mut() {
                        *end = Some(t);
                    }
                }
                _ => {}
            }
        }
        self.inner.write();
    }

    fn bytes(&self, _bytes: u64) {
        self.inner.moved();
    }

    fn file_done(&self) {
        self.inner.moved();
    }

    fn tally(&self, tally: Tally) {
        let c = &self.inner.counts;
        let add = |a: &AtomicU64, n: u64| {
            a.fetch_add(n, Ordering::Relaxed);
        };
        match tally {
            Tally::Copied { bytes } => {
                add(&c.files_copied, 1);
                add(&c.bytes_copied, bytes);
            }
            Tally::Retracted { bytes } => {
                c.files_copied.fetch_sub(1, Ordering::Relaxed);
                c.bytes_copied.fetch_sub(bytes, Ordering::Relaxed);
            }
            Tally::Skipped { bytes } => {
                add(&c.files_skipped, 1);
                add(&c.bytes_skipped, bytes);
            }
            Tally::Verified { bytes } => {
                add(&c.files_verified, 1);
                add(&c.bytes_verified, bytes);
            }
            Tally::Failed(class) => {
                if let Some(i) = FailureClass::ALL.iter().position(|c| *c == class) {
                    add(&c.failures[i], 1);
                }
            }
            Tally::Discrepancy(class) => {
                if let Some(i) = DiscrepancyClass::ALL.iter().position(|c| *c == class) {
                    add(&c.discrepancies[i], 1);
                }
            }
        }
    }

    fn run_started(&self, run: RunStarted<'_>) {
        self.watch(
            match run.job {
                Some(job) => WatchedRun::Job(job.to_owned()),
                None => WatchedRun::Run(run.run),
            },
            run.job.map(str::to_owned),
        );
    }
}

/// What a command's metrics are about, before it runs.
pub struct Launch<'a> {
    /// The file (`--metrics-file`); `None`: no metrics.
    pub path: Option<&'a Path>,
    /// The command's name, for the `command` label.
    pub command: &'static str,
    /// Where it lands, for `destination_kind` (an argument that does not
    /// parse: `unknown`).
    pub destination: Option<&'a Path>,
    /// The destination is a Data Box's (a share by its name, or
    /// `--databox-rest`).
    pub databox: bool,
    /// The job, when the command line names it.
    pub job: Option<&'a str>,
}

/// Runs `command` with progress to the renderer and, with a metrics file,
/// to the metrics too, which are written once more with the outcome's exit
/// code when it returns.
pub fn run(
    launch: &Launch<'_>,
    g: &super::Global,
    command: impl FnOnce(&dyn Progress, Option<&Metrics>) -> super::Outcome,
) -> super::Outcome {
    let metrics = launch.path.map(|path| {
        let kind = launch
            .destination
            .and_then(|d| custody::dest::Target::parse(d).ok())
            .map_or("unknown", |t| {
                let databox = launch.databox
                    || g.databox_rest
                    || custody::databox::Placement::for_destination(&t, None).is_some();
                destination_kind(&t, databox)
            });
        let job = launch.job.map(str::to_owned);
        Metrics::start(
            path,
            &g.ledger,
            launch.command,
            kind,
            job.clone(),
            job.map(WatchedRun::Job),
            g.progress_interval,
        )
    });
    let renderer = super::render::Renderer::new(g);
    let progress = Tee {
        shown: &renderer,
        metrics: metrics.as_ref(),
    };
    let outcome = command(&progress, metrics.as_ref());
    if let Some(m) = &metrics {
        m.finish(match &outcome {
            Ok(code) => *code,
            Err(f) => f.code,
        });
    }
    outcome
}

/// Progress to two places: the renderer, and the metrics when asked for.
pub struct Tee<'a> {
    /// Where people (or the log) see it.
    pub shown: &'a dyn Progress,
    /// The metrics file, with `--metrics-file`.
    pub metrics: Option<&'a Metrics>,
}

impl Progress for Tee<'_> {
    fn begin(&self, phase: Phase, files: Option<u64>, bytes: Option<u64>) {
        self.shown.begin(phase, files, bytes);
        if let Some(m) = self.metrics {
            m.begin(phase, files, bytes);
        }
    }
    fn bytes(&self, bytes: u64) {
        self.shown.bytes(bytes);
        if let Some(m) = self.metrics {
            m.bytes(bytes);
        }
    }
    fn file_done(&self) {
        self.shown.file_done();
        if let Some(m) = self.metrics {
            m.file_done();
        }
    }
    fn notice(&self, notice: custody::progress::Notice<'_>) {
        self.shown.notice(notice);
    }
    fn end(&self, phase: Phase) {
        self.shown.end(phase);
        if let Some(m) = self.metrics {
            m.end(phase);
        }
    }
    fn tally(&self, tally: Tally) {
        self.shown.tally(tally);
        if let Some(m) = self.metrics {
            m.tally(tally);
        }
    }
    fn run_started(&self, run: RunStarted<'_>) {
        self.shown.run_started(run);
        if let Some(m) = self.metrics {
            m.run_started(run);
        }
    }
}
