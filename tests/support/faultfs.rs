//! A FUSE file system over a real directory that returns EIO on chosen
//! operations (`tests/support/faultfs.py`, fusepy over the kernel's FUSE),
//! for the failing-disk cases of tests/cli/eio.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mounted fault file system; unmounted when dropped.
pub struct FaultFs {
    /// Where it is mounted (what custody is pointed at).
    pub mountpoint: PathBuf,
    rules: PathBuf,
    child: Child,
}

fn mounted(at: &Path) -> bool {
    let at = at.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(at.as_str()))
}

impl FaultFs {
    /// Mounts the real directory `real` at `mountpoint` (both made if
    /// missing), with no faults yet.
    pub fn mount(real: &Path, mountpoint: &Path) -> FaultFs {
        std::fs::create_dir_all(real).unwrap();
        std::fs::create_dir_all(mountpoint).unwrap();
        let rules = real.with_extension("faults.json");
        std::fs::write(&rules, "[]").unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/faultfs.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(real)
            .arg(mountpoint)
            .arg(&rules)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (scripts/test installs fusepy)");
        let fs = FaultFs {
            mountpoint: mountpoint.to_path_buf(),
            rules,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !mounted(mountpoint) {
            assert!(
                Instant::now() < deadline,
                "faultfs did not mount at {mountpoint:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fs
    }

    /// Sets the faults (a JSON list; see faultfs.py), replacing any.
    pub fn fail(&self, rules: serde_json::Value) {
        let tmp = self.rules.with_extension("new");
        std::fs::write(&tmp, rules.to_string()).unwrap();
        std::fs::rename(&tmp, &self.rules).unwrap();
    }

    /// Unmounts, and returns what the file system counted (see
    /// faultfs.py): `peak_delayed`, `reads` per path.
    pub fn stats(mut self) -> serde_json::Value {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(&self.mountpoint)
            .status();
        // It writes its counts as it unmounts, then exits.
        let _ = self.child.wait();
        let mut stats = self.rules.as_os_str().to_owned();
        stats.push(".stats");
        let text = std::fs::read_to_string(&stats).expect("faultfs wrote no stats at unmount");
        serde_json::from_str(&text).unwrap()
    }

    /// No faults: the disk works again.
    pub fn heal(&self) {
        self.fail(serde_json::json!([]));
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(&self.mountpoint)
            .status();
        if mounted(&self.mountpoint) {
            let _ = Command::new("fusermount")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
