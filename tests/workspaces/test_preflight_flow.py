"""Preflight in the request flow: stored on the request, live in the form, shown to approvers, in the API."""

import pytest

from tests.preflight import datasets
from tests.preflight.server import TestServer
from tests.workspaces.conftest import form_data
from workspaces.models import WorkspaceRequest

pytestmark = [pytest.mark.usefixtures("catalog"), pytest.mark.registry]


@pytest.fixture
def files():
    server = TestServer().start()
    server.add("/data/train.parquet", datasets.dolly_parquet(50))
    server.add("/data/wrong.csv", b"question,answer\nwhat?,that\n")
    xss = [{"prompt": "<script>alert('x')</script>", "completion": "<img src=x onerror=alert(1)>"}] * 3
    server.add("/data/xss.jsonl", datasets.jsonl(xss))
    yield server
    server.stop()


@pytest.fixture
def local(settings):
    settings.PREFLIGHT_ALLOW_HOSTS = ["127.0.0.1"]
    settings.PREFLIGHT_AFTER_CREATE = "inline"


@pytest.fixture
def payload(tuning_payload, files, htpasswd_registry):
    return {
        **tuning_payload,
        "input_urls": [files.url("/data/train.parquet")],
        "output_image": f"{htpasswd_registry.host}/team/phi-3-adapter:0.0.1",
        "registry_username": "pusher",
        "registry_password": htpasswd_registry.users["pusher"],
    }


def create(client, user, payload):
    client.force_login(user)
    response = client.post("/api/workspaces/", payload, content_type="application/json")
    assert response.status_code == 201, response.json()
    return WorkspaceRequest.objects.get(pk=response.json()["id"])


def test_checks_run_after_create_and_are_stored(
    local, client, requester, approver, payload, htpasswd_registry, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request = create(client, requester, payload)
    request.refresh_from_db()
    result = request.preflight
    assert result["checked_at"] and result["summary"] == {"errors": 0, "warnings": 0}
    [dataset] = result["datasets"]
    assert dataset["format"] == "parquet" and dataset["shape"] == "messages" and dataset["rows"] == 50
    assert result["registry"]["push_allowed"] is True and result["registry"]["auth"] == "basic"
    page = client.get(f"/workspaces/{request.pk}/").text
    assert 'id="preflight"' in page and "looks usable" in page and "push allowed" in page
    assert htpasswd_registry.users["pusher"] not in page and htpasswd_registry.users["pusher"] not in str(result)
    client.force_login(approver)
    assert "checks passed" in client.get("/workspaces/approvals/").text


def test_a_bad_dataset_is_a_warning_for_the_approver_not_a_refusal(
    local, client, requester, approver, payload, files, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request = create(client, requester, {**payload, "input_urls": [files.url("/data/wrong.csv")]})
    request.refresh_from_db()
    [dataset] = request.preflight["datasets"]
    assert any(f["code"] == "wrong-columns" for f in dataset["findings"])
    assert request.status == "PENDING_APPROVAL"
    client.force_login(approver)
    queue = client.get("/workspaces/approvals/").text
    assert "1 error" in queue
    detail = client.get(f"/workspaces/{request.pk}/").text
    assert "question, answer" in detail and "will not work" in detail


def test_model_output_like_preview_is_escaped(
    local, client, requester, payload, files, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        request = create(client, requester, {**payload, "input_urls": [files.url("/data/xss.jsonl")]})
    page = client.get(f"/workspaces/{request.pk}/").text
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<img src=x" not in page


def test_live_checks_in_the_form(local, client, requester, team, payload, htpasswd_registry):
    client.force_login(requester)
    data = form_data(payload, team)
    datasets_part = client.post("/workspaces/new/tuning/preflight/?part=datasets", data).text
    assert datasets_part.startswith('<div id="preflight-datasets"') and "parquet" in datasets_part
    wrong = client.post("/workspaces/new/tuning/preflight/?part=registry", {**data, "registry_password": "nope-123"})
    assert "wrong-credentials" in wrong.text or "rejected" in wrong.text.lower()
    assert "nope-123" not in wrong.text
    empty = client.post("/workspaces/new/tuning/preflight/?part=datasets", {**data, "input_urls": ""}).text
    assert "Dataset 1" not in empty


def test_refused_addresses_block_the_request_itself(client, requester, payload):
    client.force_login(requester)
    response = client.post(
        "/api/workspaces/", {**payload, "input_urls": ["http://127.0.0.1:9/x.parquet"]}, content_type="application/json"
    )
    assert response.status_code == 400 and "loopback" in response.json()["input_urls"][0]


def test_api_draft_check_and_rerun(
    local, client, requester, outsider, approver, payload, team, htpasswd_registry, pushed_image
):
    client.force_login(requester)
    draft = client.post(
        "/api/preflight/",
        {
            "team": team.slug,
            "preset": payload["preset"],
            "input_urls": payload["input_urls"],
            "output_image": pushed_image.reference,
            "registry_username": "admin",
            "registry_password": htpasswd_registry.users["admin"],
        },
        content_type="application/json",
    ).json()
    assert draft["datasets"][0]["shape"] == "messages"
    assert draft["registry"]["tag_exists"] is True
    assert any(f["code"] == "tag-exists" for f in draft["registry"]["findings"])
    request = create(client, requester, payload)
    assert request.preflight == {}
    rerun = client.post(f"/api/workspaces/{request.pk}/preflight/", {}, content_type="application/json")
    assert rerun.status_code == 200 and rerun.json()["preflight"]["summary"]["errors"] == 0
    client.force_login(outsider)
    assert client.post(f"/api/workspaces/{request.pk}/preflight/").status_code == 404
    client.force_login(approver)
    page = client.post(f"/workspaces/{request.pk}/preflight/")
    assert page.status_code == 302
