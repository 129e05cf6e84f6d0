"""Submitted secrets never show up again: not in the database, logs, pages, API answers or e-mails."""

import logging

import pytest
from django.apps import apps
from django.core import mail

from tests.workspaces.conftest import form_data
from workspaces.models import PendingSecret, WorkspaceRequest
from workspaces.services.preview import request_manifests
from workspaces.services.secrets import secret_load

pytestmark = pytest.mark.usefixtures("catalog")

HF_TOKEN = "hf_TopSecretTokenValue123"
PASSWORD = "acr-pa55word-xyz"


def every_stored_value() -> str:
    """Every column of every row of every table, as text (binary columns included)."""
    parts = []
    for model in apps.get_models():
        for row in model.objects.values_list():
            parts.append(" ".join(repr(bytes(v)) if isinstance(v, memoryview) else repr(v) for v in row))
    return "\n".join(parts)


def test_secrets_stay_secret(
    client, requester, approver, team, inference_payload, tuning_payload, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    client.force_login(requester)
    inference = {**inference_payload, "preset": "llama-3.1-8b-instruct", "hf_token": HF_TOKEN}
    pages = []
    with django_capture_on_commit_callbacks(execute=True):
        pages.append(client.post("/workspaces/new/inference/preview/", form_data(inference, team)).text)
        form = client.post("/workspaces/new/inference/", form_data(inference, team), follow=True)
        pages.append(form.text)
        api = client.post("/api/workspaces/", tuning_payload, content_type="application/json")
        pages.append(api.text)
        # A failed submission does not echo the secret either.
        pages.append(client.post("/workspaces/new/tuning/", form_data({**tuning_payload, "name": "Bad"}, team)).text)
    tuning = WorkspaceRequest.objects.get(kind="tuning")
    llama = WorkspaceRequest.objects.get(kind="inference")
    for obj in (tuning, llama):
        pages += [
            client.get(f"/workspaces/{obj.pk}/").text,
            client.get(f"/workspaces/{obj.pk}/manifest.yaml").content.decode(),
            client.get(f"/api/workspaces/{obj.pk}/").text,
            client.get(f"/api/workspaces/{obj.pk}/manifest/").text,
        ]
    pages += [client.get("/workspaces/").text, client.get("/api/workspaces/").text]
    client.force_login(approver)
    pages.append(client.get("/workspaces/approvals/").text)
    outputs = {
        "pages and API answers": "\n".join(pages),
        "logs": caplog.text,
        "e-mails": "\n".join(m.subject + m.body for m in mail.outbox),
        "database": every_stored_value(),
    }
    for where, text in outputs.items():
        assert HF_TOKEN not in text, where
        assert PASSWORD not in text, where
    # The preview and the page say a Secret is created, with its value hidden.
    assert "HF_TOKEN: •••••• (hidden)" in pages[0]
    # They are there, encrypted, for the apply step — and only there.
    assert PendingSecret.objects.count() == 2
    assert secret_load(request=llama, purpose="hf_token") == {"token": HF_TOKEN}
    applied = request_manifests(request=tuning, reveal=True)
    assert applied[0]["type"] == "kubernetes.io/dockerconfigjson"
    shown = request_manifests(request=tuning)
    assert shown[0]["data"] == {".dockerconfigjson": "•••••• (hidden)"}


def test_withdrawing_discards_the_secret(client, requester, tuning_payload):
    client.force_login(requester)
    created = client.post("/api/workspaces/", tuning_payload, content_type="application/json").json()
    assert PendingSecret.objects.count() == 1
    client.post(f"/api/workspaces/{created['id']}/withdraw/", {}, content_type="application/json")
    assert PendingSecret.objects.count() == 0
