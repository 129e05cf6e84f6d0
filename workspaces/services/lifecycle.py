"""The request lifecycle: create, approve, reject, withdraw — every transition audited and broadcast."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from workspaces import notify
from workspaces.models import SPENDING, Membership, PendingSecret, Status, Team, WorkspaceEvent, WorkspaceRequest
from workspaces.services.drafts import RequestDraft, request_validate
from workspaces.services.preflight import preflight_after_create
from workspaces.services.preview import stored_fields
from workspaces.services.secrets import secret_store, secrets_discard
from workspaces.services.transitions import _transition
from workspaces.services.workspace import apply_after_approval

logger = logging.getLogger(__name__)


class BudgetExceeded(ValidationError):
    """Approving would take the team over its monthly budget; an explicit override is needed."""


def _locked(request: WorkspaceRequest) -> WorkspaceRequest:
    # Lock the request's row only: PostgreSQL refuses FOR UPDATE on the nullable side of the outer joins that
    # with_related() adds (instance type, decider), so every decision failed there; SQLite ignores the lock.
    return WorkspaceRequest.objects.select_for_update(of=("self",)).with_related().get(pk=request.pk)


def can_approve(user: AbstractBaseUser, request: WorkspaceRequest) -> bool:
    if user.pk == request.requester_id:
        return False
    return (
        user.is_superuser
        or Membership.objects.filter(team_id=request.team_id, user=user, role=Membership.Role.APPROVER).exists()
    )


def can_view(user: AbstractBaseUser, request: WorkspaceRequest) -> bool:
    return user.is_superuser or Membership.objects.filter(team_id=request.team_id, user=user).exists()


def team_spend(*, team: Team, month: dt.date, exclude: WorkspaceRequest | None = None) -> Decimal:
    """Estimated cost of the team's requests approved in the calendar month of `month`."""
    start, end = _month_bounds(month)
    queryset = WorkspaceRequest.objects.filter(
        team=team, status__in=SPENDING, decided_at__gte=start, decided_at__lt=end
    )
    if exclude is not None:
        queryset = queryset.exclude(pk=exclude.pk)
    return queryset.aggregate(total=Sum("estimated_cost_usd"))["total"] or Decimal("0")


def _month_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    return start, dt.datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Budget:
    spend_after: Decimal  # approved this month, plus this request
    limit: Decimal | None  # None: the team has no limit

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.spend_after > self.limit


def budget_after(request: WorkspaceRequest, *, now: dt.datetime | None = None) -> Budget:
    """The team's estimated spend this month if this request were approved, against its budget."""
    now = now or timezone.now()
    spend = team_spend(team=request.team, month=now.date(), exclude=request) + (request.estimated_cost_usd or 0)
    return Budget(spend_after=spend, limit=request.team.monthly_budget_usd)


def with_budgets(rows: list[WorkspaceRequest], *, now: dt.datetime | None = None) -> list[WorkspaceRequest]:
    """Annotate pending rows with `.budget` using one query for all their teams."""
    start, end = _month_bounds((now or timezone.now()).date())
    spent = dict(
        WorkspaceRequest.objects.filter(
            team__in={row.team_id for row in rows}, status__in=SPENDING, decided_at__gte=start, decided_at__lt=end
        )
        .values("team")
        .annotate(total=Sum("estimated_cost_usd"))
        .values_list("team", "total")
    )
    for row in rows:
        spend = (spent.get(row.team_id) or Decimal("0")) + (row.estimated_cost_usd or 0)
        row.budget = Budget(spend_after=spend, limit=row.team.monthly_budget_usd)
    return rows


