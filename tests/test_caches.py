"""Every per-process cache is declared once (bridgeproject.caches), and the docs list exactly those."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from bridgeproject import caches
from tests.conftest import fresh

DOCS = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


@pytest.mark.parametrize("cache", [c for c in caches.CACHES if c.target], ids=lambda c: c.name)
def test_every_declared_cache_is_a_container_the_table_can_measure_and_empty(cache):
    container = caches._resolve(cache.target)
    assert isinstance(len(container), int)
    assert callable(container.clear)
    assert cache.target.split(":")[0] == cache.where


def test_an_operator_reading_the_architecture_doc_sees_exactly_the_declared_caches():
    out = io.StringIO()
    call_command("caches", "--markdown", stdout=out)
    assert out.getvalue().strip() in DOCS.read_text()


def test_alices_traffic_fills_the_row_caches_and_forget_all_empties_them(alice, account_1):
    assert alice.post("ingest", fresh("close_positions")).status_code == 202
    held = {c.name: caches.size(c) for c in caches.CACHES if c.holds_rows and c.target}
    assert held["tenant id → tenant"] and held["(tenant, login, server) → account"]
    assert held["idempotency key → stored response"] == 1
    caches.forget_all()
    assert all(caches.size(c) == 0 for c in caches.CACHES if c.holds_rows and c.target)
