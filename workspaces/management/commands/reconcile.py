"""`manage.py reconcile`: the long-running control loop that keeps the cluster and the database in agreement."""

import signal
from argparse import ArgumentParser
from types import FrameType

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal import metrics
from workspaces.cluster import ClusterError
from workspaces.leader import LeaderElector
from workspaces.reconciler import Reconciler, Shutdown
from workspaces.services.clusters import get_cluster


class Command(BaseCommand):
    help = "Apply approved workspaces, mirror KAITO's status, expire and delete; one leader at a time."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--resync-seconds", type=int, default=settings.RECONCILE_RESYNC_SECONDS)
        parser.add_argument("--lease-namespace", default=settings.LEASE_NAMESPACE)
        parser.add_argument("--identity", default=None, help="Lease holder name (default: host name + random).")
        parser.add_argument("--metrics-port", type=int, default=0, help="Serve Prometheus metrics here (0: off).")
        parser.add_argument("--metrics-address", default="127.0.0.1", help="0.0.0.0 in a container.")

    def handle(
        self,
        *args: object,
        resync_seconds: int,
        lease_namespace: str,
        identity: str | None,
        metrics_port: int = 0,
        metrics_address: str = "127.0.0.1",
        **kw: object,
    ) -> None:
        try:
            cluster = get_cluster()
        except ClusterError as exc:
            raise CommandError(exc.message) from exc
        elector = LeaderElector(cluster, namespace=lease_namespace, identity=identity)
        reconciler = Reconciler(cluster, elector=elector, resync_seconds=resync_seconds)
        if metrics_port:
            reconciler.on_pass = metrics.reconciler_on_pass(reconciler)
            reconciler.handle = metrics.measure_handle(reconciler.handle)
            metrics.track_leadership(elector.is_leader)
            metrics.serve(metrics_port, metrics_address)

        def stop(signum: int, frame: FrameType | None) -> None:
            reconciler.stop()
            if reconciler.in_watch:  # a blocked watch read would otherwise wait for its window to end
                raise Shutdown

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"reconciling against {cluster.server} as {elector.identity} (lease {lease_namespace})")
        reconciler.run()
        self.stdout.write("reconciler stopped")
