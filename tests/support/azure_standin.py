#!/usr/bin/env python3
"""Loopback stand-ins for what Azurite does not do, for tests/cli/entra.rs
and tests/cli/databox_rest.rs (docs/blob.md, "How it is tested").

  identity   A token endpoint in two styles: App Service managed identity
             (GET ...?api-version=2019-08-01&resource=..., checked against
             X-IDENTITY-HEADER) and the Microsoft Entra token endpoint
             (POST /<tenant>/oauth2/v2.0/token, client_credentials with a
             client secret, a federated token or a certificate-signed
             assertion). It mints tokens Azurite's --oauth basic accepts:
             issuer https://sts.windows.net/<tenant>/, audience, lifetime.
  az         The Azure CLI's `az account get-access-token -o json --scope S`,
             as a signed-in `az` answers it (to stand on PATH as `az`).
  proxy      An HTTP(S) proxy in front of Azurite that behaves as a real
             endpoint documents where Azurite is lenient:
               --refuse-shared-key  403 KeyBasedAuthenticationNotPermitted
                                    to SharedKey- and SAS-authorized
                                    requests (allowSharedKeyAccess=false)
               --max-version V      400 InvalidHeaderValue to x-ms-version
                                    or a SAS sv newer than V (a Data Box's
                                    Blob REST endpoint: 2019-02-02)
               --read-only-when F   403 AuthorizationPermissionMismatch to
                                    bearer writes while file F exists (an
                                    identity with only Storage Blob Data
                                    Reader; the role granted back when F
                                    is removed)

Each prints "listening <port>" once ready and appends one JSON line per
request to --log. Tokens are never logged, only a short hash of each.
"""

import argparse
import base64
import hashlib
import http.client
import http.server
import json
import os
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()


def log(log_file, **fields):
    if not log_file:
        return
    with LOCK, open(log_file, "a", encoding="utf-8") as f:
        f.write(json.dumps(fields, sort_keys=True) + "\n")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(args, tenant):
    now = int(time.time())
    exp = now - 60 if args.expired else now + args.lifetime
    payload = {
        "aud": args.audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": now - 5,
        "nbf": now - 5,
        "exp": exp,
        "oid": "00000000-0000-0000-0000-00000000c057",
        "tid": tenant,
    }
    header = {"alg": "RS256", "typ": "JWT"}
    token = ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(payload).encode()),
            b64url(hashlib.sha256(json.dumps(payload).encode()).digest()),
        ]
    )
    return token, exp


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle(self):
        # A client killed mid-request (the tests kill -9 custody) is not
        # the stand-in's error.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(handler, args):
    server = Server(("127.0.0.1", 0), handler)
    server.args = args
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


class Identity(Handler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        # App Service style managed identity.
        a = self.server.args
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        header = self.headers.get("X-IDENTITY-HEADER")
        if header != a.identity_header:
            log(a.log, kind="msi", status=401)
            return self.reply(401, {"error": "the X-IDENTITY-HEADER is missing or wrong"})
        if q.get("api-version") != ["2019-08-01"] or not q.get("resource"):
            log(a.log, kind="msi", status=400)
            return self.reply(400, {"error": "api-version 2019-08-01 and resource are required"})
        token, exp = mint(a, a.tenant)
        log(a.log, kind="msi", status=200, resource=q["resource"][0], exp=exp)
        self.reply(
            200,
            {
                "access_token": token,
                "expires_on": str(exp),
                "resource": q["resource"][0],
                "token_type": "Bearer",
                "client_id": "00000000-0000-0000-0000-00000000c057",
            },
        )

    def do_POST(self):
        # The Entra ID token endpoint: /<tenant>/oauth2/v2.0/token.
        a = self.server.args
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        tenant = parts[0] if parts else ""
        field = lambda k: (form.get(k) or [""])[0]
        kind = "secret" if field("client_secret") else "assertion"
        ok = field("grant_type") == "client_credentials" and field("scope").endswith("/.default")
        ok = ok and tenant == a.tenant and field("client_id") == a.client_id
        if kind == "secret":
            ok = ok and field("client_secret") == a.client_secret
        else:
            ok = ok and assertion_ok(a, field("client_assertion"))
        if not ok:
            log(a.log, kind=kind, status=401)
            return self.reply(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
            )
        token, exp = mint(a, tenant)
        log(a.log, kind=kind, status=200, exp=exp)
        self.reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": exp - int(time.time()),
                "ext_expires_in": exp - int(time.time()),
                "access_token": token,
            },
        )


