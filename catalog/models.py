"""Catalog rows: presets (with legacy aliases), GPU instance types and hourly prices."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from catalog import fit


class PresetQuerySet(models.QuerySet["Preset"]):
    def active(self) -> PresetQuerySet:
        return self.filter(is_active=True)

    def search(self, query: str) -> PresetQuerySet:
        if not query:
            return self
        return self.filter(
            Q(name__icontains=query)
            | Q(aliases__alias__icontains=query)
            | Q(publisher__icontains=query)
            | Q(family__icontains=query)
        ).distinct()

    def by_name(self, name: str) -> Preset | None:
        """The preset named by a Hugging Face id or a legacy alias, case-insensitively (as KAITO does)."""
        name = name.strip()
        return (
            self.filter(Q(name__iexact=name) | Q(aliases__alias__iexact=name))
            .prefetch_related("aliases")
            .order_by("-is_active", "name")
            .first()
        )


class Preset(models.Model):
    """A model KAITO can serve: a curated catalogue entry, or a legacy name KAITO once knew."""

    class Acceptance(models.TextChoices):
        ACCEPTED = "accepted", "Accepted by KAITO"
        DEPRECATED = "deprecated", "Deprecated"
        REJECTED = "rejected", "No longer accepted"

    name = models.CharField(max_length=200, unique=True, help_text="Hugging Face id, or a legacy name.")
    served_name = models.CharField(max_length=200, help_text="The model id vLLM serves it under.")
    publisher = models.CharField(max_length=100, blank=True)
    family = models.CharField(max_length=50, blank=True)
    description_url = models.URLField(blank=True)
    license = models.CharField(max_length=100, blank=True)
    parameters = models.CharField(max_length=50, blank=True)
    weight_gib = models.FloatField(null=True, blank=True)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    architectures = models.JSONField(default=list, blank=True)
    num_hidden_layers = models.PositiveIntegerField(null=True, blank=True)
    num_key_value_heads = models.PositiveIntegerField(null=True, blank=True)
    head_dim = models.FloatField(null=True, blank=True)
    kv_lora_rank = models.PositiveIntegerField(null=True, blank=True)
    qk_rope_head_dim = models.PositiveIntegerField(null=True, blank=True)
    quantization = models.CharField(max_length=50, blank=True)
    gated = models.BooleanField(default=False, help_text="Needs a Hugging Face token to download.")
    gated_note = models.CharField(max_length=200, blank=True)
    supports_transformers = models.BooleanField(default=False)
    tunable = models.BooleanField(default=False)
    tuning_image = models.CharField(max_length=200, blank=True)
    acceptance = models.CharField(max_length=20, choices=Acceptance, default=Acceptance.ACCEPTED)
    acceptance_note = models.TextField(blank=True)
    source = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True, help_text="Still present in the catalog data.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_requestable(self) -> bool:
        return self.is_active and self.acceptance == self.Acceptance.ACCEPTED

    @property
    def runtimes(self) -> list[str]:
        if self.weight_gib is None:
            return []
        return ["vllm", "transformers"] if self.supports_transformers else ["vllm"]

    @property
    def alias_names(self) -> list[str]:
        return [a.alias for a in self.aliases.all()]

    @property
    def manifest_name(self) -> str:
        """The name the portal writes into preset.name: KAITO's legacy alias when there is one.

        KAITO's tuning path resolves its weight image through the legacy name, and its own
        examples use the alias, so the alias is the name KAITO handles on every path.
        """
        aliases = self.alias_names
        return aliases[0] if aliases else self.name

    def model_spec(self) -> fit.ModelSpec | None:
        if self.weight_gib is None or self.num_hidden_layers is None:
            return None
        return fit.ModelSpec(
            weight_gib=self.weight_gib,
            num_layers=self.num_hidden_layers,
            num_kv_heads=self.num_key_value_heads or 0,
            head_dim=self.head_dim or 0.0,
            kv_lora_rank=self.kv_lora_rank,
            qk_rope_head_dim=self.qk_rope_head_dim,
        )


class PresetAlias(models.Model):
    """A legacy short name (e.g. phi-3-mini-128k-instruct) that KAITO maps to a catalogue entry."""

    alias = models.CharField(max_length=100, unique=True)
    preset = models.ForeignKey(Preset, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "preset aliases"

    def __str__(self) -> str:
        return self.alias


class InstanceTypeQuerySet(models.QuerySet["InstanceType"]):
    def offered(self) -> InstanceTypeQuerySet:
        """Instance types KAITO accepts today, smallest GPU memory first."""
        return self.filter(is_active=True, retired_in="").order_by("total_gpu_memory_gib", "gpu_count", "name")


class InstanceType(models.Model):
    """An Azure GPU VM size from KAITO's SKU table (or one KAITO retired, kept to explain refusals)."""

    name = models.CharField(max_length=64, unique=True)
    gpu_count = models.PositiveSmallIntegerField()
    gpu_model = models.CharField(max_length=64)
    gpu_memory_gib = models.FloatField(help_text="Memory of one GPU, GiB.")
    total_gpu_memory_gib = models.FloatField()
    cuda_compute = models.CharField(max_length=8, blank=True)
    local_nvme = models.BooleanField(default=False)
    retired_in = models.CharField(max_length=20, blank=True, help_text="KAITO release that removed it.")
    retired_reason = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)

    objects = InstanceTypeQuerySet.as_manager()

    class Meta:
        ordering = ["total_gpu_memory_gib", "gpu_count", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_offered(self) -> bool:
        return self.is_active and not self.retired_in

    def gpu_spec(self) -> fit.GpuSpec:
        return fit.GpuSpec(gpu_count=self.gpu_count, gpu_memory_gib=self.gpu_memory_gib)

    def hourly_price(self, region: str) -> Decimal | None:
        # Iterates the (usually prefetched) prices so that a table of instance types costs one query.
        return next((p.hourly_usd for p in self.prices.all() if p.region == region), None)


class Price(models.Model):
    """Hourly price of one instance type in one region; data with its source and date."""

    instance_type = models.ForeignKey(InstanceType, on_delete=models.PROTECT, related_name="prices")
    region = models.CharField(max_length=50)
    hourly_usd = models.DecimalField(max_digits=10, decimal_places=4)
    source = models.CharField(max_length=255)
    observed_on = models.DateField()
    managed_by_sync = models.BooleanField(
        default=True, help_text="Cleared when an admin edits the price, so sync_catalog keeps the edit."
    )

    class Meta:
        ordering = ["instance_type__total_gpu_memory_gib", "region"]
        constraints = [models.UniqueConstraint(fields=["instance_type", "region"], name="one_price_per_region")]

    def __str__(self) -> str:
        return f"{self.instance_type} in {self.region}: ${self.hourly_usd}/h"
