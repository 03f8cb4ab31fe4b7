"""The OpenAPI document (PROTOCOL §9 "OpenAPI"): served as JSON unless YAML is asked for, 3.1, with
every response header, both callbacks under `webhooks`, and every error code listed."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent, build_choice_field
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.utils import OpenApiResponse, OpenApiWebhook, extend_schema
from drf_spectacular.views import SpectacularAPIView
from pydantic import BaseModel
from rest_framework import serializers

from bridgeproject.errors import PROBLEM_CODES
from commands import schema_docs as docs
from commands.error_codes import describe_command_error_codes
from commands.models import CommandType, Priority


class SchemaView(SpectacularAPIView):
    """GET /api/v1/schema: JSON by default (`Accept: */*` included), YAML on `?format=yaml` or
    `Accept: application/yaml`."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2]
    authentication_classes: list = []
    permission_classes: list = []


def _untitled(node: Any) -> Any:
    """Pydantic titles every schema after its class or field name; the document names components
    by their keys, so the titles are dropped (a property called `title` is a schema, not text)."""
    if isinstance(node, dict):
        return {key: _untitled(value) for key, value in node.items() if not (key == "title" and isinstance(value, str))}
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    return node


def _choices_as_drf_names_them(node: Any) -> Any:
    """An enum of a model's TextChoices (command types, priorities) documented as the response
    serializers document it, so requests and responses share one named enum component."""
    if isinstance(node, dict):
        for choices in (CommandType, Priority):
            if node.get("enum") == list(choices.values):
                node.update(build_choice_field(serializers.ChoiceField(choices=choices.choices)))
        for value in node.values():
            _choices_as_drf_names_them(value)
    elif isinstance(node, list):
        for item in node:
            _choices_as_drf_names_them(item)
    return node


class RequestModelExtension(OpenApiSerializerExtension):
    """A request model (pydantic, `commands.schema` / `policies.schema`) as a component: the JSON
    Schema of what it validates. Its nested models become components of their own, named as
    drf-spectacular names request components (`<Model>Request`)."""

    target_class = BaseModel
    match_subclasses = True
    priority = 1  # before drf_spectacular.contrib.pydantic, which documents the serialized form

    def get_name(self, auto_schema: Any, direction: str) -> str:
        return self.target.__name__

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        suffix = "Request" if direction == "request" else ""
        model: type[BaseModel] = self.target
        schema = model.model_json_schema(ref_template=f"#/components/schemas/{{model}}{suffix}", mode="validation")
        for name, sub_schema in schema.pop("$defs", {}).items():
            auto_schema.registry.register_on_missing(
                ResolvedComponent(
                    name=f"{name}{suffix}",
                    type=ResolvedComponent.SCHEMA,
                    object=f"{name}{suffix}",
                    schema=_choices_as_drf_names_them(_untitled(sub_schema)),
                )
            )
        return _choices_as_drf_names_them(_untitled(schema))


_SIGNATURE = (
    "Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256 of webhook-id.webhook-timestamp.body>` with"
    " LARAVEL_WEBHOOK_SECRET (sent only when it is set). Verify it with the Standard Webhooks library"
    " (PHP: `new StandardWebhooks\\\\Webhook($secret)`, then `verify($payload, $headers)`)."
)


def _webhook(name: str, summary: str, body: Any) -> OpenApiWebhook:
    return OpenApiWebhook(
        name=name,
        decorator=extend_schema(
            summary=summary,
            description=_SIGNATURE
            + " Delivered at least once, in order per account; retried on 5xx, 408, 409, 425, 429 and timeouts"
            " for 24 h (Retry-After honoured); any other 4xx dead-letters that one callback.",
            request=body,
            responses={
                200: OpenApiResponse(description="Received (any 2xx)."),
                409: OpenApiResponse(description="Retried later."),
                429: OpenApiResponse(description="Retried after Retry-After."),
            },
        ),
    )


