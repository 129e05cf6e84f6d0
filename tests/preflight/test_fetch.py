"""SafeFetcher against a real local server: caps, ranges, redirects, pinning, TLS name checks, time limits."""

import time

import pytest

from tests.preflight.conftest import make_tls
from tests.preflight.server import Route, TestServer, repeating
from workspaces.preflight.fetch import FetchError, Limits, SafeFetcher

GB2 = 2 * 1024**3


def wait_for_sender(server, path, settle=0.3):
    """Let the server's handler notice the closed connection before its byte count is read."""
    time.sleep(settle)
    return server.bytes_sent(path)


def test_get_returns_body_and_counts_bytes(server, make_fetcher):
    url = server.add("/small.txt", b"hello world\n" * 10)
    fetcher = make_fetcher()
    response = fetcher.get(url)
    assert response.status == 200 and response.content == b"hello world\n" * 10
    assert not response.truncated and response.size == 120
    assert fetcher.bytes_read == 120 == server.bytes_sent_when("/small.txt", 120)
    assert fetcher.wire_bytes > 120  # status line and headers come on top


def test_size_cap_stops_a_2gb_download_early(server, make_fetcher):
    server.add(
        "/huge.jsonl", Route(size=GB2, generate=repeating(b'{"prompt": "p", "completion": "c"}\n'), ignore_range=True)
    )
    fetcher = make_fetcher()
    started = time.monotonic()
    response = fetcher.get(server.url("/huge.jsonl"), max_bytes=64 * 1024)
    assert response.truncated and len(response.content) == 64 * 1024 and response.size == GB2
    assert fetcher.bytes_read < 64 * 1024 + 65536  # at most one socket read past the cap
    assert wait_for_sender(server, "/huge.jsonl") < 2 * 1024 * 1024
    assert time.monotonic() - started < 5


def test_range_request_answered_with_206(server, make_fetcher):
    data = bytes(range(256)) * 100
    url = server.add("/blob", data)
    fetcher = make_fetcher()
    response = fetcher.get_range(url, 1000, 1099)
    assert response.status == 206 and response.content == data[1000:1100]
    assert response.size == len(data) and response.content_range == (1000, 1099)
    assert server.seen[-1].headers["range"] == "bytes=1000-1099"
    assert server.bytes_sent_when("/blob", 100) == 100 == fetcher.bytes_read


def test_server_ignoring_range_is_read_only_up_to_the_end_of_the_range(server, make_fetcher):
    server.add("/norange", Route(size=GB2, generate=repeating(bytes(range(256))), ignore_range=True))
    fetcher = make_fetcher()
    response = fetcher.get_range(server.url("/norange"), 1000, 1099)
    assert response.status == 200 and response.headers["x-range-ignored"] == "1"
    assert response.content == repeating(bytes(range(256)))(1000, 100)
    assert fetcher.bytes_read < 1100 + 65536
    assert wait_for_sender(server, "/norange") < 2 * 1024 * 1024


def test_server_ignoring_range_far_into_a_huge_file_is_refused_not_downloaded(server, make_fetcher):
    server.add("/norange", Route(size=GB2, generate=repeating(b"x"), ignore_range=True))
    fetcher = make_fetcher(limits=Limits(max_bytes=1 << 20, read_timeout=2, total_timeout=10))
    with pytest.raises(FetchError) as caught:
        fetcher.get_range(server.url("/norange"), GB2 - 8, GB2 - 1)
    assert caught.value.kind == "range" and "ignores range requests" in caught.value.message
    assert wait_for_sender(server, "/norange") < 2 * 1024 * 1024


def test_head_probe_reports_size_and_range_support(server, make_fetcher):
    server.add("/big", Route(size=GB2, generate=repeating(b"x")))
    response = make_fetcher().head(server.url("/big"))
    assert response.status == 200 and response.size == GB2 and response.headers["accept-ranges"] == "bytes"
    assert server.bytes_sent("/big") == 0


def test_probe_falls_back_to_a_one_byte_range_when_head_is_refused(server, make_fetcher):
    server.add("/signed", Route(size=GB2, generate=repeating(b"x")))
    fetcher = make_fetcher()
    assert fetcher.probe(server.url("/signed")).size == GB2 and [s.method for s in server.seen] == ["HEAD"]
    server.seen.clear()
    server.add("/get-only", Route(size=12345, generate=repeating(b"y"), head_status=405))
    probe = fetcher.probe(server.url("/get-only"))
    assert probe.size == 12345 and probe.status == 206 and probe.headers["accept-ranges"] == "bytes"
    assert [s.method for s in server.seen] == ["HEAD", "GET"] and server.bytes_sent_when("/get-only", 1) == 1


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.1/data.parquet", "private network"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://localhost:8080/x", "local or cloud metadata"),
        ("file:///etc/passwd", "Only absolute http"),
    ],
)
def test_redirect_to_a_refused_address_names_the_target(server, make_fetcher, target, reason):
    server.add("/train.parquet", Route(status=302, redirect=target))
    with pytest.raises(FetchError) as caught:
        make_fetcher().get(server.url("/train.parquet") + "?download=true")
    assert caught.value.kind == "refused"
    assert f"redirects to {target}" in caught.value.message and reason in caught.value.message


