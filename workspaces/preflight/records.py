"""Record shapes KAITO's trainer accepts (messages, or prompt + completion), per-row problems, token estimates."""

from __future__ import annotations

import base64
import datetime
import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

ROLES = ("system", "user", "assistant", "tool")
MAX_ROW_FINDINGS = 20
PREVIEW_CHARS = 300
CHARS_PER_TOKEN = 4  # rough for English text with BPE tokenizers; good enough to flag outliers
TOKENS_PER_TURN = 4  # chat-template markers around each turn


@dataclass
class Finding:
    """One result line; `severity` is "error" (can never work) or "warning" (check it, or could not check)."""

    severity: str
    code: str
    message: str
    location: str = ""  # "row 3", "line 7", "record 2"; empty for file-level findings

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Findings:
    """What a report dataclass with a `findings` list shares: `ok`, `add`, and its JSON form."""

    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def add(self, severity: str, code: str, message: str) -> None:
        self.findings.append(Finding(severity, code, message))

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "findings"}
        return {**data, "findings": [f.to_dict() for f in self.findings], "ok": self.ok}


@dataclass(frozen=True)
class Columns:
    """Column names, as DatasetConfig can rename them (messages_column, context_column, response_column)."""

    messages: str = "messages"
    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"

    @classmethod
    def from_dataset_config(cls, config: Mapping[str, Any] | None) -> Columns:
        """Columns named by a training_config.yaml DatasetConfig section (missing keys keep defaults)."""
        config = config or {}
        prompt = config.get("context_column") or cls.prompt
        # response_column is the completion when a context column is set, else the plain text column.
        response = config.get("response_column")
        return cls(
            messages=config.get("messages_column") or cls.messages,
            prompt=prompt,
            completion=response if response and config.get("context_column") else cls.completion,
            text=response if response and not config.get("context_column") else cls.text,
        )


@dataclass
class Shape:
    kind: str | None  # "messages" | "prompt_completion" | "text" | None
    used: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def detect_shape(columns: Sequence[str], names: Columns) -> Shape:
    """Which accepted record shape the columns have; an error naming found and expected columns if none."""
    if names.messages in columns:
        return Shape("messages", [names.messages])
    if names.prompt in columns and names.completion in columns:
        return Shape("prompt_completion", [names.prompt, names.completion])
    if names.text in columns:
        note = Finding(
            "warning",
            "plain-text",
            f"Only a '{names.text}' column: the model is trained on it as plain text, with no chat "
            f"structure. For instruction tuning use '{names.messages}' or '{names.prompt}' + "
            f"'{names.completion}'.",
        )
        return Shape("text", [names.text], [note])
    found = ", ".join(repr(c) for c in columns) or "none"
    return Shape(
        None,
        findings=[
            Finding(
                "error",
                "wrong-columns",
                f"Columns found: {found}. Expected '{names.messages}' (a list of {{role, content}} turns) "
                f"or '{names.prompt}' and '{names.completion}'.",
            )
        ],
    )


def check_arrow_type(shape: Shape, schema: pa.Schema, names: Columns) -> list[Finding]:
    """File-level type problems visible in a parquet/arrow schema (every row would have them)."""
    problems: list[Finding] = []
    for column in shape.used:
        kind = schema.field(column).type
        if shape.kind != "messages":
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_turn_list(kind)):
                problems.append(Finding("error", "column-type", f"Column '{column}' holds {kind}, not text."))
            continue
        if not _is_list(kind):
            problems.append(
                Finding(
                    "error",
                    "column-type",
                    f"Column '{column}' holds {kind}; it must be a list of {{role, content}} turns.",
                )
            )
        elif not pa.types.is_struct(kind.value_type):
            problems.append(
                Finding("error", "column-type", f"'{column}' is a list of {kind.value_type}, not of turns.")
            )
        else:
            fields = [kind.value_type.field(i).name for i in range(kind.value_type.num_fields)]
            missing = [f for f in ("role", "content") if f not in fields]
            if missing:
                problems.append(
                    Finding(
                        "error",
                        "column-type",
                        f"The turns in '{column}' have no {' or '.join(repr(m) for m in missing)} field "
                        f"(fields: {', '.join(fields)}).",
                    )
                )
    return problems


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _is_turn_list(kind: pa.DataType) -> bool:
    return _is_list(kind) and pa.types.is_struct(kind.value_type)


def check_record(record: Mapping[str, Any], shape: Shape, names: Columns) -> list[tuple[str, str, str]]:
    """Problems of one record as (severity, code, message) without the location."""
    if shape.kind == "messages":
        return _check_messages(record.get(names.messages), names.messages)
    problems = []
    for column in shape.used:
        value = record.get(column)
        if value is None or value == "":
            problems.append(("warning", "empty-value", f"'{column}' is empty"))
        elif isinstance(value, list):
            problems.extend(_check_messages(value, column, need_user=False))  # conversational prompt/completion
        elif not isinstance(value, str):
            problems.append(("error", "value-type", f"'{column}' is {type(value).__name__}, not text"))
    return problems


