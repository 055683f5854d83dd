//! `custody`: a chain-of-custody bulk transfer engine.
//!
//! This crate is the engine. It walks a source tree, copies every file to a
//! destination while hashing it (each source byte is read once), records what
//! landed in a SQLite ledger whose custody events are hash-chained and signed,
//! seals a signed manifest, and verifies landed data against that manifest.
//!
//! The engine never formats output for a terminal: it takes option structs,
//! reports progress through [`progress::Progress`], and returns typed errors
//! and reports. The `custody` binary (`src/main.rs`, `src/cli/`) is the face.
#![forbid(unsafe_code)]

pub mod crypt;
pub mod databox;
pub mod dest;
pub mod digest;
pub mod keys;
#[cfg(test)]
mod layers;
pub mod ledger;
pub mod lock;
pub mod manifest;
pub mod merkle;
pub mod pool;
pub mod progress;
pub mod proofs;
pub mod relpath;
pub mod report;
pub mod restore;
pub mod rollback;
pub mod scan;
pub mod schedule;
pub mod set;
pub mod source;
pub mod split;
pub mod transfer;
pub mod verify;
pub mod witness;

/// The version of this tool, recorded in manifests and ledger runs.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The current time as an RFC 3339 UTC timestamp with nanoseconds, the one
/// timestamp form used in manifests and the ledger.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// This host's name, recorded in manifests and runs.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
