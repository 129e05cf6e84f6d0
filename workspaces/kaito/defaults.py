"""KAITO's default tuning and inference parameters, read from the project's copy of its Helm templates."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "kaito"


def _embedded(filename: str, key: str) -> str:
    # The files are Helm templates, not YAML; the block scalar under `key: |` is the payload.
    lines = (DATA_DIR / filename).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}: |") + 1
    return textwrap.dedent("\n".join(lines[start:])).strip() + "\n"


@functools.cache
def training_config(method: str) -> str:
    """KAITO's default training_config.yaml for "qlora" or "lora"."""
    return _embedded(f"{method}-params.yaml", "training_config.yaml")


@functools.cache
def inference_config() -> str:
    return _embedded("inference-params.yaml", "inference_config.yaml")
