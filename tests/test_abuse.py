"""Abuse: floods and brute force are limited per client, secrets never leak, hostile bodies are 4xx."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ

from bridgeproject.logging import JsonFormatter
from bridgeproject.ratelimit import auth_failures, client_of
from commands import examples
from commands.models import Command, CommandEvent, IdempotencyRecord
from execution.gateways import get_gateway, reset_gateway
from execution.runner import command_execute
from execution.simulator.service import sim_account_create, sim_set_price
from policies.models import PolicySnapshot
from tests.conftest import ALICE_TOKEN, Api, fresh

ATTACKER = "203.0.113.66"
LARAVEL = "198.51.100.10"


@pytest.fixture(autouse=True)
def _fresh_limiter(settings) -> Iterator[None]:
    settings.AUTH_FAILURES_PER_MINUTE = 5
    settings.AUTH_FAILURE_WINDOW_SECONDS = 60
    settings.TRUSTED_PROXY_COUNT = 0
    settings.RATE_LIMIT_REDIS_URL = ""
    auth_failures.clear()
    yield
    auth_failures.clear()


def as_client(address: str, token: str | None, **extra: str) -> dict[str, str]:
    headers = {"REMOTE_ADDR": address, **extra}
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return headers


def get_commands(client: Client, address: str, token: str | None, **extra: str):
    return client.get("/api/v1/mt5/commands", **as_client(address, token, **extra))


def flood(client: Client, address: str, count: int, **extra: str) -> list[int]:
    return [get_commands(client, address, f"guess-{n}", **extra).status_code for n in range(count)]


# --- unknown-token floods and brute force --------------------------------------------------------


def test_unknown_tokens_past_the_limit_are_answered_429_with_retry_after(client, tenant_1):
    statuses = flood(client, ATTACKER, 7)
    assert statuses == [401] * 5 + [429] * 2
    response = get_commands(client, ATTACKER, "guess-again")
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_laravel_behind_the_attackers_address_still_gets_its_critical_close_accepted(client, account_1, settings):
    settings.AUTH_FAILURES_PER_MINUTE = 30
    statuses = flood(client, ATTACKER, 31)  # the 31 bad tokens from one address
    assert statuses[-1] == 429
    body = copy.deepcopy(examples.CLOSE_POSITIONS)  # priority critical, fast lane
    response = client.post(
        "/api/v1/mt5/commands",
        data=json.dumps(body),
        content_type="application/json",
        **as_client(ATTACKER, ALICE_TOKEN),
    )
    assert response.status_code == 202, response.content
    assert Command.objects.get(command_id="cmd-10001").lane == "fast"
    assert get_commands(client, ATTACKER, ALICE_TOKEN).status_code == 200
    assert get_commands(client, ATTACKER, "guess-after").status_code == 429  # the guessing stays blocked


def test_a_blocked_clients_further_guesses_are_not_counted_again(client, tenant_1, monkeypatch):
    flood(client, ATTACKER, 6)
    counted: list[str] = []
    monkeypatch.setattr(auth_failures.store, "incr", lambda key, ttl: counted.append(key) or 99)
    assert flood(client, ATTACKER, 3) == [429] * 3
    assert counted == []


def test_a_valid_token_from_another_client_still_works_during_a_flood(client, tenant_1):
    flood(client, ATTACKER, 20)
    assert get_commands(client, LARAVEL, ALICE_TOKEN).status_code == 200


def test_the_success_path_never_touches_the_failure_store(client, tenant_1):
    assert get_commands(client, LARAVEL, ALICE_TOKEN).status_code == 200  # warms the token cache
    with CaptureQueriesContext(connection) as queries:
        assert get_commands(client, LARAVEL, ALICE_TOKEN).status_code == 200
    assert not [q["sql"] for q in queries if "bridge_cache" in q["sql"] or "api_token" in q["sql"].lower()]


def test_failures_are_counted_in_the_shared_store_so_every_process_sees_them(client, tenant_1):
    flood(client, ATTACKER, 6)
    auth_failures.clear()  # another process: it has not seen the block, only the shared count
    assert get_commands(client, ATTACKER, "one-more-guess").status_code == 429


def test_a_missing_authorization_header_is_401_and_not_counted(client, tenant_1):
    statuses = [get_commands(client, ATTACKER, None).status_code for _ in range(10)]
    assert statuses == [401] * 10


def test_x_forwarded_for_is_not_believed_unless_a_proxy_is_trusted(client, tenant_1):
    statuses = [
        get_commands(client, ATTACKER, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").status_code for n in range(7)
    ]
    assert statuses[-1] == 429, "rotating X-Forwarded-For must not reset an untrusted client's count"


def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_saw(client, settings, tenant_1):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    # The attacker forges the left part; the proxy appends the address it really saw.
    statuses = [
        get_commands(client, proxy, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, {ATTACKER}").status_code
        for n in range(6)
    ]
    assert statuses[-1] == 429
    assert get_commands(client, proxy, ALICE_TOKEN, HTTP_X_FORWARDED_FOR=LARAVEL).status_code == 200


def test_ipv6_clients_are_grouped_by_their_64_prefix(rf, settings):
    first = client_of(rf.get("/", REMOTE_ADDR="2001:db8:1:2::1"))
    second = client_of(rf.get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9"))
    other = client_of(rf.get("/", REMOTE_ADDR="2001:db8:1:3::1"))
    assert first == second == "2001:db8:1:2::/64"
    assert other != first
    assert client_of(rf.get("/", REMOTE_ADDR="::ffff:192.0.2.7")) == "192.0.2.7"


def test_a_broken_failure_store_fails_open_and_never_answers_500(client, monkeypatch, tenant_1):
    def broken(key: str, ttl: int) -> int:
        raise ConnectionError("store down")

    monkeypatch.setattr(auth_failures.store, "incr", broken)
    assert flood(client, ATTACKER, 8) == [401] * 8
    assert get_commands(client, ATTACKER, ALICE_TOKEN).status_code == 200


class FakeRedis:
    """Just the pipeline calls the limiter makes, with Redis's semantics."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.ttls: dict[str, int] = {}

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        self.ops: list[tuple] = []
        return self

    def incr(self, key: str) -> None:
        self.ops.append(("incr", key))

    def expire(self, key: str, ttl: int, nx: bool = False) -> None:
        self.ops.append(("expire", key, ttl, nx))

    def execute(self) -> list:
        results = []
        for op in self.ops:
            if op[0] == "incr":
                self.values[op[1]] = self.values.get(op[1], 0) + 1
                results.append(self.values[op[1]])
            else:
                if not (op[3] and op[1] in self.ttls):
                    self.ttls[op[1]] = op[2]
                results.append(True)
        return results


