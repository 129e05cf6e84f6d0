"""The catalog list shared by the page and the API: filters, GPU fit per instance type, sort order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from catalog import fit
from catalog.models import InstanceType, Preset

SORTS = {
    "name": ("Name", lambda r: r.preset.name.lower()),
    "weight": ("Smallest weights", lambda r: r.preset.weight_gib or 0.0),
    "-weight": ("Largest weights", lambda r: -(r.preset.weight_gib or 0.0)),
    "-context": ("Longest context", lambda r: -(r.preset.context_length or 0)),
    "publisher": ("Publisher", lambda r: (r.preset.publisher.lower(), r.preset.name.lower())),
}


@dataclass(frozen=True)
class FitRow:
    instance_type: InstanceType
    vllm: fit.Fit
    transformers: fit.Fit | None
    hourly_price: Decimal | None
    hourly_cost: Decimal | None  # price × KAITO's node count for vLLM


@dataclass(frozen=True)
class PresetRow:
    preset: Preset
    smallest_instance_type: str | None
    fit_on_chosen: fit.Fit | None = None


def fit_table(preset: Preset, instance_types: Sequence[InstanceType], *, region: str) -> list[FitRow]:
    """KAITO's verdict for the preset on every instance type (empty for legacy names without sizes)."""
    spec = preset.model_spec()
    if spec is None:
        return []
    rows = []
    for it in instance_types:
        vllm = fit.estimate_vllm(spec, it.gpu_spec())
        price = it.hourly_price(region)
        rows.append(
            FitRow(
                instance_type=it,
                vllm=vllm,
                transformers=fit.estimate_transformers(spec, it.gpu_spec()) if preset.supports_transformers else None,
                hourly_price=price,
                hourly_cost=price * vllm.nodes if price is not None and vllm.nodes else None,
            )
        )
    return rows


def smallest_instance_type(
    preset: Preset, instance_types: Sequence[InstanceType], *, runtime: str = "vllm"
) -> str | None:
    spec = preset.model_spec()
    if spec is None:
        return None
    return fit.smallest_fit(spec, [(it.name, it.gpu_spec()) for it in instance_types], runtime=runtime)


def preset_rows(
    *,
    query: str = "",
    tunable: bool = False,
    runtime: str = "",
    gated: str = "",
    fits_on: InstanceType | None = None,
    sort: str = "name",
) -> list[PresetRow]:
    """Active presets matching the filters; presets KAITO no longer accepts always sort last."""
    presets = Preset.objects.active().search(query).prefetch_related("aliases")
    if tunable:
        presets = presets.filter(tunable=True)
    if runtime == "transformers":
        presets = presets.filter(supports_transformers=True)
    elif runtime == "vllm":
        presets = presets.filter(weight_gib__isnull=False)
    if gated in ("yes", "no"):
        presets = presets.filter(gated=gated == "yes")
    offered = list(InstanceType.objects.offered())
    rows = []
    for preset in presets:
        chosen = None
        if fits_on is not None:
            spec = preset.model_spec()
            chosen = fit.estimate(spec, fits_on.gpu_spec(), runtime=runtime or "vllm") if spec else None
            if chosen is None or not chosen.single_node:
                continue
        rows.append(PresetRow(preset, smallest_instance_type(preset, offered, runtime=runtime or "vllm"), chosen))
    key = SORTS.get(sort, SORTS["name"])[1]
    rows.sort(key=lambda r: (r.preset.acceptance != Preset.Acceptance.ACCEPTED, key(r)))
    return rows
