"""Catalog admin: presets and instance types are read from data; prices are edited here."""

from django.contrib import admin
from django.http import HttpRequest

from catalog.models import InstanceType, Preset, PresetAlias, Price


class PresetAliasInline(admin.TabularInline):
    model = PresetAlias
    extra = 0


@admin.register(Preset)
class PresetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "publisher",
        "weight_gib",
        "context_length",
        "tunable",
        "gated",
        "acceptance",
        "is_active",
    ]
    list_filter = ["acceptance", "tunable", "gated", "supports_transformers", "is_active", "family"]
    search_fields = ["name", "aliases__alias", "publisher"]
    inlines = [PresetAliasInline]


class PriceInline(admin.TabularInline):
    model = Price
    extra = 0


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "gpu_count", "gpu_model", "gpu_memory_gib", "retired_in", "is_active"]
    list_filter = ["gpu_model", "is_active"]
    inlines = [PriceInline]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["instance_type", "region", "hourly_usd", "observed_on", "source", "managed_by_sync"]
    list_filter = ["region", "managed_by_sync"]
    list_editable = ["hourly_usd"]

    def save_model(self, request: HttpRequest, obj: Price, form: object, change: bool) -> None:
        # An admin's price wins over the data file from now on.
        obj.managed_by_sync = False
        super().save_model(request, obj, form, change)
