# ruff: noqa: F811  (the personas' fixtures are imported from tests.test_panel_personas, then named as arguments)

"""Configured terminals (ARCHITECTURE.md, "Real MT5 topology"): the ``terminals`` command, the
resolver ``terminal_for``, the gateway sending each account's calls to its own terminal, and the
demo terminal of seed_demo."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse

from execution.adapters.router import TerminalRouter
from execution.gateways import build_gateway, terminal_router
from execution.models import SimAccount, Terminal, TerminalAccount, TerminalLease
from execution.simulator import SimulatedMetaTrader5
from execution.simulator.service import sim_account_state
from execution.terminals import TerminalConfig, terminal_for, terminals_for
from tests.execution_fixtures import ALICE, BOB, MAGIC, SERVER
from tests.rpyc_fakes import FakeClassicConnection
from tests.test_panel_personas import logged_in, root, sue, tess, world  # noqa: F401  (fixtures)

pytest_plugins = ["tests.execution_fixtures"]

SECRET = "s3cr3t-Pa55word"


def terminals(*args: str) -> str:
    out = StringIO()
    call_command("terminals", *args, stdout=out)
    return out.getvalue()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command as a shell runs it: the exit code, stdout and stderr (the test's database
    connection kept open, which run_from_argv closes as it ends)."""
    from execution.management.commands.terminals import Command

    try:
        with mock.patch("django.core.management.base.connections.close_all"):
            Command().run_from_argv(["manage.py", "terminals", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table(output: str) -> dict[str, list[str]]:
    """``terminals list`` as {name: [kind, where, accounts, symbols, password source]}."""
    lines = output.splitlines()
    header = lines[0]
    starts = [header.index(title) for title in ("NAME", "KIND", "WHERE", "ACCOUNTS", "SYMBOLS", "PASSWORD")]
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = cells[1:]
    return rows


# --- the command --------------------------------------------------------------------------------------------
def test_add_pins_the_accounts_and_list_shows_kind_address_accounts_and_password_source(db):
    terminals("add", "ftmo-1", "--path", r"C:\MT5\FTMO\terminal64.exe", "--accounts", "7001@Broker-Server,7002@Other",
              "--password-env", "MT5_PASSWORD_FTMO")  # fmt: skip
    terminals("add", "wine-1", "--host", "10.0.0.5", "--port", "18812", "--accounts", "7003@Broker-Server")
    rows = table(terminals("list"))
    assert rows == {
        "ftmo-1": [
            "path",
            r"C:\MT5\FTMO\terminal64.exe",
            "7001@Broker-Server,7002@Other",
            "learnt",
            "env MT5_PASSWORD_FTMO",
        ],
        "wine-1": ["mt5linux", "10.0.0.5:18812", "7003@Broker-Server", "learnt", "the terminal's saved login"],
    }


def test_list_says_when_no_terminal_is_configured(db):
    assert terminals("list").strip() == "no terminal configured"


def test_a_duplicate_name_is_refused_in_one_line_with_a_failing_exit_code(db, capsys):
    terminals("add", "t1", "--path", "a.exe")
    code, out, err = run_cli(capsys, "add", "t1", "--path", "b.exe")
    assert code != 0 and out == ""
    assert err.strip() == "CommandError: a terminal named 't1' already exists"
    assert Terminal.objects.get(name="t1").path == "a.exe"


def test_an_account_pinned_elsewhere_is_refused_whatever_the_case_and_spaces_of_its_server(db, capsys):
    terminals("add", "t1", "--path", "a.exe", "--accounts", "7001@Broker-Server")
    code, _, err = run_cli(capsys, "add", "t2", "--path", "b.exe", "--accounts", "7001@  broker-SERVER ")
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "account 7001@broker-SERVER is already pinned to terminal 't1'" in err
    assert not Terminal.objects.filter(name="t2").exists()  # nothing half-done
    terminals("add", "t3", "--path", "c.exe")
    terminals("pin", "t1", "--accounts", "7002@X")
    with pytest.raises(CommandError, match="account 7002@x is already pinned to terminal 't1'"):
        terminals("pin", "t3", "--accounts", "7002@x")


@pytest.mark.parametrize("accounts", ["7001", "@Broker-Server", "abc@Broker-Server", "7001@", "7001@A,,7002@B", "0@A"])
def test_a_malformed_login_at_server_is_refused(db, capsys, accounts):
    code, _, err = run_cli(capsys, "add", "t1", "--path", "a.exe", "--accounts", accounts)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "malformed account" in err
    assert not Terminal.objects.exists()


@pytest.mark.parametrize(
    "args", [["pin", "nope", "--accounts", "1@A"], ["remove", "nope"], ["unpin", "nope", "--accounts", "1@A"]]
)
def test_an_unknown_terminal_is_refused(db, capsys, args):
    code, _, err = run_cli(capsys, *args)
    assert code != 0 and err.strip() == "CommandError: unknown terminal 'nope' (see: manage.py terminals list)"


def test_a_terminal_needs_a_path_or_a_host_and_a_port(db, capsys):
    assert "needs --path" in run_cli(capsys, "add", "t1")[2]
    assert "both --host and --port" in run_cli(capsys, "add", "t1", "--host", "h")[2]
    assert "bad port" in run_cli(capsys, "add", "t1", "--host", "h", "--port", "70000")[2]
    assert "reserved" in run_cli(capsys, "add", "private-7001", "--path", "a")[2]
    assert not Terminal.objects.exists()


def test_a_password_on_the_command_line_is_refused_and_never_repeated_nor_stored(db, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "add", "t1", "--path", "a.exe", "--password", SECRET)
    assert code != 0 and "never given on the command line" in err
    code, out, err = run_cli(capsys, "add", "t1", "--path", "a.exe", "--password-env", SECRET)
    assert code != 0 and "NAME of an environment variable" in err and SECRET not in out + err
    assert not Terminal.objects.exists()

    monkeypatch.setenv("MT5_PASSWORD_T1", SECRET)
    terminals("add", "t1", "--path", "a.exe", "--accounts", "7001@Broker-Server", "--password-env", "MT5_PASSWORD_T1")
    listed = terminals("list")
    assert SECRET not in listed and "env MT5_PASSWORD_T1" in listed
    stored = [str(v) for row in Terminal.objects.values_list() for v in row]
    stored += [str(v) for row in TerminalAccount.objects.values_list() for v in row]
    assert not [value for value in stored if SECRET in value]
    config = terminal_for(7001, "Broker-Server")
    assert config.password == SECRET and SECRET not in repr(config)


def test_remove_refuses_while_accounts_are_pinned_and_force_unpins_them(db, capsys):
    terminals("add", "t1", "--path", "a.exe", "--accounts", "7001@Broker-Server,7002@Broker-Server")
    code, _, err = run_cli(capsys, "remove", "t1")
    assert code != 0 and "still serves 2 account(s)" in err and "--force" in err
    assert Terminal.objects.filter(name="t1").exists()
    assert terminals("remove", "t1", "--force").strip() == "terminal t1 removed (2 account(s) unpinned)"
    assert not Terminal.objects.exists() and not TerminalAccount.objects.exists()
    terminals("add", "t2", "--path", "b.exe")
    assert terminals("remove", "t2").strip() == "terminal t2 removed (0 account(s) unpinned)"


def test_pin_adds_accounts_once_and_unpin_frees_them_for_another_terminal(db):
    terminals("add", "t1", "--path", "a.exe")
    terminals("add", "t2", "--path", "b.exe")
    assert terminals("pin", "t1", "--accounts", "7001@Broker-Server", "--accounts", "7002@Broker-Server").startswith(
        "2 account(s) pinned"
    )
    assert terminals("pin", "t1", "--accounts", "7001@broker-server").startswith("0 account(s) pinned")
    assert terminals("unpin", "t1", "--accounts", "7001@BROKER-SERVER").startswith("1 account(s) unpinned")
    terminals("pin", "t2", "--accounts", "7001@Broker-Server")
    assert terminal_for(7001, "Broker-Server").name == "t2" and terminal_for(7002, "Broker-Server").name == "t1"


# --- the resolver -------------------------------------------------------------------------------------------
def test_a_pinned_account_is_served_by_its_terminal_with_the_password_read_at_use(db, monkeypatch):
    terminals("add", "t1", "--path", "a.exe", "--accounts", "7001@Broker-Server", "--password-env", "PW_T1")
    monkeypatch.delenv("PW_T1", raising=False)
    assert terminal_for(7001, " broker-server") == TerminalConfig("t1", "path", "a.exe", "", None)
    assert terminal_for(7001, "Broker-Server").password is None  # unset: the terminal's saved login
    monkeypatch.setenv("PW_T1", "first")
    assert terminal_for(7001, "Broker-Server").password == "first"
    monkeypatch.setenv("PW_T1", "rotated")
    assert terminal_for(7001, "Broker-Server").password == "rotated"


@override_settings(MT5_BACKEND="simulator")
def test_with_the_simulator_an_unpinned_account_has_a_private_terminal_of_its_own(db):
    assert terminal_for(7001, SERVER).name == "private-7001"
    assert terminal_for(7002, SERVER).name == "private-7002"
    assert terminal_for(7001, SERVER).password is None


@override_settings(MT5_BACKEND="official", MT5_TERMINAL_PATH="legacy.exe", MT5_LOGIN=7001, MT5_PASSWORD=SECRET,
                   MT5_SERVER="Broker-Server")  # fmt: skip
def test_with_official_an_unpinned_account_keeps_the_legacy_single_terminal(db):
    alice, bob = terminal_for(7001, "broker-server"), terminal_for(7002, SERVER)
    assert (alice.name, alice.kind, alice.path, alice.password) == ("legacy", "path", "legacy.exe", SECRET)
    assert (bob.name, bob.path, bob.password) == ("legacy", "legacy.exe", None)  # the terminal's saved login


@override_settings(MT5_BACKEND="mt5linux", MT5LINUX_HOST="10.0.0.9", MT5LINUX_PORT=18999, MT5_TERMINAL_PATH="")
def test_with_mt5linux_an_unpinned_account_keeps_the_legacy_host_and_port(db):
    config = terminal_for(7001, SERVER)
    assert (config.name, config.kind, config.host, config.port) == ("legacy", "mt5linux", "10.0.0.9", 18999)


@override_settings(MT5_BACKEND="official")
def test_many_accounts_are_resolved_in_one_query_as_one_by_one(db):
    terminals("add", "t1", "--path", "a.exe", "--accounts", "7001@Broker-Server")
    terminals("add", "t2", "--host", "h", "--port", "1", "--accounts", "7002@Other")
    keys = [(7001, SERVER), (7002, "other"), (7003, SERVER)]
    with CaptureQueriesContext(connection) as queries:
        many = terminals_for(keys)
    assert len(queries) == 1
    assert many == {key: terminal_for(*key) for key in keys}
    assert [many[key].name for key in keys] == ["t1", "t2", "legacy"]


# --- the gateway --------------------------------------------------------------------------------------------
class RecordingMT5(SimulatedMetaTrader5):
    """The simulated terminal, recording what a terminal log would: initialize paths and logins."""

    def __init__(self, log: list[tuple[Any, ...]], name: str = "local") -> None:
        super().__init__()
        self.log, self.name = log, name

    def initialize(self, path: str | None = None, **kwargs: Any) -> bool:
        self.log.append(("initialize", self.name, path))
        return super().initialize(path, **kwargs)

    def login(self, login: int, password: str | None = None, server: str | None = None, timeout: int | None = None):
        self.log.append(("login", self.name, login, password))
        return super().login(login, password=password, server=server, timeout=timeout)

    def shutdown(self) -> None:
        self.log.append(("shutdown", self.name))
        super().shutdown()


def buy(gateway: Any, login: int, tag: str) -> Any:
    return gateway.open_position(login, SERVER, symbol="EURUSD", side="buy", volume=Decimal("0.10"), tag=tag)


@override_settings(MT5_BACKEND="official", MT5_TERMINAL_PATH="", MT5_LOGIN=0)
def test_the_official_gateway_initialises_each_accounts_own_terminal_path(alice_account, bob_account, monkeypatch):
    monkeypatch.setenv("PW_A", "alice-password")
    terminals("add", "a", "--path", "A.exe", "--accounts", f"{ALICE}@{SERVER}", "--password-env", "PW_A")
    terminals("add", "b", "--path", "B.exe", "--accounts", f"{BOB}@{SERVER}")
    log: list[tuple[Any, ...]] = []
    local = RecordingMT5(log)
    gateway = terminal_router("official", magic=MAGIC, local_module=lambda: local)

    assert buy(gateway, ALICE, "b:a-1").ok
    assert log == [("initialize", "local", "A.exe"), ("login", "local", ALICE, "alice-password")]
    log.clear()
    assert len(gateway.account_snapshot(BOB, SERVER).positions) == 0
    assert log == [("shutdown", "local"), ("initialize", "local", "B.exe"), ("login", "local", BOB, None)]
    log.clear()
    assert len(gateway.account_snapshot(ALICE, SERVER).positions) == 1
    assert log[:2] == [("shutdown", "local"), ("initialize", "local", "A.exe")]
    log.clear()
    gateway.account_snapshot(ALICE, SERVER)
    assert log == []  # the same terminal, the same account: nothing to switch
    assert SimAccount.objects.get(login=ALICE).positions.count() == 1
    assert SimAccount.objects.get(login=BOB).positions.count() == 0
    assert set(gateway.terminals()) == {"a", "b"}


@override_settings(MT5_BACKEND="mt5linux", MT5LINUX_HOST="default-host", MT5LINUX_PORT=18812, MT5_TERMINAL_PATH="")
def test_the_mt5linux_gateway_reaches_each_terminal_at_its_own_host_and_port(alice_account, bob_account):
    terminals("add", "wine-a", "--host", "host-a", "--port", "18001", "--accounts", f"{ALICE}@{SERVER}")
    log: list[tuple[Any, ...]] = []
    opened: list[dict[str, Any]] = []

    def connect(**kwargs: Any) -> FakeClassicConnection:
        opened.append(kwargs)
        return FakeClassicConnection(RecordingMT5(log, f"{kwargs['host']}:{kwargs['port']}"))

    gateway = terminal_router("mt5linux", magic=MAGIC, rpyc_factory=connect)
    snapshots = gateway.account_snapshots([(ALICE, SERVER), (BOB, SERVER)])
    assert all(not isinstance(s, Exception) for s in snapshots.values())
    assert opened == [{"host": "host-a", "port": 18001}, {"host": "default-host", "port": 18812}]
    assert ("login", "host-a:18001", ALICE, None) in log and ("login", "default-host:18812", BOB, None) in log
    status = gateway.status()
    assert status["available"] is True and set(status["terminals"]) == {"wine-a", "legacy"}


@override_settings(MT5_BACKEND="official")
def test_a_terminal_whose_library_is_missing_is_unavailable_and_says_why(db):
    terminals("add", "a", "--path", "A.exe", "--accounts", f"{ALICE}@{SERVER}")
    gateway = build_gateway("official")
    assert isinstance(gateway, TerminalRouter)
    status = gateway.status()
    assert status["available"] is False and "a: " in status["detail"] and "MetaTrader5" in status["detail"]


def test_the_simulator_backend_trades_on_the_simulated_terminal_the_account_is_pinned_to(alice_account):
    terminals("add", "t1", "--path", "t1", "--accounts", f"{ALICE}@{SERVER}")
    gateway = build_gateway("simulator")
    assert isinstance(gateway, TerminalRouter) and gateway.status()["backend"] == "simulator"
    assert buy(gateway, ALICE, "b:sim-1").ok
    assert sim_account_state(ALICE)["terminal"] == "t1"


# --- mt5sim and seed_demo -----------------------------------------------------------------------------------
def test_mt5sim_account_create_pins_to_an_existing_terminal_only(db):
    terminals("add", "shared", "--path", "shared")
    call_command("mt5sim", "account", "create", "--login", "9001", "--balance", "100", "--terminal", "shared",
                 stdout=StringIO())  # fmt: skip
    assert terminal_for(9001, "Broker-Server").name == "shared"
    with pytest.raises(CommandError, match="unknown terminal 'nope'"):
        call_command("mt5sim", "account", "create", "--login", "9002", "--balance", "1", "--terminal", "nope")
    assert not SimAccount.objects.filter(login=9002).exists()
    call_command("mt5sim", "account", "create", "--login", "9003", "--balance", "1", stdout=StringIO())
    assert terminal_for(9003, "Broker-Server").name == "private-9003"


def test_seed_demo_pins_the_demo_account_to_the_demo_terminal_idempotently(db):
    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    terminal = Terminal.objects.get()
    assert (terminal.name, terminal.kind, terminal.path, terminal.password_env) == ("demo", "path", "demo", "")
    assert [str(pin) for pin in terminal.accounts.all()] == ["50040367@Broker-Server"]
    assert terminal_for(50040367, "Broker-Server").name == "demo"


# --- the panel ----------------------------------------------------------------------------------------------
def inline(*accounts: tuple[str, str], prefix: str = "accounts") -> dict[str, str]:
    data = {f"{prefix}-TOTAL_FORMS": str(len(accounts)), f"{prefix}-INITIAL_FORMS": "0"}
    for i, (login, server) in enumerate(accounts):
        data |= {f"{prefix}-{i}-login": login, f"{prefix}-{i}-server": server}
    return data


def test_a_superuser_adds_a_terminal_with_its_accounts_in_the_panel(root, monkeypatch):
    client = logged_in(root)
    add = reverse("admin:execution_terminal_add")
    assert client.get(add).status_code == 200
    form = {"name": "ftmo-1", "kind": "path", "path": r"C:\MT5\terminal64.exe", "host": "", "port": "",
            "password_env": "MT5_PASSWORD_FTMO", "notes": ""}  # fmt: skip
    response = client.post(add, form | inline(("7001", " Broker-Server "), ("7002", "Broker-Server")))
    assert response.status_code == 302, response.context["adminform"].errors if response.context else response
    terminal = Terminal.objects.get(name="ftmo-1")
    assert sorted(str(p) for p in terminal.accounts.all()) == ["7001@Broker-Server", "7002@Broker-Server"]

    monkeypatch.setenv("MT5_PASSWORD_FTMO", SECRET)
    listing = client.get(reverse("admin:execution_terminal_changelist")).content.decode()
    assert "ftmo-1" in listing and "env MT5_PASSWORD_FTMO" in listing and SECRET not in listing
    assert "nobody (is the terminal host running?)" in listing  # no process drives it yet
    TerminalLease.objects.create(name="ftmo-1", holder="h", host="vps-7", pid=4242, expires_msc=2**62)
    assert "vps-7 pid 4242" in client.get(reverse("admin:execution_terminal_changelist")).content.decode()

    # An account pinned elsewhere, and a password where a variable's name goes, are refused.
    other = form | {"name": "other", "path": "b.exe"}
    response = client.post(add, other | inline(("7001", "broker-server")))
    assert response.status_code == 200 and not Terminal.objects.filter(name="other").exists()
    response = client.post(add, other | {"password_env": SECRET + "!"} | inline())
    assert response.status_code == 200 and SECRET not in response.content.decode().replace(f'value="{SECRET}!"', "")
    assert not Terminal.objects.filter(name="other").exists()


def test_a_superuser_sets_a_terminal_s_symbol_suffix_in_the_panel_and_a_malformed_name_is_refused(root):
    client = logged_in(root)
    add = reverse("admin:execution_terminal_add")
    form = {"name": "suffix-1", "kind": "path", "path": "S.exe", "host": "", "port": "", "password_env": "",
            "symbol_suffix": " .m ", "symbol_prefix": "", "symbol_names": "DOW = US30.m", "notes": ""}  # fmt: skip
    response = client.post(add, form | inline(("7101", "Broker-Suffix")))
    assert response.status_code == 302, response.context["adminform"].errors if response.context else response
    terminal = Terminal.objects.get(name="suffix-1")
    assert (terminal.symbol_suffix, terminal.symbol_names) == (".m", "DOW=US30.m")
    assert terminal_for(7101, "Broker-Suffix").symbols.names == (("DOW", "US30.m"),)
    assert "SYMBOL.m, DOW=US30.m" in client.get(reverse("admin:execution_terminal_changelist")).content.decode()
    response = client.post(add, form | {"name": "bad", "symbol_names": "US30"} | inline())
    assert response.status_code == 200 and "malformed symbol name" in response.content.decode()
    assert not Terminal.objects.filter(name="bad").exists()


def test_support_and_scoped_operators_cannot_see_terminals(sue, tess, root):
    terminals("add", "t1", "--path", "a.exe", "--accounts", "7001@Broker-Server")
    changelist = reverse("admin:execution_terminal_changelist")
    for user in (sue, tess):
        client = logged_in(user)
        assert client.get(changelist).status_code == 403
        assert client.get(reverse("admin:execution_terminal_add")).status_code == 403
        assert changelist.encode() not in client.get(reverse("admin:index")).content
    assert changelist.encode() in logged_in(root).get(reverse("admin:index")).content
