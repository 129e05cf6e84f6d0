"""Preflight before any GPU is spent: the dataset URLs and the output registry, checked on CPU."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from workspaces import notify
from workspaces.cluster import ClusterError
from workspaces.kaito import imageref
from workspaces.models import PendingSecret, WorkspaceRequest
from workspaces.preflight.dataset import check_dataset
from workspaces.preflight.records import Columns
from workspaces.preflight.registry import Credentials, check_registry
from workspaces.services.clusters import get_cluster
from workspaces.services.secrets import SecretUnavailable, secret_load

logger = logging.getLogger(__name__)


def _dataset_settings(training_config: str) -> tuple[Columns, str | None]:
    """Column names and file extension as the request's DatasetConfig sets them."""
    try:
        sections = (yaml.safe_load(training_config) or {}).get("training_config") or {}
        dataset = sections.get("DatasetConfig") or {}
    except (yaml.YAMLError, AttributeError):
        dataset = {}
    return Columns.from_dataset_config(dataset), dataset.get("dataset_extension")


def _plain_http(image: str) -> bool:
    # Only the tests' own local registries (allowed hosts) are spoken to without TLS.
    try:
        host = imageref.parse_reference(image).domain.rsplit(":", 1)[0]
    except imageref.InvalidReference:
        return False
    return host in settings.PREFLIGHT_ALLOW_HOSTS


def summary(datasets: list[dict[str, Any]], registry: dict[str, Any] | None) -> dict[str, int]:
    findings = [f for report in [*datasets, registry] if report for f in report.get("findings", [])]
    return {
        "errors": sum(f["severity"] == "error" for f in findings),
        "warnings": sum(f["severity"] == "warning" for f in findings),
    }


def preflight_run(
    *,
    input_urls: Sequence[str] = (),
    output_image: str = "",
    credentials: Credentials | None = None,
    dockerconfigjson: str | None = None,
    context_length: int | None = None,
    training_config: str = "",
) -> dict[str, Any]:
    """Check datasets (in parallel) and the registry; a JSON-ready result, secrets never included."""
    columns, extension = _dataset_settings(training_config)
    allow = settings.PREFLIGHT_ALLOW_HOSTS
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(
                check_dataset,
                url,
                context_length=context_length,
                columns=columns,
                dataset_extension=extension,
                allow_hosts=allow,
            )
            for url in input_urls
        ]
        registry = None
        if output_image:
            registry = check_registry(
                output_image,
                credentials=credentials,
                dockerconfigjson=dockerconfigjson,
                allow_hosts=allow,
                plain_http=_plain_http(output_image),
            ).to_dict()
        datasets = [future.result().to_dict() for future in futures]
    return {
        "checked_at": timezone.now().isoformat(),
        "datasets": datasets,
        "registry": registry,
        "summary": summary(datasets, registry),
    }


def existing_secret_config(*, namespace: str, name: str) -> tuple[str | None, str]:
    """The .dockerconfigjson of an existing push Secret, read from the cluster, or why it could not be read."""
    try:
        data = get_cluster().read_secret(namespace, name)
    except ClusterError as exc:
        return None, f"The push secret {name} could not be read from the cluster: {exc.message}"
    if ".dockerconfigjson" not in data:
        return (
            None,
            f"The Secret {name} has no .dockerconfigjson key; KAITO needs a kubernetes.io/dockerconfigjson Secret.",
        )
    return data[".dockerconfigjson"], ""


def _registry_inputs(request: WorkspaceRequest) -> tuple[Credentials | None, str | None, str]:
    if not request.output_image:
        return None, None, ""
    try:
        stored = secret_load(request=request, purpose=PendingSecret.Purpose.REGISTRY)
    except SecretUnavailable as exc:
        return None, None, str(exc)
    if stored:
        return Credentials(stored["username"], stored["password"]), None, ""
    if request.output_push_secret:
        config, problem = existing_secret_config(namespace=request.namespace, name=request.output_push_secret)
        return None, config, problem
    return None, None, ""


def preflight_request(*, request_id: int) -> WorkspaceRequest:
    """Run the checks for a stored tuning request, store the result with its time, and tell open pages."""
    request = WorkspaceRequest.objects.with_related().get(pk=request_id)
    credentials, config, problem = _registry_inputs(request)
    result = preflight_run(
        input_urls=request.input_urls,
        output_image=request.output_image if (credentials or config) else "",
        credentials=credentials,
        dockerconfigjson=config,
        context_length=request.preset.context_length,
        training_config=request.training_config,
    )
    if request.output_image and result["registry"] is None:
        message = problem or "No push credentials are available to check the registry with."
        result["registry"] = {
            "image": request.output_image,
            "findings": [{"severity": "warning", "code": "not-checked", "message": message, "location": ""}],
        }
        result["summary"] = summary(result["datasets"], result["registry"])
    with transaction.atomic():
        WorkspaceRequest.objects.filter(pk=request_id).update(preflight=result)
        transaction.on_commit(lambda: notify.request_changed(request_id=request_id))
    request.preflight = result
    return request


def preflight_after_create(*, request_id: int) -> None:
    """After a tuning request commits: check it now ("inline"), in a thread ("background"), or not ("off")."""
    mode = settings.PREFLIGHT_AFTER_CREATE
    if mode == "off":
        return
    if mode == "inline":
        preflight_request(request_id=request_id)
        return
    threading.Thread(target=_preflight_quietly, args=(request_id,), name=f"preflight-{request_id}", daemon=True).start()


def _preflight_quietly(request_id: int) -> None:
    try:
        preflight_request(request_id=request_id)
    except Exception:
        logger.exception("preflight of request %s failed", request_id)
    finally:
        connections.close_all()


def preflight_draft(
    *,
    part: str,
    namespace: str = "",
    input_urls: Sequence[str] = (),
    output_image: str = "",
    registry_username: str = "",
    registry_password: str = "",
    output_push_secret: str = "",
    context_length: int | None = None,
    training_config: str = "",
) -> dict[str, Any]:
    """Check one part of a request still being written: "datasets" or "registry"."""
    if part == "datasets":
        return preflight_run(input_urls=input_urls, context_length=context_length, training_config=training_config)
    credentials, config, problem = None, None, ""
    if registry_username or registry_password:
        credentials = Credentials(registry_username, registry_password)
    elif output_push_secret and namespace:
        config, problem = existing_secret_config(namespace=namespace, name=output_push_secret)
    result = preflight_run(output_image=output_image, credentials=credentials, dockerconfigjson=config)
    if problem:
        finding = {"severity": "warning", "code": "not-checked", "message": problem, "location": ""}
        result["registry"] = {"image": output_image, "findings": [finding]}
        result["summary"] = summary([], result["registry"])
    return result
