"""The lanes' django-q2 sentinel: a worker killed while it waits for work no longer wedges its lane.

What django-q2 1.11 does when a worker process is SIGKILLed: its Sentinel's guard loop (every
`guard_cycle`, 0.5 s) sees the process is not alive and spawns a replacement. That is enough for a
worker killed while it *runs* a task. A worker killed while *idle* is, however, usually the one
blocked in `task_queue.get()`: a multiprocessing queue read holds the queue's shared read lock for
as long as it waits. Killed there, it never releases it, and every other worker and every
replacement block on that lock for good. The pusher goes on moving doorbells from the broker into
the queue (an ORM doorbell is then locked for `retry`, 90 s; a Redis one is gone), nobody takes
them out, and the workers' heartbeat threads go on beating: the lane is wedged while health
counts its workers.

`LaneSentinel` changes three things:

- **A worker that dies idle** (or a pusher that dies) gets the cluster a new task queue, a new
  pusher feeding it and new workers reading it. The workers still waiting on the old queue are
  ended; one busy with a command is ended once it has finished it. The lane's doorbell is then
  rung once, for whatever the old queue swallowed (the sweeper would ring a fast command again
  after COMMAND_FAST_QUEUED_GRACE_SECONDS anyway). A dead worker's heartbeat row is deleted as it
  is replaced, so health stops counting it at once.
- **The pusher** does not give up for 10 s when its broker fails (django-q2's does, and exits). On
  Redis its connection never waits past BROKER_TIMEOUT_SECONDS, and while Redis fails, the pusher
  serves the lane from the database: it rings the lane's doorbell into its task queue whenever the
  lane has queued commands, and probes Redis again every BROKER_RETRY_SECONDS.
- The sentinel's own Redis calls (django-q2's cluster statistics) are bounded too, so a hung Redis
  does not stop the guard loop from replacing workers.

Installed by `execution.apps` in a `qcluster` process, for both lanes.
"""

from __future__ import annotations

import logging
import time
from multiprocessing import Process
from typing import Any

from django import db
from django.conf import settings
from django.db import close_old_connections
from django_q import cluster as q_cluster
from django_q.brokers import Broker
from django_q.brokers.redis_broker import Redis as RedisBroker
from django_q.conf import Conf
from django_q.queues import Queue
from django_q.scheduler import scheduler
from django_q.signing import BadSignature, SignedPackage
from django_q.status import Stat

from commands.lanes import QUEUE_KEY_FOR_LANE, Lane
from commands.models import Command
from commands.services import bounded_redis, task_package
from commands.states import State
from execution import heartbeat

logger = logging.getLogger("bridge.lanes")

BROKER_TIMEOUT_SECONDS = 2.0  # above django-q2's 1 s BLPOP
BROKER_RETRY_SECONDS = 1.0
SENTINEL_REDIS_TIMEOUT_SECONDS = 0.2
DATABASE_DOORBELL_EVERY = 0.05

IDLE, RECYCLED, TIMED_OUT = -1.0, -2.0, 0.0


def cluster_lane() -> str:
    return Lane.FAST if Conf.CLUSTER_NAME == QUEUE_KEY_FOR_LANE[Lane.FAST] else Lane.NORMAL


def _timer(process: Any) -> float:
    """A worker's timer read without its lock: a worker killed while holding it never lets go."""
    return float(process.timer.get_obj().value)


def _doorbell_task(lane: str) -> dict[str, Any]:
    task: dict[str, Any] = SignedPackage.loads(task_package(lane))
    task["cluster"] = Conf.CLUSTER_NAME
    task["ack_id"] = None
    return task


