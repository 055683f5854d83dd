#!/usr/bin/env python3
"""A loopback proxy in front of Orthanc's DICOMweb plugin, for
tests/cli/dicomweb.rs (docs/dicomweb.md, "How it is tested").

  --azure            Behave as Azure Health Data Services' DICOM service
                     does where Orthanc is lenient (its DICOM Conformance
                     Statement v2, cited in docs/dicomweb.md):
                       STOW-RS   each part is checked and stored on its own:
                                 an implicit-VR transfer syntax, a missing
                                 Study/Series/SOP Instance/SOP Class UID or
                                 Patient ID, or a UID over 64 characters
                                 fails with 43264; an instance of another
                                 study than the URL's with 43265; one
                                 already stored with 45070 (Orthanc keeps
                                 the first copy and says nothing); the
                                 answer is 200, 202 (some failed) or 409
                                 (none stored)
                       WADO-RS   the 128-byte preamble of every instance
                                 comes back as zeros
                       QIDO-RS   limit above 200 is a 400; study counts
                                 (0020,1206/1208) only when includefield
                                 asks for them
                       DELETE    .../studies/S/series/E/instances/I
                                 deletes the instance (204; 404 if absent),
                                 which Orthanc's DICOMweb plugin does not do
  --drop-instance U  Takes the Content-Type line off the STOW-RS part that
                     holds SOP Instance UID U before Orthanc sees it
                     (Orthanc then drops the part and answers 200 with
                     empty sequences: a server that silently drops a part)
  --drop-once        Drops that part in the first request that holds it
                     only (a server that lost it once)
  --record DIR       Keeps every STOW-RS request body as DIR/<n>.body
  --bearer AUD       Takes only Microsoft Entra ID bearer tokens, as Azure's
                     service does: 401 unless the token's audience is AUD,
                     its issuer https://sts.windows.net/<tenant>/ and it has
                     not expired (the signature is not checked: the tokens
                     come from tests/support/azure_standin.py identity);
                     the request goes on to Orthanc with --upstream-auth
  --upstream-auth U:P  HTTP Basic credentials for Orthanc
  --cert F --key F   Serves HTTPS (Entra ID is refused on plain http)

Prints "listening <port>" once ready and appends one JSON line per request
to --log (method, path, status, and the SOP Instance UIDs of a STOW-RS
request). Credentials are passed on, never logged.
"""

import argparse
import http.client
import io
import json
import os
import re
import base64
import sys
import threading
import time
import urllib.parse

import pydicom

# The handler (quiet, a client killed mid-request is not an error) and the
# server (threads, optional TLS, "listening <port>") are azure_standin.py's,
# beside this file.
import azure_standin

LOCK = threading.Lock()
COUNTER = [0]
DROPPED = [False]


def log(log_file, /, **fields):
    with LOCK:
        with open(log_file, "a") as f:
            f.write(json.dumps(fields) + "\n")


def parts_of(body, content_type):
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return []
    b = b"--" + m.group(1).encode()
    out = []
    for chunk in body.split(b)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        out.append((head, payload))
    return out


def dataset(payload):
    try:
        return pydicom.dcmread(io.BytesIO(payload), stop_before_pixels=True, force=False)
    except Exception:
        return None


def sop_of(payload):
    ds = dataset(payload)
    return str(getattr(ds, "SOPInstanceUID", "")) if ds is not None else ""


def element(tag, vr, value):
    return {tag: {"vr": vr, "Value": [value]}}


