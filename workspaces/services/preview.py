"""What will be applied: the manifests of a draft (live in the form) or of a stored request."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from workspaces.kaito import manifests as kaito_manifests
from workspaces.kaito.spec import (
    Adapter,
    RegistryCredentials,
    WorkspaceSpec,
    hf_token_secret_name,
    push_secret_name,
)
from workspaces.models import PendingSecret, WorkspaceRequest
from workspaces.services.drafts import RequestDraft, request_validate
from workspaces.services.secrets import secret_load

SECRET_PLACEHOLDER = "(hidden)"


@dataclass
class Preview:
    yaml: str = ""
    node_count: int | None = None
    hourly_price: Decimal | None = None
    estimated_cost: Decimal | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def request_preview(*, requester: AbstractBaseUser, draft: RequestDraft) -> Preview:
    """The masked YAML and cost of a draft, or the reasons it cannot be applied yet."""
    try:
        checked = request_validate(requester=requester, draft=draft)
    except ValidationError as exc:
        return Preview(errors=exc.message_dict)
    objects = kaito_manifests.manifests(
        checked.spec,
        hf_token=SECRET_PLACEHOLDER if draft.hf_token else None,
        registry=checked.registry,
    )
    return Preview(
        yaml=kaito_manifests.to_yaml(kaito_manifests.masked(objects)),
        node_count=checked.node_count,
        hourly_price=checked.hourly_price,
        estimated_cost=checked.estimated_cost,
        warnings=checked.warnings,
    )


# Spec fields stored on the request as they are, and those stored as JSON lists.
PLAIN_FIELDS = (
    "name", "namespace", "kind", "runtime", "node_count", "inference_config", "hf_token_secret", "method",
    "input_image", "input_pvc", "output_image", "output_push_secret", "output_pvc", "training_config",
)  # fmt: skip
LIST_FIELDS = ("input_urls", "input_image_pull_secrets")


def stored_fields(spec: WorkspaceSpec) -> dict[str, Any]:
    """The request's columns for a spec (request_spec reads them back)."""
    return {
        **{name: getattr(spec, name) for name in PLAIN_FIELDS},
        **{name: list(getattr(spec, name)) for name in LIST_FIELDS},
        "node_selector": dict(spec.node_selector),
        "adapters": [vars(a) | {"pull_secrets": list(a.pull_secrets)} for a in spec.adapters],
    }


def request_spec(request: WorkspaceRequest) -> WorkspaceSpec:
    """The spec of a stored request (the same one the preview showed, now with its request id)."""
    return WorkspaceSpec(
        **{name: getattr(request, name) for name in PLAIN_FIELDS},
        **{name: tuple(getattr(request, name)) for name in LIST_FIELDS},
        preset=request.preset.manifest_name,
        instance_type=request.instance_type.name if request.instance_type else "",
        node_selector=dict(request.node_selector),
        request_id=request.pk,
        team=request.team.slug,
        requester=request.requester.get_username(),
        adapters=tuple(
            Adapter(a["name"], a["image"], tuple(a.get("pull_secrets", ())), a.get("strength", ""))
            for a in request.adapters
        ),
    )


def request_manifests(*, request: WorkspaceRequest, reveal: bool = False) -> list[kaito_manifests.Manifest]:
    """Manifests of a stored request; Secret values only with reveal=True (the apply path, never a page)."""
    spec = request_spec(request)
    token = registry = None
    if reveal:
        stored = secret_load(request=request, purpose=PendingSecret.Purpose.HF_TOKEN)
        token = stored["token"] if stored else None
        stored = secret_load(request=request, purpose=PendingSecret.Purpose.REGISTRY)
        registry = RegistryCredentials(**stored) if stored else None
    else:
        # Secrets under the portal's own names are the ones it creates (drafts refuse those names otherwise).
        if spec.hf_token_secret and spec.hf_token_secret == hf_token_secret_name(spec.name):
            token = SECRET_PLACEHOLDER
        if spec.output_push_secret and spec.output_push_secret == push_secret_name(spec.name):
            registry = RegistryCredentials(SECRET_PLACEHOLDER, SECRET_PLACEHOLDER, SECRET_PLACEHOLDER)
    objects = kaito_manifests.manifests(spec, hf_token=token, registry=registry)
    return objects if reveal else kaito_manifests.masked(objects)
