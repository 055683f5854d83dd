//! Ed25519 signing keys in OpenSSH format, trust anchors, and SSHSIG.
//!
//! Private keys are OpenSSH files that must not be readable by group or
//! others. Signatures are SSHSIG (the format of `ssh-keygen -Y sign`), so an
//! auditor checks them with stock OpenSSH. Verification always uses a key the
//! user trusts (a public key file or an `allowed_signers` file), never the key
//! embedded in the signature.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// SSHSIG namespace of manifest signatures.
pub const MANIFEST_NAMESPACE: &str = "custody-manifest";
/// SSHSIG namespace of ledger chain-head signatures.
pub const LEDGER_NAMESPACE: &str = "custody-ledger";
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
    let signers =
        format!("{identity} namespaces=\"{MANIFEST_NAMESPACE},{LEDGER_NAMESPACE}\" {key_only}\n");
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

    /// Signs `msg` in `namespace`; returns the armored SSHSIG
    /// (`-----BEGIN SSH SIGNATURE-----`), as `ssh-keygen -Y sign` writes it.
    ///
    /// # Errors
    /// Fails only if the signature cannot be encoded.
    pub fn sign(&self, namespace: &str, msg: &[u8]) -> Result<String, KeyError> {
        let sig = self
            .key
            .sign(namespace, HashAlg::Sha512, msg)
            .map_err(KeyError::Sign)?;
        sig.to_pem(LineEnding::LF).map_err(KeyError::Sign)
    }

    /// Signs a message known only by its SHA-512 (a manifest streamed to
    /// disk); the result is exactly what [`SigningKey::sign`] gives for the
    /// message itself.
    ///
    /// # Errors
    /// Fails only if the signature cannot be made or encoded.
    pub fn sign_sha512(&self, namespace: &str, sha512: &[u8; 64]) -> Result<String, KeyError> {
        use ed25519_dalek::Signer as _;
        let data = sshsig_signed_data(namespace, &[], HashAlg::Sha512, sha512);
        let signature = self
            .key
            .try_sign(&data)
            .map_err(|_| KeyError::Sign(ssh_key::Error::Crypto))?;
        let sig = SshSig::new(
            self.key.public_key().key_data().clone(),
            namespace,
            HashAlg::Sha512,
            signature,
        )
        .map_err(KeyError::Sign)?;
        sig.to_pem(LineEnding::LF).map_err(KeyError::Sign)
    }
}