def test_redirects_are_followed_and_credentials_stay_with_their_origin(server, make_fetcher):
    other = TestServer().start()
    try:
        final = other.add("/data.jsonl", b'{"prompt": "a", "completion": "b"}\n')
        server.add("/same", Route(status=307, redirect="/hop"))  # same origin: credentials kept
        server.add("/hop", Route(status=302, redirect=final))  # another port is another origin
        secrets = {"Authorization": "Bearer hf_secret", "Cookie": "session=s3cr3t", "X-Trace": "keep"}
        response = make_fetcher().get(server.url("/same"), headers=secrets)
        assert response.content.startswith(b'{"prompt"')
        assert response.redirects == [server.url("/hop"), final] and response.url == final
        assert server.seen[-1].headers["authorization"] == "Bearer hf_secret"
        seen_by_other = other.seen[-1].headers
        assert "authorization" not in seen_by_other and "cookie" not in seen_by_other
        assert seen_by_other["x-trace"] == "keep"
    finally:
        other.stop()


def test_redirect_loops_stop_at_the_limit(server, make_fetcher):
    server.add("/loop", Route(status=302, redirect="/loop"))
    fetcher = make_fetcher(limits=Limits(max_redirects=3))
    with pytest.raises(FetchError) as caught:
        fetcher.get(server.url("/loop"))
    assert caught.value.kind == "redirects" and fetcher.requests == 4


def test_silent_server_hits_the_read_timeout(server, make_fetcher):
    server.add("/slow", Route(data=b"late", delay=3))
    fetcher = make_fetcher(limits=Limits(connect_timeout=1, read_timeout=0.5, total_timeout=10))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetcher.get(server.url("/slow"))
    assert caught.value.kind == "timeout" and "sent nothing for 0.5 s" in caught.value.message
    assert time.monotonic() - started < 2


def test_trickling_server_hits_the_total_time_limit(server, make_fetcher):
    # One byte every 50 ms never trips the read timeout; only the total deadline ends it.
    server.add("/trickle", Route(data=b"x" * 10_000, trickle=0.05))
    fetcher = make_fetcher(limits=Limits(connect_timeout=1, read_timeout=1, total_timeout=1.5))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetcher.get(server.url("/trickle"))
    elapsed = time.monotonic() - started
    assert caught.value.kind == "timeout" and "time limit of 1.5 s" in caught.value.message
    assert 1.3 < elapsed < 3
    with pytest.raises(FetchError, match="time limit"):  # the budget is spent for every later call
        fetcher.get(server.url("/trickle"))


def test_host_is_resolved_once_and_connections_are_pinned(server, make_fetcher):
    """DNS rebinding: later answers point elsewhere, yet every request goes to the first checked address."""
    answers = []

    def rebinding_dns(host, port):
        answers.append(host)
        return ["127.0.0.1"] if len(answers) == 1 else ["10.9.9.9"]

    data = b"0123456789" * 100
    server.add("/file.csv", data)
    fetcher = make_fetcher(resolver=rebinding_dns)
    url = f"http://data.test:{server.port}/file.csv"  # not in any real DNS: only the pin can reach it
    assert fetcher.get_range(url, 0, 9).content == b"0123456789"
    assert fetcher.get(url).content == data
    assert answers == ["data.test"]
    assert {s.headers["host"] for s in server.seen} == {f"data.test:{server.port}"}
    assert fetcher.get(f"http://data.test.:{server.port}/file.csv").content == data  # trailing dot: same pin
    assert answers == ["data.test"]


def test_a_name_resolving_to_a_refused_address_is_never_contacted(server, make_fetcher):
    fetcher = make_fetcher(resolver=lambda host, port: ["10.9.9.9"])
    with pytest.raises(FetchError) as caught:
        fetcher.get(f"http://data.test:{server.port}/file.csv")
    assert caught.value.kind == "refused" and "resolves to 10.9.9.9" in caught.value.message
    assert server.seen == []


def test_tls_uses_the_url_name_for_sni_and_certificate_while_connecting_to_the_pin(tmp_path, make_fetcher):
    server_ctx, client_ctx = make_tls(tmp_path, "data.test")
    tls_server = TestServer(tls=server_ctx).start()
    try:
        tls_server.add("/x.jsonl", b'{"prompt": "a", "completion": "b"}\n')
        dns = {"data.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
        fetcher = make_fetcher(resolver=lambda host, port: dns[host], verify=client_ctx)
        response = fetcher.get(tls_server.url("/x.jsonl", host="data.test"))
        assert response.status == 200 and tls_server.seen[-1].sni == "data.test"
        assert tls_server.seen[-1].headers["host"] == f"data.test:{tls_server.port}"
        # Same address, another name: the certificate does not cover it, so verification must fail.
        with pytest.raises(FetchError) as caught:
            fetcher.get(tls_server.url("/x.jsonl", host="other.test"))
        assert caught.value.kind == "tls" and "other.test" in caught.value.message
    finally:
        tls_server.stop()


def test_proxy_settings_and_unsupported_schemes_are_ignored_or_refused(server, make_fetcher, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    url = server.add("/ok", b"direct")
    assert make_fetcher().get(url).content == b"direct"
    for bad in ("ftp://example.com/x", "gopher://127.0.0.1/x"):
        with pytest.raises(FetchError, match="Only absolute http"):
            make_fetcher().get(bad)


def test_http_errors_and_unreachable_hosts_are_reported(server, make_fetcher):
    with pytest.raises(FetchError) as caught:
        make_fetcher().get(server.url("/missing"))
    assert caught.value.kind == "http" and caught.value.status == 404 and "HTTP 404" in caught.value.message
    closed = TestServer()
    port = closed.port
    closed.stop()  # bound then closed: nothing listens there any more
    with pytest.raises(FetchError) as caught:
        make_fetcher().get(f"http://127.0.0.1:{port}/x")
    assert caught.value.kind == "unreachable" and "Could not connect to 127.0.0.1" in caught.value.message


def test_production_defaults_refuse_loopback():
    with pytest.raises(FetchError) as caught:
        SafeFetcher().get("http://127.0.0.1:9/x")
    assert caught.value.kind == "refused" and "loopback" in caught.value.message
