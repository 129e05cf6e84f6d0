"""Workspaces admin: teams and members; requests with their audit trail, decided through the services."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from workspaces import services
from workspaces.models import Membership, Team, WorkspaceEvent, WorkspaceRequest


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "namespace", "monthly_budget_usd"]
    search_fields = ["name", "namespace"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role"]
    list_filter = ["role", "team"]
    autocomplete_fields = ["user", "team"]


class EventInline(admin.TabularInline):
    model = WorkspaceEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "actor", "from_status", "to_status", "message"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _decide(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, *, approve: bool) -> None:
    for obj in queryset:
        try:
            if approve:
                services.request_approve(request=obj, actor=request.user, note="Approved in the admin")
            else:
                services.request_reject(request=obj, actor=request.user, note="Rejected in the admin")
        except (ValidationError, PermissionDenied) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            modeladmin.message_user(request, f"{obj}: {text}", level=messages.ERROR)
        else:
            modeladmin.message_user(request, f"{obj}: {'approved' if approve else 'rejected'}.")


@admin.action(description="Approve the selected requests (within budget)")
def approve_requests(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    _decide(modeladmin, request, queryset, approve=True)


@admin.action(description="Reject the selected requests")
def reject_requests(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    _decide(modeladmin, request, queryset, approve=False)


@admin.register(WorkspaceRequest)
class WorkspaceRequestAdmin(admin.ModelAdmin):
    list_display = ["name", "namespace", "kind", "preset", "status", "requester", "estimated_cost_usd", "created_at"]
    list_filter = ["status", "kind", "team"]
    search_fields = ["name", "namespace", "requester__username"]
    list_select_related = ["preset", "requester", "team"]
    actions = [approve_requests, reject_requests]
    inlines = [EventInline]
    # Requests change only through the services (audit trail, notifications), never by editing fields here.
    readonly_fields = [f.name for f in WorkspaceRequest._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
