"""WebSocket routes."""

from django.urls import path

from workspaces import consumers

websocket_urlpatterns = [
    path("ws/requests/", consumers.RequestUpdatesConsumer.as_asgi()),
]