PROTECTIVE_ACTION_WEBHOOK = _webhook(
    "protective_action_report",
    "A protective action's outcome (POST {LARAVEL_API_URL}/api/internal/mt5/protective-actions)",
    docs.ProtectiveActionReportDoc,
)
COMMAND_RESULT_WEBHOOK = _webhook(
    "command_result",
    "A command's terminal state (POST {LARAVEL_API_URL}/api/internal/mt5/command-results)",
    docs.CommandResultDoc,
)


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


HEADERS = {
    "X-Correlation-ID": _header("The request's correlation id (generated when it sent none); on every response."),
    "Idempotent-Replayed": _header(
        "`true` when the answer is the stored answer to an earlier request with this idempotency key.",
        {"type": "string", "enum": ["true"]},
    ),
    "Retry-After": _header("Seconds to wait before retrying.", {"type": "integer", "minimum": 1}),
    "WWW-Authenticate": _header('`Bearer realm="mt5-bridge"`.'),
}

# Authorization (`Bearer {LARAVEL_INTERNAL_TOKEN}`) is the webhooks' security scheme, not a header
# parameter: OpenAPI ignores a header parameter named Authorization.
_WEBHOOK_HEADERS = [
    ("webhook-id", "The callback's id (= meta.request_id); the same on every retry.", False),
    ("webhook-timestamp", "Unix seconds of this attempt.", False),
    ("webhook-signature", "`v1,<base64 HMAC-SHA256>` (Standard Webhooks); when LARAVEL_WEBHOOK_SECRET is set.", False),
    ("X-Idempotency-Key", "= meta.idempotency_key: de-duplicate on it.", True),
    ("X-Correlation-ID", "= meta.correlation_id.", True),
    ("X-Protocol-Version", "`1`.", True),
]


# Redocly's recommended rules and Spectral's `spectral:oas` (tests/test_openapi_tools.py) want these.
# The server is relative: the bridge the document was fetched from.
SERVERS = [{"url": "/", "description": "This bridge: the host the document was fetched from."}]
TAGS = [
    {"name": "health", "description": "Liveness and readiness; public."},
    {"name": "ingest", "description": "One endpoint for every inbound envelope, routed by `request.type`."},
    {"name": "mt5", "description": "Commands, policy snapshots, the sync account read and protective actions."},
]
# Each operation's description (its summary is on its view): what a client must know beyond the schema.
OPERATION_DESCRIPTIONS = {
    "ingest": "A command envelope (answered 202, as `command_create`) or a policy snapshot envelope (200, as"
    " `policy_apply`), chosen by `request.type`. Idempotent on `X-Idempotency-Key`, else `meta.idempotency_key`.",
    "command_create": "Accepts a command envelope, or the legacy flat body, and queues it: 202 with its lane and"
    " state. Its outcome comes later, by the `command_result` callback and at `GET /api/v1/mt5/commands/{id}`."
    " Idempotent on `X-Idempotency-Key`, else `meta.idempotency_key` (a flat body: its `command_id`).",
    "command_list": "The calling tenant's commands, filtered by account, state and receipt time; follow `next`"
    " for the following page. An unknown query parameter is 422.",
    "command_get": "A command by the `command_id` the client gave it, with its timeline and MT5 result.",
    "policy_apply": "Applies a policy snapshot; the first one for an account registers the account for the"
    " tenant. An older `policy_version` is 409 `stale_policy_version`; the same version with another payload"
    " is 409 `policy_version_conflict`; the same one again is 200 `unchanged`.",
    "account_get": "Reads the account from its MT5 terminal now (before the risk monitor's reads and normal"
    " commands) and answers with the snapshot, the policy version and the risk state. 503 `mt5_unavailable`,"
    " with the last known snapshot and its age, when the terminal cannot be reached.",
    "protective_actions_list": "The protective actions the risk engine took on this account, each with its"
    " outcome, newest first; follow `next` for older ones.",
}
WEBHOOK_SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "On callbacks (`webhooks`): the bridge sends `Authorization: Bearer {LARAVEL_INTERNAL_TOKEN}`.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _any_or_null(node: Any) -> None:
    """A nullable free-form JSON field comes out of drf-spectacular as `oneOf: [{type: null}, {}]`,
    which `null` matches twice (invalid under oneOf); any value, null included, is `{}`."""
    if isinstance(node, dict):
        one_of = node.get("oneOf")
        if isinstance(one_of, list) and {} in one_of and {"type": "null"} in one_of and len(one_of) == 2:
            del node["oneOf"]
        for child in node.values():
            _any_or_null(child)
    elif isinstance(node, list):
        for child in node:
            _any_or_null(child)


