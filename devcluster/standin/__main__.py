"""All three stand-ins for the sandbox in one process: models (one per Ready Workspace), kubelet (logs) and KAITO."""

#     python -m devcluster.standin --kubeconfig "$(python -m devcluster kubeconfig)" [--token-delay 0.02]
#
# Adds 10.255.0.1/32 to lo when it may (root) and removes it on exit if it added it. Each Ready inference Workspace
# gets its own model stand-in on 10.255.0.1, ports 5000, 5001, ... (KAITO's is 5000), and its Service and Endpoints
# point there, so the apiserver's service proxy reaches it. Without the right to add the address the stand-ins listen
# on 127.0.0.1 (free ports) behind a router on 127.0.0.1:5000/<namespace>/<name>/, and the launcher prints the
# KAITO_INFERENCE_URL template the portal needs. --shared-model keeps the old single model behind every Workspace.
# The kubelet stand-in listens on 127.0.0.1:10250.

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from contextlib import ExitStack

from kubernetes import client, config

from devcluster.kaito_standin import KaitoStandin
from devcluster.kubelet_standin import KubeletStandin
from devcluster.model_standin import DEFAULT_MODEL, ModelStandin
from devcluster.standin import localaddr
from devcluster.standin.models import PORT_COUNT, ModelFleet
from devcluster.standin.plays import Settings

log = logging.getLogger("kaito-standin")
PROXY_OK = "portal: leave KAITO_INFERENCE_URL empty; the apiserver's service proxy reaches the model"  # sandbox.py


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devcluster.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--address", default=localaddr.DEFAULT_ADDRESS, help="extra address on lo for the models")
    parser.add_argument(
        "--model-port", type=int, default=5000,
        help=f"first model port: Workspaces take the first free of {PORT_COUNT} (0 = any free port); without the "
        "extra address the router's port; with --shared-model the one model's port",
    )  # fmt: skip
    parser.add_argument("--shared-model", action="store_true", help="one model stand-in behind every Workspace")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name of the --shared-model stand-in")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds per streamed token (default 0.02)")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="KAITO's 429 queue limiter in every model")
    parser.add_argument("--kubelet-port", type=int, default=10250, help="0 picks a free port")
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--line-seconds", type=float, default=1.0, help="a new tuning log line every N seconds")
    parser.add_argument("--selector", default="", help="only Workspaces with these labels")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [kaito-standin] %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    def api() -> client.ApiClient:
        return config.new_client_from_config(config_file=args.kubeconfig)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with ExitStack() as stack:
        host = args.address
        try:
            stack.enter_context(localaddr.local_address(host))
        except localaddr.LocalAddressError as err:
            host = "127.0.0.1"
            print(
                f"[kaito-standin] {err}; the apiserver's service proxy cannot reach the models without it",
                file=sys.stderr,
            )
        settings, url = Settings(step_seconds=args.step_seconds), ""
        if args.shared_model:
            model = ModelStandin(host=host, port=args.model_port, model=args.model, token_delay=args.token_delay,
                                 max_num_seqs=args.max_num_seqs)  # fmt: skip
            stack.enter_context(model)
            settings.model_endpoint = (host, model.port)
            where, url = (
                f"model stand-in {model.url} (Endpoints of every Ready inference Workspace point here)",
                model.url,
            )
        else:
            fleet = ModelFleet(host, first_port=0 if host == "127.0.0.1" else args.model_port,
                               token_delay=args.token_delay, max_num_seqs=args.max_num_seqs)  # fmt: skip
            settings.models = stack.enter_context(fleet)
            where = f"model stand-ins on http://{host}, one per Ready inference Workspace, "
            if host == "127.0.0.1":
                url = fleet.start_router(args.model_port).template
                where += f"at {url} (free ports behind a router)"
                print(
                    "[kaito-standin] each Ready inference Workspace still gets its own model stand-in; the portal "
                    f"reaches it with KAITO_INFERENCE_URL={url} (it fills in the namespace and name)",
                    file=sys.stderr,
                )
            else:
                first = "any free port" if args.model_port == 0 else f"ports from {args.model_port}"
                where += f"{first} (its Service and Endpoints point there)"
        kubelet = stack.enter_context(KubeletStandin(api, port=args.kubelet_port, line_seconds=args.line_seconds))
        settings.kubelet = kubelet.endpoint
        stack.enter_context(KaitoStandin(api, settings, selector=args.selector))
        print(where, flush=True)
        print(f"kubelet stand-in https://{kubelet.host}:{kubelet.port} (the fake Nodes point here)", flush=True)
        print(f"portal: KAITO_INFERENCE_URL={url}" if host == "127.0.0.1" else PROXY_OK, flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
