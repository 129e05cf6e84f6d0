"""Registry preflight for a tuning output image: the registry's real auth flow, then a started-and-cancelled upload."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

from workspaces.kaito.imageref import DEFAULT_DOMAIN, ImageRef, InvalidReference, parse_reference
from workspaces.netguard import Resolver
from workspaces.preflight.fetch import FetchError, Limits, Response, SafeFetcher, origin
from workspaces.preflight.records import Finding, Findings

logger = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
DOCKER_HUB_KEYS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_PARAM = re.compile(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


class InvalidDockerConfig(ValueError):
    """The push secret's .dockerconfigjson is not what docker/oras expect."""


@dataclass(frozen=True)
class Credentials:
    """Username and password (or token); never shown by repr, logs or results."""

    username: str = ""
    password: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)  # a ready bearer token (docker's "registrytoken")

    @property
    def secrets(self) -> list[str]:
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return [s for s in (self.password, self.registry_token, basic if self.password else "") if s]

    def basic_header(self) -> dict[str, str]:
        if not (self.username or self.password):
            return {}
        raw = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"authorization": f"Basic {raw}"}


def _normalise_key(key: str) -> str:
    key = key.strip().lower()
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


def credentials_from_dockerconfigjson(config: Mapping[str, Any] | str | bytes, domain: str) -> Credentials | None:
    """The entry of a kubernetes.io/dockerconfigjson secret for this registry, matched as docker/oras do.

    Keys may carry a scheme and path (https://index.docker.io/v1/); Docker Hub has several names.
    """
    try:
        data = json.loads(config) if isinstance(config, (str, bytes)) else config
    except ValueError as exc:
        raise InvalidDockerConfig(f"The push secret's .dockerconfigjson is not JSON ({exc.args[0][:80]}).") from None
    auths = data.get("auths") if isinstance(data, Mapping) else None
    if not isinstance(auths, Mapping):
        raise InvalidDockerConfig('The push secret\'s .dockerconfigjson has no "auths" object.')
    wanted = {domain.lower()} | (DOCKER_HUB_KEYS if domain == DEFAULT_DOMAIN else set())
    for key, entry in auths.items():
        if _normalise_key(key) not in wanted or not isinstance(entry, Mapping):
            continue
        username, password = entry.get("username") or "", entry.get("password") or ""
        if entry.get("auth") and not (username and password):
            try:
                username, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidDockerConfig(f'The "auth" value for {key} is not base64 of user:password.') from None
        if entry.get("identitytoken"):
            password = entry["identitytoken"]  # used as the password of <token> on token endpoints
            username = username or "<token>"
        return Credentials(username, password, entry.get("registrytoken") or "")
    return None


def dockerconfig_registries(config: Mapping[str, Any] | str | bytes) -> list[str]:
    data = json.loads(config) if isinstance(config, (str, bytes)) else config
    return sorted(_normalise_key(k) for k in (data.get("auths") or {}))


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {...}); Basic likewise."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v[1:-1].replace('\\"', '"') if v.startswith('"') else v for k, v in _PARAM.findall(rest)}
    return scheme.lower(), params


