//! Rendering: progress bars on a terminal, periodic one-line summaries in
//! the log otherwise, and the small formatting helpers the commands share.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custody::progress::{Notice, Phase, Progress, Tally};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Code, Global, LogFormat};

/// `s` with every control character (newline, carriage return, escape,
/// the C1 range…) written as a Rust escape (`\n`, `\u{1b}`): a file name
/// cannot start a line of its own, rewrite one, or drive the terminal.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c.is_control() {
            true => out.extend(c.escape_debug()),
            false => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes one human line to stdout or stderr, control characters escaped
/// (every `println!` and `eprintln!` of the face comes here; see `cli.rs`).
/// A closed stdout is not an error: the line is dropped.
pub fn print_line(to_stderr: bool, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    let line = escape_controls(&text);
    let _ = match to_stderr {
        true => writeln!(std::io::stderr().lock(), "{line}"),
        false => writeln!(std::io::stdout().lock(), "{line}"),
    };
}

/// A log writer for the human log format that escapes control characters
/// inside each event (tracing writes one event per call and ends it with a
/// newline, which stays). `tracing` already escapes ESC in field values;
/// this adds newlines and carriage returns, which would let a file name
/// forge a log line. ESC itself passes only when `ansi` is on, where it is
/// the formatter's own colouring.
pub struct EscapingWriter<W> {
    inner: W,
    ansi: bool,
}

/// Makes an [`EscapingWriter`] around each writer `inner` makes.
pub struct Escaping<M> {
    inner: M,
    ansi: bool,
}

impl<M> Escaping<M> {
    /// Wraps `inner`; `ansi`: the formatter colours its output.
    pub fn new(inner: M, ansi: bool) -> Self {
        Escaping { inner, ansi }
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Escaping<M>
{
    type Writer = EscapingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            ansi: self.ansi,
        }
    }
}

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        let text = String::from_utf8_lossy(body);
        let mut clean = String::with_capacity(text.len());
        for c in text.chars() {
            match c.is_control() && !(self.ansi && c == '\x1b') {
                true => clean.extend(c.escape_debug()),
                false => clean.push(c),
            }
        }
        self.inner.write_all(clean.as_bytes())?;
        self.inner.write_all(end)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Renders engine progress for a person or a log.
pub struct Renderer {
    bar: Mutex<Option<ProgressBar>>,
    counts: Arc<Counts>,
    bars: bool,
    quiet: bool,
    /// Log a progress line every `interval` (and one at each phase's end).
    lines: Option<Duration>,
    /// Notices go to the log file too.
    to_log: bool,
    ticker: Mutex<Option<Ticker>>,
}

/// What a phase has done so far.
#[derive(Debug, Default)]
struct Counts {
    /// Give each value as a field too (JSON logs).
    fields: bool,
    phase: Mutex<&'static str>,
    started: Mutex<Option<Instant>>,
    files_done: AtomicU64,
    files_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    /// Files re-read at the destination and found right (in the copy
    /// phase: each batch's early re-read).
    verified: AtomicU64,
    errors: AtomicU64,
}

