"""KAITO v0.12's vLLM node estimator and GPU fit, as pure functions (no Django, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

GIB = 1024**3

# Constants of KAITO's estimator (pkg/workspace/estimator/nodesestimator/estimator.go, kaito-reference §2.1).
WEIGHT_EXPANSION = 1.02  # weights grow ~2 % once loaded by vLLM
GPU_MEMORY_UTILIZATION = 0.84  # vLLM --gpu-memory-utilization
BASE_OVERHEAD_GIB = 2.3  # CUDA context, NCCL buffers, activations, CUDA graphs
WEIGHT_OVERHEAD_FACTOR = 0.05  # overhead that scales with the per-GPU weight share (the 1.05 divisor)
DEFAULT_CONTEXT = 2048  # KV cache is sized for this context unless max-model-len is set
KV_DTYPE_BYTES = 2  # bf16/fp16 KV cache


@dataclass(frozen=True)
class ModelSpec:
    weight_gib: float
    num_layers: int
    num_kv_heads: int
    head_dim: float
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None


@dataclass(frozen=True)
class GpuSpec:
    gpu_count: int
    gpu_memory_gib: float

    @property
    def total_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib


@dataclass(frozen=True)
class Fit:
    """How a model lands on one instance type: KAITO's node count, or why it cannot run there."""

    nodes: int | None
    min_gpus: int | None
    reason: str = ""

    @property
    def single_node(self) -> bool:
        return self.nodes == 1


def bytes_per_token(model: ModelSpec) -> int:
    """KV-cache bytes per token: K and V per layer, or the compressed latent for MLA models (DeepSeek)."""
    if model.kv_lora_rank:
        return int(model.num_layers * (model.kv_lora_rank + (model.qk_rope_head_dim or 0)) * KV_DTYPE_BYTES)
    return int(2 * model.num_layers * model.num_kv_heads * model.head_dim * KV_DTYPE_BYTES)


def estimate_vllm(model: ModelSpec, gpu: GpuSpec, *, max_model_len: int = DEFAULT_CONTEXT) -> Fit:
    """Node count KAITO's estimator picks for the vLLM runtime (it ignores resource.count)."""
    model_bytes = model.weight_gib * GIB * WEIGHT_EXPANSION
    available = gpu.gpu_memory_gib * GIB * GPU_MEMORY_UTILIZATION
    kv_cache = max_model_len * bytes_per_token(model) / gpu.gpu_count
    fixed_reserve = BASE_OVERHEAD_GIB * GIB + kv_cache
    if available <= fixed_reserve:
        return Fit(
            nodes=None,
            min_gpus=None,
            reason=f"one {gpu.gpu_memory_gib:g} GiB GPU cannot hold vLLM's overhead and KV cache "
            f"({fixed_reserve / GIB:.1f} GiB)",
        )
    per_gpu = (available - fixed_reserve) / (1 + WEIGHT_OVERHEAD_FACTOR)
    min_gpus = int(model_bytes / per_gpu) + 1
    return Fit(nodes=math.ceil(min_gpus / gpu.gpu_count), min_gpus=min_gpus)


def estimate_transformers(model: ModelSpec, gpu: GpuSpec, *, count: int = 1) -> Fit:
    """KAITO's webhook check for the Transformers runtime: one node, count × GPU memory ≥ weights."""
    total = count * gpu.total_gib
    if total < model.weight_gib:
        return Fit(
            nodes=None,
            min_gpus=None,
            reason=f"Insufficient total GPU memory: {total:g} GiB, but the weights need "
            f"{model.weight_gib:g} GiB (the Transformers runtime cannot spread a model across nodes)",
        )
    return Fit(nodes=count, min_gpus=gpu.gpu_count * count)


def estimate(model: ModelSpec, gpu: GpuSpec, *, runtime: str = "vllm") -> Fit:
    if runtime == "transformers":
        return estimate_transformers(model, gpu)
    return estimate_vllm(model, gpu)


def smallest_fit(model: ModelSpec, gpus: Iterable[tuple[str, GpuSpec]], *, runtime: str = "vllm") -> str | None:
    """Name of the instance type with the least total GPU memory on which the model runs on one node."""
    candidates = sorted(gpus, key=lambda item: (item[1].total_gib, item[1].gpu_count, item[0]))
    for name, gpu in candidates:
        if estimate(model, gpu, runtime=runtime).single_node:
            return name
    return None
