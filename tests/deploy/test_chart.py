"""The Helm chart renders with helm for default and full values, and the API server accepts every object."""

import json
import subprocess

import pytest
from kubernetes import client

from deploy.helmbin import CHART_DIR
from tests.deploy.chart import FULL_VALUES, apply_all, create_namespaces, named, of_kind, render, rules_for

pytestmark = pytest.mark.usefixtures("helm")
WEB_SA, RECONCILER_SA = "kp-kaito-portal-web", "kp-kaito-portal-reconciler"


def containers(objects):
    for obj in of_kind(objects, "Deployment") + of_kind(objects, "Job"):
        for container in obj["spec"]["template"]["spec"]["containers"]:
            yield obj, container


def test_default_values_render(tmp_path):
    objects = render(tmp_path)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Role",
        "RoleBinding", "Service", "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ]  # fmt: skip
    web = named(objects, "Deployment", "kp-kaito-portal-web")
    reconciler = named(objects, "Deployment", "kp-kaito-portal-reconciler")
    web_container = web["spec"]["template"]["spec"]["containers"][0]
    assert web_container["args"][0] == "daphne" and web_container["args"][-1] == "portal.asgi:application"
    assert web_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    args = reconciler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["python", "manage.py", "reconcile"]
    assert "--metrics-port=9102" in args and "--metrics-address=0.0.0.0" in args
    assert "--lease-namespace=kaito-portal" in args
    for obj, container in containers(objects):
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["envFrom"][1]["secretRef"]["name"] == "kp-kaito-portal"
    config = named(objects, "ConfigMap", "kp-kaito-portal")["data"]
    assert config["DJANGO_PRODUCTION"] == "1" and config["PORTAL_LOG_FORMAT"] == "json"
    assert "OIDC_OP_ISSUER" not in config
    # No team namespaces yet: the only Role is the Lease in the portal's own namespace.
    assert [r["metadata"]["name"] for r in of_kind(objects, "Role")] == ["kp-kaito-portal-leader-election"]


def test_full_values_render(tmp_path):
    objects = render(tmp_path, base=FULL_VALUES)
    assert len(of_kind(objects, "Ingress")) == 1 and len(of_kind(objects, "NetworkPolicy")) == 2
    ingress = of_kind(objects, "Ingress")[0]
    assert ingress["spec"]["tls"] == [{"hosts": ["portal.contoso.example"], "secretName": "portal-tls"}]
    roles = {(r["metadata"].get("namespace"), r["metadata"]["name"]) for r in of_kind(objects, "Role")}
    for ns in ("team-ml", "team-search"):
        assert {(ns, "kp-kaito-portal-web"), (ns, "kp-kaito-portal-reconciler")} <= roles
    config = named(objects, "ConfigMap", "kp-kaito-portal")["data"]
    assert config["DJANGO_ALLOWED_HOSTS"] == "portal.contoso.example"
    assert config["DJANGO_CSRF_TRUSTED_ORIGINS"] == "https://portal.contoso.example"
    assert json.loads(config["PORTAL_OIDC_GROUP_MAP"])["aaaaaaaa-0000-0000-0000-000000000001"]["role"] == "approver"
    assert "OIDC_RP_CLIENT_SECRET" in named(objects, "Secret", "kp-kaito-portal")["stringData"]
    web_policy = named(objects, "NetworkPolicy", "kp-kaito-portal-web")["spec"]
    team_rule = next(
        r
        for r in web_policy["egress"]
        if "namespaceSelector" in r["to"][0] and "matchExpressions" in r["to"][0]["namespaceSelector"]
    )
    assert team_rule["to"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-ml", "team-search"]
    reconciler_policy = named(objects, "NetworkPolicy", "kp-kaito-portal-reconciler")["spec"]
    assert reconciler_policy["ingress"][0]["ports"] == [{"port": 9102, "protocol": "TCP"}]
    assert named(objects, "Deployment", "kp-kaito-portal-reconciler")["spec"]["replicas"] == 2


@pytest.mark.parametrize("values", ["default", "full"])
def test_the_reconciler_never_reads_secrets(tmp_path, values):
    objects = render(tmp_path, base=FULL_VALUES if values == "full" else None)
    for scope, rule in rules_for(objects, RECONCILER_SA, "kaito-portal"):
        if "secrets" in rule["resources"] and "" in rule["apiGroups"]:
            assert not {"get", "list", "watch", "*"} & set(rule["verbs"]), (scope, rule)
    cluster_wide = [rule for scope, rule in rules_for(objects, RECONCILER_SA, "kaito-portal") if scope == "*"]
    assert cluster_wide == [{"apiGroups": ["kaito.sh"], "resources": ["workspaces"], "verbs": ["get", "list", "watch"]}]


def test_web_reads_secrets_and_proxies_only_when_enabled(tmp_path):
    def web_grants(objects):
        return {(r["resources"][0], verb) for _, r in rules_for(objects, WEB_SA, "kaito-portal") for verb in r["verbs"]}

    default = web_grants(render(tmp_path, teamNamespaces=["team-a"]))
    assert ("secrets", "get") not in default and ("services/proxy", "get") not in default
    enabled = web_grants(
        render(
            tmp_path, teamNamespaces=["team-a"], rbac={"create": True, "webReadsSecrets": True, "serviceProxy": True}
        )
    )
    assert {("secrets", "get"), ("services/proxy", "get"), ("services/proxy", "create")} <= enabled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret": {"create": True, "values": {"DJANGO_SECRET_KEY": "x"}}}, "secret.values.DATABASE_URL is required"),
        ({"networkPolicy": {"enabled": True}}, "networkPolicy.egress.apiServer.cidrs"),
        ({"oidc": {"enabled": True, "clientId": "c"}}, "oidc.issuer is required"),
    ],
)
def test_missing_required_values_are_named(tmp_path, overrides, message):
    with pytest.raises(RuntimeError, match=message.replace(".", r"\.")):
        render(tmp_path, **overrides)


@pytest.mark.parametrize("values", ["default", "full"])
def test_every_object_passes_server_side_dry_run(tmp_path, control_plane, k8s_api_client, k8s_namespace, values):
    teams = [f"{k8s_namespace[:50]}-t{i}" for i in (1, 2)]
    create_namespaces(k8s_api_client, *teams)
    base = FULL_VALUES if values == "full" else None
    objects = render(tmp_path, namespace=k8s_namespace, base=base, **({"teamNamespaces": teams} if base else {}))
    answers = apply_all(k8s_api_client, objects, k8s_namespace, dry_run=True)
    assert [(a["kind"], a["metadata"]["name"]) for a in answers] == [
        (o["kind"], o["metadata"]["name"]) for o in objects
    ]
    # Defaults were applied by the server (it really validated them), and nothing was stored.
    web = next(a for a in answers if a["kind"] == "Deployment" and a["metadata"]["name"].endswith("-web"))
    assert web["spec"]["strategy"]["type"] == "RollingUpdate"
    assert client.AppsV1Api(k8s_api_client).list_namespaced_deployment(k8s_namespace).items == []


@pytest.mark.parametrize("values", ["default", "full"])
def test_helm_lint_strict(helm, values):
    cmd = [str(helm), "lint", "--strict", str(CHART_DIR)] + (["--values", str(FULL_VALUES)] if values == "full" else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "0 chart(s) failed" in result.stdout, result.stdout + result.stderr
