//! A DICOMweb service as a destination: Azure Health Data Services' DICOM
//! service, or any other DICOMweb root (an on-prem PACS, Orthanc).
//!
//! A DICOMweb service holds DICOM instances, not files: what lands is
//! named by the instance it holds, `studies/{study}/series/{series}/
//! instances/{sop}` ([`Naming::Instance`]), and is held to the bytes after
//! its 128-byte preamble, which Azure's service replaces with zeros
//! ([`Landing::held`]). A landing keeps the instance's bytes exactly as
//! read and commits it into its study's batch (`stow`); the service's
//! answer says, per instance, whether it stored it, and what it did not
//! store is [`Destination::rejected`]. Reading back (`wado`) asks for the
//! stored bytes in any transfer syntax, so nothing is transcoded; a listing
//! covers the studies a verify expects ([`Destination::expect`]), and a
//! study whose instance listing disagrees with the service's own count of
//! it is reported.
//!
//! Signing in (`auth`) is Microsoft Entra ID for Azure's service, HTTP
//! Basic or nothing for others; the URL (`url`) never carries a secret.
//! Retries keep to [`crate::dest::retry`], here and only here for this
//! destination.

mod auth;
mod stow;
pub mod url;
mod wado;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

pub use auth::{PASSWORD_ENV, USERNAME_ENV};
pub use stow::DUPLICATE;
pub use url::{DicomwebUrl, is_dicomweb_url};

pub use crate::source::dicom::{InstanceUids, PREAMBLE};

use super::blob::{Access, BlobOptions};
use super::retry::{Backoff, Decision, decide};
use super::{DestError, Destination, Held, Landing, Listed, Naming, Removal, Version};
use crate::digest::Sums;
use crate::relpath::RelPath;
use crate::source::dicom::{Outcome, Probe};

/// The largest instance sent (in one request of its own): well under the
/// Azure service's 4 GB request limit, and held in memory while it waits.
pub const MAX_INSTANCE: u64 = 2 << 30;

/// Why a request did not get a usable answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The service refused the credential (401, 403): the run's use of it
    /// is over ([`Destination::refused`]).
    Refused(String),
    /// Another status, with the first line of what it said.
    Status(u16, String),
    /// No answer (or an unusable one) after the retries.
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(why) | Failure::Transport(why) => f.write_str(why),
            Failure::Status(code, text) => write!(f, "HTTP {code}: {text}"),
        }
    }
}

/// A DICOMweb service.
pub struct DicomWeb {
    url: DicomwebUrl,
    client: reqwest::Client,
    auth: auth::Auth,
    access: Access,
    rt: tokio::runtime::Runtime,
    stow: stow::Stow,
    refused: OnceLock<String>,
    /// Why instances cannot be deleted here, once a DELETE said so.
    no_delete: OnceLock<String>,
    unreachable: AtomicBool,
    /// The studies a listing covers.
    studies: Mutex<BTreeSet<String>>,
}

