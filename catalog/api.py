"""Catalog REST API: presets (by Hugging Face id or legacy alias) and instance types."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.forms import PresetFilterForm
from catalog.listing import fit_table, preset_rows, smallest_instance_type
from catalog.models import InstanceType, Preset


class InstanceTypeSerializer(serializers.ModelSerializer):
    hourly_usd = serializers.SerializerMethodField()

    class Meta:
        model = InstanceType
        fields = [
            "name",
            "gpu_count",
            "gpu_model",
            "gpu_memory_gib",
            "total_gpu_memory_gib",
            "cuda_compute",
            "local_nvme",
            "hourly_usd",
        ]

    def get_hourly_usd(self, obj: InstanceType) -> str | None:
        price = obj.hourly_price(settings.PRICE_REGION)
        return str(price) if price is not None else None


class PresetSerializer(serializers.ModelSerializer):
    aliases = serializers.ListField(source="alias_names", child=serializers.CharField())
    runtimes = serializers.ListField(child=serializers.CharField())
    smallest_instance_type = serializers.CharField(allow_null=True)

    class Meta:
        model = Preset
        fields = [
            "name",
            "aliases",
            "served_name",
            "publisher",
            "family",
            "parameters",
            "weight_gib",
            "context_length",
            "license",
            "gated",
            "gated_note",
            "runtimes",
            "tunable",
            "tuning_image",
            "acceptance",
            "acceptance_note",
            "description_url",
            "smallest_instance_type",
        ]


class FitSerializer(serializers.Serializer):
    instance_type = serializers.CharField(source="instance_type.name")
    vllm_nodes = serializers.IntegerField(source="vllm.nodes", allow_null=True)
    vllm_min_gpus = serializers.IntegerField(source="vllm.min_gpus", allow_null=True)
    fits_single_node = serializers.BooleanField(source="vllm.single_node")
    transformers_fits = serializers.SerializerMethodField()
    hourly_cost_usd = serializers.DecimalField(source="hourly_cost", max_digits=12, decimal_places=4, allow_null=True)

    def get_transformers_fits(self, row: object) -> bool | None:
        transformers = row.transformers
        return None if transformers is None else transformers.single_node


class PresetDetailSerializer(PresetSerializer):
    fit = FitSerializer(many=True)

    class Meta(PresetSerializer.Meta):
        fields = [*PresetSerializer.Meta.fields, "fit"]


class PresetListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Search name, alias, publisher or family"),
            OpenApiParameter("tunable", bool),
            OpenApiParameter("runtime", str, enum=["vllm", "transformers"]),
            OpenApiParameter("gated", str, enum=["yes", "no"]),
            OpenApiParameter("fits", str, description="Instance type the model must fit on one node of"),
            OpenApiParameter("sort", str, enum=["name", "weight", "-weight", "-context", "publisher"]),
        ],
        responses=PresetSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        form = PresetFilterForm(request.query_params)
        if not form.is_valid():
            return Response(form.errors, status=400)
        rows = preset_rows(**form.filters())
        data = []
        for row in rows:
            row.preset.smallest_instance_type = row.smallest_instance_type
            data.append(PresetSerializer(row.preset).data)
        return Response(data)


class PresetDetailApi(APIView):
    @extend_schema(responses=PresetDetailSerializer)
    def get(self, request: Request, name: str) -> Response:
        preset = Preset.objects.by_name(name)
        if preset is None:
            raise NotFound(
                f"No preset named {name!r}. Use a Hugging Face id such as 'microsoft/Phi-4-mini-instruct' "
                "or a legacy name such as 'phi-3-mini-128k-instruct'; GET /api/presets/ lists them."
            )
        offered = list(InstanceType.objects.offered().prefetch_related("prices"))
        preset.smallest_instance_type = smallest_instance_type(preset, offered)
        preset.fit = fit_table(preset, offered, region=settings.PRICE_REGION)
        return Response(PresetDetailSerializer(preset).data)


class InstanceTypeListApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("min_gpu_memory_gib", float, description="Per-GPU memory at least this")],
        responses=InstanceTypeSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        queryset = InstanceType.objects.offered().prefetch_related("prices")
        minimum = request.query_params.get("min_gpu_memory_gib")
        if minimum:
            try:
                queryset = queryset.filter(gpu_memory_gib__gte=float(minimum))
            except ValueError:
                return Response({"min_gpu_memory_gib": ["Enter a number."]}, status=400)
        return Response(InstanceTypeSerializer(queryset, many=True).data)
