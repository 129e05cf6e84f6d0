"""RBAC with a real ServiceAccount token (TokenRequest API): a namespaced Role does not reach other namespaces."""

import json

import pytest
from kubernetes import client, config

from tests.devcluster.conftest import GROUP, PLURAL, VERSION, workspace

pytestmark = pytest.mark.cluster


def _role(ns):
    return {
        "metadata": {"name": "workspace-editor", "namespace": ns},
        "rules": [
            {
                "apiGroups": ["kaito.sh"],
                "resources": ["workspaces"],
                "verbs": ["get", "list", "watch", "create", "patch", "delete"],
            }
        ],
    }


def _binding(ns, sa):
    return {
        "metadata": {"name": "portal-workspace-editor", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "workspace-editor"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    }


def test_role_allows_workspaces_in_its_namespace_only(control_plane, k8s_api_client, k8s_namespace):
    home = k8s_namespace
    other = f"{home[:50]}-other"
    client.CoreV1Api(k8s_api_client).create_namespace({"metadata": {"name": other}})
    rbac = client.RbacAuthorizationV1Api(k8s_api_client)
    rbac.create_namespaced_role(home, _role(home))
    rbac.create_namespaced_role_binding(home, _binding(home, "portal"))

    token = control_plane.service_account_token(home, "portal")
    assert token.count(".") == 2  # a signed JWT, not an opaque secret

    with control_plane.api_client_for_token(token) as sa_api:
        as_sa = client.CustomObjectsApi(sa_api)
        created = as_sa.create_namespaced_custom_object(GROUP, VERSION, home, PLURAL, workspace("mine"))
        assert created["metadata"]["namespace"] == home
        listed = as_sa.list_namespaced_custom_object(GROUP, VERSION, home, PLURAL)
        assert [i["metadata"]["name"] for i in listed["items"]] == ["mine"]

        with pytest.raises(client.ApiException) as denied:
            as_sa.list_namespaced_custom_object(GROUP, VERSION, other, PLURAL)
        assert denied.value.status == 403
        assert json.loads(denied.value.body)["message"] == (
            f'workspaces.kaito.sh is forbidden: User "system:serviceaccount:{home}:portal" cannot list '
            f'resource "workspaces" in API group "kaito.sh" in the namespace "{other}"'
        )
        with pytest.raises(client.ApiException) as denied_create:
            as_sa.create_namespaced_custom_object(GROUP, VERSION, other, PLURAL, workspace("theirs"))
        assert denied_create.value.status == 403
        # The Role grants nothing outside kaito.sh workspaces, even at home.
        with pytest.raises(client.ApiException) as no_secrets:
            client.CoreV1Api(sa_api).list_namespaced_secret(home)
        assert no_secrets.value.status == 403

    # Nothing was created in the other namespace.
    admin = client.CustomObjectsApi(k8s_api_client)
    assert admin.list_namespaced_custom_object(GROUP, VERSION, other, PLURAL)["items"] == []


def test_token_kubeconfig_works_with_the_standard_loader(control_plane, k8s_api_client, k8s_namespace):
    rbac = client.RbacAuthorizationV1Api(k8s_api_client)
    rbac.create_namespaced_role(k8s_namespace, _role(k8s_namespace))
    rbac.create_namespaced_role_binding(k8s_namespace, _binding(k8s_namespace, "reader"))
    token = control_plane.service_account_token(k8s_namespace, "reader")
    path = control_plane.kubeconfig_for_token(token)
    assert path.stat().st_mode & 0o077 == 0  # holds a credential: owner-only

    api = config.new_client_from_config(config_file=str(path))
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review.status.user_info.username == f"system:serviceaccount:{k8s_namespace}:reader"
        items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, k8s_namespace, PLURAL)
        assert items["items"] == []
    finally:
        api.close()


def test_admin_is_system_masters(k8s_api_client):
    review = client.AuthenticationV1Api(k8s_api_client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    assert review.status.user_info.username == "admin"
    assert "system:masters" in review.status.user_info.groups
