"""A request before it exists: validation against KAITO's rules, node count, cost, and the spec to apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from catalog import fit
from catalog.listing import smallest_instance_type
from catalog.models import InstanceType, Preset
from workspaces import netguard
from workspaces.kaito import imageref, rules
from workspaces.kaito.spec import Adapter, RegistryCredentials, WorkspaceSpec, hf_token_secret_name, push_secret_name
from workspaces.models import Membership, Team, WorkspaceRequest

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"  # the key docker and oras use for Docker Hub logins


@dataclass
class RequestDraft:
    """What a user submitted, from the form or the API; nothing here has been checked yet."""

    kind: str
    team: Team | None = None
    name: str = ""
    preset: str = ""
    instance_type: str = ""
    node_selector: str = ""
    runtime: str = "vllm"
    hours: int | None = None
    node_count: int | None = None  # resource.count; KAITO decides it for vLLM, tuning and Transformers need 1
    purpose: str = ""
    adapters: list[Adapter] = field(default_factory=list)
    hf_token: str = ""
    hf_token_secret: str = ""
    inference_config: str = ""
    method: str = ""
    input_urls: list[str] = field(default_factory=list)
    input_image: str = ""
    input_image_pull_secrets: list[str] = field(default_factory=list)
    input_pvc: str = ""
    output_image: str = ""
    output_push_secret: str = ""
    registry_server: str = ""
    registry_username: str = ""
    registry_password: str = ""
    output_pvc: str = ""
    training_config: str = ""


@dataclass
class CheckedDraft:
    """A draft that passed every rule, with what the portal derived from it."""

    draft: RequestDraft
    team: Team
    preset: Preset
    instance_type: InstanceType | None
    node_selector: dict[str, str]
    node_count: int
    hourly_price: Decimal | None
    estimated_cost: Decimal | None
    price_source: str
    spec: WorkspaceSpec
    registry: RegistryCredentials | None
    warnings: list[str] = field(default_factory=list)


class _Errors(dict[str, list[str]]):
    def add(self, name: str, messages: list[str] | str) -> None:
        if isinstance(messages, str):
            messages = [messages]
        if messages:
            self.setdefault(name, []).extend(messages)


def _check_team(draft: RequestDraft, requester: AbstractBaseUser, errors: _Errors) -> None:
    if draft.team is None:
        errors.add("team", "Choose the team that pays for this workspace.")
    elif not requester.is_superuser and not Membership.objects.filter(team=draft.team, user=requester).exists():
        errors.add("team", f"You are not a member of {draft.team}.")


def _check_name(draft: RequestDraft, errors: _Errors) -> None:
    problems = rules.dns1123_label(draft.name, what="The workspace name")
    errors.add("name", problems)
    if not problems and draft.team is not None:
        taken = WorkspaceRequest.objects.filter(namespace=draft.team.namespace, name=draft.name).exclude(
            status__in=["REJECTED", "WITHDRAWN", "DELETED", "EXPIRED"]
        )
        if taken.exists():
            errors.add("name", f"A workspace named {draft.name!r} already exists in namespace {draft.team.namespace}.")


def _check_hours(draft: RequestDraft, errors: _Errors) -> None:
    limit = settings.MAX_INFERENCE_HOURS if draft.kind == "inference" else settings.MAX_TUNING_HOURS
    what = "Expiry" if draft.kind == "inference" else "Maximum run time"
    if draft.hours is None:
        errors.add("hours", f"{what} in hours is required.")
    elif not 1 <= draft.hours <= limit:
        errors.add("hours", f"{what} must be between 1 and {limit} hours.")


def _check_instance(
    draft: RequestDraft, preset: Preset | None, errors: _Errors
) -> tuple[InstanceType | None, dict[str, str]]:
    offered = {it.name: it for it in InstanceType.objects.offered().prefetch_related("prices")}
    if draft.node_selector.strip() and not draft.instance_type:
        if draft.kind == "tuning":
            errors.add("node_selector", "KAITO tunes only on nodes it provisions itself; choose an instance type.")
            return None, {}
        labels, problems = rules.parse_node_selector(draft.node_selector)
        errors.add("node_selector", problems)
        return None, labels
    if draft.node_selector.strip():
        errors.add("node_selector", "Give either an instance type or your own node labels, not both.")
    if not draft.instance_type:
        errors.add("instance_type", "Choose an instance type (or give the labels of your own GPU nodes).")
        return None, {}
    retired = dict(
        InstanceType.objects.exclude(retired_in="").values_list("name", "retired_reason"),
    )
    suggestion = smallest_instance_type(preset, list(offered.values())) if preset else None
    problems = rules.instance_type(
        draft.instance_type,
        offered={name: it.gpu_spec() for name, it in offered.items()},
        retired=retired,
        suggestion=suggestion,
    )
    errors.add("instance_type", problems)
    return offered.get(draft.instance_type), {}


def _check_count(draft: RequestDraft, errors: _Errors) -> None:
    """resource.count as KAITO v0.12 treats it (the portal's forms never ask for it; the API may send it)."""
    if draft.node_count is None or draft.node_count == 1:
        return
    if draft.kind == "tuning":
        errors.add("node_count", "Tuning does not currently support multinode configurations. Set the node count to 1.")
    elif draft.runtime == "transformers":
        errors.add("node_count", "Multi-node distributed inference is not supported with the Transformers runtime.")
    else:
        errors.add("node_count", "With vLLM, KAITO's node estimator sets the node count (resource.count is ignored).")


def _node_count(draft: RequestDraft, preset: Preset, instance: InstanceType | None, errors: _Errors) -> int:
    spec = preset.model_spec()
    if instance is None or spec is None or draft.kind == "tuning":
        return 1
    if draft.runtime == "transformers":
        errors.add(
            "instance_type",
            rules.transformers_memory(spec, instance.gpu_spec(), instance=instance.name, preset=preset.name),
        )
        return 1
    context = rules.max_model_len(draft.inference_config) or fit.DEFAULT_CONTEXT
    estimate = fit.estimate_vllm(spec, instance.gpu_spec(), max_model_len=context)
    if estimate.nodes is None:
        errors.add("instance_type", f"{preset.name} cannot run on {instance.name}: {estimate.reason}.")
        return 1
    return estimate.nodes


def _check_inference(draft: RequestDraft, preset: Preset | None, errors: _Errors) -> None:
    errors.add("adapters", rules.adapters(draft.adapters, runtime=draft.runtime))
    if draft.inference_config.strip():
        errors.add(
            "inference_config",
            rules.inference_config(draft.inference_config, context_length=preset.context_length if preset else None),
        )
    if draft.hf_token and draft.hf_token_secret:
        errors.add("hf_token", "Give either a token or the name of an existing Secret, not both.")
    elif preset is not None and preset.gated and not (draft.hf_token or draft.hf_token_secret):
        errors.add(
            "hf_token",
            f"{preset.name} is a gated model: a Hugging Face token with access to it is needed to download "
            "the weights (KAITO's webhook does not check this; the download would fail on the GPU node).",
        )
    if draft.hf_token_secret:
        errors.add("hf_token_secret", rules.dns1123_subdomain(draft.hf_token_secret, what="The Secret name"))
        if draft.hf_token_secret == hf_token_secret_name(draft.name):
            errors.add("hf_token_secret", "That name is reserved for the Secret the portal creates from a token.")


def _check_urls(urls: list[str], errors: _Errors, warnings: list[str]) -> None:
    for index, url in enumerate(urls, start=1):
        try:
            checked = netguard.check_url(url, allow_hosts=settings.PREFLIGHT_ALLOW_HOSTS)
        except netguard.UnsafeURL as exc:
            errors.add("input_urls", f"URL {index}: {exc}")
            continue
        if checked.resolution_error:
            warnings.append(f"Dataset URL {index}: {checked.resolution_error} (from the portal).")


def _check_tuning(draft: RequestDraft, errors: _Errors, warnings: list[str]) -> RegistryCredentials | None:
    if draft.method not in ("qlora", "lora"):
        errors.add("method", "The tuning method must be 'qlora' or 'lora'.")
    sources = [bool(draft.input_urls), bool(draft.input_image), bool(draft.input_pvc)]
    if sum(sources) != 1:
        errors.add("input_urls", "Give exactly one dataset source: URLs, an image or a PersistentVolumeClaim.")
    _check_urls(draft.input_urls, errors, warnings)
    if draft.input_image:
        errors.add("input_image", rules.image_reference(draft.input_image, what="input"))
    for secret in draft.input_image_pull_secrets:
        errors.add("input_image_pull_secrets", rules.dns1123_subdomain(secret, what="The pull secret"))
    if draft.input_pvc:
        errors.add("input_pvc", rules.dns1123_subdomain(draft.input_pvc, what="The claim name"))
    if bool(draft.output_image) == bool(draft.output_pvc):
        errors.add("output_image", "Give exactly one destination: an output image or a PersistentVolumeClaim.")
    if draft.output_pvc:
        errors.add("output_pvc", rules.dns1123_subdomain(draft.output_pvc, what="The claim name"))
    registry = None
    if draft.output_image:
        errors.add("output_image", rules.image_reference(draft.output_image, what="output"))
        has_credentials = bool(draft.registry_username or draft.registry_password)
        if draft.output_push_secret and has_credentials:
            errors.add("output_push_secret", "Give either an existing push secret or registry credentials, not both.")
        elif draft.output_push_secret:
            errors.add("output_push_secret", rules.dns1123_subdomain(draft.output_push_secret, what="The Secret name"))
            if draft.output_push_secret == push_secret_name(draft.name):
                errors.add("output_push_secret", "That name is reserved for the Secret the portal creates.")
        elif not (draft.registry_username and draft.registry_password):
            errors.add(
                "output_push_secret",
                "KAITO needs a push secret for the output image: name an existing kubernetes.io/dockerconfigjson "
                "Secret, or give the registry user name and password so the portal creates one.",
            )
        elif "output_image" not in errors:
            server = draft.registry_server.strip() or imageref.parse_reference(draft.output_image).domain
            if server == imageref.DEFAULT_DOMAIN:
                server = DOCKER_HUB_AUTH_KEY
            registry = RegistryCredentials(server, draft.registry_username, draft.registry_password)
    if draft.training_config.strip():  # empty: KAITO copies its default for the method
        errors.add("training_config", rules.training_config(draft.training_config, method=draft.method))
    return registry


def request_validate(*, requester: AbstractBaseUser, draft: RequestDraft) -> CheckedDraft:
    """Apply every rule KAITO applies and the portal's own; raise ValidationError keyed by field."""
    errors = _Errors()
    warnings: list[str] = []
    _check_team(draft, requester, errors)
    _check_name(draft, errors)
    _check_hours(draft, errors)
    preset = Preset.objects.by_name(draft.preset) if draft.preset else None
    if preset is None:
        errors.add("preset", f"No preset named {draft.preset!r} in the catalog." if draft.preset else "Choose a model.")
    else:
        errors.add("preset", rules.preset_for_request(preset, kind=draft.kind, runtime=draft.runtime))
    if draft.runtime not in ("vllm", "transformers") or (draft.kind == "tuning" and draft.runtime != "vllm"):
        errors.add("runtime", "The runtime must be vLLM or Transformers (inference only).")
    instance, labels = _check_instance(draft, preset, errors)
    _check_count(draft, errors)
    node_count = _node_count(draft, preset, instance, errors) if preset else 1
    if node_count > 1:
        warnings.append(
            f"KAITO's node estimator will run {preset.name} on {node_count} × {instance.name} nodes "
            "(weights and KV cache do not fit on one); a larger instance type may cost less."
        )
    registry = None
    if draft.kind == "inference":
        _check_inference(draft, preset, errors)
    else:
        registry = _check_tuning(draft, errors, warnings)
    if errors:
        raise ValidationError({name: list(messages) for name, messages in errors.items()})
    return _checked(draft, preset, instance, labels, node_count, registry, warnings, requester)


def _checked(
    draft: RequestDraft,
    preset: Preset,
    instance: InstanceType | None,
    labels: dict[str, str],
    node_count: int,
    registry: RegistryCredentials | None,
    warnings: list[str],
    requester: AbstractBaseUser,
) -> CheckedDraft:
    price = instance.hourly_price(settings.PRICE_REGION) if instance else None
    source = (
        next((p.source for p in instance.prices.all() if p.region == settings.PRICE_REGION), "") if instance else ""
    )
    cost = (price * node_count * draft.hours).quantize(Decimal("0.01")) if price is not None else None
    spec = draft_spec(
        draft, preset=preset, instance=instance, labels=labels, node_count=node_count, requester=requester
    )
    return CheckedDraft(
        draft=draft,
        team=draft.team,
        preset=preset,
        instance_type=instance,
        node_selector=labels,
        node_count=node_count,
        hourly_price=price,
        estimated_cost=cost,
        price_source=source,
        spec=spec,
        registry=registry,
        warnings=warnings,
    )


def _lf(text: str) -> str:
    """Configuration text as the ConfigMap holds it: Unix line ends (browsers post CRLF), or nothing if blank."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if text.strip() else ""


def draft_spec(
    draft: RequestDraft,
    *,
    preset: Preset,
    instance: InstanceType | None,
    labels: dict[str, str],
    node_count: int,
    requester: AbstractBaseUser,
    request_id: int | None = None,
) -> WorkspaceSpec:
    hf_secret = draft.hf_token_secret or (hf_token_secret_name(draft.name) if draft.hf_token else "")
    push_secret = draft.output_push_secret or (
        push_secret_name(draft.name) if draft.output_image and draft.registry_username else ""
    )
    return WorkspaceSpec(
        name=draft.name,
        namespace=draft.team.namespace,
        kind=draft.kind,
        preset=preset.manifest_name,
        instance_type=instance.name if instance else "",
        node_selector=labels,
        runtime=draft.runtime if draft.kind == "inference" else "vllm",
        node_count=node_count,
        request_id=request_id,
        team=draft.team.slug,
        requester=requester.get_username(),
        adapters=tuple(draft.adapters) if draft.kind == "inference" else (),
        inference_config=_lf(draft.inference_config) if draft.kind == "inference" else "",
        hf_token_secret=hf_secret if draft.kind == "inference" else "",
        method=draft.method if draft.kind == "tuning" else "",
        input_urls=tuple(draft.input_urls),
        input_image=draft.input_image,
        input_image_pull_secrets=tuple(draft.input_image_pull_secrets),
        input_pvc=draft.input_pvc,
        output_image=draft.output_image,
        output_push_secret=push_secret,
        output_pvc=draft.output_pvc,
        training_config=_lf(draft.training_config) if draft.kind == "tuning" else "",
    )
