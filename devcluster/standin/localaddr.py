"""An extra non-loopback address on `lo` (default 10.255.0.1/32) for servers the apiserver's proxy must dial."""

# The apiserver refuses Endpoints in 127.0.0.0/8 and 169.254.0.0/16 (k8s.io/kubernetes v1.34.4
# pkg/apis/core/validation/validation.go ValidateEndpointIP, "may not be in the loopback range"), so a model stand-in
# behind a Service needs another address. A /32 on `lo` is reachable only through this host's routing table.
#
#     python -m devcluster.standin.localaddr add [10.255.0.1]     # idempotent; needs root (CAP_NET_ADMIN)
#     python -m devcluster.standin.localaddr remove [10.255.0.1]
#     python -m devcluster.standin.localaddr check [10.255.0.1]   # exit 0 if present

from __future__ import annotations

import argparse
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_ADDRESS = "10.255.0.1"


class LocalAddressError(RuntimeError):
    """The address cannot be added or removed; the message says why and what to run instead."""


def validate(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version != 4 or ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        raise LocalAddressError(f"{address}: need an IPv4 unicast address outside 127.0.0.0/8 and 169.254.0.0/16")
    return str(ip)


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if shutil.which(p)), None)
    if binary is None:
        raise LocalAddressError("the `ip` command (iproute2) is missing: apt-get install iproute2")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def present(address: str) -> bool:
    out = _ip("-o", "-4", "addr", "show", "dev", "lo")
    return any(f"inet {validate(address)}/" in line for line in out.stdout.splitlines())


def _change(verb: str, address: str) -> None:
    result = _ip("addr", verb, f"{address}/32", "dev", "lo")
    if result.returncode == 0:
        return
    error = result.stderr.strip()
    if "Operation not permitted" in error or "RTNETLINK answers: Permission denied" in error:
        raise LocalAddressError(
            f"`ip addr {verb} {address}/32 dev lo` needs CAP_NET_ADMIN (root); run it once with sudo: "
            f"sudo ip addr {verb} {address}/32 dev lo ({error})"
        )
    raise LocalAddressError(f"`ip addr {verb} {address}/32 dev lo` failed: {error}")


def add(address: str = DEFAULT_ADDRESS) -> bool:
    """Add address/32 to lo; False when it was there already (then it is not ours to remove)."""
    if present(address):
        return False
    try:
        _change("add", address)
    except LocalAddressError:
        if present(address):  # someone else added it meanwhile
            return False
        raise
    return True


def remove(address: str = DEFAULT_ADDRESS) -> bool:
    """Remove address/32 from lo; False when it was not there."""
    if not present(address):
        return False
    _change("del", address)
    return True


@contextmanager
def local_address(address: str = DEFAULT_ADDRESS) -> Iterator[str]:
    """The address exists inside the block; it is removed afterwards only if this block added it."""
    added = add(address)
    try:
        yield address
    finally:
        if added:
            remove(address)


def session_address(seed: int) -> str:
    """A per-process address (e.g. seed=os.getpid()) so parallel test sessions never remove each other's."""
    return f"10.255.{1 + seed % 250}.{2 + (seed // 250) % 250}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.standin.localaddr", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["add", "remove", "check"])
    parser.add_argument("address", nargs="?", default=DEFAULT_ADDRESS)
    args = parser.parse_args(argv)
    try:
        if args.action == "check":
            found = present(args.address)
            print(f"{args.address} is {'present' if found else 'absent'} on lo")
            return 0 if found else 1
        changed = add(args.address) if args.action == "add" else remove(args.address)
        done = {"add": "added", "remove": "removed"}[args.action] if changed else "no change"
        print(f"{args.address}/32 on lo: {done}")
    except LocalAddressError as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
