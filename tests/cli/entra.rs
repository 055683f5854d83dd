//! Microsoft Entra ID sign-in against a real Azurite over HTTPS with
//! `--oauth basic` (it checks a bearer token's issuer, audience and
//! lifetime), a loopback token endpoint in the App Service managed
//! identity and Entra token endpoint styles, and a proxy standing in for
//! an account with shared-key access turned off (docs/blob.md, "How it is
//! tested").

use std::path::Path;

use crate::support::azurite::{self, Azurite};
use crate::support::standin::Standin;
use crate::support::tls::TestCa;
use crate::support::*;

/// The variables any of these tests may set, cleared first so that the
/// machine's own never leak in.
const AZURE_VARS: [&str; 14] = [
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "CUSTODY_AZURE_AUTH",
    "MSI_ENDPOINT",
];

const HEADER: &str = "custody-test-header";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "00000000-0000-0000-0000-0000000c0de5";

/// A workspace, a test CA, and Azurite over HTTPS with OAuth.
struct Site {
    ws: Ws,
    tls: TestCa,
    az: Azurite,
}

impl Site {
    fn new() -> Site {
        let ws = Ws::new();
        let tls = TestCa::new(&ws.root().join("tls"));
        let az = Azurite::start_oauth(&ws.root().join("azurite"), &tls);
        Site { ws, tls, az }
    }

    /// `custody --json --ca-file CA ARGS` with no Azure variable set.
    fn custody(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = self.ws.custody(&["--json", "--ca-file"]);
        c.arg(&self.tls.ca).args(args);
        for v in AZURE_VARS {
            c.env_remove(v);
        }
        c
    }

    fn transfer(&self, url: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut c = self.custody(&["transfer"]);
        c.arg(&self.ws.src)
            .arg(url)
            .arg("--signing-key")
            .arg(self.ws.key())
            .args(extra);
        c
    }

    fn verify(&self, url: &str) -> assert_cmd::Command {
        let mut c = self.custody(&["verify"]);
        c.arg(self.ws.manifest())
            .arg(url)
            .arg("--allowed-signers")
            .arg(self.ws.signers());
        c
    }

    /// A token endpoint over HTTPS, with `args`.
    fn identity(&self, name: &str, args: &[&str]) -> Standin {
        Standin::identity(&self.tls, args, &self.ws.root().join(format!("{name}.log")))
    }

    /// A proxy in front of this Azurite, over HTTPS, with `args`.
    fn proxy(&self, name: &str, args: &[&str]) -> Standin {
        Standin::proxy(
            &format!("https://127.0.0.1:{}", self.az.port),
            Some(&self.tls),
            args,
            &self.ws.root().join(format!("{name}.log")),
        )
    }
}

/// The App Service style managed identity variables for `id`.
fn managed(c: &mut assert_cmd::Command, id: &Standin) {
    c.env(
        "IDENTITY_ENDPOINT",
        format!("https://127.0.0.1:{}/msi/token", id.port),
    )
    .env("IDENTITY_HEADER", HEADER);
}

fn proxied(p: &Standin, path: &str) -> String {
    format!("https://127.0.0.1:{}/{}/{path}", p.port, azurite::ACCOUNT)
}

fn landed(ledger: &Path) -> i64 {
    if ledger.exists() {
        landed_rows(ledger)
    } else {
        0
    }
}

/// Nothing secret in what a user, a log shipper or an auditor sees: no
/// token (a JWT starts `eyJ`), no identity header, no client secret.
fn assert_no_secret(ws: &Ws, outputs: &[&std::process::Output], secrets: &[&str]) {
    let mut seen: Vec<(String, String)> = outputs
        .iter()
        .map(|o| ("output".into(), format!("{}{}", stdout(o), stderr(o))))
        .collect();
    let manifests = if ws.manifests.exists() {
        files_under(&ws.manifests)
    } else {
        Vec::new()
    };
    for f in manifests {
        let text =
            String::from_utf8_lossy(&std::fs::read(ws.manifests.join(&f)).unwrap()).into_owned();
        seen.push((f, text));
    }
    seen.push((
        "ledger".into(),
        String::from_utf8_lossy(&std::fs::read(&ws.ledger).unwrap_or_default()).into_owned(),
    ));
    for (what, text) in &seen {
        for s in secrets.iter().chain(&["eyJ"]) {
            assert!(!text.contains(s), "{s:?} in {what}");
        }
    }
}

