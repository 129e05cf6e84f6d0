"""Workspace page URLs."""

from django.urls import path

from workspaces import chat_views, views

app_name = "workspaces"
urlpatterns = [
    path("", views.request_list, name="request-list"),
    path("new/<str:kind>/", views.request_create, name="request-create"),
    path("new/<str:kind>/preview/", views.request_preview, name="request-preview"),
    path("new/<str:kind>/preflight/", views.request_preflight_draft, name="request-preflight-draft"),
    path("training-defaults/", views.training_defaults, name="training-defaults"),
    path("instance-type-options/", views.instance_type_options, name="instance-type-options"),
    path("approvals/", views.approval_queue, name="approval-queue"),
    path("<int:pk>/", views.request_detail, name="request-detail"),
    path("<int:pk>/manifest.yaml", views.request_manifest, name="request-manifest"),
    path("<int:pk>/live/", views.request_live, name="request-live"),
    path("<int:pk>/logs/", views.request_logs, name="request-logs"),
    path("<int:pk>/decide/", views.request_decide, name="request-decide"),
    path("<int:pk>/withdraw/", views.request_withdraw, name="request-withdraw"),
    path("<int:pk>/delete/", views.request_delete, name="request-delete"),
    path("<int:pk>/preflight/", views.request_preflight, name="request-preflight"),
    # Chat with the workspace's model (issue 6)
    path("<int:pk>/chat/", chat_views.chat_page, name="chat"),
    path("<int:pk>/chat/<int:cid>/export.json", chat_views.conversation_export, name="chat-export"),
    path("<int:pk>/chat/<int:cid>/rename/", chat_views.conversation_rename, name="chat-rename"),
    path("<int:pk>/chat/<int:cid>/delete/", chat_views.conversation_delete, name="chat-delete"),
    path("<int:pk>/compare/", chat_views.compare_page, name="chat-compare"),
]
