"""GET /api/v1/health: is the bridge able to take and execute work right now?"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import Min, Q
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from callbacks.services import callbacks_health
from commands.lanes import QUEUE_KEY_FOR_LANE, Lane
from commands.models import Command
from commands.services import lane_broker, rings_with_the_commit
from commands.states import State
from execution.heartbeat import workers_alive
from tenancy.auth import authenticate_token

OK, DEGRADED, DOWN = "ok", "degraded", "down"
# A lane whose oldest task has waited this long is not keeping up.
LANE_MAX_AGE_SECONDS: dict[str, float] = {Lane.NORMAL: 60.0, Lane.FAST: 2.0}


def check_database() -> dict[str, Any]:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"status": OK, "latency_ms": round((time.perf_counter() - started) * 1000, 2), "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    broker = get_broker()
    result = {"status": OK if broker.ping() else DOWN, "broker": broker.info()}
    if not rings_with_the_commit(Lane.FAST):
        fast = lane_broker(Lane.FAST)
        try:
            fast_ok = fast.ping()
            result["fast_lane_broker"] = fast.info()
        except Exception as exc:  # Redis down: the fast lane cannot be rung (the sweeper will)
            fast_ok = False
            result["fast_lane_broker"] = f"unreachable: {exc.__class__.__name__}"
        if not fast_ok:
            result["status"] = DOWN
    return result


def lane_check(lane: str) -> Callable[[], dict[str, Any]]:
    def check() -> dict[str, Any]:
        if rings_with_the_commit(lane):
            queued = OrmQ.objects.filter(key=QUEUE_KEY_FOR_LANE[lane])
            depth = queued.count()
            oldest = queued.aggregate(oldest=Min("lock"))["oldest"] if depth else None
        else:
            # Redis holds the doorbells; the commands themselves say how long they have waited.
            try:
                depth = lane_broker(lane).queue_size()
            except Exception:  # Redis down or hung: the lane is served from the database meanwhile
                depth = None  # (the broker check says so)
            waiting = Command.objects.filter(lane=lane, state=State.QUEUED)
            oldest = waiting.aggregate(oldest=Min("queued_at"))["oldest"]
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        workers = workers_alive(lane)
        status = OK
        if workers == 0 and lane == Lane.FAST:
            status = DOWN  # no protective close can run
        elif workers == 0 or age > LANE_MAX_AGE_SECONDS[lane]:
            status = DEGRADED
        return {
            "status": status,
            "workers_alive": workers,
            "queue_depth": depth,
            "oldest_task_age_s": round(max(age, 0.0), 3),
        }

    return check


def check_mt5() -> dict[str, Any]:
    """The backend's own status, and whether the risk monitor sees every account fresh enough."""
    from django.conf import settings

    from execution import outages
    from execution.gateways import get_gateway
    from policies.models import AccountRisk, MonitorHeartbeat

    status = get_gateway().status()
    now = timezone.now()
    too_old = now - timedelta(milliseconds=settings.RISK_MAX_SNAPSHOT_AGE_MS)
    watched = AccountRisk.objects.filter(account__current_policy__isnull=False)
    stale = watched.filter(Q(snapshot_at__lt=too_old) | Q(snapshot_at__isnull=True)).count()
    monitors = MonitorHeartbeat.objects.filter(heartbeat_at__gte=now - timedelta(seconds=5)).count()
    unreachable = outages.recent_failure()
    # AutoTrading off (the terminal's button) or Python trading disabled: MT5 refuses every trade.
    trading_off = status.get("trade_allowed") is False or bool(status.get("trade_api_disabled"))
    if not status.get("available"):
        verdict = DOWN  # no protective close can run
    elif stale or unreachable is not None or trading_off:
        verdict = DEGRADED
    else:
        verdict = OK
    return {
        **status,
        "status": verdict,
        # The lanes' and the monitor's own experience of the terminal, not just its status call.
        "recent_connection_failure": unreachable,
        "risk_monitors_alive": monitors,
        # Snapshots older than RISK_MAX_SNAPSHOT_AGE_MS never declare a breach: say so here.
        "accounts_with_stale_snapshot": stale,
    }


