"""Registry preflight against the real local registry (distribution v3) with htpasswd and token auth."""

import base64
import json
import logging
from pathlib import Path

import pytest

from devcluster.registry import LocalRegistry
from tests.preflight.server import TestServer
from workspaces.preflight.registry import Credentials, check_registry

pytestmark = pytest.mark.registry


def check(image, **kwargs):
    kwargs.setdefault("allow_hosts", {"127.0.0.1"})
    kwargs.setdefault("plain_http", True)
    report = check_registry(image, **kwargs)
    json.dumps(report.to_dict())
    return report


def codes(report, severity=None):
    return [f.code for f in report.findings if severity in (None, f.severity)]


def open_uploads(registry: LocalRegistry, repository: str) -> list[Path]:
    """Upload sessions still alive (cancelling removes `startedat` and `data`; empty folders remain)."""
    uploads = registry.workdir / "data/docker/registry/v2/repositories" / repository / "_uploads"
    return [p for p in uploads.glob("*/startedat")] if uploads.exists() else []


def test_allowed_push_with_htpasswd_starts_and_cancels_an_upload(htpasswd_registry):
    reg = htpasswd_registry
    report = check(f"{reg.host}/tuned/phi-3-adapter:v1", credentials=Credentials("pusher", reg.users["pusher"]))
    assert report.ok and report.findings == [], report.findings
    assert (report.auth, report.push_allowed, report.tag_exists) == ("basic", True, False)
    assert report.upload_cancelled
    assert report.reference["canonical"] == f"{reg.host}/tuned/phi-3-adapter:v1"
    assert open_uploads(reg, "tuned/phi-3-adapter") == []  # the upload was cancelled, nothing pushed
    status, _, _ = reg.api("GET", "/v2/tuned/phi-3-adapter/tags/list", headers=_basic("admin", reg))
    assert status == 404  # the repository never came into being


def test_wrong_password_is_an_error(htpasswd_registry):
    report = check(f"{htpasswd_registry.host}/tuned/x:v1", credentials=Credentials("pusher", "wrong-password"))
    assert codes(report) == ["wrong-credentials"] and report.push_allowed is None


def test_missing_credentials_are_an_error(htpasswd_registry):
    report = check(f"{htpasswd_registry.host}/tuned/x:v1")
    assert codes(report, "error") == ["no-credentials"]


def test_existing_tag_is_a_warning(pushed_image):
    reg = pushed_image.registry
    report = check(pushed_image.reference, credentials=Credentials("admin", reg.users["admin"]))
    assert report.ok and report.push_allowed and report.tag_exists
    assert codes(report) == ["tag-exists"] and report.existing_digest == pushed_image.digest
    other = check(f"{reg.host}/{pushed_image.repository}:v2", credentials=Credentials("admin", reg.users["admin"]))
    assert other.tag_exists is False and other.findings == []


def test_dockerconfigjson_from_a_push_secret(htpasswd_registry):
    reg = htpasswd_registry
    auth = base64.b64encode(f"pusher:{reg.users['pusher']}".encode()).decode()
    secret = {"auths": {f"http://{reg.host}/": {"auth": auth}}}
    assert check(f"{reg.host}/tuned/y:v1", dockerconfigjson=json.dumps(secret)).push_allowed
    report = check("ghcr.io/org/adapter:v1", dockerconfigjson=secret)
    assert codes(report) == ["no-credentials"] and f"it has: {reg.host}" in report.findings[0].message


def test_bearer_token_flow_end_to_end(token_registry):
    reg = token_registry
    report = check(f"{reg.host}/tuned/qwen-adapter:v3", credentials=Credentials("admin", reg.users["admin"]))
    assert report.ok and report.findings == [] and (report.auth, report.push_allowed) == ("bearer", True)
    assert report.granted == [{"type": "repository", "name": "tuned/qwen-adapter", "actions": ["push", "pull"]}]
    assert report.upload_cancelled  # with a second, delete-only token
    delete_only = [{"type": "repository", "name": "tuned/qwen-adapter", "actions": ["delete"]}]
    assert reg.standin.issued[-2:] == [
        {"user": "admin", "access": report.granted},
        {"user": "admin", "access": delete_only},
    ]
    assert open_uploads(reg, "tuned/qwen-adapter") == []


def test_pull_only_user_has_no_push_permission(token_registry):
    reg = token_registry
    report = check(f"{reg.host}/tuned/qwen-adapter:v3", credentials=Credentials("puller", reg.users["puller"]))
    assert codes(report, "error") == ["no-push"] and report.push_allowed is False
    assert report.granted[0]["actions"] == ["pull"]
    assert "may not push to tuned/qwen-adapter" in report.findings[0].message


def test_token_service_rejects_a_wrong_password(token_registry):
    report = check(f"{token_registry.host}/tuned/x:v1", credentials=Credentials("admin", "not-the-password"))
    assert codes(report) == ["wrong-credentials"] and "token service" in report.findings[0].message


def test_secrets_appear_in_no_result_and_no_log(htpasswd_registry, token_registry, caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    reports = []
    for reg, user in ((htpasswd_registry, "pusher"), (token_registry, "admin"), (token_registry, "puller")):
        for password in (reg.users[user], reg.users[user] + "-wrong"):
            report = check(f"{reg.host}/tuned/z:v1", credentials=Credentials(user, password))
            reports.append((user, password, report))
    assert len(token_registry.standin.issued) >= 4 and len(caplog.records) > 10
    for user, password, report in reports:
        dumped = json.dumps(report.to_dict())
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        for text in (dumped, caplog.text):
            assert password not in text and basic not in text
        assert "eyJ" not in dumped  # no JWT (their header always starts with eyJ)
    assert "eyJ" not in caplog.text


def test_unreachable_and_refused_registries(htpasswd_registry):
    closed = TestServer()
    port = closed.port
    closed.stop()
    report = check(f"127.0.0.1:{port}/a/b:v1", credentials=Credentials("user", "password"))
    assert report.ok and codes(report) == ["unreachable"] and "Could not connect" in report.findings[0].message
    production = check_registry(f"{htpasswd_registry.host}/a/b:v1", credentials=Credentials("user", "password"))
    assert codes(production) == ["refused"] and "loopback" in production.findings[0].message


def test_invalid_references_and_digests_are_errors():
    report = check("ghcr.io/MyOrg/Adapter:v1")
    assert codes(report) == ["reference"] and "must be lowercase" in report.findings[0].message
    report = check("ghcr.io/org/adapter@sha256:" + "a" * 64)
    assert codes(report) == ["digest"]


def test_local_registry_stops_cleanly():
    with LocalRegistry("none") as reg:
        pid, workdir = reg._proc.pid, reg.workdir
        assert reg.api("GET", "/v2/")[0] == 200
        assert Path(f"/proc/{pid}").exists() and workdir.exists()
    assert not Path(f"/proc/{pid}").exists() and not workdir.exists()


def _basic(user, reg):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{reg.users[user]}".encode()).decode()}
