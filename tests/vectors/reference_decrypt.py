#!/usr/bin/env python3
"""An independent decryptor for the custody encryption format, written from
docs/encryption.md rather than from the Rust code (Python `cryptography` for
AES-GCM and HKDF, `blake3` for the key id). It decrypts every vector in the
given directory and checks the stated outcome; tests/cli/vectors.rs runs it.

  python3 tests/vectors/reference_decrypt.py tests/vectors/encryption
"""
import os, sys, struct, blake3
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
from cryptography.exceptions import InvalidTag

def decrypt(key, data):
    if len(data) < 64: return "header failure"
    h = data[:64]
    if h[:8] != b"CSTDYENC" or h[8] != 1 or h[9] != 1 or h[10:12] != b"\0\0": return "header failure"
    chunk = struct.unpack(">I", h[12:16])[0]
    if not 64 <= chunk <= 16 << 20: return "header failure"
    if h[16:32] != blake3.blake3(key, derive_key_context="custody 2026 encryption key id v1").digest()[:16]: return "wrong key"
    okm = HKDF(algorithm=hashes.SHA256(), length=39, salt=h[32:64], info=b"custody-encryption/1" + h[:32]).derive(key)
    aead, prefix = AESGCM(okm[:32]), okm[32:]
    body, out, i, pos = data[64:], b"", 0, 0
    if not body: return "truncated"
    while True:
        ct = body[pos:pos + chunk + 16]; pos += len(ct)
        last = pos >= len(body)
        if len(ct) < 16: return "truncated"
        try:
            out += aead.decrypt(prefix + struct.pack(">I", i) + bytes([last]), ct, h)
        except InvalidTag:
            return "chunk failure"
        i += 1
        if last: return ("success", out)

d = sys.argv[1]; bad = 0
for name in sorted(os.listdir(d)):
    if name == "README.md": continue
    raw = open(os.path.join(d, name), "rb").read()
    head, body = raw.split(b"\n\n", 1)
    f = dict(l.split(": ", 1) for l in head.decode().splitlines())
    r = decrypt(bytes.fromhex(f["key"]), body)
    got = r[0] if isinstance(r, tuple) else r
    ok = got == f["expect"] and (got != "success" or r[1] == bytes.fromhex(f.get("plaintext", "")))
    bad += not ok
    print(("ok  " if ok else "BAD ") + f"{name}: {got}")
print("independent check:", "all vectors agree" if not bad else f"{bad} disagree")
sys.exit(1 if bad else 0)