impl DicomWeb {
    /// Connects to the service at `url` and checks, with one signed search,
    /// that it answers and takes the credential (from the environment:
    /// `options.auth` for Entra ID, else HTTP Basic, see `auth`).
    ///
    /// # Errors
    /// [`DestError::Unusable`] naming the URL and the cause (no credential,
    /// sign-in refused, not a DICOMweb service, not answering).
    pub fn open(url: &DicomwebUrl, options: &BlobOptions) -> Result<Self, DestError> {
        let unusable = |reason: String| DestError::Unusable {
            path: url.to_string().into(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| unusable(format!("cannot start the I/O runtime: {e}")))?;
        let client =
            super::blob::client::reqwest_client(options.ca_file.as_deref()).map_err(unusable)?;
        let transport = azure_core::http::Transport::new(std::sync::Arc::new(client.clone()));
        let auth = auth::Auth::from_env(url, options.auth, &transport).map_err(unusable)?;
        let dw = DicomWeb {
            url: url.clone(),
            client,
            auth,
            access: options.access,
            rt,
            stow: stow::Stow::default(),
            refused: OnceLock::new(),
            no_delete: OnceLock::new(),
            unreachable: AtomicBool::new(false),
            studies: Mutex::new(BTreeSet::new()),
        };
        // One signed request before anything moves.
        let probe = dw.url.join("studies?limit=1");
        let answered = dw.rt.block_on(dw.request("reach the service", || {
            dw.client
                .get(probe.clone())
                .header(reqwest::header::ACCEPT, "application/dicom+json")
        }));
        match answered {
            Ok(_) => {}
            Err(Failure::Status(code, text)) => {
                return Err(unusable(format!(
                    "does not answer as a DICOMweb service (a study search got HTTP {code}: {text})"
                )));
            }
            Err(e) => return Err(unusable(e.to_string())),
        }
        tracing::debug!(url = %dw.url, auth = dw.auth.name(), "DICOMweb service reached");
        Ok(dw)
    }

    /// Sends the request `build` makes (again on each attempt), signed,
    /// retrying what [`decide`] says may pass; `Ok` with the status and
    /// body for a 2xx or a 409 (whose STOW-RS body says which instances
    /// failed).
    pub(crate) async fn request(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), Failure> {
        if let Some(why) = self.refused.get() {
            return Err(Failure::Refused(format!("not sent: {why}")));
        }
        if self.unreachable.load(Ordering::Relaxed) {
            return Err(Failure::Transport(
                "the service kept failing earlier in this run (retries used up)".into(),
            ));
        }
        let bearer = matches!(self.auth, auth::Auth::Bearer(..));
        let mut backoff = Backoff::default();
        let mut attempt = 1;
        loop {
            let mut req = build();
            match self.auth.header().await {
                Ok(Some(h)) => req = req.header(reqwest::header::AUTHORIZATION, h),
                Ok(None) => {}
                Err(why) => {
                    let _ = self.refused.set(why.clone());
                    return Err(Failure::Refused(why));
                }
            }
            let (status, tls, failure) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Err(e) => (
                            None,
                            false,
                            Failure::Transport(format!("the answer was cut off: {}", describe(&e))),
                        ),
                        Ok(body) if (200..300).contains(&status) || status == 409 => {
                            return Ok((status, body.to_vec()));
                        }
                        Ok(body) => {
                            let text = first_line(&body);
                            if matches!(status, 401 | 403)
                                && !(bearer && status == 401 && attempt == 1)
                            {
                                let why = self.refusal(status, &text);
                                let _ = self.refused.set(why.clone());
                                return Err(Failure::Refused(why));
                            }
                            (Some(status), false, Failure::Status(status, text))
                        }
                    }
                }
                Err(e) => (
                    None,
                    super::retry::is_tls_failure(&e),
                    Failure::Transport(describe(&e)),
                ),
            };
            match decide(status, tls, bearer, attempt) {
                Decision::Fail => return Err(failure),
                Decision::Down => {
                    self.unreachable.store(true, Ordering::Relaxed);
                    return Err(failure);
                }
                Decision::Retry => {
                    let wait = backoff.next_jittered();
                    tracing::warn!(what, attempt, wait_ms = wait.as_millis() as u64, error = %failure, "transient failure; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// What a 401 or 403 means here, in one line naming what to do.
    fn refusal(&self, status: u16, text: &str) -> String {
        let way = self.auth.name();
        let role = match (self.url.azure, self.access) {
            (true, Access::Write) => "DICOM Data Owner",
            (true, Access::Read) => "DICOM Data Reader",
            (false, Access::Write) => "the right to store and delete",
            (false, Access::Read) => "the right to search and retrieve",
        };
        match status {
            401 => format!(
                "the DICOMweb service refused the sign-in ({way}): a wrong user name or password, \
                 or a token that is expired or not for this service ({text})"
            ),
            _ => format!(
                "signed in ({way}), but this identity is not allowed here: this command needs {role} ({text})"
            ),
        }
    }

    /// For an instance the service says it already holds (Failure Reason
    /// 45070): landed if what it holds is these bytes after the preamble
    /// (an earlier run stored it and was stopped before recording it),
    /// refused otherwise.
    async fn same_as_stored(&self, part: &stow::Part) -> Result<(), String> {
        let dup = stow::reason(DUPLICATE);
        match self.retrieve(&part.uids).await {
            Ok(Some(bytes)) if after_preamble(&bytes).0 == part.after_preamble => {
                tracing::debug!(instance = %part.uids.instance, "already stored, with the same bytes");
                Ok(())
            }
            Ok(_) => Err(format!(
                "the service refused it: Failure Reason {DUPLICATE} ({dup}), and what it holds under these UIDs differs"
            )),
            Err(e) => Err(format!(
                "the service refused it: Failure Reason {DUPLICATE} ({dup}), and what it holds could not be read back: {e}"
            )),
        }
    }

    fn io_err(&self, rel: &str, e: &Failure) -> DestError {
        DestError::Io {
            path: format!("{}{rel}", self.url).into(),
            source: io::Error::other(e.to_string()),
        }
    }

    fn uids(&self, rel: &RelPath) -> Result<InstanceUids, DestError> {
        InstanceUids::from_path(rel.as_str()).ok_or_else(|| DestError::Io {
            path: format!("{}{rel}", self.url).into(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an instance's name (studies/…/series/…/instances/…)",
            ),
        })
    }

    /// Lists one study: its instances, and a listing error if their number
    /// is not the service's own count of the study.
    fn list_study(&self, study: &str) -> Vec<Result<Listed, DestError>> {
        let listed = self.rt.block_on(async {
            let instances = self.study_instances(study).await?;
            let count = self.study_count(study).await?;
            Ok::<_, Failure>((instances, count))
        });
        let (instances, count) = match listed {
            Ok(x) => x,
            Err(e) => return vec![Err(self.io_err(&format!("studies/{study}"), &e))],
        };
        let mut out: Vec<_> = instances
            .iter()
            .map(|u| match RelPath::new(u.path()) {
                Ok(rel) => Ok(Listed::Object { rel, size: 0 }),
                Err(_) => Ok(Listed::Other {
                    path: u.path(),
                    what: "instance whose UIDs do not make a valid name",
                }),
            })
            .collect();
        let n = instances.len() as u64;
        if count.unwrap_or(0) != n {
            out.push(Err(DestError::Io {
                path: format!("{}studies/{study}", self.url).into(),
                source: io::Error::other(format!(
                    "the service counts {} instance(s) in this study (NumberOfStudyRelatedInstances) but lists {n}",
                    count.unwrap_or(0)
                )),
            }));
        }
        out
    }
}

/// The BLAKE3 (hex), CRC64 (hex) and length of the bytes after the
/// preamble.
fn after_preamble(bytes: &[u8]) -> (String, String, u64) {
    let mut sums = Sums::new();
    sums.update(bytes.get(PREAMBLE..).unwrap_or_default());
    let s = sums.finish();
    (
        s.blake3.to_hex().to_string(),
        crate::digest::crc64_hex(s.crc64),
        s.len,
    )
}

fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut line: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    if line.is_empty() {
        line = "no message".into();
    }
    line
}

fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

/// An instance being read into memory, to go out with its study.
struct DicomLanding<'d> {
    dw: &'d DicomWeb,
    rel: RelPath,
    buf: Vec<u8>,
    /// What the service will hold, worked out once (by [`Landing::held`],
    /// or by the commit when nothing asked first).
    held: std::cell::OnceCell<(InstanceUids, Held)>,
}

impl Write for DicomLanding<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if (self.buf.len() + buf.len()) as u64 > MAX_INSTANCE {
            return Err(io::Error::other(format!(
                "larger than {} GiB, the most custody sends as one DICOMweb instance",
                MAX_INSTANCE >> 30
            )));
        }
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DicomLanding<'_> {
    fn uids(&self) -> Result<InstanceUids, DestError> {
        let refuse = |why: String| DestError::Unusable {
            path: self.rel.as_str().into(),
            reason: why,
        };
        let mut probe = Probe::new();
        probe.feed(&self.buf);
        match probe.finish() {
            Outcome::Dicom(h) => {
                if let Some(why) = h.instance.malformed() {
                    return Err(refuse(format!("{why}; a DICOMweb service refuses it")));
                }
                InstanceUids::of(&h.instance).ok_or_else(|| {
                    refuse(
                        "has no Study, Series or SOP Instance UID; a DICOMweb service cannot hold it"
                            .into(),
                    )
                })
            }
            Outcome::NotDicom => Err(refuse(
                "is not a DICOM Part 10 file; a DICOMweb service cannot hold it".into(),
            )),
            Outcome::Unreadable(why) => Err(refuse(format!("DICOM header unreadable: {why}"))),
        }
    }
}

