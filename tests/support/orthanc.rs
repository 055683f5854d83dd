//! A real DICOMweb server on loopback for one test: Orthanc with its
//! DICOMweb plugin (Debian's `orthanc` and `orthanc-dicomweb`, which
//! `./scripts/test` installs), started as a plain process with its own
//! configuration: HTTP Basic users, no remote access, no DICOM port,
//! storage in the test's folder. And a small client for Orthanc's own REST
//! API, to tamper with what it holds "through another client".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the server knows, and its password.
pub const USER: &str = "archivist";
pub const PASSWORD: &str = "correct-horse-battery";

const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// A running Orthanc; stopped when dropped.
pub struct Orthanc {
    child: Child,
    pub port: u16,
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Options of a server.
#[derive(Default, Clone, Copy)]
pub struct Config {
    /// `OverwriteInstances`: a second copy of an instance replaces the
    /// first (off by default, as in Orthanc: the first is kept).
    pub overwrite: bool,
}

impl Orthanc {
    /// Starts a server with its storage under `dir`.
    pub fn start(dir: &Path, config: Config) -> Self {
        assert!(
            Path::new(PLUGIN).exists(),
            "{PLUGIN} missing: run ./scripts/test, which installs orthanc and orthanc-dicomweb"
        );
        let storage = dir.join("orthanc-db");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let conf = serde_json::json!({
            "Name": "custody-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": port,
            "DicomServerEnabled": false,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { USER: PASSWORD },
            "HttpCompressionEnabled": false,
            "OverwriteInstances": config.overwrite,
            "SaveJobs": false,
            "Plugins": [PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
        });
        let path = dir.join("orthanc.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
        let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
        let child = Command::new("Orthanc")
            .arg(&path)
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("Orthanc (./scripts/test installs it)");
        let mut o = Orthanc { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if o.request("GET", "/system", &[])
                .is_some_and(|(s, _)| s == 200)
            {
                return o;
            }
            if let Some(status) = o.child.try_wait().unwrap() {
                panic!(
                    "Orthanc exited ({status}): {}",
                    std::fs::read_to_string(dir.join("orthanc.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "Orthanc did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The DICOMweb root as custody is given it.
    pub fn dicomweb_url(&self) -> String {
        format!("dicomweb+http://127.0.0.1:{}/dicom-web", self.port)
    }

    /// `http://127.0.0.1:PORT` (for a proxy's upstream).
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One request to the server with the user's credentials: status and
    /// body (`None`: no answer).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        use base64::Engine as _;
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
        let status = std::str::from_utf8(&out[..split])
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((status, out[split + 4..].to_vec()))
    }

    fn json(&self, method: &str, path: &str, body: &[u8]) -> serde_json::Value {
        let (status, body) = self.request(method, path, body).expect("Orthanc answers");
        assert!((200..300).contains(&status), "{method} {path}: {status}");
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Orthanc's id of the instance with this SOP Instance UID.
    pub fn instance_id(&self, sop: &str) -> Option<String> {
        let found = self.json("POST", "/tools/lookup", sop.as_bytes());
        found
            .as_array()?
            .iter()
            .find(|r| r["Type"] == "Instance")
            .map(|r| r["ID"].as_str().unwrap().to_owned())
    }

    /// Deletes an instance through Orthanc's own REST API.
    pub fn delete_instance(&self, sop: &str) {
        let id = self.instance_id(sop).expect("the instance is stored");
        self.json("DELETE", &format!("/instances/{id}"), &[]);
    }

    /// Stores a DICOM file through Orthanc's own REST API (not DICOMweb).
    pub fn store(&self, bytes: &[u8]) {
        self.json("POST", "/instances", bytes);
    }

    /// The stored bytes of an instance, as Orthanc's REST API gives them.
    pub fn file(&self, sop: &str) -> Vec<u8> {
        let id = self.instance_id(sop).expect("the instance is stored");
        let (status, body) = self
            .request("GET", &format!("/instances/{id}/file"), &[])
            .unwrap();
        assert_eq!(status, 200);
        body
    }

    /// How many instances the server holds.
    pub fn instance_count(&self) -> u64 {
        self.json("GET", "/statistics", &[])["CountInstances"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
