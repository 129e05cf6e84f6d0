"""Catalog filter form: it validates the query string for both the page and its htmx fragment."""

from django import forms

from catalog.listing import SORTS
from catalog.models import InstanceType


class PresetFilterForm(forms.Form):
    q = forms.CharField(
        label="Search",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, alias or publisher"}),
    )
    tunable = forms.BooleanField(label="Can be fine-tuned", required=False)
    runtime = forms.ChoiceField(
        label="Runtime",
        required=False,
        choices=[("", "Any runtime"), ("vllm", "vLLM"), ("transformers", "Transformers")],
    )
    gated = forms.ChoiceField(
        label="Hugging Face token",
        required=False,
        choices=[("", "Either"), ("no", "Not needed"), ("yes", "Needed (gated)")],
    )
    fits = forms.ModelChoiceField(
        label="Fits on one node of",
        required=False,
        to_field_name="name",
        empty_label="Any instance type",
        queryset=InstanceType.objects.offered(),
    )
    sort = forms.ChoiceField(label="Sort by", required=False, choices=[(k, v[0]) for k, v in SORTS.items()])

    def filters(self) -> dict[str, object]:
        """Keyword arguments for listing.preset_rows; invalid values fall back to 'no filter'."""
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "query": data.get("q", ""),
            "tunable": data.get("tunable", False),
            "runtime": data.get("runtime", ""),
            "gated": data.get("gated", ""),
            "fits_on": data.get("fits"),
            "sort": data.get("sort") or "name",
        }