#[test]
fn managed_identity_end_to_end_through_a_keyless_account_crossing_token_refreshes() {
    let site = Site::new();
    for i in 0..24u64 {
        site.ws.file(&format!("study/IM{i:02}"), &bytes(i, 100_000));
    }
    // Tokens that live five minutes and five seconds: the SDK refreshes a
    // token five minutes before it expires, so this one every few seconds.
    let id = site.identity("identity", &["--lifetime", "305"]);
    let keyless = site.proxy("keyless", &["--refuse-shared-key"]);
    let url = proxied(&keyless, "pacs/mi");
    // About 2.4 MB at 160 KiB/s: some fifteen seconds of upload.
    let mut c = site.transfer(&url, &["--bwlimit", "160K", "-vv"]);
    managed(&mut c, &id);
    c.env("CUSTODY_AZURE_AUTH", "managed-identity");
    let out = c.assert().code(0).get_output().clone();
    let s = json(&out);
    assert_eq!(s["files_copied"], 24, "{s}");
    assert_eq!(s["failed"], 0);
    assert_eq!(s["verify"]["files_verified"], 24);
    let issued = id
        .requests()
        .iter()
        .filter(|r| r["kind"] == "msi" && r["status"] == 200)
        .count();
    assert!(
        issued >= 3,
        "several refreshes crossed, {issued} tokens issued"
    );
    let reqs = keyless.requests();
    assert!(
        reqs.iter().all(|r| r["auth"] == "bearer"),
        "only bearer tokens"
    );
    assert!(
        reqs.iter()
            .all(|r| r["status"] != 401 && r["status"] != 403)
    );
    let tokens: std::collections::BTreeSet<_> =
        reqs.iter().map(|r| r["token"].as_str().unwrap()).collect();
    assert!(
        tokens.len() >= 3,
        "requests carried {} tokens",
        tokens.len()
    );
    // The verify signs in the same way, with the flag this time.
    let mut v = site.verify(&url);
    v.args(["--azure-auth", "managed-identity"]);
    managed(&mut v, &id);
    let vout = v.assert().code(0).get_output().clone();
    assert_eq!(json(&vout)["report"]["files_verified"], 24);
    assert_no_secret(&site.ws, &[&out, &vout], &[HEADER]);
}

