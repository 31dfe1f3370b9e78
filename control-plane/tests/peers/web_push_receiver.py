"""A Web Push receiver for the web_push channel's tests: the push service
and the browser in one process.

At start it makes a subscription: a P-256 key pair and a 16-byte auth
secret, as a browser would. It listens on 127.0.0.1:PORT (0 picks a free
port) and prints one JSON line on stdout,
    {"port": ..., "p256dh": "<base64url>", "auth": "<base64url>"}
then serves until killed or until stdin closes. Everything else it says
goes to stderr.

POST /push/<id> is one delivery attempt. In order, it
  1. verifies the VAPID authorization (RFC 8292): `vapid t=<jwt>, k=<key>`,
     an ES256 signature by k, aud equal to this server's origin, exp in the
     future and at most 24 hours ahead, sub a mailto: or https: contact;
     a failure answers 401, as push services do;
  2. answers what the mode says, when the mode is not "accept";
  3. checks Content-Encoding (aes128gcm) and TTL (400 otherwise) and the
     body's size (413 over 4096 bytes, the size push services promise);
  4. decrypts the body with http_ece (RFC 8291, aes128gcm) under the
     subscription's keys: a body it cannot decrypt answers 400 (a real push
     service would take it and the browser would drop it);
  5. keeps the decrypted JSON and answers 201 with a Location.

GET /received answers {"attempts": [...], "messages": [...]}: every
attempt with its answer, and every decrypted message with the request's
headers and the verified VAPID claims.

POST /mode with {"mode": M} sets the answer for later attempts:
  accept (201), gone (410), not_found (404), too_many (429, Retry-After: 7),
  unavailable (503).

Usage: python web_push_receiver.py [--port PORT]
"""

import argparse
import base64
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MODES = {
    "accept": (201, None),
    "gone": (410, None),
    "not_found": (404, None),
    "too_many": (429, "7"),
    "unavailable": (503, None),
}

# What push services promise to carry (RFC 8030 section 7.2).
MAX_BODY = 4096
# RFC 8292 section 2: exp no more than 24 hours after the request.
MAX_VALIDITY = 24 * 60 * 60
# Allowance for the sender's clock running ahead of ours.
CLOCK_SKEW = 60

PUSH_PATH = re.compile(r"^/push/[A-Za-z0-9._~-]+$")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def log(message):
    print(message, file=sys.stderr, flush=True)


class VapidError(Exception):
    pass


