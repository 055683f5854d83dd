//! Data Box BOM files, and their reconciliation with a manifest.
//!
//! At "Prepare to ship" a Data Box writes one BOM (bill of materials) file
//! per share type, listing every file on the share with its size and Azure
//! Storage's CRC64, one line each:
//!
//! ```text
//! <file size="52645" crc64="0x80f2ac8a3b5d3a15">\pacs-2024\PAT1\IM1.dcm</file>
//! ```
//!
//! [`parse_line`] reads one line strictly (anything it does not know is an
//! error naming the line, never a panic), and [`check`] reconciles the BOM
//! files with a version 3 manifest: every file the manifest lists must be
//! in a BOM with the same size and CRC64, and nothing else may be under the
//! manifest's destination. The expected set is the verify's on-disk index,
//! so memory does not grow with the number of files.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;

use super::{Placement, Profile};
use crate::digest;
use crate::keys::SigningKey;
use crate::ledger::{self, Ledger, LedgerError};
use crate::manifest::index::Index;
use crate::manifest::{self, Manifest, SignedFile, VERSION_CRC64};

/// One `<file>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BomEntry {
    /// The share-relative path's components (the BOM writes `\`-separated).
    pub path: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Azure Storage's CRC64.
    pub crc64: u64,
}

/// Errors that stop a BOM check (a discrepancy is a finding, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BomError {
    /// A BOM file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The BOM file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of a BOM file is not a BOM line.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The BOM file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The manifest cannot be reconciled with a BOM.
    #[error("manifest {id}: {reason}")]
    Manifest {
        /// Its id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The temporary index of expected files failed.
    #[error("index of the manifest's files: {0}")]
    Index(String),
}

/// Longest line accepted (a blob name is at most 1,024 characters; XML
/// escaping can multiply that).
pub const MAX_LINE: usize = 16 * 1024;

/// Reads one BOM line: `Some` entry for a `<file>` line, `None` for a blank
/// line, an XML declaration or a lone root element tag.
///
/// # Errors
/// [`LineError`]: what is wrong with the line, in a few words.
pub fn parse_line(line: &str) -> Result<Option<BomEntry>, LineError> {
    entry(line).map_err(LineError)
}

/// Why a BOM line does not read: a few words, naming no more of the line
/// than its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineError(String);

fn entry(line: &str) -> Result<Option<BomEntry>, String> {
    let t = line.trim();
    if t.is_empty() || (t.starts_with("<?xml") && t.ends_with("?>")) || is_root_tag(t) {
        return Ok(None);
    }
    let rest = t
        .strip_prefix("<file")
        .filter(|r| r.starts_with(char::is_whitespace))
        .ok_or_else(|| format!("not a <file> line: {}", preview(t)))?;
    let (attrs, rest) = rest
        .split_once('>')
        .ok_or("no '>' closing the <file> tag")?;
    let name = rest
        .strip_suffix("</file>")
        .ok_or("no </file> ending the line")?;
    let (mut size, mut crc64) = (None, None);
    for (key, value) in attributes(attrs)? {
        let slot = match key {
            "size" => &mut size,
            "crc64" => &mut crc64,
            other => return Err(format!("unknown attribute {other:?}")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("attribute {key:?} given twice"));
        }
    }
    let size = size.ok_or("no size attribute")?;
    let size = size
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| size.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| format!("size {size:?} is not a byte count"))?;
    let crc = crc64.ok_or("no crc64 attribute")?;
    let hex = crc
        .strip_prefix("0x")
        .or_else(|| crc.strip_prefix("0X"))
        .filter(|h| (1..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("crc64 {crc:?} is not 0x and 1 to 16 hex digits"))?;
    let crc64 = u64::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
    let name = unescape(name)?;
    let path: Vec<String> = name
        .strip_prefix('\\')
        .unwrap_or(&name)
        .split('\\')
        .map(str::to_owned)
        .collect();
    if path.iter().any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("path {name:?} has an empty, '.' or '..' component"));
    }
    Ok(Some(BomEntry { path, size, crc64 }))
}

