"""The lanes' PostgreSQL statements: claiming a command (with its account and tenant, its timeline
entry and its spent doorbell, in one statement) and recording an attempt. Table and column names
come from the models; every value is a bound parameter. `execution.runner` holds the ORM path
beside each for SQLite.
"""

from __future__ import annotations

from django_q.models import OrmQ

from bridgeproject.dbutil import RowReader
from commands.lanes import Lane
from commands.models import Command, CommandEvent
from execution.yielding import notice_sql
from policies.models import TradingAccount
from tenancy.models import Tenant

COMMAND, ACCOUNT, TENANT = RowReader(Command, "c"), RowReader(TradingAccount, "a"), RowReader(Tenant, "t")


# command_claim's writes as one PostgreSQL statement (table names from the models), which also
# returns the claimed row with its account and tenant; a fast command gets its lease. The lane's
# oldest queued command comes from the (state, lane, updated_at) index, SKIP LOCKED so that
# workers claiming at once take different commands instead of waiting on each other.
_CLAIM_TEMPLATE = f"""
WITH claimed AS (
    UPDATE {Command._meta.db_table}
    SET state = %(to)s, started_at = COALESCE(started_at, %(now)s), updated_at = %(now)s,
        lease_until = CASE WHEN lane = '{Lane.FAST.value}' THEN %(lease)s::timestamptz END
    WHERE id = {{which}} AND state = %(from)s RETURNING *
){{doorbell}}, timeline AS (
    INSERT INTO {CommandEvent._meta.db_table} (command_id, kind, at, from_state, to_state, note)
    SELECT id, %(kind)s, %(now)s, %(from)s, %(to)s, %(worker)s FROM claimed
)
SELECT {COMMAND.columns}, {ACCOUNT.columns}, {TENANT.columns},
    CASE WHEN c.lane = '{Lane.FAST.value}' THEN {notice_sql("busy")} END
FROM claimed c
JOIN {TradingAccount._meta.db_table} a ON a.id = c.account_id
JOIN {Tenant._meta.db_table} t ON t.id = c.tenant_id
"""  # noqa: S608
_NEXT_OF_LANE = f"""(
    SELECT id FROM {Command._meta.db_table} WHERE state = %(from)s AND lane = %(lane)s
    ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED
)"""  # noqa: S608
# One waiting doorbell of the lane goes with the command it was rung for (a doorbell still
# waiting: one already handed to a worker has its lock in the future).
_SPARE_DOORBELL = f""", doorbell AS (
    DELETE FROM {OrmQ._meta.db_table} WHERE id = (
        SELECT id FROM {OrmQ._meta.db_table} WHERE key = %(queue)s AND lock < %(now)s AND EXISTS (SELECT FROM claimed)
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
    )
)"""  # noqa: S608
CLAIM_ONE = _CLAIM_TEMPLATE.replace("{which}", "%(pk)s").replace("{doorbell}", "")
CLAIM_ONE_AND_DOORBELL = _CLAIM_TEMPLATE.replace("{which}", "%(pk)s").replace("{doorbell}", _SPARE_DOORBELL)
CLAIM_NEXT = _CLAIM_TEMPLATE.replace("{which}", _NEXT_OF_LANE).replace("{doorbell}", "")
CLAIM_NEXT_AND_DOORBELL = _CLAIM_TEMPLATE.replace("{which}", _NEXT_OF_LANE).replace("{doorbell}", _SPARE_DOORBELL)


# An attempt's timeline entry; counted: with the command's attempt count in the same statement.
ATTEMPT = f"""
INSERT INTO {CommandEvent._meta.db_table} (command_id, kind, at, from_state, to_state, attempt, note, request, response)
VALUES (%(pk)s, %(kind)s, %(now)s, '', '', %(number)s, %(note)s, %(request)s::jsonb, %(response)s::jsonb)
"""  # noqa: S608
COUNTED_ATTEMPT = f"""
WITH counted AS (
    UPDATE {Command._meta.db_table} SET attempts = attempts + 1, updated_at = %(now)s WHERE id = %(pk)s
    RETURNING id, attempts
)
INSERT INTO {CommandEvent._meta.db_table} (command_id, kind, at, from_state, to_state, attempt, note, request, response)
SELECT id, %(kind)s, %(now)s, '', '', attempts, %(note)s, %(request)s::jsonb, %(response)s::jsonb FROM counted
"""  # noqa: S608
