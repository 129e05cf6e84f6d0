"""Request forms: they collect a draft and attach each service validation error to its own field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.urls import reverse

from catalog.listing import fit_table, smallest_instance_type
from catalog.models import InstanceType, Preset
from workspaces.kaito import defaults
from workspaces.kaito.spec import Adapter
from workspaces.models import Team, WorkspaceRequest
from workspaces.services import CheckedDraft, RequestDraft, request_validate

LINES = forms.Textarea(attrs={"rows": 3})


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.replace("\n", ",").split(",") if name.strip()]


def instance_type_choices(preset_name: str) -> list[tuple[str, str]]:
    """Offered instance types, those the model fits on first, each labelled with KAITO's node count and price."""
    offered = list(InstanceType.objects.offered().prefetch_related("prices"))
    preset = Preset.objects.by_name(preset_name) if preset_name else None
    empty = [("", "— bring your own nodes —")]
    if preset is None or preset.model_spec() is None:
        return empty + [(it.name, f"{it.name} ({it.gpu_count} × {it.gpu_model})") for it in offered]
    rows = fit_table(preset, offered, region=settings.PRICE_REGION)
    rows.sort(key=lambda r: (r.vllm.nodes is None, r.vllm.nodes or 0, r.instance_type.total_gpu_memory_gib))
    choices = []
    for row in rows:
        nodes = row.vllm.nodes
        verdict = "does not fit" if nodes is None else f"{nodes} node{'s' * (nodes > 1)}"
        price = f", ${row.hourly_cost:,.2f}/h" if row.hourly_cost else ""
        choices.append((row.instance_type.name, f"{row.instance_type.name} — {verdict}{price}"))
    return empty + choices


def smallest_for(preset_name: str) -> str:
    preset = Preset.objects.by_name(preset_name) if preset_name else None
    return (smallest_instance_type(preset, list(InstanceType.objects.offered())) if preset else None) or ""


class RequestForm(forms.Form):
    """Fields both kinds share; subclasses add theirs and say which kind they are."""

    kind = ""
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)
    name = forms.CharField(
        label="Workspace name", max_length=63, help_text="Lower-case letters, digits and '-'; unique in the namespace."
    )
    preset = forms.CharField(
        label="Model",
        max_length=200,
        help_text="A Hugging Face id from the catalog, or a legacy name.",
        widget=forms.TextInput(attrs={"list": "preset-options", "autocomplete": "off"}),
    )
    # A free value behind a select: a retired or unknown instance type gets KAITO's explanation, not "invalid choice".
    instance_type = forms.CharField(label="Instance type", required=False, widget=forms.Select)
    hours = forms.IntegerField(min_value=1)
    purpose = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="For the approver.")

    def __init__(self, *args: Any, user: AbstractBaseUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.checked: CheckedDraft | None = None
        teams = Team.objects.all() if user.is_superuser else Team.objects.filter(memberships__user=user)
        self.fields["team"].queryset = teams.order_by("name")
        self.preset_choices = self._preset_choices()
        preset = self.data.get("preset") or self.initial.get("preset") or ""
        choices = instance_type_choices(preset)
        typed = self.data.get("instance_type") or self.initial.get("instance_type")
        if typed and typed not in dict(choices):
            choices.append((typed, f"{typed} — not offered"))  # keep what the user chose, visibly
        self.fields["instance_type"].widget.choices = choices
        if not self.is_bound:
            self.initial.setdefault("instance_type", smallest_for(preset))
        # Choosing a model refreshes the instance types it fits on (and preselects the smallest).
        self.fields["preset"].widget.attrs.update(
            {
                "hx-get": reverse("workspaces:instance-type-options"),
                "hx-trigger": "change",
                "hx-target": "#id_instance_type",
                "hx-swap": "innerHTML",
            }
        )

    def _preset_choices(self) -> list[Preset]:
        presets = Preset.objects.active().filter(acceptance=Preset.Acceptance.ACCEPTED).prefetch_related("aliases")
        return list(presets.filter(tunable=True) if self.kind == "tuning" else presets)

    def draft_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "kind": self.kind,
            "team": data.get("team"),
            "name": data.get("name", "").strip(),
            "preset": data.get("preset", "").strip(),
            "instance_type": data.get("instance_type", ""),
            "hours": data.get("hours"),
            "purpose": data.get("purpose", ""),
        }

    def to_draft(self) -> RequestDraft:
        return RequestDraft(**self.draft_values())

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # The service rules run even when a field is already invalid, so that every problem shows at once;
        # a field keeps only its own first error.
        try:
            checked = request_validate(requester=self.user, draft=self.to_draft())
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                if name not in self.errors:
                    self.add_error(name if name in self.fields else None, messages)
        else:
            self.checked = None if self.errors else checked
        return cleaned


