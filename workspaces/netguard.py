"""Which user-given URLs the portal will fetch or hand to KAITO: KAITO's rules plus stricter ones."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

# KAITO's webhook refuses localhost, metadata host names and loopback/private/link-local IP literals
# (validateDataSourceURL). The portal also refuses IP literals in unusual notations (decimal, octal,
# hex, shortened, IPv4-mapped IPv6 ...) and host names that resolve to a refused address.

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# KAITO v0.12 api/v1beta1 validateDataSourceURL, plus the other well-known metadata names.
BLOCKED_HOSTS = {
    "localhost",
    "metadata.google.internal",
    "metadata.google",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "metadata",
}
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; Alibaba's metadata lives here
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """The URL may not be fetched; the message says why in words a user understands."""


@dataclass(frozen=True)
class CheckedURL:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...] = field(default=())  # empty when the name did not resolve
    resolution_error: str = ""


def _parse_ipv4_part(part: str) -> int | None:
    # inet_aton rules: 0x.. is hex, a leading 0 is octal, otherwise decimal.
    try:
        if part.lower().startswith("0x"):
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part, 8)
        return int(part, 10)
    except ValueError:
        return None


def parse_ip_literal(host: str) -> tuple[IPAddress | None, bool]:
    """The address a host string denotes to curl or a browser, and whether the notation is unusual."""
    host = host.strip().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
        return address, False
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None, False
    numbers = [_parse_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None, False
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        return None, False
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(parts)) + last
    return ipaddress.IPv4Address(value), True


def address_problem(address: IPAddress) -> str | None:
    """Why the portal will not send traffic to this address, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (an IPv4 address inside IPv6)" if problem else None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata endpoints live there)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return "a carrier-grade NAT address"
    if address.is_private:
        return "a private network address"
    if address.is_reserved:
        return "a reserved address"
    return None


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def _resolve(host: str, port: int, resolver: Resolver, timeout: float) -> tuple[list[str], str]:
    # getaddrinfo has no timeout of its own; a worker thread bounds how long a form submission waits.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(resolver, host, port).result(timeout=timeout), ""
    except concurrent.futures.TimeoutError:
        return [], f"resolving {host} took longer than {timeout:g} s"
    except OSError as exc:
        return [], f"could not resolve {host}: {exc.strerror or exc}"
    finally:
        pool.shutdown(wait=False)


def split_url(url: str) -> SplitResult:
    if any(c in url for c in "\\\r\n\t ") or not url.isascii():
        raise UnsafeURL("The URL contains spaces, backslashes or non-ASCII characters; percent-encode them.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise UnsafeURL(f"The URL is malformed: {exc}.") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("Only absolute http:// or https:// URLs are accepted.")
    if not parts.hostname:
        raise UnsafeURL("The URL has no host name.")
    if "%" in parts.netloc.rsplit("@", 1)[-1]:
        raise UnsafeURL("Percent-encoded characters are not accepted in the host name.")
    return parts


def check_url(
    url: str,
    *,
    resolve: bool = True,
    resolver: Resolver | None = None,
    allow_hosts: Collection[str] = (),
    timeout: float = 3.0,
) -> CheckedURL:
    """Refuse what KAITO refuses and what could reach the cluster's own network; report the addresses.

    `allow_hosts` lets tests reach their own servers on 127.0.0.1; production never sets it. It holds
    host names or addresses; a name that resolves only to allowed addresses passes too (tests of the
    fetcher's address pinning need a name that resolves to 127.0.0.1).
    A name that does not resolve is not an error here (KAITO's downloader may see other DNS);
    the caller decides whether to warn.
    """
    parts = split_url(url)
    host = parts.hostname.lower().rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    checked = CheckedURL(url=url, scheme=parts.scheme, host=host, port=port)
    if host in allow_hosts:
        return CheckedURL(**{**checked.__dict__, "addresses": (host,)})
    if host in BLOCKED_HOSTS or host.endswith(".localhost"):
        raise UnsafeURL(f"The host {host!r} is a local or cloud metadata name; use a public URL.")
    address, unusual = parse_ip_literal(host)
    if address is not None:
        if unusual:
            raise UnsafeURL(
                f"The host {host!r} is an IP address written in an unusual notation (it means {address}); "
                "write addresses in plain dotted form."
            )
        problem = address_problem(address)
        if problem:
            raise UnsafeURL(f"The host {host} is {problem}; the tuning job must download from a public address.")
        return CheckedURL(**{**checked.__dict__, "addresses": (str(address),)})
    if not resolve:
        return checked
    addresses, error = _resolve(host, port, resolver or _default_resolver, timeout)
    for text in addresses:
        if text in allow_hosts:
            continue
        problem = address_problem(ipaddress.ip_address(text.split("%", 1)[0]))
        if problem:
            raise UnsafeURL(f"The host {host} resolves to {text}, {problem}; use a public URL.")
    return CheckedURL(**{**checked.__dict__, "addresses": tuple(addresses), "resolution_error": error})
