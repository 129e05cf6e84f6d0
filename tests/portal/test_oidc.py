"""OpenID Connect sign-in through the local provider over real HTTP: tokens checked strictly, groups → teams."""

import http.client
import logging
from urllib.parse import urlsplit

import pytest

from devcluster.oidc_standin import OidcStandin
from portal import oidc
from portal.oidc_models import OidcIdentity, OidcMembership
from workspaces.models import Membership, Team

pytestmark = pytest.mark.django_db
APPROVERS, MEMBERS, SEARCH = "grp-ml-approvers", "grp-ml-members", "0f6d3c1e-search-members"


@pytest.fixture(scope="module")
def standin():
    with OidcStandin(client_id="portal-test", client_secret="s3cret-client") as provider:
        yield provider


@pytest.fixture
def provider(standin, settings):
    standin.fault = None
    standin.user = {
        "sub": "sub-ada-1",
        "preferred_username": "ada@contoso.example",
        "email": "ada@contoso.example",
        "name": "Ada Lovelace",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "groups": [APPROVERS, SEARCH],
    }
    settings.OIDC_ENABLED = True
    settings.OIDC_OP_ISSUER = standin.issuer
    settings.OIDC_RP_CLIENT_ID = "portal-test"
    settings.OIDC_RP_CLIENT_SECRET = "s3cret-client"
    settings.OIDC_PROVIDER_NAME = "Contoso ID"
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend", "portal.oidc.OIDCBackend"]
    settings.OIDC_GROUP_MAP = {
        APPROVERS: {"team": "ml", "role": "approver"},
        MEMBERS: {"team": "ml", "role": "requester"},
        SEARCH: {"team": "search", "role": "requester"},
        "grp-ghost": {"team": "no-such-team", "role": "approver"},
    }
    Team.objects.create(name="ML", slug="ml", namespace="team-ml")
    Team.objects.create(name="Search", slug="search", namespace="team-search")
    return standin


