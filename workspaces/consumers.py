"""WebSocket consumers: live request rows and status for the list, approval and detail pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.generic.websocket import WebsocketConsumer

from workspaces import live, notify
from workspaces.models import Membership, WorkspaceRequest
from workspaces.services import can_view


class RequestUpdatesConsumer(WebsocketConsumer):
    """Sync consumer (it reads the ORM): joins the groups of what the user may see, sends HTML fragments."""

    def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            self.close(code=4401)
            return
        params = parse_qs(self.scope.get("query_string", b"").decode())
        self.request_id = int(params["request"][0]) if params.get("request", [""])[0].isdigit() else None
        self.mode = "detail" if self.request_id else ("approvals" if "approvals" in params else "list")
        if self.request_id:
            obj = WorkspaceRequest.objects.filter(pk=self.request_id).first()
            if obj is None or not can_view(user, obj):
                self.close(code=4403)
                return
            self.groups_joined = [notify.request_group(self.request_id)]
        elif user.is_superuser:
            self.groups_joined = [notify.ALL_GROUP]
        else:
            teams = Membership.objects.filter(user=user).values_list("team_id", flat=True)
            self.groups_joined = [notify.team_group(team_id) for team_id in teams]
        for group in self.groups_joined:
            async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        self.accept()

    def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)

    def request_changed(self, event: dict[str, Any]) -> None:
        html = live.fragment(
            self.scope["user"], request_id=event["request_id"], mode=self.mode, created=event.get("created", False)
        )
        if html:
            self.send(text_data=html)