def assertion_ok(a, assertion):
    if a.federated_token is not None:
        with open(a.federated_token, encoding="utf-8") as f:
            return assertion == f.read().strip()
    if a.client_cert is None:
        return False
    # A certificate credential's assertion: an RS256 JWT signed with the
    # certificate's private key, checked with its public key.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        head, body, sig = assertion.split(".")
        with open(a.client_cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        pad = lambda s: s + "=" * (-len(s) % 4)
        cert.public_key().verify(
            base64.urlsafe_b64decode(pad(sig)),
            f"{head}.{body}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        claims = json.loads(base64.urlsafe_b64decode(pad(body)))
        return claims.get("sub") == a.client_id and claims.get("exp", 0) > time.time()
    except Exception:
        return False


STORAGE_ERRORS = {
    "KeyBasedAuthenticationNotPermitted": "Key based authentication is not permitted on this storage account.",
    "InvalidHeaderValue": "The value for one of the HTTP headers is not in the correct format.",
    "AuthorizationPermissionMismatch": "This request is not authorized to perform this operation using this permission.",
}


class Proxy(Handler):
    def upstream(self):
        conn = getattr(self, "_conn", None)
        if conn is None:
            a = self.server.args
            target = urllib.parse.urlsplit(a.target)
            if target.scheme == "https":
                ctx = ssl.create_default_context(cafile=a.ca)
                conn = http.client.HTTPSConnection(target.hostname, target.port, context=ctx)
            else:
                conn = http.client.HTTPConnection(target.hostname, target.port)
            self._conn = conn
        return conn

    def refuse(self, status, code, note):
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>%s\n'
            "RequestId:00000000-0000-0000-0000-000000000000\nTime:%s</Message>"
            "<HeaderName>%s</HeaderName></Error>"
            % (code, STORAGE_ERRORS[code], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), note)
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        a = self.server.args
        length = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(length) if length else None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        authz = self.headers.get("Authorization", "")
        if authz.startswith("Bearer "):
            auth = "bearer"
        elif authz.startswith("SharedKey"):
            auth = "sharedkey"
        elif "sig" in query:
            auth = "sas"
        else:
            auth = "none"
        version = self.headers.get("x-ms-version", "")
        sv = (query.get("sv") or [""])[0]
        entry = dict(
            method=self.command,
            path=urllib.parse.urlsplit(self.path).path,
            auth=auth,
            version=version,
            sv=sv,
        )
        if auth == "bearer":
            entry["token"] = hashlib.sha256(authz.encode()).hexdigest()[:12]
        refusal = None
        if a.refuse_shared_key and auth in ("sharedkey", "sas"):
            refusal = (403, "KeyBasedAuthenticationNotPermitted", "Authorization")
        elif a.max_version and version > a.max_version:
            refusal = (400, "InvalidHeaderValue", "x-ms-version")
        elif a.max_version and sv > a.max_version:
            refusal = (400, "InvalidHeaderValue", "sv")
        elif (
            a.read_only_when
            and os.path.exists(a.read_only_when)
            and auth == "bearer"
            and self.command in ("PUT", "POST", "DELETE")
        ):
            refusal = (403, "AuthorizationPermissionMismatch", "Authorization")
        if refusal:
            entry["status"] = refusal[0]
            log(a.log, **entry)
            return self.refuse(*refusal)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn = self.upstream()
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except Exception:
            self._conn = None
            raise
        entry["status"] = resp.status
        log(a.log, **entry)
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "content-length"):
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def az(argv):
    """`az account get-access-token -o json --scope S [--tenant T]`."""
    if argv[:2] != ["account", "get-access-token"] or "--scope" not in argv:
        print("ERROR: this stand-in only answers account get-access-token", file=sys.stderr)
        return 2
    scope = argv[argv.index("--scope") + 1]
    args = argparse.Namespace(audience=scope.removesuffix("/.default"), expired=False, lifetime=3600)
    token, exp = mint(args, "72f988bf-86f1-41af-91ab-2d7cd011db47")
    log(os.environ.get("AZ_STANDIN_LOG"), kind="az", scope=scope, exp=exp)
    print(json.dumps({
        "accessToken": token,
        "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(exp)),
        "expires_on": exp,
        "subscription": "00000000-0000-0000-0000-000000000000",
        "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "tokenType": "Bearer",
    }))
    return 0


def main():
    if sys.argv[1:2] == ["az"]:
        return az(sys.argv[2:])
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("identity")
    i.add_argument("--tenant", default="72f988bf-86f1-41af-91ab-2d7cd011db47")
    i.add_argument("--client-id", default="00000000-0000-0000-0000-0000000c0de5")
    i.add_argument("--client-secret")
    i.add_argument("--client-cert")
    i.add_argument("--federated-token")
    i.add_argument("--identity-header", default="custody-test-header")
    i.add_argument("--audience", default="https://storage.azure.com")
    i.add_argument("--lifetime", type=int, default=3600)
    i.add_argument("--expired", action="store_true")
    x = sub.add_parser("proxy")
    x.add_argument("--target", required=True)
    x.add_argument("--ca")
    x.add_argument("--refuse-shared-key", action="store_true")
    x.add_argument("--max-version")
    x.add_argument("--read-only-when")
    for q in (i, x):
        q.add_argument("--cert")
        q.add_argument("--key")
        q.add_argument("--log")
    args = p.parse_args()
    serve(Identity if args.what == "identity" else Proxy, args)


if __name__ == "__main__":
    sys.exit(main())
