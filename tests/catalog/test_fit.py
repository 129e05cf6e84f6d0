"""KAITO's node estimator, checked against values worked out by hand from the formula (kaito-reference §2.1)."""

import pytest

from catalog import fit

# minGPUs = int(1.02·W / ((0.84·M − 2.3 GiB − 2048·B/G) / 1.05)) + 1,  nodes = ceil(minGPUs / G)
# W weights, M memory per GPU, G GPUs per node, B KV bytes per token = 2·layers·kv_heads·head_dim·2
# (MLA models: layers·(kv_lora_rank + qk_rope_head_dim)·2).

QWEN_32B = fit.ModelSpec(weight_gib=61.03, num_layers=64, num_kv_heads=8, head_dim=128)
PHI3_MEDIUM = fit.ModelSpec(weight_gib=26.0, num_layers=40, num_kv_heads=10, head_dim=128)
PHI3_MINI = fit.ModelSpec(weight_gib=7.12, num_layers=32, num_kv_heads=32, head_dim=96)
GPT_OSS_20B = fit.ModelSpec(weight_gib=25.63, num_layers=24, num_kv_heads=8, head_dim=64)
LLAMA_70B = fit.ModelSpec(weight_gib=131.42, num_layers=80, num_kv_heads=8, head_dim=128)
DEEPSEEK_R1 = fit.ModelSpec(
    weight_gib=641.3, num_layers=61, num_kv_heads=128, head_dim=56, kv_lora_rank=512, qk_rope_head_dim=64
)

A10 = fit.GpuSpec(gpu_count=1, gpu_memory_gib=24)  # Standard_NV36ads_A10_v5
A10_X2 = fit.GpuSpec(gpu_count=2, gpu_memory_gib=24)  # Standard_NV72ads_A10_v5
A100 = fit.GpuSpec(gpu_count=1, gpu_memory_gib=80)  # Standard_NC24ads_A100_v4
A100_X2 = fit.GpuSpec(gpu_count=2, gpu_memory_gib=80)  # Standard_NC48ads_A100_v4
H100 = fit.GpuSpec(gpu_count=1, gpu_memory_gib=94)  # Standard_NC40ads_H100_v5
H100_X2 = fit.GpuSpec(gpu_count=2, gpu_memory_gib=94)  # Standard_NC80adis_H100_v5


@pytest.mark.parametrize(
    ("model", "gpu", "min_gpus", "nodes"),
    [
        # B = 2·64·8·128·2 = 262,144 → KV 0.5 GiB; (67.2 − 2.3 − 0.5)/1.05 = 61.33; 62.25/61.33 = 1.015 → 2 GPUs
        (QWEN_32B, A100, 2, 2),
        # (78.96 − 2.8)/1.05 = 72.53; 62.25/72.53 = 0.86 → 1 GPU
        (QWEN_32B, H100, 1, 1),
        # B = 204,800 → KV 0.39 GiB; (20.16 − 2.3 − 0.39)/1.05 = 16.64; 26.52/16.64 = 1.59 → 2 GPUs, 2 nodes
        (PHI3_MEDIUM, A10, 2, 2),
        # KV halves per GPU: (20.16 − 2.3 − 0.195)/1.05 = 16.82; 26.52/16.82 = 1.58 → 2 GPUs on one 2-GPU node
        (PHI3_MEDIUM, A10_X2, 2, 1),
        # B = 393,216 → KV 0.75 GiB; (20.16 − 3.05)/1.05 = 16.30; 7.26/16.30 = 0.45 → 1 GPU
        (PHI3_MINI, A10, 1, 1),
        # head_dim 64: KV 0.094 GiB; (20.16 − 2.394)/1.05 = 16.92; 26.14/16.92 = 1.55 → 2 GPUs → 2 nodes
        (GPT_OSS_20B, A10, 2, 2),
        # KV 0.625 GiB / 2 GPUs; (67.2 − 2.3 − 0.3125)/1.05 = 61.51; 134.05/61.51 = 2.18 → 3 GPUs → 2 nodes
        (LLAMA_70B, A100_X2, 3, 2),
        # MLA: B = 61·576·2 = 70,272 → KV 0.134 GiB / 2; (78.96 − 2.367)/1.05 = 72.95; 654.13/72.95 = 8.97 → 9 GPUs → 5 nodes
        (DEEPSEEK_R1, H100_X2, 9, 5),
    ],
)
def test_vllm_estimator_matches_hand_computation(model, gpu, min_gpus, nodes):
    result = fit.estimate_vllm(model, gpu)
    assert (result.min_gpus, result.nodes) == (min_gpus, nodes)
    assert result.single_node is (nodes == 1)


def test_bytes_per_token_standard_and_mla():
    assert fit.bytes_per_token(QWEN_32B) == 262_144
    assert fit.bytes_per_token(DEEPSEEK_R1) == 70_272


def test_gpu_too_small_for_the_overhead_does_not_fit():
    result = fit.estimate_vllm(PHI3_MINI, fit.GpuSpec(gpu_count=1, gpu_memory_gib=2))
    assert result.nodes is None
    assert "cannot hold vLLM's overhead" in result.reason


def test_transformers_runtime_needs_the_weights_on_one_node():
    assert fit.estimate_transformers(PHI3_MEDIUM, A10).nodes is None
    assert "Insufficient total GPU memory" in fit.estimate_transformers(PHI3_MEDIUM, A10).reason
    assert fit.estimate_transformers(PHI3_MEDIUM, A10_X2).nodes == 1


def test_smallest_fit_prefers_least_total_memory():
    skus = [("a100", A100), ("a10x2", A10_X2), ("a10", A10), ("h100", H100)]
    assert fit.smallest_fit(PHI3_MINI, skus) == "a10"
    assert fit.smallest_fit(PHI3_MEDIUM, skus) == "a10x2"
    assert fit.smallest_fit(QWEN_32B, skus) == "h100"
    assert fit.smallest_fit(DEEPSEEK_R1, skus) is None
