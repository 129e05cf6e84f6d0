"""Catalog page URLs."""

from django.urls import path

from catalog import views

app_name = "catalog"
urlpatterns = [
    path("", views.preset_list, name="preset-list"),
    # Hugging Face ids contain a slash, so the name is a path.
    path("presets/<path:name>/", views.preset_detail, name="preset-detail"),
]
