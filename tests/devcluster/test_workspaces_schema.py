"""The Workspace CRD's OpenAPI schema, enforced by the real apiserver (422), and what it lets through."""

import json

import pytest
from kubernetes import client

from tests.devcluster.conftest import GROUP, PLURAL, VERSION, workspace

pytestmark = pytest.mark.cluster


def _refused(custom, ns, body):
    with pytest.raises(client.ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    status = json.loads(err.value.body)
    return err.value.status, status


def test_missing_label_selector_is_refused(custom, k8s_namespace):
    body = workspace("no-selector")
    del body["resource"]["labelSelector"]
    code, status = _refused(custom, k8s_namespace, body)
    assert code == 422
    assert status["reason"] == "Invalid"
    assert status["message"] == 'Workspace.kaito.sh "no-selector" is invalid: resource.labelSelector: Required value'
    assert [(c["field"], c["reason"]) for c in status["details"]["causes"]] == [
        ("resource.labelSelector", "FieldValueRequired")
    ]


def test_tuning_without_input_and_output_is_refused(custom, k8s_namespace):
    body = workspace("tuning-empty")
    del body["inference"]
    body["tuning"] = {"method": "qlora", "preset": {"name": "phi-3-mini-128k-instruct"}}
    code, status = _refused(custom, k8s_namespace, body)
    assert code == 422
    assert status["message"] == (
        'Workspace.kaito.sh "tuning-empty" is invalid: [tuning.input: Required value, tuning.output: Required value]'
    )


def test_count_must_be_an_integer(custom, k8s_namespace):
    body = workspace("count-two")
    body["resource"]["count"] = "two"
    code, status = _refused(custom, k8s_namespace, body)
    assert code == 422
    assert status["message"] == (
        'Workspace.kaito.sh "count-two" is invalid: resource.count: Invalid value: "string": '
        'resource.count in body must be of type integer: "string"'
    )


def test_enum_and_name_rules_are_enforced(custom, k8s_namespace):
    body = workspace("bad-access")
    body["inference"]["preset"]["accessMode"] = "secret"
    code, status = _refused(custom, k8s_namespace, body)
    assert code == 422
    assert 'Unsupported value: "secret": supported values: "public", "private"' in status["message"]

    code, status = _refused(custom, k8s_namespace, workspace("Not_A_DNS_Name"))
    assert code == 422
    assert "metadata.name: Invalid value" in status["message"]


def test_tuning_method_foo_is_accepted_by_the_apiserver(custom, k8s_namespace):
    """`method` is a free string in the CRD; lora/qlora is enforced only by KAITO's webhook.

    The portal therefore has to validate it itself before creating the Workspace.
    """
    body = workspace("tuning-foo")
    del body["inference"]
    body["tuning"] = {
        "method": "foo",
        "preset": {"name": "phi-3-mini-128k-instruct"},
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "registry.example.com/adapters/phi3:1", "imagePushSecret": "push"},
    }
    created = custom.create_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, body)
    assert created["tuning"]["method"] == "foo"
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, "tuning-foo")
    assert stored["tuning"]["method"] == "foo"


def test_inference_and_tuning_together_pass_the_schema(custom, k8s_namespace):
    """ "Exactly one of inference/tuning" is another webhook-only rule the portal must check."""
    body = workspace("both")
    body["tuning"] = {"method": "lora", "preset": {"name": "x"}, "input": {"urls": []}, "output": {"volumeSource": {}}}
    created = custom.create_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, body)
    assert {"inference", "tuning"} <= created.keys()


def test_unknown_fields_are_pruned_with_a_warning_unless_strict(custom, k8s_namespace):
    body = workspace("extra-field")
    body["resource"]["gpuCount"] = 4  # not in the schema
    created, code, headers = custom.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, k8s_namespace, PLURAL, body
    )
    assert code == 201
    assert "gpuCount" not in created["resource"]
    assert headers["Warning"] == '299 - "unknown field \\"resource.gpuCount\\""'

    # fieldValidation=Strict turns the same typo into an error: what a portal wants for its own manifests.
    body["metadata"]["name"] = "extra-field-strict"
    with pytest.raises(client.ApiException) as strict:
        custom.create_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL, body, field_validation="Strict")
    assert strict.value.status == 400  # a decoding error, not a schema (422) error
    assert json.loads(strict.value.body)["message"] == (
        'Workspace in version "v1beta1" cannot be handled as a Workspace: '
        'strict decoding error: unknown field "resource.gpuCount"'
    )
