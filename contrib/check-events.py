#!/usr/bin/env python3
"""Check an exported custody timeline without custody and without the ledger.

    check-events.py TIMELINE.json ALLOWED_SIGNERS [MANIFEST.json]

TIMELINE.json is written by `custody log --manifest ID --export FILE`
(format in docs/ledger.md, "Exported timelines"). For every event this
recomputes its hash from its fields (the documented framing, BLAKE3), and
for every signed event checks the SSHSIG over that hash with stock
`ssh-keygen -Y verify` against ALLOWED_SIGNERS (yours, not the keys in the
export). With MANIFEST.json, also checks that the manifest's bytes are the
ones the timeline names. Consecutive events must link (each names the
previous one's hash), so a signed event vouches for the unsigned events
just before it. Prints one line per event; exits 1 if anything fails. Needs Python 3, the `blake3` package (pip install blake3) and
OpenSSH's ssh-keygen.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import blake3

NAMESPACE = "custody-ledger"


def frame(field: bytes) -> bytes:
    return struct.pack("<Q", len(field)) + field


def event_hash(e) -> str:
    fields = [
        b"custody-event/1",
        str(e["seq"]).encode(),
        e["at"].encode(),
        e["kind"].encode(),
        b"" if e["run_id"] is None else str(e["run_id"]).encode(),
        (e["manifest_id"] or "").encode(),
        e["payload"].encode(),
        e["prev_hash"].encode(),
    ]
    return blake3.blake3(b"".join(frame(f) for f in fields)).hexdigest()


def signature_ok(message: str, signature: str, allowed_signers: str) -> str:
    """The principal that signed `message`, or '' if no allowed signer did."""
    with tempfile.TemporaryDirectory() as d:
        sig = os.path.join(d, "event.sig")
        with open(sig, "w") as f:
            f.write(signature)
        found = subprocess.run(
            ["ssh-keygen", "-Y", "find-principals", "-s", sig, "-f", allowed_signers],
            capture_output=True, text=True)
        for principal in found.stdout.split():
            ok = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", allowed_signers, "-I", principal,
                 "-n", NAMESPACE, "-s", sig],
                input=message.encode(), capture_output=True)
            if ok.returncode == 0:
                return principal
    return ""


def main(args):
    if len(args) not in (2, 3):
        sys.exit(__doc__)
    with open(args[0]) as f:
        timeline = json.load(f)
    if timeline.get("format") != "custody-events" or timeline.get("version") != 1:
        sys.exit(f"{args[0]}: not a custody-events version 1 file")
    failed = 0
    if len(args) == 3:
        with open(args[2], "rb") as f:
            digest = blake3.blake3(f.read()).hexdigest()
        ok = digest == timeline["manifest_blake3"]
        failed += not ok
        print(f"{'OK ' if ok else 'BAD'} manifest {args[2]}: BLAKE3 {digest}"
              f"{'' if ok else ' is not the one the timeline names'}")
    events = timeline["events"]
    for i, e in enumerate(events):
        problems = []
        if event_hash(e) != e["hash"]:
            problems.append("contents do not match its hash")
        # Consecutive events are linked, so a signed event vouches for the
        # unsigned ones just before it.
        nxt = events[i + 1] if i + 1 < len(events) else None
        if nxt and nxt["seq"] == e["seq"] + 1 and nxt["prev_hash"] != e["hash"]:
            problems.append(f"event {nxt['seq']} does not link to it")
        try:
            payload = json.loads(e["payload"])
        except ValueError:
            payload, _ = {}, problems.append("payload is not JSON")
        if e["kind"] == "sealed" and payload.get("manifest_blake3") != timeline["manifest_blake3"]:
            problems.append("seals other manifest bytes")
        signer = ""
        if e["signature"]:
            signer = signature_ok(e["hash"], e["signature"], args[1])
            if not signer:
                problems.append("signature does not verify with ALLOWED_SIGNERS")
        elif e["kind"] in ("sealed", "verified", "bom_checked", "copylog_checked", "handoff", "rolled_back"):
            problems.append("must be signed and is not")
        failed += bool(problems)
        status = "BAD" if problems else "OK "
        detail = "; ".join(problems) or (f"signed by {signer}" if signer else "unsigned, hash OK")
        print(f"{status} event {e['seq']} {e['kind']} {e['at']}: {detail}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
