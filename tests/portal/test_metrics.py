"""Prometheus metrics: HTTP by route name, chat counters, reconciler lag, and the reconciler's own metrics port."""

import datetime as dt
import json
import logging
import sys
import time

import pytest
from prometheus_client import REGISTRY

from devcluster.procs import free_port
from portal import metrics
from portal.logging import JsonFormatter, request_id_var, scrub
from tests.portal.servers import clean_env, http_get, running


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
def test_http_requests_are_counted_by_route_name_not_path(client):
    before = sample("kaito_portal_http_requests_total", route="login", method="GET", status="200")
    unmatched = sample("kaito_portal_http_requests_total", route="unmatched", method="GET", status="404")
    client.get("/accounts/login/")
    client.get("/accounts/login/?next=/x")
    client.get("/no/such/page/12345")
    assert sample("kaito_portal_http_requests_total", route="login", method="GET", status="200") == before + 2
    assert sample("kaito_portal_http_requests_total", route="unmatched", method="GET", status="404") == unmatched + 1
    assert sample("kaito_portal_http_request_duration_seconds_count", route="login", method="GET") >= 2
    client.generic("BREW", "/accounts/login/")  # arbitrary methods cannot grow the series
    assert sample("kaito_portal_http_requests_total", route="login", method="other", status="405") >= 1


@pytest.mark.django_db
def test_metrics_endpoint_exposes_every_family_and_needs_no_login(client):
    with metrics.chat_stream():
        metrics.upstream_error("stream_cut")
        metrics.upstream_error("something new")
        body = client.get("/metrics").content.decode()
        assert "kaito_portal_chat_streams_open 1.0" in body
    after = client.get("/metrics").content.decode()
    assert "kaito_portal_chat_streams_open 0.0" in after
    for family in (
        "kaito_portal_http_requests_total",
        "kaito_portal_http_request_duration_seconds_bucket",
        'kaito_portal_chat_upstream_errors_total{kind="stream_cut"}',
        'kaito_portal_chat_upstream_errors_total{kind="other"}',
        "kaito_portal_reconcile_lag_seconds_bucket",
        "kaito_portal_reconcile_watch_restarts_total",
        "kaito_portal_reconciler_leader",
    ):
        assert family in after, family


@pytest.mark.django_db
def test_metrics_token_when_configured(client, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200


def cr(name, transition):
    return {
        "metadata": {"namespace": "ns", "name": name},
        "status": {"conditions": [{"type": "InferenceReady", "lastTransitionTime": transition}]},
    }


def test_reconcile_lag_is_observed_once_per_new_transition():
    handled = []
    handle = metrics.measure_handle(lambda kind, obj: handled.append(kind))
    count = sample("kaito_portal_reconcile_lag_seconds_count")
    total = sample("kaito_portal_reconcile_lag_seconds_sum")
    handle("ADDED", cr("a", "2020-01-01T00:00:00Z"))  # first sight after start-up: an old transition is no lag
    assert sample("kaito_portal_reconcile_lag_seconds_count") == count
    recent = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    handle("MODIFIED", cr("a", recent))
    handle("MODIFIED", cr("a", recent))  # the same transition again (e.g. a label change): not counted twice
    assert sample("kaito_portal_reconcile_lag_seconds_count") == count + 1
    assert 2.0 <= sample("kaito_portal_reconcile_lag_seconds_sum") - total < 30
    assert handled == ["ADDED", "MODIFIED", "MODIFIED"]


def test_on_pass_turns_watch_restarts_into_a_counter():
    class Loop:
        watch_restarts = 0

    loop = Loop()
    on_pass = metrics.reconciler_on_pass(loop)
    restarts = sample("kaito_portal_reconcile_watch_restarts_total")
    loop.watch_restarts = 2
    on_pass("resync")
    on_pass("event")
    loop.watch_restarts = 3
    on_pass("error")
    assert sample("kaito_portal_reconcile_watch_restarts_total") == restarts + 3


def test_reconcile_command_serves_its_metrics_and_logs_json(control_plane, migrated_sqlite):
    port = free_port()
    env = clean_env(DATABASE_URL=migrated_sqlite, KUBECONFIG=control_plane.kubeconfig_path, PORTAL_LOG_FORMAT="json")
    cmd = [sys.executable, "manage.py", "reconcile", f"--metrics-port={port}", "--lease-namespace=default"]
    cmd += ["--identity=metrics-test", "--resync-seconds=1"]
    with running(cmd, env, port=port, ready_path="/metrics") as result:
        deadline, body = time.monotonic() + 20, ""
        wanted = ['kaito_portal_reconcile_passes_total{kind="resync"}', "kaito_portal_reconciler_leader 1.0"]
        while not all(w in body for w in wanted):
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
            body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    assert result["returncode"] == 0, result["stderr"][-2000:]
    assert "reconciler stopped" in result["stdout"]
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines)


def test_json_formatter_one_line_with_request_id_extras_and_no_secrets():
    formatter = JsonFormatter()
    token = request_id_var.set("req-1")
    try:
        record = logging.LogRecord(
            "portal.x", logging.WARNING, __file__, 1, "auth %s", ("Bearer abcdefghijklmnop",), None
        )
        record.route = "login"
        try:
            raise ValueError("password=hunter2 in a\nmultiline message")
        except ValueError:
            record.exc_info = sys.exc_info()
        line = formatter.format(record)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["request_id"] == "req-1" and entry["route"] == "login" and entry["level"] == "WARNING"
    assert entry["message"] == "auth Bearer [redacted]"
    assert "hunter2" not in entry["exc"] and "ValueError" in entry["exc"]
    assert scrub("token kp_abcdefghijkl used") == "token kp_[redacted] used"
