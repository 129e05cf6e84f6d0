"""The model stand-in's command line: python -m devcluster.model_standin --port 8001 --token-delay 0.02."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from devcluster.model_standin.answers import DEFAULT_MODEL
from devcluster.model_standin.server import ModelStandin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.model_standin", description="KAITO model server stand-in."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--protocol", choices=["openai", "legacy"], default="openai")
    parser.add_argument("--runtime", choices=["vllm", "transformers"], default="vllm", help="for --protocol openai")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    parser.add_argument("--adapter", action="append", default=[], help="LoRA adapter id (repeatable; vLLM only)")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds per streamed token")
    parser.add_argument("--max-model-len", type=int, default=131072)
    parser.add_argument("--max-num-seqs", type=int, default=None, help="enable KAITO's 429 queue limiter")
    parser.add_argument("--reasoning", action="store_true", help="stream reasoning_content before the answer")
    args = parser.parse_args(argv)
    standin = ModelStandin(
        protocol=args.protocol, runtime=args.runtime, model=args.model, adapters=args.adapter,
        token_delay=args.token_delay, max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        reasoning=args.reasoning, host=args.host, port=args.port,
    )  # fmt: skip

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with standin:
            print(f"KAITO model stand-in ({args.protocol}) for {args.model} listening on {standin.url}", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
