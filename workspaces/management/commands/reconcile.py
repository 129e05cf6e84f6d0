"""`manage.py reconcile`: the long-running control loop that keeps the cluster and the database in agreement."""

import signal
from argparse import ArgumentParser
from types import FrameType

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

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

    def handle(
        self, *args: object, resync_seconds: int, lease_namespace: str, identity: str | None, **kw: object
    ) -> None:
        try:
            cluster = get_cluster()
        except ClusterError as exc:
            raise CommandError(exc.message) from exc
        elector = LeaderElector(cluster, namespace=lease_namespace, identity=identity)
        reconciler = Reconciler(cluster, elector=elector, resync_seconds=resync_seconds)

        def stop(signum: int, frame: FrameType | None) -> None:
            reconciler.stop()
            if reconciler.in_watch:  # a blocked watch read would otherwise wait for its window to end
                raise Shutdown

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"reconciling against {cluster.server} as {elector.identity} (lease {lease_namespace})")
        reconciler.run()
        self.stdout.write("reconciler stopped")
