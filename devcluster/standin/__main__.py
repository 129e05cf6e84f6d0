"""All three stand-ins for the sandbox in one process: model (behind the Service), kubelet (pod logs) and KAITO."""

#     python -m devcluster.standin --kubeconfig "$(python -m devcluster kubeconfig)"
#
# Adds 10.255.0.1/32 to lo when it may (root) and removes it on exit if it added it; the model stand-in listens on
# 10.255.0.1:5000, so the apiserver's service proxy reaches it. Without the right to add the address it falls back to
# 127.0.0.1:5000 and prints the KAITO_INFERENCE_URL the portal needs. The kubelet stand-in listens on 127.0.0.1:10250.

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
from devcluster.model_standin import ModelStandin
from devcluster.standin import localaddr
from devcluster.standin.plays import Settings

log = logging.getLogger("kaito-standin")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--address", default=localaddr.DEFAULT_ADDRESS, help="extra address on lo for the model")
    parser.add_argument("--model-port", type=int, default=5000, help="the model's port (KAITO's is 5000; 0 = free)")
    parser.add_argument("--model", default="phi-3-mini-128k-instruct", help="served model name")
    parser.add_argument("--kubelet-port", type=int, default=10250, help="0 picks a free port")
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--line-seconds", type=float, default=1.0, help="a new tuning log line every N seconds")
    parser.add_argument("--selector", default="", help="only Workspaces with these labels")
    args = parser.parse_args(argv)
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
            print(f"[kaito-standin] {err}; the service proxy cannot reach the model without it", file=sys.stderr)
        model = stack.enter_context(ModelStandin(host=host, port=args.model_port, model=args.model, token_delay=0.02))
        kubelet = stack.enter_context(KubeletStandin(api, port=args.kubelet_port, line_seconds=args.line_seconds))
        settings = Settings(step_seconds=args.step_seconds, model_endpoint=(host, model.port), kubelet=kubelet.endpoint)
        stack.enter_context(KaitoStandin(api, settings, selector=args.selector))
        print(f"model stand-in {model.url} (Endpoints of every Ready inference Workspace point here)", flush=True)
        print(f"kubelet stand-in https://{kubelet.host}:{kubelet.port} (the fake Nodes point here)", flush=True)
        if host == "127.0.0.1":
            print(f"portal: KAITO_INFERENCE_URL={model.url}", flush=True)
        else:
            print(
                "portal: leave KAITO_INFERENCE_URL empty; the apiserver's service proxy reaches the model", flush=True
            )
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
