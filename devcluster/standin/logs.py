"""Deterministic, plausible logs of KAITO's containers (fine_tuning.py, oras pusher, vLLM) and the benchmark result."""

# A script is a list of progress lines that appear one every `line_seconds` from the container's start, then an ending
# that depends on how the container ended (completed, failed with a traceback, or killed without a word).

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

BAR = "██████████"
BASE_TPM = {"A100": 41000.0, "A10": 9600.0, "H100": 69000.0}  # output tokens/min per GPU, made up but ordered


def _seed(*parts: str) -> int:
    return int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:8], 16)


def performance(namespace: str, name: str, product: str, gpus: int) -> dict[str, Any]:
    """status.performance as KAITO's benchmark.go records it (the value is deterministic per workspace)."""
    base = next((v for k, v in BASE_TPM.items() if f"-{k}" in f"-{product}"), BASE_TPM["A100"])
    value = round(base * gpus * (0.9 + (_seed(namespace, name) % 200) / 1000), 1)
    config = {"durationSec": "60", "inputTokens": "1024", "outputTokens": "256", "maxConcurrency": "64"}
    metric = {"description": "stress/high-concurrency", "value": f"{value:g}", "unit": "tokens/min", "config": config}
    return {"metrics": {"peakTokensPerMinute": metric}}


@dataclass
class Script:
    progress: list[str]
    on_success: list[str] = field(default_factory=list)
    on_error: list[str] = field(default_factory=list)


def fine_tuning(seed: str, epochs: int = 3, logs_per_epoch: int = 8) -> Script:
    """`accelerate launch fine_tuning.py` with the HF Trainer's progress dicts, like KAITO's tuning container."""
    rnd = _seed(seed)
    steps = epochs * logs_per_epoch
    lines = [
        "INFO:     Started server process [7]",
        "INFO:     Uvicorn running on http://0.0.0.0:5000 (Press CTRL+C to quit)",
        "The following values were not passed to `accelerate launch` and had defaults used instead:",
        "\t`--num_machines` was set to a value of `1`",
        f"Loading checkpoint shards: 100%|{BAR}| 2/2 [00:0{3 + rnd % 5}<00:00,  1.9{rnd % 10}s/it]",
        "trainable params: 6,291,456 || all params: 3,827,371,008 || trainable%: 0.1644",
        f"Map: 100%|{BAR}| 15011/15011 [00:02<00:00, {6000 + rnd % 900}.31 examples/s]",
    ]
    for i in range(1, steps + 1):
        loss = 0.85 + 1.2 * math.exp(-i / (steps / 3)) + ((rnd >> (i % 16)) % 7) / 100
        lr = 2e-4 * (1 - (i - 1) / steps)
        epoch = round(i / logs_per_epoch, 2)
        lines.append(
            f"{{'loss': {loss:.4f}, 'grad_norm': {0.3 + (rnd >> i) % 40 / 100:.4f}, "
            f"'learning_rate': {lr:.6g}, 'epoch': {epoch}}}"
        )
    done = [
        f"{{'train_runtime': {700 + rnd % 300}.{rnd % 10}, 'train_samples_per_second': 3.{rnd % 9}1, "
        f"'train_steps_per_second': 0.46, 'train_loss': {1.1 + (rnd % 30) / 100:.4f}, 'epoch': {float(epochs)}}}",
        "Fine-tuning completed",
    ]
    error = [
        "Traceback (most recent call last):",
        '  File "/workspace/tfs/fine_tuning.py", line 142, in <module>',
        "    trainer.train()",
        '  File "/usr/local/lib/python3.12/site-packages/transformers/trainer.py", line 2238, in train',
        "    return inner_training_loop(",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "79.25 GiB of which 1.12 GiB is free. Of the allocated memory 74.31 GiB is allocated by PyTorch.",
    ]
    return Script(lines, done, error)


