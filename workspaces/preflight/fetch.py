"""Fetch user-given URLs safely: netguard-checked, address-pinned, redirects re-checked, size and time capped."""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from workspaces.netguard import CheckedURL, Resolver, UnsafeURL, check_url, parse_ip_literal, split_url
from workspaces.preflight.pinning import Budget, PinnedBackend, PinnedTransport

logger = logging.getLogger(__name__)

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Never carried to another origin on a redirect (curl and browsers drop them too).
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """Caps for one fetcher: each socket operation, and the whole life of the fetcher (`total`)."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_bytes: int = 1 << 20  # per response body, unless a call asks for less or more
    max_redirects: int = 5


class FetchError(Exception):
    """A fetch failed; `kind` is refused | unreachable | timeout | tls | http | redirects | range | protocol."""

    def __init__(self, kind: str, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.url = url
        self.status = status


@dataclass
class Response:
    """One finished exchange; `content` holds at most the byte cap, `truncated` says whether more was left."""

    url: str  # the final URL, user info removed
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes = b""
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)

    @property
    def size(self) -> int | None:
        """Size of the whole resource: the total of a Content-Range, else a 200's Content-Length."""
        match = _CONTENT_RANGE.match(self.headers.get("content-range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        if self.status == 200 and self.headers.get("content-length", "").isdigit():
            return int(self.headers["content-length"])
        return None

    @property
    def content_range(self) -> tuple[int, int] | None:
        match = _CONTENT_RANGE.match(self.headers.get("content-range", ""))
        if match and match.group(1) is not None:
            return int(match.group(1)), int(match.group(2))
        return None


def redact(url: str) -> str:
    """The URL without user:password@, for messages and results."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class SafeFetcher:
    """Fetches http(s) URLs for one check; its time budget (`limits.total_timeout`) starts at creation.

    Each host is checked by netguard once and every connection goes to the address found then.
    `allow_hosts` is for tests only (their own servers on 127.0.0.1); production never passes it.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        allow_hosts: Collection[str] = (),
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | bool = True,
        user_agent: str = "kaito-portal-preflight/1",
    ) -> None:
        self.limits = limits or Limits()
        self.allow_hosts = allow_hosts
        self.resolver = resolver
        self.verify = verify
        self.user_agent = user_agent
        self.bytes_read = 0  # response body bytes taken off the network
        self.requests = 0
        self._budget = Budget(self.limits.total_timeout)
        self._checked: dict[tuple[str, int], CheckedURL] = {}
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        # Loading the CA bundle costs tens of milliseconds: once per fetcher, not per request.
        if self._ssl_context is None:
            verify = self.verify
            self._ssl_context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        return self._ssl_context

    @property
    def wire_bytes(self) -> int:
        return self._budget.wire_bytes

    def check(self, url: str) -> CheckedURL:
        """netguard's verdict for the URL's host, resolved once per fetcher; raises FetchError."""
        try:
            parts = split_url(url)
            key = (parts.hostname.lower().rstrip("."), parts.port or (443 if parts.scheme == "https" else 80))
            if key in self._checked:  # the address pinned at first sight: no second DNS answer is used
                return CheckedURL(**{**self._checked[key].__dict__, "url": url, "scheme": parts.scheme})
            checked = check_url(
                url,
                resolver=self.resolver,
                allow_hosts=self.allow_hosts,
                timeout=min(self.limits.connect_timeout, self._budget.clamp(None, TimeoutError)),
            )
        except TimeoutError as exc:
            raise FetchError("timeout", f"{exc}.", url=redact(url)) from None
        except UnsafeURL as exc:
            raise FetchError("refused", str(exc), url=redact(url)) from None
        addresses = list(checked.addresses)
        if addresses and parse_ip_literal(addresses[0])[0] is None:
            # Only an allow-listed *name* (tests) comes back unresolved; resolve it for the pin.
            addresses = self._resolve_allowed(checked)
        if not addresses:
            reason = checked.resolution_error or f"could not resolve {checked.host}"
            raise FetchError("unreachable", f"{reason[:1].upper()}{reason[1:]}.", url=redact(url))
        checked = CheckedURL(**{**checked.__dict__, "addresses": tuple(addresses)})
        self._checked[key] = checked
        return checked

    def _resolve_allowed(self, checked: CheckedURL) -> list[str]:
        infos = socket.getaddrinfo(checked.host, checked.port, type=socket.SOCK_STREAM)
        return sorted({info[4][0] for info in infos})

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        max_bytes: int | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """One request, redirects followed by hand (each target re-checked); any status is returned."""
        cap = self.limits.max_bytes if max_bytes is None else max_bytes
        send = {k.lower(): v for k, v in (headers or {}).items()}
        first_origin = origin(url)
        redirects: list[str] = []
        current = url
        while True:
            response = self._send_once(method, current, send, content, cap)
            location = response.headers.get("location")
            if not follow_redirects or response.status not in REDIRECT_STATUSES or not location:
                response.redirects = redirects
                return response
            if len(redirects) >= self.limits.max_redirects:
                raise FetchError(
                    "redirects",
                    f"More than {self.limits.max_redirects} redirects, the last to {redact(location)}.",
                    url=redact(url),
                )
            target = urljoin(current, location)
            try:
                self.check(target)
            except FetchError as exc:
                if exc.kind != "refused":
                    raise
                raise FetchError(
                    "refused",
                    f"{redact(current)} redirects to {redact(target)}, which is refused: {exc.message}",
                    url=redact(target),
                ) from None
            redirects.append(redact(target))
            if origin(target) != first_origin:
                for name in CREDENTIAL_HEADERS:
                    send.pop(name, None)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, content = "GET", None
            current = target

    def _send_once(self, method: str, url: str, headers: dict[str, str], content: bytes | None, cap: int) -> Response:
        checked = self.check(url)
        limits = self.limits
        timeout = httpx.Timeout(
            connect=limits.connect_timeout, read=limits.read_timeout, write=limits.read_timeout, pool=1.0
        )
        backend = PinnedBackend({(checked.host, checked.port): checked.addresses}, self._budget)
        # Identity encoding: the byte cap counts what the server sends, and curl in KAITO's job gets the same.
        base = {"user-agent": self.user_agent, "accept-encoding": "identity"}
        self.requests += 1
        try:
            with (
                httpx.Client(
                    transport=PinnedTransport(backend, self.ssl_context), timeout=timeout, trust_env=False
                ) as client,
                client.stream(method, url, headers={**base, **headers}, content=content) as reply,
            ):
                body, truncated = self._read_body(reply, cap) if method != "HEAD" else (b"", False)
                return Response(
                    url=redact(url),
                    status=reply.status_code,
                    headers={k.lower(): v for k, v in reply.headers.items()},
                    content=body,
                    truncated=truncated,
                )
        except httpx.TimeoutException as exc:
            raise self._timeout_error(url, exc) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(url, checked, exc) from None

    def _read_body(self, reply: httpx.Response, cap: int) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        for chunk in reply.iter_raw():
            self.bytes_read += len(chunk)
            room = cap - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                return b"".join(chunks), True  # leaving the block closes the connection mid-body
            chunks.append(chunk)
            size += len(chunk)
            if size == cap:
                declared = reply.headers.get("content-length", "")
                return b"".join(chunks), not (declared.isdigit() and int(declared) <= cap)
        return b"".join(chunks), False

    def _timeout_error(self, url: str, exc: Exception) -> FetchError:
        host = urlsplit(url).hostname
        if time.monotonic() >= self._budget.deadline:
            message = f"{host} did not finish within the time limit of {self._budget.total:g} s."
        elif isinstance(exc, httpx.ConnectTimeout):
            message = f"Connecting to {host} took longer than {self.limits.connect_timeout:g} s."
        else:
            message = f"{host} sent nothing for {self.limits.read_timeout:g} s."
        return FetchError("timeout", message, url=redact(url))

    def _transport_error(self, url: str, checked: CheckedURL, exc: Exception) -> FetchError:
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc.__context__, ssl.SSLError):
            return FetchError(
                "tls", f"The TLS certificate of {checked.host} could not be verified: {text}", url=redact(url)
            )
        if isinstance(exc, httpx.ConnectError):
            where = ", ".join(checked.addresses)
            return FetchError("unreachable", f"Could not connect to {checked.host} ({where}): {text}", url=redact(url))
        return FetchError("protocol", f"{checked.host} broke off the exchange: {text}", url=redact(url))

    def get(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int | None = None) -> Response:
        """GET the first `max_bytes` of a URL; statuses >= 400 raise FetchError(kind='http')."""
        return self._ok(self.request("GET", url, headers=headers, max_bytes=max_bytes))

    def head(self, url: str, *, headers: Mapping[str, str] | None = None) -> Response:
        """HEAD probe: the final URL, status and headers (size, Accept-Ranges, Content-Type)."""
        return self.request("HEAD", url, headers=headers)

    def probe(self, url: str) -> Response:
        """Size and range support without a body: HEAD, or a one-byte range GET where HEAD is refused.

        The returned `size` is None when the server does not say; `accept-ranges` is in `headers`.
        """
        response = self.head(url)
        if response.status < 400 and response.size is not None:
            return self._ok(response)
        ranged = self.get_range(url, 0, 0)  # some CDNs and signed URLs allow GET only
        if ranged.status == 206:
            ranged.headers.setdefault("accept-ranges", "bytes")
        return ranged

    def get_range(self, url: str, start: int, end: int, *, headers: Mapping[str, str] | None = None) -> Response:
        """Bytes start..end (inclusive). A server that ignores Range (200) is read only up to end+1."""
        if start < 0 or end < start:
            raise ValueError("need 0 <= start <= end")
        want = end - start + 1
        # Reading from byte 0 is the fallback when Range is ignored: allowed while end is under the cap.
        cap = end + 1 if end < self.limits.max_bytes else want
        extra = {**(headers or {}), "range": f"bytes={start}-{end}"}
        response = self.request("GET", url, headers=extra, max_bytes=cap)
        if response.status == 206:
            got = response.content_range
            if got is None or got[0] != start:
                raise FetchError("range", f"The server answered the range request with {got}.", url=response.url)
            return response
        if response.status == 416 and start == 0 and response.size == 0:
            return response  # an empty file: nothing to read, not an error of the request
        if response.status == 416:
            raise FetchError("range", f"Bytes {start}-{end} lie beyond the end of the file.", url=response.url)
        self._ok(response)
        if cap != end + 1:
            raise FetchError(
                "range",
                f"The server ignores range requests; reaching byte {start} would mean downloading the file.",
                url=response.url,
            )
        response.content = response.content[start : end + 1]
        response.headers["x-range-ignored"] = "1"
        return response

    def _ok(self, response: Response) -> Response:
        if response.status >= 400 or response.status in REDIRECT_STATUSES:
            raise FetchError(
                "http",
                f"{urlsplit(response.url).hostname} answered HTTP {response.status} for {response.url}.",
                url=response.url,
                status=response.status,
            )
        return response