def token_access(token: str) -> list[dict[str, Any]] | None:
    """The `access` claim of a JWT registry token (unverified, for explaining results), if it is one."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        access = claims.get("access")
        return [dict(a) for a in access] if isinstance(access, list) else None
    except (IndexError, ValueError, TypeError, AttributeError):
        return None


@dataclass
class RegistryReport(Findings):
    """Result of one registry check; `to_dict()` is JSON-serialisable and holds no secret."""

    image: str
    reference: dict[str, str | None] | None = None
    registry_url: str = ""
    auth: str | None = None  # none | basic | bearer
    push_allowed: bool | None = None
    upload_cancelled: bool | None = None  # False: the registry refused to cancel the empty test upload
    tag_exists: bool | None = None
    existing_digest: str | None = None
    granted: list[dict[str, Any]] | None = None  # access claim of a JWT token
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def _registry_errors(response: Response) -> str:
    try:
        errors = json.loads(response.content).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}"[:200] for e in errors[:3])
    except (ValueError, AttributeError, TypeError):
        return ""


class _Session:
    """One check's state: where the registry is, and how to authenticate to it."""

    def __init__(self, fetcher: SafeFetcher, ref: ImageRef, creds: Credentials, base: str) -> None:
        self.fetcher, self.ref, self.creds, self.base = fetcher, ref, creds, base
        self.auth: dict[str, str] = {}
        self.secrets = creds.secrets  # grows with the bearer token; scrubbed from every message
        self.challenge: dict[str, str] = {}

    def call(self, method: str, url: str, headers: Mapping[str, str] | None = None) -> Response:
        # Credentials go to the registry's own origin only (an upload Location may point elsewhere).
        auth = self.auth if origin(url) == origin(self.base) else {}
        return self.fetcher.request(method, url, headers={**auth, **(headers or {})}, max_bytes=64 * 1024)

    def authenticate(self, report: RegistryReport) -> bool:
        first = self.call("GET", f"{self.base}/v2/")
        if first.status == 200:
            report.auth = "none"
            return True
        if first.status != 401:
            report.add("error", "not-registry", f"{self.base}/v2/ answered HTTP {first.status}: not a registry API.")
            return False
        scheme, params = parse_challenge(first.headers.get("www-authenticate", ""))
        self.challenge = params
        report.auth = scheme or None
        if scheme == "basic":
            if not self.creds.basic_header():
                report.add("error", "no-credentials", f"{self.ref.domain} requires a username and password.")
                return False
            self.auth = self.creds.basic_header()
        elif scheme == "bearer" and params.get("realm"):
            token = self.creds.registry_token or self._token(report, params)
            if not token:
                return False
            self.secrets.append(token)
            self.auth = {"authorization": f"Bearer {token}"}
            report.granted = token_access(token)
        else:
            report.add("error", "auth-scheme", f"{self.ref.domain} asks for unsupported authentication {scheme!r}.")
            return False
        again = self.call("GET", f"{self.base}/v2/")
        if again.status == 401:
            report.add("error", "wrong-credentials", f"{self.ref.domain} rejected the push secret's credentials.")
            return False
        return True

    def _token(self, report: RegistryReport, params: Mapping[str, str], actions: str = "push,pull") -> str | None:
        query = {"scope": f"repository:{self.ref.path}:{actions}"}
        if params.get("service"):
            query["service"] = params["service"]
        realm = params["realm"]
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        try:
            reply = self.fetcher.request("GET", url, headers=self.creds.basic_header(), max_bytes=256 * 1024)
        except FetchError as exc:
            severity = "error" if exc.kind == "refused" else "warning"
            report.add(severity, "token-service", f"The registry's token service could not be used: {exc.message}")
            return None
        if reply.status in (401, 403):
            report.add(
                "error",
                "wrong-credentials",
                f"The token service of {self.ref.domain} rejected the push secret's username and password "
                f"(HTTP {reply.status}).",
            )
            return None
        try:
            body = json.loads(reply.content)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if reply.status != 200 or not isinstance(token, str) or not token:
            report.add("warning", "token-service", f"The token service answered HTTP {reply.status} without a token.")
            return None
        return token

    def try_push(self, report: RegistryReport) -> None:
        started = self.call("POST", f"{self.base}/v2/{self.ref.path}/blobs/uploads/", {"content-length": "0"})
        detail = _registry_errors(started)
        suffix = f" ({detail})" if detail else ""
        if started.status == 202 and started.headers.get("location"):
            report.push_allowed = True
            location = urljoin(f"{self.base}/v2/{self.ref.path}/blobs/uploads/", started.headers["location"])
            report.upload_cancelled = self._cancel(report, location)
            return
        report.push_allowed = False
        challenge = parse_challenge(started.headers.get("www-authenticate", ""))[1]
        if started.status == 403 or "DENIED" in detail or challenge.get("error") == "insufficient_scope":
            report.add("error", "no-push", f"The credentials may not push to {self.ref.path}{suffix}.")
        elif started.status == 401:
            which = "the token lacks push access" if report.auth == "bearer" else "the credentials were refused"
            report.add("error", "no-push", f"{self.ref.domain} refused the upload: {which}{suffix}.")
        elif started.status == 404:
            report.add("error", "repository-missing", f"The repository {self.ref.path} does not exist{suffix}.")
        elif started.status == 405:
            report.add("error", "read-only", f"{self.ref.domain} does not accept pushes (HTTP 405){suffix}.")
        else:
            report.add("warning", "unexpected", f"Starting an upload answered HTTP {started.status}{suffix}.")

    def _cancel(self, report: RegistryReport, location: str) -> bool:
        """DELETE the empty upload. distribution wants `delete` access for that, which push,pull
        tokens lack: then ask once for a delete-only token. Uncancelled, it holds no data and expires."""
        status = self.call("DELETE", location).status
        if status == 401 and report.auth == "bearer" and not self.creds.registry_token:
            quiet = RegistryReport(image=report.image)  # a refused delete scope is no finding of the check
            token = self._token(quiet, self.challenge, actions="delete")
            if token:
                self.secrets.append(token)
                push_auth, self.auth = self.auth, {"authorization": f"Bearer {token}"}
                status = self.call("DELETE", location).status
                self.auth = push_auth
        if status in (200, 202, 204):
            return True
        logger.info("test upload to %s not cancelled (HTTP %s)", self.ref, status)
        return False

    def check_tag(self, report: RegistryReport) -> None:
        reply = self.call(
            "HEAD", f"{self.base}/v2/{self.ref.path}/manifests/{self.ref.tag}", {"accept": MANIFEST_TYPES}
        )
        if reply.status == 200:
            report.tag_exists = True
            report.existing_digest = reply.headers.get("docker-content-digest")
            report.add(
                "warning",
                "tag-exists",
                f"{self.ref} already exists ({report.existing_digest or 'digest unknown'}); the tuning job "
                "will overwrite the tag.",
            )
        elif reply.status == 404:
            report.tag_exists = False


