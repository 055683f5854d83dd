//! Reading back: an instance's stored bytes (WADO-RS, asked for in any
//! transfer syntax, so the service sends what it holds rather than a
//! transcoding), a study's instances and its instance count (QIDO-RS, the
//! count always asked for with `includefield`: Azure returns counts only
//! when asked), and removal (`DELETE`, where the service has it).

use serde_json::Value;

use super::{DicomWeb, Failure, InstanceUids};

/// The `Accept` of an instance retrieval: the stored bytes, untranscoded.
pub const ACCEPT_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

/// Instances asked for per QIDO-RS page (Azure's largest `limit`).
const PAGE: usize = 200;

/// (0020,1208) Number of Study Related Instances.
const NUMBER_OF_STUDY_RELATED_INSTANCES: &str = "00201208";

impl DicomWeb {
    /// The instance's bytes as the service holds them, or `None` if it
    /// holds no such instance.
    pub(super) async fn retrieve(&self, uids: &InstanceUids) -> Result<Option<Vec<u8>>, Failure> {
        let url = self.url.join(&uids.path());
        let got = self
            .request("retrieve an instance", || {
                self.client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, ACCEPT_STORED)
            })
            .await;
        match got {
            Ok((204, _)) | Err(Failure::Status(404, _)) => Ok(None),
            Ok((_, body)) => single_part(body).await.map(Some),
            Err(e) => Err(e),
        }
    }

    /// The instances the service holds of `study`, page by page, each
    /// once (Azure pages newest first, so an instance stored meanwhile can
    /// push one already listed onto the next page).
    pub(super) async fn study_instances(
        &self,
        study: &str,
    ) -> Result<std::collections::BTreeSet<InstanceUids>, Failure> {
        let mut out = std::collections::BTreeSet::new();
        let mut offset = 0;
        loop {
            let url = self.url.join(&format!(
                "studies/{study}/instances?includefield=0020000E&includefield=00080018&limit={PAGE}&offset={offset}"
            ));
            let page = match self
                .request("list a study's instances", || {
                    self.client
                        .get(url.clone())
                        .header(reqwest::header::ACCEPT, "application/dicom+json")
                })
                .await
            {
                Ok((204, _)) | Err(Failure::Status(404, _)) => Vec::new(),
                Ok((_, body)) => datasets(&body)?,
                Err(e) => return Err(e),
            };
            let n = page.len();
            offset += n;
            for d in page {
                match (string(&d, "0020000E"), string(&d, "00080018")) {
                    (Some(series), Some(instance)) => {
                        out.insert(InstanceUids {
                            study: study.to_owned(),
                            series,
                            instance,
                        });
                    }
                    _ => {
                        return Err(Failure::Transport(format!(
                            "study {study}: the service listed an instance without its Series or SOP Instance UID"
                        )));
                    }
                }
            }
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// Whether the service holds the instance (a search, not a retrieval).
    pub(super) async fn has_instance(&self, uids: &InstanceUids) -> Result<bool, Failure> {
        let url = self.url.join(&format!(
            "studies/{}/series/{}/instances?SOPInstanceUID={}&includefield=00080018",
            uids.study, uids.series, uids.instance
        ));
        match self
            .request("look for an instance", || {
                self.client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/dicom+json")
            })
            .await
        {
            Ok((204, _)) | Err(Failure::Status(404, _)) => Ok(false),
            Ok((_, body)) => Ok(datasets(&body)?
                .iter()
                .any(|d| string(d, "00080018").as_deref() == Some(uids.instance.as_str()))),
            Err(e) => Err(e),
        }
    }

    /// The service's count of `study`'s instances (`None`: it does not
    /// hold the study).
    pub(super) async fn study_count(&self, study: &str) -> Result<Option<u64>, Failure> {
        let url = self.url.join(&format!(
            "studies?StudyInstanceUID={study}&includefield={NUMBER_OF_STUDY_RELATED_INSTANCES}"
        ));
        let got = self
            .request("count a study's instances", || {
                self.client
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/dicom+json")
            })
            .await;
        let body = match got {
            Ok((204, _)) | Err(Failure::Status(404, _)) => return Ok(None),
            Ok((_, body)) => body,
            Err(e) => return Err(e),
        };
        let studies = datasets(&body)?;
        let Some(d) = studies.first() else {
            return Ok(None);
        };
        d.get(NUMBER_OF_STUDY_RELATED_INSTANCES)
            .and_then(|e| e.get("Value"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .map(Some)
            .ok_or_else(|| {
                Failure::Transport(format!(
                    "study {study}: the service did not say how many instances it holds (NumberOfStudyRelatedInstances)"
                ))
            })
    }

    /// Deletes one instance: `Ok(true)` if it was there, `Ok(false)` if not.
    pub(super) async fn delete(&self, uids: &InstanceUids) -> Result<bool, Failure> {
        let url = self.url.join(&uids.path());
        match self
            .request("delete an instance", || self.client.delete(url.clone()))
            .await
        {
            Ok(_) => Ok(true),
            Err(Failure::Status(404, _)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn string(d: &Value, tag: &str) -> Option<String> {
    d.get(tag)?
        .get("Value")?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_owned)
}

fn datasets(body: &[u8]) -> Result<Vec<Value>, Failure> {
    match serde_json::from_slice(body) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(_) => Err(Failure::Transport(
            "the service answered a search with something other than a DICOM JSON array".into(),
        )),
        Err(e) => Err(Failure::Transport(format!(
            "the service answered a search with something other than DICOM JSON: {e}"
        ))),
    }
}

/// The one part of a `multipart/related` body (an instance retrieval).
///
/// # Errors
/// The body is not multipart, or holds other than one part.
pub(super) async fn single_part(body: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let bad = |why: String| Failure::Transport(format!("an instance retrieval answered {why}"));
    // The boundary is the body's first line ("--" + boundary), which saves
    // trusting the header's quoting.
    let line_end = body
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| bad("without a multipart body".into()))?;
    let first =
        std::str::from_utf8(&body[..line_end]).map_err(|_| bad("a non-text boundary".into()))?;
    let boundary = first
        .strip_prefix("--")
        .ok_or_else(|| bad("without a multipart body".into()))?
        .trim_end()
        .to_owned();
    let stream =
        futures::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(body)) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut got: Vec<Vec<u8>> = Vec::new();
    while let Some(field) = parts
        .next_field()
        .await
        .map_err(|e| bad(format!("a malformed multipart body: {e}")))?
    {
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("a malformed part: {e}")))?;
        got.push(bytes.to_vec());
    }
    match <[Vec<u8>; 1]>::try_from(got) {
        Ok([one]) => Ok(one),
        Err(v) => Err(bad(format!(
            "{} parts where one instance was asked for",
            v.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(body: &[u8]) -> Result<Vec<u8>, Failure> {
        futures::executor::block_on(single_part(body.to_vec()))
    }

    #[test]
    fn one_part_is_taken_from_a_multipart_body_as_sent() {
        let body = b"--xyz\r\nContent-Type: application/dicom\r\nContent-Length: 5\r\n\r\nab\r\nc\r\n--xyz--\r\n";
        assert_eq!(part(body).unwrap(), b"ab\r\nc");
        let two = b"--q\r\nContent-Type: application/dicom\r\n\r\na\r\n--q\r\nContent-Type: application/dicom\r\n\r\nb\r\n--q--\r\n";
        assert!(part(two).is_err());
        assert!(part(b"{}").is_err());
    }
}