def test_with_redis_url_set_failures_are_counted_atomically_in_redis(client, settings, monkeypatch, tenant_1):
    import redis

    # An address of its own, so the limiter connects afresh here and nothing else shares the fake.
    settings.RATE_LIMIT_REDIS_URL = "redis://failure-counter.invalid:6379/0"
    fake = FakeRedis()
    connected_to: list[str] = []
    monkeypatch.setattr(redis.Redis, "from_url", lambda url, **options: connected_to.append(url) or fake)
    assert flood(client, ATTACKER, 6) == [401] * 5 + [429]
    assert connected_to == [settings.RATE_LIMIT_REDIS_URL]  # once, then kept
    (key,) = fake.values
    assert fake.values[key] == 6
    assert fake.ttls[key] == 65
    assert ATTACKER in key


# --- secrets never appear in logs or error bodies -------------------------------------------------


SECRETS = {
    "PYTHON_INGEST_TOKEN": "ingest-secret-7c1f0e9a",
    "LARAVEL_INTERNAL_TOKEN": "laravel-secret-93be21d4",
    "LARAVEL_WEBHOOK_SECRET": "whsec_c2VjcmV0LTVhOGQwYzc3",  # base64 of secret-5a8d0c77, as Standard Webhooks reads it
    "MT5_PASSWORD": "mt5-password-1e6b4f02",
    "SECRET_KEY": "django-secret-key-4d2c9b1a0f8e7d6c5b4a3928",
}


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of every logger, at DEBUG, rendered by the production JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def test_no_secret_appears_in_any_log_line_or_error_body(client, settings, monkeypatch, captured_logs, account_1):
    for name, value in SECRETS.items():
        setattr(settings, name, value)
    settings.PYTHON_INGEST_TENANTS = ["tenant_1"]
    settings.LARAVEL_API_URL = "http://127.0.0.1:9"  # nothing listens: delivery fails and logs it
    guessed = "guessed-token-0f3e2d1c"
    bodies: list[bytes] = []
    headers: list[str] = []

    def keep(response) -> None:
        bodies.append(response.content)
        headers.append(str(response.items()))

    ingest = Api(client, SECRETS["PYTHON_INGEST_TOKEN"])
    keep(ingest.post("mt5/commands", fresh("close_positions")))  # accepted with the env token
    keep(ingest.post("mt5/commands", "{not json"))
    keep(ingest.post("mt5/commands", fresh("close_positions", tenant_id="tenant_9")))
    keep(ingest.post("mt5/commands", {**fresh("close_positions"), "payload": {"command_type": "nope"}}))
    keep(Api(client, guessed).post("mt5/commands", fresh("close_positions")))
    keep(Api(client, f"{SECRETS['PYTHON_INGEST_TOKEN']}x").get("mt5/commands"))
    keep(client.get("/api/v1/mt5/commands", HTTP_AUTHORIZATION=f"Basic {SECRETS['MT5_PASSWORD']}"))
    keep(client.get("/api/v1/health"))

    # An unhandled error inside a view: logged with its traceback, while the 500 body says nothing.
    from commands import api

    def explode(*args, **kwargs):
        raise RuntimeError("boom: internal detail")

    monkeypatch.setattr(api, "handle_post", explode)
    crashed = ingest.post("mt5/commands", fresh("close_positions"))
    assert crashed.status_code == 500
    keep(crashed)

    # The accepted command run to its end, and its result posted (and failed) with the Laravel
    # token and the webhook signature.
    from callbacks.delivery import deliver_due
    from callbacks.models import CallbackDelivery

    reset_gateway()
    sim_account_create(login=account_1.login, balance=100_000, server=account_1.server)
    (command,) = Command.objects.all()
    assert command_execute(command.pk) == "succeeded"
    deliver_due(limit=10)
    assert CallbackDelivery.objects.get().attempts == 1

    scanned = captured_logs.getvalue() + "".join(headers) + b"".join(bodies).decode("utf-8", "replace")
    assert "RuntimeError" in captured_logs.getvalue(), "the crash must be logged (without secrets)"
    for name, value in {**SECRETS, "guessed token": guessed}.items():
        assert value not in scanned, f"{name} leaked"
    assert "boom" not in b"".join(bodies).decode()


