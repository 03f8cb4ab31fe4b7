"""The panel in a real browser: Debian's headless Chromium, driven by Playwright for Python.

Oscar, an operator, logs in, builds the panel's close_positions example in the payload builder,
confirms and sends it through the API and finds the command in the command list. On a bad day
(issue #20) he finds the breached account on the dashboard and in the list, disables its trading
behind a confirmation, watches the dashboard refresh itself and searches by an id's prefix. Every page visited is saved
as a screenshot under BROWSER_SCREENSHOTS_DIR (default: screenshots/ at the repository root).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from commands.models import Command
from panel.models import LibraryPayload
from tenancy.services import token_create
from tests.conftest import create_migrations_data, register_account
from tests.test_panel_personas import PASSWORD, make_user, protective_action, risk_state

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS_DIR") or Path(__file__).resolve().parents[1] / "screenshots")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def panel_data(transactional_db: None) -> dict[str, Any]:
    """What the first migrate creates, again: transactional tests before this one flushed it."""
    create_migrations_data()
    tenant = token_create(tenant_ids=["tenant_1"], name="alice", raw="alice-browser-token")[0].tenants.get()
    account = register_account(tenant)
    # Half an hour of equity sliding through the daily floor, and the breach it caused: the risk chart's data.
    risk_state(account)
    protective_action(account, None, scope="day:browser")
    make_user("oscar", groups=("operators",), scope="all")
    return {"account": account, "example": LibraryPayload.objects.get(slug="close_positions")}


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test body are
    # plain synchronous calls all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Visit:
    """Opens pages, saves a screenshot of each, and remembers any JavaScript error."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.count = 0
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def _console(self, message: ConsoleMessage) -> None:
        # 428 is the builder's "confirm first" answer (account, environment, effect), a step of the
        # flow the test walks through; the browser logs every 4xx fetch as an error line.
        if message.type == "error" and "status of 428" not in message.text:
            self.errors.append(f"{self.page.url}: {message.text}")

    def go(self, path: str) -> None:
        self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")

    def shot(self, name: str) -> Path:
        self.count += 1
        path = SCREENSHOTS / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def test_an_operator_builds_the_close_positions_example_sends_it_and_finds_it_in_the_command_list(
    live_server: object, panel_data: dict[str, Any], browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    visit = Visit(page, str(live_server))

    visit.go("/admin/login/?next=/admin/")
    visit.shot("login")
    page.fill("#id_username", "oscar")
    page.fill("#id_password", PASSWORD)
    page.click("[type=submit]")
    page.wait_for_url("**/admin/")
    visit.shot("dashboard")

    visit.go("/admin/panel/builder/")
    page.select_option("#b-request-type", "command")
    page.select_option("#b-command-type", "close_positions")
    page.select_option("#b-tenant", "tenant_1")
    page.wait_for_selector("#b-valid.ok")
    envelope = json.loads(page.text_content("#b-out-json") or "{}")
    assert envelope["payload"]["command_type"] == "close_positions"
    assert envelope["payload"]["target"] == {"mode": "all_positions"}
    assert envelope["payload"]["priority"] == "critical" and envelope["payload"]["fast_lane"] is True
    assert envelope["actor"]["account_login"] == 50040367 and envelope["meta"]["sent_at_utc"].endswith("Z")
    visit.shot("builder")
    page.click("[data-tab=curl]")
    assert "X-Idempotency-Key" in (page.text_content("#b-out-curl") or "")
    visit.shot("builder-curl")
    page.click("[data-tab=json]")

    page.click("#b-send")
    page.wait_for_selector("#b-confirm:not([hidden])")  # asked first: account, environment, effect
    assert "PROD · SIMULATOR" in (page.text_content("#b-confirm-environment") or "")
    assert not Command.objects.filter(command_id=envelope["payload"]["command_id"]).exists()
    visit.shot("builder-confirm")
    page.click("#b-confirm-send")
    page.wait_for_selector("#b-command-link")
    assert page.text_content("#b-result-status") == "202"
    visit.shot("builder-sent")

    command_id = envelope["payload"]["command_id"]
    visit.go(f"/admin/commands/command/?q={command_id}")
    row = page.locator("#result_list tbody tr", has_text=command_id)
    assert row.count() == 1
    assert "fast" in (row.inner_text() or "").lower()
    visit.shot("command-list")

    row.locator("a", has_text=command_id).first.click()
    page.wait_for_load_state("networkidle")
    assert "received → queued" in page.inner_text("body")
    visit.shot("command-detail")

    account = panel_data["account"]
    for name, path in (
        ("environment", "/admin/panel/environment/"),
        ("catalogue", "/admin/panel/catalogue/"),
        ("accounts", "/admin/policies/tradingaccount/"),
        ("account-risk", f"/admin/policies/tradingaccount/{account.pk}/risk/?range=1h"),
        ("test-payloads", "/admin/panel/librarypayload/"),
        ("replay", f"/admin/panel/librarypayload/{panel_data['example'].pk}/replay/"),
        ("openapi", "/api/v1/docs"),
    ):
        visit.go(path)
        visit.shot(name)

    assert visit.errors == []
    sent = Command.objects.filter(command_id=command_id, state="queued", lane="fast").count()
    # Inside Playwright's event loop the ORM got a connection of its own context: close it here,
    # or the test database cannot be dropped at the end of the session.
    connections.close_all()
    assert sent == 1
    assert len(list(SCREENSHOTS.glob("*.png"))) >= visit.count


FITS = ("dashboard", "account-risk", "kill-switch", "command")
BAD_DAY_VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.slow
def test_a_bad_day_breach_kill_switch_confirmation_live_dashboard_prefix_search_and_bookmarked_login(
    live_server: object, panel_data: dict[str, Any], browser: Browser
) -> None:
    import httpx

    from commands.lanes import Lane
    from commands.states import State
    from execution.runner import command_execute
    from execution.simulator.service import sim_account_create, sim_set_price
    from tests.conftest import LOGIN, SERVER

    sim_account_create(login=LOGIN, balance=100000, server=SERVER)
    sim_set_price("EURUSD", "1.08500")
    account = panel_data["account"]
    base = str(live_server)
    page = browser.new_page(viewport=BAD_DAY_VIEWPORTS["desktop"])
    visit = Visit(page, base)

    # The bookmarked login: no ?next=, and it lands on the dashboard, not on /accounts/profile/.
    visit.go("/admin/login/")
    page.fill("#id_username", "oscar")
    page.fill("#id_password", PASSWORD)
    page.click("[type=submit]")
    page.wait_for_url("**/admin/")
    assert page.url.rstrip("/").endswith("/admin")

    # The breached account is counted on the dashboard, and the counter opens exactly its list.
    assert page.text_content("#card-breach .value").strip() == "1"
    assert str(account.login) in (page.text_content("#panel-breached") or "")
    first = page.text_content("#panel-refreshed")
    page.wait_for_function(
        "text => document.querySelector('#panel-refreshed').textContent !== text", arg=first, timeout=15000
    )  # htmx polled and swapped in fresh figures
    page.click("#card-breach")
    page.wait_for_load_state("networkidle")
    assert page.locator("#result_list tbody tr").count() == 1
    assert "in breach" in page.inner_text("#result_list").lower()  # the badge is set in capitals

    # The kill switch: a confirmation naming the account, the environment and the effect; nothing before it.
    visit.go(f"/admin/policies/tradingaccount/{account.pk}/change/")
    page.click("a[href$='/disable-trading/']")
    page.wait_for_selector("#kill-switch-confirm")
    assert str(account.login) in (page.text_content("#kill-switch-account") or "")
    assert page.text_content("#kill-switch-environment") == "PROD · SIMULATOR"
    assert not Command.objects.filter(command_type="disable_trading").exists()
    page.fill("#id_reason", "browser drill: disable")
    page.click("#kill-switch-submit")
    page.wait_for_load_state("networkidle")
    for command in Command.objects.filter(lane=Lane.FAST, state=State.QUEUED, command_type="disable_trading"):
        command_execute(command.pk)
    seen = httpx.get(
        f"{base}/api/v1/mt5/accounts/{LOGIN}", headers={"Authorization": "Bearer alice-browser-token"}
    ).json()
    assert seen["trading_enabled"] is False and seen["in_breach"] is not None

    # The builder: an open_position is not sent until confirmed; "Don't send" sends nothing.
    visit.go("/admin/panel/builder/")
    assert page.input_value("#b-request-type") == "sync_request"
    page.select_option("#b-request-type", "command")
    page.select_option("#b-command-type", "open_position")
    page.wait_for_selector("#b-valid.ok")
    page.click("#b-send")
    page.wait_for_selector("#b-confirm:not([hidden])")
    assert "opens a" in (page.text_content("#b-confirm-effect") or "")
    page.click("#b-confirm-cancel")
    assert not Command.objects.filter(command_type="open_position").exists()

    # Prefix search in any case.
    command = Command.objects.filter(command_type="disable_trading").get()
    visit.go(f"/admin/commands/command/?q={command.command_id[:12].upper()}")
    assert page.locator("#result_list tbody tr", has_text=command.command_id).count() == 1

    # Every page of the day at 1440 × 900 and 390 × 844.
    pages = {
        "dashboard": "/admin/",
        "accounts-in-breach": "/admin/policies/tradingaccount/?risk=breached",
        "account-risk": f"/admin/policies/tradingaccount/{account.pk}/risk/",
        "kill-switch": f"/admin/panel/kill-switch/account/{account.pk}/close_all_and_disable/",
        "kill-switch-log": "/admin/panel/killswitchuse/",
        "command": f"/admin/commands/command/{command.pk}/change/",
        "alerts": "/admin/alerts/alert/",
        "builder": "/admin/panel/builder/",
        "environment": "/admin/panel/environment/",
    }
    for device, viewport in BAD_DAY_VIEWPORTS.items():
        page.set_viewport_size(viewport)
        for name, path in pages.items():
            visit.go(path)
            visit.shot(f"bad-day-{name}-{device}")
            if name in FITS:  # the pages this issue laid out: nothing wider than the screen
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"] + 1, f"{name} on {device} is {width} px wide"
    assert visit.errors == []
    connections.close_all()
