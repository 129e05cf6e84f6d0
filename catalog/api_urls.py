"""Catalog API URLs (mounted under /api/)."""

from django.urls import path

from catalog import api

urlpatterns = [
    path("presets/", api.PresetListApi.as_view(), name="api-preset-list"),
    path("presets/<path:name>/", api.PresetDetailApi.as_view(), name="api-preset-detail"),
    path("instance-types/", api.InstanceTypeListApi.as_view(), name="api-instance-type-list"),
]
