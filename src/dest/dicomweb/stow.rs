//! Storing (STOW-RS): instances go to the service in `multipart/related`
//! requests, one study per request, each part its own `application/dicom`
//! with the bytes exactly as read; and each instance's outcome comes from
//! the response's Referenced SOP Sequence (stored) and Failed SOP Sequence
//! (refused, with its Failure Reason), never from the HTTP status alone.
//!
//! Committed instances wait in a per-study batch; a batch goes out when it
//! is full (by count or bytes), when too many bytes wait across studies,
//! or at [`Stow::flush`], which the ledger writer calls before it records
//! a batch of landed files. Workers that fill a batch send it themselves,
//! so up to `--jobs` requests are in flight, and flush waits for every
//! send that had started before it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex};

use serde_json::Value;

use super::{DicomWeb, Failure, InstanceUids};
use crate::relpath::RelPath;

/// Parts per request, at most.
pub(super) const MAX_PARTS: usize = 64;
/// Bytes of parts per request, at most (an instance larger than this goes
/// alone): far under the Azure service's 4 GB request limit.
pub(super) const MAX_REQUEST_BYTES: usize = 64 << 20;
/// Bytes waiting in batches across studies before the largest is sent.
const MAX_WAITING_BYTES: usize = 256 << 20;

/// The Failure Reason of an instance the service already holds (Azure:
/// "an instance with the same Study, Series and SOP Instance UIDs has
/// already been stored").
pub const DUPLICATE: u16 = 45070;

/// What became of each instance of a request, by source path.
type Outcomes = Vec<(RelPath, Result<(), String>)>;

/// One instance on its way.
pub(super) struct Part {
    /// The source file's path (what the ledger records it under).
    pub rel: RelPath,
    /// Its identity, from its header.
    pub uids: InstanceUids,
    /// The bytes exactly as read.
    pub bytes: Vec<u8>,
    /// The BLAKE3 of the bytes after the preamble (hex): what the service
    /// is held to.
    pub after_preamble: String,
}

#[derive(Default)]
struct Batch {
    parts: Vec<Part>,
    bytes: usize,
}

#[derive(Default)]
struct State {
    waiting: HashMap<String, Batch>,
    waiting_bytes: usize,
    /// Sends in progress, by ticket.
    sending: BTreeSet<u64>,
    next_ticket: u64,
    /// Instances the service did not store, by source path, with why.
    rejected: HashMap<String, String>,
}

/// The batches and what became of them.
#[derive(Default)]
pub(super) struct Stow {
    state: Mutex<State>,
    done: Condvar,
}

impl Stow {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("stow state lock poisoned")
    }

    /// Queues a committed instance; sends a batch (on the calling thread)
    /// when one is due.
    pub(super) fn add(&self, dw: &DicomWeb, part: Part) {
        let due = {
            let mut st = self.lock();
            st.waiting_bytes += part.bytes.len();
            let study = part.uids.study.clone();
            let b = st.waiting.entry(study.clone()).or_default();
            b.bytes += part.bytes.len();
            b.parts.push(part);
            let full = b.parts.len() >= MAX_PARTS || b.bytes >= MAX_REQUEST_BYTES;
            let key = if full {
                Some(study)
            } else if st.waiting_bytes >= MAX_WAITING_BYTES {
                st.waiting
                    .iter()
                    .max_by_key(|(_, b)| b.bytes)
                    .map(|(k, _)| k.clone())
            } else {
                None
            };
            key.map(|k| take(&mut st, &k))
        };
        if let Some((ticket, study, batch)) = due {
            let outcomes = dw.rt.block_on(send(dw, &study, batch.parts));
            self.settle(ticket, outcomes);
        }
    }

    /// Sends every waiting batch (several in flight) and waits for every
    /// send that started before this call.
    pub(super) fn flush(&self, dw: &DicomWeb) {
        let (upto, batches) = {
            let mut st = self.lock();
            let keys: Vec<String> = st.waiting.keys().cloned().collect();
            let batches: Vec<_> = keys.iter().map(|k| take(&mut st, k)).collect();
            (st.next_ticket, batches)
        };
        if !batches.is_empty() {
            use futures::StreamExt;
            let results: Vec<(u64, Outcomes)> = dw.rt.block_on(
                futures::stream::iter(batches.into_iter().map(
                    |(ticket, study, batch)| async move {
                        (ticket, send(dw, &study, batch.parts).await)
                    },
                ))
                .buffer_unordered(4)
                .collect(),
            );
            for (ticket, outcomes) in results {
                self.settle(ticket, outcomes);
            }
        }
        let mut st = self.lock();
        while st.sending.first().is_some_and(|t| *t < upto) {
            st = self.done.wait(st).expect("stow state lock poisoned");
        }
    }

    /// Why the service did not store the instance read from `rel`, if it
    /// did not (taken: asked once per landing).
    pub(super) fn rejected(&self, rel: &RelPath) -> Option<String> {
        self.lock().rejected.remove(rel.as_str())
    }

    fn settle(&self, ticket: u64, outcomes: Outcomes) {
        let mut st = self.lock();
        for (rel, outcome) in outcomes {
            if let Err(why) = outcome {
                st.rejected.insert(rel.to_string(), why);
            }
        }
        st.sending.remove(&ticket);
        self.done.notify_all();
    }
}

