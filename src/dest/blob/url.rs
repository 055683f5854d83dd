//! Blob URLs: which account, container and prefix a destination URL
//! names, and how a URL is shown in messages (no query string, where a SAS
//! would be, and no user part).

use std::fmt;
use std::net::IpAddr;

use url::Url;

use super::BlobError;

/// Where a blob destination is: the service endpoint, the container, and
/// an optional prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUrl {
    /// The service endpoint, ending in `/` (path-style endpoints include the
    /// account: `http://127.0.0.1:10000/devstoreaccount1/`).
    pub service: Url,
    /// The storage account.
    pub account: String,
    /// The container.
    pub container: String,
    /// The prefix inside the container, without leading or trailing `/`.
    pub prefix: String,
}

/// Whether a destination argument names a blob endpoint rather than a path.
pub fn is_blob_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

impl BlobUrl {
    /// Parses one of:
    /// `https://<account>.blob.core.windows.net/<container>[/<prefix>]` (Azure),
    /// `https://<account>.blob.<serial>.microsoftdatabox.com/<container>[/<prefix>]`
    /// (a Data Box's local Blob REST endpoint), or the path-style
    /// `http(s)://<host>:<port>/<account>/<container>[/<prefix>]` (Azurite).
    /// Plain `http` is accepted only for loopback hosts; a query string is
    /// refused (credentials never travel in arguments).
    ///
    /// # Errors
    /// [`BlobError::Url`] saying what is wrong.
    pub fn parse(s: &str) -> Result<Self, BlobError> {
        let bad = |why: &str| BlobError::Url(format!("{}: {why}", redact(s)));
        let url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "has a user name or password in it; credentials come from the environment (AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_KEY, AZURE_STORAGE_CONNECTION_STRING, or Microsoft Entra ID with --azure-auth), never the URL",
            ));
        }
        if url.query().is_some() {
            return Err(bad(
                "has a query string; pass a SAS token in AZURE_STORAGE_SAS_TOKEN, not in the URL",
            ));
        }
        match url.scheme() {
            "https" => {}
            "http" if crate::dest::is_loopback(&url) => {}
            "http" => return Err(bad("plain http is allowed only for loopback addresses")),
            other => return Err(bad(&format!("unsupported scheme {other}"))),
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_owned();
        let mut segments: Vec<&str> = url
            .path_segments()
            .map(|p| p.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let virtual_host = host.contains(".blob.") && host.parse::<IpAddr>().is_err();
        let (account, service) = if virtual_host {
            let account = host.split('.').next().unwrap_or_default().to_owned();
            let mut service = url.clone();
            service.set_path("/");
            (account, service)
        } else {
            if segments.is_empty() {
                return Err(bad("path-style URL needs /<account>/<container>"));
            }
            let account = segments.remove(0).to_owned();
            let mut service = url.clone();
            service.set_path(&format!("/{account}/"));
            (account, service)
        };
        if segments.is_empty() {
            return Err(bad("no container in the path"));
        }
        let container = segments.remove(0).to_owned();
        Ok(BlobUrl {
            service,
            account,
            container,
            prefix: segments.join("/"),
        })
    }

    /// Whether the host is a Data Box's own Blob REST endpoint
    /// (`<account>.blob.<serial>.microsoftdatabox.com`).
    pub fn is_databox_host(&self) -> bool {
        self.service
            .host_str()
            .is_some_and(|h| h.to_ascii_lowercase().ends_with(".microsoftdatabox.com"))
    }

    /// The blob name of a relative path.
    pub fn blob_name(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

impl fmt::Display for BlobUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.service, self.container)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// A URL with any query string (where a SAS would be) cut off, for messages.
pub fn redact(s: &str) -> String {
    let s = s.split('?').next().unwrap_or_default();
    // A user part (`user:password@`) is a secret too: keep the scheme and
    // what follows the last `@` before the path.
    match s.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => s.to_owned(),
            }
        }
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_url_forms() {
        let a = BlobUrl::parse("https://contoso.blob.core.windows.net/pacs/wave-1/ct").unwrap();
        assert_eq!(
            (a.account.as_str(), a.container.as_str(), a.prefix.as_str()),
            ("contoso", "pacs", "wave-1/ct")
        );
        assert_eq!(a.service.as_str(), "https://contoso.blob.core.windows.net/");
        assert_eq!(
            a.to_string(),
            "https://contoso.blob.core.windows.net/pacs/wave-1/ct"
        );
        let d = BlobUrl::parse("https://contoso.blob.ABC123.microsoftdatabox.com/pacs").unwrap();
        assert_eq!((d.account.as_str(), d.prefix.as_str()), ("contoso", ""));
        let z = BlobUrl::parse("http://127.0.0.1:10000/devstoreaccount1/pacs/x").unwrap();
        assert_eq!(
            z.service.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/"
        );
        assert_eq!(
            (z.account.as_str(), z.container.as_str(), z.prefix.as_str()),
            ("devstoreaccount1", "pacs", "x")
        );
        assert_eq!(z.blob_name("a/b"), "x/a/b");
    }

    #[test]
    fn refuses_plain_http_off_loopback_and_secrets_in_urls() {
        let e = BlobUrl::parse("http://10.0.0.5:10000/acct/pacs")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only for loopback"), "{e}");
        let e = BlobUrl::parse("https://a.blob.core.windows.net/c?sv=1&sig=SECRET")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AZURE_STORAGE_SAS_TOKEN") && !e.contains("SECRET"),
            "{e}"
        );
        assert!(BlobUrl::parse("https://a.blob.core.windows.net/").is_err());
        assert!(BlobUrl::parse("http://[::1]:1/a/c").is_ok());
        // A password in the user part is refused and never repeated.
        for url in [
            "http://user:hunter2@127.0.0.1:1/acct/c",
            "https://u:hunter2@a.blob.core.windows.net/c?sig=x",
            "https://hunter2@a.blob.core.windows.net/c",
        ] {
            let e = BlobUrl::parse(url).unwrap_err().to_string();
            assert!(
                e.contains("user name or password") && !e.contains("hunter2"),
                "{e}"
            );
            assert!(!redact(url).contains("hunter2"), "{}", redact(url));
        }
        assert_eq!(
            redact("https://u:p@h.example/c/p@x?sig=1"),
            "https://***@h.example/c/p@x"
        );
    }
}