# --- security headers and CSRF on the admin -------------------------------------------------------


def test_the_admin_login_page_sends_the_security_headers(client, db):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "csrftoken" in response.cookies


def test_an_admin_login_without_a_csrf_token_is_refused(db, django_user_model):
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", "a-long-admin-password-1")
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/admin/login/", {"username": "ops", "password": "a-long-admin-password-1"})
    assert response.status_code == 403
    assert "sessionid" not in response.cookies


def test_an_admin_login_with_its_csrf_token_sets_an_http_only_session_cookie(db, django_user_model):
    django_user_model.objects.create_superuser("ops", "ops@example.invalid", "a-long-admin-password-1")
    strict = Client(enforce_csrf_checks=True)
    strict.get("/admin/login/")
    token = strict.cookies["csrftoken"].value
    response = strict.post(
        "/admin/login/",
        {"username": "ops", "password": "a-long-admin-password-1", "csrfmiddlewaretoken": token, "next": "/admin/"},
    )
    assert response.status_code == 302
    assert response.cookies["sessionid"]["httponly"]


def test_api_responses_forbid_sniffing_and_framing(alice, account_1):
    response = alice.get("mt5/commands")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


# --- hostile bodies: a 4xx problem, never a 5xx, never a side effect -------------------------------


def _side_effects() -> tuple[int, ...]:
    return (
        Command.objects.count(),
        CommandEvent.objects.count(),
        IdempotencyRecord.objects.count(),
        PolicySnapshot.objects.count(),
        OrmQ.objects.count(),
    )


