"""10,000 requests: the list and the approval queue cost the same number of queries as 10."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import InstanceType, Preset
from workspaces.models import Membership, Team, WorkspaceRequest

pytestmark = pytest.mark.usefixtures("catalog")


def make_requests(count, team, users):
    preset = Preset.objects.get(name="microsoft/Phi-3-mini-128k-instruct")
    instance = InstanceType.objects.get(name="Standard_NV36ads_A10_v5")
    existing = WorkspaceRequest.objects.count()
    WorkspaceRequest.objects.bulk_create(
        WorkspaceRequest(
            team=team,
            requester=users[i % len(users)],
            kind="inference",
            name=f"ws-{existing + i}",
            namespace=team.namespace,
            preset=preset,
            instance_type=instance,
            hours=8,
            estimated_cost_usd=25.6,
            status="PENDING_APPROVAL" if i % 2 else "READY",
            decided_at=None,
        )
        for i in range(count)
    )


def queries_for(client, url):
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200
    return len(context.captured_queries), response.text


def test_list_and_queue_queries_do_not_grow(client, django_user_model):
    teams = [
        Team.objects.create(name=f"T{i}", slug=f"t{i}", namespace=f"t-{i}", monthly_budget_usd=100) for i in range(3)
    ]
    approver = django_user_model.objects.create_user("boss")
    requesters = [django_user_model.objects.create_user(f"user{i}") for i in range(5)]
    for team in teams:
        Membership.objects.create(team=team, user=approver, role="approver")
        for user in requesters:
            Membership.objects.create(team=team, user=user)
    for team in teams:
        make_requests(4, team, requesters)
    client.force_login(approver)
    small_list, _ = queries_for(client, "/workspaces/")
    small_queue, _ = queries_for(client, "/workspaces/approvals/")
    for team in teams:
        make_requests(3400, team, requesters)
    assert WorkspaceRequest.objects.count() > 10_000
    big_list, page = queries_for(client, "/workspaces/")
    big_queue, queue = queries_for(client, "/workspaces/approvals/")
    assert page.count('<tr id="request-') == 50 and "10212 in all" in page
    assert queue.count('<tr id="approval-') == 50
    assert (big_list, big_queue) == (small_list, small_queue)
    api_small, _ = queries_for(client, "/api/workspaces/?limit=10")
    api_big, _ = queries_for(client, "/api/workspaces/?limit=500")
    assert api_small == api_big
