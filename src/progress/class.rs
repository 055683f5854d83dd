//! The classes of what went wrong with one file: why a transfer failed
//! it, and what a verify found. They are recorded in the ledger (a
//! `file_failed` event's `class`), counted by reports and metrics, and
//! spelled once, here, so every floor above names them by type.

use serde::Serialize;

/// What kind of failure a file met, recorded with it (the `class` of its
/// `file_failed` event), so that a report counts them without reading
/// error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

/// The class of one discrepancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyClass {
    /// In the manifest, absent at the destination.
    Missing,
    /// At the destination, absent from the manifest.
    Extra,
    /// Present with another size.
    Size,
    /// Same size, other content.
    Hash,
    /// Present but could not be read (or not a regular file).
    Unreadable,
}

impl DiscrepancyClass {
    /// Every class.
    pub const ALL: [DiscrepancyClass; 5] = [
        DiscrepancyClass::Missing,
        DiscrepancyClass::Extra,
        DiscrepancyClass::Size,
        DiscrepancyClass::Hash,
        DiscrepancyClass::Unreadable,
    ];

    /// Its name in `--json` and events (`missing`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyClass::Missing => "missing",
            DiscrepancyClass::Extra => "extra",
            DiscrepancyClass::Size => "size",
            DiscrepancyClass::Hash => "hash",
            DiscrepancyClass::Unreadable => "unreadable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        for c in FailureClass::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(FailureClass::parse(c.as_str()), Some(c));
        }
        for c in DiscrepancyClass::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