def _with(path: tuple, value) -> dict:
    body = fresh("close_positions")
    if path[0] == "payload" and path[1] not in body["payload"]:
        body["payload"] = {
            "command_id": "hostile-1",
            "command_type": "open_position",
            "symbol": "EURUSD",
            "direction": "buy",
            "volume": 0.1,
        }
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def _raw(body: dict, marker: str, replacement: str) -> str:
    text = json.dumps(body)
    assert marker in text
    return text.replace(marker, replacement, 1)


HOSTILE = {
    "nested arrays 100k deep": "[" * 100_000 + "]" * 100_000,
    "nested objects 40 deep": '{"a":' * 40 + "1" + "}" * 40,
    "a body over 256 KiB": json.dumps({**fresh("close_positions"), "pad": "x" * 300_000}),
    "a 5,000-digit integer": _raw(fresh("close_positions"), '"fast_lane": true', '"fast_lane": ' + "9" * 5000),
    "NaN": _raw(fresh("close_positions"), '"fast_lane": true', '"fast_lane": NaN'),
    "Infinity": _raw(_with(("payload", "volume"), 12345.5), "12345.5", "Infinity"),
    "-Infinity": _raw(_with(("payload", "volume"), 12345.5), "12345.5", "-Infinity"),
    "1e400 (a float overflow)": _raw(_with(("payload", "volume"), 12345.5), "12345.5", "1e400"),
    "volume 1e-30": _with(("payload", "volume"), 1e-30),
    "negative volume": _with(("payload", "volume"), -1),
    "zero volume": _with(("payload", "volume"), 0),
    "absurd volume": _with(("payload", "volume"), 1e12),
    "volume as a string": _with(("payload", "volume"), "0.1"),
    "volume as a bool": _with(("payload", "volume"), True),
    "ticket 2**63": _with(("payload", "target"), {"mode": "by_tickets", "tickets": [2**63]}),
    "account login 2**64": _with(("actor", "account_login"), 2**64),
    "account login -1": _with(("actor", "account_login"), -1),
    "an unpaired surrogate": _raw(fresh("close_positions"), '"risk-control"', '"\\ud800"'),
    "a NUL in an unknown key": _raw({**fresh("close_positions"), "zz": 1}, '"zz"', '"z\\u0000z"'),
    "a NUL in a value": _raw(fresh("close_positions"), '"daily_drawdown_breach"', '"daily\\u0000breach"'),
    "invalid UTF-8": b'{"meta": "\xff\xfe"}',
    "a JSON array": "[]",
    "a JSON string": '"hello"',
    "an empty body": "",
    "truncated JSON": json.dumps(fresh("close_positions"))[:-10],
    "a 120,000-element list": _raw(
        fresh("close_positions"), '"fast_lane": true', '"fast_lane": [' + "0," * 120_000 + "0]"
    ),
}