#[test]
fn the_key_path_into_a_keyless_account_fails_with_the_documented_message() {
    let site = Site::new();
    site.ws.file("a.dcm", b"a");
    let keyless = site.proxy("keyless", &["--refuse-shared-key"]);
    let url = proxied(&keyless, "pacs");
    let mut c = site.transfer(&url, &[]);
    c.env("AZURE_STORAGE_KEY", azurite::KEY);
    let out = c.assert().code(2).get_output().clone();
    let err = stderr(&out);
    assert!(
        err.contains("shared-key access is disabled on this storage account")
            && err.contains("KeyBasedAuthenticationNotPermitted")
            && err.contains("--azure-auth managed-identity | workload-identity"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error:")).count(),
        1,
        "{err}"
    );
    assert_eq!(landed(&site.ws.ledger), 0);
    // A SAS is refused the same way, in the scan's existence check too.
    let mut c = site.custody(&["scan"]);
    c.arg(&site.ws.src).arg("--dest").arg(&url);
    c.env(
        "AZURE_STORAGE_SAS_TOKEN",
        "sv=2022-11-02&ss=b&srt=sco&sp=rl&sig=AAAA",
    );
    let err = stderr(&c.assert().code(2).get_output().clone());
    assert!(err.contains("KeyBasedAuthenticationNotPermitted"), "{err}");
    assert!(!err.contains("sig=AAAA"), "{err}");
}

#[test]
fn an_expired_token_a_wrong_audience_or_a_missing_header_stops_before_anything_moves() {
    let site = Site::new();
    site.ws.file("a.dcm", b"a");
    let url = site.az.https_url("pacs");
    let attempt = |id: &Standin, fix: &dyn Fn(&mut assert_cmd::Command)| {
        let mut c = site.transfer(&url, &["--azure-auth", "managed-identity"]);
        managed(&mut c, id);
        fix(&mut c);
        let out = c.assert().code(2).get_output().clone();
        assert_eq!(landed(&site.ws.ledger), 0, "nothing moved");
        stderr(&out)
    };
    let expired = site.identity("expired", &["--expired"]);
    let err = attempt(&expired, &|_| {});
    assert!(err.contains("the token it returned expired at"), "{err}");
    let other = site.identity("other", &["--audience", "https://management.azure.com/"]);
    let err = attempt(&other, &|_| {});
    assert!(
        err.contains("is for https://management.azure.com/, not Azure Storage"),
        "{err}"
    );
    let good = site.identity("good", &[]);
    let err = attempt(&good, &|c| {
        c.env_remove("IDENTITY_HEADER");
    });
    assert!(
        err.contains("IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not"),
        "{err}"
    );
    let err = attempt(&good, &|c| {
        c.env("IDENTITY_HEADER", "not-the-header");
    });
    assert!(err.contains("sign-in failed"), "{err}");
    assert!(!err.contains("not-the-header"), "{err}");
    // Nothing chosen and no key: the ways to sign in are listed.
    let out = site
        .transfer(&url, &[])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    assert!(
        err.contains("no credential: sign in with an account key, SAS or connection string")
            && err.contains(
                "--azure-auth managed-identity | workload-identity | service-principal | azure-cli"
            ),
        "{err}"
    );
    // A bearer token never travels in clear.
    let plain = format!(
        "http://127.0.0.1:{}/{}/pacs",
        site.az.port,
        azurite::ACCOUNT
    );
    let mut c = site.transfer(&plain, &["--azure-auth", "managed-identity"]);
    managed(&mut c, &good);
    let err = stderr(&c.assert().code(2).get_output().clone());
    assert!(err.contains("needs an https:// endpoint"), "{err}");
    // The good endpoint does work: the failures above were the tokens'.
    let mut c = site.transfer(&url, &["--azure-auth", "managed-identity"]);
    managed(&mut c, &good);
    c.assert().code(0);
}

#[test]
fn a_reader_cannot_transfer_and_is_told_the_role_it_lacks_but_can_verify() {
    let site = Site::new();
    for i in 0..3u64 {
        site.ws.file(&format!("s/IM{i}"), &bytes(i, 10_000));
    }
    let id = site.identity("identity", &[]);
    let mi = |c: &mut assert_cmd::Command| {
        c.args(["--azure-auth", "managed-identity"]);
        managed(c, &id);
    };
    // The identity has the write role: a first wave lands.
    let reader_only = site.ws.root().join("reader-only");
    let flag = reader_only.display().to_string();
    let rbac = site.proxy("rbac", &["--read-only-when", &flag, "--refuse-shared-key"]);
    let url = proxied(&rbac, "pacs/r");
    let mut c = site.transfer(&url, &[]);
    mi(&mut c);
    c.assert().code(0);
    let first = site.ws.manifest();
    // Only the reader role now: the first write is refused, and the run
    // ends there, saying which role it needs.
    std::fs::write(&reader_only, "").unwrap();
    for i in 3..6u64 {
        site.ws.file(&format!("s/IM{i}"), &bytes(i, 10_000));
    }
    let mut c = site.transfer(&url, &[]);
    mi(&mut c);
    let err = stderr(&c.assert().code(2).get_output().clone());
    assert!(
        err.contains("lacks a role here (HTTP 403 AuthorizationPermissionMismatch)")
            && err.contains("needs Storage Blob Data Contributor"),
        "{err}"
    );
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert_eq!(landed(&site.ws.ledger), 3, "the first wave stays recorded");
    // Not one refusal per file: the first ended the run.
    let refused = rbac
        .requests()
        .iter()
        .filter(|r| r["status"] == 403)
        .count();
    assert!(refused <= 2, "{refused} refused writes");
    site.custody(&["ledger", "verify"]).assert().code(0);
    // A reader verifies.
    let mut v = site.custody(&["verify"]);
    v.arg(&first)
        .arg(&url)
        .arg("--allowed-signers")
        .arg(site.ws.signers());
    mi(&mut v);
    assert_eq!(
        json(&v.assert().code(0).get_output().clone())["report"]["files_verified"],
        3
    );
    // With the role back, the same command resumes.
    std::fs::remove_file(&reader_only).unwrap();
    let mut c = site.transfer(&url, &[]);
    mi(&mut c);
    assert_eq!(
        json(&c.assert().code(0).get_output().clone())["files_copied"],
        3
    );
}

#[test]
fn a_service_principal_with_a_secret_or_a_certificate_and_a_workload_identity() {
    let site = Site::new();
    site.ws.file("a.dcm", &bytes(1, 5_000));
    let url = site.az.https_url("pacs/sp");
    let secret = "s3cr3t-value-never-printed";
    let id = site.identity("secret", &["--client-secret", secret]);
    let sp = |c: &mut assert_cmd::Command, id: &Standin| {
        c.env(
            "AZURE_AUTHORITY_HOST",
            format!("https://127.0.0.1:{}", id.port),
        )
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", CLIENT);
    };
    // Missing variables are named.
    let mut c = site.transfer(&url, &["--azure-auth", "service-principal"]);
    c.env("AZURE_TENANT_ID", TENANT);
    let err = stderr(&c.assert().code(2).get_output().clone());
    assert!(
        err.contains("needs AZURE_CLIENT_ID in the environment"),
        "{err}"
    );
    // A wrong secret: refused before anything moves, and not repeated.
    let mut c = site.transfer(&url, &["--azure-auth", "service-principal"]);
    sp(&mut c, &id);
    c.env("AZURE_CLIENT_SECRET", "wrong-secret-value");
    let out = c.assert().code(2).get_output().clone();
    assert!(stderr(&out).contains("sign-in failed"), "{}", stderr(&out));
    assert_no_secret(&site.ws, &[&out], &["wrong-secret-value"]);
    let mut c = site.transfer(&url, &["--azure-auth", "service-principal", "-vv"]);
    sp(&mut c, &id);
    c.env("AZURE_CLIENT_SECRET", secret);
    let out = c.assert().code(0).get_output().clone();
    assert_eq!(json(&out)["verify"]["files_verified"], 1);
    assert_no_secret(&site.ws, &[&out], &[secret]);
    // A certificate (PEM with its key, as `az ad sp create-for-rbac
    // --create-cert` writes): the endpoint checks the signed assertion.
    let (pem, crt) = site.tls.client(site.ws.root());
    let crt = crt.display().to_string();
    let cert_id = site.identity("cert", &["--client-cert", &crt]);
    site.ws.file("b.dcm", &bytes(2, 5_000));
    let mut c = site.transfer(&url, &["--azure-auth", "service-principal"]);
    sp(&mut c, &cert_id);
    c.env("AZURE_CLIENT_CERTIFICATE_PATH", &pem);
    let out = c.assert().code(0).get_output().clone();
    assert_eq!(json(&out)["files_copied"], 1);
    // A workload identity: the federated token file is the assertion.
    let federated = site.ws.root().join("federated-token");
    std::fs::write(&federated, "federated.kubernetes.token").unwrap();
    let fed = federated.display().to_string();
    let wi = site.identity("wi", &["--federated-token", &fed]);
    site.ws.file("c.dcm", &bytes(3, 5_000));
    let mut c = site.transfer(&url, &["--azure-auth", "workload-identity"]);
    sp(&mut c, &wi);
    c.env("AZURE_FEDERATED_TOKEN_FILE", &federated);
    let out = c.assert().code(0).get_output().clone();
    assert_eq!(json(&out)["files_copied"], 1);
    assert!(
        wi.requests()
            .iter()
            .any(|r| r["kind"] == "assertion" && r["status"] == 200)
    );
}

#[test]
fn the_azure_cli_way_asks_az_for_a_storage_token() {
    let site = Site::new();
    site.ws.file("a.dcm", &bytes(1, 5_000));
    // `az` on PATH, answering as a signed-in Azure CLI does.
    let bin = site.ws.root().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/azure_standin.py");
    std::fs::write(
        bin.join("az"),
        format!("#!/bin/sh\nexec python3 '{}' az \"$@\"\n", script.display()),
    )
    .unwrap();
    chmod(&bin.join("az"), 0o755);
    let log = site.ws.root().join("az.log");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let url = site.az.https_url("pacs/cli");
    let mut c = site.transfer(&url, &["--azure-auth", "azure-cli"]);
    c.env("PATH", &path).env("AZ_STANDIN_LOG", &log);
    let out = c.assert().code(0).get_output().clone();
    assert_eq!(json(&out)["verify"]["files_verified"], 1);
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(
        asked.contains("\"scope\": \"https://storage.azure.com/.default\""),
        "{asked}"
    );
    // No `az` at all: exit 2, before anything moves.
    site.ws.file("b.dcm", b"b");
    let mut c = site.transfer(&url, &["--azure-auth", "azure-cli"]);
    c.env("PATH", "/usr/bin:/bin");
    let err = stderr(&c.assert().code(2).get_output().clone());
    assert!(err.contains("sign-in failed"), "{err}");
}
