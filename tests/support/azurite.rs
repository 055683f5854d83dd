//! A real Azurite blob server on loopback for one test, and a small client
//! to tamper with what it holds "through another client".

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use azure_core::http::{RequestContent, Url};
use azure_storage_blob::BlobContainerClient;
use azure_storage_blob::models::BlockListType;

/// Azurite's well-known development account and key (public, documented).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `custody ARGS` with the account key in the environment.
pub fn with_key(mut c: assert_cmd::Command) -> assert_cmd::Command {
    c.env_remove("AZURE_STORAGE_SAS_TOKEN")
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env("AZURE_STORAGE_KEY", KEY);
    c
}

pub struct Azurite {
    child: Child,
    pub port: u16,
    pub data: PathBuf,
}

fn bin() -> PathBuf {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "{} missing: run ./scripts/test, which installs Azurite",
        p.display()
    );
    p
}

impl Azurite {
    /// Starts Azurite on a free port with data under `data`.
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, 0)
    }

    /// Starts Azurite on `port` (0: any free port).
    pub fn start_on(data: &Path, port: u16) -> Self {
        Self::start_with(data, port, &[])
    }

    /// Starts Azurite serving HTTPS with this certificate and key.
    pub fn start_tls(data: &Path, cert: &Path, key: &Path) -> Self {
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        Self::start_with(data, 0, &["--cert", &c, "--key", &k])
    }

    /// Starts Azurite serving HTTPS with OAuth (`--oauth basic`: bearer
    /// tokens are checked for issuer, audience and lifetime, not their
    /// signature), as well as keys and SAS.
    pub fn start_oauth(data: &Path, tls: &super::tls::TestCa) -> Self {
        let (c, k) = (
            tls.cert.display().to_string(),
            tls.key.display().to_string(),
        );
        Self::start_with(data, 0, &["--cert", &c, "--key", &k, "--oauth", "basic"])
    }

    /// `https://127.0.0.1:<port>/devstoreaccount1/<path>`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{ACCOUNT}/{path}", self.port)
    }

    fn start_with(data: &Path, port: u16, extra: &[&str]) -> Self {
        std::fs::create_dir_all(data).unwrap();
        // The bin is the node script itself (no npx wrapper), so killing
        // this child stops the server.
        let mut child = Command::new(bin())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data)
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let rest = line
                    .split("listens on http://127.0.0.1:")
                    .nth(1)
                    .or_else(|| line.split("listens on https://127.0.0.1:").nth(1));
                if let Some(rest) = rest {
                    let _ = tx.send(rest.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .expect("azurite did not report its port");
        Azurite {
            child,
            port,
            data: data.to_path_buf(),
        }
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}/{path}", self.port)
    }

    /// Stops the server as a service manager would (SIGTERM, so it saves
    /// its state; SIGKILL after 10 s). Data stays for a restart.
    pub fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client for `container`, authorised with a SAS that custody's own
    /// signer makes (so this also checks the signer against Azurite).
    pub fn container(&self, container: &str) -> BlobContainerClient {
        let key = base64_decode(KEY);
        let now = jiff::Timestamp::now();
        let sas = custody::dest::blob::auth::account_sas(
            ACCOUNT,
            &key,
            now - jiff::SignedDuration::from_secs(300),
            now + jiff::SignedDuration::from_secs(3600),
            false,
            custody::dest::blob::auth::SasVersion::V2022_11_02,
        );
        let mut url = Url::parse(&self.url(container)).unwrap();
        url.set_query(Some(&sas));
        BlobContainerClient::new(url, None, None).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Creates a container through the SDK.
    pub fn create_container(&self, container: &str) {
        Self::rt()
            .block_on(self.container(container).create(None))
            .unwrap();
    }

    /// Replaces a blob's content through the SDK (another client).
    pub fn put(&self, container: &str, name: &str, data: &[u8]) {
        let c = self.container(container);
        Self::rt()
            .block_on(
                c.blob_client(name)
                    .upload(RequestContent::from(data.to_vec()), None),
            )
            .unwrap();
    }

    /// Deletes a blob through the SDK.
    pub fn delete(&self, container: &str, name: &str) {
        let c = self.container(container);
        Self::rt()
            .block_on(c.blob_client(name).delete(None))
            .unwrap();
    }

    /// A blob's metadata.
    pub fn metadata(
        &self,
        container: &str,
        name: &str,
    ) -> std::collections::HashMap<String, String> {
        use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
        let c = self.container(container);
        let props = Self::rt()
            .block_on(c.blob_client(name).get_properties(None))
            .unwrap();
        props.metadata().unwrap()
    }

    /// The names of the committed blobs in `container`, sorted.
    pub fn names(&self, container: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let c = self.container(container);
        let mut pager = c.list_blobs(None).unwrap();
        let mut names = Vec::new();
        // One runtime for every page: the pager's connection lives on it.
        let rt = Self::rt();
        while let Some(item) = rt.block_on(pager.try_next()).unwrap() {
            names.push(item.name.unwrap_or_default());
        }
        names.sort();
        names
    }

    /// Number of uncommitted blocks of a blob (0 when none or absent).
    pub fn uncommitted_blocks(&self, container: &str, name: &str) -> usize {
        let c = self.container(container);
        let client = c.blob_client(name).block_blob_client();
        Self::rt()
            .block_on(client.get_block_list(BlockListType::Uncommitted, None))
            .ok()
            .and_then(|r| r.into_model().ok())
            .and_then(|m| m.uncommitted_blocks)
            .map_or(0, |b| b.len())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
