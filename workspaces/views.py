"""Workspace pages: request forms with live preview, the request list and page, the approval queue."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from catalog.models import Preset
from portal.http import HtmxHttpRequest, wants_fragment
from workspaces import live, services
from workspaces.forms import (
    DecisionForm,
    InferenceRequestForm,
    RequestForm,
    TuningRequestForm,
    instance_type_choices,
    smallest_for,
)
from workspaces.kaito import defaults
from workspaces.kaito.manifests import to_yaml
from workspaces.models import Status, WorkspaceRequest
from workspaces.services import preflight, workspace

FORMS: dict[str, type[RequestForm]] = {"inference": InferenceRequestForm, "tuning": TuningRequestForm}


def _request_for(request: HtmxHttpRequest, pk: int) -> WorkspaceRequest:
    """The request if the user may see it; 404 otherwise, so ids of other teams' requests do not leak."""
    obj = get_object_or_404(WorkspaceRequest.objects.with_related(), pk=pk)
    if not services.can_view(request.user, obj):
        raise Http404("No such request.")
    return obj


@require_http_methods(["GET", "POST"])
def request_create(request: HtmxHttpRequest, kind: str) -> HttpResponse:
    form_class = FORMS.get(kind)
    if form_class is None:
        raise Http404("Unknown kind of workspace.")
    if request.method == "POST":
        form = form_class(request.POST, user=request.user)
        if form.is_valid():
            try:
                created = services.request_create(requester=request.user, draft=form.to_draft())
            except ValidationError as exc:  # a race, e.g. the name was taken meanwhile
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
            else:
                messages.success(request, f"Request {created} sent for approval.")
                return redirect("workspaces:request-detail", pk=created.pk)
    else:
        initial = {key: request.GET[key] for key in ("preset", "name", "method", "output_image") if key in request.GET}
        if "adapter" in request.GET:  # "Deploy with this adapter" from a finished tuning request
            initial["adapters"] = request.GET["adapter"]
        form = form_class(initial=initial, user=request.user)
    context = {"form": form, "kind": kind, "presets": form.preset_choices}
    return render(request, "workspaces/request_form.html", context)


@require_POST
def request_preview(request: HtmxHttpRequest, kind: str) -> HttpResponse:
    """The live manifest and cost for what is in the form now (htmx, on every change)."""
    form_class = FORMS.get(kind)
    if form_class is None:
        raise Http404("Unknown kind of workspace.")
    form = form_class(request.POST, user=request.user)
    form.is_valid()  # fills cleaned_data for the valid fields
    preview = services.request_preview(requester=request.user, draft=form.to_draft())
    # A typed value the form refused is missing from the draft, so the preview would call it "required";
    # say what the form says beside that field instead.
    for name, errors in form.errors.items():
        if name in preview.errors and str(form.data.get(name, "")).strip():
            preview.errors[name] = list(errors)
    context = {"preview": preview, "form": form, "kind": kind}
    return render(request, "workspaces/request_form.html#preview", context)


@require_POST
def request_preflight_draft(request: HtmxHttpRequest, kind: str) -> HttpResponse:
    """Check the datasets or the registry the form names right now (htmx, after those fields change)."""
    part = request.GET.get("part", "datasets")
    if kind != "tuning" or part not in ("datasets", "registry"):
        raise Http404("Nothing to check.")
    form = TuningRequestForm(request.POST, user=request.user)
    form.is_valid()
    values = form.draft_values()
    preset = Preset.objects.by_name(values["preset"]) if values["preset"] else None
    if (part == "datasets" and not values["input_urls"]) or (part == "registry" and not values["output_image"]):
        return render(request, "workspaces/_preflight_part.html", {"part": part, "result": None})
    result = preflight.preflight_draft(
        part=part,
        namespace=values["team"].namespace if values["team"] else "",
        input_urls=values["input_urls"],
        output_image=values["output_image"],
        registry_username=values["registry_username"],
        registry_password=values["registry_password"],
        output_push_secret=values["output_push_secret"],
        context_length=preset.context_length if preset else None,
        training_config=values["training_config"],
    )
    return render(request, "workspaces/_preflight_part.html", {"part": part, "result": result})


