"""Leader election with a coordination.k8s.io Lease, so that only one reconciler acts at a time."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
import uuid

from kubernetes import client

from workspaces.cluster import Cluster, ClusterConflict, ClusterError

logger = logging.getLogger(__name__)


class LeaderElector:
    """Holds the Lease while renewals succeed; `is_leader()` is False as soon as a renewal could be late."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        namespace: str,
        name: str = "kaito-portal-reconciler",
        identity: str | None = None,
        lease_seconds: int = 15,
        renew_seconds: float = 5,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._renewed_at = 0.0  # monotonic time of the last successful acquire/renew
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        # Stop acting a little before the lease could expire, so that two holders never overlap.
        with self._lock:
            return time.monotonic() - self._renewed_at < self.lease_seconds - self.renew_seconds / 2

    def try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        try:
            lease = self.cluster.get_lease(self.namespace, self.name)
            if lease is None:
                spec = client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=self.lease_seconds,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                )
                body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=spec)
                self.cluster.create_lease(self.namespace, body)
            else:
                spec = lease.spec
                holder = spec.holder_identity
                expired = spec.renew_time is None or (now - spec.renew_time).total_seconds() > (
                    spec.lease_duration_seconds or self.lease_seconds
                )
                if holder != self.identity and holder and not expired:
                    return self._lost()
                if holder != self.identity:
                    spec.lease_transitions = (spec.lease_transitions or 0) + 1
                    spec.acquire_time = now
                    logger.info("taking over the lease from %s", holder or "nobody")
                spec.holder_identity = self.identity
                spec.renew_time = now
                spec.lease_duration_seconds = self.lease_seconds
                self.cluster.replace_lease(self.namespace, lease)  # 409 if someone else wrote first
        except ClusterConflict:
            return self._lost()
        except ClusterError as exc:
            logger.warning("lease %s/%s: %s", self.namespace, self.name, exc.message)
            return self.is_leader()
        with self._lock:
            self._renewed_at = time.monotonic()
        return True

    def _lost(self) -> bool:
        with self._lock:
            self._renewed_at = 0.0
        return False

    def start(self) -> None:
        """Keep renewing in the background while the reconciler works."""
        self._thread = threading.Thread(target=self._loop, name="lease-renewer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            self.try_acquire_or_renew()

    def stop(self) -> None:
        """Stop renewing and hand the lease back so that another replica can take over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_seconds + 5)
        if not self.is_leader():
            return
        self._lost()
        try:
            lease = self.cluster.get_lease(self.namespace, self.name)
            if lease is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.cluster.replace_lease(self.namespace, lease)
        except ClusterError as exc:
            logger.warning("could not release the lease: %s", exc.message)
