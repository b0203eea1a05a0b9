"""A local OpenID Connect issuer on loopback playing GitHub Actions' token service.

It serves the discovery document and the JWKS over HTTP (counting requests), mints tokens with
GitHub's claims signed by an RSA key generated here, and plays the runner's token request URL
(`ACTIONS_ID_TOKEN_REQUEST_URL`), so the CI scripts can be run unmodified.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCE = "https://previews.test"
REQUEST_TOKEN = "runner-request-token"
JWKS_PATH = "/.well-known/jwks"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        issuer = self.server.issuer
        parts = urlsplit(self.path)
        issuer.record(parts.path)
        if parts.path == "/.well-known/openid-configuration":
            self._json(200, {"issuer": issuer.url, "jwks_uri": issuer.url + JWKS_PATH,
                             "id_token_signing_alg_values_supported": ["RS256"]})
        elif parts.path == JWKS_PATH:
            self._json(200, issuer.jwks())
        elif parts.path == "/token":
            if self.headers.get("Authorization", "") != f"bearer {REQUEST_TOKEN}":
                self._json(401, {"message": "bad request token"})
                return
            audience = parse_qs(parts.query).get("audience", [""])[0]
            self._json(200, {"value": issuer.mint_for_job(audience)})
        else:
            self._json(404, {"message": "not found"})

    def _json(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    issuer: TestIssuer


class TestIssuer:
    """Start with `with TestIssuer() as issuer:`; `issuer.url` is the `iss` of its tokens."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {"key-1": new_key()}
        self.kid = "key-1"
        self.url = ""
        self.paths: list[str] = []
        # Claims of the job the runner's token URL mints for (merged over the defaults).
        self.job_claims: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.issuer = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="oidc-issuer")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- state and inspection -------------------------------------------------------------------------------

    def record(self, path: str) -> None:
        with self._lock:
            self.paths.append(path)

    def count(self, path: str = JWKS_PATH) -> int:
        with self._lock:
            return self.paths.count(path)

    def add_key(self, kid: str) -> None:
        """Rotate in another signing key (it is served from now on)."""
        with self._lock:
            self.keys[kid] = new_key()

    def jwks(self) -> dict:
        with self._lock:
            keys = dict(self.keys)
        out = []
        for kid, key in keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": out}

    def public_pem(self, kid: str = "key-1") -> bytes:
        return self.keys[kid].public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)

    # -- tokens ---------------------------------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """GitHub Actions' claims for a pull_request run of acme/shop PR #42 (repository id 100, owner 200)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()), "sub": "repo:acme/shop:pull_request", "aud": AUDIENCE,
            "ref": "refs/pull/42/merge", "sha": "0123456789abcdef0123456789abcdef01234567",
            "repository": "acme/shop", "repository_owner": "acme", "repository_owner_id": "200",
            "repository_id": "100", "repository_visibility": "private", "run_id": "9001", "run_number": "7",
            "run_attempt": "1", "actor": "octocat", "actor_id": "1", "workflow": "PR preview",
            "workflow_ref": "acme/shop/.github/workflows/pr-preview.yml@refs/pull/42/merge",
            "job_workflow_ref": "acme/shop/.github/workflows/pr-preview.yml@refs/pull/42/merge",
            "head_ref": "feature", "base_ref": "main", "event_name": "pull_request", "ref_type": "branch",
            "runner_environment": "github-hosted", "iss": self.url, "nbf": now - 5, "iat": now, "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, kid: str | None = None, key: rsa.RSAPrivateKey | None = None, **overrides: Any) -> str:
        kid = kid or self.kid
        signing_key = key or self.keys[kid]
        return jwt.encode(self.claims(**overrides), signing_key, algorithm="RS256", headers={"kid": kid})

    def mint_for_job(self, audience: str) -> str:
        return self.mint(aud=audience, **self.job_claims)

    def unsigned(self, **overrides: Any) -> str:
        """An `alg: none` token: no signature at all."""
        header = {"alg": "none", "typ": "JWT", "kid": self.kid}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**overrides)).encode())}."

    def hs256_with_public_key(self, **overrides: Any) -> str:
        """The algorithm-confusion attack: HMAC-SHA256 keyed with the issuer's public key (public knowledge)."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**overrides)).encode())}"
        signature = hmac.new(self.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"
