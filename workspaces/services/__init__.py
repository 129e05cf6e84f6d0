"""Every write the workspaces app makes; views, forms, serializers and commands call these."""

from workspaces.services.drafts import CheckedDraft, RequestDraft, request_validate
from workspaces.services.lifecycle import (
    Budget,
    BudgetExceeded,
    budget_after,
    can_approve,
    can_view,
    request_approve,
    request_create,
    request_reject,
    request_withdraw,
    team_spend,
    with_budgets,
)
from workspaces.services.preview import Preview, request_manifests, request_preview

__all__ = [
    "Budget",
    "BudgetExceeded",
    "CheckedDraft",
    "Preview",
    "RequestDraft",
    "budget_after",
    "can_approve",
    "can_view",
    "request_approve",
    "request_create",
    "request_manifests",
    "request_preview",
    "request_reject",
    "request_validate",
    "request_withdraw",
    "team_spend",
    "with_budgets",
]
