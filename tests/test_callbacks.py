"""The callback outbox against a real HTTP receiver standing in for Laravel."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from callbacks import signing
from callbacks.delivery import (
    RETRY_AFTER_CAP_FACTOR,
    backoff_seconds,
    claim_due,
    deliver_due,
    deliver_forever,
    renew,
    retry_after_seconds,
    retry_delay_seconds,
)
from callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from callbacks.services import callback_enqueue, callback_resend, callbacks_health
from commands import examples
from policies.models import TradingAccount
from tenancy.models import Tenant
from tests.conftest import register_account

TOKEN = "laravel-internal-token-for-tests"
SECRET = "whsec_" + base64.b64encode(b"a-32-byte-secret-for-the-tests!!").decode()

# The panel's "Protective action callback payload" example.
PANEL_PAYLOAD: dict[str, Any] = {**examples.PROTECTIVE_ACTION_REPORT["payload"], "violation_count": 1}

Reply = tuple[int, dict[str, str]]

# The minted idempotency key of each row `report()` wrote → the dedup key the test named it by.
NAMED: dict[str, str] = {}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def key(self) -> str:
        """The name the test gave the callback (its dedup key): Laravel sees only the minted UUID."""
        sent = self.headers["x-idempotency-key"]
        return NAMED.get(sent, sent)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


class Laravel:
    """A scripted receiver on 127.0.0.1. Bound but not listening until `start()`: connections are refused."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Reply] = [(200, {})]
        self.reply_for: Callable[[Received], Reply] | None = None
        self.delay_s = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)  # a slow Laravel, to make concurrent deliveries overlap
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, 0)
                with receiver._lock:
                    status, headers = receiver.next_reply(request)
                    request.status = status
                    receiver.received.append(request)
                reply = json.dumps({"status": "ok" if status < 300 else "error"}).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.server_bind()
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def next_reply(self, request: Received) -> Reply:
        if self.reply_for is not None:
            return self.reply_for(request)
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def start(self) -> None:
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()

    def delivered(self, key: str) -> list[Received]:
        return [r for r in self.received if r.key == key and 200 <= r.status < 300]


@pytest.fixture
def laravel(settings: Any) -> Iterator[Laravel]:
    """A Laravel that is down (refusing connections) until the test starts it."""
    receiver = Laravel()
    settings.LARAVEL_API_URL = receiver.url
    settings.LARAVEL_INTERNAL_TOKEN = TOKEN
    settings.LARAVEL_WEBHOOK_SECRET = SECRET
    settings.CALLBACK_TIMEOUT_SECONDS = 2.0
    settings.CALLBACK_BACKOFF_BASE_SECONDS = 0.1
    settings.CALLBACK_BACKOFF_MAX_SECONDS = 900.0
    settings.CALLBACK_RETRY_HOURS = 24.0
    yield receiver
    receiver.close()


@pytest.fixture
def account_2(tenant_1: Tenant) -> TradingAccount:
    return register_account(tenant_1, login=50040368)


def report(account: TradingAccount, key: str, **payload: Any) -> CallbackDelivery:
    """Enqueue a protective action report the way the risk engine does: inside its transaction.

    `key` is the event's dedup key; the outbox mints the identity Laravel sees.
    """
    with transaction.atomic():
        row = callback_enqueue(
            tenant=account.tenant,
            account=account,
            request_type="protective_action_report",
            payload={**PANEL_PAYLOAD, **payload},
            dedup_key=key,
            correlation_id=f"corr-{key}",
            session_id="risk-engine",
            correlation_group="protective-action",
            source_kind="protective_action",
            source_id=key,
        )
    NAMED[row.idempotency_key] = key
    return row


def fresh(delivery: CallbackDelivery) -> CallbackDelivery:
    delivery.refresh_from_db()
    return delivery


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- delivery, retries, signature ------------------------------------------------------------