@transaction.atomic
def request_create(*, requester: AbstractBaseUser, draft: RequestDraft) -> WorkspaceRequest:
    checked = request_validate(requester=requester, draft=draft)
    request = WorkspaceRequest.objects.create(
        **stored_fields(checked.spec),
        team=checked.team,
        requester=requester,
        preset=checked.preset,
        instance_type=checked.instance_type,
        hours=draft.hours,
        purpose=draft.purpose,
        hourly_price_usd=checked.hourly_price,
        estimated_cost_usd=checked.estimated_cost,
        price_source=checked.price_source,
    )
    if draft.hf_token and draft.kind == "inference":
        secret_store(request=request, purpose=PendingSecret.Purpose.HF_TOKEN, value={"token": draft.hf_token})
    if checked.registry is not None:
        secret_store(request=request, purpose=PendingSecret.Purpose.REGISTRY, value=vars(checked.registry))
    message = "; ".join(["Requested", *checked.warnings])
    WorkspaceEvent.objects.create(request=request, actor=requester, to_status=request.status, message=message)
    request_id = request.pk
    transaction.on_commit(lambda: notify.request_changed(request_id=request_id, created=True))
    transaction.on_commit(lambda: notify.approval_needed(request_id=request_id))
    if draft.kind == "tuning":
        transaction.on_commit(lambda: preflight_after_create(request_id=request_id))
    logger.info("request %s created by %s for %s", request_id, requester.get_username(), request)
    return request


@transaction.atomic
def request_approve(
    *, request: WorkspaceRequest, actor: AbstractBaseUser, note: str = "", budget_override: bool = False
) -> WorkspaceRequest:
    request = _locked(request)
    if not can_approve(actor, request):
        raise PermissionDenied("Only an approver of this team who did not make the request can approve it.")
    if request.status != Status.PENDING_APPROVAL:
        raise ValidationError(f"This request is {request.get_status_display().lower()}, not pending approval.")
    budget = budget_after(request)
    over = budget.exceeded
    if over and not budget_override:
        raise BudgetExceeded(
            f"Approving brings {request.team}'s estimated spend this month to ${budget.spend_after:,.2f}, over its "
            f"budget of ${budget.limit:,.2f}. Tick 'approve over budget' to approve anyway.",
            code="over_budget",
        )
    message = note or "Approved"
    if over:
        message += f" (over budget: ${budget.spend_after:,.2f} of ${budget.limit:,.2f}, overridden)"
    _transition(
        request,
        to=Status.APPROVED,
        actor=actor,
        message=message,
        decided_by=actor,
        decided_at=timezone.now(),
        decision_note=note,
        budget_override=over,
    )
    request_id = request.pk
    transaction.on_commit(lambda: notify.decided(request_id=request_id))
    transaction.on_commit(lambda: apply_after_approval(request_id=request_id))
    return request


@transaction.atomic
def request_reject(*, request: WorkspaceRequest, actor: AbstractBaseUser, note: str) -> WorkspaceRequest:
    request = _locked(request)
    if not can_approve(actor, request):
        raise PermissionDenied("Only an approver of this team who did not make the request can reject it.")
    if not note.strip():
        raise ValidationError({"note": ["Say why the request is rejected; the requester reads it."]})
    if request.status != Status.PENDING_APPROVAL:
        raise ValidationError(f"This request is {request.get_status_display().lower()}, not pending approval.")
    _transition(
        request,
        to=Status.REJECTED,
        actor=actor,
        message=note,
        decided_by=actor,
        decided_at=timezone.now(),
        decision_note=note,
    )
    secrets_discard(request=request)
    request_id = request.pk
    transaction.on_commit(lambda: notify.decided(request_id=request_id))
    return request


@transaction.atomic
def request_withdraw(*, request: WorkspaceRequest, actor: AbstractBaseUser, note: str = "") -> WorkspaceRequest:
    request = _locked(request)
    if actor.pk != request.requester_id:
        raise PermissionDenied("Only the requester can withdraw a request.")
    if request.status != Status.PENDING_APPROVAL:
        raise ValidationError("Only a request that is still pending approval can be withdrawn.")
    _transition(request, to=Status.WITHDRAWN, actor=actor, message=note or "Withdrawn by the requester")
    secrets_discard(request=request)
    return request
