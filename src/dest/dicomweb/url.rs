//! DICOMweb URLs: which service root a destination argument names, whether
//! it is Azure Health Data Services' DICOM service (recognised by its host),
//! and how it is shown in messages.

use std::fmt;

use url::Url;

/// The scheme prefix of a DICOMweb root that is not recognised by its host.
pub const SCHEME: &str = "dicomweb+";

/// The host suffix of Azure Health Data Services' DICOM service:
/// `<workspace>-<service>.dicom.azurehealthcareapis.com`.
pub const AZURE_HOST_SUFFIX: &str = ".dicom.azurehealthcareapis.com";

/// A DICOMweb service root (the URL `studies` is appended to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomwebUrl {
    /// The root as requests use it: `http(s)://…/`, ending in `/`.
    pub root: Url,
    /// Whether this is Azure's DICOM service (its rules and its audience).
    pub azure: bool,
}

/// Whether `s` names an Azure DICOM service (by its host).
pub fn is_azure(s: &str) -> bool {
    Url::parse(s).is_ok_and(|u| {
        u.scheme() == "https"
            && u.host_str().is_some_and(|h| {
                h.to_ascii_lowercase().ends_with(AZURE_HOST_SUFFIX)
                    && h.len() > AZURE_HOST_SUFFIX.len()
            })
    })
}

/// Whether a destination argument names a DICOMweb service.
pub fn is_dicomweb_url(s: &str) -> bool {
    s.starts_with(SCHEME) || is_azure(s)
}

impl DicomwebUrl {
    /// Parses `https://<workspace>-<service>.dicom.azurehealthcareapis.com/v<N>`
    /// (Azure), or `dicomweb+https://HOST[:PORT]/PATH` for any other DICOMweb
    /// root (`dicomweb+http://` on loopback only). A user part or a query
    /// string is refused: credentials come from the environment.
    ///
    /// # Errors
    /// Why the URL is not one custody serves, in words.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bare = s.strip_prefix(SCHEME).unwrap_or(s);
        let url = Url::parse(bare).map_err(|e| e.to_string())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "has a user name or password in it; credentials come from the environment \
                 (CUSTODY_DICOMWEB_USERNAME and CUSTODY_DICOMWEB_PASSWORD, or Microsoft Entra ID \
                 with --azure-auth), never the URL"
                    .into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("has a query string or fragment; a DICOMweb root has neither".into());
        }
        match url.scheme() {
            "https" => {}
            "http" if crate::dest::is_loopback(&url) => {}
            "http" => return Err("plain http is allowed only for loopback addresses".into()),
            other => {
                return Err(format!(
                    "unsupported scheme {SCHEME}{other} (dicomweb+https, or dicomweb+http on loopback)"
                ));
            }
        }
        let azure = is_azure(bare);
        let mut root = url;
        if !root.path().ends_with('/') {
            let p = format!("{}/", root.path());
            root.set_path(&p);
        }
        if azure && !is_azure_version(root.path()) {
            return Err(format!(
                "path {} is not an API version of the Azure DICOM service; write its root with the version, e.g. https://{}/v2",
                root.path(),
                root.host_str().unwrap_or_default()
            ));
        }
        Ok(DicomwebUrl { root, azure })
    }

    /// The URL of `path` (no leading `/`) under the root.
    pub fn join(&self, path: &str) -> Url {
        self.root
            .join(path)
            .expect("a relative path joins onto a base URL")
    }
}

/// `/v1/`, `/v2/`…: the Azure DICOM service is reached through a versioned
/// root (its conformance statement: "the API version … in the URL").
fn is_azure_version(path: &str) -> bool {
    path.strip_prefix("/v")
        .and_then(|v| v.strip_suffix('/'))
        .is_some_and(|v| !v.is_empty() && v.split('.').all(|d| d.parse::<u32>().is_ok()))
}

impl fmt::Display for DicomwebUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.azure {
            true => write!(f, "{}", self.root),
            false => write!(f, "{SCHEME}{}", self.root),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_is_recognised_by_its_host_and_needs_a_version() {
        let u = DicomwebUrl::parse("https://ws-svc.dicom.azurehealthcareapis.com/v2").unwrap();
        assert!(u.azure);
        assert_eq!(
            u.join("studies").as_str(),
            "https://ws-svc.dicom.azurehealthcareapis.com/v2/studies"
        );
        assert_eq!(
            u.to_string(),
            "https://ws-svc.dicom.azurehealthcareapis.com/v2/"
        );
        assert!(DicomwebUrl::parse("https://ws-svc.dicom.azurehealthcareapis.com/").is_err());
        assert!(is_dicomweb_url(
            "https://ws-svc.dicom.azurehealthcareapis.com/v1"
        ));
        assert!(!is_dicomweb_url("https://acct.blob.core.windows.net/c"));
        assert!(!is_azure(
            "https://.dicom.azurehealthcareapis.com/v2".trim_start_matches('.')
        ));
    }

    #[test]
    fn other_roots_take_the_dicomweb_scheme_and_http_only_on_loopback() {
        let u = DicomwebUrl::parse("dicomweb+http://127.0.0.1:8042/dicom-web").unwrap();
        assert!(!u.azure);
        assert_eq!(
            u.join("studies").as_str(),
            "http://127.0.0.1:8042/dicom-web/studies"
        );
        assert_eq!(u.to_string(), "dicomweb+http://127.0.0.1:8042/dicom-web/");
        assert!(DicomwebUrl::parse("dicomweb+http://pacs.example.org/dicom-web").is_err());
        assert!(DicomwebUrl::parse("dicomweb+https://pacs.example.org/dicom-web").is_ok());
        assert!(DicomwebUrl::parse("dicomweb+ftp://127.0.0.1/x").is_err());
        assert!(DicomwebUrl::parse("dicomweb+https://u:p@pacs.example.org/x").is_err());
        assert!(DicomwebUrl::parse("dicomweb+https://pacs.example.org/x?a=1").is_err());
    }
}
