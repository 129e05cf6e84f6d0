"""Workspace API URLs (mounted under /api/)."""

from django.urls import path

from workspaces import api, chat_api

urlpatterns = [
    path("workspaces/", api.RequestListCreateApi.as_view(), name="api-request-list"),
    path("workspaces/<int:pk>/", api.RequestDetailApi.as_view(), name="api-request-detail"),
    path("workspaces/<int:pk>/manifest/", api.RequestManifestApi.as_view(), name="api-request-manifest"),
    path("workspaces/<int:pk>/approve/", api.RequestApproveApi.as_view(), name="api-request-approve"),
    path("workspaces/<int:pk>/reject/", api.RequestRejectApi.as_view(), name="api-request-reject"),
    path("workspaces/<int:pk>/withdraw/", api.RequestWithdrawApi.as_view(), name="api-request-withdraw"),
    path("workspaces/<int:pk>/delete/", api.RequestDeleteApi.as_view(), name="api-request-delete"),
    path("workspaces/<int:pk>/preflight/", api.RequestPreflightApi.as_view(), name="api-request-preflight"),
    path("preflight/", api.PreflightDraftApi.as_view(), name="api-preflight-draft"),
    # OpenAI-compatible endpoint of a workspace's model: base_url=http://<portal>/api/workspaces/<id>/v1
    path("workspaces/<int:pk>/v1/models", chat_api.models, name="api-openai-models"),
    path("workspaces/<int:pk>/v1/chat/completions", chat_api.chat_completions, name="api-openai-chat"),
]