/// `<Name>` or `</Name>` (optionally with attributes on the opening tag):
/// the root element a BOM may wrap its lines in.
fn is_root_tag(t: &str) -> bool {
    let Some(inner) = t.strip_prefix('<').and_then(|r| r.strip_suffix('>')) else {
        return false;
    };
    let (name, attrs) = match inner.strip_prefix('/') {
        Some(n) => (n, ""),
        None => inner.split_once(char::is_whitespace).unwrap_or((inner, "")),
    };
    let ok_name = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    ok_name && name != "file" && !attrs.contains(['<', '>']) && attributes(attrs).is_ok()
}

fn attributes(s: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or("an attribute without '='")?;
        let key = key.trim_end();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad attribute name {key:?}"));
        }
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("attribute {key:?}: value not in double quotes"))?;
        let (value, after) = after
            .split_once('"')
            .ok_or_else(|| format!("attribute {key:?}: unterminated value"))?;
        out.push((key, value));
        if !after.is_empty() && !after.starts_with(char::is_whitespace) {
            return Err("attributes not separated by white space".into());
        }
        rest = after.trim_start();
    }
    Ok(out)
}

/// XML character data: the five named entities and numeric references;
/// a bare `<` or `&` is an error.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        if rest[i..].starts_with('<') {
            return Err("a '<' inside the path".into());
        }
        let (entity, after) = rest[i + 1..]
            .split_once(';')
            .ok_or("an '&' that starts no entity")?;
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = entity.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = entity.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .filter(|c| *c != '\0')
                    .ok_or_else(|| format!("unknown entity &{};", preview(entity)))?
            }
        };
        out.push(c);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

fn preview(s: &str) -> String {
    let p: String = s.chars().take(60).collect();
    if p.len() < s.len() {
        format!("{p:?}…")
    } else {
        format!("{p:?}")
    }
}

/// One BOM file read.
#[derive(Debug, Clone, Serialize)]
pub struct BomSource {
    /// The file as given.
    pub path: PathBuf,
    /// BLAKE3 of its bytes (recorded in the custody event).
    pub blake3: String,
    /// `<file>` lines in it.
    pub entries: u64,
}

/// A difference between the BOMs and the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BomFinding {
    /// In the manifest, in no BOM.
    Missing {
        /// Manifest path (the stored object's, when encrypted).
        path: String,
        /// Its size.
        size: u64,
    },
    /// In a BOM under the destination, not in the manifest.
    Extra {
        /// The path below the destination.
        path: String,
        /// Its size in the BOM.
        size: u64,
    },
    /// Listed with another size.
    Size {
        /// The path.
        path: String,
        /// The manifest's size.
        expected: u64,
        /// The BOM's.
        found: u64,
    },
    /// Listed with another CRC64.
    Crc64 {
        /// The path.
        path: String,
        /// The manifest's CRC64 (16 hex digits).
        expected: String,
        /// The BOM's.
        found: String,
    },
    /// Listed more than once.
    Duplicate {
        /// The path.
        path: String,
    },
}

/// The result of [`check`].
#[derive(Debug, Clone, Serialize)]
pub struct BomReport {
    /// The manifest id.
    pub manifest: String,
    /// The BOM files read.
    pub boms: Vec<BomSource>,
    /// The folders (container and prefix) the manifest's files are under
    /// on the share, `/`-separated; empty for a share root.
    pub under: String,
    /// Files the manifest lists.
    pub files_expected: u64,
    /// Files found with the same size and CRC64.
    pub matched: u64,
    /// BOM entries elsewhere on the share (not this manifest's business).
    pub outside: u64,
    /// Every difference, BOM order first, then the missing.
    pub findings: Vec<BomFinding>,
}

impl BomReport {
    /// Whether the BOMs hold exactly the manifest's files.
    pub fn ok(&self) -> bool {
        self.findings.is_empty() && self.matched == self.files_expected
    }
}

