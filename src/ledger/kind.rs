//! The custody event kinds, stored as text in `events.kind`: each has one
//! spelling, here, and every module that writes or reads an event names it
//! through these constants (`docs/ledger.md`, "Event kinds").

/// A new run began.
pub const RUN_STARTED: &str = "run_started";
/// An incomplete run was resumed.
pub const RUN_RESUMED: &str = "run_resumed";
/// A batch of files landed (rows in `landed` bound by digest).
pub const FILES_LANDED: &str = "files_landed";
/// One file failed in this attempt.
pub const FILE_FAILED: &str = "file_failed";
/// An attempt ended with failures; the run stays open for a rerun.
pub const RUN_INCOMPLETE: &str = "run_incomplete";
/// The run was sealed into a manifest (signed).
pub const SEALED: &str = "sealed";
/// Landed data was re-read and compared with a manifest (signed).
pub const VERIFIED: &str = "verified";
/// Data Box BOM files were reconciled with a manifest (signed).
pub const BOM_CHECKED: &str = "bom_checked";
/// A Data Box copy log was mapped onto a manifest (signed).
pub const COPYLOG_CHECKED: &str = "copylog_checked";
/// The media holding a manifest's files changed hands (signed).
pub const HANDOFF: &str = "handoff";
/// What a manifest landed was removed from its destination (signed).
pub const ROLLED_BACK: &str = "rolled_back";
/// A file a job landed before changed or disappeared at the source.
pub const SOURCE_CHANGED: &str = "source_changed";

/// Kinds that must carry a signature.
pub const SIGNED: [&str; 6] = [
    SEALED,
    VERIFIED,
    BOM_CHECKED,
    COPYLOG_CHECKED,
    HANDOFF,
    ROLLED_BACK,
];
