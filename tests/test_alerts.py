"""Operators are told (RISK_RULES.md "Enforcement that holds"; issue: alerts): through apprise to
ALERT_URLS, and in the panel until acknowledged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from apprise.decorators import notify
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert
from alerts.services import alert_raise, send
from policies.models import MonitorHeartbeat
from risk.watchdog import Watchdog
from tests.test_panel_personas import logged_in, oscar, sue, world  # noqa: F401

pytestmark = pytest.mark.django_db

RECEIVED: list[dict] = []


@notify(on="bridgetest")
def _capture(body: str, title: str, notify_type: str, *args, **kwargs) -> bool:
    RECEIVED.append({"title": title, "body": body, "type": notify_type})
    return "refuse" not in title


@pytest.fixture(autouse=True)
def _inbox(settings):
    settings.ALERT_URLS = "bridgetest://operators"
    RECEIVED.clear()
    yield


def raise_one(subject: str = "action:1", title: str = "Account 50040367: position closed not reached") -> Alert:
    assert alert_raise(kind=Alert.Kind.PROTECTION_LATE, subject=subject, title=title, body="still open")
    return Alert.objects.get(subject=subject)


def test_an_operator_is_sent_an_alert_once_until_it_is_acknowledged():
    alert = raise_one()
    assert not alert_raise(kind=Alert.Kind.PROTECTION_LATE, subject="action:1", title="again")
    assert send(alert.pk)
    alert.refresh_from_db()
    assert alert.sent_at is not None and alert.send_error == ""
    (message,) = RECEIVED
    assert message["title"].endswith("Account 50040367: position closed not reached")
    assert message["body"] == "still open"


def test_an_alert_that_no_destination_takes_says_so_on_its_row():
    alert = raise_one(title="refuse me")
    assert not send(alert.pk)
    alert.refresh_from_db()
    assert alert.sent_at is None and "no destination" in alert.send_error


def test_a_lane_without_a_live_worker_past_the_grace_is_alerted(settings):
    raised = Watchdog(grace_seconds=0).check()
    kinds = set(Alert.objects.values_list("kind", "subject"))
    assert raised == 2
    assert kinds == {("lane_down", "lane:fast"), ("lane_down", "lane:normal")}


def test_a_lane_empty_for_less_than_the_grace_is_not_alerted_yet():
    assert Watchdog(grace_seconds=3600).check() == 0
    assert not Alert.objects.exists()


def test_a_risk_monitor_that_went_silent_is_alerted_and_one_that_beats_is_not():
    MonitorHeartbeat.objects.create(monitor_id="dead", heartbeat_at=timezone.now() - timedelta(minutes=1))
    MonitorHeartbeat.objects.create(monitor_id="alive", heartbeat_at=timezone.now())
    Watchdog(grace_seconds=3600).check()
    assert list(Alert.objects.values_list("kind", "subject")) == [("monitor_down", "monitor:dead")]


def test_oscar_acknowledges_an_alert_in_the_panel_and_sue_may_not(world, oscar, sue):  # noqa: F811
    alert = raise_one()
    changelist = reverse("admin:alerts_alert_changelist")
    assert logged_in(sue).get(changelist).status_code == 403
    response = logged_in(oscar).post(changelist, {"action": "acknowledge", "_selected_action": [alert.pk]})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None and alert.acknowledged_by == oscar
    # Acknowledged, the same problem can alert again.
    assert alert_raise(kind=Alert.Kind.PROTECTION_LATE, subject="action:1", title="late again")
