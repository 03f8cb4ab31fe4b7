"""The processes' watchdog: operators are alerted when a lane has no live worker or a risk
monitor stopped without saying goodbye (ARCHITECTURE.md processes; RISK_RULES.md alerts).

It runs on each monitor's sweeper thread; several monitors raise the same alert once (an open
alert is unique per kind and subject). A lane empty at start-up is given `GRACE_SECONDS` to come
up before it counts as down.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from alerts.models import Alert
from alerts.services import alert_raise
from commands.lanes import Lane
from execution.heartbeat import workers_alive
from execution.owners import live_owners
from execution.terminals import terminal_names
from policies.models import MonitorHeartbeat

GRACE_SECONDS = 15.0
# A monitor beats every cycle (RISK_POLL_INTERVAL_MS); one silent this long has died. A monitor
# that stops cleanly deletes its row, so a stale row is a death, not a shutdown.
MONITOR_SILENT = timedelta(seconds=10)


class Watchdog:
    def __init__(self, *, grace_seconds: float = GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds
        self._empty_since: dict[str, float] = {}
        self._unowned_since: dict[str, float] = {}

    def check(self) -> int:
        """Look once; returns the alerts raised."""
        raised = 0
        now = time.monotonic()
        for lane in (Lane.FAST, Lane.NORMAL):
            if workers_alive(lane):
                self._empty_since.pop(lane, None)
                continue
            since = self._empty_since.setdefault(lane, now)
            if now - since >= self.grace_seconds:
                raised += alert_raise(
                    kind=Alert.Kind.LANE_DOWN,
                    subject=f"lane:{lane}",
                    title=f"The {lane} lane has no live worker",
                    body=(
                        "No worker of this lane has beaten for a while: "
                        + ("protective closes cannot run." if lane == Lane.FAST else "normal commands wait.")
                    ),
                )
        raised += self._terminals(now)
        silent = MonitorHeartbeat.objects.filter(heartbeat_at__lt=timezone.now() - MONITOR_SILENT)
        for monitor_id, host, pid in silent.values_list("monitor_id", "hostname", "pid"):
            raised += alert_raise(
                kind=Alert.Kind.MONITOR_DOWN,
                subject=f"monitor:{monitor_id}",
                title=f"Risk monitor {monitor_id} stopped",
                body=f"Last seen on {host} (pid {pid}); the live monitors take over its accounts.",
                severity=Alert.Severity.WARNING,
            )
        return raised

    def _terminals(self, now: float) -> int:
        """A terminal nobody drives (no terminal host took it, or its host died and none took
        over) leaves its accounts' commands and reads waiting."""
        if settings.MT5_BACKEND not in ("official", "mt5linux", "simulator"):
            return 0
        owned = live_owners()
        raised = 0
        for name in terminal_names():
            if name in owned:
                self._unowned_since.pop(name, None)
                continue
            since = self._unowned_since.setdefault(name, now)
            if now - since >= self.grace_seconds:
                raised += alert_raise(
                    kind=Alert.Kind.TERMINAL_UNOWNED,
                    subject=f"terminal:{name}",
                    title=f"No process drives terminal {name}",
                    body="Its accounts' commands and reads wait for an owner: is the risk monitor hosting the "
                    "terminals (`riskmonitor --host-terminals`), or `manage.py terminalhost`, running?",
                )
        return raised
