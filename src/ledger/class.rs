//! What kind of failure a file met: recorded as the `class` of its
//! `file_failed` event, listed in a transfer's summary, and counted by the
//! report without reading error texts.

use serde::Serialize;

/// One failed entry.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The path concerned.
    pub path: String,
    /// The cause, one line.
    pub error: String,
    /// What kind of failure it is.
    pub class: FailureClass,
}

/// What kind of failure a file met, recorded with it (the `class` of its
/// `file_failed` event), so that a report counts them without reading
/// error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureClass {
    /// The source could not be listed, opened or read.
    SourceUnreadable,
    /// The source changed between its listing and the end of its read.
    SourceChanged,
    /// The destination refused a write or a commit.
    Destination,
    /// `--require-deidentified` refused it.
    DicomRefused,
    /// A job landed it before, and its content changed since
    /// (`--on-source-change fail`).
    ChangedSinceLanded,
    /// The ledger could not be asked about it.
    Ledger,
}

impl FailureClass {
    /// Every class.
    pub const ALL: [FailureClass; 6] = [
        FailureClass::SourceUnreadable,
        FailureClass::SourceChanged,
        FailureClass::Destination,
        FailureClass::DicomRefused,
        FailureClass::ChangedSinceLanded,
        FailureClass::Ledger,
    ];

    /// Its name in events and `--json` (`source_unreadable`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::SourceUnreadable => "source_unreadable",
            FailureClass::SourceChanged => "source_changed",
            FailureClass::Destination => "destination",
            FailureClass::DicomRefused => "dicom_refused",
            FailureClass::ChangedSinceLanded => "changed_since_landed",
            FailureClass::Ledger => "ledger",
        }
    }

    /// The class named `name` ([`FailureClass::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}
