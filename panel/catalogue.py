"""The command catalogue for the Laravel developer: every request and command type, its fields, rules, lane, example.

Fields come from the API's request models (panel.fieldspec) and examples from the builder
(panel.payloads), which validates them with those same serializers; the rules below are the
cross-field ones a field list cannot show, and tests hold each against the serializers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from commands import examples
from panel import fieldspec
from panel.payloads import COMMAND, FLAT_COMMAND, POLICY_SNAPSHOT, SAMPLE_ACCOUNT, build_request, sample_fields

FAST_RULE = "fast when fast_lane is true or priority is critical (and always for protective commands); normal otherwise"

COMMAND_RULES: dict[str, list[str]] = {
    "open_position": [
        "Rejected while trading is disabled for the account "
        "(disable_trading, or a breach with disable_trading_on_breach).",
        "open_price absent: a market order; stop_loss / take_profit optional.",
    ],
    "close_position": ["volume present: a partial close of that volume; absent: the whole position."],
    "close_positions": [
        "target.symbols is required when target.mode is by_symbol.",
        "target.tickets is required when target.mode is by_tickets.",
    ],
    "modify_position": ["Give stop_loss, take_profit or both."],
    "cancel_orders": ["tickets absent: every pending order of the account."],
    "disable_trading": ["An account-level switch the bridge enforces: new open_position commands are rejected."],
    "enable_trading": ["Lifts disable_trading (not a risk breach's block)."],
    "sync_account": ["Refreshes the account's MT5 snapshot now."],
}
COMMON_RULES = [
    "command_id is unique per tenant: reusing it with another idempotency key is 409 duplicate_command_id.",
    "Same idempotency key and same body: the stored response again, with Idempotent-Replayed: true.",
    "expires_at_utc passed before execution: the command ends expired.",
]


@dataclass
class Entry:
    key: str
    title: str
    method: str
    path: str
    description: str
    lane: str = ""
    fields: list[dict[str, Any]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    example: str = ""
    builder_query: str = ""
    outbound: bool = False


def flatten(specs: list[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    """Nested field specs as rows with dotted names, and their limits as one readable string."""
    rows = []
    for spec in specs:
        name = f"{prefix}{spec['name']}"
        kind = spec["kind"] if spec["kind"] != "list" else f"list of {spec['child']['kind']}"
        limits = []
        if spec.get("choices"):
            limits.append(" | ".join(spec["choices"]))
        if "min_value" in spec:
            limits.append(f"≥ {spec['min_value']:g}")
        if "max_value" in spec:
            limits.append(f"≤ {spec['max_value']:g}")
        if "max_length" in spec:
            limits.append(f"≤ {spec['max_length']} chars")
        if spec.get("allow_null"):
            limits.append("null allowed")
        rows.append(
            {
                "name": name,
                "kind": kind,
                "required": spec["required"],
                "default": "" if spec["default"] is None else json.dumps(spec["default"]),
                "limits": "; ".join(limits),
            }
        )
        if spec["kind"] == "object" and spec.get("fields"):
            rows.extend(flatten(spec["fields"], f"{name}."))
    return rows


def _example(request_type: str, command_type: str | None = None) -> str:
    built = build_request(
        request_type=request_type,
        tenant_id=examples.DEMO_TENANT,
        account=SAMPLE_ACCOUNT,
        command_type=command_type,
        fields=sample_fields(request_type, command_type),
    )
    return built.body_json()


def catalogue_entries() -> list[Entry]:
    builder = reverse("panel:builder")
    entries: list[Entry] = []
    common = fieldspec.command_common_spec()
    for command_type in fieldspec.COMMAND_TYPES:
        entries.append(
            Entry(
                key=f"command-{command_type}",
                title=f"command: {command_type}",
                method="POST",
                path="/api/v1/mt5/commands (or /api/v1/ingest)",
                description=(
                    f"An envelope with request.type = command and payload.command_type = {command_type}. 202 accepted."
                ),
                lane=f"{fieldspec.default_lane(command_type)} by default; {FAST_RULE}",
                fields=flatten(
                    [
                        {"name": "command_id", "kind": "text", "required": True, "default": None},
                        *common,
                        *fieldspec.command_specific_spec(command_type),
                    ],
                    "payload.",
                ),
                rules=COMMAND_RULES.get(command_type, []) + COMMON_RULES,
                example=_example(COMMAND, command_type),
                builder_query=f"{builder}?{urlencode({'request_type': COMMAND, 'command_type': command_type})}",
            )
        )
    entries.append(
        Entry(
            key="policy_snapshot",
            title="policy_snapshot",
            method="POST",
            path="/api/v1/mt5/policies (or /api/v1/ingest)",
            description=(
                "The account's risk policy; the first snapshot registers the account for the tenant. "
                "200 applied / unchanged."
            ),
            fields=flatten(fieldspec.policy_spec(), "payload."),
            rules=[
                "policy_version is monotonic per account: an older one is 409 stale_policy_version.",
                "The same version with a different payload is 409 policy_version_conflict; identical is 200 unchanged.",
                "An account belongs to the tenant whose first snapshot registered it; another tenant gets 403.",
            ],
            example=_example(POLICY_SNAPSHOT),
            builder_query=f"{builder}?{urlencode({'request_type': POLICY_SNAPSHOT})}",
        )
    )
    entries.append(
        Entry(
            key="flat_command",
            title="legacy flat command (the PowerShell quick test)",
            method="POST",
            path="/api/v1/mt5/commands",
            description=(
                "The flat body of the panel's PowerShell test; kept working. "
                "Its idempotency key is X-Idempotency-Key, else command_id."
            ),
            lane=FAST_RULE,
            fields=flatten(fieldspec.flat_spec()),
            rules=["payload holds the command type's fields, validated as for the envelope."],
            example=_example(FLAT_COMMAND, "open_position"),
            builder_query=f"{builder}?{urlencode({'request_type': FLAT_COMMAND, 'command_type': 'open_position'})}",
        )
    )
    entries.append(
        Entry(
            key="sync_request",
            title="sync request",
            method="GET",
            path="/api/v1/mt5/accounts/{account_login}",
            description=(
                "The live MT5 snapshot (balance, equity, margin, positions, orders), the policy version and the risk "
                "state; 503 mt5_unavailable with the last known snapshot when the terminal is unreachable."
            ),
            rules=["A token scoped to several tenants sends X-Tenant-ID."],
            builder_query=f"{builder}?{urlencode({'request_type': 'sync_request'})}",
        )
    )
    for request_type, description in (
        (
            "protective_action_report",
            "Python → Laravel, POST {LARAVEL_API_URL}/api/internal/mt5/protective-actions: "
            "what the bridge did about a breach.",
        ),
        (
            "command_result",
            "Python → Laravel, POST {LARAVEL_API_URL}/api/internal/mt5/command-results: a command's outcome.",
        ),
    ):
        entries.append(
            Entry(
                key=request_type,
                title=f"{request_type} (callback to Laravel)",
                method="POST",
                path="Laravel",
                description=description,
                rules=[
                    "At-least-once from a durable outbox; meta.idempotency_key never changes across retries: "
                    "de-duplicate on it.",
                    "Signed with Standard Webhooks headers when LARAVEL_WEBHOOK_SECRET is set.",
                ],
                example=json.dumps(examples.PROTECTIVE_ACTION_REPORT, indent=2)
                if request_type == "protective_action_report"
                else "",
                outbound=True,
            )
        )
    return entries
