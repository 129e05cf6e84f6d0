"""Dataset preflight for one tuning input URL: format, columns, rows, preview, record problems, token sizes."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from workspaces.netguard import Resolver
from workspaces.preflight.fetch import FetchError, Limits, Response, SafeFetcher, redact
from workspaces.preflight.readers import (
    TEXT_READERS,
    BudgetExceeded,
    RangeFile,
    Sample,
    human,
    read_arrow,
    read_parquet,
)
from workspaces.preflight.records import Columns, Finding, Findings, check_records, detect_shape, plain, token_summary

logger = logging.getLogger(__name__)

# KAITO's trainer (presets/workspace/tuning/text-generation/dataset.py) picks the first file whose name
# *contains* one of these, and loads it with the datasets builder of that name.
SUPPORTED_EXTENSIONS = ("csv", "json", "parquet", "arrow", "webdataset")
HEAD_BYTES = 64 * 1024
TEXT_BYTES = 1024 * 1024  # CSV / JSON(L): this much is read at most
BUDGET_BYTES = 16 * 1024 * 1024  # parquet / arrow: footer plus the first row group's columns
SAMPLE_ROWS = 1000  # records checked for problems and token sizes
PREVIEW_ROWS = 5


@dataclass
class DatasetReport(Findings):
    """The result of one dataset check; `to_dict()` is JSON-serialisable for storing on the request."""

    url: str
    file_name: str = ""
    final_url: str = ""
    format: str | None = None  # parquet | arrow | jsonl | json | csv
    format_from_name: str | None = None  # the datasets builder KAITO's trainer will use
    format_from_content: str | None = None
    size_bytes: int | None = None
    columns: list[str] = field(default_factory=list)
    shape: str | None = None  # messages | prompt_completion | text
    rows: int | None = None
    rows_exact: bool = False
    records_checked: int = 0
    complete: bool = False  # every record was checked
    preview: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)
    bytes_read: int = 0
    requests: int = 0
    seconds: float = 0.0


def file_name(url: str) -> str:
    """The name KAITO's data-downloader saves the URL under: the path's basename, query string dropped."""
    return urlsplit(url).path.rsplit("/", 1)[-1]


def builders_for_name(name: str) -> list[str]:
    return [ext for ext in SUPPORTED_EXTENSIONS if ext in name.lower()]


def sniff(head: bytes) -> str:
    """The format the first bytes look like: parquet, arrow-file, arrow-stream, html, json, jsonl, text, …"""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1"):
        return "arrow-file"
    if head.startswith(b"\xff\xff\xff\xff") or head[4:8] in (b"\xff\xff\xff\xff",):
        return "arrow-stream"
    if head.startswith((b"\x1f\x8b", b"PK\x03\x04", b"\x28\xb5\x2f\xfd", b"BZh")):
        return "compressed"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] == b"<" and stripped[:15].lower().startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
        return "html"
    if stripped[:1] == b"[":
        return "json"
    if stripped[:1] == b"{":
        return "jsonl"
    if b"\x00" in head[:4096]:
        return "binary"
    return "text"


# Which sniffed content each builder can load.
_FITS = {
    "parquet": {"parquet"},
    "arrow": {"arrow-file", "arrow-stream"},
    "json": {"json", "jsonl"},
    "csv": {"text", "jsonl", "json"},  # pandas reads any text; JSON in a .csv is caught by the columns
}
_DESCRIBE = {
    "html": "an HTML page (a login, error or download page?)",
    "compressed": "a compressed archive (gzip/zip/zstd/bzip2)",
    "binary": "binary data",
    "text": "plain text",
    "arrow-file": "an Arrow file",
    "arrow-stream": "an Arrow stream",
}


def check_dataset(
    url: str,
    *,
    context_length: int | None = None,
    columns: Columns | None = None,
    dataset_extension: str | None = None,
    fetcher: SafeFetcher | None = None,
    limits: Limits | None = None,
    allow_hosts: Collection[str] = (),
    resolver: Resolver | None = None,
    budget_bytes: int = BUDGET_BYTES,
    text_bytes: int = TEXT_BYTES,
    sample_rows: int = SAMPLE_ROWS,
    preview_rows: int = PREVIEW_ROWS,
) -> DatasetReport:
    """Check one dataset URL the way KAITO's tuning job will read it, downloading only what is needed.

    `dataset_extension` is DatasetConfig.dataset_extension when the tuning config sets it (then the
    file name need not contain a supported extension). `allow_hosts`/`resolver` are for tests.
    Never raises for a bad URL or file: every problem is a finding in the report.
    """
    started = time.monotonic()
    names = columns or Columns()
    report = DatasetReport(url=redact(url), file_name=file_name(url))
    fetcher = fetcher or SafeFetcher(
        limits=limits or Limits(total_timeout=30.0, max_bytes=max(text_bytes, HEAD_BYTES)),
        allow_hosts=allow_hosts,
        resolver=resolver,
    )
    try:
        _check(report, url, fetcher, names, dataset_extension, context_length, budget_bytes, text_bytes,
               sample_rows, preview_rows)  # fmt: skip
    except FetchError as exc:
        _fetch_problem(report, exc)
    except Exception as exc:  # a preflight must report, never crash the request that asked for it
        logger.exception("dataset preflight failed for %s", report.url)
        report.add("warning", "internal", f"The check itself failed ({type(exc).__name__}); the file is unverified.")
    report.bytes_read, report.requests = fetcher.bytes_read, fetcher.requests
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _fetch_problem(report: DatasetReport, exc: FetchError) -> None:
    if exc.kind == "refused":
        report.add("error", "refused", exc.message)
    elif exc.kind == "http":
        report.add(
            "warning",
            "unreachable",
            f"{exc.message} KAITO's downloader needs HTTP 200 without credentials, so the job would fail "
            "unless the URL works from the cluster.",
        )
    elif exc.kind == "timeout":
        report.add("warning", "timeout", f"{exc.message} The file could not be checked.")
    elif exc.kind == "range":
        report.add("warning", "not-checked", f"{exc.message} The file could not be checked.")
    else:
        report.add("warning", "unreachable", f"{exc.message} The file could not be checked.")


def _name_checks(report: DatasetReport, dataset_extension: str | None) -> str | None:
    if dataset_extension:
        report.format_from_name = dataset_extension.lower().lstrip(".")
        return report.format_from_name
    found = builders_for_name(report.file_name)
    if not found:
        report.add(
            "error",
            "file-name",
            f"The file would be saved as {report.file_name or '(no name)'!r}, which contains none of "
            f"{', '.join(SUPPORTED_EXTENSIONS)}: KAITO's trainer would find no dataset. Use a URL whose "
            "path ends in the format's extension (the query string does not count), or set "
            "DatasetConfig.dataset_path and dataset_extension.",
        )
        return None
    if len(found) > 1:
        report.add(
            "warning",
            "file-name",
            f"The file name {report.file_name!r} contains {' and '.join(found)}; KAITO's trainer picks one "
            "of them in no fixed order. Rename the file so it contains only one.",
        )
    report.format_from_name = found[-1] if "parquet" in found or "arrow" in found else found[0]
    return report.format_from_name


def _check(
    report: DatasetReport,
    url: str,
    fetcher: SafeFetcher,
    names: Columns,
    dataset_extension: str | None,
    context_length: int | None,
    budget_bytes: int,
    text_bytes: int,
    sample_rows: int,
    preview_rows: int,
) -> None:
    builder = _name_checks(report, dataset_extension)
    fetcher.check(url)
    if builder == "webdataset":
        report.add("warning", "not-checked", "WebDataset archives are not checked by the portal.")
        return
    head = fetcher.get_range(url, 0, HEAD_BYTES - 1)
    report.final_url, report.size_bytes = head.url, head.size
    if not head.content:
        report.add("error", "empty", "The file is empty; KAITO's downloader fails on empty files.")
        return
    content = report.format_from_content = sniff(head.content)
    if builder and content not in _FITS.get(builder, set()):
        report.add(
            "error",
            "format-mismatch",
            f"The file name says {builder}, but the content is {_DESCRIBE.get(content, content)}; the "
            f"trainer would load it with the {builder} reader and fail.",
        )
        return
    if builder is None and content in ("html", "compressed", "binary"):
        return
    fmt = {"arrow-file": "arrow", "arrow-stream": "arrow"}.get(content, content)
    report.format = "csv" if builder == "csv" or content == "text" else fmt
    if report.format in ("parquet", "arrow"):
        sample = _read_binary(report, fetcher, head, names, budget_bytes, sample_rows, content)
    else:
        data, complete = _read_text(report, fetcher, head, text_bytes)
        sample = TEXT_READERS[report.format](data, complete, report.size_bytes, sample_rows)
    if sample is not None:
        _judge(report, sample, names, context_length, preview_rows)


def _read_binary(
    report: DatasetReport,
    fetcher: SafeFetcher,
    head: Response,
    names: Columns,
    budget: int,
    sample_rows: int,
    content: str,
) -> Sample | None:
    size = report.size_bytes
    known = {0: head.content}
    if "x-range-ignored" in head.headers or size is None:
        if size is not None and size > budget:
            report.add(
                "warning",
                "not-checked",
                f"The server ignores range requests and the file is {human(size)}: its footer cannot be read "
                "without downloading all of it, so only the first bytes were checked.",
            )
            return None
        # Small enough (or of unknown size): one capped download replaces the range requests.
        whole = fetcher.get(report.final_url or report.url, max_bytes=budget)
        if whole.truncated:
            report.add("warning", "not-checked", f"The file is bigger than {human(budget)}; it was not checked.")
            return None
        size = report.size_bytes = len(whole.content)
        known = {0: whole.content}
    remote = RangeFile(fetcher, report.final_url or report.url, size, budget, known)
    try:
        if report.format == "parquet":
            return read_parquet(remote, names, sample_rows)
        return read_arrow(remote, content == "arrow-stream", names, sample_rows)
    except BudgetExceeded:
        report.add(
            "warning", "not-checked", f"Reading the first records would take more than {human(budget)}; not checked."
        )
    except (pa.ArrowException, OSError, ValueError) as exc:  # a FetchError inside pyarrow comes out as itself
        report.add(
            "error",
            "unreadable",
            f"The {report.format} file is truncated or corrupt ({human(size)}): {str(exc)[:300]}",
        )
    return None


def _read_text(report: DatasetReport, fetcher: SafeFetcher, head: Response, limit: int) -> tuple[bytes, bool]:
    data, size = head.content, report.size_bytes
    complete = not head.truncated and (size is None or len(data) >= size)
    if not complete and len(data) < limit:
        more = fetcher.get_range(head.url, len(data), limit - 1)
        data += more.content
        complete = size is not None and len(data) >= size
    if not complete:
        report.add(
            "warning",
            "partial",
            f"The file is {human(size)}; only its first {human(len(data))} were checked.",
        )
    return data, complete


def _judge(
    report: DatasetReport, sample: Sample, names: Columns, context_length: int | None, preview_rows: int
) -> None:
    report.columns, report.rows, report.rows_exact = sample.columns, sample.rows, sample.rows_exact
    report.complete = sample.complete
    report.findings.extend(sample.findings)
    shape = sample.shape or detect_shape(sample.columns, names)
    report.shape = shape.kind
    if sample.columns or sample.records:
        report.findings.extend(shape.findings)
    report.records_checked = len(sample.records)
    report.preview = [plain(r) for r in sample.records[:preview_rows]]
    if shape.kind is None:
        return
    if report.format == "csv" and shape.kind == "messages":
        report.add(
            "error",
            "column-type",
            f"In a CSV file '{names.messages}' is plain text, not a list of turns; use JSON Lines or parquet.",
        )
        return
    report.findings.extend(check_records(sample.records, sample.locations, shape, names))
    report.tokens, long_records = token_summary(sample.records, shape, context_length)
    report.findings.extend(long_records)
