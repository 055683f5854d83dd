//! The post-migration report: what a manifest moved, when, how fast, what
//! went wrong, how it was verified, and its custody timeline, built from
//! the signed manifest and its custody events (from the ledger, or a
//! timeline exported with `custody log --export`).
//!
//! The report names no file: failures are counted by class, never listed
//! by path (a PACS path can carry a patient's name). Rendering (Markdown,
//! HTML) is the face's job; this is the model, also the `--format json`
//! output (`docs/report.md`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::keys::Signer;
use crate::ledger::{Copying, kind};
use crate::manifest::{ManifestError, SignedFile};

/// Bars in the throughput chart (at most).
pub const THROUGHPUT_BUCKETS: usize = 48;

/// Errors that prevent a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The manifest could not be read again for its entries.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The events are not a custody timeline of this manifest.
    #[error("events: {0}")]
    Events(String),
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The report format's version.
    pub version: u32,
    /// The manifest and what it lists.
    pub manifest: ManifestPart,
    /// Who signed the manifest (the signature was checked).
    pub signature: SignerPart,
    /// DICOM content, when the manifest records it (version 4).
    pub dicom: Option<DicomPart>,
    /// When and how fast.
    pub timing: Timing,
    /// Bytes landed over time, in equal slices of the copy's span.
    pub throughput: Vec<Slice>,
    /// Files that failed in some attempt (and were copied by a later one,
    /// since the manifest is sealed), by class.
    pub errors: BTreeMap<String, u64>,
    /// Each verification, oldest first.
    pub verifications: Vec<Verification>,
    /// The custody timeline, oldest first (consecutive `files_landed`
    /// batches as one entry).
    pub timeline: Vec<TimelineEntry>,
    /// Every key that signed an event, with how many it signed.
    pub signers: Vec<SignerEntry>,
}

/// The manifest's identity and totals.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestPart {
    /// Its id.
    pub id: String,
    /// BLAKE3 of its exact bytes.
    pub blake3: String,
    /// When it was sealed.
    pub created: String,
    /// Format version.
    pub format_version: u64,
    /// Source and destination, as recorded.
    pub source: String,
    /// Where it landed.
    pub destination: String,
    /// The host that ran the transfer.
    pub host: String,
    /// The operator identity it names.
    pub operator: String,
    /// Files listed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files left out (with why, in the manifest).
    pub excluded: u64,
    /// Encrypted at rest (the key id), if so.
    pub encryption_key_id: Option<String>,
    /// The tool version that sealed it.
    pub tool: String,
    /// The migration wave it belongs to (version 5).
    pub wave: Option<crate::manifest::Wave>,
}

/// The manifest's signer.
#[derive(Debug, Clone, Serialize)]
pub struct SignerPart {
    /// The key's `SHA256:` fingerprint.
    pub fingerprint: String,
    /// The principal it is bound to in the trust file, if any.
    pub principal: Option<String>,
}

/// DICOM content.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DicomPart {
    /// Distinct studies.
    pub studies: u64,
    /// Distinct series.
    pub series: u64,
    /// Instances (files with a DICOM identity).
    pub instances: u64,
    /// Instances per modality.
    pub modalities: BTreeMap<String, u64>,
}

/// When and how fast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    /// The first attempt's start.
    pub started: Option<String>,
    /// The seal.
    pub sealed: Option<String>,
    /// Attempts (a paused or interrupted run resumes in a new attempt).
    pub attempts: u64,
    /// From the first start to the seal.
    pub elapsed_seconds: f64,
    /// Time spent copying: each attempt from its start to its last
    /// landed batch.
    pub copying_seconds: f64,
    /// Bytes recorded as landed over `copying_seconds`.
    pub bytes_per_second: f64,
}

/// One slice of the copy's span.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    /// Its start.
    pub from: String,
    /// Its length.
    pub seconds: f64,
    /// Bytes recorded as landed in it.
    pub bytes: u64,
    /// `bytes / seconds`.
    pub bytes_per_second: f64,
}

/// One verification of the landed data.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// When.
    pub at: String,
    /// What the event says (`verified`, `bom_checked`, `copylog_checked`).
    pub kind: String,
    /// `pass` or `fail`.
    pub result: String,
    /// What was checked, where known.
    pub destination: Option<String>,
    /// Files proven, where known.
    pub files_verified: Option<u64>,
    /// Discrepancies by class, where known.
    pub counts: Option<Value>,
    /// Who signed it.
    pub signer: Option<String>,
}