def check_registry(
    image: str,
    *,
    credentials: Credentials | None = None,
    dockerconfigjson: Mapping[str, Any] | str | bytes | None = None,
    fetcher: SafeFetcher | None = None,
    limits: Limits | None = None,
    allow_hosts: Collection[str] = (),
    resolver: Resolver | None = None,
    plain_http: bool = False,
) -> RegistryReport:
    """Check that the push secret can push `image`: auth flow, a cancelled blob upload, the tag.

    Give `credentials` or the decoded `.dockerconfigjson` of the push secret. `plain_http`,
    `allow_hosts` and `resolver` are for tests; production registries are reached over https.
    Never raises for bad input or an unreachable registry: every problem is a finding.
    """
    started = time.monotonic()
    report = RegistryReport(image=image)
    secrets: list[str] = []
    try:
        ref = parse_reference(image)
        report.reference = ref.to_dict()
        if ref.digest:
            report.add(
                "error", "digest", "An output image needs a tag; KAITO pushes the adapter to a tag, not a digest."
            )
            return report
        creds = credentials
        if creds is None and dockerconfigjson is not None:
            creds = credentials_from_dockerconfigjson(dockerconfigjson, ref.domain)
            if creds is None:
                known = ", ".join(dockerconfig_registries(dockerconfigjson)) or "none"
                report.add(
                    "error", "no-credentials", f"The push secret has no entry for {ref.domain} (it has: {known})."
                )
                return report
        creds = creds or Credentials()
        base = f"{'http' if plain_http else 'https'}://{ref.api_host}"
        report.registry_url = base
        fetcher = fetcher or SafeFetcher(limits=limits, allow_hosts=allow_hosts, resolver=resolver)
        session = _Session(fetcher, ref, creds, base)
        secrets = session.secrets
        if session.authenticate(report):
            session.try_push(report)
            session.check_tag(report)
    except InvalidReference as exc:
        report.add("error", "reference", f"The image reference is invalid: {exc}")
    except InvalidDockerConfig as exc:
        report.add("error", "push-secret", str(exc))
    except FetchError as exc:
        severity = "error" if exc.kind == "refused" else "warning"
        report.add(severity, "refused" if exc.kind == "refused" else "unreachable", f"Registry: {exc.message}")
    finally:
        report.seconds = round(time.monotonic() - started, 3)
        _scrub(report, secrets)
    logger.info("registry preflight for %s: %s", report.image, [f.code for f in report.findings] or "ok")
    return report


def _scrub(report: RegistryReport, secrets: list[str]) -> None:
    """Belt and braces: a registry that echoes credentials in an error message must not leak them."""
    for finding in report.findings:
        for secret in (s for s in secrets if len(s) >= 6):  # shorter ones would mangle ordinary words
            finding.message = finding.message.replace(secret, "***")
