"""`manage.py serve`: the web server and the reconciler in one process; the local sandbox if no cluster is set."""

import os
import threading
from argparse import ArgumentParser

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal import sandbox as portal_sandbox
from workspaces.cluster import ClusterError
from workspaces.leader import LeaderElector
from workspaces.reconciler import Reconciler
from workspaces.services.clusters import get_cluster, set_cluster


class Command(BaseCommand):
    help = (
        "Serve the portal with its reconciler in the same process (so the in-memory channel layer carries live "
        "updates). Without KUBECONFIG or AKS settings it starts the local sandbox: a real kube-apiserver with "
        "KAITO's CRDs, and stand-ins for KAITO's controller and the models."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--no-reconciler", action="store_true", help="Run `manage.py reconcile` separately.")

    def handle(self, *args: object, addrport: str, no_reconciler: bool, **options: object) -> None:
        configured = settings.KUBECONFIG or settings.AKS_CLUSTER_NAME or os.environ.get("KUBERNETES_SERVICE_HOST")
        sandbox = None
        if configured:
            source = f"KUBECONFIG={settings.KUBECONFIG}" if settings.KUBECONFIG else "the AKS / in-cluster settings"
            self.stdout.write(f"Using the cluster from {source}.")
        else:
            sandbox = self._start_sandbox(addrport)
        reconciler = None
        try:
            if not no_reconciler:
                reconciler = self._start_reconciler()
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if reconciler is not None:
                reconciler.stop()
            if sandbox is not None:
                sandbox.stop()

    def _start_sandbox(self, addrport: str) -> portal_sandbox.Sandbox:
        self.stdout.write(
            "No KUBECONFIG set: using the local SANDBOX cluster (a real kube-apiserver + etcd with KAITO v0.12's "
            "CRDs, built from Go modules; KAITO's controller and the models are stand-ins, no GPU is used)."
        )
        sandbox = portal_sandbox.start_sandbox()
        settings.KUBECONFIG = os.environ["KUBECONFIG"] = sandbox.kubeconfig
        settings.SANDBOX = True
        set_cluster(None)
        cluster = get_cluster()
        cluster.ensure_namespace(portal_sandbox.SANDBOX_NAMESPACE)
        inference_url = portal_sandbox.start_standins(sandbox)
        if inference_url:
            settings.KAITO_INFERENCE_URL = inference_url
            set_cluster(None)
            self.stdout.write(
                f"Models are reached at {inference_url} (not through the API server: not running as root)."
            )
        team, approver, password = portal_sandbox.seed_sandbox()
        self.stdout.write(f"Sandbox cluster at {cluster.server} (kubeconfig {sandbox.kubeconfig}).")
        self.stdout.write(
            f"Team {team.name!r} (namespace {team.namespace}): the admin requests; sign in as {approver!r} with "
            f"password {password!r} to approve. Stand-in logs are in .run/. `make sandbox-down` removes the cluster."
        )
        return sandbox

    def _start_reconciler(self) -> Reconciler | None:
        try:
            cluster = get_cluster()
            cluster.ping()
        except ClusterError as exc:
            self.stderr.write(f"Reconciler not started: {exc.message}")
            return None
        elector = LeaderElector(cluster, namespace=settings.LEASE_NAMESPACE)
        reconciler = Reconciler(cluster, elector=elector, resync_seconds=settings.RECONCILE_RESYNC_SECONDS)
        threading.Thread(target=reconciler.run, name="reconciler", daemon=True).start()
        self.stdout.write(f"Reconciler running against {cluster.server}.")
        return reconciler
