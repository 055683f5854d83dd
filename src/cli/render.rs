//! Rendering: progress bars on a terminal, plain lines otherwise, and the
//! small formatting helpers the commands share.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use custody::progress::{Notice, Phase, Progress};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Global;

/// Renders engine progress for a person or a log.
pub struct Renderer {
    bar: Mutex<Option<ProgressBar>>,
    files_done: AtomicU64,
    files_total: AtomicU64,
    bars: bool,
    quiet: bool,
}

impl Renderer {
    /// Bars only when both stdout and stderr are terminals and neither
    /// `--json` nor `--quiet` was given; otherwise notices go to stderr as
    /// plain lines.
    pub fn new(g: &Global) -> Self {
        let bars = !g.json
            && !g.quiet
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal();
        Renderer {
            bar: Mutex::new(None),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            bars,
            quiet: g.quiet,
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bar.lock().expect("progress lock").as_ref() {
            f(b);
        }
    }

    fn line(&self, text: String) {
        let guard = self.bar.lock().expect("progress lock");
        match guard.as_ref() {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

impl Progress for Renderer {
    fn begin(&self, phase: Phase, files: Option<u64>, bytes: Option<u64>) {
        if !self.bars {
            return;
        }
        let label = match phase {
            Phase::Transfer => "copy  ",
            Phase::Verify => "verify",
            Phase::Restore => "decrypt",
            Phase::Scan => "scan  ",
        };
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
        self.files_done.store(0, Ordering::Relaxed);
        self.files_total
            .store(files.unwrap_or(0), Ordering::Relaxed);
        bar.enable_steady_tick(Duration::from_millis(120));
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn bytes(&self, bytes: u64) {
        self.with_bar(|b| b.inc(bytes));
    }

    fn file_done(&self) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.files_total.load(Ordering::Relaxed);
        self.with_bar(|b| match total {
            0 => b.set_message(format!("{done} files")),
            t => b.set_message(format!("{done}/{t} files")),
        });
    }

    fn notice(&self, notice: Notice<'_>) {
        match notice {
            Notice::Failed { path, error } => self.line(format!("custody: {path}: {error}")),
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

const EXAMPLE_WARNING: &str = "\
custody: WARNING: ****************************************************************
custody: WARNING: this is the PUBLIC DEMO KEY from keys-example/. Its private half is
custody: WARNING: published, so anyone can forge signatures made with it: they prove
custody: WARNING: nothing. Generate your own with `custody keygen --out DIR`.
custody: WARNING: ****************************************************************";

/// Warns that the signing key is the published demo key.
pub fn warn_example_key(path: &Path) {
    eprintln!(
        "{EXAMPLE_WARNING}\ncustody: WARNING: key file: {}",
        path.display()
    );
}

/// Warns when a trust anchor includes the published demo key.
pub fn warn_if_example_trust(trust: &custody::keys::Trust) {
    if trust.trusts_example_key() {
        eprintln!("{EXAMPLE_WARNING}\ncustody: WARNING: (it is listed as a trusted key)");
    }
}
