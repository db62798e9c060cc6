"""An OAuth2/OIDC issuer's signing key and its JWKS, served on loopback for the tests.

Register the fixtures in a test module by importing them:
`from tests.support.jwks import jwks_url_fixture, signing_key_fixture  # noqa: F401`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://issuer.example.test/"
AUDIENCE = "notifications-api"
KID = "key-1"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Made once per module: RSA key generation is the slow part of these tests.
@pytest.fixture(scope="module", name="signing_key")
def signing_key_fixture() -> rsa.RSAPrivateKey:
    return _rsa_key()


@pytest.fixture(scope="module", name="other_key")
def other_key_fixture() -> rsa.RSAPrivateKey:
    return _rsa_key()


@pytest.fixture(name="jwks_url")
def jwks_url_fixture(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """The URL of a JWKS holding the public half of `signing_key` under KID."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep pytest's output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown() waits up to one interval.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