@require_POST
def request_preflight(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Run the checks of a stored request again (requester or an approver)."""
    obj = _request_for(request, pk)
    if obj.kind != "tuning" or not workspace.can_delete(request.user, obj):
        raise PermissionDenied("Only the requester or an approver of the team can re-run the checks.")
    preflight.preflight_request(request_id=obj.pk)
    messages.success(request, "The dataset and registry checks ran again.")
    return _back_to(request, obj)


@require_GET
def training_defaults(request: HtmxHttpRequest) -> HttpResponse:
    """The tuning-parameters editor refilled with KAITO's defaults for the chosen method."""
    method = request.GET.get("method", "qlora")
    if method not in ("qlora", "lora"):
        raise Http404("Unknown method.")
    field = TuningRequestForm.base_fields["training_config"]
    html = field.widget.render("training_config", defaults.training_config(method), attrs={"id": "id_training_config"})
    return HttpResponse(html)


@require_GET
def instance_type_options(request: HtmxHttpRequest) -> HttpResponse:
    """The instance-type options for a model, the smallest it fits on selected."""
    preset = request.GET.get("preset", "")
    context = {"choices": instance_type_choices(preset), "selected": smallest_for(preset)}
    return render(request, "workspaces/_instance_type_options.html", context)


@require_GET
def request_list(request: HtmxHttpRequest) -> HttpResponse:
    queryset = WorkspaceRequest.objects.visible_to(request.user).with_related()
    status = request.GET.get("status", "")
    if status in Status.values:
        queryset = queryset.filter(status=status)
    if request.GET.get("mine"):
        queryset = queryset.filter(requester=request.user)
    page = Paginator(queryset, 50).get_page(request.GET.get("page"))
    context = {"page": page, "rows": page.object_list, "status": status, "statuses": Status.choices}
    template = "workspaces/request_list.html"
    if wants_fragment(request):
        template += "#request-table"
    return render(request, template, context)


@require_GET
def request_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    obj = _request_for(request, pk)
    context = live.detail_context(request.user, obj) | {
        "manifest_yaml": to_yaml(services.request_manifests(request=obj)),
        "can_decide": obj.status == Status.PENDING_APPROVAL and services.can_approve(request.user, obj),
        "decision_form": DecisionForm(),
        "budget": services.budget_after(obj),
    }
    return render(request, "workspaces/request_detail.html", context)


@require_GET
def request_live(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The polling fallback for pages whose WebSocket is down; polling stops (286) once nothing can change."""
    obj = _request_for(request, pk)
    mode = request.GET.get("mode", "list")
    if mode == "approvals":
        # The row holds a half-typed note: leave it alone while pending, remove it once decided.
        if obj.status == Status.PENDING_APPROVAL and services.can_approve(request.user, obj):
            return HttpResponse("")
        return HttpResponseStopPolling(f'<tr id="approval-{obj.pk}" hx-swap-oob="delete"></tr>')
    if mode == "detail":
        context = live.detail_context(request.user, obj)
        html = render_to_string("workspaces/_request_live.html", context, request=request)
    else:
        html = render_to_string("workspaces/_request_row.html", {"obj": obj}, request=request)
    return HttpResponseStopPolling(html) if obj.is_final else HttpResponse(html)


@require_GET
def request_logs(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The tuning job's last log lines; the page polls while the job runs and stops once it has ended."""
    obj = _request_for(request, pk)
    if obj.kind != "tuning":
        raise Http404("Only tuning jobs have logs.")
    following = obj.status in (Status.PROVISIONING, Status.RUNNING)
    tail = workspace.tuning_logs(request=obj) if obj.applied_at else workspace.LogTail(problem="Not started yet.")
    html = render_to_string(
        "workspaces/_tuning_logs.html", {"obj": obj, "tail": tail, "following": following}, request=request
    )
    return HttpResponse(html) if following else HttpResponseStopPolling(html)


@require_GET
def request_manifest(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    obj = _request_for(request, pk)
    response = HttpResponse(to_yaml(services.request_manifests(request=obj)), content_type="application/yaml")
    response["Content-Disposition"] = f'attachment; filename="{obj.name}.yaml"'
    return response


@require_GET
def approval_queue(request: HtmxHttpRequest) -> HttpResponse:
    pending = WorkspaceRequest.objects.approvable_by(request.user).filter(status=Status.PENDING_APPROVAL)
    page = Paginator(pending.with_related().order_by("created_at", "id"), 50).get_page(request.GET.get("page"))
    rows = services.with_budgets(list(page.object_list))
    context = {"page": page, "rows": rows, "decision_form": DecisionForm()}
    return render(request, "workspaces/approval_queue.html", context)


@require_POST
def request_decide(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    obj = _request_for(request, pk)
    form = DecisionForm(request.POST)
    form.is_valid()
    action = request.POST.get("action")
    try:
        if action == "approve":
            services.request_approve(
                request=obj,
                actor=request.user,
                note=form.cleaned_data.get("note", ""),
                budget_override=form.cleaned_data.get("budget_override", False),
            )
            messages.success(request, f"Approved {obj}.")
        elif action == "reject":
            services.request_reject(request=obj, actor=request.user, note=form.cleaned_data.get("note", ""))
            messages.success(request, f"Rejected {obj}.")
        else:
            raise ValidationError("Choose approve or reject.")
    except PermissionDenied:
        raise
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
    target = request.POST.get("next") or ""
    destination = target if target.startswith("/") and not target.startswith("//") else obj.get_absolute_url()
    return HttpResponseClientRedirect(destination) if request.htmx else redirect(destination)


@require_POST
def request_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    obj = _request_for(request, pk)
    try:
        workspace.workspace_delete(request=obj, actor=request.user, message=request.POST.get("note", ""))
        messages.success(request, f"Deleting {obj}; the GPU nodes are released once KAITO has removed it.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return _back_to(request, obj)


@require_POST
def request_withdraw(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    obj = _request_for(request, pk)
    try:
        services.request_withdraw(request=obj, actor=request.user, note=request.POST.get("note", ""))
        messages.success(request, f"Withdrew {obj}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return _back_to(request, obj)


def _back_to(request: HtmxHttpRequest, obj: WorkspaceRequest) -> HttpResponse:
    """The request page again: a redirect, or for htmx (buttons pushed over the WebSocket) a client-side one."""
    return HttpResponseClientRedirect(obj.get_absolute_url()) if request.htmx else redirect(obj.get_absolute_url())