fn take(st: &mut State, study: &str) -> (u64, String, Batch) {
    let batch = st.waiting.remove(study).unwrap_or_default();
    st.waiting_bytes -= batch.bytes;
    let ticket = st.next_ticket;
    st.next_ticket += 1;
    st.sending.insert(ticket);
    (ticket, study.to_owned(), batch)
}

/// The request body: each part with its own `Content-Type`, the bytes as
/// read. The boundary is 128 random bits, so no instance holds it.
pub(super) fn body(boundary: &str, parts: &[&[u8]]) -> Vec<u8> {
    let size = parts
        .iter()
        .map(|p| p.len() + boundary.len() + 48)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size + boundary.len() + 8);
    for p in parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: application/dicom\r\n\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

/// A fresh boundary.
pub(super) fn boundary() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("custody-{hex}")
}

/// What a STOW-RS response says of each instance.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Answer {
    /// SOP Instance UIDs in the Referenced SOP Sequence (0008,1199).
    pub referenced: BTreeSet<String>,
    /// SOP Instance UIDs in the Failed SOP Sequence (0008,1198), with
    /// their Failure Reason (0008,1197) when given.
    pub failed: HashMap<String, Option<u16>>,
}

/// Reads a STOW-RS response body (DICOM JSON).
///
/// # Errors
/// The body is not a DICOM JSON object.
pub(super) fn answer(body: &[u8]) -> Result<Answer, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not DICOM JSON: {e}"))?;
    let obj = match &v {
        Value::Object(_) => &v,
        // Some servers answer with a one-element array.
        Value::Array(a) if a.len() == 1 => &a[0],
        _ => return Err("not a DICOM JSON object".into()),
    };
    let items = |tag: &str| -> Vec<&Value> {
        obj.get(tag)
            .and_then(|e| e.get("Value"))
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let first = |item: &Value, tag: &str| -> Option<Value> {
        item.get(tag)?.get("Value")?.as_array()?.first().cloned()
    };
    let mut a = Answer::default();
    for item in items("00081199") {
        if let Some(Value::String(uid)) = first(item, "00081155") {
            a.referenced.insert(uid);
        }
    }
    for item in items("00081198") {
        if let Some(Value::String(uid)) = first(item, "00081155") {
            let reason = first(item, "00081197")
                .and_then(|r| r.as_u64())
                .and_then(|r| u16::try_from(r).ok());
            a.failed.insert(uid, reason);
        }
    }
    Ok(a)
}

/// What a Failure Reason means, in words (DICOM PS3.18 and the Azure DICOM
/// service's conformance statement).
pub(super) fn reason(code: u16) -> &'static str {
    match code {
        272 => "the service could not process it",
        42752 => "out of resources",
        43264 => "it failed the service's validation",
        43265 => "its Study Instance UID is not the study of the request",
        45063 => "its data set does not match its SOP class",
        45070 => "an instance with these UIDs is already stored",
        45071 => {
            "another process is creating this instance, or an earlier attempt is still being cleaned up"
        }
        49152 => "the service cannot understand it",
        _ => "refused",
    }
}

/// Sends one study's parts and says what became of each. Never fails as a
/// whole: a request the service did not answer usefully fails each of its
/// instances with why. A request of several parts refused with a bare 400
/// (Orthanc's answer when one part cannot be parsed, although it stored
/// the others) is sent again one part at a time, so each instance gets its
/// own outcome.
async fn send(dw: &DicomWeb, study: &str, parts: Vec<Part>) -> Outcomes {
    if parts.is_empty() {
        return Vec::new();
    }
    let fail_all = |parts: &[Part], why: String| -> Outcomes {
        parts
            .iter()
            .map(|p| (p.rel.clone(), Err(why.clone())))
            .collect()
    };
    match send_once(dw, study, &parts).await {
        Ok(outcomes) => outcomes,
        Err(Unanswered::BadRequest(why)) if parts.len() > 1 => {
            tracing::debug!(study, parts = parts.len(), %why, "STOW-RS request refused whole; sending its parts one by one");
            let mut out = Vec::with_capacity(parts.len());
            for p in &parts {
                let one = std::slice::from_ref(p);
                match send_once(dw, study, one).await {
                    Ok(o) => out.extend(o),
                    Err(Unanswered::BadRequest(why) | Unanswered::Other(why)) => {
                        out.extend(fail_all(one, why));
                    }
                }
            }
            out
        }
        Err(Unanswered::BadRequest(why) | Unanswered::Other(why)) => fail_all(&parts, why),
    }
}

