//! The Debian package (`scripts/package`, docs/operations.md, "Install from
//! the package"), built from the binary these tests run (no second
//! compile): what `dpkg-deb` lists and with which modes, an install into a
//! temporary root with `dpkg --root` (the system user and the state
//! directories made by the package's own postinst), the packaged binary
//! and examples working, the units accepted by `systemd-analyze verify`,
//! and a purge that leaves every file the operator made.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{stderr, stdout};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Builds the package from the binary under test; its path.
fn build(out: &Path) -> PathBuf {
    let bin = assert_cmd::cargo::cargo_bin("custody");
    // target/<dir>/custody: Cargo's folder names the profile.
    let profile = match bin
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str())
    {
        Some("debug") => "dev".to_owned(),
        Some(dir) => dir.to_owned(),
        None => panic!("{}: not in a profile's folder", bin.display()),
    };
    ok(
        Command::new(Path::new(REPO).join("scripts/package"))
            .args(["--profile", &profile, "--no-build", "--out"])
            .arg(out)
            .output()
            .unwrap(),
        "scripts/package",
    );
    let deb = out.join(format!("custody_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")));
    assert!(deb.is_file(), "{} was not written", deb.display());
    deb
}

/// `dpkg-deb -c`: each file's path (without the leading `.`) → its mode
/// and owner as listed.
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    let out = ok(
        Command::new("dpkg-deb")
            .arg("-c")
            .arg(deb)
            .output()
            .unwrap(),
        "dpkg-deb -c",
    );
    stdout(&out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5]
                .trim_start_matches('.')
                .trim_end_matches('/')
                .to_owned();
            (path, (f[0].to_owned(), f[1].to_owned()))
        })
        .filter(|(p, _)| !p.is_empty())
        .collect()
}

/// `dpkg --root ROOT` with the maintainer scripts run outside a chroot
/// (they honour DPKG_ROOT); under fakeroot when not root.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let mut c = match rustix::process::geteuid().is_root() {
        true => Command::new("dpkg"),
        false => {
            let mut c = Command::new("fakeroot");
            c.arg("dpkg");
            c
        }
    };
    c.arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// Mode (permission bits), owner and group names of `path` in `root`.
fn stat(root: &Path, path: &str) -> (u32, String, String) {
    let m = std::fs::metadata(root.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |file: &str, id: u32| -> String {
        let db = std::fs::read_to_string(root.join("etc").join(file)).unwrap();
        db.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f[2] == id.to_string())
            .map_or(id.to_string(), |f| f[0].to_owned())
    };
    (
        m.permissions().mode() & 0o7777,
        name("passwd", m.uid()),
        name("group", m.gid()),
    )
}

/// A root that looks enough like an installed Debian system for dpkg:
/// its database, and the host's users and groups.
fn empty_root(root: &Path) {
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    for f in ["passwd", "group"] {
        std::fs::copy(Path::new("/etc").join(f), root.join("etc").join(f)).unwrap();
    }
}

/// `systemd-analyze verify --root ROOT` of the instance units of job
/// `nightly`: its exit status and complaints.
fn analyze(root: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(["custody-job@nightly.service", "custody-job@nightly.timer"])
        .current_dir("/")
        .output()
        .expect("systemd-analyze (scripts/test installs systemd)")
}