def _request_defaults_in_words(schemas: dict[str, Any]) -> None:
    """A request body's optional field with a `default` (the bridge's value when it is absent)
    keeps that value in its description instead: openapi-typescript, by default, types every
    property with a `default` as required, request bodies included, and would then refuse the
    seed's own policy snapshot for lacking `close_all_on_total_dd`. Responses keep `default`."""
    for name, schema in schemas.items():
        if not name.endswith("Request"):  # COMPONENT_SPLIT_REQUEST: the request-side components
            continue
        required = set(schema.get("required", []))
        for field, node in schema.get("properties", {}).items():
            if isinstance(node, dict) and "default" in node and field not in required:
                value = json.dumps(node.pop("default"))
                node["description"] = f"{node.get('description', '')} Absent: `{value}`.".strip()


def document_headers_and_codes(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: response headers, the webhooks' request headers and
    security, the error codes (problem codes on Problem.code, command error codes on
    Command.error_code), and the servers, tags and operation descriptions the linters ask for."""
    components = result.setdefault("components", {})
    components.setdefault("headers", {}).update(HEADERS)
    components.setdefault("securitySchemes", {})["laravelInternalToken"] = WEBHOOK_SECURITY_SCHEME
    result.setdefault("servers", SERVERS)
    result.setdefault("tags", TAGS)
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if not operation.get("description") and operation.get("operationId") in OPERATION_DESCRIPTIONS:
                operation["description"] = OPERATION_DESCRIPTIONS[operation["operationId"]]
            if "requestBody" in operation:
                # Every POST here needs its body; generators then make it a required argument.
                operation["requestBody"]["required"] = True
            for status, response in operation["responses"].items():
                headers = response.setdefault("headers", {})
                headers["X-Correlation-ID"] = _ref("X-Correlation-ID")
                if method == "post" and status in {"200", "202"}:
                    headers["Idempotent-Replayed"] = _ref("Idempotent-Replayed")
                if status in {"429", "503"}:
                    headers["Retry-After"] = _ref("Retry-After")
                if status == "401":
                    headers["WWW-Authenticate"] = _ref("WWW-Authenticate")
    for webhook_name, webhook in result.get("webhooks", {}).items():
        for operation in webhook.values():
            if isinstance(operation, dict):
                operation["operationId"] = webhook_name
                operation["parameters"] = [
                    {
                        "name": name,
                        "in": "header",
                        "required": required,
                        "description": text,
                        "schema": {"type": "string"},
                    }
                    for name, text, required in _WEBHOOK_HEADERS
                ]
                # Not the API's schemes: the bridge is the caller here, with Laravel's token.
                operation["security"] = [{"laravelInternalToken": []}]
    _any_or_null(result)
    schemas = components.get("schemas", {})
    _request_defaults_in_words(schemas)
    problem = schemas.get("Problem", {}).get("properties", {}).get("code")
    if problem is not None:
        problem["description"] = "A stable snake_case code:\n" + "\n".join(
            f"- `{code}` ({status}): {meaning}" for code, (status, meaning) in PROBLEM_CODES.items()
        )
    command = schemas.get("Command", {}).get("properties", {}).get("error_code")
    if command is not None:
        command["description"] = "Null unless the command failed, was rejected or expired; then one of:\n" + (
            describe_command_error_codes()
        )
    return result
