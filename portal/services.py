"""Account-level writes: API tokens are created (shown once) and revoked here."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from portal.models import ApiToken, token_digest

TOKEN_PREFIX = "kp_"
MAX_ACTIVE_TOKENS = 20


def token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token and its raw value; the raw value exists only in this return value."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["Give the token a name, e.g. 'notebook'."]})
    if ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_ACTIVE_TOKENS:
        raise ValidationError({"name": [f"You already have {MAX_ACTIVE_TOKENS} tokens; revoke one first."]})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=raw[:10], digest=token_digest(raw))
    return token, raw


def token_revoke(*, user: AbstractBaseUser, token_id: int) -> ApiToken:
    token = ApiToken.objects.get(pk=token_id, user=user)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def token_user(*, raw: str) -> AbstractBaseUser | None:
    """The active user a raw token belongs to; records when it was last used (at most once a minute)."""
    if not raw.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(raw), revoked_at__isnull=True).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
