//! What kind of failure a file met: recorded as the `class` of its
//! `file_failed` event, listed in a transfer's summary, and counted by the
//! report without reading error texts.

use serde::Serialize;

pub use crate::progress::FailureClass;

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
