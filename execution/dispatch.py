"""A protective command run at once by the risk monitor that raised it, ahead of its lane.

The risk monitor raises a protective command and commits it with its lane's doorbell; a fast
worker would then wake, claim it and run it. Instead, once it is committed, the monitor claims it
itself, exactly as a lane worker does (``runner.command_claim``: the same statement, the same
lease, the same timeline entry), and hands it to its own **dispatcher** thread, which runs it as a
lane worker would (``runner.command_run``: its attempts through the terminal's owner, its lease
renewed meanwhile, its finish). The worker that answers the doorbell finds it taken. Every
guarantee is the lane's: one claim wins; if the monitor dies while it runs the command, its lease
lapses and the sweeper sends the command back to its lane, whose next attempt reconciles by tag
before sending anything.

One command at a time (a process renews one fast command's lease): a command offered while the
dispatcher is busy is left to the lane, which runs it as it always does. Off unless ``start()``
was called (the ``riskmonitor`` command does): elsewhere ``offer`` leaves everything to the lanes.
"""

from __future__ import annotations

import logging
import queue
import threading

from django.db import connection

from commands.lanes import Lane
from commands.models import Command

logger = logging.getLogger("bridge.execution")


class Dispatcher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.ran = 0  # commands this dispatcher claimed and ran

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._idle.set()
            self._thread = threading.Thread(target=self._run, name="fast-dispatch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def offer(self, pk: int) -> bool:
        """Claim committed fast command ``pk`` (on the caller's thread, outside any transaction)
        and run it on the dispatcher, if it is free; False: left to the lane."""
        from execution.runner import command_claim  # the runner imports far more than this module needs

        with self._lock:
            if self._thread is None or not self._idle.is_set():
                return False
            self._idle.clear()
        try:
            # With its lane's doorbell, if no worker has fetched it yet: none wakes for nothing.
            command = command_claim(pk, lane=Lane.FAST, spare_doorbell=True)
        except Exception:  # its doorbell is rung: the lane runs it
            logger.exception("claiming a protective command failed; the lane runs it", extra={"pk": pk})
            command = None
        if command is None:  # a lane worker was first
            self._idle.set()
            return False
        self._queue.put(command)
        return True

    def _run(self) -> None:
        from execution.runner import command_run

        try:
            while (command := self._queue.get()) is not None:
                try:
                    command_run(command)
                    self.ran += 1
                except Exception:  # its lease lapses and the sweeper sends it back to its lane
                    logger.exception("running a dispatched command failed", extra={"pk": command.pk})
                    connection.close()
                finally:
                    self._idle.set()
        finally:
            connection.close()


_dispatcher = Dispatcher()


def start() -> None:
    """Run this process's protective commands on its own dispatcher from now on (the risk monitor)."""
    _dispatcher.start()


def stop() -> None:
    _dispatcher.stop()


def offer(pk: int) -> bool:
    """Claim and run committed fast command ``pk`` here, if this process runs a dispatcher and it is
    free; False when it is left to the lane (its doorbell is rung already)."""
    return _dispatcher.offer(pk)
