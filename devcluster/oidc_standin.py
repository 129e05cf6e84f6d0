"""A local OpenID Connect provider for tests: discovery, JWKS, a code flow that signs in one configured user at once."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devcluster.httpserver import LocalServer, QuietHandler, ThreadedStandin, respond

# It speaks the parts of OIDC Core that a relying party uses (authorization code flow with state, nonce and
# PKCE S256; RS256 ID tokens; userinfo) and can misbehave on purpose: see FAULTS.

# What a test can make the provider do wrong (standin.fault = name).
FAULTS = {
    "wrong_signature": "sign the ID token with a key that is not in the JWKS (same kid)",
    "wrong_audience": "issue the ID token for another client",
    "wrong_issuer": "put another issuer in the ID token",
    "expired": "issue an ID token that expired ten minutes ago",
    "wrong_nonce": "put another nonce in the ID token",
    "overage": "leave out `groups` and point to Graph instead (Entra ID, more than 200 groups)",
}
DEFAULT_USER = {
    "sub": "00000000-aaaa-bbbb-cccc-000000000001",
    "preferred_username": "ada@contoso.example",
    "email": "ada@contoso.example",
    "name": "Ada Lovelace",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "groups": [],
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcStandin(ThreadedStandin):
    """Serve on 127.0.0.1:<free port>; `issuer` is http://127.0.0.1:<port>. Use as a context manager."""

    def __init__(self, *, client_id: str = "kaito-portal", client_secret: str = "standin-secret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.user: dict[str, Any] = dict(DEFAULT_USER)
        self.fault: str | None = None
        self.kid = "standin-key-1"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._other_key: rsa.RSAPrivateKey | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []  # "METHOD /path", for tests that check what the client asked
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        if self._server is None:
            raise RuntimeError("the OIDC stand-in is not running")
        return f"http://127.0.0.1:{self._server.port}"

    def _listen(self) -> LocalServer:
        standin = self

        class Handler(QuietHandler):  # tests read `requests` instead
            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

        return LocalServer(Handler, name="oidc-standin")

    # -- documents -----------------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def id_token(self, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            **self.user,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        key = self.key
        if self.fault == "wrong_signature":
            self._other_key = self._other_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key = self._other_key
        elif self.fault == "wrong_audience":
            claims["aud"] = "some-other-client"
        elif self.fault == "wrong_issuer":
            claims["iss"] = "https://login.example.invalid/other-tenant/v2.0"
        elif self.fault == "expired":
            claims.update(iat=now - 1200, nbf=now - 1200, exp=now - 600)
        elif self.fault == "wrong_nonce":
            claims["nonce"] = "not-the-nonce-you-sent"
        elif self.fault == "overage":
            claims.pop("groups", None)
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {
                "src1": {"endpoint": f"https://graph.microsoft.com/v1.0/users/{claims['sub']}/getMemberObjects"}
            }
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    # -- HTTP ----------------------------------------------------------------------------------------
    def _handle(self, http: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(http.path)
        with self._lock:
            self.requests.append(f"{method} {url.path}")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes = {
            ("GET", "/.well-known/openid-configuration"): lambda: (200, self.discovery()),
            ("GET", "/jwks"): lambda: (200, self.jwks()),
            ("GET", "/authorize"): lambda: self._authorize(http, query),
            ("POST", "/token"): lambda: self._token(http),
            ("GET", "/userinfo"): lambda: self._userinfo(http),
        }
        if url.path.endswith("/.well-known/openid-configuration"):
            url = url._replace(path="/.well-known/openid-configuration")  # any prefix: like a multi-tenant host
        route = routes.get((method, url.path))
        status, body = route() if route else (404, {"error": "not_found"})
        if status == 302:
            respond(http, 302, b"", {"Location": body})
        else:
            respond(
                http,
                status,
                json.dumps(body).encode(),
                {"Content-Type": "application/json", "Cache-Control": "no-store"},
            )

    def _authorize(self, http: BaseHTTPRequestHandler, query: dict[str, str]) -> tuple[int, Any]:
        """The configured user is signed in already and consents: redirect straight back with a code."""
        if query.get("response_type") != "code" or query.get("client_id") != self.client_id:
            return 400, {"error": "invalid_request"}
        redirect_uri, state = query.get("redirect_uri", ""), query.get("state", "")
        if not redirect_uri or not state:
            return 400, {"error": "invalid_request", "error_description": "redirect_uri and state are required"}
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = {
                "nonce": query.get("nonce"),
                "redirect_uri": redirect_uri,
                "code_challenge": query.get("code_challenge"),
            }
        return 302, f"{redirect_uri}?{urlencode({'code': code, 'state': state})}"

    def _form(self, http: BaseHTTPRequestHandler) -> dict[str, str]:
        length = int(http.headers.get("Content-Length") or 0)
        return {k: v[-1] for k, v in parse_qs(http.rfile.read(length).decode()).items()}

    def _client_ok(self, http: BaseHTTPRequestHandler, form: dict[str, str]) -> bool:
        basic = http.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and secrets.compare_digest(secret, self.client_secret)

    def _token(self, http: BaseHTTPRequestHandler) -> tuple[int, Any]:
        form = self._form(http)
        if not self._client_ok(http, form):
            return 401, {"error": "invalid_client"}
        with self._lock:
            grant = self.codes.pop(form.get("code", ""), None)  # a code is good once
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri differs"}
        if grant["code_challenge"]:
            verifier = form.get("code_verifier", "").encode()
            if _b64url(hashlib.sha256(verifier).digest()) != grant["code_challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        access = secrets.token_urlsafe(24)
        with self._lock:
            self.access_tokens[access] = {k: v for k, v in self.user.items() if k != "groups"}
        return 200, {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": self.id_token(grant["nonce"]),
        }

    def _userinfo(self, http: BaseHTTPRequestHandler) -> tuple[int, Any]:
        token = http.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        with self._lock:
            claims = self.access_tokens.get(token)
        return (200, claims) if claims is not None else (401, {"error": "invalid_token"})


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in by hand: point the portal's OIDC_* variables at the printed issuer."""
    parser = argparse.ArgumentParser(prog="python -m devcluster.oidc_standin", description=__doc__)
    parser.add_argument("--client-id", default="kaito-portal")
    parser.add_argument("--client-secret", default="standin-secret")
    parser.add_argument("--groups", default="", help="comma-separated group claims of the signed-in user")
    args = parser.parse_args(argv)
    with OidcStandin(client_id=args.client_id, client_secret=args.client_secret) as standin:
        standin.user["groups"] = [g for g in args.groups.split(",") if g]
        print(f"OIDC_OP_ISSUER={standin.issuer} OIDC_RP_CLIENT_ID={args.client_id} "
              f"OIDC_RP_CLIENT_SECRET={args.client_secret}", flush=True)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
