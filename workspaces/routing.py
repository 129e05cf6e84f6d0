"""WebSocket routes."""

from django.urls import path

from workspaces import chat_consumers, consumers

websocket_urlpatterns = [
    path("ws/requests/", consumers.RequestUpdatesConsumer.as_asgi()),
    path("ws/chat/<int:pk>/", chat_consumers.ChatConsumer.as_asgi()),
    path("ws/compare/<int:a>/<int:b>/", chat_consumers.CompareConsumer.as_asgi()),
]
