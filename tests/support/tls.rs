//! A throwaway certificate authority and a server certificate for
//! 127.0.0.1, made with the openssl command: a leaf with `CA:FALSE`,
//! `serverAuth` and `IP:127.0.0.1`, as strict TLS clients want, trusted
//! through `--ca-file`.

use std::path::{Path, PathBuf};

/// The CA certificate, and the server's certificate and key (PEM).
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// Makes them under `dir`.
    pub fn new(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| openssl(dir, args);
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=custody test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// A client certificate with an RSA key (a service principal's), as
    /// PEM with the key in the same file, and the certificate alone.
    pub fn client(&self, dir: &Path) -> (PathBuf, PathBuf) {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "sp.key",
                "-out",
                "sp.crt",
                "-days",
                "2",
                "-subj",
                "/CN=custody-sp",
            ],
        );
        let mut pem = std::fs::read(dir.join("sp.crt")).unwrap();
        pem.extend(std::fs::read(dir.join("sp.key")).unwrap());
        std::fs::write(dir.join("sp.pem"), pem).unwrap();
        (dir.join("sp.pem"), dir.join("sp.crt"))
    }
}

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
