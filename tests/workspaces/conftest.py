"""Workspace fixtures: a team with a requester and an approver, another team, an admin; payloads; the cluster."""

import pytest

from workspaces.cluster import ConnectionSettings, connect
from workspaces.models import Membership, Team
from workspaces.services.clusters import set_cluster

DOLLY = (
    "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/"
    "train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
)


@pytest.fixture
def team(db):
    return Team.objects.create(name="ML Platform", slug="ml", namespace="team-ml", monthly_budget_usd=1000)


@pytest.fixture
def other_team(db):
    return Team.objects.create(name="Search", slug="search", namespace="team-search", monthly_budget_usd=500)


def _member(django_user_model, team, username, role=Membership.Role.REQUESTER):
    user = django_user_model.objects.create_user(username=username, email=f"{username}@example.com", password="pw")
    Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def requester(django_user_model, team):
    return _member(django_user_model, team, "rita")


@pytest.fixture
def approver(django_user_model, team):
    return _member(django_user_model, team, "arne", Membership.Role.APPROVER)


@pytest.fixture
def outsider(django_user_model, other_team):
    return _member(django_user_model, other_team, "otto")


@pytest.fixture
def other_approver(django_user_model, other_team):
    return _member(django_user_model, other_team, "olga", Membership.Role.APPROVER)


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser(username="root", email="root@example.com", password="pw")


@pytest.fixture
def inference_payload(team):
    return {
        "kind": "inference",
        "team": team.slug,
        "name": "phi-chat",
        "preset": "microsoft/Phi-3-mini-128k-instruct",
        "instance_type": "Standard_NV36ads_A10_v5",
        "runtime": "vllm",
        "hours": 8,
        "purpose": "demo",
    }


@pytest.fixture
def tuning_payload(team):
    return {
        "kind": "tuning",
        "team": team.slug,
        "name": "workspace-tuning-phi-3",
        "preset": "phi-3-mini-128k-instruct",
        "instance_type": "Standard_NV36ads_A10_v5",
        "method": "qlora",
        "input_urls": [DOLLY],
        "output_image": "myacr.azurecr.io/phi-3-adapter:0.0.1",
        "registry_username": "acr-user",
        "registry_password": "acr-pa55word-xyz",
        "hours": 4,
    }


def form_data(payload, team):
    """The same request as the HTML form posts it."""
    data = dict(payload)
    data.pop("kind")
    data["team"] = team.pk
    if "adapters" in data:
        data["adapters"] = "\n".join(
            " ".join([a["name"], a["image"], *a.get("pull_secrets", [])]) for a in data["adapters"]
        )
    if "node_selector" in data:
        data["node_selector"] = ",".join(f"{k}={v}" for k, v in data["node_selector"].items())
    for key in ("input_urls", "input_image_pull_secrets"):
        if key in data:
            data[key] = "\n".join(data[key])
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def cluster(control_plane, settings):
    """The portal connected to the local control plane; approvals apply at once (inline)."""
    settings.APPLY_AFTER_APPROVAL = "inline"
    connected = connect(ConnectionSettings(kubeconfig=str(control_plane.kubeconfig_path)))
    set_cluster(connected)
    yield connected
    set_cluster(None)


@pytest.fixture
def team_ns(team, k8s_namespace):
    """The team's namespace is a fresh one in the control plane."""
    team.namespace = k8s_namespace
    team.save()
    return k8s_namespace
