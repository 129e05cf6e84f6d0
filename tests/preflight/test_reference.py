"""Image references parsed like ParseDockerRef, push-secret entries matched like docker, secrets scrubbed."""

import base64
import json

import pytest

from tests.preflight.server import Route
from workspaces.kaito.imageref import InvalidReference, parse_reference
from workspaces.preflight.registry import (
    Credentials,
    InvalidDockerConfig,
    check_registry,
    credentials_from_dockerconfigjson,
    parse_challenge,
    token_access,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "canonical", "api_host"),
    [
        ("ubuntu", "docker.io/library/ubuntu:latest", "registry-1.docker.io"),
        ("myuser/phi-3-adapter:v1", "docker.io/myuser/phi-3-adapter:v1", "registry-1.docker.io"),
        ("index.docker.io/foo", "docker.io/library/foo:latest", "registry-1.docker.io"),
        ("docker.io/foo/bar", "docker.io/foo/bar:latest", "registry-1.docker.io"),
        ("kaitoacr.azurecr.io/adapters/phi-3:0.1", "kaitoacr.azurecr.io/adapters/phi-3:0.1", "kaitoacr.azurecr.io"),
        ("localhost/foo", "localhost/foo:latest", "localhost"),
        ("localhost:5000/a/b__c-d.e", "localhost:5000/a/b__c-d.e:latest", "localhost:5000"),
        ("127.0.0.1:5000/x:T_1.2-3", "127.0.0.1:5000/x:T_1.2-3", "127.0.0.1:5000"),
        ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000"),
        ("Registry/foo", "Registry/foo:latest", "Registry"),  # capitals: a host name, not a namespace
        (f"foo@{DIGEST}", f"docker.io/library/foo@{DIGEST}", "registry-1.docker.io"),
        (f"ghcr.io/o/foo:v1@{DIGEST}", f"ghcr.io/o/foo@{DIGEST}", "ghcr.io"),  # tag dropped, as ParseDockerRef
    ],
)
def test_references_normalise_like_docker(text, canonical, api_host):
    ref = parse_reference(text)
    assert str(ref) == canonical and ref.api_host == api_host
    assert ref.to_dict()["canonical"] == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ghcr.io/MyOrg/adapter:v1", "repository name (MyOrg/adapter) must be lowercase"),
        ("Ubuntu", "repository name (library/Ubuntu) must be lowercase"),
        ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
        ("ghcr.io/org/adapter:", "not a valid image reference"),
        ("ghcr.io/org/-adapter", "not a valid image reference"),
        ("ghcr.io/org/adapter:" + "t" * 129, "not a valid image reference"),
        ("ghcr.io//adapter", "not a valid image reference"),
        ("https://ghcr.io/org/adapter", "not a valid image reference"),
        ("ghcr.io/org/adapter@sha256:abc", "not a valid image reference"),
        ("ghcr.io/org/adapter@sha256:" + "a" * 40, "needs 64 lowercase hex digits"),
        ("ghcr.io/org/adapter@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
        ("ghcr.io/" + "a" * 256, "must not be more than 255 characters"),
    ],
)
def test_malformed_references_say_why(text, message):
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    assert message in str(caught.value)


def test_dockerconfigjson_entries_match_like_docker_and_oras():
    auth = base64.b64encode(b"bob:s3cret:with:colons").decode()
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": auth},
            "myacr.azurecr.io": {"username": "00000000-0000", "password": "acr-pass"},
            "https://ghcr.io": {"username": "x", "identitytoken": "refresh-token"},
        }
    }
    hub = credentials_from_dockerconfigjson(json.dumps(config), "docker.io")
    assert (hub.username, hub.password) == ("bob", "s3cret:with:colons")
    assert credentials_from_dockerconfigjson(config, "myacr.azurecr.io").password == "acr-pass"
    assert credentials_from_dockerconfigjson(config, "ghcr.io").password == "refresh-token"
    assert credentials_from_dockerconfigjson(config, "quay.io") is None
    for bad, message in [
        ("not json", "not JSON"),
        ({"foo": {}}, 'no "auths"'),
        ({"auths": {"a.io": {"auth": "%%%"}}}, "not base64"),
    ]:
        with pytest.raises(InvalidDockerConfig, match=message):
            credentials_from_dockerconfigjson(bad, "a.io")


def test_credentials_never_show_their_secrets():
    creds = Credentials("bob", "hunter2-password", "tok-123")
    assert "hunter2" not in repr(creds) and "tok-123" not in repr(creds)
    assert "hunter2-password" in creds.secrets


def test_challenges_and_token_claims_parse():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert (
        scheme == "bearer" and params["scope"] == "repository:a/b:pull,push" and params["error"] == "insufficient_scope"
    )
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    payload = (
        base64.urlsafe_b64encode(json.dumps({"access": [{"name": "a", "actions": ["pull"]}]}).encode())
        .decode()
        .rstrip("=")
    )
    assert token_access(f"e30.{payload}.sig") == [{"name": "a", "actions": ["pull"]}]
    assert token_access("opaque-token") is None


def test_a_registry_echoing_the_password_is_scrubbed(server):
    password = "hunter2-secret-password"
    denied = {"errors": [{"code": "DENIED", "message": f"user bob with password {password} may not push"}]}
    server.add("/v2/", b"{}")
    server.add("/v2/tuned/x/blobs/uploads/", Route(status=403, data=json.dumps(denied).encode()))
    report = check_registry(
        f"{server.url('/').split('//')[1].rstrip('/')}/tuned/x:v1",
        credentials=Credentials("bob", password),
        allow_hosts={"127.0.0.1"},
        plain_http=True,
    )
    assert [f.code for f in report.findings] == [
        "no-push"
    ] and "DENIED: user bob with password *** may not push" in report.findings[0].message
    assert password not in json.dumps(report.to_dict())