#[test]
fn the_package_lists_installs_runs_verifies_and_purges_leaving_the_operators_files() {
    let work = tempfile::tempdir().unwrap();
    let deb = build(&work.path().join("out"));

    // What it holds, with the modes it installs.
    let listed = contents(&deb);
    let mut expected: BTreeMap<String, &str> = [
        ("/usr/bin/custody", "-rwxr-xr-x"),
        ("/usr/share/man/man1/custody.1.gz", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/custody",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_custody", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/custody.fish",
            "-rw-r--r--",
        ),
        ("/usr/lib/systemd/system/custody-job@.service", "-rw-r--r--"),
        ("/usr/lib/systemd/system/custody-job@.timer", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/custody.conf", "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/custody.conf", "-rw-r--r--"),
        ("/usr/share/custody/config.toml", "-rw-r--r--"),
        ("/usr/share/custody/jobs/pacs-nightly.toml", "-rw-r--r--"),
        (
            "/usr/share/custody/prometheus/custody.rules.yml",
            "-rw-r--r--",
        ),
        (
            "/usr/share/custody/prometheus/custody.rules.test.yml",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/custody/README.md", "-rw-r--r--"),
        ("/usr/share/doc/custody/copyright", "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect();
    for doc in std::fs::read_dir(Path::new(REPO).join("docs")).unwrap() {
        let name = doc.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            expected.insert(format!("/usr/share/doc/custody/{name}"), "-rw-r--r--");
        }
    }
    let files: BTreeMap<&String, &str> = listed
        .iter()
        .filter(|(_, (mode, _))| !mode.starts_with('d'))
        .map(|(p, (mode, _))| (p, mode.as_str()))
        .collect();
    assert_eq!(
        files,
        expected
            .iter()
            .map(|(p, m)| (p, *m))
            .collect::<BTreeMap<_, _>>(),
        "the package's files and modes"
    );
    for (path, (mode, owner)) in &listed {
        assert_eq!(owner, "0/0", "{path} is root's");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{path}");
        }
    }
    assert!(
        !listed
            .keys()
            .any(|p| p.starts_with("/etc") || p.starts_with("/var")),
        "the package owns nothing the operator keeps (state is made by postinst)"
    );
    let info = stdout(&ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb -I",
    ));
    for field in [
        "Package: custody",
        &format!("Version: {}-1", env!("CARGO_PKG_VERSION")),
        "Architecture: amd64",
        "libssl",
        "postinst",
        "prerm",
        "postrm",
    ] {
        assert!(info.contains(field), "{field} in:\n{info}");
    }

    // Installed into an empty root: the user, the directories, the example
    // configuration.
    let root = work.path().join("root");
    empty_root(&root);
    ok(dpkg(&root, &["-i", deb.to_str().unwrap()]), "dpkg -i");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("custody:"))
        .expect("the custody user");
    assert!(
        user.ends_with(":/var/lib/custody:/usr/sbin/nologin"),
        "{user}"
    );
    for (dir, mode, owner, group) in [
        ("/etc/custody", 0o750, "root", "custody"),
        ("/etc/custody/jobs", 0o750, "root", "custody"),
        ("/etc/custody/keys", 0o700, "custody", "custody"),
        ("/var/lib/custody", 0o750, "custody", "custody"),
        ("/var/lib/custody/manifests", 0o750, "custody", "custody"),
        ("/var/log/custody", 0o750, "custody", "custody"),
    ] {
        assert_eq!(
            stat(&root, dir),
            (mode, owner.to_owned(), group.to_owned()),
            "{dir}"
        );
    }
    let config = root.join("etc/custody/config.toml");
    assert_eq!(stat(&root, "/etc/custody/config.toml").0, 0o644);
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(Path::new(REPO).join("contrib/deb/config.toml")).unwrap()
    );

    // The packaged binary runs, reads the packaged configuration and the
    // example job file.
    let custody = root.join("usr/bin/custody");
    let version = ok(
        Command::new(&custody).arg("--version").output().unwrap(),
        "custody --version",
    );
    assert_eq!(
        stdout(&version).trim(),
        format!("custody {}", env!("CARGO_PKG_VERSION"))
    );
    let checked = ok(
        Command::new(&custody)
            .env("CUSTODY_CONFIG", &config)
            .args(["job", "check"])
            .arg(root.join("usr/share/custody/jobs/pacs-nightly.toml"))
            .output()
            .unwrap(),
        "custody job check (the example)",
    );
    assert!(
        stdout(&checked).contains("--job pacs-nightly")
            && stdout(&checked).contains("/mnt/databox/contoso_BlockBlob/pacs-archive"),
        "{}",
        stdout(&checked)
    );

    // The units, as systemd reads them (without a booted systemd: its
    // targets copied into the root).
    let units = root.join("usr/lib/systemd/system");
    let host = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").exists())
        .expect("systemd's units (scripts/test installs systemd)");
    for e in std::fs::read_dir(host).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // (A unit that cannot be read, such as a dangling alias, is left out.)
        let wanted =
            (name.ends_with(".target") || name.ends_with(".slice")) && !units.join(&name).exists();
        if let Some(unit) = wanted.then(|| std::fs::read(&p).ok()).flatten() {
            std::fs::write(units.join(&name), unit).unwrap();
        }
    }
    let verified = analyze(&root);
    assert!(
        verified.status.success() && verified.stderr.is_empty() && verified.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&verified),
        stderr(&verified)
    );
    let service = std::fs::read_to_string(units.join("custody-job@.service")).unwrap();
    let directives: Vec<&str> = service
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for line in [
        "User=custody",
        "ExecStart=/usr/bin/custody --progress-interval 5m job run /etc/custody/jobs/%i.toml",
        "SuccessExitStatus=4",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "Environment=CUSTODY_METRICS_FILE=/var/lib/prometheus/node-exporter/custody-%i.prom",
    ] {
        assert!(directives.contains(&line), "{line} in the service");
    }
    let writable: Vec<&str> = directives
        .iter()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        writable,
        [
            "/var/lib/custody",
            "/var/log/custody",
            "-/var/lib/prometheus/node-exporter"
        ],
        "the only writable paths: the ledger and manifests, the logs, the metrics"
    );
    // The check can fail: a misspelt directive is a complaint.
    std::fs::write(
        units.join("custody-job@.service"),
        service.replace("NoNewPrivileges=", "NoNewPrivilege="),
    )
    .unwrap();
    let bad = analyze(&root);
    assert!(
        stderr(&bad).contains("Unknown key") && stderr(&bad).contains("NoNewPrivilege"),
        "{}",
        stderr(&bad)
    );
    std::fs::write(units.join("custody-job@.service"), &service).unwrap();

    // What the operator made: a job, a key, a ledger, an edited
    // configuration, a credentials file.
    let made: Vec<(&str, &[u8])> = vec![
        ("etc/custody/jobs/nightly.toml", b"source = \"/srv/pacs\"\n"),
        ("etc/custody/keys/custody_ed25519", b"a private key"),
        ("etc/custody/env", b"AZURE_STORAGE_SAS_TOKEN=secret\n"),
        ("var/lib/custody/custody.db", b"the custody record"),
        (
            "var/lib/custody/manifests/20261207T010000Z-00000000.json",
            b"{}",
        ),
        ("var/log/custody/nightly.log", b"a log line\n"),
    ];
    for (path, bytes) in &made {
        std::fs::write(root.join(path), bytes).unwrap();
    }
    let edited = format!("{}jobs = 4\n", std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, &edited).unwrap();
    ok(dpkg(&root, &["--purge", "custody"]), "dpkg --purge");
    for gone in [
        "usr/bin/custody",
        "usr/lib/systemd/system/custody-job@.service",
        "usr/share/custody/config.toml",
    ] {
        assert!(
            !root.join(gone).exists(),
            "{gone} is the package's: removed"
        );
    }
    for (path, bytes) in &made {
        assert_eq!(
            std::fs::read(root.join(path)).unwrap(),
            *bytes,
            "{path} survives the purge"
        );
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(
        std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .contains("\ncustody:"),
        "the user stays (it owns the record)"
    );

    // Installed again: the operator's configuration is kept as it is.
    ok(dpkg(&root, &["-i", deb.to_str().unwrap()]), "dpkg -i again");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
}

