"""`runbridge`'s process table: every process of ARCHITECTURE.md, web on sync workers."""

from __future__ import annotations

from execution.management.commands.runbridge import process_env, process_table


def test_it_runs_web_both_lanes_the_monitor_hosting_the_terminals_the_callbacks_and_the_simulators_feed(settings):
    settings.MT5_BACKEND = "simulator"
    table = process_table(host="127.0.0.1", port=8000, sim_feed=True)
    assert set(table) == {"web", "normal", "fastlane", "risk", "callbacks", "simfeed"}
    assert table["risk"][0].endswith("riskmonitor --host-terminals")
    assert table["fastlane"][1] == {"Q_CLUSTER_NAME": "fastlane"}
    assert process_table(host="127.0.0.1", port=8000, sim_feed=False).keys() == table.keys() - {"simfeed"}


def test_web_runs_four_sync_workers_unless_web_workers_says_otherwise(monkeypatch):
    monkeypatch.delenv("WEB_WORKERS", raising=False)
    web = process_table(host="0.0.0.0", port=9000, sim_feed=False)["web"][0]
    assert "--bind 0.0.0.0:9000 --workers 4 " in web
    assert "--threads" not in web and "gthread" not in web
    monkeypatch.setenv("WEB_WORKERS", "6")
    assert "--workers 6 " in process_table(host="0.0.0.0", port=9000, sim_feed=False)["web"][0]


def test_the_manager_backend_has_no_terminal_host(settings):
    settings.MT5_BACKEND = "manager"
    table = process_table(host="127.0.0.1", port=8000, sim_feed=False)
    assert "terminals" not in table and table["risk"][0].endswith("riskmonitor")


def test_with_a_terminal_host_among_them_only_the_host_takes_terminals_unless_ops_say_otherwise(settings):
    settings.MT5_BACKEND = "simulator"
    table = process_table(host="127.0.0.1", port=8000, sim_feed=False, monitor_hosts=False)
    assert process_env(table, {"PATH": "/bin"}) == {"PATH": "/bin", "PYTHONUNBUFFERED": "1", "TERMINAL_OWNERS": "hosts"}
    assert process_env(table, {"TERMINAL_OWNERS": "any"})["TERMINAL_OWNERS"] == "any"
    without_host = {name: spec for name, spec in table.items() if name != "terminals"}
    assert "TERMINAL_OWNERS" not in process_env(without_host, {})


def test_ops_can_host_the_terminals_in_a_process_of_their_own_instead_of_the_risk_monitor(settings):
    settings.MT5_BACKEND = "simulator"
    table = process_table(host="127.0.0.1", port=8000, sim_feed=False, monitor_hosts=False)
    assert table["terminals"][0].endswith("terminalhost")
    assert table["risk"][0].endswith("riskmonitor")
    assert process_env(process_table(host="127.0.0.1", port=8000, sim_feed=False), {})["TERMINAL_OWNERS"] == "hosts"
