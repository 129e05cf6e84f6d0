"""OpenID Connect sign-in beside local accounts: discovery, strict ID-token checks, groups → team memberships."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

logger = logging.getLogger(__name__)
DISCOVERY_TTL = 3600.0  # seconds; providers rotate signing keys, not endpoints
LEEWAY = 60  # seconds of clock skew accepted on exp/iat
_ENDPOINT_KEYS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def discovery(issuer: str | None = None) -> dict[str, Any]:
    """The provider's discovery document, cached; its `issuer` must equal the configured one (OIDC Discovery §4.3)."""
    issuer = (issuer or settings.OIDC_OP_ISSUER).rstrip("/")
    with _cache_lock:
        cached = _cache.get(issuer)
        if cached and time.monotonic() - cached[0] < DISCOVERY_TTL:
            return cached[1]
    response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=settings.OIDC_TIMEOUT)
    response.raise_for_status()
    document = response.json()
    if str(document.get("issuer", "")).rstrip("/") != issuer:
        raise SuspiciousOperation(f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}")
    with _cache_lock:
        _cache[issuer] = (time.monotonic(), document)
    return document


def endpoint(name: str) -> str:
    """An explicitly configured endpoint, else the one from discovery ("" when the provider has none)."""
    return getattr(settings, name, "") or str(discovery().get(_ENDPOINT_KEYS[name], ""))


def _require_enabled() -> None:
    if not settings.OIDC_ENABLED:
        raise Http404("Single sign-on is not configured.")


@method_decorator(login_not_required, name="dispatch")
class AuthenticateView(OIDCAuthenticationRequestView):
    """Starts the code flow (state, nonce, PKCE) at the provider's authorization endpoint."""

    def __init__(self, **kwargs: Any) -> None:  # the parent reads settings here; ours resolve per request
        super(OIDCAuthenticationRequestView, self).__init__(**kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        _require_enabled()
        try:
            self.OIDC_OP_AUTH_ENDPOINT = endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except (requests.RequestException, SuspiciousOperation, ValueError) as exc:
            logger.warning("single sign-on unavailable: the provider's discovery failed: %s", exc)
            return OIDCAuthenticationCallbackView(request=request).login_failure()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


@method_decorator(login_not_required, name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    """Receives the code; the backend below checks the tokens and signs the user in."""

    def get(self, request: HttpRequest) -> HttpResponse:
        _require_enabled()
        try:
            return super().get(request)
        except SuspiciousOperation as exc:  # an unknown or replayed state
            logger.warning("single sign-on refused: %s", exc)
            return self.login_failure()


class OIDCBackend(OIDCAuthenticationBackend):
    """Creates or updates the user from verified claims and keeps group-granted memberships in step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django builds every backend for every password sign-in and session lookup: touch no network here.
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: endpoint("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: endpoint("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: endpoint("OIDC_OP_JWKS_ENDPOINT"))

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        if request is None or "code" not in request.GET or "state" not in request.GET:
            return None  # a password sign-in: not ours
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, requests.RequestException, jwt.PyJWTError, ValueError, KeyError) as exc:
            # The reason, never the token: enough to tell a wrong audience from an expired token.
            logger.warning("single sign-on refused: %s", str(exc).splitlines()[0][:300])
            return None

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        """Signature, algorithm, issuer, audience, expiry and issue time; mozilla-django-oidc skips aud and iss."""
        alg = jwt.get_unverified_header(payload).get("alg")
        if alg != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"ID token algorithm {alg!r} is not the configured {self.OIDC_RP_SIGN_ALGO!r}")
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_OP_ISSUER.rstrip("/"),
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The verified ID token's claims, completed (never overridden) by the userinfo endpoint when there is one."""
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT and access_token:
            try:
                extra = super().get_userinfo(access_token, id_token, payload)
            except requests.RequestException as exc:
                logger.info("userinfo unavailable, using the ID token's claims: %s", exc)
                extra = {}
            if extra.get("sub") == claims.get("sub"):  # OIDC Core §5.3.2: a different sub must not be used
                claims.update({k: v for k, v in extra.items() if k not in claims})
        return claims

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))  # Entra ID users need not have an email address

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet:
        """Users are found by (issuer, subject), never by email: an email claim is not proof of an account."""
        issuer = settings.OIDC_OP_ISSUER.rstrip("/")
        return self.UserModel.objects.filter(
            oidc_identities__issuer=issuer, oidc_identities__subject=claims["sub"]
        ).distinct()

    def create_user(self, claims: dict[str, Any]) -> AbstractBaseUser:
        username = username_from_claims(claims)
        issuer = settings.OIDC_OP_ISSUER.rstrip("/")
        with transaction.atomic():
            user = self.UserModel.objects.filter(username=username).first()
            if user is not None and not settings.OIDC_LINK_EXISTING_USERS:
                raise SuspiciousOperation(
                    f"a local account named {username!r} exists; set PORTAL_OIDC_LINK_EXISTING_USERS=1 to link it"
                )
            if user is None:
                user = self.UserModel.objects.create_user(username, email=claims.get("email") or "")
                user.set_unusable_password()  # signs in through the provider only
                user.save(update_fields=["password"])
            from portal.oidc_models import OidcIdentity

            OidcIdentity.objects.create(user=user, issuer=issuer, subject=claims["sub"])
        logger.info("single sign-on created or linked user %s", username)
        return self.update_user(user, claims)

    def update_user(self, user: AbstractBaseUser, claims: dict[str, Any]) -> AbstractBaseUser:
        values = {
            "email": (claims.get("email") or claims.get("upn") or user.email or "")[:254],
            "first_name": (claims.get("given_name") or claims.get("name") or user.first_name or "")[:150],
            "last_name": (claims.get("family_name") or ("" if claims.get("name") else user.last_name) or "")[:150],
        }
        changed = [name for name, value in values.items() if getattr(user, name) != value]
        for name in changed:
            setattr(user, name, values[name])
        if changed:
            user.save(update_fields=changed)
        from portal.oidc_models import OidcIdentity

        OidcIdentity.objects.filter(user=user, subject=claims["sub"]).update(last_login_at=timezone.now())
        sync_memberships(user, claims)
        return user


