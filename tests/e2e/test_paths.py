"""The other ways a request ends: rejected with a note, withdrawn, approved over budget, expired and deleted."""

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser.fixtures import sign_in
from tests.e2e.pagecheck import check_fits, in_order, statuses_seen, wait_live, watch_page
from workspaces import services
from workspaces.models import Status, WorkspaceRequest
from workspaces.services import RequestDraft

pytestmark = [pytest.mark.browser, pytest.mark.cluster]


def inference_request(people, name="phi-chat", hours=8):
    """A pending request made the way the form makes it ($3.20 per hour on one Standard_NV36ads_A10_v5).

    In a thread of its own: the service announces the request after commit through the channel layer, which
    cannot be called from the thread where Playwright's event loop runs (with Redis the servers hear it).
    """
    draft = RequestDraft(
        kind="inference", team=people.team, name=name, preset="microsoft/Phi-3-mini-128k-instruct",
        instance_type="Standard_NV36ads_A10_v5", hours=hours, purpose="Support bot demo for the sales team",
    )  # fmt: skip

    def create():
        try:
            return services.request_create(requester=people.requester, draft=draft)
        finally:
            connections.close_all()  # PostgreSQL cannot drop the test database while a connection is left open

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(create).result()


def open_live(new_page, stack, user, path):
    """A signed-in page whose WebSocket is open, marked so that a reload would be noticed."""
    page = new_page()
    sign_in(page, stack, user)
    page.goto(stack.url + path)
    wait_live(page)
    watch_page(page)
    return page


def test_rejection_reaches_the_requester_with_the_note(stack, people, new_page, shots):
    request = inference_request(people)
    mine = open_live(new_page, stack, people.requester, request.get_absolute_url())
    expect(mine.locator("#withdraw")).to_be_visible()
    queue = open_live(new_page, stack, people.approver, "/workspaces/approvals/")

    # A rejection needs a reason: without a note it is refused and the request stays pending.
    with queue.expect_navigation():
        queue.click(f"#reject-{request.pk}")
    expect(queue.locator(".message-error")).to_have_text("Say why the request is rejected; the requester reads it.")
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.PENDING_APPROVAL
    note = "Use the shared phi-3 endpoint of the platform team instead."
    queue.fill(f"#note-{request.pk}", note)
    shots(queue, "reject-with-note")
    with queue.expect_navigation():
        queue.click(f"#reject-{request.pk}")
    expect(queue.locator(".message-success")).to_contain_text(f"Rejected {request}")
    expect(queue.locator(f"#approval-{request.pk}")).to_have_count(0)

    # The requester's open page turns Rejected and shows the note, without a reload; nothing is left to withdraw.
    expect(mine.locator("#request-status .badge")).to_have_text("Rejected")
    expect(mine.locator("#request-status")).to_contain_text(f"Approver's note: {note}")
    expect(mine.locator("#events")).to_contain_text("Pending approval → Rejected")
    expect(mine.locator("#events")).to_contain_text(note)
    expect(mine.locator("#withdraw")).to_have_count(0)
    assert statuses_seen(mine) == ["Pending approval", "Rejected"]
    shots(mine, "requester-sees-rejection")
    assert WorkspaceRequest.objects.get(pk=request.pk).decision_note == note


def test_withdrawal_leaves_the_approval_queue(stack, people, new_page, shots):
    request = inference_request(people)
    kept = inference_request(people, name="phi-chat-2")
    queue = open_live(new_page, stack, people.approver, "/workspaces/approvals/")
    expect(queue.locator("#approval-rows tr")).to_have_count(2)
    mine = new_page()
    sign_in(mine, stack, people.requester)
    mine.goto(stack.url + request.get_absolute_url())
    with mine.expect_navigation():
        mine.click("#withdraw")
    expect(mine.locator(".message-success")).to_have_text(f"Withdrew {request}.")
    expect(mine.locator("#request-status .badge")).to_have_text("Withdrawn")
    expect(mine.locator("#withdraw")).to_have_count(0)
    shots(mine, "withdrawn")
    # The approver's open queue drops the row by itself and keeps the other one.
    expect(queue.locator(f"#approval-{request.pk}")).to_have_count(0)
    expect(queue.locator(f"#approval-{kept.pk}")).to_be_visible()
    assert statuses_seen(queue) == []  # the same page, never reloaded
    shots(queue, "queue-without-the-withdrawn-request")
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.WITHDRAWN


