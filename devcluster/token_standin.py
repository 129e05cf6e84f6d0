"""A Docker-token-auth endpoint stand-in for the local registry: Basic credentials in, RS256 JWT out."""

from __future__ import annotations

import base64
import binascii
import datetime
import fnmatch
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devcluster import pki
from devcluster.httpserver import LocalServer, QuietHandler, ThreadedStandin, respond

Grants = Mapping[str, Mapping[str, Sequence[str]]]  # user -> repository glob -> actions


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenStandin(ThreadedStandin):
    """Serves GET /token?service=…&scope=repository:<name>:<actions> as the Docker token spec describes.

    Users authenticate with Basic; the token's `access` claim lists only the requested actions the
    user's grants allow (a pull-only user asking for push,pull gets pull). No credentials means the
    anonymous user "" and whatever `grants[""]` allows. The registry trusts the token because the
    signing certificate is its `rootcertbundle`; the JWT carries it in the x5c header.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        grants: Grants,
        *,
        service: str = "kaito-portal-test-registry",
        issuer: str = "kaito-portal-token-standin",
        ttl: int = 300,
    ) -> None:
        self.users, self.grants = dict(users), grants
        self.service, self.issuer, self.ttl = service, issuer, ttl
        self.issued: list[dict[str, object]] = []  # who asked for what (never passwords), for tests
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = self._self_signed()

    def _self_signed(self) -> x509.Certificate:
        name = pki.x509_name(self.issuer)
        return (
            pki.builder(name, name, self._key.public_key(), datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def write_bundle(self, path: Path) -> Path:
        """Write the certificate the registry's `rootcertbundle` must name."""
        return pki.write_cert(path, self.certificate)

    @property
    def realm(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.port}/token"

    def _listen(self) -> LocalServer:
        standin = self

        class Handler(_Handler):
            owner = standin

        return LocalServer(Handler, name="token-standin")

    def allowed(self, user: str, repository: str, wanted: Sequence[str]) -> list[str]:
        rules = self.grants.get(user, {})
        granted = {a for pattern, actions in rules.items() if fnmatch.fnmatchcase(repository, pattern) for a in actions}
        if "*" in granted:
            return list(wanted)
        return [a for a in wanted if a in granted]

    def sign(self, user: str, access: list[dict[str, object]]) -> str:
        """An RS256 JWT with the claims distribution's token access controller verifies."""
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


class _Handler(QuietHandler):  # requests carry no secrets, but keep quiet
    owner: TokenStandin

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            return self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "only /token is served"}]})
        user = self._user()
        if user is None:
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad username or password"}]})
            challenge = {"WWW-Authenticate": 'Basic realm="kaito-portal token stand-in"'}
            return respond(self, 401, body.encode(), {**challenge, "Content-Type": "application/json"})
        query = parse_qs(url.query)
        if query.get("service", [""])[0] != self.owner.service:
            return self._json(400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]})
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                granted = self.owner.allowed(user, name, actions.split(","))
                access.append({"type": "repository", "name": name, "actions": granted})
        self.owner.issued.append({"user": user, "access": access})
        token = self.owner.sign(user, access)
        issued_at = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self._json(200, {"token": token, "access_token": token, "expires_in": self.owner.ttl, "issued_at": issued_at})

    def _user(self) -> str | None:
        """The authenticated user, "" for anonymous, None for wrong credentials."""
        header = self.headers.get("Authorization", "")
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.owner.users.get(user)
        if scheme.lower() != "basic" or expected is None or not secrets.compare_digest(expected, password):
            return None
        return user

    def _json(self, status: int, payload: object) -> None:
        respond(self, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
