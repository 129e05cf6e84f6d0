"""Container image references parsed as KAITO parses them (distribution/reference ParseDockerRef)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*))"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
DOCKER_HUB = "docker.io"
NAME_TOTAL_LENGTH_MAX = 255


class InvalidReference(ValueError):
    """The text is not an image reference; the message says what is wrong."""


@dataclass(frozen=True)
class ImageRef:
    registry: str  # host[:port], docker.io for Docker Hub
    repository: str  # path inside the registry, library/<name> for official Docker Hub images
    tag: str  # "latest" when neither tag nor digest is given
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str) -> tuple[str, str]:
    # A first component is a registry host only if it looks like one (has '.' or ':', or is localhost).
    head, sep, rest = name.partition("/")
    if not sep or (not any(c in head for c in ".:") and head != "localhost" and head.lower() == head):
        domain, remainder = DOCKER_HUB, name
    else:
        domain, remainder = head, rest
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def parse(text: str) -> ImageRef:
    """Parse and normalise like ParseDockerRef: docker.io/library/<name>:latest for bare names."""
    text = text.strip()
    if not text:
        raise InvalidReference("The image reference is empty.")
    without_digest = text.split("@", 1)[0]
    slash = without_digest.rfind("/")
    colon = without_digest.rfind(":")
    name_part = without_digest[:colon] if colon > slash else without_digest
    domain, remote = _split_domain(name_part)
    if remote.lower() != remote:
        raise InvalidReference(f"{text!r}: the repository name must be lowercase.")
    remainder = remote + text[len(name_part) :]
    match = _REFERENCE.match(f"{domain}/{remainder}")
    if match is None:
        raise InvalidReference(
            f"{text!r} is not a valid image reference; expected registry/repository:tag, "
            "for example myregistry.azurecr.io/team/adapter:0.0.1."
        )
    if len(match.group("name")) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"{name_part!r}: the repository name is longer than {NAME_TOTAL_LENGTH_MAX} characters.")
    digest = match.group("digest") or ""
    tag = match.group("tag") or ("" if digest else "latest")
    return ImageRef(registry=match.group("domain"), repository=match.group("path"), tag=tag, digest=digest)
