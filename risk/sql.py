"""The risk engine's bulk database work: reading many accounts' risk rows and writing their
figures and chart points in one statement each. PostgreSQL gets array-parameter statements (one
text parameter per column instead of thousands of placeholders); SQLite the ORM path beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import connections, transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from policies.models import AccountRisk, RiskSample
from risk import rules


def any_of(queryset: QuerySet[Any], column: str, values: list[int]) -> QuerySet[Any]:
    """`column IN values`; on PostgreSQL one array parameter, because a thousand placeholders
    cost the driver and the ORM more than the query itself."""
    if connections[queryset.db].vendor != "postgresql":
        return queryset.filter(**{f"{column}__in": values})
    # The array as one text literal: the driver's client-side quoting of a list is slower.
    sql = f'"{queryset.model._meta.db_table}"."{column}" = ANY(%s::bigint[])'
    literal = "{" + ",".join(map(str, map(int, values))) + "}"
    return queryset.filter(RawSQL(sql, (literal,), output_field=BooleanField()))  # noqa: S611 - names are the model's


# The durable state as the rules see it, per account, with the row version it was read at.
STATE_FIELDS = (
    "policy_version",
    "initial_balance",
    "high_water_mark",
    "total_floor",
    "daily_reference",
    "daily_reference_date",
    "daily_reference_source",
    "violation_count",
    "breached_tickets",
    "hard_breached",
    "trading_disabled_until",
    "last_trading_day",
)


class RiskRow(NamedTuple):
    pk: int
    # The row's version when read: PostgreSQL's xmin (every write makes a new one), elsewhere
    # updated_at (every write of the risk engine sets it). Figures are written only over it.
    version: Any
    evaluated_at: datetime | None
    state: rules.RiskState


# The latest risk row read per account, with its version: a cycle re-reads only rows whose
# version moved. Bounded at 200,000 accounts (emptied past it); declared in bridgeproject.caches.
_states: dict[int, RiskRow] = {}


def _state_from_values(values: tuple[Any, ...]) -> rules.RiskState:
    (version, initial, hwm, floor, reference, reference_date, source, count, tickets, hard, until, last_day) = values
    return rules.RiskState(
        policy_version=version,
        initial_balance=initial,
        high_water_mark=hwm,
        total_floor=floor,
        daily_reference=reference,
        daily_reference_date=reference_date,
        daily_reference_source=source,
        violation_count=count,
        breached_tickets=frozenset(tickets),
        hard_breached=hard,
        trading_disabled_until=until,
        last_trading_day=last_day,
    )


def versioned() -> bool:
    return connections[AccountRisk.objects.db].vendor == "postgresql"


def risk_rows(account_pks: list[int]) -> dict[int, RiskRow]:
    """The risk rows of these accounts. On PostgreSQL only their versions are read each cycle, and
    whole rows only where the version moved: a thousand quiet accounts cost a thousand integers."""
    if len(_states) > 200_000:
        _states.clear()
    risk = AccountRisk.objects.all()
    if versioned():
        version = RawSQL(f'"{AccountRisk._meta.db_table}"."xmin"::text', ())  # noqa: S611 - no input
        versions = dict(any_of(risk, "account_id", account_pks).annotate(v=version).values_list("account_id", "v"))
        stale = [pk for pk, v in versions.items() if pk not in _states or _states[pk].version != v]
        fields: tuple[str, ...] = ("account_id", "pk", "v", "evaluated_at", *STATE_FIELDS)
        changed = any_of(risk, "account_id", stale).annotate(v=version) if stale else None
    else:
        versions = None
        fields = ("account_id", "pk", "updated_at", "evaluated_at", *STATE_FIELDS)
        changed = any_of(risk, "account_id", account_pks)
    if changed is not None:
        for values in changed.values_list(*fields):
            _states[values[0]] = RiskRow(values[1], values[2], values[3], _state_from_values(values[4:]))
    present = versions.keys() if versions is not None else account_pks
    return {pk: _states[pk] for pk in present if pk in _states}


class Figures(NamedTuple):
    risk_pk: int
    version: Any  # the row's version when read: written only if nobody wrote it since
    measured: Decimal
    balance: Decimal
    equity: Decimal
    daily_floor: Decimal | None  # None: the rule is off
    trading_block: str
    snapshot_at: datetime


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of plain values (ids, numbers, times, short words): one text
    parameter costs the driver far less than a list of a thousand values."""
    return "{" + ",".join(map(_element, values)) + "}"


def write_figures(figures: list[Figures], now: datetime) -> None:
    """Refresh the figures of quiet accounts in one statement, in primary key order (two monitors
    overlapping for a cycle lock rows in one order). A row written since it was read (a policy,
    a breach) is left alone: its own figures are newer."""
    figures = sorted(figures)
    if not versioned():
        with transaction.atomic():
            for f in figures:
                AccountRisk.objects.filter(pk=f.risk_pk, updated_at=f.version).update(
                    measured=f.measured,
                    balance=f.balance,
                    equity=f.equity,
                    daily_floor=f.daily_floor,
                    trading_block=f.trading_block,
                    snapshot_at=f.snapshot_at,
                    evaluated_at=now,
                    updated_at=now,
                )
        return
    sql = f"""
        UPDATE "{AccountRisk._meta.db_table}" AS r
        SET measured = v.measured, balance = v.balance, equity = v.equity, daily_floor = v.daily_floor,
            trading_block = v.trading_block, snapshot_at = v.snapshot_at, evaluated_at = %s, updated_at = %s
        FROM unnest(%s::bigint[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[],
                    %s::numeric[], %s::varchar[], %s::timestamptz[])
             AS v(id, version, measured, balance, equity, daily_floor, trading_block, snapshot_at)
        WHERE r.id = v.id AND r.xmin::text = v.version
    """  # noqa: S608 - the table name is the model's; every value is a parameter
    with connections[AccountRisk.objects.db].cursor() as cursor:
        cursor.execute(sql, [now, now, *(_array(column) for column in zip(*figures, strict=True))])


def write_samples(samples: list[RiskSample]) -> None:
    """Chart points, in one statement."""
    if not versioned():
        RiskSample.objects.bulk_create(samples)
        return
    columns = ("account_id", "at", "balance", "equity", "daily_floor", "total_floor")
    sql = f"""
        INSERT INTO "{RiskSample._meta.db_table}" ({", ".join(columns)})
        SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::numeric[], %s::numeric[], %s::numeric[],
                             %s::numeric[])
    """  # noqa: S608 - the table and columns are the model's; every value is a parameter
    with connections[RiskSample.objects.db].cursor() as cursor:
        cursor.execute(sql, [_array(getattr(sample, column) for sample in samples) for column in columns])


# receivers.request_evaluation's statement, run by every finished command: written once, not compiled each time.
REQUEST_EVALUATION = (
    f"UPDATE {AccountRisk._meta.db_table} SET evaluate_requested_at = %s "  # noqa: S608
    "WHERE account_id = %s AND evaluate_requested_at IS NULL"
)
