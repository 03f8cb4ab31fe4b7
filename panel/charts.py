"""The account page's chart: equity and balance over time, both floors, and the breaches on top.

Samples arrive every few seconds per account, so a long range is bucketed in the database: the
lowest equity of a bucket is kept (a breach is a low, never averaged away), with the highest floors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Min
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from policies.models import ProtectiveAction, RiskSample, TradingAccount


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    bucket: Any  # None: raw samples; else a Trunc function


RANGES: dict[str, Range] = {
    r.key: r
    for r in (
        Range("1h", "Last hour", timedelta(hours=1), None),
        Range("6h", "6 hours", timedelta(hours=6), TruncMinute),
        Range("24h", "24 hours", timedelta(hours=24), TruncMinute),
        Range("7d", "7 days", timedelta(days=7), TruncHour),
        Range("30d", "30 days", timedelta(days=30), TruncHour),
    )
}
DEFAULT_RANGE = "24h"
# Never more points than a chart can show meaningfully (raw samples of the last hour at 5 s: 720).
MAX_POINTS = 2000


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def risk_series(account: TradingAccount, range_key: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Chart data: points [t_ms, value] per line, and one marker per protective action in range."""
    chosen = RANGES.get(range_key) or RANGES[DEFAULT_RANGE]
    until = now or timezone.now()
    since = until - chosen.span
    samples = RiskSample.objects.filter(account=account, at__gte=since, at__lte=until)
    if chosen.bucket is None:
        rows = list(
            samples.order_by("at").values_list("at", "equity", "balance", "daily_floor", "total_floor")[:MAX_POINTS]
        )
    else:
        rows = list(
            samples.annotate(bucket=chosen.bucket("at"))
            .values("bucket")
            .annotate(equity=Min("equity"), balance=Min("balance"), daily=Max("daily_floor"), total=Max("total_floor"))
            .order_by("bucket")
            .values_list("bucket", "equity", "balance", "daily", "total")[:MAX_POINTS]
        )
    series: dict[str, list[list[Any]]] = {"equity": [], "balance": [], "daily_floor": [], "total_floor": []}
    for at, equity, balance, daily, total in rows:
        t = _ms(at)
        series["equity"].append([t, _num(equity)])
        series["balance"].append([t, _num(balance)])
        series["daily_floor"].append([t, _num(daily)])
        series["total_floor"].append([t, _num(total)])
    breaches = [
        {
            "t": _ms(action["detection_timestamp"]),
            "value": _num(action["measured"]),
            "equity": _num(action["equity"]),
            "label": f"{action['rule_key']} ({action['scope']}): {action['execution_status']}",
        }
        for action in ProtectiveAction.objects.filter(
            account=account, detection_timestamp__gte=since, detection_timestamp__lte=until
        )
        .order_by("detection_timestamp")
        .values("detection_timestamp", "measured", "equity", "rule_key", "scope", "execution_status")[:500]
    ]
    return {
        "range": chosen.key,
        "since": _ms(since),
        "until": _ms(until),
        "bucketed": chosen.bucket is not None,
        "points": len(rows),
        "series": series,
        "breaches": breaches,
    }
