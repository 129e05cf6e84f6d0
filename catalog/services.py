"""Catalog writes: load the data files into the database idempotently."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from django.db import models, transaction

from catalog.loader import CatalogData, InstanceTypeEntry, PresetEntry, PriceEntry
from catalog.models import InstanceType, Preset, PresetAlias, Price


def _upsert(model: type[models.Model], key: dict[str, Any], values: dict[str, Any], counts: Counter) -> models.Model:
    obj = model.objects.filter(**key).first()
    if obj is None:
        counts["created"] += 1
        return model.objects.create(**key, **values)
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    if changed:
        for name in changed:
            setattr(obj, name, values[name])
        obj.save(update_fields=changed)
        counts["updated"] += 1
    else:
        counts["unchanged"] += 1
    return obj


def _preset_values(entry: PresetEntry) -> dict[str, Any]:
    values = dataclasses.asdict(entry)
    del values["name"], values["aliases"]
    values["architectures"] = list(entry.architectures)
    values["is_active"] = True
    return values


def _instance_type_values(entry: InstanceTypeEntry) -> dict[str, Any]:
    values = dataclasses.asdict(entry)
    del values["name"]
    values["total_gpu_memory_gib"] = entry.gpu_count * entry.gpu_memory_gib
    values["is_active"] = True
    return values


def _sync_prices(entries: tuple[PriceEntry, ...], counts: Counter) -> None:
    for entry in entries:
        instance_type = InstanceType.objects.get(name=entry.instance_type)
        price = Price.objects.filter(instance_type=instance_type, region=entry.region).first()
        values = {"hourly_usd": entry.hourly_usd, "source": entry.source, "observed_on": entry.observed_on}
        if price is not None and not price.managed_by_sync:
            counts["kept (edited by an admin)"] += 1
            continue
        _upsert(Price, {"instance_type": instance_type, "region": entry.region}, values, counts)


@transaction.atomic
def catalog_sync(*, data: CatalogData) -> dict[str, Counter]:
    """Upsert presets, aliases, instance types, prices; deactivate what disappeared, delete nothing.

    Running it twice gives the same rows. Returns counts per kind for the command to print.
    """
    counts: dict[str, Counter] = {"presets": Counter(), "instance types": Counter(), "prices": Counter()}

    seen_presets: set[int] = set()
    for entry in data.presets:
        preset = _upsert(Preset, {"name": entry.name}, _preset_values(entry), counts["presets"])
        seen_presets.add(preset.pk)
        # Aliases belong to their preset and nothing references them, so they follow the data exactly.
        PresetAlias.objects.filter(preset=preset).exclude(alias__in=entry.aliases).delete()
        for alias in entry.aliases:
            PresetAlias.objects.update_or_create(alias=alias, defaults={"preset": preset})
    counts["presets"]["deactivated"] = (
        Preset.objects.filter(is_active=True).exclude(pk__in=seen_presets).update(is_active=False)
    )
    PresetAlias.objects.exclude(preset__in=seen_presets).delete()

    seen_types: set[int] = set()
    for entry in data.instance_types:
        obj = _upsert(InstanceType, {"name": entry.name}, _instance_type_values(entry), counts["instance types"])
        seen_types.add(obj.pk)
    counts["instance types"]["deactivated"] = (
        InstanceType.objects.filter(is_active=True).exclude(pk__in=seen_types).update(is_active=False)
    )

    _sync_prices(data.prices, counts["prices"])
    return counts