class Handler(azure_standin.Handler):
    def upstream(self, method, path, body=None, headers=None):
        a = self.server.args
        t = urllib.parse.urlsplit(a.target)
        conn = http.client.HTTPConnection(t.hostname, t.port, timeout=60)
        h = dict(headers or {})
        if a.upstream_auth:
            h["Authorization"] = "Basic " + base64.b64encode(a.upstream_auth.encode()).decode()
        elif self.headers.get("Authorization"):
            h["Authorization"] = self.headers["Authorization"]
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp, data

    def reply(self, status, body, content_type="application/dicom+json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def root(self):
        return urllib.parse.urlsplit(self.server.args.target).path.rstrip("/")

    def bearer_refusal(self):
        """Why a request is refused under --bearer, or None."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return "no bearer token"
        try:
            payload = auth.split(" ", 1)[1].split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):
            return "not a JWT"
        if claims.get("aud") != self.server.args.bearer:
            return "wrong audience"
        if not str(claims.get("iss", "")).startswith("https://sts.windows.net/"):
            return "wrong issuer"
        if claims.get("exp", 0) <= time.time():
            return "expired"
        return None

    def handle_any(self):
        a = self.server.args
        length = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        entry = dict(method=self.command, path=url.path)
        if a.bearer:
            why = self.bearer_refusal()
            entry["bearer"] = why or "ok"
            if why:
                entry["status"] = 401
                log(a.log, **entry)
                return self.reply(401, json.dumps({"error": why}).encode(), "application/json",
                                  [("WWW-Authenticate", "Bearer")])
        if self.command == "POST" and "multipart/related" in self.headers.get("Content-Type", ""):
            parts = parts_of(body, self.headers["Content-Type"])
            entry["sops"] = [sop_of(p) for _, p in parts]
            if a.record:
                with LOCK:
                    COUNTER[0] += 1
                    n = COUNTER[0]
                with open(os.path.join(a.record, f"{n:05}.body"), "wb") as f:
                    f.write(body)
            if a.drop_instance and not DROPPED[0]:
                body, dropped = self.drop(body, parts)
                if dropped and a.drop_once:
                    DROPPED[0] = True
            if a.azure:
                return self.azure_stow(url, parts, entry)
        if a.azure:
            if self.command == "DELETE":
                return self.azure_delete(url, entry)
            q = urllib.parse.parse_qs(url.query)
            if any(int(v) > 200 for v in q.get("limit", []) if v.isdigit()):
                entry["status"] = 400
                log(a.log, **entry)
                return self.reply(400, b'{"error": "limit must be between 1 and 200"}', "application/json")
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length", "authorization")}
        resp, data = self.upstream(self.command, self.path, body or None, headers)
        ctype = resp.getheader("Content-Type", "")
        if a.azure and self.command == "GET" and "multipart/related" in ctype:
            data = self.zero_preambles(data, ctype)
        if a.azure and self.command == "GET" and "json" in ctype and re.search(r"/studies$", url.path):
            data = self.counts_only_when_asked(data, url)
        entry["status"] = resp.status
        log(a.log, **entry)
        extra = [(k, v) for k, v in resp.getheaders()
                 if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-type")]
        self.reply(resp.status, data, ctype or "application/octet-stream", extra)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    def drop(self, body, parts):
        dropped = False
        for head, payload in parts:
            if sop_of(payload) == self.server.args.drop_instance:
                new_head = b"\r\n".join(
                    l for l in head.split(b"\r\n") if not l.lower().startswith(b"content-type")
                )
                body = body.replace(head + b"\r\n\r\n" + payload, new_head + b"\r\n\r\n" + payload, 1)
                dropped = True
        return body, dropped

    def zero_preambles(self, data, ctype):
        out = data
        for head, payload in parts_of(data, ctype):
            if len(payload) > 132 and payload[128:132] == b"DICM":
                out = out.replace(payload, b"\0" * 128 + payload[128:], 1)
        return out

    def counts_only_when_asked(self, data, url):
        asked = set()
        for v in urllib.parse.parse_qs(url.query).get("includefield", []):
            asked.update(x.strip().upper() for x in v.split(","))
        try:
            studies = json.loads(data)
        except ValueError:
            return data
        for s in studies:
            for tag, name in (("00201206", "NUMBEROFSTUDYRELATEDSERIES"), ("00201208", "NUMBEROFSTUDYRELATEDINSTANCES")):
                if tag not in asked and name not in asked and "ALL" not in asked:
                    s.pop(tag, None)
        return json.dumps(studies).encode()

    def exists(self, sop):
        resp, data = self.upstream("POST", "/tools/lookup", sop.encode())
        try:
            return any(r.get("Type") == "Instance" for r in json.loads(data))
        except ValueError:
            return False

    def azure_stow(self, url, parts, entry):
        a = self.server.args
        m = re.search(r"/studies/([^/]+)$", url.path)
        url_study = m.group(1) if m else None
        referenced, failed = [], []
        for head, payload in parts:
            if b"content-type: application/dicom" not in head.lower():
                failed.append(("", "", 43264))
                continue
            ds = dataset(payload)
            sop = str(getattr(ds, "SOPInstanceUID", "")) if ds is not None else ""
            cls = str(getattr(ds, "SOPClassUID", "")) if ds is not None else ""
            code = None
            if ds is None:
                code = 43264
            else:
                ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
                uids = [str(getattr(ds, k, "")) for k in
                        ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")]
                # Implicit VR Little Endian is the one implicit-VR syntax.
                if ts in ("1.2.840.10008.1.2", ""):
                    code = 43264
                elif any(not u or len(u) > 64 for u in uids) or "PatientID" not in ds:
                    code = 43264
                elif url_study and str(ds.StudyInstanceUID) != url_study:
                    code = 43265
                elif self.exists(sop):
                    code = 45070
            if code is None:
                b = "azurestandinpart"
                one = (b"--" + b.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                       + payload + b"\r\n--" + b.encode() + b"--\r\n")
                resp, data = self.upstream(
                    "POST", self.root() + "/studies", one,
                    {"Content-Type": f'multipart/related; type="application/dicom"; boundary={b}',
                     "Accept": "application/dicom+json"})
                ok = False
                if resp.status == 200:
                    try:
                        ans = json.loads(data)
                        ok = any(i.get("00081155", {}).get("Value", [None])[0] == sop
                                 for i in ans.get("00081199", {}).get("Value", []))
                    except ValueError:
                        pass
                if not ok:
                    code = 272
            if code is None:
                referenced.append((cls, sop))
            else:
                failed.append((cls, sop, code))
        out = {}
        if failed:
            out["00081198"] = {"vr": "SQ", "Value": [
                {**element("00081150", "UI", c), **element("00081155", "UI", s), **element("00081197", "US", r)}
                for c, s, r in failed]}
        if referenced:
            out["00081199"] = {"vr": "SQ", "Value": [
                {**element("00081150", "UI", c), **element("00081155", "UI", s)} for c, s in referenced]}
        status = 200 if not failed else (202 if referenced else 409)
        entry["status"] = status
        entry["failed"] = [[s, r] for _, s, r in failed]
        log(a.log, **entry)
        self.reply(status, json.dumps(out).encode())

    def azure_delete(self, url, entry):
        m = re.search(r"/studies/[^/]+/series/[^/]+/instances/([^/]+)$", url.path)
        if not m:
            entry["status"] = 400
            log(self.server.args.log, **entry)
            return self.reply(400, b"{}", "application/json")
        resp, data = self.upstream("POST", "/tools/lookup", m.group(1).encode())
        ids = [r["ID"] for r in json.loads(data or b"[]") if r.get("Type") == "Instance"]
        status = 404
        if ids:
            r, _ = self.upstream("DELETE", "/instances/" + ids[0])
            status = 204 if r.status == 200 else r.status
        entry["status"] = status
        log(self.server.args.log, **entry)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True, help="Orthanc's base URL, http://127.0.0.1:PORT/dicom-web")
    p.add_argument("--azure", action="store_true")
    p.add_argument("--drop-instance")
    p.add_argument("--drop-once", action="store_true")
    p.add_argument("--record")
    p.add_argument("--bearer")
    p.add_argument("--upstream-auth")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--log", required=True)
    azure_standin.serve(Handler, p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
