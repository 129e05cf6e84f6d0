"""The pure manifest builders: the exact objects for each kind of request, and their YAML."""

import base64
import json

import yaml

from workspaces.kaito import manifests
from workspaces.kaito.spec import Adapter, RegistryCredentials, WorkspaceSpec


def spec(**fields):
    base = {
        "name": "ws",
        "namespace": "team-ml",
        "kind": "inference",
        "preset": "phi-3-mini-128k-instruct",
        "instance_type": "Standard_NV36ads_A10_v5",
        "request_id": 7,
        "team": "ml",
        "requester": "rita",
    }
    return WorkspaceSpec(**{**base, **fields})


def test_inference_workspace_with_everything():
    objects = manifests.manifests(
        spec(
            hf_token_secret="ws-hf-token",
            inference_config="vllm:\n  max-model-len: 4096\n",
            adapters=(Adapter("a1", "myacr.azurecr.io/a1:1", ("pull",)),),
        ),
        hf_token="hf_secret",
    )
    assert [o["kind"] for o in objects] == ["Secret", "ConfigMap", "Workspace"]
    workspace = objects[-1]
    assert workspace["apiVersion"] == "kaito.sh/v1beta1" and "spec" not in workspace
    assert workspace["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kaito-portal",
        "kaito-portal/request-id": "7",
        "kaito-portal/team": "ml",
    }
    assert workspace["resource"] == {
        "labelSelector": {"matchLabels": {"kaito-portal/workspace": "ws"}},
        "instanceType": "Standard_NV36ads_A10_v5",
    }
    assert workspace["inference"] == {
        "preset": {"name": "phi-3-mini-128k-instruct", "presetOptions": {"modelAccessSecret": "ws-hf-token"}},
        "config": "ws-inference-config",
        "adapters": [{"source": {"name": "a1", "image": "myacr.azurecr.io/a1:1", "imagePullSecrets": ["pull"]}}],
    }
    assert objects[0]["data"] == {"HF_TOKEN": base64.b64encode(b"hf_secret").decode()}
    assert objects[1]["data"] == {"inference_config.yaml": "vllm:\n  max-model-len: 4096\n"}


def test_transformers_runtime_sets_its_annotation_and_count_and_byo_uses_the_labels():
    workspace = manifests.workspace_manifest(
        spec(runtime="transformers", instance_type="", node_selector={"apps": "gpu"})
    )
    assert workspace["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"
    assert workspace["resource"] == {"labelSelector": {"matchLabels": {"apps": "gpu"}}, "count": 1}


def test_tuning_with_volumes_and_with_images():
    volumes = manifests.workspace_manifest(spec(kind="tuning", method="lora", input_pvc="data", output_pvc="out"))
    assert volumes["tuning"] == {
        "preset": {"name": "phi-3-mini-128k-instruct"},
        "method": "lora",
        "input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}},
        "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}},
    }
    credentials = RegistryCredentials("myacr.azurecr.io", "user", "pa55")
    objects = manifests.manifests(
        spec(
            kind="tuning",
            method="qlora",
            input_image="myacr.azurecr.io/data:1",
            input_image_pull_secrets=("p",),
            output_image="myacr.azurecr.io/out:1",
            output_push_secret="ws-push",
            training_config="x: 1\n",
        ),
        registry=credentials,
    )
    secret, configmap, workspace = objects
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config == {
        "auths": {
            "myacr.azurecr.io": {
                "username": "user",
                "password": "pa55",
                "auth": base64.b64encode(b"user:pa55").decode(),
            }
        }
    }
    assert configmap["metadata"]["name"] == "ws-training-config"
    assert workspace["tuning"]["input"] == {"image": "myacr.azurecr.io/data:1", "imagePullSecrets": ["p"]}
    assert workspace["tuning"]["output"] == {"image": "myacr.azurecr.io/out:1", "imagePushSecret": "ws-push"}
    assert workspace["tuning"]["config"] == "ws-training-config"


def test_masked_hides_every_secret_value_and_yaml_round_trips():
    objects = manifests.manifests(spec(hf_token_secret="ws-hf-token"), hf_token="hf_secret")
    shown = manifests.to_yaml(manifests.masked(objects))
    assert "hf_secret" not in shown and base64.b64encode(b"hf_secret").decode() not in shown
    assert "HF_TOKEN: •••••• (hidden)" in shown
    assert list(yaml.safe_load_all(manifests.to_yaml(objects))) == objects


def test_configuration_files_are_shown_as_literal_blocks():
    text = manifests.to_yaml(manifests.config_map_manifests(spec(kind="tuning", training_config="a:\n  b: 1\n")))
    assert "training_config.yaml: |\n    a:\n      b: 1\n" in text


def test_crlf_from_the_browser_is_stored_with_unix_line_ends(client, requester, team, catalog, tuning_payload):
    from tests.workspaces.conftest import form_data
    from workspaces.models import WorkspaceRequest

    client.force_login(requester)
    config = "training_config:\r\n  QuantizationConfig:\r\n    load_in_4bit: true\r\n"
    response = client.post("/workspaces/new/tuning/", form_data({**tuning_payload, "training_config": config}, team))
    assert response.status_code == 302
    stored = WorkspaceRequest.objects.get().training_config
    assert "\r" not in stored and stored.startswith("training_config:\n  QuantizationConfig:\n")