def test_it_delivers_a_report_once_through_refusal_500_and_429(laravel: Laravel, account_1: TradingAccount) -> None:
    laravel.script = [(500, {}), (429, {"Retry-After": "1"}), (200, {})]
    row = report(account_1, "protect-001")
    t0 = timezone.now()

    assert deliver_due(now=t0) == 1  # Laravel is down: connection refused
    row = fresh(row)
    assert row.status == DeliveryStatus.PENDING
    assert row.attempts == 1
    assert row.last_status_code is None
    assert "ConnectError" in row.last_error
    first_wait = (row.next_attempt_at - t0).total_seconds()
    assert first_wait > 0
    assert deliver_due(now=row.next_attempt_at - timedelta(milliseconds=1)) == 0  # not before it is due

    laravel.start()
    t1 = row.next_attempt_at
    assert deliver_due(now=t1) == 1  # 500
    row = fresh(row)
    assert (row.status, row.last_status_code, row.attempts) == (DeliveryStatus.PENDING, 500, 2)
    second_wait = (row.next_attempt_at - t1).total_seconds()
    assert second_wait >= first_wait  # the backoff grows

    t2 = row.next_attempt_at
    assert deliver_due(now=t2) == 1  # 429, Retry-After: 1
    row = fresh(row)
    assert row.last_status_code == 429
    assert row.next_attempt_at >= t2 + timedelta(seconds=1)  # Retry-After honoured over the shorter backoff
    assert deliver_due(now=t2 + timedelta(milliseconds=900)) == 0

    assert deliver_due(now=row.next_attempt_at) == 1  # 200
    row = fresh(row)
    assert row.status == DeliveryStatus.DELIVERED
    assert row.attempts == 4
    assert row.delivered_at is not None and row.next_attempt_at is None
    assert deliver_due(now=row.delivered_at + timedelta(days=2)) == 0  # never sent again

    attempts = list(CallbackAttempt.objects.filter(delivery=row).order_by("number"))
    assert [(a.number, a.status_code, a.outcome) for a in attempts] == [
        (1, None, "retry"),
        (2, 500, "retry"),
        (3, 429, "retry"),
        (4, 200, "delivered"),
    ]
    assert attempts[2].retry_after_seconds == 1.0
    assert attempts[3].response_snippet == '{"status": "ok"}'
    assert row.first_attempt_at == t0 and row.last_attempt_at == attempts[3].at

    assert [r.status for r in laravel.received] == [500, 429, 200]
    assert len(laravel.delivered("protect-001")) == 1
    assert {r.key for r in laravel.received} == {"protect-001"}
    assert {r.headers["webhook-id"] for r in laravel.received} == {str(row.request_id)}
    assert {r.json["meta"]["request_id"] for r in laravel.received} == {str(row.request_id)}


def test_every_attempt_is_signed_authenticated_and_shaped_like_the_panel_envelope(
    laravel: Laravel, account_1: TradingAccount
) -> None:
    laravel.script = [(503, {}), (200, {})]
    laravel.start()
    row = report(account_1, "protect-002")
    deliver_due()
    deliver_due(now=fresh(row).next_attempt_at)

    assert len(laravel.received) == 2
    for request in laravel.received:
        assert request.path == "/api/internal/mt5/protective-actions"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-correlation-id"] == "corr-protect-002"
        assert request.headers["x-idempotency-key"] == row.idempotency_key
        assert request.headers["x-protocol-version"] == "1"
        assert signing.verify(secret=SECRET, headers=request.headers, body=request.body)
        tampered = request.body.replace(b'"EURUSD"', b'"GBPUSD"')
        assert tampered != request.body
        assert not signing.verify(secret=SECRET, headers=request.headers, body=tampered)
        assert not signing.verify(
            secret="whsec_" + base64.b64encode(b"x" * 32).decode(), headers=request.headers, body=request.body
        )

        body = request.json
        assert set(body) == {"meta", "actor", "context", "request", "payload"}
        meta = body["meta"]
        assert set(meta) == {
            "protocol_version",
            "request_id",
            "correlation_id",
            "idempotency_key",
            "tenant_id",
            "environment",
            "source",
            "sent_at_utc",
        }
        assert meta["protocol_version"] == "1.0"
        assert meta["source"] == "python"
        assert meta["environment"] == "prod"
        assert meta["tenant_id"] == "tenant_1"
        assert meta["idempotency_key"] == row.idempotency_key
        assert meta["correlation_id"] == "corr-protect-002"
        assert meta["sent_at_utc"].endswith("Z")
        assert body["actor"] == {
            "trading_account_id": account_1.trading_account_id,
            "account_login": 50040367,
            "server": "Broker-Server",
            "platform": "MT5",
        }
        assert body["context"] == {"session_id": "risk-engine", "correlation_group": "protective-action"}
        assert body["request"] == {"type": "protective_action_report", "version": "1"}
        assert body["payload"] == PANEL_PAYLOAD
    # Same message, one id, but each attempt says when it was sent.
    assert len({r.headers["webhook-id"] for r in laravel.received}) == 1
    assert laravel.received[0].json["meta"]["sent_at_utc"] <= laravel.received[1].json["meta"]["sent_at_utc"]


def test_a_command_result_goes_to_its_own_path(laravel: Laravel, account_1: TradingAccount) -> None:
    laravel.start()
    with transaction.atomic():
        row = callback_enqueue(
            tenant=account_1.tenant,
            account=account_1,
            request_type="command_result",
            payload={"command_id": "cmd-1", "command_type": "close_position", "state": "succeeded", "attempts": 1},
            dedup_key="command-result:1",
            correlation_id="",
            session_id="execution",
            correlation_group="command-result",
        )
    assert deliver_due() == 1
    assert fresh(row).status == DeliveryStatus.DELIVERED
    (request,) = laravel.received
    assert request.path == "/api/internal/mt5/command-results"
    assert request.json["request"]["type"] == "command_result"
    assert request.headers["x-correlation-id"] == row.correlation_id != ""  # generated when the caller had none


