//! Exit codes and command failures: what a command returns ([`Outcome`]),
//! the documented codes ([`Code`]), and a [`Failure`] carrying its error,
//! code and the hint line that tells the user what to do next.

/// Exit codes (documented in README.md and `custody --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// Integrity failure: verify or audit found a discrepancy or a bad signature.
    Integrity = 1,
    /// Usage or configuration error; nothing moved.
    Usage = 2,
    /// Incomplete transfer; rerunning the same command resumes.
    Incomplete = 3,
    /// Not now, nothing wrong: paused at a window's end or a limit, started
    /// outside its window, or another transfer holds this ledger and
    /// destination; running the same command later resumes.
    NotNow = 4,
}

/// A command failure: the error, its exit code, and what to do next.
pub struct Failure {
    pub(super) code: Code,
    pub(super) error: anyhow::Error,
    pub(super) hint: Option<String>,
}

impl Failure {
    pub(super) fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
            hint: None,
        }
    }

    /// A usage or configuration error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::Usage, error)
    }

    /// An integrity failure (exit 1).
    pub fn integrity(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::Integrity, error)
    }

    /// An incomplete run (exit 3).
    pub fn incomplete(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::Incomplete, error)
    }

    /// Not now (exit 4): outside the window, or another run holds the
    /// destination.
    pub fn not_now(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Code::NotNow, error)
    }

    /// Adds the line telling the user what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What a command returns.
pub type Outcome = Result<Code, Failure>;

/// An error and its causes in one line, each cause once: most errors
/// already name their cause in their own message ("{path}: {source}").
pub(super) fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !line.contains(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    line
}
