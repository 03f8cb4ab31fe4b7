"""Schemathesis against /api/v1/schema, in-process, as each tenant: no 5xx, every response as documented.

The short CI run (FUZZ_MAX_EXAMPLES, 12 by default: about 200 cases per tenant over every
operation, valid and invalid data). The long run is `drills/fuzz.py` (thousands of cases against
a real gunicorn, the stateful phase included).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import drills.fuzz_hooks
from bridgeproject.ratelimit import auth_failures
from execution.gateways import reset_gateway
from execution.simulator.service import sim_account_create
from tests.conftest import ALICE_TOKEN, BOB_TOKEN, register_account

# Hypothesis's example database stays out of the work tree (var/ is ignored).
set_hypothesis_home_dir(str(Path(__file__).resolve().parent.parent / "var" / ".hypothesis"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
]
FUZZ = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api_schema(db, settings, tenant_1, tenant_2):
    # ignored_auth sends wrong tokens on purpose: the failure limiter would soon answer 429 only.
    settings.AUTH_FAILURES_PER_MINUTE = 0
    auth_failures.clear()
    reset_gateway()
    for tenant, login in ((tenant_1, 50040367), (tenant_2, 50040368)):
        sim_account_create(login=login, balance=100_000, server="Broker-Server")
        register_account(tenant, login=login)
    # As Django's test client does: a request must not close the test's connection (and transaction).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def fuzz(schema, monkeypatch, *, tenant: str, login: int, token: str) -> tuple[int, list[str]]:
    """Every operation, valid and invalid data; returns (cases run, distinct failures)."""
    monkeypatch.setenv("FUZZ_TENANT", tenant)
    monkeypatch.setenv("FUZZ_LOGIN", str(login))
    monkeypatch.setenv("FUZZ_SERVER", "Broker-Server")
    # No lane runs here: health would be a documented 503 `down`, which schemathesis counts as a
    # server error. The lanes are not what this test is about; health's verdicts have their own.
    monkeypatch.setattr("execution.health.workers_alive", lambda lane: 1)
    failures: dict[str, str] = {}
    cases = [0]

    def runner(operation, mode):
        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            cases[0] += 1
            case = drills.fuzz_hooks.map_case(None, case)
            try:
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
            except (Exception, FailureGroup) as exc:  # every failure is collected, not just the first
                found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
                kinds = ", ".join(sorted({getattr(f, "title", "") or type(f).__name__ for f in found}))
                failures.setdefault(f"{operation.label}: {kinds}", str(exc)[:3000])

        return run

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                runner(result.ok(), mode)()
            except Unsatisfiable:
                # No invalid request exists for an operation without inputs (GET /health).
                assert mode == GenerationMode.NEGATIVE
    return cases[0], [f"{key}\n{text}" for key, text in sorted(failures.items())]


def test_every_operation_answers_as_documented_for_tenant_1(api_schema, monkeypatch):
    cases, failures = fuzz(api_schema, monkeypatch, tenant="tenant_1", login=50040367, token=ALICE_TOKEN)
    assert cases >= 8 * MAX_EXAMPLES
    assert not failures, "\n\n".join(failures)


def test_every_operation_answers_as_documented_for_tenant_2(api_schema, monkeypatch):
    cases, failures = fuzz(api_schema, monkeypatch, tenant="tenant_2", login=50040368, token=BOB_TOKEN)
    assert cases >= 8 * MAX_EXAMPLES
    assert not failures, "\n\n".join(failures)
