"""Real bridge processes for tests: qcluster lanes and friends, on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        raise RuntimeError("process tests need PostgreSQL (the README's test command provides it)")
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = ROOT / "var" / f"test-{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(exist_ok=True)
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill takes the workers too
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def bridge_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # The simulator's cost model, turned down so the live tests stay short; a login still
        # takes long enough for another process to act in the middle of it.
        "SIM_LOGIN_SECONDS": os.environ.get("SIM_LOGIN_SECONDS", "0.05"),
        "SIM_CALL_MS": os.environ.get("SIM_CALL_MS", "0"),
    }
    env.update(extra)
    return env


def lane(name: str, **extra: str) -> Proc:
    env = bridge_env(**extra)
    if name == "fastlane":
        env["Q_CLUSTER_NAME"] = "fastlane"
    return Proc(name, ["qcluster"], env)


@contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    for proc in procs:
        proc.start()
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, every: float = 0.05) -> bool:
    """Poll a condition until it holds (True) or the timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()