/// Reconciles `boms` with `manifest` (version 3: it carries CRC64 values).
/// The manifest's destination places its files on the share
/// ([`Placement::for_destination`]); BOM entries below that place must be
/// exactly the manifest's files (the stored objects, when encrypted), with
/// the same sizes and CRC64 values. A leading share name
/// (`<account>_BlockBlob`) in BOM paths is accepted.
///
/// # Errors
/// A BOM that cannot be read or has a malformed line (named with its line
/// number), a manifest without CRC64 values or with a destination that is
/// not a Data Box share or blob URL, or an index failure.
pub fn check(manifest: &SignedFile, boms: &[PathBuf]) -> Result<BomReport, BomError> {
    let head = &manifest.head;
    let refuse = |reason: String| BomError::Manifest {
        id: head.id.clone(),
        reason,
    };
    if !manifest::has_crc64(head.version) {
        return Err(refuse(format!(
            "version {} manifests carry no CRC64 (version {VERSION_CRC64} and later do)",
            head.version
        )));
    }
    let under = Placement::folders_of(head).map_err(refuse)?;
    let index = Index::build(manifest).map_err(|e| BomError::Index(e.to_string()))?;
    let idx = |e: rusqlite::Error| BomError::Index(e.to_string());
    let mut report = BomReport {
        manifest: head.id.clone(),
        boms: Vec::new(),
        under: under.join("/"),
        files_expected: manifest.file_count,
        matched: 0,
        outside: 0,
        findings: Vec::new(),
    };
    for bom in boms {
        let io = |source| BomError::Io {
            path: bom.clone(),
            source,
        };
        let file = std::fs::File::open(bom).map_err(io)?;
        let mut reader = BufReader::new(digest::HashingReader::new(file));
        let mut entries = 0;
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            number += 1;
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_line(&mut line)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => BomError::Malformed {
                        path: bom.clone(),
                        line: number,
                        reason: "not UTF-8".into(),
                    },
                    _ => io(e),
                })?;
            if n == 0 {
                break;
            }
            if n > MAX_LINE {
                return Err(BomError::Malformed {
                    path: bom.clone(),
                    line: number,
                    reason: format!("longer than {MAX_LINE} bytes"),
                });
            }
            let entry = parse_line(&line).map_err(|reason| BomError::Malformed {
                path: bom.clone(),
                line: number,
                reason: reason.to_string(),
            })?;
            let Some(entry) = entry else {
                continue;
            };
            entries += 1;
            let mut path = entry.path.as_slice();
            if path.len() > 1 && Profile::from_share_name(&path[0]).is_some() {
                path = &path[1..];
            }
            let Some(rel) = path
                .strip_prefix(under.as_slice())
                .filter(|r| !r.is_empty())
            else {
                report.outside += 1;
                continue;
            };
            let rel = rel.join("/");
            match index.take(&rel).map_err(idx)? {
                None => report.findings.push(BomFinding::Extra {
                    path: rel,
                    size: entry.size,
                }),
                Some(e) if e.times > 1 => report.findings.push(BomFinding::Duplicate { path: rel }),
                Some(e) if e.size != entry.size => report.findings.push(BomFinding::Size {
                    path: rel,
                    expected: e.size,
                    found: entry.size,
                }),
                Some(e) => {
                    let expected = e.crc64.as_deref().and_then(digest::parse_crc64);
                    if expected == Some(entry.crc64) {
                        report.matched += 1;
                    } else {
                        report.findings.push(BomFinding::Crc64 {
                            path: rel,
                            expected: e.crc64.unwrap_or_default(),
                            found: digest::crc64_hex(entry.crc64),
                        });
                    }
                }
            }
        }
        let (_, hash) = reader.into_inner().finish();
        report.boms.push(BomSource {
            path: bom.clone(),
            blake3: hash.to_hex().to_string(),
            entries,
        });
    }
    index
        .for_each_unseen(|path, size, _| report.findings.push(BomFinding::Missing { path, size }))
        .map_err(idx)?;
    Ok(report)
}

