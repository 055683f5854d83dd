//! Data Box copy logs, mapped back to a manifest's files.
//!
//! After the upload, Data Box writes a copy log to the storage account
//! (`databoxcopylog/<order>_<serial>_CopyLog_<guid>.xml`): a summary, and
//! one `ErroredEntity` element per file, blob or container that failed to
//! upload or was renamed on the way (`ContainerRenamed`, `BlobRenamed`,
//! `FileRenamed`, upload errors). [`check`] reads it with quick-xml and
//! names every entity that concerns a manifest's files, with the manifest
//! path it maps to: a renamed container concerns all of them.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Placement;
use crate::keys::SigningKey;
use crate::ledger::{self, Ledger, LedgerError};
use crate::manifest::index::Index;
use crate::manifest::{Manifest, SignedFile};

/// The copy log as Data Box writes it (elements it does not list are
/// ignored; the root element's name and the document's depth are checked
/// first, by [`shape`]).
#[derive(Debug, Deserialize)]
struct CopyLogXml {
    #[serde(rename = "Status", default)]
    status: Option<String>,
    #[serde(rename = "TotalFiles_Blobs", default)]
    total: Option<u64>,
    #[serde(rename = "FilesErrored", default)]
    errored: Option<u64>,
    #[serde(rename = "ErroredEntity", default)]
    entities: Vec<EntityXml>,
}

#[derive(Debug, Deserialize)]
struct EntityXml {
    #[serde(rename = "@Path")]
    path: String,
    #[serde(rename = "@CloudFormat", default)]
    cloud_format: Option<String>,
    #[serde(rename = "Category")]
    category: String,
    #[serde(rename = "ErrorCode", default)]
    code: Option<String>,
    #[serde(rename = "ErrorMessage", default)]
    message: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
}

/// Errors that stop a copy-log check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyLogError {
    /// The copy log cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not a copy log.
    #[error("{path}: not a Data Box copy log: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the XML reader said.
        reason: String,
    },
    /// The manifest cannot be mapped onto the storage account.
    #[error("manifest {id}: {reason}")]
    Manifest {
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The temporary index of the manifest's files failed.
    #[error("index of the manifest's files: {0}")]
    Index(String),
}

/// One errored or renamed entity that concerns the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Concern {
    /// The manifest path it maps to (the stored object's, when
    /// encrypted), or `*` for the whole container.
    pub path: String,
    /// The entity's path in the copy log.
    pub entity: String,
    /// `Category` (e.g. `BlobRenamed`, `UploadErrorCloudHttp`).
    pub category: String,
    /// `ErrorCode`.
    pub code: Option<String>,
    /// `ErrorMessage`.
    pub message: Option<String>,
    /// The new name, for a renamed entity (from its message).
    pub renamed_to: Option<String>,
    /// `CloudFormat`, `Type`.
    pub cloud_format: Option<String>,
    /// `Type` (`File`, `Container`, …).
    pub kind: Option<String>,
}

/// The result of [`check`].
#[derive(Debug, Clone, Serialize)]
pub struct CopyLogReport {
    /// The manifest id.
    pub manifest: String,
    /// The copy log file.
    pub copylog: PathBuf,
    /// BLAKE3 of its bytes.
    pub blake3: String,
    /// Its summary: `Status`, `TotalFiles_Blobs`, `FilesErrored`.
    pub status: Option<String>,
    /// Files and blobs the upload handled.
    pub total: Option<u64>,
    /// Files and blobs that errored.
    pub files_errored: Option<u64>,
    /// Errored or renamed entities, by the manifest paths they concern.
    pub concerns: Vec<Concern>,
    /// Entities that concern other data in the account.
    pub outside: u64,
}

impl CopyLogReport {
    /// Whether nothing in the copy log concerns the manifest's files.
    pub fn ok(&self) -> bool {
        self.concerns.is_empty()
    }
}

