//! The loopback stand-ins of `tests/support/azure_standin.py`: a token
//! endpoint (App Service managed identity and Microsoft Entra ID) and an
//! HTTP(S) proxy in front of Azurite that refuses what the real endpoint
//! refuses (shared-key requests on a keyless account, API versions a Data
//! Box does not speak, writes by a reader); and of
//! `tests/support/dicomweb_standin.py`, a proxy in front of Orthanc that
//! behaves as Azure's DICOM service does. Each logs one JSON line per
//! request, which the tests read back.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running stand-in; stopped when dropped.
pub struct Standin {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

impl Standin {
    /// Starts `azure_standin.py WHAT ARGS --log LOG`.
    pub fn start(what: &str, args: &[&str], log: &Path) -> Standin {
        let mut all = vec![what];
        all.extend_from_slice(args);
        Self::run("azure_standin.py", &all, log)
    }

    /// The proxy of `dicomweb_standin.py` in front of Orthanc's DICOMweb
    /// root `target` (`http://127.0.0.1:PORT/dicom-web`): `--azure`,
    /// `--drop-instance UID`, `--record DIR`.
    pub fn dicomweb(target: &str, args: &[&str], log: &Path) -> Standin {
        let mut all = vec!["--target", target];
        all.extend_from_slice(args);
        Self::run("dicomweb_standin.py", &all, log)
    }

    /// `dicomweb+http://127.0.0.1:PORT/dicom-web`, through this proxy.
    pub fn dicomweb_url(&self) -> String {
        format!("dicomweb+http://127.0.0.1:{}/dicom-web", self.port)
    }

    fn run(script_name: &str, args: &[&str], log: &Path) -> Standin {
        let mut child = Command::new("python3")
            .arg(script(script_name))
            .args(args)
            .arg("--log")
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{script_name} {args:?} did not start: {line:?}"));
        Standin {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    /// An identity endpoint over HTTPS with `tls`'s certificate.
    pub fn identity(tls: &super::tls::TestCa, args: &[&str], log: &Path) -> Standin {
        let (c, k) = (
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        );
        let mut all = vec!["--cert", c.as_str(), "--key", k.as_str()];
        all.extend_from_slice(args);
        Standin::start("identity", &all, log)
    }

    /// A proxy to `target` (`http(s)://127.0.0.1:PORT`), serving HTTPS
    /// when `tls` is given (and trusting its CA upstream).
    pub fn proxy(
        target: &str,
        tls: Option<&super::tls::TestCa>,
        args: &[&str],
        log: &Path,
    ) -> Standin {
        let owned: Vec<String> = match tls {
            Some(t) => vec![
                "--cert".into(),
                t.cert.display().to_string(),
                "--key".into(),
                t.key.display().to_string(),
                "--ca".into(),
                t.ca.display().to_string(),
            ],
            None => Vec::new(),
        };
        let mut all: Vec<&str> = vec!["--target", target];
        all.extend(owned.iter().map(String::as_str));
        all.extend_from_slice(args);
        Standin::start("proxy", &all, log)
    }

    /// The requests logged so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