impl DicomLanding<'_> {
    /// The instance's UIDs and what the service will hold of it, from the
    /// header and the bytes after the preamble (read and hashed once).
    fn instance(&self) -> Result<&(InstanceUids, Held), DestError> {
        if let Some(h) = self.held.get() {
            return Ok(h);
        }
        let uids = self.uids()?;
        let (blake3, crc64, size) = after_preamble(&self.buf);
        let rel = RelPath::new(uids.path()).map_err(|_| DestError::Unusable {
            path: self.rel.as_str().into(),
            reason: "its UIDs do not make a valid instance name".into(),
        })?;
        let held = Held {
            rel,
            size,
            blake3,
            crc64,
        };
        Ok(self.held.get_or_init(|| (uids, held)))
    }
}

impl Landing for DicomLanding<'_> {
    fn held(&self) -> Result<Option<Held>, DestError> {
        self.instance().map(|(_, h)| Some(h.clone()))
    }

    fn commit(self: Box<Self>) -> Result<(), DestError> {
        self.instance()?;
        let DicomLanding {
            dw, rel, buf, held, ..
        } = *self;
        let (uids, held) = held.into_inner().expect("worked out just above");
        dw.stow.add(
            dw,
            stow::Part {
                rel,
                uids,
                bytes: buf,
                after_preamble: held.blake3,
            },
        );
        Ok(())
    }
}