def test_over_budget_needs_the_explicit_override(stack, people, new_page, shots):
    people.team.monthly_budget_usd = 20
    people.team.save()
    request = inference_request(people)  # 8 h × $3.20 = $25.60, over the $20 budget
    queue = open_live(new_page, stack, people.approver, "/workspaces/approvals/")
    row = queue.locator(f"#approval-{request.pk}")
    expect(row).to_contain_text("$25.60 of $20.00")
    expect(row.locator(".badge.bad")).to_have_text("over budget")
    expect(row.locator(f"label[for=override-{request.pk}]")).to_have_text("Approve over budget")
    check_fits(queue, shots, "approval-queue-over-budget")

    with queue.expect_navigation():
        queue.click(f"#approve-{request.pk}")
    refused = queue.locator(".message-error")
    expect(refused).to_contain_text("over its budget of $20.00. Tick 'approve over budget' to approve anyway.")
    expect(queue.locator(f"#approval-{request.pk}")).to_be_visible()
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.PENDING_APPROVAL
    shots(queue, "approval-refused-without-the-tick")

    queue.check(f"#override-{request.pk}")
    with queue.expect_navigation():
        queue.click(f"#approve-{request.pk}")
    expect(queue.locator(".message-success")).to_contain_text(f"Approved {request}")
    expect(queue.locator(f"#approval-{request.pk}")).to_have_count(0)
    approved = WorkspaceRequest.objects.get(pk=request.pk)
    assert approved.status != Status.PENDING_APPROVAL and approved.budget_override
    event = approved.events.get(to_status=Status.APPROVED)
    assert "over budget: $25.60 of $20.00, overridden" in event.message
    queue.goto(stack.url + request.get_absolute_url())
    expect(queue.locator("#events")).to_contain_text("overridden")
    shots(queue, "approved-over-budget")


def test_expiry_deletes_the_workspace_while_the_page_watches(stack, people, new_page, shots):
    request = inference_request(people, hours=1)
    approver = new_page()
    sign_in(approver, stack, people.approver)
    approver.goto(stack.url + request.get_absolute_url())
    mine = open_live(new_page, stack, people.requester, request.get_absolute_url())
    with approver.expect_navigation():
        approver.click("#approve")
    expect(approver.locator(".message-success")).to_contain_text(f"Approved {request}")
    expect(mine.locator("#request-status .badge")).to_have_text("Ready", timeout=30_000)
    expect(mine.locator("#open-chat")).to_be_visible()
    shots(mine, "ready")

    # Time passes: the hour is up. The reconciler notices within its watch window (15 s) and deletes it.
    WorkspaceRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    expect(mine.locator("#request-status .badge")).to_have_text("Deleted", timeout=45_000)
    expect(mine.locator("#status-message")).to_have_text("Removed after it expired")
    events = mine.locator("#events")
    expect(events).to_contain_text("Ready → Expired")
    expect(events).to_contain_text(re.compile(r"The workspace expired \(1 h\); deleting it to release the GPU nodes"))
    expect(events).to_contain_text("Expired → Deleted")
    expect(mine.locator("#open-chat")).to_have_count(0)
    expect(mine.locator("#delete")).to_have_count(0)
    seen = statuses_seen(mine)
    assert in_order(seen, ["Pending approval", "Provisioning", "Ready", "Expired", "Deleted"]), seen
    shots(mine, "expired-and-deleted")
    assert WorkspaceRequest.objects.get(pk=request.pk).status == Status.DELETED