/// Runs `script` (sh) as root in a mount namespace of its own where the
/// installed root's `/etc`, `/var/lib` and `/var/log` are the system's, so
/// the package's absolute paths (`/etc/custody/config.toml`,
/// `/var/lib/custody/custody.db`, the textfile directory) are the root's
/// and nothing of the host is touched. `CUSTODY` is the packaged binary.
fn in_root(root: &Path, script: &str) -> Output {
    let mounts = ["etc", "var/lib", "var/log"]
        .iter()
        .map(|d| format!("mount --bind {}/{d} /{d}", root.display()))
        .collect::<Vec<_>>()
        .join(" && ");
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!("{mounts}\n{script}"))
        .env("CUSTODY", root.join("usr/bin/custody"))
        .output()
        .unwrap()
}

/// The unit's `KEY=` lines for instance `name` (`%i` replaced).
fn unit_lines(unit: &str, key: &str, name: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.replace("%i", name))
        .collect()
}

/// docs/operations.md, "Install from the package" and "Monitoring", as a
/// newcomer follows them on a host with only the .deb: install, the key
/// as the service user, a job file, the metrics folder opened with
/// dpkg-statoverride, then the service's command line, environment, user
/// and working folder as custody-job@NAME.service gives them (all a booted
/// systemd would add is the sandbox and the timer, which `systemd-analyze
/// verify` checks above); node_exporter, as another user, serves the
/// run's metrics from its textfile folder.
#[test]
fn a_newcomer_installs_the_package_and_a_nightly_job_lands_with_its_metrics() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mount namespaces and a service user need root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = build(&work.path().join("out"));
    let root = work.path().join("root");
    empty_root(&root);
    // The host's /etc under the root's own files, as on a real host, and
    // node_exporter's textfile folder, as its package makes it.
    ok(
        Command::new("cp")
            .args(["-an", "/etc/."])
            .arg(root.join("etc"))
            .output()
            .unwrap(),
        "cp /etc",
    );
    std::fs::create_dir_all(root.join("var/lib/prometheus/node-exporter")).unwrap();
    std::fs::create_dir_all(root.join("var/log")).unwrap();
    ok(dpkg(&root, &["-i", deb.to_str().unwrap()]), "dpkg -i");
    // The archive, and a destination the job may write (a share, opened
    // for the job as the unit's drop-in would).
    let src = work.path().join("pacs");
    for (i, rel) in ["P1/S1/IM1.dcm", "P1/S1/IM2.dcm", "P2/S1/IM1.dcm"]
        .iter()
        .enumerate()
    {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, crate::support::bytes(i as u64, 20_000)).unwrap();
    }
    let dest = work.path().join("databox/contoso_BlockBlob/pacs");
    std::fs::create_dir_all(&dest).unwrap();
    let job = format!(
        "source = {:?}\ndestination = {:?}\nwindow = \"Mon-Sun 00:00-24:00\"\nflags = [\"--grace\", \"1m\"]\n",
        src.display().to_string(),
        dest.display().to_string()
    );
    std::fs::write(root.join("etc/custody/jobs/nightly.toml"), job).unwrap();

    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/custody-job@.service")).unwrap();
    let env = unit_lines(&unit, "Environment", "nightly").join(" ");
    let exec = unit_lines(&unit, "ExecStart", "nightly").join(" ");
    let args = exec.strip_prefix("/usr/bin/custody ").expect(&exec);
    let (user, dir) = (
        unit_lines(&unit, "User", "nightly").join(""),
        unit_lines(&unit, "WorkingDirectory", "nightly").join(""),
    );
    let steps = format!(
        r#"
        dpkg-statoverride --update --add root custody 2775 /var/lib/prometheus/node-exporter
        runuser -u custody -- "$CUSTODY" keygen --out /etc/custody/keys --identity ops@hospital.example >/dev/null
        chown -R custody:custody {dest}
        "$CUSTODY" job check /etc/custody/jobs/nightly.toml > {out}/check.txt
        run() {{ cd {dir} && env -i PATH=/usr/bin:/bin {env} setpriv --reuid={user} --regid={user} --init-groups -- "$CUSTODY" --json {args}; }}
        run > {out}/first.json
        echo new > {src}/P2/S1/IM2.dcm
        run > {out}/second.json
        "#,
        dest = work.path().join("databox").display(),
        src = src.display(),
        out = work.path().display(),
    );
    let out = in_root(&root, &steps);
    assert!(
        out.status.success(),
        "the documented steps: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let check = std::fs::read_to_string(work.path().join("check.txt")).unwrap();
    assert!(
        check.starts_with("job nightly: /etc/custody/jobs/nightly.toml"),
        "{check}"
    );
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(work.path().join(name)).unwrap()).unwrap()
    };
    assert_eq!(read("first.json")["files_copied"], 3);
    let second = read("second.json");
    assert_eq!(second["status"], "complete", "{second}");
    assert_eq!(second["job"]["name"], "nightly");
    assert_eq!(second["job"]["run"], 2);
    assert_eq!(second["files_copied"], 1);

    // What the service user made, with the modes the docs give.
    for (path, mode, owner) in [
        ("/etc/custody/keys/custody_ed25519", 0o600, "custody"),
        ("/var/lib/custody/custody.db", 0o640, "custody"),
        (
            "/var/lib/prometheus/node-exporter/custody-nightly.prom",
            0o644,
            "custody",
        ),
    ] {
        let (m, o, _) = stat(&root, path);
        assert_eq!((m, o.as_str()), (mode, owner), "{path}");
    }
    let manifests = std::fs::read_dir(root.join("var/lib/custody/manifests"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(manifests, 2, "a manifest a night");

    // node_exporter, as nobody, serves them.
    let textfile = root.join("var/lib/prometheus/node-exporter");
    let page = crate::support::node_exporter::scrape(&textfile, Some(65534));
    assert!(page.contains("node_textfile_scrape_error 0"), "{page}");
    let copied = page
        .lines()
        .find(|l| l.starts_with("custody_files_copied_total{"))
        .unwrap_or_else(|| panic!("no custody metrics served:\n{page}"));
    assert!(
        copied.contains("command=\"job\"")
            && copied.contains("custody_job=\"nightly\"")
            && copied.contains("destination_kind=\"databox_share\"")
            && copied.ends_with(" 1"),
        "{copied}"
    );
    assert!(
        page.lines().any(|l| l.starts_with("custody_run_status{")
            && l.contains("status=\"ok\"")
            && l.ends_with(" 1")),
        "{page}"
    );
}