def username_from_claims(claims: dict[str, Any]) -> str:
    """preferred_username (Entra ID: the UPN), else upn, email, sub."""
    for key in ("preferred_username", "upn", "email", "sub"):
        value = str(claims.get(key) or "").strip()
        if value:
            return value[:150]
    raise SuspiciousOperation("the ID token has no usable user name")


def groups_from_claims(claims: dict[str, Any]) -> list[str] | None:
    """The user's groups, or None when the provider left them out (Entra ID's groups overage)."""
    claim = settings.OIDC_GROUPS_CLAIM
    names = claims.get("_claim_names") or {}
    if claim not in claims and (claim in names or claims.get("hasgroups")):
        return None
    value = claims.get(claim) or []
    if isinstance(value, str):
        value = [value]
    return [str(group) for group in value]


def desired_memberships(groups: list[str]) -> dict[str, tuple[str, list[str]]]:
    """team slug → (role, granting groups) from PORTAL_OIDC_GROUP_MAP; approver wins over requester."""
    from workspaces.models import Membership

    wanted: dict[str, tuple[str, list[str]]] = {}
    for group in groups:
        rule = settings.OIDC_GROUP_MAP.get(group)
        if rule is None:
            continue
        team = rule.get("team") if isinstance(rule, dict) else None
        role = rule.get("role", Membership.Role.REQUESTER) if isinstance(rule, dict) else None
        if not team or role not in Membership.Role.values:
            logger.error("PORTAL_OIDC_GROUP_MAP[%r] must be {'team': <slug>, 'role': approver|requester}", group)
            continue
        current_role, sources = wanted.get(team, (Membership.Role.REQUESTER, []))
        best = Membership.Role.APPROVER if Membership.Role.APPROVER in (role, current_role) else role
        wanted[team] = (best, [*sources, group])
    return wanted


def sync_memberships(user: AbstractBaseUser, claims: dict[str, Any]) -> None:
    """Create, update and remove the memberships that groups grant; hand-made memberships stay as they are."""
    from portal.oidc_models import OidcMembership
    from workspaces.models import Membership, Team

    groups = groups_from_claims(claims)
    if groups is None:
        # Entra ID puts "_claim_names" instead of "groups" in tokens of users in more than 200 groups.
        # Fail closed: without the list no group may keep granting access.
        logger.warning(
            "user %s: the ID token has no %r claim but a groups overage marker; group-granted memberships are "
            "removed. Emit only the groups assigned to the app registration (groupMembershipClaims: "
            "ApplicationGroup) or use app roles with PORTAL_OIDC_GROUPS_CLAIM=roles (deploy/README.md).",
            user.get_username(),
            settings.OIDC_GROUPS_CLAIM,
        )
        groups = []
    wanted = desired_memberships(groups)
    teams = {team.slug: team for team in Team.objects.filter(slug__in=wanted)}
    for slug in sorted(set(wanted) - set(teams)):
        logger.warning("PORTAL_OIDC_GROUP_MAP names team %r, which does not exist", slug)
    with transaction.atomic():
        memberships = {m.team_id: m for m in Membership.objects.select_for_update().filter(user=user)}
        grants = {g.membership_id: g for g in OidcMembership.objects.filter(membership__user=user)}
        for slug, team in teams.items():
            role, sources = wanted[slug]
            membership = memberships.get(team.pk)
            if membership is None:
                membership = Membership.objects.create(team=team, user=user, role=role)
                OidcMembership.objects.create(membership=membership, groups=sources)
                logger.info("user %s joined team %s as %s (groups %s)", user.get_username(), slug, role, sources)
            elif membership.pk in grants:
                grant = grants[membership.pk]
                if membership.role != role:
                    logger.info("user %s is now %s in team %s", user.get_username(), role, slug)
                    membership.role = role
                    membership.save(update_fields=["role"])
                if grant.groups != sources:
                    grant.groups = sources
                    grant.save(update_fields=["groups", "updated_at"])
        keep = {team.pk for team in teams.values()}
        for membership_id, grant in grants.items():
            membership = next(m for m in memberships.values() if m.pk == membership_id)
            if membership.team_id not in keep:
                logger.info(
                    "user %s left team %s (groups %s gone)", user.get_username(), membership.team_id, grant.groups
                )
                membership.delete()  # the grant goes with it (CASCADE)
