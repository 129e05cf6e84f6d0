"""A stand-in for the model server behind a KAITO Workspace, for tests, benchmarks and the local sandbox."""

from devcluster.model_standin.answers import DEFAULT_MODEL, TRANSFORMERS_UNSUPPORTED, Runtime, tokenize
from devcluster.model_standin.faults import (
    FAULT_MODES,
    GENERATION_PATHS,
    Fault,
    openai_error,
    rate_limit_response,
)
from devcluster.model_standin.server import ModelStandin, StandinProtocol

__all__ = [
    "DEFAULT_MODEL",
    "FAULT_MODES",
    "GENERATION_PATHS",
    "TRANSFORMERS_UNSUPPORTED",
    "Fault",
    "ModelStandin",
    "Runtime",
    "StandinProtocol",
    "openai_error",
    "rate_limit_response",
    "tokenize",
]
