"""Lane workers as they start: their heartbeat (health reads it), and the normal lane's lower CPU priority.

Every django-q2 worker process writes a heartbeat row (one per host and pid) every
HEARTBEAT_SECONDS; health counts a worker live while its row is fresh within ALIVE_WITHIN_SECONDS
and, when the worker runs on health's own host, while its process exists. The cluster's sentinel
deletes a dead worker's row as it replaces it (execution.cluster), so a killed worker stops
counting at once.

django-q2's own cluster stats do not say which cluster (lane) they belong to, and health must
tell a dead fast lane from a dead normal one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.utils import timezone

from commands.lanes import Lane

logger = logging.getLogger("bridge.lanes")

HEARTBEAT_SECONDS = 0.5
ALIVE_WITHIN_SECONDS = 2.0
# Rows of workers gone this long are deleted by the next worker that starts on the host.
FORGET_AFTER = timedelta(minutes=10)
_LANE_FOR_CLUSTER = {"normal": Lane.NORMAL, "fastlane": Lane.FAST}


def beat(lane: str) -> None:
    from commands.models import LaneHeartbeat

    LaneHeartbeat.objects.update_or_create(
        host=socket.gethostname(), pid=os.getpid(), defaults={"lane": lane, "seen_at": timezone.now()}
    )


def _loop(lane: str) -> None:
    stop = threading.Event()
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            close_old_connections()
            beat(lane)
        except Exception:  # a missed beat shows as a degraded lane, which is the truth
            logger.warning("lane heartbeat failed", exc_info=True)


def on_worker_spawned(sender: Any, proc_name: str, **kwargs: Any) -> None:
    """django-q2's post_spawn, in the new worker process: start beating for its lane."""
    from django_q.conf import Conf

    lane = _LANE_FOR_CLUSTER.get(Conf.CLUSTER_NAME, Conf.CLUSTER_NAME)
    if lane == Lane.NORMAL and settings.NORMAL_LANE_NICE:
        # Normal work yields the CPU to the fast lane and the risk monitor: on a small machine a
        # normal backlog must not slow a protective close (the lane rule, applied to the CPU).
        os.nice(settings.NORMAL_LANE_NICE)
        connection_created.connect(_database_work_yields_too, dispatch_uid="normal-lane-backend-nice")
    try:
        beat(lane)
        forget_gone_workers()
    except Exception:  # never stop a worker from starting over a heartbeat
        logger.warning("lane heartbeat failed", exc_info=True)
    if lane == Lane.FAST:
        _warm_up()
    threading.Thread(target=_loop, args=(lane,), name="lane-heartbeat", daemon=True).start()


def _warm_up() -> None:
    """Load what executing a command needs before the first protective close arrives: the
    executors, the gateway and its terminal connection (the first close otherwise pays for them)."""
    try:
        from execution import runner  # noqa: F401 - imports the executors and the gateway
        from execution.gateways import get_gateway

        get_gateway().status()
    except Exception:  # a terminal that is down now is retried by the first command
        logger.warning("fast-lane warm-up failed", exc_info=True)


_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})


def _database_work_yields_too(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """A normal worker's PostgreSQL backend gets the worker's lower priority when it runs on this host.

    Half of a command's CPU is spent in its backend; a niced worker whose backend is not would
    still take the fast lane's core. Best effort: a server on another host, or one this user may
    not renice, keeps its priority.
    """
    if connection.vendor != "postgresql" or connection.settings_dict.get("HOST", "") not in _LOCAL_HOSTS:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        os.setpriority(os.PRIO_PROCESS, backend, settings.NORMAL_LANE_NICE)
    except Exception:  # never fail a connection over a priority
        logger.debug("could not lower the backend's priority", exc_info=True)


def forget(pid: int) -> None:
    """Delete the heartbeat of a worker of this host that is gone (its sentinel replaces it)."""
    from commands.models import LaneHeartbeat

    LaneHeartbeat.objects.filter(host=socket.gethostname(), pid=pid).delete()


def forget_gone_workers() -> None:
    from commands.models import LaneHeartbeat

    LaneHeartbeat.objects.filter(host=socket.gethostname(), seen_at__lt=timezone.now() - FORGET_AFTER).delete()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def workers_alive(lane: str) -> int:
    """Live workers of the lane: a heartbeat fresh within ALIVE_WITHIN_SECONDS, from a process that
    still exists when it runs on this host (a worker of another host is taken at its word)."""
    from commands.models import LaneHeartbeat

    since = timezone.now() - timedelta(seconds=ALIVE_WITHIN_SECONDS)
    here = socket.gethostname()
    rows = LaneHeartbeat.objects.filter(lane=lane, seen_at__gte=since).values_list("host", "pid")
    return sum(1 for host, pid in rows if host != here or process_exists(pid))
