#!/usr/bin/env python3
"""Bearer token server for Kiln's registry tests (docker-registry `auth: token`).

GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...] answers
{"token", "access_token", "expires_in", "issued_at"} with an RS256 JWT signed
by --key (via the openssl command line).  The JWT header carries the key id
docker-registry derives from the certificate in its rootcertbundle (libtrust
format: base32 of the first 240 bits of sha256 of the DER public key, in
groups of four).

Basic credentials must match --user/--password (401 otherwise); anonymous
requests get pull access only.  POST /token takes the OAuth2 refresh-token
grant Docker uses for identity tokens (refresh_token must equal --password).  The JWT is valid for --life seconds (after
the registry's clock-skew leeway, --leeway) while expires_in claims 300
seconds, so a client that trusts expires_in meets a 401 in the middle of a
long push and must fetch a new token.  Each issued token appends a line to
--log.
"""
import argparse
import base64
import hashlib
import json
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ISSUER = "kiln-test-issuer"
lock = threading.Lock()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def key_id(cert):
    der = subprocess.run(
        "openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin -outform DER" % cert,
        shell=True, check=True, capture_output=True).stdout
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def sign(data, key):
    return subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=data, check=True,
                          capture_output=True).stdout


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def reply(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        """OAuth2 refresh-token grant (Docker identity tokens): the refresh
        token must equal --password."""
        cfg = self.server.cfg
        n = int(self.headers.get("Content-Length") or "0")
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        if (urllib.parse.urlparse(self.path).path != "/token" or
                form.get("grant_type") != ["refresh_token"] or
                form.get("refresh_token") != [cfg.password]):
            self.reply(401, {"error": "invalid_grant"})
            return
        self.issue(form, cfg.user, "access_token")

    def do_GET(self):
        cfg = self.server.cfg
        u = urllib.parse.urlparse(self.path)
        if u.path != "/token":
            self.reply(404, {"error": "not found"})
            return
        q = urllib.parse.parse_qs(u.query)
        user = ""
        auth = self.headers.get("Authorization")
        if auth:
            if not auth.startswith("Basic "):
                self.reply(401, {"error": "unsupported"})
                return
            try:
                u_, _, p_ = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                u_, p_ = "", ""
            if u_ != cfg.user or p_ != cfg.password:
                self.reply(401, {"error": "bad credentials"},
                           {"WWW-Authenticate": 'Basic realm="kiln-token"'})
                return
            user = u_
        self.issue(q, user, "token")

    def issue(self, q, user, field):
        cfg = self.server.cfg
        access = []
        scopes = [x for sc in q.get("scope", []) for x in sc.split(" ") if x]
        for sc in scopes:
            parts = sc.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if not user:
                actions = [a for a in actions if a == "pull"]
            access.append({"type": typ, "name": name, "actions": actions})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": q.get("service", [""])[0],
                  "exp": now + cfg.life - cfg.leeway, "nbf": now - 5, "iat": now,
                  "jti": "%d-%f" % (now, time.time()), "access": access}
        head = {"typ": "JWT", "alg": "RS256", "kid": cfg.kid}
        signing_input = (b64url(json.dumps(head).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        token = signing_input.decode() + "." + b64url(sign(signing_input, cfg.key))
        with lock:
            with open(cfg.log, "a") as f:
                f.write("%d %s %s %s\n" % (now, user or "-", field, " ".join(scopes)))
        # GET answers carry both names; the OAuth2 POST only access_token.
        body = {"access_token": token, "expires_in": 300,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        if field == "token":
            body["token"] = token
        self.reply(200, body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--life", type=int, default=60)
    ap.add_argument("--leeway", type=int, default=60)
    ap.add_argument("--user", default="kiln")
    ap.add_argument("--password", default="")
    ap.add_argument("--log", required=True)
    cfg = ap.parse_args()
    cfg.kid = key_id(cfg.cert)
    open(cfg.log, "a").close()
    srv = ThreadingHTTPServer(("127.0.0.1", cfg.port), Handler)
    srv.cfg = cfg
    srv.serve_forever()


if __name__ == "__main__":
    main()
