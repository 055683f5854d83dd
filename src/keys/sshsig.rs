//! SSHSIG (OpenSSH's `PROTOCOL.sshsig`): signing a message or its SHA-512
//! with an Ed25519 key, and the signed-data blob and message hash a
//! verifier recomputes, so that stock `ssh-keygen -Y verify` checks what
//! custody signs.

use ssh_key::{HashAlg, LineEnding, SshSig};

use super::{KeyError, SigningKey};

impl SigningKey {
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
pub(super) fn sshsig_signed_data(
    namespace: &str,
    reserved: &[u8],
    alg: HashAlg,
    hash: &[u8],
) -> Vec<u8> {
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
pub(super) fn sshsig_hash(
    alg: HashAlg,
    reader: &mut dyn std::io::Read,
) -> std::io::Result<Vec<u8>> {
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

pub(super) struct CountingReader<'r> {
    pub(super) inner: &'r mut dyn std::io::Read,
    pub(super) n: u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