/// Records the check as a signed `bom_checked` event of the manifest.
///
/// # Errors
/// Ledger or signing errors.
pub fn record(
    ledger: &mut Ledger,
    manifest: &Manifest,
    report: &BomReport,
    key: &SigningKey,
) -> Result<ledger::Event, LedgerError> {
    ledger.register_key(key)?;
    let payload = json!({
        "boms": report.boms.iter().map(|b| json!({
            "blake3": b.blake3,
            "entries": b.entries,
            "file": b.path.file_name().map(|n| n.to_string_lossy().into_owned()),
        })).collect::<Vec<_>>(),
        "findings": report.findings.len(),
        "matched": report.matched,
        "result": if report.ok() { "pass" } else { "fail" },
    });
    ledger.append_event(
        ledger::kind::BOM_CHECKED,
        Some(manifest.run),
        Some(&manifest.id),
        &payload,
        Some(key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> BomEntry {
        parse_line(line).unwrap().unwrap()
    }

    #[test]
    fn file_lines() {
        let e = entry(
            r#"<file size="52645" crc64="0x80f2ac8a3b5d3a15">\pacs-2024\PAT1\IM1.dcm</file>"#,
        );
        assert_eq!(e.path, ["pacs-2024", "PAT1", "IM1.dcm"]);
        assert_eq!((e.size, e.crc64), (52645, 0x80f2ac8a3b5d3a15));
        // Attribute order, case of the hex, short hex, entities.
        let e = entry("  <file crc64=\"0X1F\" size=\"0\">\\c\\a&amp;b &lt;1&gt; &#233;</file>\r\n");
        assert_eq!(e.path, ["c", "a&b <1> é"]);
        assert_eq!((e.size, e.crc64), (0, 0x1f));
        for skip in [
            "",
            "  \r\n",
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>",
            "<FileList>",
            "</FileList>",
            "<BOM share=\"x_BlockBlob\">",
        ] {
            assert_eq!(parse_line(skip), Ok(None), "{skip:?}");
        }
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for (bad, says) in [
            (r#"<file size="1">\a</file>"#, "no crc64"),
            (r#"<file crc64="0x1">\a</file>"#, "no size"),
            (
                r#"<file size="-1" crc64="0x1">\a</file>"#,
                "not a byte count",
            ),
            (
                r#"<file size="99999999999999999999" crc64="0x1">\a</file>"#,
                "not a byte count",
            ),
            (r#"<file size="1" crc64="1">\a</file>"#, "not 0x"),
            (
                r#"<file size="1" crc64="0x12345678901234567">\a</file>"#,
                "not 0x",
            ),
            (r#"<file size="1" crc64="0xZZ">\a</file>"#, "not 0x"),
            (r#"<file size="1" size="2" crc64="0x1">\a</file>"#, "twice"),
            (
                r#"<file size="1" crc64="0x1" md5="x">\a</file>"#,
                "unknown attribute",
            ),
            (r#"<file size=1 crc64="0x1">\a</file>"#, "double quotes"),
            (r#"<file size="1" crc64="0x1>\a</file>"#, "unterminated"),
            (r#"<file size="1" crc64="0x1""#, "no '>'"),
            (r#"<file size="1" crc64="0x1">\a"#, "no </file>"),
            (r#"<file size="1" crc64="0x1">\a\..\b</file>"#, "'..'"),
            (r#"<file size="1" crc64="0x1">\a\\b</file>"#, "empty"),
            (
                r#"<file size="1" crc64="0x1">\a&bogus;</file>"#,
                "unknown entity",
            ),
            (r#"<file size="1" crc64="0x1">\a & b</file>"#, "entity"),
            (r#"<file size="1" crc64="0x1">\a<b</file>"#, "'<'"),
            (
                r#"<file size="1" crc64="0x1">\a&#0;</file>"#,
                "unknown entity",
            ),
            ("<filesize=\"1\">x</file>", "not a <file> line"),
            ("just text", "not a <file> line"),
            ("<file>", "not a <file> line"),
        ] {
            let err = parse_line(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: every prefix and many
        // mutations of a valid line.
        let line = r#"<file size="52645" crc64="0x80f2ac8a3b5d3a15">\pacs\a&amp;b</file>"#;
        for i in 0..=line.len() {
            if line.is_char_boundary(i) {
                let _ = parse_line(&line[..i]);
                let _ = parse_line(&line[i..]);
            }
        }
        let bytes = line.as_bytes();
        for i in 0..bytes.len() {
            for b in [b'"', b'<', b'>', b'&', b';', b'\\', b'=', b' ', b'x', b'0'] {
                let mut m = bytes.to_vec();
                m[i] = b;
                if let Ok(s) = std::str::from_utf8(&m) {
                    let _ = parse_line(s);
                }
            }
        }
    }
}
