"""sync_catalog: idempotent upsert, deactivation of what disappeared, nothing referenced is deleted."""

import io
import shutil
from decimal import Decimal

import pytest
import yaml
from django.core.management import call_command

from catalog.loader import DATA_DIR
from catalog.models import InstanceType, Preset, PresetAlias, Price

pytestmark = pytest.mark.django_db


def sync(data_dir=DATA_DIR) -> str:
    out = io.StringIO()
    call_command("sync_catalog", data_dir=data_dir, stdout=out)
    return out.getvalue()


def snapshot():
    return (
        sorted(Preset.objects.values_list("name", "is_active", "acceptance", "weight_gib", "tunable", "gated")),
        sorted(PresetAlias.objects.values_list("alias", "preset__name")),
        sorted(InstanceType.objects.values_list("name", "is_active", "gpu_count", "retired_in")),
        sorted(Price.objects.values_list("instance_type__name", "region", "hourly_usd")),
    )


@pytest.fixture
def data_copy(tmp_path):
    target = tmp_path / "data"
    shutil.copytree(DATA_DIR, target)
    return target


def edit_yaml(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_sync_twice_gives_the_same_rows_and_says_so():
    first_output = sync()
    first = snapshot()
    assert "presets: 65 created" in first_output
    second_output = sync()
    assert snapshot() == first
    assert "presets: 0 deactivated, 65 unchanged" in second_output
    assert "prices: 14 unchanged" in second_output


def test_every_upstream_name_is_in_the_catalog():
    sync()
    catalog = yaml.safe_load((DATA_DIR / "kaito" / "model_catalog.yaml").read_text())["models"]
    supported = yaml.safe_load((DATA_DIR / "kaito" / "supported_models.yaml").read_text())["models"]
    assert len(catalog) == 60
    for model in catalog:
        assert Preset.objects.by_name(model["name"]) is not None, model["name"]
    legacy = [m["name"] for m in supported if m["name"] != "base"]
    assert len(legacy) == 30
    for name in legacy:
        assert Preset.objects.by_name(name) is not None, name
    assert PresetAlias.objects.count() == 25


def test_legacy_entries_are_marked():
    sync()
    assert Preset.objects.get(name="falcon-7b").acceptance == Preset.Acceptance.REJECTED
    assert "no longer resolves" in Preset.objects.get(name="falcon-40b-instruct").acceptance_note
    assert Preset.objects.get(name="phi-2").acceptance == Preset.Acceptance.DEPRECATED
    phi3 = Preset.objects.by_name("PHI-3-mini-128k-instruct")  # KAITO lower-cases names
    assert phi3.name == "microsoft/Phi-3-mini-128k-instruct"
    assert phi3.acceptance == Preset.Acceptance.ACCEPTED
    assert phi3.tunable and phi3.supports_transformers
    assert phi3.tuning_image == "mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-128k-instruct:0.2.0"
    assert Preset.objects.filter(tunable=True).count() == 9
    assert set(Preset.objects.filter(gated=True).values_list("name", flat=True)) == {
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.3-70B-Instruct",
        "google/gemma-3-4b-it",
        "google/gemma-3-27b-it",
    }


def test_removed_entries_are_deactivated_not_deleted(data_copy):
    sync()
    edit_yaml(
        data_copy / "kaito" / "model_catalog.yaml",
        lambda d: d.__setitem__("models", [m for m in d["models"] if m["name"] != "microsoft/phi-4"]),
    )
    edit_yaml(
        data_copy / "portal_presets.yaml",
        lambda d: d.__setitem__("presets", [m for m in d["presets"] if m["name"] != "microsoft/phi-4"]),
    )
    edit_yaml(
        data_copy / "azure_skus.yaml",
        lambda d: d.__setitem__(
            "instance_types", [s for s in d["instance_types"] if s["name"] != "Standard_NV72ads_A10_v5"]
        ),
    )
    edit_yaml(data_copy / "prices.yaml", lambda d: d["prices"].pop("Standard_NV72ads_A10_v5"))
    output = sync(data_copy)
    # phi-4 also stops being an alias, so its legacy name comes back as a name KAITO no longer accepts.
    assert "presets: 1 created, 1 deactivated" in output
    assert "instance types: 1 deactivated" in output
    phi4 = Preset.objects.get(name="microsoft/phi-4")
    assert phi4.is_active is False
    assert not Preset.objects.active().filter(name="microsoft/phi-4").exists()
    # The price row references the instance type (PROTECT): both survive, the type is inactive.
    gone = InstanceType.objects.get(name="Standard_NV72ads_A10_v5")
    assert gone.is_active is False
    assert Price.objects.filter(instance_type=gone).exists()
    assert not InstanceType.objects.offered().filter(pk=gone.pk).exists()
    legacy = Preset.objects.by_name("phi-4")
    assert legacy.name == "phi-4"
    assert legacy.acceptance == Preset.Acceptance.REJECTED
    # Back in the data, it is active again.
    sync()
    phi4.refresh_from_db()
    assert phi4.is_active is True


def test_admin_edited_price_is_kept(data_copy):
    sync()
    price = Price.objects.get(instance_type__name="Standard_NC24ads_A100_v4", region="eastus")
    price.hourly_usd = Decimal("2.5000")
    price.managed_by_sync = False
    price.save()
    edit_yaml(data_copy / "prices.yaml", lambda d: d["prices"].__setitem__("Standard_NC24ads_A100_v4", "9.99"))
    output = sync(data_copy)
    assert "1 kept (edited by an admin)" in output
    price.refresh_from_db()
    assert price.hourly_usd == Decimal("2.5000")
    other = Price.objects.get(instance_type__name="Standard_NV36ads_A10_v5")
    assert other.hourly_usd == Decimal("3.2000")


def test_invalid_data_is_refused_with_the_file_named(data_copy):
    edit_yaml(data_copy / "prices.yaml", lambda d: d["prices"].__setitem__("Standard_Nope", "1.00"))
    with pytest.raises(Exception, match=r"prices\.yaml prices unknown instance types"):
        sync(data_copy)
    assert not Preset.objects.exists()