class InferenceRequestForm(RequestForm):
    kind = "inference"
    node_selector = forms.CharField(
        label="Or your own GPU nodes",
        required=False,
        help_text="Labels of existing GPU nodes (bring your own nodes), e.g. <code>apps=gpu</code>; "
        "leave the instance type empty then.",
    )
    runtime = forms.ChoiceField(choices=WorkspaceRequest.Runtime.choices, initial="vllm")
    adapters = forms.CharField(
        label="LoRA adapters",
        required=False,
        widget=LINES,
        help_text="One per line: <code>name image [pull-secret ...]</code>; at most 10.",
    )
    hf_token = forms.CharField(
        label="Hugging Face token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Needed for gated models; stored encrypted until the workspace is created, then only in the cluster.",
    )
    hf_token_secret = forms.CharField(
        label="Or an existing token Secret", required=False, help_text="A Secret in the namespace with key HF_TOKEN."
    )
    inference_config = forms.CharField(
        label="vLLM configuration (inference_config.yaml)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Optional; empty uses KAITO's defaults.",
    )
    hours = forms.IntegerField(label="Expires after (hours)", min_value=1, initial=8)

    field_order = [
        "team",
        "name",
        "preset",
        "instance_type",
        "node_selector",
        "runtime",
        "adapters",
        "hf_token",
        "hf_token_secret",
        "inference_config",
        "hours",
        "purpose",
    ]

    def clean_adapters(self) -> list[Adapter]:
        adapters, problems = [], []
        for number, line in enumerate(_lines(self.cleaned_data["adapters"]), start=1):
            parts = line.split()
            if len(parts) < 2:
                problems.append(f"Line {number}: write the adapter's name, then its image.")
                continue
            adapters.append(Adapter(name=parts[0], image=parts[1], pull_secrets=tuple(parts[2:])))
        if problems:
            raise ValidationError(problems)
        return adapters

    def draft_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return super().draft_values() | {
            "node_selector": data.get("node_selector", ""),
            "runtime": data.get("runtime", "vllm"),
            "adapters": data.get("adapters", []),
            "hf_token": data.get("hf_token", ""),
            "hf_token_secret": data.get("hf_token_secret", "").strip(),
            "inference_config": data.get("inference_config", ""),
        }


class TuningRequestForm(RequestForm):
    kind = "tuning"
    method = forms.ChoiceField(choices=WorkspaceRequest.Method.choices, initial="qlora", widget=forms.RadioSelect)
    input_urls = forms.CharField(
        label="Dataset URLs",
        required=False,
        widget=LINES,
        help_text="One per line; public http(s) URLs of csv, json/jsonl, parquet or arrow files.",
    )
    input_image = forms.CharField(label="Or a dataset image", required=False, help_text="Files under /data.")
    input_image_pull_secrets = forms.CharField(label="Its pull secrets", required=False, help_text="Comma-separated.")
    input_pvc = forms.CharField(label="Or a PersistentVolumeClaim", required=False)
    output_image = forms.CharField(
        label="Output image",
        required=False,
        help_text="Where KAITO pushes the adapter, e.g. myacr.azurecr.io/team/adapter:0.0.1.",
    )
    output_push_secret = forms.CharField(
        label="Existing push secret",
        required=False,
        help_text="A kubernetes.io/dockerconfigjson Secret in the namespace.",
    )
    registry_server = forms.CharField(label="Registry server", required=False, help_text="Defaults to the image's.")
    registry_username = forms.CharField(label="Registry user name", required=False)
    registry_password = forms.CharField(
        label="Registry password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The portal creates the push Secret from it when the request is approved; it is not shown again.",
    )
    output_pvc = forms.CharField(label="Or a PersistentVolumeClaim", required=False)
    training_config = forms.CharField(
        label="Tuning parameters (training_config.yaml)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 14}),
        help_text="KAITO's defaults for the method; edit them or leave them.",
    )
    hours = forms.IntegerField(label="Maximum run time (hours)", min_value=1, initial=4)

    field_order = [
        "team",
        "name",
        "preset",
        "instance_type",
        "method",
        "input_urls",
        "input_image",
        "input_image_pull_secrets",
        "input_pvc",
        "output_image",
        "output_push_secret",
        "registry_server",
        "registry_username",
        "registry_password",
        "output_pvc",
        "training_config",
        "hours",
        "purpose",
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("training_config", defaults.training_config(self.initial.get("method", "qlora")))

    def draft_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return super().draft_values() | {
            "method": data.get("method", ""),
            "input_urls": _lines(data.get("input_urls", "")),
            "input_image": data.get("input_image", "").strip(),
            "input_image_pull_secrets": _names(data.get("input_image_pull_secrets", "")),
            "input_pvc": data.get("input_pvc", "").strip(),
            "output_image": data.get("output_image", "").strip(),
            "output_push_secret": data.get("output_push_secret", "").strip(),
            "registry_server": data.get("registry_server", "").strip(),
            "registry_username": data.get("registry_username", "").strip(),
            "registry_password": data.get("registry_password", ""),
            "output_pvc": data.get("output_pvc", "").strip(),
            "training_config": data.get("training_config", ""),
        }


class DecisionForm(forms.Form):
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Note for the requester")
    budget_override = forms.BooleanField(required=False, label="Approve over budget")