/// The new name in a rename message ("… renamed to: NEW :from: OLD …").
fn renamed_to(message: &str) -> Option<String> {
    let after = message.split_once("renamed to:")?.1;
    let name = after.split(":from:").next()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// What a copy log says, as [`check`] reads it: its summary and how many
/// errored or renamed entities it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyLogSummary {
    /// `Status`.
    pub status: Option<String>,
    /// `TotalFiles_Blobs`.
    pub total: Option<u64>,
    /// `FilesErrored`.
    pub files_errored: Option<u64>,
    /// `ErroredEntity` elements.
    pub entities: usize,
}

/// Reads a copy log's bytes without a manifest (the parser [`check`] uses;
/// the fuzz target `copylog` drives it).
///
/// # Errors
/// [`NotACopyLog`]: what the XML reader, or the copy log's shape, said.
pub fn summarise(bytes: &[u8]) -> Result<CopyLogSummary, NotACopyLog> {
    let log = parse(bytes).map_err(NotACopyLog)?;
    Ok(CopyLogSummary {
        status: log.status,
        total: log.total,
        files_errored: log.errored,
        entities: log.entities.len(),
    })
}

/// Why bytes are not a Data Box copy log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotACopyLog(String);

/// How deep a copy log's elements nest at most: Data Box writes three
/// levels (`CopyLog`, `ErroredEntity`, its children).
const MAX_DEPTH: usize = 16;

/// Checks what a copy log must look like before its content is believed:
/// one root element named `CopyLog`, nested no deeper than [`MAX_DEPTH`].
fn shape(bytes: &[u8]) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let (mut depth, mut root) = (0usize, None::<String>);
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?;
        let name = match &event {
            Event::Start(e) | Event::Empty(e) => Some(e.name().into_inner().to_owned()),
            _ => None,
        };
        if let Some(name) = name {
            if depth == 0 {
                if root.is_some() {
                    return Err("more than one root element".into());
                }
                if name != "CopyLog" {
                    return Err(format!("its root element is <{name}>, not <CopyLog>"));
                }
                root = Some(name);
            }
            if matches!(event, Event::Start(_)) {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("elements nest deeper than {MAX_DEPTH} levels"));
                }
            }
        }
        match event {
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    root.map(|_| ()).ok_or_else(|| "no root element".into())
}

fn parse(bytes: &[u8]) -> Result<CopyLogXml, String> {
    shape(bytes)?;
    let log: CopyLogXml =
        quick_xml::de::from_reader(BufReader::new(bytes)).map_err(|e| e.to_string())?;
    let (Some(_), Some(total), Some(errored)) = (&log.status, log.total, log.errored) else {
        return Err(
            "its summary (Status, TotalFiles_Blobs and FilesErrored) is missing or incomplete"
                .into(),
        );
    };
    if errored > total {
        return Err(format!(
            "its summary counts {errored} errored files of {total} (FilesErrored exceeds TotalFiles_Blobs)"
        ));
    }
    Ok(log)
}

/// What the summary says that the entities do not explain: a failed upload
/// that names no entity, or more errored files than entities naming files.
/// Either way the manifest's files cannot be shown unaffected.
fn unexplained(log: &CopyLogXml) -> Option<String> {
    let status = log.status.as_deref().unwrap_or_default();
    let errored = log.errored.unwrap_or_default();
    let named = log
        .entities
        .iter()
        .filter(|e| {
            !e.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("container"))
        })
        .count() as u64;
    let failed = !status.eq_ignore_ascii_case("succeeded");
    if errored > named || (failed && log.entities.is_empty()) {
        return Some(format!(
            "the copy log reports upload status {status} and {errored} errored file(s) but names {named}: \
             the manifest's files cannot be shown to be unaffected"
        ));
    }
    None
}