/// The thread logging progress lines; dropping `stop` ends it.
struct Ticker {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Counts {
    /// Logs one progress line (target `custody::progress`, so `-q` and
    /// `CUSTODY_LOG` can silence it): fields for JSON logs, a sentence
    /// for people.
    fn log(&self, done: bool) {
        let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let seconds = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (files, files_total) = (get(&self.files_done), get(&self.files_total));
        let (bytes, bytes_total) = (get(&self.bytes_done), get(&self.bytes_total));
        let errors = get(&self.errors);
        let verified = get(&self.verified);
        let per_second = if seconds > 0.0 {
            (bytes as f64 / seconds) as u64
        } else {
            0
        };
        let eta = (!done && per_second > 0 && bytes_total > bytes)
            .then(|| (bytes_total - bytes) / per_second);
        let of = |n: u64, total: u64, show: &dyn Fn(u64) -> String| match total {
            0 => show(n),
            t => format!("{}/{}", show(n), show(t)),
        };
        let message = format!(
            "{phase}{}: {} files, {}, {}/s, {}{}{errors} error(s)",
            if done { " done" } else { "" },
            of(files, files_total, &|n| n.to_string()),
            of(bytes, bytes_total, &self::bytes),
            HumanBytes(per_second),
            match eta {
                Some(s) => format!("eta {}, ", HumanDuration(Duration::from_secs(s))),
                None => String::new(),
            },
            match (phase, verified) {
                ("copy", 1..) => format!("{verified} re-read and verified, "),
                _ => String::new(),
            },
        );
        if !self.fields {
            tracing::info!(target: "custody::progress", "{message}");
            return;
        }
        tracing::info!(
            target: "custody::progress",
            phase,
            done,
            files,
            files_total,
            bytes,
            bytes_total,
            bytes_per_second = per_second,
            eta_seconds = eta,
            verified,
            errors,
            seconds,
            "{message}"
        );
    }
}

impl Renderer {
    /// Bars only when both stdout and stderr are terminals and neither
    /// `--json` nor `--quiet` was given; otherwise notices go to stderr as
    /// plain lines, and progress to the log as a line every
    /// `--progress-interval` (also when logs go to `--log-file`).
    pub fn new(g: &Global) -> Self {
        let bars = !g.json
            && !g.quiet
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal();
        let lines = (!g.quiet && (!bars || g.log_file.is_some())).then_some(g.progress_interval);
        Renderer {
            bar: Mutex::new(None),
            counts: Arc::new(Counts {
                fields: g.log_format == LogFormat::Json,
                ..Counts::default()
            }),
            bars,
            quiet: g.quiet,
            lines,
            to_log: g.log_file.is_some(),
            ticker: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bar.lock().expect("progress lock").as_ref() {
            f(b);
        }
    }

    fn line(&self, text: String) {
        if self.to_log {
            tracing::warn!(target: "custody::notice", "{text}");
        }
        let guard = self.bar.lock().expect("progress lock");
        match guard.as_ref() {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Starts the thread that logs a progress line every `interval`.
    fn start_ticker(&self, interval: Duration) {
        let (stop, ticks) = crossbeam_channel::bounded::<()>(0);
        let counts = Arc::clone(&self.counts);
        let thread = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                ticks.recv_timeout(interval)
            {
                counts.log(false);
            }
        });
        *self.ticker.lock().expect("progress lock") = Some(Ticker { stop, thread });
    }
}

impl Progress for Renderer {
    fn begin(&self, phase: Phase, files: Option<u64>, bytes: Option<u64>) {
        let (label, name) = match phase {
            Phase::Transfer => ("copy  ", "copy"),
            Phase::Verify => ("verify", "verify"),
            Phase::Restore => ("decrypt", "decrypt"),
            Phase::Scan => ("scan  ", "scan"),
            Phase::Rollback => ("rollback", "rollback"),
        };
        let c = &self.counts;
        *c.phase.lock().expect("progress lock") = name;
        *c.started.lock().expect("progress lock") = Some(Instant::now());
        for (a, v) in [
            (&c.files_done, 0),
            (&c.files_total, files.unwrap_or(0)),
            (&c.bytes_done, 0),
            (&c.bytes_total, bytes.unwrap_or(0)),
            (&c.verified, 0),
            (&c.errors, 0),
        ] {
            a.store(v, Ordering::Relaxed);
        }
        if let Some(interval) = self.lines {
            self.start_ticker(interval);
        }
        if !self.bars {
            return;
        }
        let bar = match bytes {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix} {spinner} {bytes} {binary_bytes_per_sec} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_prefix(label);
        bar.enable_steady_tick(Duration::from_millis(120));
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn bytes(&self, bytes: u64) {
        self.counts.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.with_bar(|b| b.inc(bytes));
    }

    fn file_done(&self) {
        let done = self.counts.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.counts.files_total.load(Ordering::Relaxed);
        self.with_bar(|b| match total {
            0 => b.set_message(format!("{done} files")),
            t => b.set_message(format!("{done}/{t} files")),
        });
    }

    fn tally(&self, tally: Tally) {
        if let Tally::Verified { .. } = tally {
            self.counts.verified.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn notice(&self, notice: Notice<'_>) {
        match notice {
            Notice::Failed { path, error } => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
                self.line(format!("custody: {path}: {error}"))
            }
            Notice::SourceChanged {
                path,
                change,
                landed_in,
                action,
            } => self.line(format!(
                "custody: warning: {path}: {} at source since it landed (manifest {landed_in}); {}",
                change,
                match (change, action) {
                    ("deleted", _) => "kept at the destination",
                    (_, "resent") => "its new content landed as a new version beside it",
                    _ => "not sent again; the landed copy is kept",
                }
            )),
            Notice::Excluded { path, reason } if !self.quiet => {
                self.line(format!("custody: skipped {path}: {reason}"))
            }
            Notice::DicomUnread { path, reason } if !self.quiet => self.line(format!(
                "custody: note: {path}: DICOM header not read ({reason}); carried as a plain file"
            )),
            Notice::Excluded { .. } | Notice::DicomUnread { .. } => {}
        }
    }

    fn end(&self, _phase: Phase) {
        if let Some(t) = self.ticker.lock().expect("progress lock").take() {
            drop(t.stop);
            let _ = t.thread.join();
            self.counts.log(true);
        }
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}

/// A byte count for people (`1.20 GiB`).
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// A rate for people, from bytes and seconds.
pub fn rate(n: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".into();
    }
    format!("{}/s", HumanBytes((n as f64 / seconds) as u64))
}

const EXAMPLE_WARNING: [&str; 5] = [
    "custody: WARNING: ****************************************************************",
    "custody: WARNING: this is the PUBLIC DEMO KEY from keys-example/. Its private half is",
    "custody: WARNING: published, so anyone can forge signatures made with it: they prove",
    "custody: WARNING: nothing. Generate your own with `custody keygen --out DIR`.",
    "custody: WARNING: ****************************************************************",
];

/// Warns that the signing key is the published demo key.
pub fn warn_example_key(path: &Path) {
    for line in EXAMPLE_WARNING {
        eprintln!("{line}");
    }
    eprintln!("custody: WARNING: key file: {}", path.display());
}

/// Warns when a trust anchor includes the published demo key.
pub fn warn_if_example_trust(trust: &custody::keys::Trust) {
    if trust.trusts_example_key() {
        for line in EXAMPLE_WARNING {
            eprintln!("{line}");
        }
        eprintln!("custody: WARNING: (it is listed as a trusted key)");
    }
}

/// Whether this command printed its `--json` object.
pub(super) static PRINTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The `--json` object of a command that failed (docs/json.md).
pub(super) fn print_error_json(code: Code, message: &str, hint: Option<&str>) {
    print_json(&serde_json::json!({
        "error": {
            "exit_code": code as u8,
            "message": message.trim_end().trim_start_matches("error: "),
            "hint": hint,
        }
    }));
}

/// Prints `value` as one JSON object on stdout (for `--json`). A closed
/// pipe is not an error.
pub fn print_json(value: &impl serde::Serialize) {
    PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value).map(|()| writeln!(out));
}

/// The `--json` object of a check: `{"result": "pass"|"fail", "report": …}`.
pub fn print_result(ok: bool, report: &impl serde::Serialize) {
    print_json(&serde_json::json!({
        "result": if ok { "pass" } else { "fail" },
        "report": report,
    }));
}
