"""Thin views: parse, call the intake pipeline or a selector, shape the answer."""

from __future__ import annotations

from collections.abc import Iterable

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bridgeproject.errors import BridgeError, validation_error
from bridgeproject.schema import parse_utc
from commands import schema_docs as docs
from commands import selectors
from commands.intake import handle_post, read_tenant
from commands.serializers import AcceptedSerializer, CommandDetailSerializer, CommandSerializer, PolicyResultSerializer
from commands.states import State

IDEMPOTENCY_PARAMS = [
    OpenApiParameter("X-Idempotency-Key", str, OpenApiParameter.HEADER, description="1–255 printable ASCII."),
    OpenApiParameter("X-Correlation-ID", str, OpenApiParameter.HEADER, description="Echoed; generated when absent."),
    OpenApiParameter("X-Protocol-Version", str, OpenApiParameter.HEADER, description="Defaults to 1."),
]
SERVER_PARAM = OpenApiParameter(
    "server",
    str,
    description="The account's server, when the caller has its login on several (else 409 ambiguous_account);"
    " compared trimmed and case-insensitively.",
)


def server_of(request: Request) -> str | None:
    """The `?server=` of an account read, or None; 422 when it is given but names no server."""
    raw = request.query_params.get("server")
    if raw is None:
        return None
    if not raw.strip() or len(raw) > 128 or not raw.isprintable():
        raise validation_error([{"field": "server", "message": "A server name: 1–128 printable characters."}])
    return raw


TENANT_PARAM = OpenApiParameter(
    "X-Tenant-ID", str, OpenApiParameter.HEADER, description="Which tenant, for a token scoped to several."
)


class JsonAnswers(DefaultContentNegotiation):
    """The envelope endpoints answer JSON whatever Accept says (their only renderer), without
    parsing Accept on every request; bodies are still matched against the JSON parser (415)."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class IngestView(APIView):
    content_negotiation_class = JsonAnswers

    @extend_schema(
        operation_id="ingest",
        summary="Any inbound envelope, routed by request.type",
        request=docs.InboundEnvelopeDoc,
        parameters=IDEMPOTENCY_PARAMS,
        responses={200: PolicyResultSerializer, 202: AcceptedSerializer, **docs.POST_PROBLEMS},
        examples=[*docs.COMMAND_EXAMPLES, docs.POLICY_SNAPSHOT_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        return handle_post(request, request_types=frozenset({"command", "policy_snapshot"}), allow_flat=False)


class StrictCursorPagination(CursorPagination):
    """Cursor pagination ordered by a timestamp: a cursor it did not make is a 400 `invalid_cursor`,
    never a query with a position the database cannot read (that was a 500)."""

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = None
            valid = False
        else:
            valid = cursor is None or cursor.position is None or parse_utc(str(cursor.position)) is not None
        if not valid:
            raise BridgeError(
                400, "invalid_cursor", "The cursor is not one this API gave: follow the `next` or `previous` link."
            )
        return cursor


class CommandPagination(StrictCursorPagination):
    ordering = ("-received_at", "-id")
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= self.max_page_size):
            raise validation_error([{"field": "page_size", "message": f"An integer from 1 to {self.max_page_size}."}])
        return super().get_page_size(request)


# The command list's query parameters: any other is refused, so a misspelt filter never
# silently lists everything.
LIST_QUERY_PARAMETERS = frozenset({"account_login", "server", "state", "since", "cursor", "page_size"})


class CommandsView(APIView):
    content_negotiation_class = JsonAnswers

    @extend_schema(
        operation_id="command_create",
        summary="Submit a command (envelope, or the legacy flat body)",
        request=docs.CommandBodyDoc,
        parameters=IDEMPOTENCY_PARAMS,
        responses={202: AcceptedSerializer, **docs.POST_PROBLEMS},
        examples=[*docs.COMMAND_EXAMPLES, docs.LEGACY_FLAT_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        return handle_post(request, request_types=frozenset({"command"}), allow_flat=True)

    @extend_schema(
        operation_id="command_list",
        summary="The tenant's commands, newest first, cursor-paginated",
        parameters=[
            OpenApiParameter("account_login", int),
            SERVER_PARAM,
            OpenApiParameter("state", str, enum=State.values),
            OpenApiParameter("since", str, description="ISO-8601; commands received at or after."),
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
            TENANT_PARAM,
        ],
        responses={200: docs.cursor_page("CommandPage", CommandSerializer(many=True)), **docs.GET_PROBLEMS},
    )
    def get(self, request: Request) -> Response:
        tenant = read_tenant(request)
        params = request.query_params
        errors = [
            {"field": name or "(empty name)", "message": "Not a query parameter of this endpoint."}
            for name in sorted(set(params) - LIST_QUERY_PARAMETERS)
        ]
        login = params.get("account_login")
        if login is not None and not login.isdigit():
            errors.append({"field": "account_login", "message": "Must be an integer."})
        state = params.get("state")
        if state is not None and state not in State.values:
            errors.append({"field": "state", "message": f"One of {', '.join(State.values)}."})
        since_raw = params.get("since")
        since = parse_utc(since_raw) if since_raw else None
        if since_raw and since is None:
            errors.append({"field": "since", "message": "An ISO-8601 timestamp with Z or an offset, of a real date."})
        if errors:
            raise validation_error(errors)
        server = server_of(request)
        if server is not None and login is None:
            raise validation_error([{"field": "server", "message": "Only with account_login."}])
        commands = selectors.command_list(
            tenant=tenant, account_login=int(login) if login else None, server=server, state=state, since=since
        )
        paginator = CommandPagination()
        page = paginator.paginate_queryset(commands, request, view=self)
        return paginator.get_paginated_response(CommandSerializer(page, many=True).data)


class CommandDetailView(APIView):
    @extend_schema(
        operation_id="command_get",
        summary="One command: state, lane, attempts, timestamps, MT5 result, timeline",
        parameters=[TENANT_PARAM],
        responses={200: CommandDetailSerializer, **docs.GET_PROBLEMS},
    )
    def get(self, request: Request, command_id: str) -> Response:
        command = selectors.command_get(tenant=read_tenant(request), command_id=command_id)
        return Response(CommandDetailSerializer(command).data)


class PoliciesView(APIView):
    content_negotiation_class = JsonAnswers

    @extend_schema(
        operation_id="policy_apply",
        summary="A policy snapshot",
        request=docs.PolicyEnvelopeDoc,
        parameters=IDEMPOTENCY_PARAMS,
        responses={200: PolicyResultSerializer, **docs.POST_PROBLEMS},
        examples=[docs.POLICY_SNAPSHOT_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        return handle_post(request, request_types=frozenset({"policy_snapshot"}), allow_flat=False)