def test_without_a_webhook_secret_no_signature_is_sent(
    laravel: Laravel, account_1: TradingAccount, settings: Any
) -> None:
    settings.LARAVEL_WEBHOOK_SECRET = ""
    laravel.start()
    report(account_1, "protect-unsigned")
    deliver_due()
    (request,) = laravel.received
    assert "webhook-signature" not in request.headers
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


def test_the_token_and_the_secret_never_reach_the_logs(
    laravel: Laravel, account_1: TradingAccount, caplog: pytest.LogCaptureFixture
) -> None:
    laravel.script = [(500, {}), (200, {})]
    caplog.set_level(logging.DEBUG)
    row = report(account_1, "protect-logs")
    deliver_due()  # refused
    laravel.start()
    deliver_due(now=fresh(row).next_attempt_at)
    deliver_due(now=fresh(row).next_attempt_at)
    assert fresh(row).status == DeliveryStatus.DELIVERED
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "callback delivered" in text
    assert TOKEN not in text
    assert SECRET not in text and SECRET.removeprefix("whsec_") not in text
    delivered = next(r for r in caplog.records if r.getMessage() == "callback delivered")
    assert delivered.correlation_id == "corr-protect-logs"  # the log context of the attempt
    assert delivered.tenant == "tenant_1"
    assert delivered.account == "50040367"


# --- signing -----------------------------------------------------------------------------------


def test_the_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks specification and its reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330"}
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.sign(secret=secret, msg_id=headers["webhook-id"], timestamp=1614265330, body=body) == expected
    signed = {**headers, "webhook-signature": f"v1,bm90LXRoaXMtb25l {expected}"}  # rotation: any one may match
    assert signing.verify(secret=secret, headers=signed, body=body, now=1614265330 + 10)
    assert not signing.verify(secret=secret, headers=signed, body=body, now=1614265330 + 301)  # too old: a replay
    assert not signing.verify(secret=secret, headers=headers, body=body, now=1614265330)  # unsigned


# The Standard Webhooks reference libraries' own test vector (their tests' test_sign_function).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_libraries_published_vector_passes_through_our_sign_with_and_without_whsec() -> None:
    for secret in (VECTOR_SECRET, VECTOR_SECRET.removeprefix("whsec_")):
        signed = signing.sign(secret=secret, msg_id=VECTOR_MSG_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY)
        assert signed == VECTOR_SIGNATURE
    # ...and the package computes the same from the same inputs, so the vector is the one it verifies.
    library = Webhook(VECTOR_SECRET).sign(
        msg_id=VECTOR_MSG_ID, timestamp=datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=UTC), data=VECTOR_BODY.decode()
    )
    assert library == VECTOR_SIGNATURE


@pytest.mark.parametrize("form", ["whsec_<base64>", "<base64> without the prefix", "unpadded base64"])
def test_the_standard_webhooks_package_verifies_what_laravel_receives_for_either_form_of_the_secret(
    laravel: Laravel, account_1: TradingAccount, settings: Any, form: str
) -> None:
    key = b"a-31-byte-secret-for-the-tests!"  # 31 bytes: its base64 ends in one '='
    encoded = base64.b64encode(key).decode()
    secret = {
        "whsec_<base64>": "whsec_" + encoded,
        "<base64> without the prefix": encoded,
        "unpadded base64": encoded.rstrip("="),
    }[form]
    settings.LARAVEL_WEBHOOK_SECRET = secret
    laravel.start()
    report(account_1, f"protect-signed-{form}")
    assert deliver_due() == 1
    (request,) = laravel.received
    # What Laravel runs: `new Webhook($secret)`; the Python package is the same reference.
    for receiver_secret in (secret, "whsec_" + encoded, encoded):
        assert Webhook(receiver_secret).verify(request.body, request.headers)["payload"] == PANEL_PAYLOAD
    assert signing.verify(secret=secret, headers=request.headers, body=request.body)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another key").decode()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b'"EURUSD"', b'"GBPUSD"'), request.headers)


def test_a_secret_without_the_prefix_is_base64_decoded_as_the_libraries_do() -> None:
    assert signing.secret_key("whsec_" + base64.b64encode(b"key").decode()) == b"key"
    assert signing.secret_key(base64.b64encode(b"key").decode()) == b"key"
    assert signing.secret_key("a2V5") == b"key"
    headers = signing.signature_headers(secret="a2V5", msg_id="m1", body=b"{}")
    assert signing.verify(secret="whsec_a2V5", headers=headers, body=b"{}")
    Webhook("whsec_a2V5").verify(b"{}", headers)
    Webhook("a2V5").verify(b"{}", headers)


