"""Image references parsed as KAITO's webhook does (distribution/reference ParseDockerRef, v0.6.0)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
MAX_PATH = 255

# The grammar of github.com/distribution/reference regexp.go, written out with the same names.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_COMPONENT}(?:\.{_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_NAME = rf"(?:{_DOMAIN_AND_PORT}/)?{_REMOTE_NAME}"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$", re.ASCII)
_ANCHORED_NAME = re.compile(rf"^(?:({_DOMAIN_AND_PORT})/)?({_REMOTE_NAME})$", re.ASCII)
_IDENTIFIER = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """The image reference does not parse; the message says why, as docker or KAITO would."""


@dataclass(frozen=True)
class ImageRef:
    """A normalised reference: docker.io/library/ubuntu:latest style."""

    domain: str  # as written (after Docker Hub normalisation), e.g. "docker.io", "myacr.azurecr.io:443"
    path: str  # repository path, e.g. "library/ubuntu"
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.domain}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def api_host(self) -> str:
        """host[:port] that serves the /v2/ API (Docker Hub's API lives on registry-1.docker.io)."""
        return DOCKER_HUB_API if self.domain == DEFAULT_DOMAIN else self.domain

    def to_dict(self) -> dict[str, str | None]:
        return {**asdict(self), "canonical": str(self)}


def _split_docker_domain(name: str) -> tuple[str, str]:
    if "/" not in name:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    maybe_domain, remainder = name.split("/", 1)
    if maybe_domain == "localhost":
        domain = maybe_domain
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    elif any(c in maybe_domain for c in ".:") or maybe_domain.lower() != maybe_domain:
        domain = maybe_domain  # a dot, a port or capitals: a host name, never a Docker Hub namespace
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def _check_digest(digest: str) -> None:
    algorithm, _, encoded = digest.partition(":")
    if algorithm not in _DIGEST_LENGTHS:
        raise InvalidReference(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if not re.fullmatch(rf"[a-f0-9]{{{_DIGEST_LENGTHS[algorithm]}}}", encoded):
        raise InvalidReference(
            f"invalid checksum digest format: {algorithm} needs {_DIGEST_LENGTHS[algorithm]} lowercase hex digits"
        )


def parse_reference(text: str) -> ImageRef:
    """ParseNormalizedNamed + ParseDockerRef: default docker.io, library/ prefix, tag `latest`.

    A reference with both a tag and a digest keeps only the digest, as ParseDockerRef does.
    """
    original = text
    text = text.strip()
    if not text:
        raise InvalidReference("The image reference is empty.")
    if _IDENTIFIER.match(text):
        raise InvalidReference(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise InvalidReference(f"invalid reference format: repository name ({remote}) must be lowercase")
    candidate = f"{domain}/{remainder}"
    match = _REFERENCE.match(candidate)
    if match is None:
        if _REFERENCE.match(candidate.lower()):
            raise InvalidReference(f"{original!r}: repository name must be lowercase")
        raise InvalidReference(
            f"{original!r} is not a valid image reference: expected [registry[:port]/]name[:tag][@digest] "
            "with a lowercase name of letters, digits and . _ - / separators"
        )
    name, tag, digest = match.groups()
    name_match = _ANCHORED_NAME.match(name)
    assert name_match is not None  # the reference grammar embeds the name grammar
    ref_domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > MAX_PATH:
        raise InvalidReference(f"repository name must not be more than {MAX_PATH} characters")
    if digest:
        _check_digest(digest)
        return ImageRef(ref_domain, path, None, digest)
    return ImageRef(ref_domain, path, tag or "latest", None)
