//! The encrypted object format (`docs/encryption.md`): a header and
//! authenticated chunks. Any bytes are refused or decrypted, never a panic,
//! and memory stays bounded by the chunk size whatever the header claims.
//! The key is the test vectors' (bytes 0x00..0x1f), so the seeds (the
//! vectors' objects) decrypt and the fuzzer starts from valid objects.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = custody::crypt::EncryptionKey::from_bytes(std::array::from_fn(|i| i as u8));
    let Ok(mut r) = custody::crypt::DecryptReader::new(data, &key) else {
        return;
    };
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out);
    assert!(out.len() <= data.len(), "plaintext longer than its ciphertext");
});