/// The bytes of a retrieved instance after its preamble.
struct Retrieved {
    bytes: Vec<u8>,
    at: usize,
}

impl Read for Retrieved {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl Destination for DicomWeb {
    fn describe(&self) -> String {
        self.url.to_string()
    }

    fn landed_size(&self, rel: &RelPath) -> Result<Option<u64>, DestError> {
        let uids = self.uids(rel)?;
        match self.rt.block_on(self.retrieve(&uids)) {
            Ok(b) => Ok(b.map(|b| b.len().saturating_sub(PREAMBLE) as u64)),
            Err(e) => Err(self.io_err(rel.as_str(), &e)),
        }
    }

    fn holds(&self, rel: &RelPath, _size: u64) -> Result<bool, DestError> {
        let uids = self.uids(rel)?;
        self.rt
            .block_on(self.has_instance(&uids))
            .map_err(|e| self.io_err(rel.as_str(), &e))
    }

    fn create(&self, rel: &RelPath, _mtime_ns: i64) -> Result<Box<dyn Landing + '_>, DestError> {
        Ok(Box::new(DicomLanding {
            dw: self,
            rel: rel.clone(),
            buf: Vec::new(),
            held: std::cell::OnceCell::new(),
        }))
    }

    fn open(&self, rel: &RelPath) -> Result<Box<dyn Read + Send + '_>, DestError> {
        let uids = self.uids(rel)?;
        match self.rt.block_on(self.retrieve(&uids)) {
            Ok(Some(bytes)) => Ok(Box::new(Retrieved {
                bytes,
                at: PREAMBLE,
            })),
            Ok(None) => Err(DestError::Io {
                path: format!("{}{rel}", self.url).into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
            Err(e) => Err(self.io_err(rel.as_str(), &e)),
        }
    }

    fn list(&self) -> Box<dyn Iterator<Item = Result<Listed, DestError>> + Send + '_> {
        let studies: Vec<String> = self
            .studies
            .lock()
            .expect("studies lock poisoned")
            .iter()
            .cloned()
            .collect();
        // One study at a time: a study's listing, not the archive's.
        Box::new(studies.into_iter().flat_map(move |s| self.list_study(&s)))
    }

