"""The commands app's PostgreSQL statements: accepting a command (its row, its timeline, its
idempotency record and, on the ORM broker, its doorbell, in one statement) and a state
transition with its timeline entry. Table and column names come from the models; every value is
a bound parameter. The ORM path beside each, for SQLite, is in `commands.services` and
`commands.models`.
"""

from __future__ import annotations

from typing import cast

from django.db import models
from django_q.models import OrmQ

from commands.models import Command, CommandEvent, IdempotencyRecord

# The same rows _store and the idempotency record's save write, as one PostgreSQL statement. The
# id comes from the column's default: nothing in the statement's values needs it beforehand.
# Table names come from the models; every value is a bound parameter.
_ACCEPT_TEMPLATE = f"""
WITH command AS (
    INSERT INTO {Command._meta.db_table} (
        tenant_id, account_id, command_id, command_type, priority, lane, state, source, reason,
        payload, envelope, correlation_id, idempotency_key, expires_at, attempts, error_code,
        error_message, received_at, queued_at, updated_at
    ) VALUES (
        %(tenant_id)s::bigint, %(account_id)s, %(command_id)s, %(command_type)s, %(priority)s, %(lane)s,
        %(state)s::varchar, %(source)s, %(reason)s, %(payload)s::jsonb, %(envelope)s::jsonb, %(correlation_id)s,
        %(idempotency_key)s::varchar, %(expires_at)s, 0, '', '', %(at)s::timestamptz, %(at)s::timestamptz,
        %(at)s::timestamptz
    ) RETURNING id
), timeline AS (
    INSERT INTO {CommandEvent._meta.db_table} (command_id, kind, at, from_state, to_state, note)
    SELECT id, %(transition)s::varchar, %(at)s::timestamptz, '', %(received)s::varchar, '' FROM command
    UNION ALL
    SELECT id, %(transition)s::varchar, %(at)s::timestamptz, %(received)s::varchar, %(state)s::varchar,
        %(lane_note)s::varchar FROM command
){{task}}
INSERT INTO {IdempotencyRecord._meta.db_table} (
    tenant_id, key, fingerprint, method, path, request_type, status_code, response_body,
    correlation_id, created_at, completed_at, expires_at
)
SELECT %(tenant_id)s::bigint, %(idempotency_key)s::varchar, %(fingerprint)s, %(method)s, %(path)s, %(request_type)s,
    %(status_code)s, %(response_body)s::jsonb, %(record_correlation_id)s, %(at)s::timestamptz,
    %(completed_at)s::timestamptz, %(record_expires_at)s::timestamptz
FROM command
RETURNING (SELECT id FROM command)
"""  # noqa: S608
# The doorbell as a row of the same statement, for a lane on the ORM broker.
_TASK = f""", task AS (
    INSERT INTO {OrmQ._meta.db_table} (key, payload, lock) SELECT %(queue)s, %(task)s, %(at)s::timestamptz FROM command
)"""  # noqa: S608
ACCEPT = _ACCEPT_TEMPLATE.replace("{task}", "")
ACCEPT_WITH_TASK = _ACCEPT_TEMPLATE.replace("{task}", _TASK)
# The bridge's own commands (command_create: a protective action's attempts, the panel's kill
# switch) have no idempotency record: the command, its timeline and its doorbell.
_CREATE_TEMPLATE = _ACCEPT_TEMPLATE[: _ACCEPT_TEMPLATE.index("{task}") + len("{task}")] + "\nSELECT id FROM command\n"
CREATE = _CREATE_TEMPLATE.replace("{task}", "")
CREATE_WITH_TASK = _CREATE_TEMPLATE.replace("{task}", _TASK)


# The transition statement for each set of changed fields, built once. Bounded by the sets the
# code writes (a handful), never by input.
_transitions: dict[tuple[str, ...], str] = {}


def transition(names: tuple[str, ...]) -> str:
    """UPDATE the command's `names` columns and INSERT the transition's timeline entry."""
    statement = _transitions.get(names)
    if statement is None:
        # update_fields names concrete columns of Command, never a relation's reverse side.
        columns = [cast("models.Field", Command._meta.get_field(name)).column for name in names]
        assignments = ", ".join(f'"{column}" = %s' for column in columns)
        statement = _transitions[names] = f"""
WITH moved AS (UPDATE {Command._meta.db_table} SET {assignments} WHERE id = %s RETURNING id)
INSERT INTO {CommandEvent._meta.db_table} (command_id, kind, at, from_state, to_state, note)
SELECT id, %s, %s, %s, %s, %s FROM moved RETURNING id
"""  # noqa: S608
    return statement
