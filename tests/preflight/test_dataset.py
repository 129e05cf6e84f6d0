"""Dataset preflight against files generated here and served by the local Range-aware server."""

import json
import time

import pyarrow as pa
import pytest

from tests.preflight.conftest import LOCAL
from tests.preflight.datasets import (
    MESSAGES_TYPE,
    PaddedParquet,
    arrow_file,
    arrow_stream,
    dolly_messages,
    dolly_parquet,
    jsonl,
    parquet_bytes,
    prompt_completion,
)
from tests.preflight.server import Route, repeating
from workspaces.preflight.dataset import check_dataset, file_name, sniff
from workspaces.preflight.fetch import Limits
from workspaces.preflight.records import Columns

GB2 = 2 * 1024**3
DOLLY_PATH = "/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train-00000-of-00001-54e3756291ca09c6.parquet"


def check(url, **kwargs):
    kwargs.setdefault("allow_hosts", LOCAL)
    report = check_dataset(url, **kwargs)
    json.dumps(report.to_dict())  # always storable as JSON
    return report


def codes(report, severity=None):
    return [f.code for f in report.findings if severity in (None, f.severity)]


def messages(report, severity="error"):
    return [f.message for f in report.findings if f.severity == severity]


def test_dolly_style_parquet_behind_a_redirect_is_valid(server):
    data = dolly_parquet(300)
    server.add("/cdn/xet-signed-blob", data)
    server.add(DOLLY_PATH, Route(status=302, redirect="/cdn/xet-signed-blob?X-Amz-Signature=abc"))
    report = check(server.url(DOLLY_PATH) + "?download=true", context_length=4096)
    assert report.file_name == "train-00000-of-00001-54e3756291ca09c6.parquet"
    assert report.format == report.format_from_name == report.format_from_content == "parquet"
    assert report.ok and report.findings == []
    assert (report.columns, report.shape, report.rows, report.rows_exact) == (["messages"], "messages", 300, True)
    assert report.complete and report.records_checked == 300
    first = report.preview[0]["messages"]
    assert [t["role"] for t in first] == ["system", "user", "assistant"]
    assert "<b>Virgin Australia</b>" in first[1]["content"]  # plain values: the UI escapes
    assert 0 < report.tokens["min"] <= report.tokens["avg"] <= report.tokens["max"] < 4096
    assert report.final_url.endswith("/cdn/xet-signed-blob?X-Amz-Signature=abc")
    assert report.bytes_read == server.bytes_sent_when(None, report.bytes_read) <= len(data)


def test_prompt_completion_jsonl_is_valid_and_long_records_are_flagged(server):
    records = [*prompt_completion(50), {"prompt": "Summarise: " + "word " * 4000, "completion": "short"}]
    url = server.add("/data/train.jsonl", jsonl(records))
    report = check(url, context_length=512)
    assert report.format == "jsonl" and report.shape == "prompt_completion" and report.ok
    assert (report.rows, report.rows_exact, report.columns) == (51, True, ["prompt", "completion"])
    assert report.tokens["max"] > 512 and report.tokens["over_context"] == 1
    assert codes(report, "warning") == ["long-records"]
    assert "1 of 51 checked records" in messages(report, "warning")[0]


def test_csv_with_wrong_columns_names_found_and_expected(server):
    url = server.add("/qa.csv", b"question,answer\nWhat is KAITO?,An operator\nWhy?,Because\n")
    report = check(url)
    assert report.format == "csv" and not report.ok and report.shape is None
    [error] = messages(report)
    assert "Columns found: 'question', 'answer'" in error
    assert "Expected 'messages'" in error and "'prompt' and 'completion'" in error
    assert report.rows == 2 and report.preview[0] == {"question": "What is KAITO?", "answer": "An operator"}