/// One entry of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// The event's sequence number (the first, for collapsed batches).
    pub seq: u64,
    /// When.
    pub at: String,
    /// Its kind.
    pub kind: String,
    /// What happened, in a line.
    pub summary: String,
    /// Who signed it.
    pub signer: Option<String>,
}

/// A key that signed events.
#[derive(Debug, Clone, Serialize)]
pub struct SignerEntry {
    /// Its `SHA256:` fingerprint.
    pub fingerprint: String,
    /// Events it signed.
    pub events: u64,
}

/// The class of a recorded file failure (a `file_failed` payload): the
/// class it was recorded with, or, for events recorded before failures
/// carried one, a guess from its error text.
pub fn failure_class(payload: &Value) -> &'static str {
    use crate::ledger::FailureClass as C;
    match payload["class"].as_str().and_then(C::parse) {
        Some(C::SourceUnreadable) => "source unreadable",
        Some(C::SourceChanged) => "source changed while copied",
        Some(C::Destination) => "destination write failed",
        Some(C::DicomRefused) => "DICOM refused",
        Some(C::ChangedSinceLanded) => "changed at source since it landed",
        Some(C::Ledger) => "ledger lookup failed",
        None => error_class(payload["error"].as_str().unwrap_or("")),
    }
}

/// The class of a recorded file failure, from its error text (events
/// recorded before failures carried a class).
pub fn error_class(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.starts_with("abandoned") {
        "given up at a stop"
    } else if e.contains("changed after it was listed") || e.contains("changed while") {
        "source changed while copied"
    } else if e.starts_with("destination") || e.contains("write failed") {
        "destination write failed"
    } else if e.contains("read failed") || e.contains("permission denied") {
        "source unreadable"
    } else if e.contains("dicom") || e.contains("identif") {
        "DICOM refused"
    } else {
        "other"
    }
}

fn at(e: &Value) -> Option<Timestamp> {
    e["at"].as_str()?.parse().ok()
}

fn payload(e: &Value) -> Value {
    e["payload"]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null)
}

/// One line saying what an event recorded.
fn summary(kind: &str, p: &Value) -> String {
    let s = |k: &str| p[k].as_str().unwrap_or("").to_owned();
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    match kind {
        kind::RUN_STARTED | kind::RUN_RESUMED => format!(
            "attempt {} on {} by {}",
            n("attempt"),
            s("host"),
            s("operator")
        ),
        kind::RUN_INCOMPLETE => match p.get("paused").and_then(Value::as_str) {
            Some(reason) => format!("paused: {reason}"),
            None => format!(
                "ended with {} failed file(s); copied {}",
                n("failed"),
                n("files_copied")
            ),
        },
        kind::FILE_FAILED => format!("a file failed: {}", failure_class(p)),
        kind::SEALED => format!("sealed: {} files, {} bytes", n("files"), n("bytes")),
        kind::VERIFIED => format!(
            "verified at {}: {} ({} files proven)",
            s("destination"),
            s("result"),
            n("files_verified")
        ),
        kind::BOM_CHECKED => format!("Data Box BOM checked: {}", s("result")),
        kind::COPYLOG_CHECKED => format!("Data Box copy log checked: {}", s("result")),
        kind::HANDOFF => format!("handed from {} to {}: {}", s("from"), s("to"), s("purpose")),
        kind::ROLLED_BACK => format!(
            "rolled back from {}: {} removed, {} left",
            s("destination"),
            n("removed"),
            n("left")
        ),
        other => other.to_owned(),
    }
}