/// Maps every entity of the copy log at `copylog` onto `manifest`'s files:
/// its destination places them in the account (container and prefix), and
/// an entity under that place concerns the file it names (if the manifest
/// lists it), or all of them (the container itself).
///
/// # Errors
/// A file that cannot be read or is not a copy log, a manifest whose
/// destination is not a Data Box share or blob URL, or an index failure.
pub fn check(manifest: &SignedFile, copylog: &Path) -> Result<CopyLogReport, CopyLogError> {
    let head = &manifest.head;
    let refuse = |reason: String| CopyLogError::Manifest {
        id: head.id.clone(),
        reason,
    };
    let folders = Placement::folders_of(head).map_err(refuse)?;
    let io = |source| CopyLogError::Io {
        path: copylog.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(copylog).map_err(io)?;
    let blake3 = blake3::hash(&bytes).to_hex().to_string();
    let log = parse(&bytes).map_err(|reason| CopyLogError::Malformed {
        path: copylog.to_path_buf(),
        reason,
    })?;
    let unexplained = unexplained(&log);
    let under: Vec<&str> = folders.iter().map(String::as_str).collect();
    let index = Index::build(manifest).map_err(|e| CopyLogError::Index(e.to_string()))?;
    let mut report = CopyLogReport {
        manifest: head.id.clone(),
        copylog: copylog.to_path_buf(),
        blake3,
        status: log.status,
        total: log.total,
        files_errored: log.errored,
        concerns: Vec::new(),
        outside: 0,
    };
    if let Some(why) = unexplained {
        report.concerns.push(Concern {
            path: "*".into(),
            entity: String::new(),
            category: "Summary".into(),
            code: None,
            message: Some(why),
            renamed_to: None,
            cloud_format: None,
            kind: None,
        });
    }
    for e in log.entities {
        let comps: Vec<&str> = e
            .path
            .trim_matches('/')
            .split('/')
            .filter(|c| !c.is_empty())
            .collect();
        let path = if comps.len() <= under.len() && under.starts_with(&comps) && !comps.is_empty() {
            // The container (or a folder above the files): all of them.
            Some("*".to_owned())
        } else if let Some(rel) = comps.strip_prefix(under.as_slice()) {
            let rel = rel.join("/");
            index
                .take(&rel)
                .map_err(|e| CopyLogError::Index(e.to_string()))?
                .map(|_| rel)
        } else {
            None
        };
        let Some(path) = path else {
            report.outside += 1;
            continue;
        };
        report.concerns.push(Concern {
            path,
            renamed_to: e.message.as_deref().and_then(renamed_to),
            entity: e.path,
            category: e.category,
            code: e.code,
            message: e.message,
            cloud_format: e.cloud_format,
            kind: e.kind,
        });
    }
    Ok(report)
}

/// Records the check as a signed `copylog_checked` event of the manifest.
///
/// # Errors
/// Ledger or signing errors.
pub fn record(
    ledger: &mut Ledger,
    manifest: &Manifest,
    report: &CopyLogReport,
    key: &SigningKey,
) -> Result<ledger::Event, LedgerError> {
    ledger.register_key(key)?;
    let payload = json!({
        "blake3": report.blake3,
        "concerns": report.concerns.len(),
        "file": report.copylog.file_name().map(|n| n.to_string_lossy().into_owned()),
        "files_errored": report.files_errored,
        "result": if report.ok() { "pass" } else { "fail" },
        "status": report.status,
    });
    ledger.append_event(
        ledger::kind::COPYLOG_CHECKED,
        Some(manifest.run),
        Some(&manifest.id),
        &payload,
        Some(key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_messages() {
        assert_eq!(
            renamed_to(
                "The original container/share/blob has been renamed to: DataBox-3fcd02de :from: Bad_Name :because either the name has invalid character(s) or length is not supported"
            )
            .as_deref(),
            Some("DataBox-3fcd02de")
        );
        assert_eq!(renamed_to("UnsupportBlobType"), None);
        assert_eq!(renamed_to("renamed to: :from: x"), None);
    }

    #[test]
    fn only_a_copy_log_shaped_document_is_read() {
        let summary = "<Status>Succeeded</Status><TotalFiles_Blobs>2</TotalFiles_Blobs><FilesErrored>0</FilesErrored>";
        assert!(parse(format!("<CopyLog>{summary}</CopyLog>").as_bytes()).is_ok());
        let deep = format!(
            "<CopyLog>{summary}{}{}</CopyLog>",
            "<x>".repeat(100_000),
            "</x>".repeat(100_000)
        );
        for (doc, why) in [
            ("<foo/>".to_owned(), "root element is <foo>"),
            (format!("<Other>{summary}</Other>"), "root element is <Other>"),
            ("<CopyLog/>".to_owned(), "summary"),
            ("<CopyLog><Status>Succeeded</Status></CopyLog>".to_owned(), "summary"),
            (deep, "nest deeper"),
            (
                "<CopyLog><Status>Succeeded</Status><TotalFiles_Blobs>1</TotalFiles_Blobs><FilesErrored>2</FilesErrored></CopyLog>".to_owned(),
                "exceeds",
            ),
            ("".to_owned(), "no root element"),
        ] {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_summary_the_entities_do_not_explain_is_a_concern() {
        let log = |status: &str, errored: u64, entities: &str| {
            parse(format!(
                "<CopyLog><Status>{status}</Status><TotalFiles_Blobs>5</TotalFiles_Blobs><FilesErrored>{errored}</FilesErrored>{entities}</CopyLog>"
            ).as_bytes()).unwrap()
        };
        let file = r#"<ErroredEntity Path="c/a"><Category>UploadErrorCloudHttp</Category><Type>File</Type></ErroredEntity>"#;
        let container = r#"<ErroredEntity Path="c"><Category>ContainerRenamed</Category><Type>Container</Type></ErroredEntity>"#;
        assert_eq!(unexplained(&log("Succeeded", 0, "")), None);
        assert!(unexplained(&log("Failed", 5, "")).is_some());
        assert!(unexplained(&log("Failed", 0, "")).is_some());
        assert!(unexplained(&log("Succeeded", 2, file)).is_some());
        assert_eq!(unexplained(&log("Failed", 1, file)), None);
        assert_eq!(unexplained(&log("Succeeded", 0, container)), None);
        assert!(unexplained(&log("Succeeded", 1, container)).is_some());
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        let good = r#"<?xml version="1.0"?><CopyLog Summary="Summary"><Status>Failed</Status><TotalFiles_Blobs>1</TotalFiles_Blobs><FilesErrored>1</FilesErrored><ErroredEntity Path="c/a"><Category>BlobRenamed</Category></ErroredEntity></CopyLog>"#;
        assert!(parse(good.as_bytes()).is_ok());
        assert!(quick_xml::de::from_str::<CopyLogXml>(good).is_ok());
        let bytes = good.as_bytes();
        for i in 0..bytes.len() {
            let _ = quick_xml::de::from_str::<CopyLogXml>(&good[..i.min(good.len())]);
            for b in [b'<', b'>', b'"', b'/', b'&', b'x'] {
                let mut m = bytes.to_vec();
                m[i] = b;
                if let Ok(s) = std::str::from_utf8(&m) {
                    let _ = quick_xml::de::from_str::<CopyLogXml>(s);
                }
            }
        }
        // An entity without its required Path or Category is refused.
        for bad in [
            r#"<CopyLog><ErroredEntity><Category>X</Category></ErroredEntity></CopyLog>"#,
            r#"<CopyLog><ErroredEntity Path="c/a"></ErroredEntity></CopyLog>"#,
            r#"<CopyLog><Status>x</Status"#,
        ] {
            assert!(quick_xml::de::from_str::<CopyLogXml>(bad).is_err(), "{bad}");
        }
    }
}