def follow_provider(url):
    """What the browser does at the provider: one real HTTP request, whose redirect leads back to the portal."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def sign_in(client, provider, next_url="/workspaces/"):
    start = client.get("/oidc/authenticate/", {"next": next_url})
    assert start.status_code == 302 and start["Location"].startswith(f"{provider.issuer}/authorize?")
    assert "code_challenge=" in start["Location"] and "nonce=" in start["Location"]
    status, back = follow_provider(start["Location"])
    assert status == 302 and back.startswith("http://testserver/oidc/callback/?code="), back
    return client.get(back.removeprefix("http://testserver"))


def roles(user):
    return {m.team.slug: m.role for m in Membership.objects.filter(user=user).select_related("team")}


def test_full_flow_creates_the_user_and_maps_groups_to_teams(client, provider, django_user_model):
    done = sign_in(client, provider)
    assert done.status_code == 302 and done["Location"] == "/workspaces/"
    user = django_user_model.objects.get(username="ada@contoso.example")
    assert (user.email, user.first_name, user.last_name) == ("ada@contoso.example", "Ada", "Lovelace")
    assert not user.has_usable_password() and not user.is_staff
    assert OidcIdentity.objects.get(user=user).subject == "sub-ada-1"
    assert roles(user) == {"ml": "approver", "search": "requester"}
    assert client.get("/workspaces/").status_code == 200  # signed in
    # After discovery (cached): the browser at /authorize, then the backend's token, JWKS and userinfo calls.
    assert provider.requests[-4:] == ["GET /authorize", "POST /token", "GET /jwks", "GET /userinfo"]


def test_groups_changing_updates_and_removes_only_what_sign_in_granted(client, provider, django_user_model):
    sign_in(client, provider)
    user = django_user_model.objects.get(username="ada@contoso.example")
    other = Team.objects.create(name="Other", slug="other", namespace="team-other")
    Membership.objects.create(team=other, user=user, role="approver")  # made by an admin by hand
    client.logout()
    provider.user["groups"] = [MEMBERS]  # no longer an approver, no longer in search
    provider.user["email"] = "ada.l@contoso.example"
    assert sign_in(client, provider).status_code == 302
    user.refresh_from_db()
    assert user.email == "ada.l@contoso.example"
    assert roles(user) == {"ml": "requester", "other": "approver"}
    assert OidcMembership.objects.get(membership__team__slug="ml").groups == [MEMBERS]
    assert not OidcMembership.objects.filter(membership__team__slug="other").exists()
    client.logout()
    provider.user["groups"] = []
    sign_in(client, provider)
    assert roles(user) == {"other": "approver"}  # the hand-made membership stays


def test_approver_wins_when_two_groups_map_to_one_team(client, provider, django_user_model):
    provider.user["groups"] = [MEMBERS, APPROVERS, "unmapped-group"]
    sign_in(client, provider)
    assert roles(django_user_model.objects.get(username="ada@contoso.example")) == {"ml": "approver"}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong_signature", "Signature verification failed"),
        ("wrong_audience", "Audience doesn't match"),
        ("expired", "Signature has expired"),
        ("wrong_issuer", "Invalid issuer"),
        ("wrong_nonce", "Nonce verification failed"),
    ],
)
def test_bad_id_tokens_are_refused(client, provider, django_user_model, caplog, fault, reason):
    provider.fault = fault
    with caplog.at_level(logging.WARNING, logger="portal.oidc"):
        done = sign_in(client, provider)
    assert done.status_code == 302 and done["Location"] == "/accounts/login/?sso=failed"
    assert not django_user_model.objects.exists()
    assert "_auth_user_id" not in client.session
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert not any(r.getMessage().count("eyJ") for r in caplog.records)  # no token in the logs
    page = client.get(done["Location"])
    assert b"Single sign-on did not complete" in page.content


def test_entra_groups_overage_warns_and_removes_group_memberships(client, provider, django_user_model, caplog):
    sign_in(client, provider)
    user = django_user_model.objects.get(username="ada@contoso.example")
    assert roles(user)
    client.logout()
    provider.fault = "overage"
    with caplog.at_level(logging.WARNING, logger="portal.oidc"):
        assert sign_in(client, provider)["Location"] == "/workspaces/"  # still signed in
    assert roles(user) == {}
    assert any("groups overage" in r.getMessage() and "ApplicationGroup" in r.getMessage() for r in caplog.records)


def test_a_local_account_with_the_same_name_is_not_taken_over(client, provider, django_user_model, settings):
    local = django_user_model.objects.create_user(username="ada@contoso.example", password="pw-local-123")
    assert sign_in(client, provider)["Location"] == "/accounts/login/?sso=failed"
    assert not OidcIdentity.objects.exists()
    settings.OIDC_LINK_EXISTING_USERS = True
    assert sign_in(client, provider)["Location"] == "/workspaces/"
    assert OidcIdentity.objects.get().user == local and local.memberships.count() == 2


def test_local_accounts_keep_working_and_the_login_page_offers_both(client, provider, django_user_model, settings):
    django_user_model.objects.create_user(username="bob", password="pw-bob-12345")
    page = client.get("/accounts/login/?next=/workspaces/")
    assert b'name="password"' in page.content
    assert b"Sign in with Contoso ID" in page.content and b"/oidc/authenticate/?next=%2Fworkspaces%2F" in page.content
    provider.requests.clear()
    assert client.post("/accounts/login/", {"username": "bob", "password": "pw-bob-12345"}).status_code == 302
    assert provider.requests == []  # a password sign-in never calls the provider
    settings.OIDC_ENABLED = False
    client.logout()
    assert b"Sign in with" not in client.get("/accounts/login/").content
    assert client.get("/oidc/authenticate/").status_code == 404


def test_the_user_is_found_by_subject_not_by_email(client, provider, django_user_model):
    sign_in(client, provider)
    client.logout()
    provider.user.update(sub="sub-mallory", preferred_username="mallory@contoso.example")  # same email as Ada
    sign_in(client, provider)
    assert django_user_model.objects.filter(email="ada@contoso.example").count() == 2
    assert OidcIdentity.objects.count() == 2


def test_discovery_must_name_the_configured_issuer(provider, settings):
    oidc._cache.clear()
    settings.OIDC_OP_ISSUER = provider.issuer + "/"
    assert oidc.endpoint("OIDC_OP_TOKEN_ENDPOINT") == f"{provider.issuer}/token"
    with pytest.raises(Exception, match="names issuer"):
        oidc.discovery(provider.issuer + "/tenant-b")


def test_a_malformed_group_map_entry_is_logged_and_skipped(client, provider, django_user_model, settings, caplog):
    settings.OIDC_GROUP_MAP = {APPROVERS: "ml", SEARCH: {"team": "search", "role": "owner"}, MEMBERS: {"team": "ml"}}
    provider.user["groups"] = [APPROVERS, SEARCH, MEMBERS]
    with caplog.at_level(logging.ERROR, logger="portal.oidc"):
        assert sign_in(client, provider)["Location"] == "/workspaces/"
    assert roles(django_user_model.objects.get(username="ada@contoso.example")) == {"ml": "requester"}
    assert sum("PORTAL_OIDC_GROUP_MAP" in r.getMessage() for r in caplog.records) == 2