@pytest.mark.parametrize("secret", ["plain-shared-secret", "whsec_not base64!", "whsec_", "abcde", "YQ==="])
def test_a_secret_that_is_not_base64_is_refused_as_the_delivery_process_starts(
    laravel: Laravel, account_1: TradingAccount, settings: Any, secret: str
) -> None:
    with pytest.raises(ValueError, match="base64"):
        signing.secret_key(secret)
    settings.LARAVEL_WEBHOOK_SECRET = secret
    laravel.start()
    row = report(account_1, "protect-bad-secret")
    with pytest.raises(ImproperlyConfigured, match="LARAVEL_WEBHOOK_SECRET") as refused:
        call_command("delivercallbacks", "--once", stdout=io.StringIO())
    hidden = secret.removeprefix("whsec_")
    assert not hidden or hidden not in str(refused.value)  # the message names the setting, never its value
    with pytest.raises(ImproperlyConfigured, match="LARAVEL_WEBHOOK_SECRET"):
        deliver_forever(stop=threading.Event(), poll_ms=10)
    assert laravel.received == [] and fresh(row).attempts == 0  # nothing was sent unsigned or mis-signed


# --- backoff and Retry-After -------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap(settings: Any) -> None:
    settings.CALLBACK_BACKOFF_BASE_SECONDS = 1.0
    settings.CALLBACK_BACKOFF_MAX_SECONDS = 900.0
    for attempt in range(1, 30):
        ceiling = min(900.0, 2.0 ** (attempt - 1))
        samples = [backoff_seconds(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        if ceiling < 900:
            assert len(set(samples)) > 1  # jittered, so delivery processes do not retry in lockstep
    # Each wait's floor is the previous wait's ceiling: waits never shrink.
    assert min(backoff_seconds(5) for _ in range(200)) >= max(backoff_seconds(4) for _ in range(200))
    assert backoff_seconds(10_000) <= 900.0


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    in_a_minute = format_datetime(timezone.now() + timedelta(seconds=60), usegmt=True)
    assert 55 <= (retry_after_seconds(in_a_minute) or 0) <= 60
    assert retry_after_seconds(format_datetime(timezone.now() - timedelta(hours=1), usegmt=True)) == 0.0


def test_a_retry_after_longer_than_the_cap_is_bounded(settings: Any) -> None:
    settings.CALLBACK_BACKOFF_BASE_SECONDS = 1.0
    settings.CALLBACK_BACKOFF_MAX_SECONDS = 60.0
    assert retry_delay_seconds(attempt=1, retry_after=30.0) == 30.0
    assert retry_delay_seconds(attempt=1, retry_after=10 * 86400.0) == RETRY_AFTER_CAP_FACTOR * 60.0
    assert 0.5 <= retry_delay_seconds(attempt=1, retry_after=0.0) <= 1.0  # never shorter than the backoff


# --- per-account order ------------------------------------------------------------------------


def test_a_later_report_waits_behind_a_failing_one_of_the_same_account_but_not_another_account(
    laravel: Laravel, account_1: TradingAccount, account_2: TradingAccount
) -> None:
    failing = {"first"}
    laravel.reply_for = lambda request: (500, {}) if request.key in failing else (200, {})
    laravel.start()
    first = report(account_1, "first")
    second = report(account_1, "second")
    other = report(account_2, "other-account")

    assert deliver_due() == 2  # first (fails) and the other account's report
    assert fresh(first).status == DeliveryStatus.PENDING
    assert fresh(second).attempts == 0  # never tried while the older report is open
    assert fresh(other).status == DeliveryStatus.DELIVERED
    for _ in range(3):
        deliver_due(now=fresh(first).next_attempt_at)
    assert fresh(first).attempts == 4
    assert fresh(second).attempts == 0

    failing.clear()
    # first gets through, and second, no longer held back, goes in the same pass
    assert deliver_due(now=fresh(first).next_attempt_at) == 2
    assert fresh(first).status == DeliveryStatus.DELIVERED
    assert fresh(second).status == DeliveryStatus.DELIVERED
    order = [r.key for r in laravel.received if r.status == 200]
    assert order.index("first") < order.index("second")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_alices_report_that_laravel_refuses_for_good_is_dead_lettered_and_her_next_report_goes_in_the_same_run(
    laravel: Laravel, account_1: TradingAccount, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    refused = {"refused"}
    laravel.reply_for = lambda request: (status, {}) if request.key in refused else (200, {})
    laravel.start()
    bad = report(account_1, "refused")
    protective = report(account_1, "protective-after-refused")
    caplog.set_level(logging.INFO, logger="bridge.callbacks")

    assert deliver_due() == 2  # one pass: the refused report, then the one it no longer holds back
    bad = fresh(bad)
    assert (bad.status, bad.attempts, bad.last_status_code) == (DeliveryStatus.DEAD, 1, status)
    assert bad.dead_at is not None and bad.next_attempt_at is None
    (only,) = CallbackAttempt.objects.filter(delivery=bad)
    assert (only.status_code, only.outcome) == (status, CallbackAttempt.Outcome.DEAD)
    assert fresh(protective).status == DeliveryStatus.DELIVERED
    assert [(r.key, r.status) for r in laravel.received] == [("refused", status), ("protective-after-refused", 200)]
    (logged,) = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert logged.levelno == logging.ERROR and logged.status_code == status and str(status) in logged.getMessage()
    assert callbacks_health()["dead_letters"] == 1
    from alerts.models import Alert

    (alert,) = Alert.objects.filter(kind=Alert.Kind.CALLBACK_DEAD)
    assert alert.subject == f"callback:{bad.pk}" and alert.tenant_id == account_1.tenant.tenant_id

    # Visible and re-sendable: once Laravel takes it, the re-send delivers the same callback.
    refused.clear()
    callback_resend(delivery=bad)
    assert deliver_due() == 1
    bad = fresh(bad)
    assert bad.status == DeliveryStatus.DELIVERED
    assert [r.headers["x-idempotency-key"] for r in laravel.received if r.key == "refused"] == [bad.idempotency_key] * 2


@pytest.mark.parametrize(
    ("status", "headers"), [(429, {"Retry-After": "1"}), (503, {}), (500, {}), (408, {}), (409, {}), (425, {})]
)
def test_bobs_reports_wait_in_order_behind_one_that_laravel_answers_429_or_5xx_and_retries_it(
    laravel: Laravel, tenant_2: Tenant, status: int, headers: dict[str, str]
) -> None:
    account = register_account(tenant_2, login=60000002)
    answers = [(status, headers), (status, headers)]
    laravel.reply_for = lambda request: answers.pop(0) if request.key == "first" and answers else (200, {})
    laravel.start()
    first = report(account, "first")
    second = report(account, "second")

    assert deliver_due() == 1
    first = fresh(first)
    assert (first.status, first.last_status_code) == (DeliveryStatus.PENDING, status)
    assert first.next_attempt_at > first.last_attempt_at  # scheduled again with backoff
    assert fresh(second).attempts == 0  # held back: order per account
    assert deliver_due(now=first.next_attempt_at) == 1
    assert fresh(second).attempts == 0
    assert deliver_due(now=fresh(first).next_attempt_at) == 2  # first gets through, then second
    assert [r.key for r in laravel.received] == ["first", "first", "first", "second"]
    assert {fresh(first).status, fresh(second).status} == {DeliveryStatus.DELIVERED}
    assert len({r.headers["x-idempotency-key"] for r in laravel.received if r.key == "first"}) == 1


# --- dead letters and re-send -----------------------------------------------------------------


def test_it_dead_letters_after_the_retry_window_and_a_resend_delivers_it(
    laravel: Laravel, account_1: TradingAccount, settings: Any
) -> None:
    settings.CALLBACK_RETRY_HOURS = 1.0
    laravel.script = [(500, {})]
    laravel.start()
    row = report(account_1, "protect-dead")
    later = report(account_1, "protect-after-dead")
    t0 = timezone.now()

    deliver_due(now=t0)
    deliver_due(now=t0 + timedelta(minutes=59))
    assert fresh(row).status == DeliveryStatus.PENDING  # still inside the window
    assert fresh(later).attempts == 0  # held back while the row is open
    # The row dies, and the later report, no longer held back, is tried in the same pass.
    assert deliver_due(now=t0 + timedelta(hours=1)) == 2
    row = fresh(row)
    assert row.status == DeliveryStatus.DEAD
    assert row.dead_at == t0 + timedelta(hours=1)
    assert row.next_attempt_at is None
    assert CallbackAttempt.objects.filter(delivery=row).latest("number").outcome == "dead"
    assert fresh(later).attempts == 1

    laravel.script = [(200, {})]
    # Only the later report: a dead letter is not retried, and no longer holds the account's queue.
    assert deliver_due(now=fresh(later).next_attempt_at) == 1
    assert fresh(later).status == DeliveryStatus.DELIVERED
    health = callbacks_health(now=t0 + timedelta(days=3))
    assert health["status"] == "degraded"
    assert health["dead_letters"] == 1

    callback_resend(delivery=row)
    row = fresh(row)
    assert row.status == DeliveryStatus.PENDING and row.dead_at is None
    assert deliver_due() == 1
    row = fresh(row)
    assert row.status == DeliveryStatus.DELIVERED
    assert row.attempts == 4
    assert list(CallbackAttempt.objects.filter(delivery=row).values_list("outcome", flat=True)) == [
        "retry",
        "retry",
        "dead",
        "delivered",
    ]
    assert len(laravel.delivered("protect-dead")) == 1
    assert {r.headers["webhook-id"] for r in laravel.received if r.key == "protect-dead"} == {str(row.request_id)}
    assert callbacks_health()["status"] == "ok"


def test_a_resent_row_starts_a_new_retry_window(laravel: Laravel, account_1: TradingAccount, settings: Any) -> None:
    settings.CALLBACK_RETRY_HOURS = 1.0
    laravel.script = [(500, {})]
    laravel.start()
    row = report(account_1, "protect-window")
    t0 = timezone.now()
    deliver_due(now=t0)
    deliver_due(now=t0 + timedelta(hours=2))
    assert fresh(row).status == DeliveryStatus.DEAD
    callback_resend(delivery=row)
    deliver_due()  # fails again, but the new window has only just begun
    row = fresh(row)
    assert row.status == DeliveryStatus.PENDING
    assert row.first_attempt_at == t0


# --- identity: minted at write, repeated by every retry ------------------------------------------


def test_alices_callback_carries_uuid_keys_that_a_second_bridge_never_repeats_for_the_same_event(
    account_1: TradingAccount,
) -> None:
    # Two bridges' databases (or one rebuilt, or restored from a backup) with the same command pk:
    # the same local event, a different row each time — and never the same identity.
    rows = []
    for _bridge in ("bridge-a", "bridge-b"):
        with transaction.atomic():
            row = callback_enqueue(
                tenant=account_1.tenant,
                account=account_1,
                request_type="command_result",
                payload={"command_id": "cmd-1", "state": "succeeded"},
                dedup_key="command-result:1",
                correlation_id="",
                session_id="execution",
                correlation_group="command-result",
            )
        rows.append(row)
        CallbackDelivery.objects.filter(pk=row.pk).delete()  # the next bridge starts from an empty outbox
    first, second = rows
    for row in rows:
        assert uuid.UUID(row.idempotency_key).version == 4
        assert row.request_id.version == 4
        assert row.envelope["meta"]["idempotency_key"] == row.idempotency_key
        assert row.envelope["meta"]["request_id"] == str(row.request_id)
        assert row.dedup_key == "command-result:1"
        assert "command-result" not in row.idempotency_key
    assert first.idempotency_key != second.idempotency_key
    assert first.request_id != second.request_id
    assert {first.idempotency_key, second.idempotency_key}.isdisjoint({str(first.request_id), str(second.request_id)})


def test_a_finished_command_reports_under_a_minted_key_and_dedups_on_its_pk(account_1: TradingAccount) -> None:
    from commands.models import Command
    from execution.results import command_finished

    command = Command.objects.create(
        tenant=account_1.tenant,
        account=account_1,
        command_id="cmd-identity",
        command_type="close_position",
        idempotency_key="alice-key-1",
        payload={},
        envelope={},
        state="succeeded",
        finished_at=timezone.now(),
    )
    with transaction.atomic():
        command_finished(command)
        command_finished(command)  # the hook fired twice: still one report
    (row,) = CallbackDelivery.objects.filter(source_kind="command", source_id=str(command.pk))
    assert row.dedup_key == f"command-result:{command.pk}"
    assert uuid.UUID(row.idempotency_key) and row.idempotency_key != command.idempotency_key


def test_every_retry_and_a_resend_repeat_the_callbacks_identity_exactly(
    laravel: Laravel, account_1: TradingAccount, settings: Any
) -> None:
    settings.CALLBACK_RETRY_HOURS = 1.0
    laravel.script = [(503, {}), (500, {}), (200, {})]
    laravel.start()
    row = report(account_1, "protect-identity")
    t0 = timezone.now()
    deliver_due(now=t0)
    deliver_due(now=t0 + timedelta(hours=1))  # outside the window: dead
    assert fresh(row).status == DeliveryStatus.DEAD
    callback_resend(delivery=row)
    deliver_due()
    assert fresh(row).status == DeliveryStatus.DELIVERED
    assert [r.status for r in laravel.received] == [503, 500, 200]
    identities = {
        (
            r.headers["x-idempotency-key"],
            r.json["meta"]["idempotency_key"],
            r.headers["webhook-id"],
            r.json["meta"]["request_id"],
        )
        for r in laravel.received
    }
    assert identities == {(row.idempotency_key, row.idempotency_key, str(row.request_id), str(row.request_id))}
    assert CallbackDelivery.objects.count() == 1  # the re-send is the same row, not a new callback


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_the_keys_laravel_has_seen_and_makes_them_the_dedup_keys(account_1: TradingAccount) -> None:
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("callbacks", "0002_indexes_for_panel_filters")], [("callbacks", "0003_dedup_key")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps.get_model("callbacks", "CallbackDelivery")
        for key in ("command-result-7", "protective-action-3"):
            old.objects.create(
                tenant_id=account_1.tenant_id,
                account_id=account_1.pk,
                request_type="command_result",
                path="/x",
                envelope={"meta": {"idempotency_key": key}},
                idempotency_key=key,
                correlation_id="c",
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
    kept = dict(CallbackDelivery.objects.values_list("idempotency_key", "dedup_key"))
    assert kept == {"command-result-7": "command-result-7", "protective-action-3": "protective-action-3"}
    # A retried event of an earlier row still finds it.
    again = report(account_1, "command-result-7")
    assert again.idempotency_key == "command-result-7" and CallbackDelivery.objects.count() == 2


# --- configuration, health, transactions, idempotency -----------------------------------------


def test_without_a_laravel_url_rows_stay_pending_and_health_is_degraded(
    account_1: TradingAccount, settings: Any
) -> None:
    settings.LARAVEL_API_URL = ""
    row = report(account_1, "protect-unconfigured")
    assert deliver_due() == 0
    row = fresh(row)
    assert row.status == DeliveryStatus.PENDING
    assert row.attempts == 0
    health = callbacks_health()
    assert health["status"] == "degraded"
    assert health["configured"] is False
    assert health["pending"] == 1


def test_health_reports_an_old_pending_row_as_degraded(account_1: TradingAccount, laravel: Laravel) -> None:
    report(account_1, "protect-old")
    now = timezone.now()
    assert callbacks_health(now=now)["status"] == "ok"
    late = callbacks_health(now=now + timedelta(seconds=61))
    assert late["status"] == "degraded"
    assert late["oldest_pending_age_s"] >= 61
    assert late["configured"] is True


def test_health_is_ok_with_nothing_owed(db: None, settings: Any) -> None:
    settings.LARAVEL_API_URL = ""
    assert callbacks_health() == {
        "status": "ok",
        "pending": 0,
        "oldest_pending_age_s": 0.0,
        "dead_letters": 0,
        "configured": False,
    }


def test_the_outbox_row_rolls_back_with_the_callers_transaction(account_1: TradingAccount) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        report(account_1, "protect-rolled-back")
        raise RuntimeError("the event failed after the report was written")
    assert not CallbackDelivery.objects.filter(dedup_key="protect-rolled-back").exists()


@pytest.mark.parametrize("path", ["PostgreSQL statement", "the manager's insert (SQLite)"])
def test_enqueueing_the_same_dedup_key_twice_returns_the_first_row_and_its_identity(
    account_1: TradingAccount, tenant_2: Tenant, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    from django.db import connection

    if path.startswith("the manager"):
        monkeypatch.setattr(connection, "vendor", "sqlite")
    first = report(account_1, "protect-same")
    stored = CallbackDelivery.objects.get(pk=first.pk)
    assert (stored.envelope, stored.status, stored.next_attempt_at) == (
        first.envelope,
        first.status,
        first.next_attempt_at,
    )
    again = report(account_1, "protect-same", symbol="GBPUSD")
    assert again.pk == first.pk
    assert again.envelope["payload"]["symbol"] == "EURUSD"
    assert (again.idempotency_key, again.request_id) == (first.idempotency_key, first.request_id)
    assert CallbackDelivery.objects.filter(dedup_key="protect-same").count() == 1
    other_account = register_account(tenant_2, login=60000001)
    other_tenant = report(other_account, "protect-same")  # dedup keys are scoped per tenant
    assert other_tenant.pk != first.pk
    assert other_tenant.idempotency_key != first.idempotency_key


def test_enqueue_refuses_an_account_of_another_tenant(account_1: TradingAccount, tenant_2: Tenant) -> None:
    with pytest.raises(ValueError, match="tenant"):
        callback_enqueue(
            tenant=tenant_2,
            account=account_1,
            request_type="protective_action_report",
            payload={},
            dedup_key="cross-tenant",
            correlation_id="",
            session_id="risk-engine",
            correlation_group="protective-action",
        )


# --- several processes, crashes, the command --------------------------------------------------


def test_a_row_whose_process_died_mid_post_is_reclaimed_when_its_lease_ends(
    laravel: Laravel, account_1: TradingAccount
) -> None:
    laravel.start()
    row = report(account_1, "protect-crash")
    now = timezone.now()
    (claimed,) = claim_due(limit=10, now=now)  # ...and the process dies before posting
    assert fresh(row).status == DeliveryStatus.DELIVERING
    assert deliver_due(now=now) == 0  # leased: nobody else sends it meanwhile
    assert deliver_due(now=claimed.next_attempt_at) == 1
    row = fresh(row)
    assert row.status == DeliveryStatus.DELIVERED
    assert row.attempts == 2
    assert len(laravel.delivered("protect-crash")) == 1


def test_a_row_taken_over_while_it_waited_in_a_slow_batch_is_not_posted_again(
    laravel: Laravel, account_1: TradingAccount
) -> None:
    laravel.start()
    row = report(account_1, "protect-taken-over")
    now = timezone.now()
    (mine,) = claim_due(limit=10, now=now)
    (theirs,) = claim_due(limit=10, now=mine.next_attempt_at)  # my lease ran out before its turn came
    assert not renew(delivery=mine, now=mine.next_attempt_at)
    assert renew(delivery=theirs, now=mine.next_attempt_at)
    assert fresh(row).attempts == 2


def test_a_stopping_process_gives_back_the_rows_it_has_not_attempted(
    laravel: Laravel, account_1: TradingAccount, account_2: TradingAccount
) -> None:
    laravel.start()
    one = report(account_1, "protect-stop-1")
    two = report(account_2, "protect-stop-2")
    stop = threading.Event()
    stop.set()
    assert deliver_due(stop=stop) == 0
    for row in (one, two):
        row = fresh(row)
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    assert deliver_due() == 2


# The suite runs on PostgreSQL (bin/test); with SQLite the claimers are serialised by BEGIN
# IMMEDIATE instead, which an in-memory test database cannot show across threads.
@pytest.mark.django_db(transaction=True)
def test_two_delivery_processes_never_send_a_row_twice(laravel: Laravel, tenant_1: Tenant) -> None:
    laravel.delay_s = 0.02
    laravel.start()
    accounts = [register_account(tenant_1, login=70000000 + n) for n in range(12)]
    keys = [f"protect-race-{n}" for n in range(len(accounts))]
    for account, key in zip(accounts, keys, strict=True):
        report(account, key)
    barrier = threading.Barrier(3)

    def worker() -> None:
        try:
            barrier.wait()
            while deliver_due(limit=3):
                pass
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(r.key for r in laravel.received) == sorted(keys)  # each exactly once
    assert set(CallbackDelivery.objects.filter(dedup_key__in=keys).values_list("status", flat=True)) == {
        DeliveryStatus.DELIVERED
    }
    assert set(CallbackDelivery.objects.filter(dedup_key__in=keys).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_the_delivery_loop_sends_committed_rows_and_stops_when_told(
    laravel: Laravel, account_1: TradingAccount
) -> None:
    laravel.start()
    stop = threading.Event()

    def loop() -> None:
        try:
            deliver_forever(stop=stop, poll_ms=20)
        finally:
            connection.close()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        row = report(account_1, "protect-loop")
        assert wait_until(lambda: fresh(row).status == DeliveryStatus.DELIVERED)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_delivercallbacks_once_attempts_what_is_due(
    laravel: Laravel, account_1: TradingAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    laravel.start()
    row = report(account_1, "protect-command")
    call_command("delivercallbacks", "--once")
    assert "attempted 1 callbacks" in capsys.readouterr().out
    assert fresh(row).status == DeliveryStatus.DELIVERED


def test_delivercallbacks_stops_cleanly_on_sigterm(settings: Any) -> None:
    settings.LARAVEL_API_URL = ""  # nothing to send: the loop only polls
    original = signal.getsignal(signal.SIGTERM)

    def terminate_once_handled() -> None:
        # Only signal once the command's handler is installed, or the test runner itself would die.
        if wait_until(lambda: signal.getsignal(signal.SIGTERM) is not original):
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_handled)
    killer.start()
    started = time.monotonic()
    call_command("delivercallbacks", "--poll-ms", "50")
    killer.join(timeout=5)
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is original


def test_pruning_deletes_only_delivered_callbacks_past_their_retention(
    account_1: TradingAccount, settings: Any
) -> None:
    settings.CALLBACK_RETENTION_DAYS = 30
    now = timezone.now()
    old_delivered, recent_delivered, dead, pending = (report(account_1, key) for key in ("a", "b", "c", "d"))
    CallbackDelivery.objects.filter(pk=old_delivered.pk).update(
        status=DeliveryStatus.DELIVERED, delivered_at=now - timedelta(days=31)
    )
    CallbackAttempt.objects.create(delivery=old_delivered, number=1, outcome=CallbackAttempt.Outcome.DELIVERED)
    CallbackDelivery.objects.filter(pk=recent_delivered.pk).update(
        status=DeliveryStatus.DELIVERED, delivered_at=now - timedelta(days=29)
    )
    CallbackDelivery.objects.filter(pk=dead.pk).update(status=DeliveryStatus.DEAD, created_at=now - timedelta(days=90))
    call_command("prune_callbacks", stdout=io.StringIO())
    left = set(CallbackDelivery.objects.values_list("dedup_key", flat=True))
    assert left == {"b", "c", "d"}
    assert not CallbackAttempt.objects.filter(delivery_id=old_delivered.pk).exists()
    assert pending.pk in set(CallbackDelivery.objects.values_list("pk", flat=True))
