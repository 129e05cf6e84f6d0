"""Each KAITO rule (and each stricter portal rule), accepted and refused, through the form and the API."""

import html
import re

import pytest

from tests.workspaces.conftest import form_data
from workspaces import netguard
from workspaces.models import WorkspaceRequest

pytestmark = pytest.mark.usefixtures("catalog")

ADAPTER = {"name": "my-adapter", "image": "myacr.azurecr.io/adapters/phi:0.0.1", "pull_secrets": ["acr-pull"]}


def field_errors(page: str, field: str) -> str:
    match = re.search(rf'<div class="field has-error" id="field-{field}">(.*?)</div>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))) if match else ""


REFUSED = [
    # (kind, changes, field, message) — each row breaks exactly one rule.
    ("inference", {"name": "Phi_Chat"}, "name", "DNS-1123 label"),
    ("inference", {"name": "x" * 64}, "name", "at most 63 characters"),
    ("inference", {"preset": "falcon-7b"}, "preset", "no longer accepts falcon-7b"),
    ("inference", {"preset": "phi-2"}, "preset", "Model phi-2 is deprecated"),
    ("inference", {"preset": "nobody/nothing"}, "preset", "No preset named 'nobody/nothing'"),
    ("inference", {"instance_type": "Standard_NC6s_v3"}, "instance_type", "Pick Standard_NV36ads_A10_v5 instead"),
    ("inference", {"instance_type": "Standard_NC4as_T4_v3"}, "instance_type", "compute capability"),
    ("inference", {"instance_type": "Standard_D4s_v5"}, "instance_type", "not in KAITO's Azure SKU table"),
    ("inference", {"instance_type": ""}, "instance_type", "Choose an instance type"),
    ("inference", {"node_selector": {"apps": "gpu"}}, "node_selector", "not both"),
    ("inference", {"instance_type": "", "node_selector": {"kaito.sh/workspace": "x"}}, "node_selector", "reserved"),
    (
        "inference",
        {"preset": "microsoft/Phi-4-mini-instruct", "runtime": "transformers"},
        "preset",
        "does not support inference with the Hugging Face Transformers runtime",
    ),
    ("inference", {"preset": "phi-4", "runtime": "transformers"}, "instance_type", "Insufficient total GPU memory"),
    ("inference", {"adapters": [dict(ADAPTER, name=f"a{i}") for i in range(11)]}, "adapters", "At most 10 adapters"),
    ("inference", {"adapters": [ADAPTER, ADAPTER]}, "adapters", "listed twice"),
    ("inference", {"adapters": [dict(ADAPTER, image="MyACR.azurecr.io/Adapters/Phi")]}, "adapters", "lowercase"),
    ("inference", {"preset": "llama-3.1-8b-instruct"}, "hf_token", "gated model"),
    ("inference", {"inference_config": "vllm: [unclosed"}, "inference_config", "not valid YAML"),
    (
        "inference",
        {"inference_config": "vllm:\n  max-model-len: 200000\n"},
        "inference_config",
        "exceeds the model's maximum supported context window 131072",
    ),
    ("inference", {"hours": 100000}, "hours", "between 1 and 720 hours"),
    ("tuning", {"preset": "meta-llama/Llama-3.1-8B-Instruct"}, "preset", "KAITO cannot fine-tune"),
    ("tuning", {"input_urls": []}, "input_urls", "exactly one dataset source"),
    ("tuning", {"input_pvc": "datasets"}, "input_urls", "exactly one dataset source"),
    ("tuning", {"input_urls": ["http://localhost:8080/train.jsonl"]}, "input_urls", "local or cloud metadata"),
    ("tuning", {"input_urls": ["http://169.254.169.254/latest"]}, "input_urls", "link-local"),
    ("tuning", {"input_urls": ["http://2130706433/train.parquet"]}, "input_urls", "unusual notation"),
    ("tuning", {"input_urls": ["ftp://example.com/train.parquet"]}, "input_urls", "Only absolute http"),
    ("tuning", {"input_urls": [], "input_image": "Datasets/Dolly"}, "input_image", "lowercase"),
    ("tuning", {"output_image": ""}, "output_image", "exactly one destination"),
    ("tuning", {"output_pvc": "adapters"}, "output_image", "exactly one destination"),
    ("tuning", {"output_image": "myacr.azurecr.io/Team/Adapter:1"}, "output_image", "lowercase"),
    ("tuning", {"registry_username": "", "registry_password": ""}, "output_push_secret", "KAITO needs a push secret"),
    ("tuning", {"output_push_secret": "acr-push"}, "output_push_secret", "not both"),
    (
        "tuning",
        {"training_config": "training_config:\n  QuantizationConfig:\n    load_in_4bit: false\n"},
        "training_config",
        "For method 'qlora', either 'load_in_4bit' or 'load_in_8bit' must be true",
    ),
    (
        "tuning",
        {"method": "lora", "training_config": "training_config:\n  QuantizationConfig:\n    load_in_4bit: true\n"},
        "training_config",
        "For method 'lora'",
    ),
    (
        "tuning",
        {"training_config": "training_config:\n  Optimizer: {lr: 1}\n"},
        "training_config",
        "Unrecognized section: Optimizer",
    ),
    (
        "tuning",
        {
            "training_config": "training_config:\n  QuantizationConfig: {load_in_4bit: true}\n"
            "  TrainingArguments: {output_dir: ../etc}\n"
        },
        "training_config",
        "under /mnt",
    ),
    (
        "tuning",
        {
            "training_config": "training_config:\n  QuantizationConfig: {load_in_4bit: true}\n"
            "  DatasetConfig: {train_test_split: 0}\n"
        },
        "training_config",
        "(0, 1]",
    ),
    ("tuning", {"training_config": "training_config: [1, 2"}, "training_config", "not valid YAML"),
    ("tuning", {"hours": 500}, "hours", "between 1 and 168 hours"),
]

ACCEPTED = [
    ("inference", {}),
    ("inference", {"preset": "phi-3-mini-128k-instruct"}),  # legacy alias
    ("inference", {"instance_type": "", "node_selector": {"apps": "gpu"}}),  # bring your own nodes
    ("inference", {"runtime": "transformers"}),
    ("inference", {"adapters": [ADAPTER]}),
    ("inference", {"preset": "llama-3.1-8b-instruct", "hf_token": "hf_abcdefghijklmnop"}),
    ("inference", {"inference_config": "vllm:\n  max-model-len: 4096\n"}),
    ("tuning", {}),
    (
        "tuning",
        {"method": "lora", "training_config": "training_config:\n  QuantizationConfig:\n    load_in_4bit: false\n"},
    ),
    ("tuning", {"input_urls": [], "input_pvc": "datasets"}),
    ("tuning", {"input_urls": [], "input_image": "myacr.azurecr.io/datasets/dolly:1"}),
    ("tuning", {"output_image": "", "registry_username": "", "registry_password": "", "output_pvc": "adapters"}),
    ("tuning", {"registry_username": "", "registry_password": "", "output_push_secret": "acr-push"}),
]


def payload_for(kind, changes, inference_payload, tuning_payload):
    return {**(inference_payload if kind == "inference" else tuning_payload), **changes}


@pytest.mark.parametrize(("kind", "changes", "field", "message"), REFUSED)
def test_refused_through_the_form(
    client, requester, team, inference_payload, tuning_payload, kind, changes, field, message
):
    client.force_login(requester)
    payload = payload_for(kind, changes, inference_payload, tuning_payload)
    response = client.post(f"/workspaces/new/{kind}/", form_data(payload, team))
    assert response.status_code == 200
    assert message in field_errors(response.text, field), response.text[:200]
    assert not WorkspaceRequest.objects.exists()


@pytest.mark.parametrize(("kind", "changes", "field", "message"), REFUSED)
def test_refused_through_the_api(client, requester, inference_payload, tuning_payload, kind, changes, field, message):
    client.force_login(requester)
    response = client.post(
        "/api/workspaces/",
        payload_for(kind, changes, inference_payload, tuning_payload),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert any(message in text for text in response.json().get(field, [])), response.json()
    assert not WorkspaceRequest.objects.exists()


@pytest.mark.parametrize(("kind", "changes"), ACCEPTED)
def test_accepted_through_the_form(client, requester, team, inference_payload, tuning_payload, kind, changes):
    client.force_login(requester)
    response = client.post(
        f"/workspaces/new/{kind}/", form_data(payload_for(kind, changes, inference_payload, tuning_payload), team)
    )
    assert response.status_code == 302, re.findall(r'class="errorlist"[^>]*>(.*?)</ul>', response.text, re.S)
    created = WorkspaceRequest.objects.get()
    assert response["Location"] == f"/workspaces/{created.pk}/"
    assert created.status == "PENDING_APPROVAL"


@pytest.mark.parametrize(("kind", "changes"), ACCEPTED)
def test_accepted_through_the_api(client, requester, inference_payload, tuning_payload, kind, changes):
    client.force_login(requester)
    response = client.post(
        "/api/workspaces/",
        payload_for(kind, changes, inference_payload, tuning_payload),
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "PENDING_APPROVAL"


def test_api_only_rules(client, requester, other_team, inference_payload, tuning_payload):
    client.force_login(requester)
    cases = [
        ({**inference_payload, "team": other_team.slug}, "team", "not a member of Search"),
        ({**tuning_payload, "method": "foo"}, "method", "must be 'qlora' or 'lora'"),
        ({**tuning_payload, "node_selector": {"apps": "gpu"}, "instance_type": ""}, "node_selector", "tunes only"),
        ({**inference_payload, "adapters": [dict(ADAPTER, strength="0.5")]}, "adapters", "vLLM does not support"),
        (
            {**inference_payload, "runtime": "transformers", "adapters": [dict(ADAPTER, strength="2")]},
            "adapters",
            "between 0 and 1",
        ),
        ({**tuning_payload, "node_count": 2}, "node_count", "Tuning does not currently support multinode"),
        ({**inference_payload, "runtime": "transformers", "node_count": 2}, "node_count", "with the Transformers"),
        ({**inference_payload, "node_count": 3}, "node_count", "KAITO's node estimator sets the node count"),
    ]
    for payload, field, message in cases:
        response = client.post("/api/workspaces/", payload, content_type="application/json")
        assert response.status_code == 400
        assert any(message in text for text in response.json()[field]), (field, response.json())
    # KAITO accepts the method case-insensitively; the portal stores it lower-case.
    ok = client.post("/api/workspaces/", {**tuning_payload, "method": "QLoRA"}, content_type="application/json")
    assert ok.status_code == 201 and ok.json()["method"] == "qlora"


def test_name_must_be_unique_in_the_namespace_while_live(client, requester, inference_payload):
    client.force_login(requester)
    assert client.post("/api/workspaces/", inference_payload, content_type="application/json").status_code == 201
    again = client.post("/api/workspaces/", inference_payload, content_type="application/json")
    assert again.status_code == 400
    assert "already exists in namespace team-ml" in again.json()["name"][0]
    WorkspaceRequest.objects.update(status="WITHDRAWN")
    assert client.post("/api/workspaces/", inference_payload, content_type="application/json").status_code == 201


def test_host_names_resolving_to_internal_addresses_are_refused(client, requester, tuning_payload, monkeypatch):
    table = {"datasets.example.com": ["10.20.30.40"], "public.example.com": ["93.184.216.34"]}
    monkeypatch.setattr(netguard, "_default_resolver", lambda host, port: table[host])
    client.force_login(requester)
    payload = {**tuning_payload, "input_urls": ["https://datasets.example.com/train.parquet"]}
    response = client.post("/api/workspaces/", payload, content_type="application/json")
    assert response.status_code == 400
    assert "resolves to 10.20.30.40, a private network address" in response.json()["input_urls"][0]
    payload["input_urls"] = ["https://public.example.com/train.parquet"]
    assert client.post("/api/workspaces/", payload, content_type="application/json").status_code == 201


def test_the_form_keeps_what_the_user_typed(client, requester, team, tuning_payload):
    client.force_login(requester)
    payload = {
        **tuning_payload,
        "instance_type": "Standard_NC6s_v3",
        "purpose": "quick start <b>tuning</b>",
        "input_urls": ["http://10.0.0.1/train.parquet", "https://example.org/more.jsonl"],
    }
    page = client.post("/workspaces/new/tuning/", form_data(payload, team)).text
    assert 'value="workspace-tuning-phi-3"' in page
    assert 'value="phi-3-mini-128k-instruct"' in page
    assert '<option value="Standard_NC6s_v3" selected>' in page
    assert "http://10.0.0.1/train.parquet\nhttps://example.org/more.jsonl" in html.unescape(page)
    assert "quick start &lt;b&gt;tuning&lt;/b&gt;" in page
    assert 'value="myacr.azurecr.io/phi-3-adapter:0.0.1"' in page
    assert 'value="acr-user"' in page
    assert "acr-pa55word-xyz" not in page  # the password is never echoed back
    assert 'id="password-reenter"' in page