/// A STOW-RS request without an answer that says what became of each
/// instance.
enum Unanswered {
    /// HTTP 400 without a STOW-RS response.
    BadRequest(String),
    /// Anything else: refused, another status, no answer.
    Other(String),
}

/// One STOW-RS request of `parts`, and each instance's outcome.
async fn send_once(dw: &DicomWeb, study: &str, parts: &[Part]) -> Result<Outcomes, Unanswered> {
    let b = boundary();
    let slices: Vec<&[u8]> = parts.iter().map(|p| p.bytes.as_slice()).collect();
    let payload = bytes::Bytes::from(body(&b, &slices));
    let url = dw.url.join(&format!("studies/{study}"));
    let content_type = format!("multipart/related; type=\"application/dicom\"; boundary={b}");
    let sent = dw
        .request("store instances", || {
            dw.client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, content_type.clone())
                .header(reqwest::header::ACCEPT, "application/dicom+json")
                .body(payload.clone())
        })
        .await;
    tracing::debug!(
        study,
        parts = parts.len(),
        bytes = payload.len(),
        "STOW-RS request"
    );
    let (status, body) = match sent {
        Ok(r) => r,
        Err(Failure::Status(400, text)) => (400, text.into_bytes()),
        Err(e @ Failure::Status(..)) => {
            return Err(Unanswered::Other(format!(
                "not stored: the service answered {e}"
            )));
        }
        Err(Failure::Refused(why) | Failure::Transport(why)) => {
            return Err(Unanswered::Other(format!("not stored: {why}")));
        }
    };
    let answer = answer(&body).map_err(|why| {
        let why = match body.is_empty() {
            true => format!("not stored: the service answered HTTP {status} with no STOW-RS response"),
            false => format!(
                "not stored: the service answered HTTP {status} without a usable STOW-RS response ({why})"
            ),
        };
        match status {
            400 => Unanswered::BadRequest(why),
            _ => Unanswered::Other(why),
        }
    })?;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let sop = &p.uids.instance;
        let outcome = if let Some(code) = answer.failed.get(sop) {
            match code {
                Some(DUPLICATE) => dw.same_as_stored(p).await,
                Some(c) => Err(format!(
                    "the service refused it: Failure Reason {c} ({})",
                    reason(*c)
                )),
                None => Err("the service refused it (no Failure Reason given)".into()),
            }
        } else if answer.referenced.contains(sop) {
            Ok(())
        } else {
            Err(format!(
                "the service answered HTTP {status} without listing SOP Instance {sop} as stored or failed (a dropped part)"
            ))
        };
        out.push((p.rel.clone(), outcome));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_each_part_as_read_with_its_own_content_type() {
        let b = body("B", &[b"one", b"", b"--B\r\n"]);
        assert_eq!(
            b,
            b"--B\r\nContent-Type: application/dicom\r\n\r\none\r\n\
              --B\r\nContent-Type: application/dicom\r\n\r\n\r\n\
              --B\r\nContent-Type: application/dicom\r\n\r\n--B\r\n\r\n--B--\r\n"
        );
        assert_eq!(body("B", &[]), b"--B--\r\n");
        let x = boundary();
        assert_eq!(x.len(), "custody-".len() + 32);
        assert_ne!(x, boundary());
    }

    #[test]
    fn the_answer_names_stored_and_failed_instances() {
        let json = br#"{
          "00081198": {"vr": "SQ", "Value": [
            {"00081150": {"vr": "UI", "Value": ["1.2"]},
             "00081155": {"vr": "UI", "Value": ["1.2.3.2"]},
             "00081197": {"vr": "US", "Value": [45070]}},
            {"00081155": {"vr": "UI", "Value": ["1.2.3.3"]}}]},
          "00081199": {"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": ["1.2.3.1"]}}]}
        }"#;
        let a = answer(json).unwrap();
        assert_eq!(a.referenced, BTreeSet::from(["1.2.3.1".to_owned()]));
        assert_eq!(a.failed.get("1.2.3.2"), Some(&Some(45070)));
        assert_eq!(a.failed.get("1.2.3.3"), Some(&None));
        // Orthanc's answer to a part it dropped: both sequences empty.
        let empty = answer(br#"{"00081198": {"vr": "SQ"}, "00081199": {"vr": "SQ"}}"#).unwrap();
        assert_eq!(empty, Answer::default());
        assert!(answer(b"<html>").is_err());
        assert!(answer(b"[1, 2]").is_err());
        assert_eq!(reason(43264), "it failed the service's validation");
    }
}
