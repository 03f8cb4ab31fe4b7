"""Run every process of the bridge in the foreground, output prefixed, all stopped together."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from honcho.manager import Manager


def process_table(
    *, host: str, port: int, sim_feed: bool, monitor_hosts: bool = True
) -> dict[str, tuple[str, dict[str, str]]]:
    """The processes of ARCHITECTURE.md, as (command line, extra environment). On a terminal
    backend the risk monitor hosts the terminals (``riskmonitor --host-terminals``): its reads and
    protective closes stay in its process, the path that keeps detection → close within 100 ms
    (docs/benchmarks.md). ``monitor_hosts=False``: a ``terminalhost`` process hosts them."""
    python = shlex.quote(sys.executable)
    manage = f"{python} {shlex.quote(str(settings.BASE_DIR / 'manage.py'))}"
    # Sync workers, two per core: under load their p99 is a third of gthread's (docs/benchmarks.md).
    web_workers = os.environ.get("WEB_WORKERS", "4")
    processes: dict[str, tuple[str, dict[str, str]]] = {
        "web": (
            f"{python} -m gunicorn bridgeproject.wsgi:application --bind {host}:{port} "
            f"--workers {web_workers} --access-logfile - --log-level warning",
            {},
        ),
        "normal": (f"{manage} qcluster", {}),
        "fastlane": (f"{manage} qcluster", {"Q_CLUSTER_NAME": "fastlane"}),
        "risk": (f"{manage} riskmonitor", {}),
        "callbacks": (f"{manage} delivercallbacks", {}),
    }
    if settings.MT5_BACKEND in ("simulator", "official", "mt5linux"):
        # Owns the MT5 terminals: every other process's MT5 calls go through it (the risk
        # monitor, or a terminal host of its own).
        if monitor_hosts:
            processes["risk"] = (f"{manage} riskmonitor --host-terminals", {})
        else:
            processes["terminals"] = (f"{manage} terminalhost", {})
    if sim_feed and settings.MT5_BACKEND == "simulator":
        processes["simfeed"] = (f"{manage} mt5sim feed", {})
    return processes


def process_env(table: dict[str, tuple[str, dict[str, str]]], environ: Mapping[str, str]) -> dict[str, str]:
    """Every process's environment: ``environ``, unbuffered; with a terminal host among them,
    only it takes terminals (``TERMINAL_OWNERS=hosts``, unless set): another process that took
    one first would keep it, its MT5 calls made on its own thread."""
    env = {**environ, "PYTHONUNBUFFERED": "1"}
    if "terminals" in table or "--host-terminals" in table.get("risk", ("", {}))[0]:
        env.setdefault("TERMINAL_OWNERS", "hosts")
    return env


class Command(BaseCommand):
    help = "Run web, both lanes, the risk monitor and (simulator) the price feed; Ctrl-C stops them all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-sim-feed", action="store_true", help="do not move simulated prices")
        parser.add_argument("--only", action="append", help="run only these processes (repeatable)")
        parser.add_argument(
            "--terminal-host-process",
            action="store_true",
            help="host the MT5 terminals in a terminalhost process of their own instead of the risk monitor "
            "(which then reads and closes through it: slower from a breach to its close; docs/operations.md)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        table = process_table(
            host=options["host"],
            port=options["port"],
            sim_feed=not options["no_sim_feed"],
            monitor_hosts=not options["terminal_host_process"],
        )
        if options["only"]:
            table = {name: spec for name, spec in table.items() if name in options["only"]}
        manager = Manager()
        base_env = process_env(table, os.environ)
        for name, (command, extra_env) in table.items():
            manager.add_process(name, command, env={**base_env, **extra_env}, cwd=str(settings.BASE_DIR))
        self.stdout.write(f"bridge on http://{options['host']}:{options['port']} — processes: {', '.join(table)}")
        manager.loop()
        sys.exit(manager.returncode)
