"""What the model stand-in answers, and in which bodies (vLLM / Transformers OpenAI API, legacy /chat); pure, no I/O."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_MODEL = "phi-3-mini-128k-instruct"
Runtime = Literal["vllm", "transformers"]
# `transformers serve` (KAITO >= 0.9 Transformers runtime) answers 422 to these OpenAI fields.
TRANSFORMERS_UNSUPPORTED = {
    "audio", "function_call", "functions", "logprobs", "max_completion_tokens", "metadata", "modalities", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort", "response_format",
    "service_tier", "store", "stream_options", "tool_choice", "top_logprobs", "user", "web_search_options",
}  # fmt: skip
_TOKEN = re.compile(r"\s*\S+\s*")


def tokenize(text: str) -> list[str]:
    """Words with their following whitespace: crude, but usage counts are honest about this tokenisation."""
    return _TOKEN.findall(text) or ([text] if text else [])


def message_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def dumps(data: Any) -> bytes:
    # Compact and non-ASCII kept raw, like vLLM's pydantic model_dump_json (U+2028 reaches clients unescaped).
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def loads(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def sse(data: Any) -> bytes:
    return b"data: " + dumps(data) + b"\n\n"


def openai_error_body(message: str, kind: str, code: int | str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def answer_text(model: str, model_id: str, said: str) -> str:
    """The deterministic answer of `model_id` (`model` or an adapter on it): who answers, and an echo of `said`."""
    adapter = model_id != model
    who = f"{model_id} (a LoRA adapter on {model})" if adapter else model_id
    text = (
        f'This is the KAITO Portal model stand-in for {who} (not a real model). You said: "{said}". '
        "The same prompt always gives the same answer, streamed one word at a time."
    )
    return f"[adapter {model_id}] {text}" if adapter else text


def reasoning_text(said: str) -> str:
    return f"The user wrote {len(tokenize(said))} words. A stand-in cannot think, so it echoes them. "


@dataclass(frozen=True)
class Reply:
    """A whole answer in one JSON body, sent after `tokens` generated tokens' worth of delay."""

    body: Any
    status: int = 200
    tokens: int = 0


@dataclass(frozen=True)
class ChatPlan:
    """A valid chat completion request, answered: the tokens to send and how the answer ends."""

    model_id: str
    tokens: list[str]
    n_thinking: int  # the first tokens are reasoning_content
    finish: str
    usage: dict[str, int]
    stream: bool
    include_usage: bool


def bad_request(runtime: Runtime, message: str) -> Reply:
    if runtime == "transformers":
        return Reply({"detail": message}, 422)
    return Reply(openai_error_body(message, "Bad Request", 400), 400)


def plan_chat(
    body: Any, *, runtime: Runtime, model: str, served: Sequence[str], max_model_len: int, reasoning: bool
) -> ChatPlan | Reply:
    """Check a POST /v1/chat/completions body in the order the real server does, and answer it."""
    if not isinstance(body, dict):
        return bad_request(runtime, "[{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error'}]")
    missing = [key for key in ("messages", "model") if key not in body]
    if missing:  # pydantic's words, abbreviated
        problems = ", ".join(f"{{'type': 'missing', 'loc': ('body', '{k}'), 'msg': 'Field required'}}" for k in missing)
        return bad_request(runtime, f"{len(missing)} validation error(s): [{problems}]")
    messages = body["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        return bad_request(runtime, "messages: Input should be a valid list of messages with a role")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        return bad_request(runtime, "max_tokens: Input should be a positive integer")
    stream = bool(body.get("stream"))
    if runtime == "transformers" and (unused := set(body) & TRANSFORMERS_UNSUPPORTED):
        return Reply({"detail": f"Unsupported fields in the request: {unused}"}, 422)
    if body.get("stream_options") is not None and not stream:
        return bad_request(runtime, "Stream options can only be defined when `stream=True`.")
    if runtime == "transformers" and messages and messages[-1].get("role") == "assistant":
        return Reply({})  # transformers serve: "tiny-agents sends requests ending with assistant message"
    model_id = body["model"]
    if model_id not in served:
        return Reply(openai_error_body(f"The model `{model_id}` does not exist.", "NotFoundError", 404), 404)
    said = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt_tokens = sum(len(tokenize(message_text(m.get("content")))) for m in messages)
    if prompt_tokens + (max_tokens or 0) > max_model_len:
        return bad_request(
            runtime,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + (max_tokens or 0)} tokens ({prompt_tokens} in the messages, {max_tokens or 0} "
            "in the completion). Please reduce the length of the messages or completion.",
        )
    thinking = tokenize(reasoning_text(said)) if reasoning else []
    tokens = thinking + tokenize(answer_text(model, model_id, said))
    finish = "stop"
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    usage = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + len(tokens),
        "completion_tokens": len(tokens),
    }
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatPlan(model_id, tokens, min(len(thinking), len(tokens)), finish, usage, stream, include_usage)