def test_parquet_with_wrong_columns_still_shows_a_preview(server):
    table = pa.table({"instruction": ["Say hi", "Count"], "output": ["hi", "1 2 3"]})
    report = check(server.add("/alpaca.parquet", parquet_bytes(table)))
    assert not report.ok and codes(report) == ["wrong-columns"] and report.rows == 2
    assert "Columns found: 'instruction', 'output'" in messages(report)[0]
    assert report.preview == [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Count", "output": "1 2 3"}]


def test_truncated_parquet_is_a_clear_error(server):
    data = dolly_parquet(100)
    url = server.add("/broken.parquet", data[: len(data) // 2])
    report = check(url)
    assert not report.ok and codes(report, "error") == ["unreadable"]
    assert "truncated or corrupt" in messages(report)[0]


def test_2gb_parquet_is_checked_through_its_footer_without_downloading_it(server):
    padded = PaddedParquet(dolly_parquet(200), GB2)
    server.add("/huge/train.parquet", Route(size=GB2, generate=padded))
    report = check(server.url("/huge/train.parquet"))
    assert report.ok and report.size_bytes == GB2 and report.rows == 200 and report.rows_exact
    assert report.shape == "messages" and report.records_checked == 200
    assert server.bytes_sent("/huge/train.parquet") < 300_000 and report.requests <= 4


def test_parquet_with_many_row_groups_reads_only_the_first(server):
    table = pa.table({"messages": pa.array(dolly_messages(20_000), type=MESSAGES_TYPE)})
    data = parquet_bytes(table, row_group_size=100, compression="none")
    url = server.add("/many.parquet", data)
    report = check(url)
    assert report.ok and report.rows == 20_000 and report.rows_exact
    assert report.records_checked == 100 and not report.complete
    assert server.bytes_sent("/many.parquet") < len(data) / 10


def test_2gb_jsonl_from_a_server_ignoring_range_is_sampled_and_estimated(server):
    line = json.dumps({"prompt": "p" * 40, "completion": "c" * 40}).encode() + b"\n"
    server.add("/big.jsonl", Route(size=GB2, generate=repeating(line), ignore_range=True))
    started = time.monotonic()
    report = check(server.url("/big.jsonl"))
    assert report.ok and codes(report) == ["partial"] and "2.1 GB" in messages(report, "warning")[0]
    assert not report.rows_exact and abs(report.rows - GB2 // len(line)) < GB2 // len(line) * 0.01
    time.sleep(0.3)
    assert server.bytes_sent("/big.jsonl") < 4 * 1024 * 1024
    assert time.monotonic() - started < 10


def test_2gb_parquet_from_a_server_ignoring_range_is_not_downloaded(server):
    padded = PaddedParquet(dolly_parquet(50), GB2)
    server.add("/norange.parquet", Route(size=GB2, generate=padded, ignore_range=True))
    report = check(server.url("/norange.parquet"))
    assert report.ok and codes(report) == ["not-checked"] and "ignores range requests" in messages(report, "warning")[0]
    time.sleep(0.3)
    assert server.bytes_sent("/norange.parquet") < 2 * 1024 * 1024


def test_small_parquet_from_a_server_ignoring_range_is_downloaded_once(server):
    data = dolly_parquet(2000, compression="none")
    assert len(data) > 64 * 1024  # more than the first read, so the whole file is needed
    server.add("/plain/train.parquet", Route(data=data, ignore_range=True))
    report = check(server.url("/plain/train.parquet"))
    assert report.ok and report.findings == [] and report.rows == 2000 and report.rows_exact
    # The first read stops after 64 KB (the client's socket buffer may have taken more); then one download.
    assert report.requests == 2 and server.bytes_sent("/plain/train.parquet") <= 2 * len(data)


def test_redirect_to_a_private_address_is_refused_and_named(server):
    server.add("/train.jsonl", Route(status=302, redirect="http://192.168.1.20/internal.jsonl"))
    report = check(server.url("/train.jsonl"))
    assert codes(report, "error") == ["refused"]
    assert "redirects to http://192.168.1.20/internal.jsonl" in messages(report)[0]
    assert "private network" in messages(report)[0]


def test_refused_url_needs_no_network():
    report = check_dataset("http://169.254.169.254/latest/train.jsonl")
    assert codes(report, "error") == ["refused"] and report.requests == 0


def test_slow_server_is_a_warning_within_bounded_time(server):
    server.add("/slow.parquet", Route(data=dolly_parquet(10), trickle=0.05))
    started = time.monotonic()
    report = check(server.url("/slow.parquet"), limits=Limits(connect_timeout=1, read_timeout=1, total_timeout=1.5))
    assert report.ok and codes(report, "warning") == ["timeout"]
    assert "time limit of 1.5 s" in messages(report, "warning")[0]
    assert time.monotonic() - started < 4


def test_unreachable_url_is_a_plain_warning(server):
    report = check(server.url("/gone.parquet"))
    assert report.ok and codes(report) == ["unreachable"] and "HTTP 404" in messages(report, "warning")[0]


def test_bad_records_are_reported_with_line_and_row_numbers(server):
    good = {"messages": dolly_messages(1)[0]}
    lines = [json.dumps(good)] * 2
    lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}))
    lines.append(json.dumps({"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}))
    lines += [json.dumps(good)] * 2 + ['{"messages": [oops'] + [json.dumps(good)]
    url = server.add("/chat.jsonl", "\n".join(lines).encode() + b"\n")
    report = check(url)
    errors = messages(report)
    assert "line 3: messages[1] has no 'content'" in errors
    assert any(e.startswith("line 7: not valid JSON") for e in errors)
    assert "line 4: messages[0] has role 'bot', not one of system, user, assistant, tool" in messages(report, "warning")
    assert "line 4: no user turn" in messages(report, "warning")
    rows = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]] * 2
    rows.append([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}])
    url = server.add("/chat.parquet", parquet_bytes(pa.table({"messages": pa.array(rows, type=MESSAGES_TYPE)})))
    assert messages(check(url)) == ["row 3: messages[1] has no 'content'"]


def test_schema_level_type_errors_in_parquet(server):
    strings = pa.table({"messages": ['[{"role": "user", "content": "q"}]']})
    no_content = pa.table({"messages": pa.array([[{"role": "user", "text": "q"}]])})
    for path, table, expected in [
        ("/s.parquet", strings, "holds string; it must be a list"),
        ("/n.parquet", no_content, "have no 'content' field (fields: role, text)"),
    ]:
        report = check(server.add(path, parquet_bytes(table)))
        assert not report.ok and expected in messages(report)[0]


@pytest.mark.parametrize(
    ("path", "body", "code", "text"),
    [
        ("/train.parquet", b"<!DOCTYPE html><html>Sign in</html>", "format-mismatch", "an HTML page"),
        ("/train.json", b"PAR1\x00\x00", "format-mismatch", "content is parquet"),
        ("/train.txt", b'{"prompt": "a", "completion": "b"}\n', "file-name", "contains none of csv, json"),
        ("/empty.jsonl", b"", "empty", "empty"),
    ],
)
def test_file_name_and_content_must_agree(server, path, body, code, text):
    report = check(server.add(path, body))
    assert code in codes(report, "error") and any(text in m for m in messages(report))


def test_arrow_stream_and_file_and_json_array(server):
    table = pa.table({"prompt": ["a", "b", "c"], "completion": ["x", "y", "z"]})
    for path, body in [("/d.arrow", arrow_stream(table)), ("/f.arrow", arrow_file(table, max_chunksize=1))]:
        report = check(server.add(path, body))
        assert report.ok and report.format == "arrow" and report.shape == "prompt_completion", path
        assert report.records_checked >= 1 and report.rows == 3
    array = json.dumps([{"messages": m} for m in dolly_messages(4)], indent=2).encode()
    report = check(server.add("/train.json", array))
    assert report.ok and report.format == "json" and report.rows == 4 and report.rows_exact


def test_columns_renamed_by_dataset_config_and_plain_text(server):
    body = jsonl([{"conversation": m} for m in dolly_messages(3)])
    cols = Columns.from_dataset_config({"messages_column": "conversation"})
    assert check(server.add("/c.jsonl", body), columns=cols).shape == "messages"
    report = check(server.add("/t.csv", b"text\nhello world\n"))
    assert report.ok and report.shape == "text" and codes(report) == ["plain-text"]


def test_preview_truncates_long_values_and_helpers():
    long_body = jsonl([{"prompt": "x" * 5000, "completion": "y"}])
    from tests.preflight.server import TestServer

    srv = TestServer().start()
    try:
        report = check(srv.add("/long.jsonl", long_body))
    finally:
        srv.stop()
    assert len(report.preview[0]["prompt"]) == 301 and report.preview[0]["prompt"].endswith("…")
    assert file_name("https://h/a/b/train.parquet?download=true#x") == "train.parquet"
    assert sniff(b"PAR1....") == "parquet" and sniff(b"\n [ {") == "json" and sniff(b"\x1f\x8b") == "compressed"
