//! node_exporter (Debian's prometheus-node-exporter, which scripts/test
//! installs): the collector a hospital already runs, reading custody's
//! metrics files from its textfile directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{stderr, stdout};

/// Starts node_exporter with only its textfile collector over `textfile`
/// (as the user `uid`, when given) on a free loopback port, scrapes it
/// once and stops it; the page it served.
pub fn scrape(textfile: &Path, uid: Option<u32>) -> String {
    let port = super::orthanc::free_port();
    let mut c = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "prometheus-node-exporter",
            ]);
            c
        }
        None => Command::new("prometheus-node-exporter"),
    };
    let mut exporter = c
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--collector.disable-defaults", "--collector.textfile"])
        .arg(format!(
            "--collector.textfile.directory={}",
            textfile.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-node-exporter (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let got = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
            ])
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .unwrap();
        if got.status.success() {
            break stdout(&got);
        }
        if Instant::now() >= deadline {
            let _ = exporter.kill();
            panic!("node_exporter did not answer: {}", stderr(&got));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = exporter.kill();
    let _ = exporter.wait();
    page
}