def completion_body(runtime: Runtime, plan: ChatPlan) -> dict[str, Any]:
    """The non-streamed chat.completion, field for field as each runtime serialises it."""
    content, reasoning = "".join(plan.tokens[plan.n_thinking :]), "".join(plan.tokens[: plan.n_thinking]) or None
    created, chat_id, finish, usage = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}", plan.finish, plan.usage
    if runtime == "transformers":  # ChatCompletion.model_dump(exclude_none=True)
        choice = {"finish_reason": finish, "index": 0, "message": {"content": content, "role": "assistant"}}
        return {"id": chat_id, "choices": [choice], "created": created, "model": plan.model_id,
                "object": "chat.completion", "usage": usage}  # fmt: skip
    message = {"annotations": None, "audio": None, "content": content, "function_call": None,
               "reasoning_content": reasoning, "refusal": None, "role": "assistant", "tool_calls": []}  # fmt: skip
    choice = {"finish_reason": finish, "index": 0, "logprobs": None, "message": message, "stop_reason": None}
    return {
        "choices": [choice], "created": created, "id": chat_id, "kv_transfer_params": None,
        "model": plan.model_id, "object": "chat.completion", "prompt_logprobs": None, "service_tier": None,
        "system_fingerprint": None, "usage": {**usage, "prompt_tokens_details": None},
    }  # fmt: skip


def stream_events(runtime: Runtime, plan: ChatPlan) -> tuple[bytes, list[bytes], list[bytes]]:
    """The server-sent events of a streamed answer: the opening one, one per token, the closing ones."""
    vllm = runtime == "vllm"
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": plan.model_id,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, extra: dict[str, Any] | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if vllm:
            choice.update(logprobs=None, finish_reason=finish_reason)
            if finish_reason:
                choice["stop_reason"] = None
        elif finish_reason:
            choice["finish_reason"] = finish_reason
        return sse({**head, "choices": [choice], **(extra or {})})

    opening = chunk({"role": "assistant", "content": ""} if vllm else {"role": "assistant"})
    per_token = []
    for i, token in enumerate(plan.tokens):
        last = i == len(plan.tokens) - 1
        delta = {"reasoning_content": token} if i < plan.n_thinking else {"content": token}
        extra = {"usage": plan.usage} if last and not vllm else None  # transformers: usage on the final chunk
        per_token.append(chunk(delta, plan.finish if last and vllm else None, extra))
    if not vllm:  # transformers serve ends the stream without [DONE]
        return opening, per_token, [chunk({}, plan.finish, {"usage": plan.usage})]
    closing = [sse({**head, "choices": [], "usage": plan.usage})] if plan.include_usage else []
    return opening, per_token, [*closing, b"data: [DONE]\n\n"]


def model_list(runtime: Runtime, model: str, served: Sequence[str], created: int, max_model_len: int) -> dict[str, Any]:
    """GET /v1/models: the Transformers runtime's one model, or vLLM's cards of the model and its adapters."""
    if runtime == "transformers":
        return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "kaito"}]}
    cards = []
    for model_id in served:
        adapter = model_id != model
        cards.append({
            "id": model_id, "object": "model", "created": created, "owned_by": "vllm",
            "root": f"/mnt/adapter/{model_id}" if adapter else model,
            "parent": model if adapter else None,
            "max_model_len": None if adapter else max_model_len,
            "permission": [{
                "id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission", "created": created,
                "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                "organization": "*", "group": None, "is_blocking": False,
            }],
        })  # fmt: skip
    return {"object": "list", "data": cards}


def legacy_reply(body: Any, model: str) -> Reply:
    """POST /chat of KAITO <= 0.8 (a transformers pipeline behind FastAPI)."""
    if not isinstance(body, dict):
        return Reply({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]}, 422)
    for key, kind in (("prompt", str), ("generate_kwargs", dict), ("return_full_text", bool)):
        if body.get(key) is not None and not isinstance(body[key], kind):
            name = kind.__name__
            problem = {"type": f"{name}_type", "loc": ["body", key], "msg": f"Input should be a valid {name}"}
            return Reply({"detail": [problem]}, 422)
    prompt = body.get("prompt")
    if not prompt:
        return Reply({"detail": "Text generation parameter prompt required"}, 400)
    kwargs = body.get("generate_kwargs") or {}
    tokens = tokenize(answer_text(model, model, prompt))
    # transformers: max_new_tokens wins; else max_length (default 200) counts the prompt too.
    limit = kwargs.get("max_new_tokens")
    if not isinstance(limit, int):
        limit = max(0, int(kwargs.get("max_length", 200)) - len(tokenize(prompt)))
    tokens = tokens[:limit]
    full = body.get("return_full_text", True)  # the pipeline's default repeats the prompt first
    return Reply({"Result": (prompt if full else "") + "".join(tokens)}, tokens=len(tokens))
