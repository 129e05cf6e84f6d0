"""Catalog pages: the searchable list (full page or result fragment) and a preset's detail."""

from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from catalog.forms import PresetFilterForm
from catalog.listing import fit_table, preset_rows, smallest_instance_type
from catalog.models import InstanceType, Preset
from portal.http import HtmxHttpRequest, wants_fragment


@require_GET
def preset_list(request: HtmxHttpRequest) -> HttpResponse:
    form = PresetFilterForm(request.GET)
    filters = form.filters()
    context = {"form": form, "rows": preset_rows(**filters), "fits_on": filters["fits_on"]}
    template = "catalog/preset_list.html"
    if wants_fragment(request):
        template += "#preset-results"
    return render(request, template, context)


@require_GET
def preset_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    preset = Preset.objects.by_name(name)
    if preset is None:
        raise Http404(f"No preset named {name!r}.")
    offered = list(InstanceType.objects.offered().prefetch_related("prices"))
    context = {
        "preset": preset,
        "fit_rows": fit_table(preset, offered, region=settings.PRICE_REGION),
        "region": settings.PRICE_REGION,
        "smallest": smallest_instance_type(preset, offered),
        "smallest_transformers": (
            smallest_instance_type(preset, offered, runtime="transformers") if preset.supports_transformers else None
        ),
        "retired": InstanceType.objects.filter(is_active=True).exclude(retired_in=""),
    }
    return render(request, "catalog/preset_detail.html", context)
