"""Reads the catalog data files (KAITO's own plus the portal's curation) into plain entries."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
TUNING_REGISTRY = "mcr.microsoft.com/aks/kaito"


class CatalogDataError(ValueError):
    """The data files are inconsistent; the message names the file and the entry."""


@dataclass(frozen=True)
class PresetEntry:
    name: str
    served_name: str
    source: str
    publisher: str = ""
    family: str = ""
    description_url: str = ""
    license: str = ""
    parameters: str = ""
    weight_gib: float | None = None
    context_length: int | None = None
    architectures: tuple[str, ...] = ()
    num_hidden_layers: int | None = None
    num_key_value_heads: int | None = None
    head_dim: float | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    quantization: str = ""
    gated: bool = False
    gated_note: str = ""
    supports_transformers: bool = False
    tunable: bool = False
    tuning_image: str = ""
    acceptance: str = "accepted"
    acceptance_note: str = ""
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class InstanceTypeEntry:
    name: str
    gpu_count: int
    gpu_model: str
    gpu_memory_gib: float
    cuda_compute: str = ""
    local_nvme: bool = False
    retired_in: str = ""
    retired_reason: str = ""


@dataclass(frozen=True)
class PriceEntry:
    instance_type: str
    region: str
    hourly_usd: Decimal
    source: str
    observed_on: dt.date


@dataclass(frozen=True)
class CatalogData:
    presets: tuple[PresetEntry, ...]
    instance_types: tuple[InstanceTypeEntry, ...]
    prices: tuple[PriceEntry, ...]


def _read(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogDataError(f"{path.name}: {exc}") from exc


def _gib(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)Gi", str(value))
    if not match:
        raise CatalogDataError(f"model_catalog.yaml: weight size {value!r} is not in Gi")
    return float(match.group(1))


def _served_name(name: str) -> str:
    # vLLM serves a standalone Workspace under the lower-cased last path segment of the HF id.
    return name.rsplit("/", 1)[-1].lower()


def parse_presets(catalog: dict[str, Any], supported: dict[str, Any], curated: dict[str, Any]) -> list[PresetEntry]:
    """Merge KAITO's catalogue, its legacy list and the portal's curation into one entry per preset."""
    legacy = {m["name"]: m for m in supported.get("models", []) if m["name"] != "base"}
    curation = {c["name"].lower(): c for c in curated.get("presets", [])}
    notes = curated.get("legacy_notes", {})
    entries: list[PresetEntry] = []
    aliased: set[str] = set()
    for model in catalog.get("models", []):
        name = model["name"]
        extra = curation.pop(name.lower(), None)
        if extra is None:
            raise CatalogDataError(f"portal_presets.yaml has no entry for {name}")
        aliases = tuple(a.lower() for a in extra.get("aliases", []))
        unknown = [a for a in aliases if a not in legacy]
        if unknown:
            raise CatalogDataError(f"portal_presets.yaml: aliases {unknown} of {name} are not in supported_models.yaml")
        aliased.update(aliases)
        tunable = bool(extra.get("tunable"))
        tuning_image = ""
        if tunable:
            if not aliases:
                raise CatalogDataError(f"{name} is tunable but has no legacy alias for its weight image")
            tuning_image = f"{TUNING_REGISTRY}/kaito-{aliases[0]}:{legacy[aliases[0]]['tag']}"
        head_dim = model.get("headDim") or model["hiddenSize"] / model["numAttentionHeads"]
        quant = " ".join(str(q) for q in (model.get("quantMethod"), model.get("quantBits")) if q)
        entries.append(
            PresetEntry(
                name=name,
                served_name=_served_name(name),
                source="model_catalog.yaml",
                publisher=name.split("/", 1)[0],
                family=extra.get("family", ""),
                description_url=model.get("description", ""),
                license=model.get("license", ""),
                parameters=str(extra.get("parameters", "")),
                weight_gib=_gib(model["modelFileSize"]),
                context_length=model.get("modelTokenLimit"),
                architectures=tuple(model.get("architectures", [])),
                num_hidden_layers=model["numHiddenLayers"],
                num_key_value_heads=model.get("numKeyValueHeads"),
                head_dim=float(head_dim),
                kv_lora_rank=model.get("kvLoraRank"),
                qk_rope_head_dim=model.get("qkRopeHeadDim"),
                quantization=quant,
                gated=bool(extra.get("gated")) or any(legacy[a].get("downloadAuthRequired") for a in aliases),
                gated_note=extra.get("gated", ""),
                supports_transformers=bool(extra.get("transformers")),
                tunable=tunable,
                tuning_image=tuning_image,
                aliases=aliases,
            )
        )
    if curation:
        raise CatalogDataError(f"portal_presets.yaml names models KAITO's catalogue lacks: {sorted(curation)}")
    for name, model in legacy.items():
        if name in aliased:
            continue
        acceptance = "deprecated" if model.get("deprecated") else "rejected"
        url = re.sub(r"/commit/.*$", "", model.get("version", ""))
        size = re.search(r"(\d+(?:\.\d+)?)b\b", name)
        entries.append(
            PresetEntry(
                name=name,
                served_name=name,
                source="supported_models.yaml",
                publisher=url.removeprefix("https://huggingface.co/").split("/", 1)[0] if url else "",
                family=name.split("-", 1)[0].capitalize(),
                description_url=url,
                parameters=f"{size.group(1)}B" if size else "",
                gated=bool(model.get("downloadAuthRequired")),
                acceptance=acceptance,
                acceptance_note=notes.get(acceptance, ""),
            )
        )
    return entries


def parse_instance_types(skus: dict[str, Any]) -> list[InstanceTypeEntry]:
    entries = [
        InstanceTypeEntry(
            name=s["name"],
            gpu_count=int(s["gpu_count"]),
            gpu_model=s["gpu_model"],
            gpu_memory_gib=float(s["gpu_memory_gib"]),
            cuda_compute=str(s.get("cuda", "")),
            local_nvme=bool(s.get("nvme", False)),
        )
        for s in skus.get("instance_types", [])
    ]
    entries += [
        InstanceTypeEntry(
            name=s["name"],
            gpu_count=int(s["gpu_count"]),
            gpu_model=s["gpu_model"],
            gpu_memory_gib=float(s["gpu_memory_gib"]),
            retired_in=s["removed_in"],
            retired_reason=s["reason"],
        )
        for s in skus.get("retired_instance_types", [])
    ]
    return entries


def parse_prices(prices: dict[str, Any], known: set[str]) -> list[PriceEntry]:
    observed = dt.date.fromisoformat(str(prices["observed_on"]))
    unknown = sorted(set(prices.get("prices", {})) - known)
    if unknown:
        raise CatalogDataError(f"prices.yaml prices unknown instance types: {unknown}")
    return [
        PriceEntry(
            instance_type=name,
            region=prices["region"],
            hourly_usd=Decimal(str(value)),
            source=prices["source"],
            observed_on=observed,
        )
        for name, value in prices.get("prices", {}).items()
    ]


def load_catalog(data_dir: Path = DATA_DIR) -> CatalogData:
    presets = parse_presets(
        _read(data_dir / "kaito" / "model_catalog.yaml"),
        _read(data_dir / "kaito" / "supported_models.yaml"),
        _read(data_dir / "portal_presets.yaml"),
    )
    instance_types = parse_instance_types(_read(data_dir / "azure_skus.yaml"))
    prices = parse_prices(_read(data_dir / "prices.yaml"), {i.name for i in instance_types})
    return CatalogData(presets=tuple(presets), instance_types=tuple(instance_types), prices=tuple(prices))