def pusher(image: str, seed: str) -> Script:
    """KAITO's pusher.sh sidecar: waits for fine_tuning_completed.txt, then `oras push`es the adapter."""
    sha = hashlib.sha256(f"{image}/{seed}".encode()).hexdigest()
    done = [
        "Found /mnt/results/fine_tuning_completed.txt, packing the adapter",
        "data/adapter_config.json",
        "data/adapter_model.safetensors",
        "✓ Uploaded  data.tar.gz                                       24.1/24.1 MB 100.00%     1s",
        "✓ Uploaded  application/vnd.oci.image.manifest.v1+json             553/553  B 100.00%     0s",
        f"Pushed [registry] {image}",
        "ArtifactType: application/vnd.unknown.artifact.v1",
        f"Digest: sha256:{sha}",
    ]
    return Script(["Waiting for /mnt/results/fine_tuning_completed.txt ..."], done)


def oras_pull(artifact: str) -> Script:
    sha = hashlib.sha256(artifact.encode()).hexdigest()
    files = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json"]
    lines = [f"✓ Pulled      {f:<40} {'4.97/4.97 GB' if 'safetensors' in f else '1.2/1.2 MB'} 100.00%" for f in files]
    return Script([], [*lines, f"Pulled [registry] {artifact}", f"Digest: sha256:{sha}"])


def data_downloader(urls: list[str]) -> Script:
    lines = []
    for url in urls:
        target = "/mnt/data/" + url.split("?")[0].rstrip("/").split("/")[-1]
        lines += [f"Downloading {url} to {target} (attempt 1/3)", f"Downloaded {target}"]
    return Script([], lines)


def skopeo(image: str) -> Script:
    blob = hashlib.sha256(image.encode()).hexdigest()
    return Script(
        [],
        [
            "Getting image source signatures",
            f"Copying blob sha256:{blob}",
            "Copying config",
            "Writing manifest to image destination",
            f"Extracted /data of {image} to /mnt/data",
        ],
    )


def vllm(model: str, perf: dict[str, Any], when: dt.datetime) -> Script:
    """The vLLM server's start-up as KAITO runs it, with the benchmark_entrypoint.py tags benchmark.go parses."""
    metric = perf["metrics"]["peakTokensPerMinute"]
    config = {k: int(v) for k, v in metric["config"].items()}
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {"vllm_total_tpm": float(metric["value"]), "ttft_avg_ms": 182.4, "tpot_avg_ms": 21.7}
    keys = {
        "durationSec": "duration_sec",
        "inputTokens": "input_tokens",
        "outputTokens": "output_tokens",
        "maxConcurrency": "max_concurrency",
    }
    loading = [
        f"INFO [api_server.py] vLLM API server version 0.25.1, model {model}",
        "INFO [model_runner.py] Starting to load model ...",
        "Loading safetensors checkpoint shards: 100% Completed | 2/2 [00:41<00:00, 20.5s/it]",
        "INFO [gpu_model_runner.py] Model loading took 7.12 GiB and 44.3 seconds",
        "INFO [kv_cache_utils.py] GPU KV cache size: 412,880 tokens",
    ]
    ready = [
        f"KAITO_BENCHMARK_CONFIG {stamp} " + json.dumps({keys[k]: v for k, v in config.items()}),
        f"KAITO_BENCHMARK_RESULT {stamp} " + json.dumps(result),
        "INFO:     Started server process [1]",
        "INFO:     Application startup complete.",
        "INFO:     Uvicorn running on http://0.0.0.0:5000 (Press CTRL+C to quit)",
    ]
    return Script(
        loading,
        ready,
        ["ERROR [engine.py] EngineCore failed to start.", "RuntimeError: Engine core initialization failed."],
    )


def visible(
    script: Script, started: dt.datetime, ended: dt.datetime | None, outcome: str, now: dt.datetime, every: float
) -> list[tuple[dt.datetime, str]]:
    """The lines written so far with their times; outcome is running, ok, error or killed."""
    limit = ended or now
    out = []
    for i, line in enumerate(script.progress):
        when = started + dt.timedelta(seconds=i * every)
        if when <= limit:
            out.append((when, line))
        elif outcome == "ok":  # a finished process printed everything: the rest comes out at the end
            out.append((limit, line))
    if ended is not None and outcome in ("ok", "error"):
        out += [(max(ended, started), line) for line in (script.on_success if outcome == "ok" else script.on_error)]
    return out


def rfc3339nano(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