/// The bytes an SSHSIG signature covers (OpenSSH `PROTOCOL.sshsig`): the
/// preamble `SSHSIG`, then namespace, reserved, hash algorithm name and the
/// message's hash, each as an SSH string (u32 big-endian length, bytes).
/// `ssh_key` builds the same bytes only from the whole message; a manifest
/// of a million files is signed and checked from its hash instead.
fn sshsig_signed_data(namespace: &str, reserved: &[u8], alg: HashAlg, hash: &[u8]) -> Vec<u8> {
    let mut out = b"SSHSIG".to_vec();
    for field in [
        namespace.as_bytes(),
        reserved,
        alg.as_str().as_bytes(),
        hash,
    ] {
        let len = u32::try_from(field.len()).expect("SSHSIG fields are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// Hashes `reader` with an SSHSIG hash algorithm.
fn sshsig_hash(alg: HashAlg, reader: &mut dyn std::io::Read) -> std::io::Result<Vec<u8>> {
    fn run<D: sha2::Digest>(mut d: D, r: &mut dyn std::io::Read) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(d.finalize().to_vec()),
                Ok(n) => d.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    match alg {
        HashAlg::Sha256 => run(<sha2::Sha256 as sha2::Digest>::new(), reader),
        _ => run(<sha2::Sha512 as sha2::Digest>::new(), reader),
    }
}

/// One usable line of an `allowed_signers` file.
#[derive(Debug, Clone)]
struct AllowedSigner {
    principals: Vec<String>,
    namespaces: Option<Vec<String>>,
    /// `valid-after=`: the key signs nothing before this.
    valid_after: Option<jiff::Timestamp>,
    /// `valid-before=`: the key signs nothing after this.
    valid_before: Option<jiff::Timestamp>,
    key: PublicKey,
}

/// Reads an `allowed_signers` time as OpenSSH does (`ssh-keygen(1)`,
/// ALLOWED SIGNERS): `YYYYMMDD` or `YYYYMMDDHHMM[SS]`, in UTC with a
/// trailing `Z`, otherwise in the system's local time zone.
fn openssh_time(value: &str) -> Option<jiff::Timestamp> {
    let (digits, utc) = match value.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (value, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits.get(r)?.parse::<i16>().ok();
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (n(8..10)?, n(10..12)?, 0),
        14 => (n(8..10)?, n(10..12)?, n(12..14)?),
        _ => return None,
    };
    let civil = jiff::civil::DateTime::new(
        n(0..4)?,
        i8::try_from(n(4..6)?).ok()?,
        i8::try_from(n(6..8)?).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        0,
    )
    .ok()?;
    let zone = match utc {
        true => jiff::tz::TimeZone::UTC,
        false => jiff::tz::TimeZone::system(),
    };
    zone.to_timestamp(civil).ok()
}

/// The keys a verifier trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// One public key, trusted for any identity.
    PublicKey(PublicKey),
    /// An OpenSSH `allowed_signers` file: keys bound to principals.
    AllowedSigners(Vec<AllowedSignerEntry>),
}

/// An `allowed_signers` entry (opaque; built by [`Trust::allowed_signers`]).
#[derive(Debug, Clone)]
pub struct AllowedSignerEntry(AllowedSigner);

/// Who a verified signature belongs to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signer {
    /// Fingerprint of the trusted key that verified the signature.
    pub fingerprint: String,
    /// The principal the key is bound to (`allowed_signers`), if any.
    pub principal: Option<String>,
}

impl Trust {
    /// Reads an OpenSSH public key file (`ssh-ed25519 AAAA… comment`).
    ///
    /// # Errors
    /// Names the path and the cause.
    pub fn public_key(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let key = PublicKey::from_openssh(text.trim()).map_err(|e| KeyError::Malformed {
            path: path.to_path_buf(),
            reason: format!("not an OpenSSH public key ({e})"),
        })?;
        Ok(Trust::PublicKey(key))
    }

    /// Reads an OpenSSH `allowed_signers` file (see `ssh-keygen(1)`,
    /// "ALLOWED SIGNERS"). `cert-authority` lines are not supported and are
    /// skipped; `namespaces="…"`, `valid-after="…"` and `valid-before="…"`
    /// are honoured as OpenSSH honours them; any other option is refused,
    /// so that no restriction is silently dropped.
    ///
    /// # Errors
    /// Names the path and line of a malformed entry; a file with no usable
    /// entry is an error too.
    pub fn allowed_signers(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |reason: &str| KeyError::Malformed {
                path: path.to_path_buf(),
                reason: format!("line {}: {reason}", n + 1),
            };
            let tokens = tokenize(line);
            let mut it = tokens.iter().map(String::as_str);
            let principals = it.next().ok_or_else(|| malformed("empty"))?;
            let mut namespaces = None;
            let (mut valid_after, mut valid_before) = (None, None);
            let mut cert_authority = false;
            let mut rest: Vec<&str> = it.collect();
            // Options precede the key type; a key type is the first token that
            // names an SSH algorithm.
            while let Some(tok) = rest.first().copied() {
                if tok.starts_with("ssh-") || tok.starts_with("ecdsa-") || tok.starts_with("sk-") {
                    break;
                }
                for opt in split_options(tok) {
                    let (name, value) = match opt.split_once('=') {
                        Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"'))),
                        None => (opt.to_ascii_lowercase(), None),
                    };
                    let time = |v: Option<&str>| {
                        v.and_then(openssh_time).ok_or_else(|| {
                            malformed(&format!(
                                "option {name}: expected YYYYMMDD or YYYYMMDDHHMM[SS], with Z for UTC"
                            ))
                        })
                    };
                    match (name.as_str(), value) {
                        ("cert-authority", None) => cert_authority = true,
                        ("namespaces", Some(v)) => {
                            namespaces = Some(v.split(',').map(str::to_owned).collect());
                        }
                        ("valid-after", v) => valid_after = Some(time(v)?),
                        ("valid-before", v) => valid_before = Some(time(v)?),
                        _ => {
                            return Err(malformed(&format!(
                                "unsupported option {opt:?} (custody honours cert-authority, namespaces, valid-after and valid-before, as OpenSSH does)"
                            )));
                        }
                    }
                }
                rest.remove(0);
            }
            if cert_authority {
                continue;
            }
            if rest.len() < 2 {
                return Err(malformed("expected a key type and a base64 key"));
            }
            let key = PublicKey::from_openssh(&format!("{} {}", rest[0], rest[1]))
                .map_err(|e| malformed(&format!("bad public key ({e})")))?;
            entries.push(AllowedSignerEntry(AllowedSigner {
                principals: principals.split(',').map(str::to_owned).collect(),
                namespaces,
                valid_after,
                valid_before,
                key,
            }));
        }
        if entries.is_empty() {
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: "no usable signer entries".into(),
            });
        }
        Ok(Trust::AllowedSigners(entries))
    }

    /// Whether `key` is among the trusted keys (for any principal).
    pub fn trusts_key(&self, key: &PublicKey) -> bool {
        match self {
            Trust::PublicKey(k) => k.key_data() == key.key_data(),
            Trust::AllowedSigners(entries) => {
                entries.iter().any(|e| e.0.key.key_data() == key.key_data())
            }
        }
    }

    /// Whether the published demo key is among the trusted keys.
    pub fn trusts_example_key(&self) -> bool {
        PublicKey::from_openssh(EXAMPLE_PUBLIC_KEY.trim()).is_ok_and(|k| self.trusts_key(&k))
    }

    /// Checks an armored SSHSIG over `msg` in `namespace`, made by a trusted
    /// key bound to `identity` (the identity matters only for an
    /// `allowed_signers` trust, as with `ssh-keygen -Y verify -I`), at the
    /// time `at` (the signing time the signed data records; `None`: now)
    /// for the `valid-after` and `valid-before` options.
    ///
    /// # Errors
    /// [`KeyError::BadSignature`] saying why: malformed, wrong namespace,
    /// signed by an untrusted key, outside the key's validity, or not
    /// matching the message.
    pub fn verify(
        &self,
        identity: &str,
        namespace: &str,
        at: Option<jiff::Timestamp>,
        msg: &[u8],
        armored: &str,
    ) -> Result<Signer, KeyError> {
        self.verify_reader(identity, namespace, at, &mut { msg }, armored)
            .map(|(signer, _)| signer)
    }

    /// As [`Trust::verify`], reading the message from `msg` (once, to its
    /// end) so it need not fit in memory. Also returns the number of bytes
    /// read.
    ///
    /// As `ssh-keygen -Y verify`, the first `allowed_signers` line whose
    /// principals match `identity` and whose key made the signature
    /// decides: its `namespaces` and its validity must allow the signature.
    ///
    /// # Errors
    /// As [`Trust::verify`], and [`KeyError::BadSignature`] naming a read
    /// error.
    pub fn verify_reader(
        &self,
        identity: &str,
        namespace: &str,
        at: Option<jiff::Timestamp>,
        msg: &mut dyn std::io::Read,
        armored: &str,
    ) -> Result<(Signer, u64), KeyError> {
        let sig = SshSig::from_pem(armored.trim())
            .map_err(|e| KeyError::BadSignature(format!("malformed signature ({e})")))?;
        if sig.namespace() != namespace {
            return Err(KeyError::BadSignature(format!(
                "signature namespace is {:?}, expected {namespace:?}",
                sig.namespace()
            )));
        }
        let (key, principal) = match self {
            Trust::PublicKey(k) if k.key_data() == sig.public_key() => (k, None),
            Trust::PublicKey(_) => {
                return Err(KeyError::BadSignature(
                    "signature was made by a key that is not trusted".into(),
                ));
            }
            Trust::AllowedSigners(entries) => {
                let named: Vec<&AllowedSigner> = entries
                    .iter()
                    .map(|e| &e.0)
                    .filter(|e| principal_matches(&e.principals, identity))
                    .collect();
                let Some(line) = named.iter().find(|e| e.key.key_data() == sig.public_key()) else {
                    return Err(KeyError::BadSignature(match named.is_empty() {
                        true => format!(
                            "no trusted key for identity {identity:?} and namespace {namespace:?}"
                        ),
                        false => "signature was made by a key that is not trusted".into(),
                    }));
                };
                if let Some(ns) = &line.namespaces
                    && !ns.iter().any(|n| glob(n, namespace))
                {
                    return Err(KeyError::BadSignature(format!(
                        "no trusted key for identity {identity:?} and namespace {namespace:?} (the key's namespaces= does not allow it)"
                    )));
                }
                let when = at.unwrap_or_else(jiff::Timestamp::now);
                let said = match at {
                    Some(_) => "signed",
                    None => "checked",
                };
                if let Some(after) = line.valid_after
                    && when < after
                {
                    return Err(KeyError::BadSignature(format!(
                        "key for {identity:?} is not yet valid: valid-after {after}, {said} {when}"
                    )));
                }
                if let Some(before) = line.valid_before
                    && when > before
                {
                    return Err(KeyError::BadSignature(format!(
                        "key for {identity:?} has expired: valid-before {before}, {said} {when}"
                    )));
                }
                (&line.key, Some(identity))
            }
        };
        if !matches!(sig.hash_alg(), HashAlg::Sha256 | HashAlg::Sha512) {
            return Err(KeyError::BadSignature(format!(
                "unsupported signature hash {}",
                sig.hash_alg()
            )));
        }
        let mut counted = CountingReader { inner: msg, n: 0 };
        let hash = sshsig_hash(sig.hash_alg(), &mut counted)
            .map_err(|e| KeyError::BadSignature(format!("cannot read the signed data: {e}")))?;
        let data = sshsig_signed_data(namespace, sig.reserved(), sig.hash_alg(), &hash);
        {
            use ed25519_dalek::Verifier as _;
            key.key_data().verify(&data, sig.signature())
        }
        .map_err(|_| KeyError::BadSignature("signature does not match the signed data".into()))?;
        let signer = Signer {
            fingerprint: fingerprint(key),
            principal: principal.map(str::to_owned),
        };
        Ok((signer, counted.n))
    }
}

