"""Indexes behind the panel's search boxes, filters and newest-first lists on the tables that grow.

They live here, as plain SQL the model state does not track, because the panel owns the queries
they serve and not the models; moving them into each model's Meta.indexes later is a rename away.
`IF NOT EXISTS` keeps the migration safe on a database where someone already added one.
"""

from django.db import migrations

INDEXES = [
    # commands: search by command id, correlation id, idempotency key; filter by state, lane, type, date
    ("panel_cmd_command_id", "commands_command", "command_id"),
    ("panel_cmd_correlation", "commands_command", "correlation_id"),
    ("panel_cmd_idem_key", "commands_command", "idempotency_key"),
    ("panel_cmd_recent", "commands_command", "received_at DESC, id DESC"),
    ("panel_cmd_state_recent", "commands_command", "state, received_at DESC"),
    ("panel_cmd_type_recent", "commands_command", "command_type, received_at DESC"),
    ("panel_cmd_lane_recent", "commands_command", "lane, received_at DESC"),
    ("panel_event_recent", "commands_commandevent", "at DESC, id DESC"),
    # idempotency records: search by key and correlation id; newest first, per tenant
    ("panel_idem_key", "commands_idempotencyrecord", "key"),
    ("panel_idem_correlation", "commands_idempotencyrecord", "correlation_id"),
    ("panel_idem_recent", "commands_idempotencyrecord", "created_at DESC"),
    ("panel_idem_tenant_recent", "commands_idempotencyrecord", "tenant_id, created_at DESC"),
    # protective actions, policy snapshots, risk samples: newest first across tenants
    ("panel_pa_recent", "policies_protectiveaction", "created_at DESC"),
    ("panel_pa_rule_recent", "policies_protectiveaction", "rule_key, created_at DESC"),
    ("panel_policy_recent", "policies_policysnapshot", "received_at DESC"),
    ("panel_sample_recent", "policies_risksample", "at DESC"),
    # callback deliveries: search by key and correlation id, filter by type
    ("panel_cb_idem_key", "callbacks_callbackdelivery", "idempotency_key"),
    ("panel_cb_correlation", "callbacks_callbackdelivery", "correlation_id"),
    ("panel_cb_type_recent", "callbacks_callbackdelivery", "request_type, created_at DESC"),
    ("panel_cbattempt_recent", "callbacks_callbackattempt", "at DESC"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("panel", "0002_roles_and_example_payloads"),
        ("commands", "0002_cache_table_and_queue_index"),
        ("policies", "0003_risk_state_and_protective_actions"),
        ("callbacks", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, table, columns in INDEXES
    ]
