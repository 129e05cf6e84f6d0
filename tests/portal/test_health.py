"""/healthz and /readyz: every dependency reported, 503 naming the one that is down, 200 when all are up."""

import json

import pytest
import yaml

from devcluster.procs import free_port
from tests.portal.servers import clean_env, daphne, http_get
from workspaces.cluster import ConnectionSettings, connect
from workspaces.services.clusters import set_cluster

pytestmark = pytest.mark.django_db(transaction=True)  # the checks run in other threads: they need committed data


@pytest.fixture
def cluster_up(control_plane, settings):
    settings.KUBECONFIG = str(control_plane.kubeconfig_path)
    set_cluster(connect(ConnectionSettings(kubeconfig=settings.KUBECONFIG)))
    yield
    set_cluster(None)


@pytest.fixture
def no_cluster(settings, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings.KUBECONFIG = ""
    settings.AKS_SUBSCRIPTION_ID = ""
    set_cluster(None)
    yield
    set_cluster(None)


def stopped_apiserver_kubeconfig(control_plane, tmp_path):
    """The control plane's kubeconfig pointing at a port where no API server listens any more."""
    config = yaml.safe_load(control_plane.kubeconfig_path.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_healthz_needs_no_login_and_no_dependency(client, no_cluster):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["X-Request-ID"]


def test_readyz_200_when_everything_answers(client, cluster_up):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["failed"] == [] and body["status"] == "ok"
    assert body["checks"]["cluster"]["detail"] == "v1.34.4"
    assert body["checks"]["database"]["ok"] and body["checks"]["channels"]["ok"]


def test_readyz_names_a_missing_cluster(client, no_cluster):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failed"] == ["cluster"]
    assert "No cluster is configured" in body["checks"]["cluster"]["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["channels"]["ok"]


def test_readyz_names_a_stopped_apiserver(client, control_plane, settings, tmp_path, no_cluster):
    settings.KUBECONFIG = stopped_apiserver_kubeconfig(control_plane, tmp_path)
    body = client.get("/readyz").json()
    assert body["failed"] == ["cluster"]
    assert "unreachable" in body["checks"]["cluster"]["error"]


def test_readyz_names_a_channel_layer_that_is_down(client, settings, cluster_up):
    closed = free_port()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed}/0"]},
        }
    }
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["failed"] == ["channels"], body
    assert body["checks"]["cluster"]["ok"] and body["checks"]["database"]["ok"]


def test_a_dependency_that_is_not_required_is_reported_but_does_not_fail(client, settings, no_cluster):
    settings.READYZ_REQUIRED = ["database", "channels"]
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200 and body["checks"]["cluster"]["ok"] is False
    assert body["checks"]["cluster"]["required"] is False


def test_probes_and_metrics_ignore_the_host_header_and_https_redirect_but_pages_do_not(client, settings, no_cluster):
    settings.ALLOWED_HOSTS = ["portal.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz", HTTP_HOST="10.244.1.7:8000").status_code == 200  # kubelet: pod IP, plain HTTP
    assert client.get("/metrics", HTTP_HOST="10.244.1.7:8000").status_code == 200
    assert client.get("/accounts/login/", HTTP_HOST="10.244.1.7:8000").status_code == 400
    assert client.get("/accounts/login/", HTTP_HOST="portal.example.com").status_code == 301


# -- the real server (daphne) with the database down and with everything up ----------------------------------------
def readyz_over_http(env):
    port = free_port()
    with daphne(port, env) as result:
        status, body, headers = http_get(f"http://127.0.0.1:{port}/readyz", headers={"Host": "10.0.0.7:8000"})
    return status, json.loads(body), headers, result


def test_daphne_readyz_503_when_the_database_is_down(control_plane):
    env = clean_env(
        DATABASE_URL=f"postgres://portal:pw@127.0.0.1:{free_port()}/portal", KUBECONFIG=control_plane.kubeconfig_path
    )
    status, body, _, _ = readyz_over_http(env)
    assert status == 503 and body["failed"] == ["database"], body
    assert "127.0.0.1" in body["checks"]["database"]["error"] or "connect" in body["checks"]["database"]["error"]
    assert body["checks"]["cluster"]["ok"] and body["checks"]["channels"]["ok"]


def test_daphne_readyz_200_and_json_logs(control_plane, migrated_sqlite):
    env = clean_env(DATABASE_URL=migrated_sqlite, KUBECONFIG=control_plane.kubeconfig_path, PORTAL_LOG_FORMAT="json")
    port = free_port()
    with daphne(port, env) as result:
        status, body, headers = http_get(f"http://127.0.0.1:{port}/readyz")
        page = http_get(f"http://127.0.0.1:{port}/accounts/login/", headers={"X-Request-ID": "trace-abc.123"})
    assert status == 200, body
    assert json.loads(body)["failed"] == [] and headers["X-Request-ID"]
    assert page[0] == 200 and page[2]["X-Request-ID"] == "trace-abc.123"
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "portal.access"]
    assert access and access[0]["request_id"] == "trace-abc.123" and access[0]["route"] == "login"
    assert access[0]["status"] == 200 and access[0]["message"] == "GET /accounts/login/ 200"
    assert not [e for e in access if e["route"] == "readyz"]  # probes are counted, not logged
