"""What the portal asks KAITO for, as plain data: built from a request, turned into manifests."""

from __future__ import annotations

from dataclasses import dataclass, field

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kaito-portal"
REQUEST_LABEL = "kaito-portal/request-id"
TEAM_LABEL = "kaito-portal/team"
NODE_LABEL = "kaito-portal/workspace"  # the labelSelector KAITO puts on the nodes it provisions
RUNTIME_ANNOTATION = "kaito.sh/runtime"
REQUESTER_ANNOTATION = "kaito-portal/requested-by"


@dataclass(frozen=True)
class Adapter:
    name: str
    image: str
    pull_secrets: tuple[str, ...] = ()
    strength: str = ""  # Transformers runtime only; vLLM rejects it


@dataclass(frozen=True)
class RegistryCredentials:
    server: str
    username: str
    password: str


@dataclass(frozen=True)
class WorkspaceSpec:
    name: str
    namespace: str
    kind: str  # "inference" | "tuning"
    preset: str  # the name written into preset.name
    instance_type: str = ""  # empty: bring your own nodes
    node_selector: dict[str, str] = field(default_factory=dict)
    runtime: str = "vllm"
    node_count: int = 1
    request_id: int | None = None
    team: str = ""
    requester: str = ""
    # inference
    adapters: tuple[Adapter, ...] = ()
    inference_config: str = ""
    hf_token_secret: str = ""
    # tuning
    method: str = ""
    input_urls: tuple[str, ...] = ()
    input_image: str = ""
    input_image_pull_secrets: tuple[str, ...] = ()
    input_pvc: str = ""
    output_image: str = ""
    output_push_secret: str = ""
    output_pvc: str = ""
    training_config: str = ""

    @property
    def inference_config_name(self) -> str:
        return f"{self.name}-inference-config" if self.inference_config else ""

    @property
    def training_config_name(self) -> str:
        return f"{self.name}-training-config" if self.training_config else ""


def hf_token_secret_name(workspace: str) -> str:
    return f"{workspace}-hf-token"


def push_secret_name(workspace: str) -> str:
    return f"{workspace}-push"
