"""Catalog REST API: list with filters, detail by Hugging Face id or alias, instance types, schema."""

import pytest

pytestmark = pytest.mark.usefixtures("catalog")


def test_api_requires_authentication(client):
    response = client.get("/api/presets/")
    assert response.status_code == 401
    assert "credentials were not provided" in response.json()["detail"]


def test_list_with_filters(user_client):
    data = user_client.get("/api/presets/?q=phi-3&tunable=true").json()
    assert [p["name"] for p in data] == [
        "microsoft/Phi-3-medium-128k-instruct",
        "microsoft/Phi-3-medium-4k-instruct",
        "microsoft/Phi-3-mini-128k-instruct",
        "microsoft/Phi-3-mini-4k-instruct",
        "microsoft/Phi-3.5-mini-instruct",
    ]
    mini = data[2]
    assert mini["aliases"] == ["phi-3-mini-128k-instruct"]
    assert mini["runtimes"] == ["vllm", "transformers"]
    assert mini["smallest_instance_type"] == "Standard_NV36ads_A10_v5"
    assert mini["tunable"] is True and mini["gated"] is False


def test_list_fits_filter_and_invalid_filter(user_client):
    names = [p["name"] for p in user_client.get("/api/presets/?fits=Standard_NV36ads_A10_v5&q=qwen").json()]
    assert "Qwen/Qwen2.5-Coder-7B-Instruct" in names and "Qwen/Qwen2.5-Coder-32B-Instruct" not in names
    bad = user_client.get("/api/presets/?fits=Standard_NC6s_v3")
    assert bad.status_code == 400
    assert "fits" in bad.json()


def test_detail_by_id_and_by_alias(user_client):
    by_id = user_client.get("/api/presets/microsoft/Phi-3-mini-128k-instruct/").json()
    by_alias = user_client.get("/api/presets/phi-3-mini-128k-instruct/").json()
    assert by_id == by_alias
    assert by_id["served_name"] == "phi-3-mini-128k-instruct"
    fit = {row["instance_type"]: row for row in by_id["fit"]}
    assert fit["Standard_NV36ads_A10_v5"]["vllm_nodes"] == 1
    assert fit["Standard_NV36ads_A10_v5"]["hourly_cost_usd"] == "3.2000"
    assert len(fit) == 14


def test_unknown_preset_gives_404_with_a_clear_message(user_client):
    response = user_client.get("/api/presets/falcon-9000/")
    assert response.status_code == 404
    assert "No preset named 'falcon-9000'" in response.json()["detail"]
    assert "legacy name" in response.json()["detail"]


def test_instance_types(user_client):
    data = user_client.get("/api/instance-types/").json()
    assert [d["name"] for d in data][:2] == ["Standard_NV36ads_A10_v5", "Standard_NG32adms_V620_v1"]
    assert len(data) == 14  # retired SKUs are not offered
    assert all(d["name"] != "Standard_NC6s_v3" for d in data)
    big = user_client.get("/api/instance-types/?min_gpu_memory_gib=90").json()
    assert {d["name"] for d in big} == {
        "Standard_NC40ads_H100_v5",
        "Standard_NC80adis_H100_v5",
        "Standard_NCC40ads_H100_v5",
        "Standard_ND96isr_H200_v5",
    }
    assert user_client.get("/api/instance-types/?min_gpu_memory_gib=lots").status_code == 400


def test_openapi_schema_and_docs(user_client):
    schema = user_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/presets/{name}/" in schema.content
    assert user_client.get("/api/docs/").status_code == 200