def _check_messages(turns: Any, column: str, need_user: bool = True) -> list[tuple[str, str, str]]:
    if turns is None:
        return [("error", "missing-value", f"'{column}' is missing")]
    if isinstance(turns, str):
        return [("error", "value-type", f"'{column}' is text, not a list of turns")]
    if not isinstance(turns, list) or not turns:
        return [("error", "value-type", f"'{column}' is not a non-empty list of turns")]
    problems = []
    roles = set()
    for i, turn in enumerate(turns):
        where = f"{column}[{i}]"
        if not isinstance(turn, dict):
            problems.append(("error", "turn-type", f"{where} is not an object with role and content"))
            continue
        role, content = turn.get("role"), turn.get("content")
        if "role" not in turn or role is None:
            problems.append(("error", "turn-role", f"{where} has no 'role'"))
        elif role not in ROLES:
            problems.append(("warning", "turn-role", f"{where} has role {role!r}, not one of {', '.join(ROLES)}"))
        roles.add(role)
        if "content" not in turn or (content is None and not turn.get("tool_calls")):
            problems.append(("error", "turn-content", f"{where} has no 'content'"))
        elif content is not None and not isinstance(content, (str, list)):
            problems.append(("error", "turn-content", f"{where} content is {type(content).__name__}, not text"))
    wanted = ("user", "assistant") if need_user else ("assistant",)
    for role in wanted:
        if role not in roles:
            problems.append(("warning", "turns", f"no {role} turn"))
    return problems


def check_records(
    records: Sequence[Mapping[str, Any]], locations: Sequence[str], shape: Shape, names: Columns
) -> list[Finding]:
    """Per-record findings, at most MAX_ROW_FINDINGS of them plus one line counting the rest."""
    findings: list[Finding] = []
    extra_rows = 0
    for record, location in zip(records, locations, strict=True):
        problems = check_record(record, shape, names)
        if problems and len(findings) >= MAX_ROW_FINDINGS:
            extra_rows += 1
            continue
        for severity, code, message in problems:
            findings.append(Finding(severity, code, f"{location}: {message}", location))
    if extra_rows:
        worst = "error" if any(f.severity == "error" for f in findings) else "warning"
        findings.append(Finding(worst, "more-rows", f"… and {extra_rows} more rows with problems."))
    return findings


def estimate_tokens(record: Mapping[str, Any], shape: Shape) -> int:
    """chars/4 over the text the trainer sees, plus a few tokens of chat markup per turn."""
    chars = turns = 0
    for column in shape.used:
        value = record.get(column)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            for turn in value:
                if isinstance(turn, dict):
                    turns += 1
                    chars += len(str(turn.get("content") or ""))
    return chars // CHARS_PER_TOKEN + TOKENS_PER_TURN * turns


def token_summary(
    records: Sequence[Mapping[str, Any]], shape: Shape, context_length: int | None
) -> tuple[dict[str, Any] | None, list[Finding]]:
    """min/avg/max estimated tokens per record, and a warning when records exceed the context length."""
    if not records or shape.kind is None:
        return None, []
    counts = [estimate_tokens(r, shape) for r in records]
    over = sum(1 for c in counts if context_length and c > context_length)
    summary = {
        "method": f"characters / {CHARS_PER_TOKEN} + {TOKENS_PER_TURN} per turn",
        "records": len(counts),
        "min": min(counts),
        "avg": round(sum(counts) / len(counts)),
        "max": max(counts),
        "context_length": context_length,
        "over_context": over,
    }
    findings = []
    if over:
        findings.append(
            Finding(
                "warning",
                "long-records",
                f"{over} of {len(counts)} checked records are estimated above the model's context length of "
                f"{context_length} tokens (longest ≈ {max(counts)}); they will be truncated in training.",
            )
        )
    return summary, findings


def plain(value: Any, max_chars: int = PREVIEW_CHARS, depth: int = 0) -> Any:
    """A JSON-serialisable copy with long strings and lists cut (not escaped: the UI escapes)."""
    if isinstance(value, str):
        return value if len(value) <= max_chars else value[:max_chars] + "…"
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes: {base64.b64encode(bytes(value[:24])).decode()}…>"
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if depth > 5:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): plain(v, max_chars, depth + 1) for k, v in value.items()}
    if isinstance(value, Iterable):
        items = list(value)
        cut = [plain(v, max_chars, depth + 1) for v in items[:20]]
        return cut + ([f"… {len(items) - 20} more"] if len(items) > 20 else [])
    return str(value)[:max_chars]