class LaneSentinel(q_cluster.Sentinel):
    generation = 0
    pusher: Any

    def start(self) -> None:
        if isinstance(self.broker, RedisBroker):
            self.broker.connection = bounded_redis(settings.REDIS_URL, SENTINEL_REDIS_TIMEOUT_SECONDS)
        super().start()

    def spawn_worker(self) -> None:
        super().spawn_worker()
        self.pool[-1].generation = self.generation

    def spawn_pusher(self) -> Process:
        return self.spawn_process(lane_pusher, self.task_queue, self.event_out, self.broker)

    def reincarnate(self, process: Any) -> None:
        if process is self.monitor:
            super().reincarnate(process)
            return
        if process is self.pusher:
            logger.error("the lane's pusher died; the lane gets a new task queue")
            self._renew_task_queue()
            return
        timer = _timer(process)
        self.pool.remove(process)
        _forget(process.pid)
        if timer == TIMED_OUT:
            process.terminate()
            logger.error("lane worker %s timed out and was replaced", process.pid)
        elif timer == IDLE and process.generation == self.generation:
            # It may have died holding the task queue's read lock: nobody could read it again.
            logger.error(
                "lane worker %s died while idle (exit code %s); the lane gets a new task queue",
                process.pid,
                process.exitcode,
            )
            self._renew_task_queue()
        elif timer != RECYCLED:
            logger.error("lane worker %s died (exit code %s) and was replaced", process.pid, process.exitcode)
        self._fill_pool()
        self.reincarnations += 1

    def _fill_pool(self) -> None:
        if len(self.pool) < self.pool_size:
            db.connections.close_all()  # never share a connection with a child
            while len(self.pool) < self.pool_size:
                self.spawn_worker()

    def _renew_task_queue(self) -> None:
        self.generation += 1
        self.task_queue = Queue(maxsize=Conf.QUEUE_LIMIT) if Conf.QUEUE_LIMIT else Queue()
        if self.pusher is not None and self.pusher.is_alive():
            self.pusher.terminate()  # it feeds the old queue
            self.pusher.join(2)
        self._end_old_idle_workers()
        self._fill_pool()
        self.pusher = self.spawn_pusher()
        try:
            # Whatever the old queue swallowed runs now (a doorbell runs the lane's oldest command).
            self.task_queue.put(_doorbell_task(cluster_lane()))
        except Exception:  # the sweeper rings again
            logger.warning("could not ring the lane's doorbell after renewing its queue", exc_info=True)

    def _end_old_idle_workers(self) -> bool:
        ended = False
        for process in list(self.pool):
            if getattr(process, "generation", 0) < self.generation and _timer(process) in (IDLE, RECYCLED):
                process.terminate()
                process.join(1)
                self.pool.remove(process)
                _forget(process.pid)
                ended = True
        return ended

    def guard(self) -> None:
        """django-q2 1.11's guard loop, reading a worker's liveness before its timer (whose lock a
        killed worker may hold) and ending workers of an old queue once idle."""
        self.start_event.set()
        Stat(self).save()
        logger.info("lane cluster %s guarding %d workers", Conf.CLUSTER_NAME, self.pool_size)
        counter = 0.0
        cycle = Conf.GUARD_CYCLE
        while True:
            for process in list(self.pool):
                if process not in self.pool:
                    continue  # ended by a queue renewal this cycle
                if not process.is_alive():
                    self.reincarnate(process)
                    continue
                with process.timer.get_lock():
                    if process.timer.value == TIMED_OUT:
                        self.reincarnate(process)
                        continue
                    if process.timer.value > 0:
                        process.timer.value -= cycle
            if self.generation and self._end_old_idle_workers():
                self._fill_pool()
            if not self.monitor.is_alive():
                self.reincarnate(self.monitor)
            if not self.pusher.is_alive():
                self.reincarnate(self.pusher)
            counter += cycle
            if counter >= 30 and Conf.SCHEDULER:
                counter = 0
                scheduler(broker=self.broker)
            Stat(self).save()
            if self.stop_event.wait(cycle):
                break
        self.stop()


def _forget(pid: int) -> None:
    try:
        heartbeat.forget(pid)
    except Exception:  # its row goes stale within seconds anyway
        logger.warning("could not delete a dead worker's heartbeat", exc_info=True)


def lane_pusher(task_queue: Queue, event: Any, broker: Broker) -> None:
    """Move doorbells from the broker into the cluster's task queue (django-q2's pusher, made to
    survive its broker: see the module's docstring)."""
    lane = cluster_lane()
    on_redis = isinstance(broker, RedisBroker)
    probe = None
    if on_redis:
        broker.connection = bounded_redis(settings.REDIS_URL, BROKER_TIMEOUT_SECONDS)
        probe = bounded_redis(settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS)
    from_the_database_until = 0.0
    rung_at = 0.0
    while not event.is_set():
        if time.monotonic() < from_the_database_until:
            if time.monotonic() - rung_at >= DATABASE_DOORBELL_EVERY and _lane_has_queued(lane):
                task_queue.put(_doorbell_task(lane))
                rung_at = time.monotonic()
            event.wait(DATABASE_DOORBELL_EVERY / 2)
            if time.monotonic() >= from_the_database_until and probe is not None:
                try:
                    probe.ping()
                except Exception:
                    from_the_database_until = time.monotonic() + BROKER_RETRY_SECONDS
            continue
        try:
            task_set = broker.dequeue()
        except Exception:
            logger.warning("the lane's broker failed; the lane is served from the database meanwhile", exc_info=True)
            if on_redis:
                from_the_database_until = time.monotonic() + BROKER_RETRY_SECONDS
            else:
                close_old_connections()
                event.wait(0.5)
            continue
        for ack_id, package in task_set or ():
            try:
                task = SignedPackage.loads(package)
            except (TypeError, BadSignature):
                logger.exception("a doorbell that cannot be read was dropped")
                broker.fail(ack_id)
                continue
            task["cluster"] = Conf.CLUSTER_NAME
            task["ack_id"] = ack_id
            task_queue.put(task)


def _lane_has_queued(lane: str) -> bool:
    try:
        return Command.objects.filter(lane=lane, state=State.QUEUED).exists()
    except Exception:
        close_old_connections()
        return False


def install() -> None:
    """Make `qcluster` run the lanes with LaneSentinel (django-q2 spawns `cluster.Sentinel`)."""
    q_cluster.Sentinel = LaneSentinel
