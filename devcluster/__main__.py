"""CLI: python -m devcluster build | up | down | status | kubeconfig."""

from __future__ import annotations

import argparse
import json
import sys

from devcluster import sandbox
from devcluster.build import BuildError, ensure_binaries


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command and return the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build kube-apiserver and etcd into the cache if missing")
    build.add_argument("--force", action="store_true", help="rebuild even if the binaries exist")
    sub.add_parser("up", help="start (or reuse) the detached sandbox; prints the kubeconfig path")
    down = sub.add_parser("down", help="stop the sandbox and remove its folders")
    down.add_argument("--keep-data", action="store_true", help="keep PKI and etcd data for the next `up`")
    status = sub.add_parser("status", help="say whether the sandbox runs (exit 0) or not (exit 3)")
    status.add_argument("--json", action="store_true", help="print the recorded state as JSON")
    sub.add_parser("kubeconfig", help="print the sandbox's kubeconfig path (exit 1 if it does not run)")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "build":
            print(ensure_binaries(force=args.force))
        elif args.cmd == "up":
            print(sandbox.up()["kubeconfig"])
        elif args.cmd == "down":
            was = sandbox.down(keep_data=args.keep_data)
            kept = " (data kept)" if args.keep_data else ""
            print(f"sandbox stopped{kept}" if was else f"no sandbox was running{kept}", file=sys.stderr)
        elif args.cmd == "status":
            return _status(args.json)
        elif args.cmd == "kubeconfig":
            running, state = sandbox.status()
            if not running or state is None:
                print("the sandbox does not run; start it with `python -m devcluster up`", file=sys.stderr)
                return 1
            print(state["kubeconfig"])
    except BuildError as err:
        print(f"[devcluster] build failed: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # ControlPlaneError and CRD failures carry the log tail
        print(f"[devcluster] {args.cmd} failed: {err}", file=sys.stderr)
        return 1
    return 0


def _status(as_json: bool) -> int:
    running, state = sandbox.status()
    if as_json:
        print(json.dumps({"running": running, "state": state}, indent=2))
    elif running and state:
        print(
            f"running: {state['server']}\nkubeconfig: {state['kubeconfig']}\n"
            f"pids: {state['pids']}\ndata: {state['work_dir']}\nlogs: {state['logs']}"
        )
    else:
        where = f" (state kept in {sandbox.state_dir()})" if state else ""
        print(f"not running{where}")
    return 0 if running else 3


if __name__ == "__main__":
    sys.exit(main())
