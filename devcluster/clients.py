"""Kubeconfig files, raw HTTPS probes and `kubernetes` ApiClients for a local control plane."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from devcluster.pki import Pki

CONTEXT = "kaito-devcluster"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca_cert: Path, user: dict[str, str]) -> Path:
    """Write a self-contained kubeconfig (data embedded, so the file can be copied anywhere)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)  # it holds a private key or a token
    return path


def write_admin_kubeconfig(path: Path, server: str, pki: Pki) -> Path:
    """Kubeconfig for the admin user (client cert in group system:masters)."""
    return write_kubeconfig(
        path,
        server,
        pki.ca_cert,
        {"client-certificate-data": _b64(pki.admin_cert), "client-key-data": _b64(pki.admin_key)},
    )


def write_token_kubeconfig(path: Path, server: str, ca_cert: Path, token: str) -> Path:
    """Kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount token)."""
    return write_kubeconfig(path, server, ca_cert, {"token": token})


def admin_ssl_context(pki: Pki) -> ssl.SSLContext:
    """TLS context that trusts the control plane's CA and presents the admin client cert."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


def https_get(url: str, ctx: ssl.SSLContext, timeout: float = 2.0) -> tuple[int, str]:
    """GET url and return (status, body); connection errors become status 0."""
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (OSError, ssl.SSLError) as err:
        return 0, str(err)


def http_post_json(url: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """POST JSON to a plain-HTTP endpoint (etcd's gRPC gateway on 127.0.0.1) and decode the answer."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def admin_configuration(server: str, pki: Pki) -> client.Configuration:
    """Client configuration for the admin user, read from the PKI files (no temp files)."""
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = str(pki.ca_cert)
    cfg.cert_file = str(pki.admin_cert)
    cfg.key_file = str(pki.admin_key)
    cfg.verify_ssl = True
    return cfg


def token_configuration(server: str, ca_cert: Path, token: str) -> client.Configuration:
    """Client configuration that authenticates with a bearer token."""
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = str(ca_cert)
    cfg.verify_ssl = True
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return cfg


def request_sa_token(
    api: client.ApiClient, namespace: str, name: str, expiration_seconds: int = 3600, create: bool = True
) -> str:
    """Return a token for ServiceAccount namespace/name via the TokenRequest API (creating the SA)."""
    core = client.CoreV1Api(api)
    if create:
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except client.ApiException as err:
            if err.status != 409:  # already exists is fine
                raise
    # The apiserver refuses expirations under 10 minutes; no audiences = the apiserver's own.
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=max(expiration_seconds, 600))
    )
    resp = core.create_namespaced_service_account_token(name, namespace, body)
    return str(resp.status.token)
