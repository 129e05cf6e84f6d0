"""Render the Helm chart with the helm built from the Go module proxy, and put its objects into a cluster."""

from pathlib import Path

import yaml
from kubernetes import client, dynamic

from deploy import helmbin

HERE = Path(__file__).resolve().parent
FULL_VALUES = HERE / "values-full.yaml"


def render(tmp_path, *, namespace="kaito-portal", release="kp", base=None, **overrides):
    """helm template with an optional base values file plus top-level overrides (written to a temp file)."""
    values = yaml.safe_load(Path(base).read_text()) if base else {}
    values.update(overrides)
    path = tmp_path / f"values-{release}.yaml"
    path.write_text(yaml.safe_dump(values))
    return helmbin.template([path], release=release, namespace=namespace, kube_version="1.34.4")


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def create_namespaces(api, *names):
    core = client.CoreV1Api(api)
    for name in names:
        try:
            core.create_namespace({"metadata": {"name": name}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise


def apply_all(api, objects, namespace, *, dry_run=False):
    """Server-side apply every object (namespaced ones default to the release namespace); returns the answers."""
    dyn = dynamic.DynamicClient(api)
    answers = []
    for obj in objects:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        ns = (obj["metadata"].get("namespace") or namespace) if resource.namespaced else None
        answer = dyn.server_side_apply(
            resource,
            body=obj,
            namespace=ns,
            field_manager="kaito-portal-tests",
            force_conflicts=True,
            dry_run="All" if dry_run else None,
        )
        answers.append(answer.to_dict())
    return answers


def rules_for(objects, service_account, namespace):
    """Every RBAC rule bound to a ServiceAccount, as (namespace or '*', rule)."""
    found = []
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        subjects = binding.get("subjects") or []
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in subjects):
            continue
        ref = binding["roleRef"]
        role = named(objects, ref["kind"], ref["name"])
        scope = binding["metadata"].get("namespace", namespace) if binding["kind"] == "RoleBinding" else "*"
        found += [(scope, rule) for rule in role["rules"]]
    return found
