"""Secrets a user submitted, kept encrypted only until the request is applied or abandoned."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from workspaces.models import PendingSecret, WorkspaceRequest


class SecretUnavailable(Exception):
    """The secret is gone (already applied or discarded) or the key changed; it must be entered again."""


def _fernet() -> Fernet:
    if settings.ENCRYPTION_KEY:
        return Fernet(settings.ENCRYPTION_KEY)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"kaito-portal pending secrets").derive(
        settings.SECRET_KEY.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def secret_store(*, request: WorkspaceRequest, purpose: str, value: dict[str, Any]) -> None:
    token = _fernet().encrypt(json.dumps(value).encode())
    PendingSecret.objects.update_or_create(request=request, purpose=purpose, defaults={"ciphertext": token})


def secret_load(*, request: WorkspaceRequest, purpose: str) -> dict[str, Any] | None:
    row = PendingSecret.objects.filter(request=request, purpose=purpose).first()
    if row is None:
        return None
    try:
        return json.loads(_fernet().decrypt(bytes(row.ciphertext)))
    except InvalidToken as exc:
        raise SecretUnavailable(f"The stored {row.get_purpose_display()} can no longer be decrypted.") from exc


def secrets_discard(*, request: WorkspaceRequest, purpose: str | None = None) -> int:
    rows = PendingSecret.objects.filter(request=request)
    if purpose:
        rows = rows.filter(purpose=purpose)
    return rows.delete()[0]