# Each check answers {"status": ok|degraded|down, ...}. The bridge is down when the database is
# (nothing can be accepted), or when no protective close can run: no live fast-lane worker, or the
# MT5 backend unavailable. Any other check that is not ok leaves it degraded.
CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "broker": check_broker,
    "normal_lane": lane_check(Lane.NORMAL),
    "fast_lane": lane_check(Lane.FAST),
    "mt5": check_mt5,
    "callbacks": lambda: callbacks_health(),
}
CRITICAL = frozenset({"database", "fast_lane", "mt5"})


def run_checks() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:  # a failing check is a finding, not a 500
            results[name] = {"status": DOWN, "error": f"{type(exc).__name__}: {exc}"[:300]}
    if any(results[name]["status"] == DOWN for name in CRITICAL):
        overall = DOWN
    elif all(result["status"] == OK for result in results.values()):
        overall = OK
    else:
        overall = DEGRADED
    return {"status": overall, "checks": results, "checked_at_utc": timezone.now()}


# PROTOCOL §9: public health names no tenant, login or account. Without credentials each check
# shows only these figures (a connection failure's age, not its text); a valid token sees every
# check whole but for what names an account (the terminal's logged-in login, the terminals by
# name, the text of a connection failure); a staff session of the panel sees everything.
PUBLIC_KEYS = frozenset(
    {
        "status",
        "latency_ms",
        "vendor",
        "workers_alive",
        "queue_depth",
        "oldest_task_age_s",
        "backend",
        "available",
        "trade_allowed",
        "trade_api_disabled",
        "risk_monitors_alive",
        "accounts_with_stale_snapshot",
        "pending",
        "oldest_pending_age_s",
        "dead_letters",
        "configured",
        "recent_connection_failure",  # how long ago only: its text may name an account
    }
)
NAMES_AN_ACCOUNT = frozenset({"logged_in", "terminals"})


def public_view(report: dict[str, Any]) -> dict[str, Any]:
    checks = {
        name: {key: value for key, value in check.items() if key in PUBLIC_KEYS}
        for name, check in token_view(report)["checks"].items()
    }
    return {**report, "checks": checks}


def token_view(report: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for name, check in report["checks"].items():
        kept = {key: value for key, value in check.items() if key not in NAMES_AN_ACCOUNT}
        failure = kept.get("recent_connection_failure")
        if isinstance(failure, dict):
            kept["recent_connection_failure"] = {"seconds_ago": failure.get("seconds_ago")}
        checks[name] = kept
    return {**report, "checks": checks}


def _viewer(request: Request) -> str:
    """`staff`, `token` or `public`: who is asking, without ever refusing the request."""
    user: Any = request.user  # the panel's session (SessionAuthentication), else None
    if user is not None and user.is_authenticated and getattr(user, "is_staff", False):
        return "staff"
    scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    raw = raw.strip()
    if scheme.lower() == "bearer" and raw and len(raw) <= 512 and authenticate_token(raw) is not None:
        return "token"
    return "public"


class HealthView(APIView):
    """No authentication is required; what is shown depends on who asks (PUBLIC_KEYS above). A
    wrong token is simply the public view: it is not a failed authentication to count."""

    authentication_classes = [SessionAuthentication]  # never refuses: no session is AnonymousUser
    permission_classes = [AllowAny]  # and the document says so: its security is optional

    @extend_schema(
        operation_id="health",
        summary="Liveness and readiness of every part; 503 when down (no database, or no protective close can run)",
        description="No authentication. Without credentials each check shows its status and figures only"
        " (no tenant, login or account); with a bearer token or a staff session, every check's details.",
        responses={
            200: inline_serializer(
                "Health",
                {
                    "status": serializers.ChoiceField(choices=[OK, DEGRADED, DOWN]),
                    "checks": serializers.DictField(child=serializers.DictField()),
                    "checked_at_utc": serializers.DateTimeField(),
                },
            ),
            503: inline_serializer(
                "HealthDown", {"status": serializers.CharField(), "checks": serializers.DictField()}
            ),
        },
    )
    def get(self, request: Request) -> Response:
        report = run_checks()
        status = 503 if report["status"] == DOWN else 200
        viewer = _viewer(request)
        if viewer == "public":
            report = public_view(report)
        elif viewer == "token":
            report = token_view(report)
        return Response(report, status=status)
