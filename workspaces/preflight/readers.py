"""Read the first records of a remote parquet, arrow, CSV or JSON(L) file with as few bytes as possible."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from workspaces.preflight.fetch import SafeFetcher
from workspaces.preflight.records import Columns, Finding, Shape, check_arrow_type, detect_shape

BLOCK = 64 * 1024  # smallest range request: pyarrow asks for many small pieces


class BudgetExceeded(OSError):
    """Reading on would take more bytes than the check may download."""


@dataclass
class Sample:
    """What a reader learnt: columns, the first records with their locations, row count, findings."""

    columns: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    rows: int | None = None
    rows_exact: bool = False
    complete: bool = False  # every record of the file was read
    shape: Shape | None = None
    findings: list[Finding] = field(default_factory=list)


class RangeFile(io.RawIOBase):
    """A read-only, seekable file whose bytes come from range requests, within a byte budget."""

    def __init__(self, fetcher: SafeFetcher, url: str, size: int, budget: int, known: dict[int, bytes]) -> None:
        super().__init__()
        self.fetcher, self.url, self.size, self.budget = fetcher, url, size, budget
        self.fetched = sum(len(b) for b in known.values())
        self._segments = sorted(known.items())
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._cached(self._pos, end) or self._fetch(self._pos, end)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _cached(self, start: int, end: int) -> bytes | None:
        for offset, data in self._segments:
            if offset <= start and end <= offset + len(data):
                return data[start - offset : end - offset]
        return None

    def _fetch(self, start: int, end: int) -> bytes:
        stop = min(self.size, max(end, start + BLOCK))
        if self.fetched + (stop - start) > self.budget:
            raise BudgetExceeded(f"reading bytes {start}-{stop} would exceed the check's budget")
        data = self.fetcher.get_range(self.url, start, stop - 1).content
        self.fetched += len(data)
        self._segments.append((start, data))
        return data[: end - start]

    def prefetch_tail(self, length: int = BLOCK) -> None:
        start = max(0, self.size - length)
        if self._cached(start, self.size) is None:
            self.seek(start)
            self._fetch(start, self.size)


def read_parquet(remote: RangeFile, names: Columns, sample_rows: int) -> Sample:
    """Footer (schema, row count) and, when it fits the budget, the first row group's needed columns."""
    remote.prefetch_tail()
    sample = Sample()
    parquet = pq.ParquetFile(remote)
    meta = parquet.metadata
    schema = parquet.schema_arrow
    sample.columns, sample.rows, sample.rows_exact = list(schema.names), meta.num_rows, True
    sample.shape = detect_shape(sample.columns, names)
    if meta.num_row_groups == 0:
        return sample
    if sample.shape.kind is not None:
        type_errors = check_arrow_type(sample.shape, schema, names)
        sample.findings.extend(type_errors)
        if type_errors:
            return sample
    used = sample.shape.used or sample.columns  # no accepted shape: every column, for the preview only
    group = meta.row_group(0)
    indexes = [i for i in range(group.num_columns) if group.column(i).path_in_schema.split(".")[0] in used]
    needed = sum(group.column(i).total_compressed_size for i in indexes)
    if remote.fetched + needed > remote.budget:
        if sample.shape.kind is None:
            return sample
        sample.findings.append(
            Finding(
                "warning",
                "not-checked",
                f"The first row group's columns take {human(needed)}, more than this check downloads; "
                "only the schema and the row count were checked.",
            )
        )
        return sample
    table = parquet.read_row_group(0, columns=used).slice(0, sample_rows)
    sample.records = table.to_pylist()
    sample.locations = [f"row {i + 1}" for i in range(len(sample.records))]
    sample.complete = meta.num_row_groups == 1 and table.num_rows == meta.num_rows
    return sample


def read_arrow(remote: RangeFile, stream: bool, names: Columns, sample_rows: int) -> Sample:
    """The schema and first record batch of an Arrow IPC stream (datasets' .arrow) or file."""
    sample = Sample()
    remote.seek(0)
    if stream:
        reader = ipc.open_stream(remote)
        batch, batches = reader.read_next_batch(), None
    else:
        remote.prefetch_tail()
        reader = ipc.open_file(remote)
        batches = reader.num_record_batches
        batch = reader.get_batch(0) if batches else None
    schema = reader.schema
    sample.columns = list(schema.names)
    sample.shape = detect_shape(sample.columns, names)
    if batch is None:
        sample.rows, sample.rows_exact, sample.complete = 0, True, True
        return sample
    # A stream whose first batch ends within 8 bytes of the end holds only that batch (8 = end marker).
    if batches == 1 or (stream and remote.size - remote.tell() <= 8):
        sample.rows, sample.rows_exact = batch.num_rows, True
    else:
        sample.rows = round(batch.num_rows * remote.size / max(remote.tell(), 1))  # by bytes
    sample.complete = sample.rows_exact
    if sample.shape.kind is not None:
        sample.findings.extend(check_arrow_type(sample.shape, schema, names))
    sample.records = pa.Table.from_batches([batch]).slice(0, sample_rows).to_pylist()
    sample.locations = [f"row {i + 1}" for i in range(len(sample.records))]
    return sample