/// Builds the report of `manifest` (its signature checked, by `signer`)
/// from its custody `events` (the `custody-events` object of
/// [`crate::ledger::Ledger::export_events`]).
///
/// # Errors
/// The manifest cannot be read again, or the events are not this
/// manifest's.
pub fn build(
    manifest: &SignedFile,
    signer: &Signer,
    events: &Value,
) -> Result<Report, ReportError> {
    let head = &manifest.head;
    let blake3 = manifest.blake3.to_hex().to_string();
    if events["manifest_blake3"].as_str() != Some(blake3.as_str()) {
        return Err(ReportError::Events(format!(
            "they are the timeline of manifest {} (blake3 {}), not of {} (blake3 {blake3})",
            events["manifest"].as_str().unwrap_or("?"),
            events["manifest_blake3"].as_str().unwrap_or("?"),
            head.id
        )));
    }
    let list = events["events"]
        .as_array()
        .ok_or_else(|| ReportError::Events("no \"events\" list".into()))?;

    let dicom = dicom_part(manifest)?;

    let mut timing = Timing::default();
    let mut errors = BTreeMap::new();
    let mut verifications = Vec::new();
    let mut timeline: Vec<TimelineEntry> = Vec::new();
    let mut signed: BTreeMap<String, u64> = BTreeMap::new();
    // (time, bytes) of each landed batch, and the time spent copying.
    let mut landed: Vec<(Timestamp, u64)> = Vec::new();
    let mut copying = Copying::default();
    let mut first: Option<Timestamp> = None;
    // Files, bytes and batches of the timeline's last `files_landed` entry.
    let mut batches = (0, 0, 0);
    for e in list {
        let kind = e["kind"].as_str().unwrap_or("");
        let p = payload(e);
        let when = at(e);
        let at_text = e["at"].as_str().unwrap_or("").to_owned();
        let signer = e["signer"].as_str().map(str::to_owned);
        if let Some(s) = &signer {
            *signed.entry(s.clone()).or_default() += 1;
        }
        let seq = e["seq"].as_u64().unwrap_or(0);
        if let Some(t) = when {
            copying.event(kind, t, p["bytes"].as_u64().unwrap_or(0));
        }
        match kind {
            kind::RUN_STARTED | kind::RUN_RESUMED => {
                timing.attempts += 1;
                if let Some(t) = when {
                    first.get_or_insert(t);
                }
            }
            kind::FILES_LANDED => {
                if let Some(t) = when {
                    landed.push((t, p["bytes"].as_u64().unwrap_or(0)));
                }
                // Consecutive batches are one timeline entry.
                let (files, bytes) = (
                    p["files"].as_u64().unwrap_or(0),
                    p["bytes"].as_u64().unwrap_or(0),
                );
                batches = match timeline.last_mut().filter(|l| l.kind == kind::FILES_LANDED) {
                    Some(last) => {
                        let (f, b, n) = (batches.0 + files, batches.1 + bytes, batches.2 + 1);
                        last.summary = landed_summary(f, b, n);
                        (f, b, n)
                    }
                    None => {
                        timeline.push(TimelineEntry {
                            seq,
                            at: at_text,
                            kind: kind.into(),
                            summary: landed_summary(files, bytes, 1),
                            signer,
                        });
                        (files, bytes, 1)
                    }
                };
                continue;
            }
            kind::FILE_FAILED => {
                *errors.entry(failure_class(&p).to_owned()).or_default() += 1;
            }
            kind::SEALED => timing.sealed = Some(at_text.clone()),
            kind::VERIFIED | kind::BOM_CHECKED | kind::COPYLOG_CHECKED => {
                verifications.push(Verification {
                    at: at_text.clone(),
                    kind: kind.into(),
                    result: p["result"].as_str().unwrap_or("").into(),
                    destination: p["destination"].as_str().map(str::to_owned),
                    files_verified: p["files_verified"].as_u64(),
                    counts: p.get("counts").cloned(),
                    signer: signer.clone(),
                })
            }
            _ => {}
        }
        timeline.push(TimelineEntry {
            seq,
            at: at_text,
            kind: kind.into(),
            summary: summary(kind, &p),
            signer,
        });
    }
    copying.close();
    timing.started = first.map(|t| t.to_string());
    timing.elapsed_seconds = match (
        first,
        timing
            .sealed
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok()),
    ) {
        (Some(a), Some(b)) => (b - a).as_secs_f64().max(0.0),
        _ => 0.0,
    };
    timing.copying_seconds = copying.seconds;
    timing.bytes_per_second = copying.rate().unwrap_or(0.0);

    Ok(Report {
        version: 1,
        manifest: manifest_part(head, blake3),
        signature: SignerPart {
            fingerprint: signer.fingerprint.clone(),
            principal: signer.principal.clone(),
        },
        dicom: (dicom.instances > 0).then_some(dicom),
        timing,
        throughput: slices(first, &landed),
        errors,
        verifications,
        timeline,
        signers: signed
            .into_iter()
            .map(|(fingerprint, events)| SignerEntry {
                fingerprint,
                events,
            })
            .collect(),
    })
}

