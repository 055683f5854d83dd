//! Trust: what a signature is checked against, a single public key or an
//! OpenSSH `allowed_signers` file (principals with wildcards, `namespaces=`,
//! `valid-after=`/`valid-before=`), read as `ssh-keygen -Y verify` reads it.

use std::fs;
use std::path::Path;

use ssh_key::{HashAlg, PublicKey, SshSig};

use super::sshsig::{CountingReader, sshsig_hash, sshsig_signed_data};
use super::{EXAMPLE_PUBLIC_KEY, KeyError, fingerprint, io_err};

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

    /// Trusts each of `keys` for any identity and namespace, at any time
    /// (the keys a ledger registered, when no trust file is given).
    pub fn any_of(keys: Vec<PublicKey>) -> Self {
        Trust::AllowedSigners(
            keys.into_iter()
                .map(|key| {
                    AllowedSignerEntry(AllowedSigner {
                        principals: vec!["*".to_owned()],
                        namespaces: None,
                        valid_after: None,
                        valid_before: None,
                        key,
                    })
                })
                .collect(),
        )
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

    /// As [`Trust::verify`] for a message that names no signer (a
    /// checkpoint): the identity is the first principal of the first
    /// `allowed_signers` line holding the signature's key, as
    /// `ssh-keygen -Y find-principals` finds it before `-Y verify -I`.
    ///
    /// # Errors
    /// As [`Trust::verify`].
    pub fn verify_by_key(
        &self,
        namespace: &str,
        at: Option<jiff::Timestamp>,
        msg: &[u8],
        armored: &str,
    ) -> Result<Signer, KeyError> {
        let identity = match self {
            Trust::PublicKey(_) => None,
            Trust::AllowedSigners(entries) => SshSig::from_pem(armored.trim())
                .ok()
                .and_then(|sig| {
                    entries
                        .iter()
                        .find(|e| e.0.key.key_data() == sig.public_key())
                })
                .and_then(|e| e.0.principals.iter().find(|p| !p.starts_with('!')))
                .cloned(),
        };
        self.verify(&identity.unwrap_or_default(), namespace, at, msg, armored)
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
}