struct CountingReader<'r> {
    inner: &'r mut dyn std::io::Read,
    n: u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Splits on white space, keeping double-quoted runs together.
fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits an options token on commas outside quotes.
fn split_options(tok: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in tok.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&tok[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&tok[start..]);
    out
}

/// OpenSSH principal matching: comma-separated patterns with `*` and `?`;
/// a `!pattern` that matches vetoes the line.
fn principal_matches(patterns: &[String], identity: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, identity) {
                return false;
            }
        } else if glob(p, identity) {
            matched = true;
        }
    }
    matched
}

/// Shell-style wildcard match (`*` any run, `?` one character).
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn glob_matches_like_openssh() {
        assert!(glob("*", "anyone"));
        assert!(glob("ops-*@hospital.org", "ops-night@hospital.org"));
        assert!(!glob("ops-*@hospital.org", "ops-night@clinic.org"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(!principal_matches(&["*".into(), "!eve".into()], "eve"));
        assert!(principal_matches(&["*".into(), "!eve".into()], "bob"));
    }

    #[test]
    fn tokenizer_keeps_quoted_options() {
        let t = tokenize(r#"a,b namespaces="x,y" ssh-ed25519 AAAA c"#);
        assert_eq!(
            t,
            ["a,b", r#"namespaces="x,y""#, "ssh-ed25519", "AAAA", "c"]
        );
        assert_eq!(
            split_options(r#"cert-authority,namespaces="x,y""#),
            ["cert-authority", r#"namespaces="x,y""#]
        );
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