/// The manifest's DICOM content, streamed from it.
fn dicom_part(manifest: &SignedFile) -> Result<DicomPart, ReportError> {
    let mut studies = BTreeSet::new();
    let mut series = BTreeSet::new();
    let mut dicom = DicomPart::default();
    manifest.for_each_file(|f| {
        if let Some(d) = f.dicom.filter(|d| !d.is_empty()) {
            dicom.instances += 1;
            studies.extend(d.study);
            series.extend(d.series);
            *dicom
                .modalities
                .entry(d.modality.unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
        }
        Ok(())
    })?;
    dicom.studies = studies.len() as u64;
    dicom.series = series.len() as u64;
    Ok(dicom)
}

/// What the report says of the manifest itself.
fn manifest_part(head: &crate::manifest::Manifest, blake3: String) -> ManifestPart {
    ManifestPart {
        id: head.id.clone(),
        blake3,
        created: head.created.clone(),
        format_version: head.version,
        source: head.source.clone(),
        destination: head.destination.clone(),
        host: head.host.clone(),
        operator: head.operator.identity.clone(),
        files: head.totals.files,
        bytes: head.totals.bytes,
        excluded: head.excluded.len() as u64,
        encryption_key_id: head.encryption.as_ref().map(|e| e.key_id.clone()),
        tool: format!("{} {}", head.tool.name, head.tool.version),
        wave: head.wave.clone(),
    }
}

fn landed_summary(files: u64, bytes: u64, batches: u64) -> String {
    format!("{files} files landed, {bytes} bytes, in {batches} batch(es)")
}

/// Equal slices from the first start to the last landed batch.
fn slices(first: Option<Timestamp>, landed: &[(Timestamp, u64)]) -> Vec<Slice> {
    let (Some(start), Some(&(end, _))) = (first, landed.iter().max_by_key(|(t, _)| *t)) else {
        return Vec::new();
    };
    let span = (end - start).as_secs_f64().max(1.0);
    let n = THROUGHPUT_BUCKETS.min(landed.len().max(1));
    let width = span / n as f64;
    let mut bytes = vec![0u64; n];
    for (t, b) in landed {
        let i = (((*t - start).as_secs_f64() / width) as usize).min(n - 1);
        bytes[i] += b;
    }
    bytes
        .into_iter()
        .enumerate()
        .map(|(i, b)| Slice {
            from: start
                .checked_add(jiff::SignedDuration::from_secs_f64(width * i as f64))
                .unwrap_or(start)
                .to_string(),
            seconds: width,
            bytes: b,
            bytes_per_second: b as f64 / width,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classed_without_their_paths() {
        assert_eq!(
            error_class("changed after it was listed (size or mtime differ)"),
            "source changed while copied"
        );
        assert_eq!(
            error_class("read failed: Input/output error"),
            "source unreadable"
        );
        assert_eq!(
            error_class("destination write failed: No space left on device"),
            "destination write failed"
        );
        assert_eq!(
            error_class("abandoned: the grace period after the stop ran out"),
            "given up at a stop"
        );
        assert_eq!(error_class("something new"), "other");
    }

    #[test]
    fn a_recorded_class_wins_over_the_text_and_old_events_fall_back_to_it() {
        use serde_json::json;
        // The text alone would say "destination write failed".
        let recorded =
            json!({"class": "source_unreadable", "error": "destination write failed: x"});
        assert_eq!(failure_class(&recorded), "source unreadable");
        let job = json!({"class": "changed_since_landed", "error": "…"});
        assert_eq!(failure_class(&job), "changed at source since it landed");
        let old = json!({"error": "read failed: Input/output error"});
        assert_eq!(failure_class(&old), "source unreadable");
        let unknown = json!({"class": "from_a_newer_custody", "error": "read failed"});
        assert_eq!(failure_class(&unknown), "source unreadable");
        for c in crate::ledger::FailureClass::ALL {
            assert_eq!(crate::ledger::FailureClass::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn slices_share_the_span_and_keep_every_byte() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let landed = [
            (t("2026-11-24T19:00:10Z"), 100),
            (t("2026-11-24T19:00:20Z"), 200),
            (t("2026-11-24T19:01:00Z"), 300),
        ];
        let s = slices(Some(t("2026-11-24T19:00:00Z")), &landed);
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().map(|s| s.bytes).sum::<u64>(), 600);
        assert_eq!(s[0].bytes, 100);
        assert_eq!(s[2].bytes, 300, "the last batch falls in the last slice");
        assert_eq!(s[0].seconds, 20.0);
    }
}
