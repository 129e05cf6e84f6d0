"""Dataset files made in the tests: dolly-15k-style parquet, JSONL, CSV, Arrow, and lazily padded huge parquet."""

import io
import json

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

SYSTEM = "You are a helpful assistant. Answer concisely."


def dolly_messages(n, start=0):
    """Rows shaped like philschmid/dolly-15k-oai-style: system, user, assistant turns."""
    return [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Question {i}: when did the <b>Virgin Australia</b> airline start?"},
            {"role": "assistant", "content": f"Answer {i}: it started operating on 31 August 2000. " * 3},
        ]
        for i in range(start, start + n)
    ]


MESSAGES_TYPE = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))


def parquet_bytes(table, **kwargs):
    sink = io.BytesIO()
    pq.write_table(table, sink, **kwargs)
    return sink.getvalue()


def dolly_parquet(n=300, **kwargs):
    table = pa.table({"messages": pa.array(dolly_messages(n), type=MESSAGES_TYPE)})
    return parquet_bytes(table, **kwargs)


def jsonl(records):
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def prompt_completion(n):
    return [{"prompt": f"Translate to French: cat number {i}", "completion": f"chat numéro {i}"} for i in range(n)]


def arrow_stream(table):
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def arrow_file(table, max_chunksize=None):
    sink = io.BytesIO()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    return sink.getvalue()


class PaddedParquet:
    """A valid parquet file of `size` bytes: real row groups, then zeros, then the footer.

    Footer offsets are absolute, so readers never notice the gap; the bytes are produced on demand.
    """

    def __init__(self, data, size):
        footer_len = int.from_bytes(data[-8:-4], "little")
        self.body = data[: len(data) - footer_len - 8]
        self.tail = data[len(data) - footer_len - 8 :]
        self.size = size

    def __call__(self, offset, length):
        out = bytearray()
        tail_start = self.size - len(self.tail)
        end = offset + length
        if offset < len(self.body):
            out += self.body[offset : min(end, len(self.body))]
        pad_from, pad_to = max(offset, len(self.body)), min(end, tail_start)
        if pad_to > pad_from:
            out += bytes(pad_to - pad_from)
        if end > tail_start:
            out += self.tail[max(offset, tail_start) - tail_start : end - tail_start]
        return bytes(out)
