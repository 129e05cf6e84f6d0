"""KAITO v0.12's admission rules (webhook and CRD) as pure checks, plus the portal's stricter ones."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from catalog import fit
from workspaces.kaito import imageref
from workspaces.kaito.spec import Adapter

# Each check returns messages; the caller attaches them to the form or API field they concern.

MAX_ADAPTERS = 10  # MaxAdaptersNumber
TRAINING_SECTIONS = {
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DatasetConfig",
    "DataCollator",
}
# Keys KAITO strips from a labelSelector (api/v1beta1/labels.go SanitizedMatchLabels).
RESERVED_LABEL_KEYS = {
    "kaito.sh/workspace",
    "kaito.sh/workspacenamespace",
    "kaito.sh/ragengine",
    "kaito.sh/ragenginenamespace",
}
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def dns1123_label(value: str, *, what: str = "The name") -> list[str]:
    if not value:
        return [f"{what} is required."]
    problems = []
    if len(value) > 63:
        problems.append(f"{what} must be at most 63 characters (it has {len(value)}).")
    if not _DNS1123_LABEL.match(value):
        problems.append(
            f"{what} must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending "
            "with a letter or digit (for example 'phi-3-tuning')."
        )
    return problems


def dns1123_subdomain(value: str, *, what: str) -> list[str]:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        return [f"{what} {value!r} must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')."]
    return []


def image_reference(value: str, *, what: str) -> list[str]:
    try:
        imageref.parse_reference(value)
    except imageref.InvalidReference as exc:
        return [f"Unable to parse the {what} image reference: {exc}"]
    return []


def parse_node_selector(text: str) -> tuple[dict[str, str], list[str]]:
    """`key=value, key2=value2` → matchLabels, with KAITO's reserved keys refused."""
    labels: dict[str, str] = {}
    problems: list[str] = []
    for part in filter(None, (p.strip() for p in re.split(r"[,\n]", text))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        prefix, _, name = key.rpartition("/")
        if not sep or not _LABEL_NAME.match(name) or len(name) > 63 or (prefix and dns1123_subdomain(prefix, what="")):
            problems.append(f"{part!r} is not a label 'key=value'.")
        elif not _LABEL_VALUE.match(value) or len(value) > 63:
            problems.append(f"The label value {value!r} is not valid (at most 63 letters, digits, '-', '_', '.').")
        elif key in RESERVED_LABEL_KEYS or key.startswith("karpenter.kaito.sh/"):
            problems.append(f"The label {key!r} is reserved by KAITO.")
        else:
            labels[key] = value
    if not labels and not problems:
        problems.append("Give at least one node label, for example 'apps=gpu'.")
    return labels, problems


def instance_type(
    name: str, *, offered: Mapping[str, fit.GpuSpec], retired: Mapping[str, str], suggestion: str | None
) -> list[str]:
    """The instance type must be in KAITO's SKU table; a retired one is explained with a replacement."""
    hint = f" Pick {suggestion} instead: the smallest instance type this model fits on." if suggestion else ""
    if name in offered:
        return []
    if name in retired:
        return [f"{name} is no longer accepted by KAITO: {retired[name]}.{hint}"]
    return [f"{name} is not in KAITO's Azure SKU table, so KAITO cannot provision it.{hint}"]


def preset_for_request(preset: Any, *, kind: str, runtime: str) -> list[str]:
    """Acceptance, tuning support and runtime support of a catalog preset (catalog.Preset-like)."""
    if preset.acceptance == "rejected":
        return [f"KAITO no longer accepts {preset.name}. {preset.acceptance_note}"]
    if preset.acceptance == "deprecated":
        return [f"Model {preset.name} is deprecated. {preset.acceptance_note}"]
    if kind == "tuning" and not preset.tunable:
        return [
            f"KAITO cannot fine-tune {preset.name}: tuning exists only for the Phi-3, Phi-3.5, Phi-4 and "
            "Qwen2.5-Coder presets marked 'Fine-tunable' in the catalog."
        ]
    if kind == "inference" and runtime == "transformers" and not preset.supports_transformers:
        return [f"Model {preset.name} does not support inference with the Hugging Face Transformers runtime."]
    return []


def transformers_memory(model: fit.ModelSpec | None, gpu: fit.GpuSpec, *, instance: str, preset: str) -> list[str]:
    if model is None:
        return []
    if fit.estimate_transformers(model, gpu).nodes is None:
        return [
            f"Insufficient total GPU memory: instance type {instance} has a total of {gpu.total_gib:g} GiB, "
            f"but preset {preset} requires at least {model.weight_gib:g} GiB. The Transformers runtime cannot "
            "spread a model over several nodes; pick a larger instance type or the vLLM runtime."
        ]
    return []


def adapters(items: Sequence[Adapter], *, runtime: str) -> list[str]:
    problems = []
    if len(items) > MAX_ADAPTERS:
        problems.append(f"At most {MAX_ADAPTERS} adapters are allowed (there are {len(items)}).")
    seen: set[str] = set()
    for adapter in items:
        label = f"Adapter {adapter.name!r}"
        if not adapter.name:
            problems.append("Every adapter needs a name.")
        else:
            problems += dns1123_subdomain(adapter.name, what="The adapter name")
        if adapter.name in seen:
            problems.append(f"{label} is listed twice; adapter names must be unique.")
        seen.add(adapter.name)
        if not adapter.image:
            problems.append(f"{label} needs an image (URLs are not supported as adapter source).")
        else:
            problems += image_reference(adapter.image, what=f"{adapter.name} adapter")
        for secret in adapter.pull_secrets:
            problems += dns1123_subdomain(secret, what="The pull secret")
        if adapter.strength:
            if runtime == "vllm":
                problems.append(f"{label}: vLLM does not support adapter strength; leave it empty.")
            else:
                try:
                    if not 0 <= float(adapter.strength) <= 1:
                        raise ValueError
                except ValueError:
                    problems.append(f"Strength value for adapter {adapter.name!r} must be between 0 and 1.")
    return problems


def _yaml_mapping(text: str, what: str) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        return None, [f"The {what} is not valid YAML{where}: {getattr(exc, 'problem', exc)}."]
    if not isinstance(data, dict):
        return None, [f"The {what} must be a YAML mapping."]
    return data, []


def inference_config(text: str, *, context_length: int | None) -> list[str]:
    """What KAITO's webhook checks in inference_config.yaml (vLLM runtime)."""
    data, problems = _yaml_mapping(text, "inference configuration")
    if data is None:
        return problems
    vllm = data.get("vllm", {}) or {}
    if not isinstance(vllm, dict) or any(isinstance(v, dict | list) for v in vllm.values()):
        return ["'vllm' must map vLLM flag names (without leading --) to single values."]
    raw = vllm.get("max-model-len")
    if raw is not None and str(raw).strip():
        try:
            value = int(str(raw).strip())
        except ValueError:
            return [f"max-model-len must be an integer (it is {raw!r})."]
        if context_length and value > context_length:
            return [
                f"max-model-len {value} exceeds the model's maximum supported context window "
                f"{context_length} (ModelTokenLimit)."
            ]
    return []


def max_model_len(text: str) -> int | None:
    """The context the node estimator sizes the KV cache for, when the configuration sets one."""
    try:
        data = yaml.safe_load(text) if text else None
        return int(str(data["vllm"]["max-model-len"]).strip())
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def training_config(text: str, *, method: str) -> list[str]:
    """KAITO's checks of training_config.yaml (api/v1beta1/tuning_config_validation.go)."""
    data, problems = _yaml_mapping(text, "tuning configuration")
    if data is None:
        return problems
    sections = data.get("training_config")
    if not isinstance(sections, dict):
        return ["Expected a top-level 'training_config' key containing a map."]
    unknown = sorted(str(s) for s in sections if s not in TRAINING_SECTIONS)
    if unknown:
        return [f"Unrecognized section: {', '.join(unknown)} (allowed: {', '.join(sorted(TRAINING_SECTIONS))})."]
    quantization = sections.get("QuantizationConfig") or {}
    flags = {k: quantization.get(k) for k in ("load_in_4bit", "load_in_8bit")} if isinstance(quantization, dict) else {}
    for key, value in flags.items():
        if value is not None and not isinstance(value, bool):
            problems.append(f"'{key}' must be true or false (it is {value!r}).")
    four, eight = flags.get("load_in_4bit") is True, flags.get("load_in_8bit") is True
    if four and eight:
        problems.append("Cannot set both 'load_in_4bit' and 'load_in_8bit' to true.")
    elif method == "lora" and (four or eight):
        problems.append("For method 'lora', 'load_in_4bit' or 'load_in_8bit' must not be true; use QLoRA instead.")
    elif method == "qlora" and not (four or eight):
        problems.append("For method 'qlora', either 'load_in_4bit' or 'load_in_8bit' must be true.")
    arguments = sections.get("TrainingArguments") or {}
    output_dir = arguments.get("output_dir") if isinstance(arguments, dict) else None
    if output_dir is not None:
        if not isinstance(output_dir, str):
            problems.append("TrainingArguments.output_dir must be a string.")
        else:
            clean = posixpath.normpath(posixpath.join("/mnt", output_dir))
            if clean == "/mnt" or not clean.startswith("/mnt"):
                problems.append(f"Invalid output_dir {output_dir!r}: it must be a directory under /mnt.")
    dataset = sections.get("DatasetConfig") or {}
    split = dataset.get("train_test_split") if isinstance(dataset, dict) else None
    if split is not None and (not isinstance(split, int | float) or isinstance(split, bool) or not 0 < split <= 1):
        problems.append("DatasetConfig.train_test_split must be a number in (0, 1].")
    return problems
