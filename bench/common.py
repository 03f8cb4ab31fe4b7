"""Shared set-up for benchmarks: a fresh PostgreSQL database with the demo seeded, and processes."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fresh_database(name: str) -> str:
    """Drop and create a PostgreSQL database, migrate it and seed the demo; returns its URL."""
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True)
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    for args in (["migrate", "--noinput", "-v0"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL
        )
    return url


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bridgeproject.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def demo_accounts(logins: list[int], server: str) -> None:
    """Simulated accounts of 100,000 on ``server``, each registered to tenant_1 the way Laravel
    does: with the seed's policy snapshot."""
    from commands import examples
    from commands.validation import validate_policy_payload
    from execution.simulator.service import sim_account_create
    from policies.services import policy_apply
    from tenancy.models import Tenant

    tenant = Tenant.objects.get(tenant_id="tenant_1")
    snapshot = examples.example("policy_snapshot")
    payload = validate_policy_payload(snapshot["payload"])
    for login in logins:
        sim_account_create(login=login, balance=100000, server=server)
        policy_apply(
            tenant=tenant,
            actor={**snapshot["actor"], "account_login": login, "server": server},
            payload=payload,
            envelope=snapshot,
            correlation_id="bench",
            idempotency_key=f"bench-{login}",
        )


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    p50, p99, mean = percentile(values, 50), percentile(values, 99), statistics.fmean(values)
    return f"p50 {p50:7.1f} ms | p99 {p99:7.1f} ms | mean {mean:7.1f} ms | n {len(values)}"


def breach_trial(gateway, login: int, server: str, trial: int, *, timeout: float = 60) -> tuple[float, float] | None:
    """One single-trade breach, timed by the protective action's own timestamps: open 1.0 lot
    EURUSD on the account, drop the price 300 pips, wait for the action to complete. Returns
    (price move → detection, detection → confirmed close) in ms, or None (said why)."""
    import time
    from datetime import UTC, datetime

    from django.db import close_old_connections

    from execution.simulator.service import sim_set_price
    from policies.models import ProtectiveAction

    sim_set_price("EURUSD", "1.08500")
    gateway.open_position(login, server, symbol="EURUSD", side="buy", volume=1, tag=f"t{trial}")
    moved = datetime.now(UTC)
    sim_set_price("EURUSD", "1.05500")
    deadline = time.monotonic() + timeout
    action = None
    while time.monotonic() < deadline:
        close_old_connections()
        action = ProtectiveAction.objects.filter(
            account__login=login, rule_key="single_trade_loss", execution_timestamp__isnull=False
        ).first()
        if action is not None:
            break
        time.sleep(0.005)
    if action is None or action.execution_status != "success":
        print(f"  trial {trial}: no completed action ({action and action.execution_status})")
        return None
    return (
        (action.detection_timestamp - moved).total_seconds() * 1000,
        (action.execution_timestamp - action.detection_timestamp).total_seconds() * 1000,
    )