    fn version(&self, rel: &RelPath) -> Result<Option<Version>, DestError> {
        // No ETags in DICOMweb: the version is what is held, by its hash.
        let uids = self.uids(rel)?;
        match self.rt.block_on(self.retrieve(&uids)) {
            Ok(b) => Ok(b.map(|b| Version(after_preamble(&b).0))),
            Err(e) => Err(self.io_err(rel.as_str(), &e)),
        }
    }

    fn remove_if(&self, rel: &RelPath, version: &Version) -> Result<Removal, DestError> {
        if let Some(why) = self.no_delete.get() {
            return Err(DestError::Unsupported {
                path: self.describe().into(),
                reason: why.clone(),
            });
        }
        // DICOMweb has no conditional delete: the bytes are checked just
        // before, which leaves a window a service without versions cannot
        // close.
        match self.version(rel)? {
            None => return Ok(Removal::Gone),
            Some(v) if &v != version => return Ok(Removal::Changed),
            Some(_) => {}
        }
        let uids = self.uids(rel)?;
        match self.rt.block_on(self.delete(&uids)) {
            Ok(true) => Ok(Removal::Removed),
            Ok(false) => Ok(Removal::Gone),
            Err(Failure::Status(code @ (405 | 501), _)) => {
                // Every later removal would get the same answer: none is
                // sent.
                let why = self.no_delete.get_or_init(|| {
                    format!(
                        "this DICOMweb service does not delete instances (DELETE answered HTTP {code}); \
                         remove them with the server's own tools"
                    )
                });
                Err(DestError::Unsupported {
                    path: self.describe().into(),
                    reason: why.clone(),
                })
            }
            Err(e) => Err(self.io_err(rel.as_str(), &e)),
        }
    }

    fn flush(&self) -> Result<(), DestError> {
        self.stow.flush(self);
        Ok(())
    }

    fn refused(&self) -> Option<String> {
        self.refused.get().cloned()
    }

    fn cannot_remove(&self) -> Option<String> {
        self.no_delete.get().cloned()
    }

    fn naming(&self) -> Naming {
        Naming::Instance
    }

    fn rejected(&self, rel: &RelPath) -> Option<String> {
        self.stow.rejected(rel)
    }

    fn lists_sizes(&self) -> bool {
        false
    }

    fn expect(&self, object: &RelPath) {
        if let Some(u) = InstanceUids::from_path(object.as_str()) {
            self.studies
                .lock()
                .expect("studies lock poisoned")
                .insert(u.study);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_bytes_are_those_after_the_preamble() {
        let mut file = vec![7u8; PREAMBLE];
        file.extend_from_slice(b"DICM rest");
        let (h, _, n) = after_preamble(&file);
        assert_eq!(n, 9);
        assert_eq!(h, blake3::hash(b"DICM rest").to_hex().to_string());
        let mut zeroed = file.clone();
        zeroed[..PREAMBLE].fill(0);
        assert_eq!(after_preamble(&zeroed).0, h, "Azure's zeroed preamble");
        assert_eq!(after_preamble(b"short").2, 0);
    }
}