def verify_vapid(header, origin, now):
    """The verified JWT claims, plus k; raises VapidError."""
    scheme, _, params = (header or "").partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError(f"authorization scheme is not vapid: {header!r}")
    fields = {}
    for param in params.split(","):
        name, _, value = param.strip().partition("=")
        fields[name.strip()] = value.strip()
    if "t" not in fields or "k" not in fields:
        raise VapidError("vapid authorization needs t= and k=")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(fields["k"])
        )
        encoded_header, encoded_claims, encoded_signature = fields["t"].split(".")
        jwt_header = json.loads(b64url_decode(encoded_header))
        claims = json.loads(b64url_decode(encoded_claims))
        signature = b64url_decode(encoded_signature)
    except (ValueError, TypeError) as err:
        raise VapidError(f"malformed token or key: {err}") from err
    if jwt_header.get("alg") != "ES256" or jwt_header.get("typ", "JWT") != "JWT":
        raise VapidError(f"unexpected JWT header {jwt_header}")
    if len(signature) != 64:
        raise VapidError(f"ES256 signature is {len(signature)} bytes, not 64 (r||s)")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(
            der,
            f"{encoded_header}.{encoded_claims}".encode("ascii"),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature as err:
        raise VapidError("signature does not verify with k") from err
    if claims.get("aud") != origin:
        raise VapidError(f"aud {claims.get('aud')!r} is not {origin!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise VapidError(f"exp {exp!r} is not a number of seconds")
    if exp <= now:
        raise VapidError(f"token expired at {exp}")
    if exp > now + MAX_VALIDITY + CLOCK_SKEW:
        raise VapidError(f"exp {exp} is more than 24 hours ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise VapidError(f"sub {sub!r} is not a mailto: or https: contact")
    return dict(claims, k=fields["k"])


class Receiver:
    """The subscription and what was received, shared by request threads."""

    def __init__(self):
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.auth = secrets.token_bytes(16)
        self.origin = None
        self.lock = threading.Lock()
        self.mode = "accept"
        self.attempts = []
        self.messages = []

    def push(self, path, headers, body):
        """Handles one delivery attempt; returns (status, headers, text)."""
        try:
            claims = verify_vapid(headers.get("Authorization"), self.origin, int(time.time()))
        except VapidError as err:
            return 401, {}, f"VAPID: {err}"
        with self.lock:
            status, retry_after = MODES[self.mode]
        if status != 201:
            extra = {"Retry-After": retry_after} if retry_after else {}
            return status, extra, f"mode {self.mode}"
        if headers.get("Content-Encoding") != "aes128gcm":
            return 400, {}, f"Content-Encoding {headers.get('Content-Encoding')!r}"
        if not (headers.get("TTL") or "").isdigit():
            return 400, {}, f"TTL {headers.get('TTL')!r} is not a number of seconds"
        if len(body) > MAX_BODY:
            return 413, {}, f"{len(body)} bytes is more than {MAX_BODY}"
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=self.private_key,
                auth_secret=self.auth,
                version="aes128gcm",
            )
            payload = json.loads(plaintext)
        except (http_ece.ECEException, ValueError) as err:
            message = getattr(err, "message", str(err))
            return 400, {}, f"cannot decrypt the message: {message}"
        with self.lock:
            self.messages.append(
                {
                    "path": path,
                    "payload": payload,
                    "ttl": headers.get("TTL"),
                    "urgency": headers.get("Urgency"),
                    "topic": headers.get("Topic"),
                    "content_type": headers.get("Content-Type"),
                    "vapid": claims,
                    "record_size": int.from_bytes(body[16:20], "big"),
                }
            )
            location = f"{self.origin}/message/{len(self.messages)}"
        return 201, {"Location": location}, ""


class Handler(BaseHTTPRequestHandler):
    receiver = None  # set in main

    def log_message(self, format, *args):
        # No access log: refusals are logged where they are decided, and
        # the tests' output stays readable.
        pass

    def answer(self, status, headers=None, text=""):
        data = text.encode("utf-8")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer_json(self, value):
        data = json.dumps(value).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path != "/received":
            return self.answer(404, text="no such path")
        receiver = self.receiver
        with receiver.lock:
            self.answer_json({"attempts": receiver.attempts, "messages": receiver.messages})

    def do_POST(self):
        body = self.body()
        receiver = self.receiver
        if self.path == "/mode":
            try:
                mode = json.loads(body)["mode"]
            except (ValueError, KeyError, TypeError):
                return self.answer(400, text='expected {"mode": ...}')
            if mode not in MODES:
                return self.answer(400, text=f"unknown mode {mode!r}")
            with receiver.lock:
                receiver.mode = mode
            return self.answer(204)
        if not PUSH_PATH.match(self.path):
            return self.answer(404, text="no such subscription")
        status, headers, text = receiver.push(self.path, self.headers, body)
        if status >= 300:
            log(f"web_push_receiver: {self.path}: {status} {text}")
        with receiver.lock:
            receiver.attempts.append({"path": self.path, "status": status, "answer": text})
        self.answer(status, headers, text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    receiver = Receiver()
    Handler.receiver = receiver
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    receiver.origin = f"http://127.0.0.1:{port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(
        json.dumps(
            {
                "port": port,
                "p256dh": b64url_encode(receiver.public_key),
                "auth": b64url_encode(receiver.auth),
            }
        ),
        flush=True,
    )
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.shutdown()


if __name__ == "__main__":
    main()
