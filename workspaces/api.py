"""Workspace REST API: the same service functions as the pages, for scripts (token auth) and the UI."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import Preset
from workspaces import services
from workspaces.kaito.manifests import to_yaml
from workspaces.kaito.spec import Adapter
from workspaces.models import Status, Team, WorkspaceEvent, WorkspaceRequest
from workspaces.services import preflight, workspace


class AdapterSerializer(serializers.Serializer):
    name = serializers.CharField()
    image = serializers.CharField()
    pull_secrets = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    strength = serializers.CharField(required=False, allow_blank=True, default="")


class RequestInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=WorkspaceRequest.Kind.choices)
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    name = serializers.CharField()
    preset = serializers.CharField(help_text="Hugging Face id or legacy name.")
    instance_type = serializers.CharField(required=False, allow_blank=True, default="")
    node_selector = serializers.DictField(
        child=serializers.CharField(), required=False, default=dict, help_text="Labels of your own GPU nodes."
    )
    runtime = serializers.ChoiceField(choices=WorkspaceRequest.Runtime.choices, default="vllm")
    hours = serializers.IntegerField()
    node_count = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="resource.count; only 1 is accepted (see the docs)."
    )
    purpose = serializers.CharField(required=False, allow_blank=True, default="")
    adapters = AdapterSerializer(many=True, required=False, default=list)
    hf_token = serializers.CharField(required=False, allow_blank=True, default="", write_only=True)
    hf_token_secret = serializers.CharField(required=False, allow_blank=True, default="")
    inference_config = serializers.CharField(required=False, allow_blank=True, default="")
    method = serializers.CharField(required=False, allow_blank=True, default="")
    input_urls = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    input_image = serializers.CharField(required=False, allow_blank=True, default="")
    input_image_pull_secrets = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    input_pvc = serializers.CharField(required=False, allow_blank=True, default="")
    output_image = serializers.CharField(required=False, allow_blank=True, default="")
    output_push_secret = serializers.CharField(required=False, allow_blank=True, default="")
    registry_server = serializers.CharField(required=False, allow_blank=True, default="")
    registry_username = serializers.CharField(required=False, allow_blank=True, default="")
    registry_password = serializers.CharField(
        required=False, allow_blank=True, default="", write_only=True, trim_whitespace=False
    )
    output_pvc = serializers.CharField(required=False, allow_blank=True, default="")
    training_config = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Empty: KAITO's default for the method."
    )

    def to_draft(self) -> services.RequestDraft:
        data = dict(self.validated_data)
        data["adapters"] = [
            Adapter(a["name"], a["image"], tuple(a["pull_secrets"]), a["strength"]) for a in data["adapters"]
        ]
        data["node_selector"] = ",".join(f"{k}={v}" for k, v in data["node_selector"].items())
        data["method"] = data["method"].lower()
        return services.RequestDraft(**data)


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.get_username", default=None)

    class Meta:
        model = WorkspaceEvent
        fields = ["created_at", "actor", "from_status", "to_status", "message"]


class RequestOutputSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    requester = serializers.CharField(source="requester.get_username")
    preset = serializers.CharField(source="preset.name")
    instance_type = serializers.CharField(source="instance_type.name", default=None)
    decided_by = serializers.CharField(source="decided_by.get_username", default=None)

    class Meta:
        model = WorkspaceRequest
        fields = [
            "id",
            "kind",
            "name",
            "namespace",
            "team",
            "requester",
            "preset",
            "instance_type",
            "node_selector",
            "runtime",
            "node_count",
            "hours",
            "purpose",
            "adapters",
            "inference_config",
            "hf_token_secret",
            "method",
            "input_urls",
            "input_image",
            "input_image_pull_secrets",
            "input_pvc",
            "output_image",
            "output_push_secret",
            "output_pvc",
            "training_config",
            "status",
            "status_message",
            "kaito_state",
            "conditions",
            "target_node_count",
            "worker_nodes",
            "performance",
            "hourly_price_usd",
            "estimated_cost_usd",
            "price_source",
            "decided_by",
            "decided_at",
            "decision_note",
            "budget_override",
            "applied_at",
            "expires_at",
            "preflight",
            "created_at",
            "updated_at",
        ]


class RequestDetailSerializer(RequestOutputSerializer):
    events = EventSerializer(many=True)

    class Meta(RequestOutputSerializer.Meta):
        fields = [*RequestOutputSerializer.Meta.fields, "events"]


class DecisionSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="")
    budget_override = serializers.BooleanField(required=False, default=False)


def _visible(request: Request, pk: int) -> WorkspaceRequest:
    obj = get_object_or_404(WorkspaceRequest.objects.with_related(), pk=pk)
    if not services.can_view(request.user, obj):
        raise NotFound("No such workspace request.")
    return obj


class RequestListCreateApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Status.values),
            OpenApiParameter("kind", str, enum=WorkspaceRequest.Kind.values),
            OpenApiParameter("team", str, description="Team slug"),
            OpenApiParameter("mine", bool),
        ],
        responses=RequestOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        queryset = WorkspaceRequest.objects.visible_to(request.user).with_related()
        params = request.query_params
        if params.get("status"):
            queryset = queryset.filter(status=params["status"])
        if params.get("kind"):
            queryset = queryset.filter(kind=params["kind"])
        if params.get("team"):
            queryset = queryset.filter(team__slug=params["team"])
        if params.get("mine") in ("1", "true", "True"):
            queryset = queryset.filter(requester=request.user)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(RequestOutputSerializer(page, many=True).data)

    @extend_schema(request=RequestInputSerializer, responses={201: RequestDetailSerializer})
    def post(self, request: Request) -> Response:
        serializer = RequestInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = services.request_create(requester=request.user, draft=serializer.to_draft())
        obj = WorkspaceRequest.objects.with_related().get(pk=created.pk)
        return Response(RequestDetailSerializer(obj).data, status=status.HTTP_201_CREATED)


class RequestDetailApi(APIView):
    @extend_schema(responses=RequestDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(RequestDetailSerializer(_visible(request, pk)).data)


class RequestManifestApi(APIView):
    @extend_schema(responses={200: {"type": "object", "properties": {"yaml": {"type": "string"}}}})
    def get(self, request: Request, pk: int) -> Response:
        objects = services.request_manifests(request=_visible(request, pk))
        return Response({"objects": objects, "yaml": to_yaml(objects)})


class _DecisionApi(APIView):
    """POST one action on one request: validate the note, call the service, answer with the request."""

    def act(self, request: Request, obj: WorkspaceRequest, data: dict) -> WorkspaceRequest:
        raise NotImplementedError

    @extend_schema(request=DecisionSerializer, responses=RequestDetailSerializer)
    def post(self, request: Request, pk: int) -> Response:
        serializer = DecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        obj = self.act(request, _visible(request, pk), serializer.validated_data)
        return Response(RequestDetailSerializer(WorkspaceRequest.objects.with_related().get(pk=obj.pk)).data)


class RequestApproveApi(_DecisionApi):
    def act(self, request: Request, obj: WorkspaceRequest, data: dict) -> WorkspaceRequest:
        return services.request_approve(request=obj, actor=request.user, **data)


class RequestRejectApi(_DecisionApi):
    def act(self, request: Request, obj: WorkspaceRequest, data: dict) -> WorkspaceRequest:
        return services.request_reject(request=obj, actor=request.user, note=data["note"])


class RequestDeleteApi(_DecisionApi):
    def act(self, request: Request, obj: WorkspaceRequest, data: dict) -> WorkspaceRequest:
        return workspace.workspace_delete(request=obj, actor=request.user, message=data["note"])


class RequestWithdrawApi(_DecisionApi):
    def act(self, request: Request, obj: WorkspaceRequest, data: dict) -> WorkspaceRequest:
        return services.request_withdraw(request=obj, actor=request.user, note=data["note"])


class PreflightInputSerializer(serializers.Serializer):
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all(), required=False)
    preset = serializers.CharField(required=False, allow_blank=True, default="")
    input_urls = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    output_image = serializers.CharField(required=False, allow_blank=True, default="")
    output_push_secret = serializers.CharField(required=False, allow_blank=True, default="")
    registry_username = serializers.CharField(required=False, allow_blank=True, default="")
    registry_password = serializers.CharField(
        required=False, allow_blank=True, default="", write_only=True, trim_whitespace=False
    )
    training_config = serializers.CharField(required=False, allow_blank=True, default="")


class PreflightDraftApi(APIView):
    """Check dataset URLs and an output registry before making a request (nothing is stored)."""

    @extend_schema(request=PreflightInputSerializer, responses={200: {"type": "object"}})
    def post(self, request: Request) -> Response:
        serializer = PreflightInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = data.get("team")
        if (
            team is not None
            and not request.user.is_superuser
            and not team.memberships.filter(user=request.user).exists()
        ):
            raise NotFound("No such team.")
        preset = Preset.objects.by_name(data["preset"]) if data["preset"] else None
        context = preset.context_length if preset else None
        result = {"datasets": [], "registry": None}
        if data["input_urls"]:
            datasets = preflight.preflight_draft(
                part="datasets",
                input_urls=data["input_urls"],
                context_length=context,
                training_config=data["training_config"],
            )
            result["datasets"] = datasets["datasets"]
        if data["output_image"]:
            registry = preflight.preflight_draft(
                part="registry",
                namespace=team.namespace if team else "",
                output_image=data["output_image"],
                registry_username=data["registry_username"],
                registry_password=data["registry_password"],
                output_push_secret=data["output_push_secret"],
            )
            result["registry"] = registry["registry"]
        result["summary"] = preflight.summary(result["datasets"], result["registry"])
        return Response(result)


class RequestPreflightApi(APIView):
    @extend_schema(request=None, responses=RequestDetailSerializer)
    def post(self, request: Request, pk: int) -> Response:
        obj = _visible(request, pk)
        if obj.kind != "tuning" or not workspace.can_delete(request.user, obj):
            raise PermissionDenied("Only the requester or an approver of the team can re-run the checks.")
        preflight.preflight_request(request_id=obj.pk)
        return Response(RequestDetailSerializer(WorkspaceRequest.objects.with_related().get(pk=pk)).data)
