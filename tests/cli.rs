//! Integration tests: the built `custody` binary driven as a user or a cron
//! job would, against real files, a real SQLite ledger and stock OpenSSH.

mod support;

#[path = "cli/audit.rs"]
mod audit;
#[path = "cli/bad_input.rs"]
mod bad_input;
#[path = "cli/blob.rs"]
mod blob;
#[path = "cli/config.rs"]
mod config;
#[path = "cli/crash.rs"]
mod crash;
#[path = "cli/crc64.rs"]
mod crc64;
#[path = "cli/databox.rs"]
mod databox;
#[path = "cli/databox_rest.rs"]
mod databox_rest;
#[path = "cli/dicom.rs"]
mod dicom;
#[path = "cli/dicomweb.rs"]
mod dicomweb;
#[path = "cli/eio.rs"]
mod eio;
#[path = "cli/encryption.rs"]
mod encryption;
#[path = "cli/entra.rs"]
mod entra;
#[path = "cli/faults.rs"]
mod faults;
#[path = "cli/handoff.rs"]
mod handoff;
#[path = "cli/jobs.rs"]
mod jobs;
#[path = "cli/json.rs"]
mod json;
#[path = "cli/ledger.rs"]
mod ledger;
#[path = "cli/logs.rs"]
mod logs;
#[path = "cli/metrics.rs"]
mod metrics;
#[path = "cli/operations.rs"]
mod operations;
#[path = "cli/package.rs"]
mod package;
#[path = "cli/preflight.rs"]
mod preflight;
#[path = "cli/proofs.rs"]
mod proofs;
#[path = "cli/report.rs"]
mod report;
#[path = "cli/rerun.rs"]
mod rerun;
#[path = "cli/resume.rs"]
mod resume;
#[path = "cli/rollback.rs"]
mod rollback;
#[path = "cli/safety.rs"]
mod safety;
#[path = "cli/scan.rs"]
mod scan;
#[path = "cli/split.rs"]
mod split;
#[path = "cli/transfer.rs"]
mod transfer;
#[path = "cli/vectors.rs"]
mod vectors;
#[path = "cli/verify.rs"]
mod verify;
#[path = "cli/waves.rs"]
mod waves;
