//! How long a run spent copying and how many bytes it landed, read from its
//! events in order; the throughput `custody plan` estimates from and the
//! report's timing.

use jiff::Timestamp;

use super::kind;

/// Time spent copying, from a run's events in order: each attempt from its
/// `run_started`/`run_resumed` to its last `files_landed` batch (the gaps
/// between attempts, e.g. the days between nightly windows, do not count),
/// and the bytes those batches recorded.
#[derive(Debug, Clone, Default)]
pub struct Copying {
    attempt: Option<(Timestamp, Timestamp)>,
    /// Seconds spent copying, over the attempts closed so far.
    pub seconds: f64,
    /// Bytes recorded as landed.
    pub bytes: u64,
}

impl Copying {
    /// Takes the next event of the run: its kind, time, and (for
    /// `files_landed`) bytes.
    pub fn event(&mut self, kind: &str, at: Timestamp, bytes: u64) {
        match kind {
            kind::RUN_STARTED | kind::RUN_RESUMED => {
                self.close();
                self.attempt = Some((at, at));
            }
            kind::FILES_LANDED => {
                if let Some((_, end)) = self.attempt.as_mut() {
                    *end = at;
                }
                self.bytes += bytes;
            }
            kind::SEALED | kind::RUN_INCOMPLETE => self.close(),
            _ => {}
        }
    }

    /// Ends the attempt in progress, if any (at the end of a run's events).
    pub fn close(&mut self) {
        if let Some((start, end)) = self.attempt.take() {
            self.seconds += (end - start).as_secs_f64().max(0.0);
        }
    }

    /// Bytes per second, once some copying was timed.
    pub fn rate(&self) -> Option<f64> {
        (self.seconds > 0.0 && self.bytes > 0).then(|| self.bytes as f64 / self.seconds)
    }
}
