//! Ed25519 signing keys in OpenSSH format, trust anchors, and SSHSIG.
//!
//! Private keys are OpenSSH files that must not be readable by group or
//! others. Signatures are SSHSIG (the format of `ssh-keygen -Y sign`), so an
//! auditor checks them with stock OpenSSH. Verification always uses a key the
//! user trusts (a public key file or an `allowed_signers` file), never the key
//! embedded in the signature.
//!
//! This file is the key files (generating, loading, mode checks); `sshsig`
//! signs, and `trust` reads public keys and `allowed_signers` and verifies.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

/// SSHSIG namespace of manifest signatures.
pub const MANIFEST_NAMESPACE: &str = "custody-manifest";
/// SSHSIG namespace of ledger chain-head signatures.
pub const LEDGER_NAMESPACE: &str = "custody-ledger";
/// SSHSIG namespace of checkpoint signatures: a manifest's or the
/// ledger's Merkle tree head (`docs/proofs.md`).
pub const CHECKPOINT_NAMESPACE: &str = "custody-checkpoint";
/// SSHSIG namespace of a witness's cosignature of a checkpoint.
pub const WITNESS_NAMESPACE: &str = "custody-witness";
/// File names `keygen` writes.
pub const PRIVATE_KEY_FILE: &str = "custody_ed25519";
/// Public key file name written by `keygen`.
pub const PUBLIC_KEY_FILE: &str = "custody_ed25519.pub";
/// Allowed-signers file name written by `keygen`.
pub const ALLOWED_SIGNERS_FILE: &str = "allowed_signers";
/// Environment variable holding the passphrase of an encrypted private key.
pub const PASSPHRASE_ENV: &str = "CUSTODY_KEY_PASSPHRASE";

/// The public half of the demo key shipped in `keys-example/`. Anything
/// signed with it proves nothing: its private half is public.
mod sshsig;
mod trust;

pub use trust::{AllowedSignerEntry, Signer, Trust};

const EXAMPLE_PUBLIC_KEY: &str = include_str!("../keys-example/custody_ed25519.pub");

