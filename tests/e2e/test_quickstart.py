"""KAITO's fine-tuning quick start in the browser: catalog, tuning request, approval, live status, adapter, chat."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.fixtures import sign_in, sign_in_with_password
from tests.e2e.pagecheck import check_fits, in_order, statuses_seen, unlabelled_fields, wait_live, watch_page
from tests.workspaces.conftest import DOLLY
from workspaces.models import Status, WorkspaceRequest

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

NAME = "workspace-tuning-phi-3"
PRESET = "phi-3-mini-128k-instruct"  # the quick start's (legacy) name; the catalog lists the Hugging Face id
OUTPUT_IMAGE = "myacr.azurecr.io/phi-3-adapter:0.0.1"
ADAPTER = f"{NAME}-adapter"
PROMPT = "What is KAITO in one sentence?"


def approve_in_queue(queue, request_id, shots, step):
    """The row arrives on the open queue without a reload; the approver approves it."""
    row = queue.locator(f"#approval-{request_id}")
    expect(row).to_be_visible(timeout=15_000)
    assert statuses_seen(queue) == []  # still the page opened before the request existed
    shots(queue, step)
    with queue.expect_navigation():  # htmx posts the decision, then the portal sends the queue again
        queue.click(f"#approve-{request_id}")
    expect(queue.locator("#messages")).to_contain_text(f"Approved {WorkspaceRequest.objects.get(pk=request_id)}")
    expect(queue.locator(f"#approval-{request_id}")).to_have_count(0)
    wait_live(queue)  # the decision reloaded the queue: watch the new page
    watch_page(queue)


def test_fine_tuning_quick_start(stack, people, new_page, shots):
    user = new_page()
    queue = new_page()  # the approver, in a second browser context (own cookies)

    # The approver keeps the approval queue open from the start.
    sign_in(queue, stack, people.approver)
    queue.goto(stack.url + "/workspaces/approvals/")
    expect(queue.locator("#approvals-empty")).to_be_visible()
    wait_live(queue)
    watch_page(queue)

    # The user signs in through the form and is taken to the catalog.
    user.goto(stack.url + "/catalog/")
    expect(user).to_have_url(re.compile(r"/accounts/login/\?next=/catalog/"))
    shots(user, "sign-in")
    sign_in_with_password(user, stack, people.requester.username, people.password)
    expect(user.locator("h1")).to_have_text("Model catalog")
    check_fits(user, shots, "catalog")

    # Search finds the quick start's model by its legacy name.
    user.fill("#id_q", PRESET)
    rows = user.locator("#preset-rows tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("microsoft/Phi-3-mini-128k-instruct")
    expect(rows.first).to_contain_text(f"alias {PRESET}")
    shots(user, "catalog-search")
    user.locator("#preset-rows a.cell-title").click()
    expect(user.locator("h1")).to_have_text("microsoft/Phi-3-mini-128k-instruct")
    check_fits(user, shots, "preset-detail")

    # Fine-tune: the form starts with the model and KAITO's QLoRA defaults.
    user.click("#fine-tune")
    expect(user.locator("h1")).to_have_text("Fine-tune a model")
    expect(user.locator("#id_preset")).to_have_value("microsoft/Phi-3-mini-128k-instruct")
    expect(user.locator("#id_method_0")).to_be_checked()
    training = user.locator("#id_training_config").input_value()
    assert "QuantizationConfig" in training and "load_in_4bit: true" in training, training
    user.fill("#id_name", NAME)
    user.fill("#id_input_urls", DOLLY)
    user.locator("#id_input_urls").blur()
    # No internet here: the dataset check says so, as a warning, and does not block the request.
    dataset = user.locator("#preflight-datasets")
    expect(dataset.locator(".finding-warning")).to_contain_text("Could not resolve huggingface.co")
    expect(dataset.locator(".finding-warning")).to_contain_text("The file could not be checked")
    expect(dataset.locator(".finding-error")).to_have_count(0)
    expect(dataset.locator("#preflight-dataset-1 > p .badge")).to_have_text("could not be checked")
    user.fill("#id_output_image", OUTPUT_IMAGE)
    user.fill("#id_registry_username", "acr-user")
    user.fill("#id_registry_password", "acr-pa55word-xyz")
    user.locator("#id_registry_password").blur()
    expect(user.locator("#preflight-registry .finding-warning")).to_contain_text("Could not resolve myacr.azurecr.io")
    # The live preview shows the manifest KAITO gets and what it costs.
    preview = user.locator("#manifest-preview")
    expect(preview).to_contain_text(f"name: {NAME}")
    expect(preview).to_contain_text("method: qlora")
    expect(preview).to_contain_text(f"image: {OUTPUT_IMAGE}")
    expect(preview).to_contain_text("dolly-15k-oai-style")
    assert "acr-pa55word-xyz" not in preview.inner_text()
    cost = user.locator("#preview-cost")
    expect(cost).to_contain_text(re.compile(r"Estimated cost\s*\$\d[\d,]*\.\d\d\s*for 4 h"))
    assert unlabelled_fields(user) == []
    check_fits(user, shots, "tuning-form")
    user.click("#submit-request")

    # The request page: pending approval; the approver's open queue gains the row without a reload.
    expect(user.locator("#request-status .badge")).to_have_text("Pending approval")
    tuning = WorkspaceRequest.objects.get(name=NAME)
    assert (tuning.kind, tuning.method, tuning.input_urls, tuning.output_image) == (
        "tuning",
        "qlora",
        [DOLLY],
        OUTPUT_IMAGE,
    )
    wait_live(user)
    watch_page(user)
    check_fits(user, shots, "tuning-request-pending")
    check_fits(queue, shots, "approval-queue")  # before the row arrives: the empty queue
    approve_in_queue(queue, tuning.pk, shots, "approval-queue-tuning-arrived")

    # Provisioning → Running → Succeeded on the user's page, pushed over its WebSocket.
    expect(user.locator("#request-status .badge")).to_have_text("Succeeded", timeout=60_000)
    seen = statuses_seen(user)
    assert in_order(seen, ["Pending approval", "Provisioning", "Running", "Succeeded"]), seen
    expect(user.locator("#events")).to_contain_text("Running → Succeeded")
    # The buttons and the job's log follow the status too: no Withdraw any more, the adapter can be served.
    expect(user.locator("#withdraw")).to_have_count(0)
    expect(user.locator("#deploy-adapter")).to_be_visible()
    expect(user.locator("#tuning-logs pre.log")).to_contain_text("Fine-tuning completed", timeout=15_000)
    expect(user.locator("#preflight")).to_contain_text(re.compile(r"Checked \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
    expect(user.locator("#preflight .finding-warning").first).to_contain_text("Could not resolve huggingface.co")
    assert statuses_seen(user)[-1] == "Succeeded"  # still the same page
    shots(user, "tuning-succeeded")

    # Deploy with this adapter: the inference form is filled in from the tuning request.
    user.click("#deploy-adapter")
    expect(user.locator("h1")).to_have_text("Deploy a model")
    expect(user.locator("#id_name")).to_have_value(f"{NAME}-serve")
    expect(user.locator("#id_preset")).to_have_value(PRESET)
    expect(user.locator("#id_adapters")).to_have_value(f"{ADAPTER} {OUTPUT_IMAGE} {NAME}-push")
    expect(user.locator("#manifest-preview")).to_contain_text(f"name: {ADAPTER}")
    check_fits(user, shots, "inference-form")
    user.click("#submit-request")
    expect(user.locator("#request-status .badge")).to_have_text("Pending approval")
    serving = WorkspaceRequest.objects.get(name=f"{NAME}-serve")
    wait_live(user)
    watch_page(user)
    approve_in_queue(queue, serving.pk, shots, "approval-queue-inference-arrived")
    expect(user.locator("#request-status .badge")).to_have_text("Ready", timeout=60_000)
    assert in_order(statuses_seen(user), ["Pending approval", "Provisioning", "Ready"]), statuses_seen(user)
    expect(user.locator("#open-chat")).to_be_visible()
    expect(user.locator("#delete")).to_be_visible()
    check_fits(user, shots, "inference-ready")
    assert WorkspaceRequest.objects.get(pk=serving.pk).status == Status.READY

    # Chat: the answer streams in word by word.
    user.click("#open-chat")
    expect(user.locator("#model-help")).to_contain_text("2 models")
    check_fits(user, shots, "chat")
    user.fill("#prompt", PROMPT)
    user.click("#send")
    streaming = user.locator("#transcript article.msg.streaming div.msg-text[id^=reply-]")
    expect(streaming).not_to_have_text("")
    first = streaming.inner_text()
    user.wait_for_timeout(500)
    second = streaming.inner_text()
    shots(user, "chat-streaming")
    assert 0 < len(first) < len(second), (first, second)
    answer = user.locator("#transcript article.msg-assistant .markdown")
    expect(answer).to_contain_text(f'You said: "{PROMPT}"', timeout=20_000)
    final = answer.inner_text()
    assert final.startswith(first.strip()) and len(second) < len(final), (first, second, final)
    shots(user, "chat-answered")

    # Compare the base model with the adapter, side by side.
    user.click("#open-compare")
    expect(user.locator("#model-status-b .help")).to_contain_text("2 models served")
    user.select_option("#id_model_b", ADAPTER)
    user.fill("#prompt", PROMPT)
    user.click("#send")
    answers = user.locator("#compare-runs article .markdown")
    expect(answers).to_have_count(2, timeout=20_000)
    base, tuned = answers.nth(0).inner_text(), answers.nth(1).inner_text()
    assert f'You said: "{PROMPT}"' in base and f'You said: "{PROMPT}"' in tuned
    assert tuned.startswith(f"[adapter {ADAPTER}]") and not base.startswith("[adapter"), (base, tuned)
    assert base != tuned
    check_fits(user, shots, "compare")
