#!/usr/bin/env python3
"""Independent reference for custody's Merkle proofs (docs/proofs.md).

    proof_reference.py check BUNDLE ALLOWED_SIGNERS   # a proof bundle, as an auditor checks it
    proof_reference.py tree MANIFEST                  # a manifest's tree, from its entries
    proof_reference.py vectors FILE                   # RFC 6962 reference vectors

Written from RFC 6962 / RFC 9162 and the C2SP checkpoint spec with the
Python standard library and stock OpenSSH only: it shares no code with
custody. `check` verifies the checkpoint's signature with `ssh-keygen -Y
find-principals` and `-Y verify` (namespace custody-checkpoint), then each
entry's inclusion proof with the algorithm of RFC 9162 section 2.1.3.2,
printing one line per problem; it exits 0 when everything holds, 1 when
anything does not. `tree` prints the size and root of a manifest's tree
computed from its `files` entries (canonical JSON: sorted keys, no white
space), for comparison with the manifest's `tree`. `vectors` checks the
reference roots, inclusion and consistency proofs and exits 1 on any
mismatch.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves):
    """RFC 6962 section 2.1: the Merkle Tree Hash of a list of leaf data."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def root_from_inclusion(index, size, leaf, proof):
    """RFC 9162 section 2.1.3.2; None when the proof is malformed."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def consistent(size1, size2, root1, root2, proof):
    """RFC 9162 section 2.1.4.2."""
    if size1 > size2 or size1 == 0:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 & (size1 - 1) == 0:  # a power of two: root1 starts the path
        proof = [root1] + proof
    if not proof:
        return False
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_checkpoint(text):
    """C2SP tlog-checkpoint: origin, decimal size, base64 root, each ending in a newline."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "" or not lines[0]:
        raise ValueError("not three newline-terminated lines")
    if not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise ValueError("size is not a decimal number")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        raise ValueError("root is not 32 bytes")
    return lines[0], int(lines[1]), root


def ssh_keygen_verifies(signers, text, signature):
    with tempfile.TemporaryDirectory() as d:
        sig = os.path.join(d, "checkpoint.sig")
        with open(sig, "w") as f:
            f.write(signature)
        found = subprocess.run(
            ["ssh-keygen", "-Y", "find-principals", "-s", sig, "-f", signers],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0 or not found.stdout.strip():
            return "its key is not in " + signers
        principal = found.stdout.split()[0]
        ok = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", signers, "-I", principal,
             "-n", "custody-checkpoint", "-s", sig],
            input=text.encode(),
            capture_output=True,
        )
        if ok.returncode != 0:
            return "ssh-keygen -Y verify fails: " + ok.stdout.decode().strip()
    return None


def check(bundle_path, signers):
    problems = []
    with open(bundle_path) as f:
        bundle = json.load(f)
    if bundle.get("format") != "custody-proof" or bundle.get("version") != 1:
        print("not a custody-proof version 1 bundle")
        return 1
    try:
        origin, size, root = parse_checkpoint(bundle["checkpoint"])
    except ValueError as e:
        print("checkpoint: " + str(e))
        return 1
    if not origin.startswith("custody-manifest/"):
        problems.append("checkpoint: origin %r is not a manifest's" % origin)
    why = ssh_keygen_verifies(signers, bundle["checkpoint"], bundle["signature"])
    if why:
        problems.append("checkpoint signature: " + why)
    last = -1
    for e in bundle["entries"]:
        index, leaf = e["index"], e["leaf"]
        if index <= last:
            problems.append("entry %d: indices must rise" % index)
        last = index
        entry = json.loads(leaf)
        if canonical(entry) != leaf:
            problems.append("entry %d: not canonical" % index)
        proof = [bytes.fromhex(h) for h in e["proof"]]
        got = root_from_inclusion(index, size, leaf_hash(leaf.encode()), proof)
        if got != root:
            problems.append("%s (leaf %d): proof does not lead to the root" % (entry["path"], index))
        else:
            print("PROVEN %s" % entry["path"])
    for p in problems:
        print("FAILED " + p)
    return 1 if problems else 0


def tree(manifest_path):
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    leaves = [canonical(e).encode() for e in manifest["files"]]
    print(json.dumps({"size": len(leaves), "root": mth(leaves).hex()}))
    return 0


def vectors(path):
    with open(path) as f:
        v = json.load(f)
    leaves = [bytes.fromhex(x) for x in v["leaves"]]
    bad = []
    for n, want in enumerate(v["roots"]):
        if mth(leaves[:n]).hex() != want:
            bad.append("root of %d leaves" % n)
    for c in v["inclusion"]:
        size, index = c["size"], c["index"]
        got = root_from_inclusion(index, size, leaf_hash(leaves[index]),
                                  [bytes.fromhex(h) for h in c["proof"]])
        if got is None or got.hex() != v["roots"][size]:
            bad.append("inclusion of leaf %d in %d" % (index, size))
    for c in v["consistency"]:
        s1, s2 = c["from"], c["to"]
        if not consistent(s1, s2, bytes.fromhex(v["roots"][s1]), bytes.fromhex(v["roots"][s2]),
                          [bytes.fromhex(h) for h in c["proof"]]):
            bad.append("consistency from %d to %d" % (s1, s2))
    for b in bad:
        print("MISMATCH " + b)
    return 1 if bad else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "tree":
        return tree(argv[2])
    if len(argv) == 3 and argv[1] == "vectors":
        return vectors(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