/// Errors from loading, generating or using keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A private key file is readable by group or others.
    #[error(
        "{path}: private key is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file is not a key of the expected kind.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is encrypted and no passphrase was given, or it was wrong.
    #[error("{path}: {reason}")]
    Passphrase {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `keygen` would overwrite an existing file.
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// An operator identity that an `allowed_signers` line cannot carry.
    #[error("identity {identity:?}: {reason}")]
    Identity {
        /// The identity given.
        identity: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A signature could not be made.
    #[error("signing failed: {0}")]
    Sign(ssh_key::Error),
    /// A signature is malformed or does not verify under any trusted key.
    #[error("{0}")]
    BadSignature(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The fingerprint of a public key as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Whether `key` is the published demo key from `keys-example/`.
pub fn is_example_key(key: &PublicKey) -> bool {
    PublicKey::from_openssh(EXAMPLE_PUBLIC_KEY.trim())
        .is_ok_and(|example| example.key_data() == key.key_data())
}

/// The paths `keygen` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedKey {
    /// The private key (mode 0600).
    pub private_key: PathBuf,
    /// The public key.
    pub public_key: PathBuf,
    /// The allowed-signers line for `ssh-keygen -Y verify`.
    pub allowed_signers: PathBuf,
    /// The identity (principal) recorded in the key and allowed-signers file.
    pub identity: String,
    /// The key's fingerprint.
    pub fingerprint: String,
}

/// Checks that `identity` can stand as the principal of an
/// `allowed_signers` line, as custody and `ssh-keygen` read it: one token
/// (no white space, quote or control character), one principal (no
/// comma), and no pattern (`*`, `?`, `!`), which would trust other names.
///
/// # Errors
/// [`KeyError::Identity`] saying what is wrong.
pub fn check_identity(identity: &str) -> Result<(), KeyError> {
    let reason = if identity.is_empty() {
        Some("is empty")
    } else if identity
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        Some("has white space or a control character")
    } else if identity.contains('"') {
        Some("has a double quote")
    } else if identity.contains(',') {
        Some("has a comma (allowed_signers reads it as two principals)")
    } else if identity.contains(['*', '?', '!']) {
        Some("has *, ? or ! (allowed_signers reads it as a pattern)")
    } else if identity.starts_with('#') {
        Some("starts with # (allowed_signers reads it as a comment)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::Identity {
            identity: identity.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Generates an Ed25519 key pair in `dir` (created if missing): the private
/// key (mode 0600), the public key, and an `allowed_signers` file.
///
/// # Errors
/// Refuses if any of the three files exists; returns I/O errors with paths.
pub fn generate(dir: &Path, identity: &str) -> Result<GeneratedKey, KeyError> {
    check_identity(identity)?;
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    let signers_path = dir.join(ALLOWED_SIGNERS_FILE);
    for p in [&private_path, &public_path, &signers_path] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut key =
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).map_err(KeyError::Sign)?;
    key.set_comment(identity);
    let private_pem = key.to_openssh(LineEnding::LF).map_err(KeyError::Sign)?;
    let public = key.public_key();
    let public_line = public.to_openssh().map_err(KeyError::Sign)?;
    let key_only = PublicKey::new(public.key_data().clone(), "")
        .to_openssh()
        .map_err(KeyError::Sign)?;

    write_new(&private_path, private_pem.as_bytes(), 0o600)?;
    write_new(&public_path, format!("{public_line}\n").as_bytes(), 0o644)?;
    let signers = format!(
        "{identity} namespaces=\"{MANIFEST_NAMESPACE},{LEDGER_NAMESPACE},{CHECKPOINT_NAMESPACE}\" {key_only}\n"
    );
    write_new(&signers_path, signers.as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private_key: private_path,
        public_key: public_path,
        allowed_signers: signers_path,
        identity: identity.to_owned(),
        fingerprint: fingerprint(public),
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    // The umask may have cleared bits we asked for but never adds any; set
    // the mode explicitly so 0600 is exact.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// An operator's private signing key, loaded and checked.
pub struct SigningKey {
    key: PrivateKey,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an OpenSSH Ed25519 private key. The file must not be accessible
    /// by group or others. An encrypted key is decrypted with the passphrase
    /// in `CUSTODY_KEY_PASSPHRASE`.
    ///
    /// # Errors
    /// Names the path and the cause: missing, unreadable, insecure mode,
    /// not an Ed25519 OpenSSH private key, missing or wrong passphrase.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let mut key = PrivateKey::from_openssh(&text).map_err(|e| KeyError::Malformed {
            path: path.to_path_buf(),
            reason: format!("not an OpenSSH private key ({e})"),
        })?;
        if key.is_encrypted() {
            let pass = std::env::var(PASSPHRASE_ENV).map_err(|_| KeyError::Passphrase {
                path: path.to_path_buf(),
                reason: format!("key is encrypted; set {PASSPHRASE_ENV}"),
            })?;
            key = key
                .decrypt(pass.as_bytes())
                .map_err(|_| KeyError::Passphrase {
                    path: path.to_path_buf(),
                    reason: format!("wrong passphrase in {PASSPHRASE_ENV}"),
                })?;
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: format!("key is {}, expected ssh-ed25519", key.algorithm()),
            });
        }
        Ok(SigningKey {
            key,
            path: path.to_path_buf(),
        })
    }

    /// The file this key was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The key's comment, used as the operator identity (`custody` when empty).
    pub fn identity(&self) -> String {
        match self.key.comment().trim() {
            "" => "custody".to_owned(),
            c => c.to_owned(),
        }
    }

    /// The public key's fingerprint (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        fingerprint(self.public_key())
    }

    /// Whether this is the published demo key.
    pub fn is_example(&self) -> bool {
        is_example_key(self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::sshsig::sshsig_signed_data;
    use super::*;
    use ssh_key::SshSig;

    #[test]
    fn signing_a_hash_equals_signing_the_message() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(dir.path(), "ops@example.org").unwrap();
        let key = SigningKey::load(&generated.private_key).unwrap();
        for msg in [&b""[..], b"x", &[7u8; 100_000]] {
            // The hand-built SSHSIG preamble is byte for byte ssh-key's.
            let hash = sha2::Sha512::digest(msg);
            assert_eq!(
                sshsig_signed_data(MANIFEST_NAMESPACE, &[], HashAlg::Sha512, &hash),
                SshSig::signed_data(MANIFEST_NAMESPACE, HashAlg::Sha512, msg).unwrap()
            );
            let whole = key.sign(MANIFEST_NAMESPACE, msg).unwrap();
            let hashed = key.sign_sha512(MANIFEST_NAMESPACE, &hash.into()).unwrap();
            assert_eq!(whole, hashed);
            let trust = Trust::PublicKey(key.public_key().clone());
            let (_, n) = trust
                .verify_reader("", MANIFEST_NAMESPACE, None, &mut { msg }, &hashed)
                .unwrap();
            assert_eq!(n, msg.len() as u64);
            let mut other = msg.to_vec();
            other.push(0);
            assert!(
                trust
                    .verify_reader("", MANIFEST_NAMESPACE, None, &mut &other[..], &hashed)
                    .is_err()
            );
        }
    }

    #[test]
    fn sign_verify_round_trip_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(dir.path(), "op@example").unwrap();
        let mode = fs::metadata(&g.private_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            generate(dir.path(), "again"),
            Err(KeyError::Exists { .. })
        ));
        let key = SigningKey::load(&g.private_key).unwrap();
        assert_eq!(key.identity(), "op@example");
        let sig = key.sign(MANIFEST_NAMESPACE, b"hello").unwrap();

        let signers = Trust::allowed_signers(&g.allowed_signers).unwrap();
        let who = signers
            .verify("op@example", MANIFEST_NAMESPACE, None, b"hello", &sig)
            .unwrap();
        assert_eq!(who.fingerprint, key.fingerprint());
        // Wrong message, wrong identity, wrong namespace all fail.
        assert!(
            signers
                .verify("op@example", MANIFEST_NAMESPACE, None, b"hellO", &sig)
                .is_err()
        );
        assert!(
            signers
                .verify("eve@example", MANIFEST_NAMESPACE, None, b"hello", &sig)
                .is_err()
        );
        assert!(
            signers
                .verify("op@example", "file", None, b"hello", &sig)
                .is_err()
        );
        let pk = Trust::public_key(&g.public_key).unwrap();
        assert!(
            pk.verify("x", MANIFEST_NAMESPACE, None, b"hello", &sig)
                .is_ok()
        );
    }

    #[test]
    fn validity_options_are_checked_at_the_signing_time_and_unknown_options_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(dir.path(), "op@example").unwrap();
        let key = SigningKey::load(&g.private_key).unwrap();
        let sig = key.sign(MANIFEST_NAMESPACE, b"hello").unwrap();
        let public = fs::read_to_string(&g.public_key).unwrap();
        let with = |options: &str| {
            let path = dir.path().join("signers");
            fs::write(&path, format!("op@example {options} {public}")).unwrap();
            Trust::allowed_signers(&path)
        };
        let t = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        let check =
            |trust: &Trust, at| trust.verify("op@example", MANIFEST_NAMESPACE, at, b"hello", &sig);
        let window = with(r#"valid-after="20200101Z",valid-before="202012312359Z""#).unwrap();
        assert!(check(&window, t("2020-06-01T00:00:00Z")).is_ok());
        // The edges are inclusive, as in OpenSSH.
        assert!(check(&window, t("2020-12-31T23:59:00Z")).is_ok());
        let late = check(&window, t("2021-01-01T00:00:00Z"))
            .unwrap_err()
            .to_string();
        assert!(late.contains("has expired"), "{late}");
        let early = check(&window, t("2019-12-31T23:59:59Z"))
            .unwrap_err()
            .to_string();
        assert!(early.contains("not yet valid"), "{early}");
        // Without a recorded time, now: this window is in the past.
        assert!(check(&window, None).is_err());
        // Seconds, and local time without Z, parse; nonsense does not.
        assert!(with(r#"valid-before="20261231235959""#).is_ok());
        for bad in [
            r#"valid-before="2026-12-31""#,
            r#"valid-after="2026""#,
            "valid-after",
        ] {
            assert!(
                matches!(with(bad), Err(KeyError::Malformed { .. })),
                "{bad}"
            );
        }
        // An option nobody here understands is refused, not dropped.
        let e = with(r#"verify-required"#).unwrap_err().to_string();
        assert!(e.contains("unsupported option"), "{e}");
        // namespaces= on the deciding line is binding.
        let ledger_only = with(r#"namespaces="custody-ledger""#).unwrap();
        assert!(check(&ledger_only, None).is_err());
    }

    #[test]
    fn group_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(dir.path(), "op").unwrap();
        fs::set_permissions(&g.private_key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = SigningKey::load(&g.private_key).unwrap_err();
        assert!(matches!(
            err,
            KeyError::InsecurePermissions { mode: 0o640, .. }
        ));
    }
}
