//! The loopback stand-ins of `tests/support/azure_standin.py`: a token
//! endpoint (App Service managed identity and Microsoft Entra ID) and an
//! HTTP(S) proxy in front of Azurite that refuses what the real endpoint
//! refuses (shared-key requests on a keyless account, API versions a Data
//! Box does not speak, writes by a reader). Each logs one JSON line per
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

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/azure_standin.py")
}

impl Standin {
    /// Starts `azure_standin.py WHAT ARGS --log LOG`.
    pub fn start(what: &str, args: &[&str], log: &Path) -> Standin {
        let mut child = Command::new("python3")
            .arg(script())
            .arg(what)
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
            .unwrap_or_else(|| panic!("{what} did not start: {line:?}"));
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