def _text(data: bytes, complete: bool, sample: Sample, whole_lines: bool = True) -> tuple[str, int] | None:
    """Decode the bytes read; for a cut-off download drop the half line (and half character) at the end."""
    if not complete and whole_lines:
        data = data[: data.rfind(b"\n") + 1]
    try:
        return data.decode("utf-8-sig"), len(data)
    except UnicodeDecodeError as exc:
        if not complete and exc.start > len(data) - 4:  # a character split by the byte cap
            return data[: exc.start].decode("utf-8-sig"), exc.start
        line = data[: exc.start].count(b"\n") + 1
        sample.findings.append(
            Finding("error", "encoding", f"line {line}: not UTF-8 text ({exc.reason}).", f"line {line}")
        )
        return None


def _count(sample: Sample, total: int, used: int, size: int | None, complete: bool) -> None:
    """Exact row count for a file read whole, else an estimate from the bytes per record so far."""
    sample.complete = complete
    if complete:
        sample.rows, sample.rows_exact = total, True
    elif size and used and total:
        sample.rows = round(total * size / used)


def _keep(sample: Sample, record: dict[str, Any], location: str, sample_rows: int) -> None:
    if len(sample.records) < sample_rows:
        sample.records.append(record)
        sample.locations.append(location)


def _error(sample: Sample, code: str, location: str, message: str) -> None:
    sample.findings.append(Finding("error", code, f"{location}: {message}", location))


def read_jsonl(data: bytes, complete: bool, size: int | None, sample_rows: int) -> Sample:
    """JSON Lines: every line an object; problems carry line numbers."""
    sample = Sample()
    decoded = _text(data, complete, sample)
    if decoded is None:
        return sample
    text, used = decoded
    columns: dict[str, None] = {}
    total = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        total += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            _error(sample, "json", f"line {number}", f"not valid JSON ({exc.msg} at column {exc.colno}).")
            continue
        if not isinstance(value, dict):
            _error(sample, "json", f"line {number}", f"a JSON {type(value).__name__}, not an object.")
            continue
        columns.update(dict.fromkeys(value))
        _keep(sample, value, f"line {number}", sample_rows)
    sample.columns = list(columns)
    _count(sample, total, used, size, complete)
    return sample


def read_json_array(data: bytes, complete: bool, size: int | None, sample_rows: int) -> Sample:
    """A JSON array of objects, parsed element by element so a cut-off file still yields its first records."""
    sample = Sample()
    decoded = _text(data, complete, sample, whole_lines=False)
    if decoded is None:
        return sample
    text = decoded[0]
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    columns: dict[str, None] = {}
    total = used = 0
    finished = False
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position < len(text) and text[position] == "]":
            finished = True
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            if complete:  # in a cut-off file this is only where the download stopped
                _error(sample, "json", f"line {exc.lineno}", f"not valid JSON ({exc.msg}).")
            break
        total += 1
        if not isinstance(value, dict):
            _error(sample, "json", f"record {total}", f"a JSON {type(value).__name__}, not an object.")
            value = {}
        columns.update(dict.fromkeys(value))
        _keep(sample, value, f"record {total}", sample_rows)
        used = position
    sample.columns = list(columns)
    _count(sample, total, len(text[:used].encode()), size, complete and finished)
    return sample


def read_csv(data: bytes, complete: bool, size: int | None, sample_rows: int) -> Sample:
    """CSV with a header row, as datasets' csv builder (pandas) reads it; every value is text."""
    sample = Sample()
    decoded = _text(data, complete, sample)
    if decoded is None:
        return sample
    text, used = decoded
    rows = list(csv.reader(io.StringIO(text)))
    if not complete and len(rows) > 1:
        rows = rows[:-1]  # the last line read may be half a record (quoted newlines)
    if not rows:
        sample.findings.append(Finding("error", "csv", "The file has no header row."))
        return sample
    header, rows = rows[0], rows[1:]
    sample.columns = header
    for number, row in enumerate(rows, start=1):
        if len(row) > len(header):
            _error(sample, "csv", f"row {number}", f"{len(row)} fields but the header has {len(header)}.")
        _keep(sample, dict(zip(header, row, strict=False)), f"row {number}", sample_rows)
    _count(sample, len(rows), used, size, complete)
    return sample


TEXT_READERS: dict[str, Callable[[bytes, bool, int | None, int], Sample]] = {
    "jsonl": read_jsonl,
    "json": read_json_array,
    "csv": read_csv,
}


def human(size: int | None) -> str:
    if size is None:
        return "an unknown size"
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