@pytest.mark.parametrize("endpoint", ["mt5/commands", "ingest", "mt5/policies"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_is_a_4xx_problem_with_no_side_effect(alice, account_1, endpoint, name):
    before = _side_effects()
    body = HOSTILE[name]
    response = alice.post(endpoint, body if isinstance(body, str | bytes) else json.dumps(body))
    assert 400 <= response.status_code < 500, response.content[:300]
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code
    assert _side_effects() == before


def test_a_content_length_over_the_limit_is_413_before_the_body_is_read(alice, account_1):
    response = alice.client.generic(
        "POST",
        "/api/v1/mt5/commands",
        b"{}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {ALICE_TOKEN}", "Content-Length": str(10**12)},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "path",
    ["mt5/commands/%00", "mt5/commands/a%00b", "mt5/commands/%0A", "mt5/accounts/50040367/protective-actions%00"],
)
def test_a_control_character_in_the_path_is_a_404_problem(alice, account_1, path):
    response = alice.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


UNICODE_SAMPLES = [
    "Ünïcödé",
    "😀🚀",
    "مرحبا",  # right-to-left
    "e\u0301\u0301\u0301",  # combining marks
    "\u200b\u200d\ufeff",  # zero-width
    "𝕏" * 300,  # long, astral plane
    "\u202e\u202d",  # bidi overrides
]


def _string_paths(value, prefix=()) -> list[tuple]:
    paths = []
    if isinstance(value, dict):
        for key, item in value.items():
            paths.extend(_string_paths(item, (*prefix, key)))
    elif isinstance(value, str):
        paths.append(prefix)
    return paths


@pytest.mark.parametrize("example", ["close_positions", "policy_snapshot"])
def test_unicode_in_every_string_is_never_a_5xx_and_a_refusal_changes_nothing(alice, account_1, example):
    endpoint = "mt5/commands" if example == "close_positions" else "mt5/policies"
    template = fresh(example)
    outcomes = {}
    for path in _string_paths(template):
        for sample in UNICODE_SAMPLES:
            body = fresh(example)
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = sample
            before = _side_effects()
            response = alice.post(endpoint, body)
            assert response.status_code < 500, (path, sample, response.content[:300])
            if response.status_code >= 400:
                assert response["Content-Type"] == "application/problem+json"
                assert _side_effects() == before, (path, sample)
            outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
    assert set(outcomes) - {200, 202, 400, 403, 404, 409, 422} == set()


def test_unicode_in_the_headers_and_query_is_never_a_5xx(alice, account_1):
    for sample in ["é", "😀", "\u202e"]:
        assert alice.get("mt5/commands", state=sample).status_code == 422
        assert alice.get("mt5/commands", since=sample).status_code == 422
        assert alice.get(f"mt5/commands/{sample}").status_code == 404
        encoded = sample.encode().decode("latin-1")  # what a raw UTF-8 header looks like to WSGI
        assert alice.get("mt5/commands", headers={"X-Tenant-ID": encoded}).status_code == 403
        response = alice.post("mt5/commands", fresh("close_positions"), headers={"X-Idempotency-Key": encoded})
        assert response.status_code == 400


def test_an_unknown_symbol_is_rejected_without_touching_mt5(alice, account_1):
    reset_gateway()
    sim_account_create(login=account_1.login, balance=100_000, server=account_1.server)
    sim_set_price("EURUSD", "1.08500")
    body = _with(("payload", "symbol"), "NOSUCHSYM")
    response = alice.post("mt5/commands", body)
    # PROTOCOL.md §5: an unknown symbol is a business rule — the command ends `rejected`.
    assert response.status_code == 202
    command = Command.objects.get(command_id=response.json()["command_id"])
    assert command_execute(command.pk) == "rejected"
    command.refresh_from_db()
    assert command.error_code == "unknown_symbol"
    assert command.attempts == 0
    assert get_gateway().account_snapshot(account_1.login, account_1.server).positions == ()


def test_absurd_but_well_formed_numbers_keep_their_exact_value_or_are_refused(alice, account_1):
    response = alice.post("mt5/commands", _with(("payload", "volume"), 0.123456789))
    assert response.status_code == 422
    response = alice.post("mt5/commands", _with(("payload", "volume"), 999.99))
    assert response.status_code == 202
    assert Command.objects.get(command_id="hostile-1").payload["volume"] in ("999.99", 999.99, Decimal("999.99"))
