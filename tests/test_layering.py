"""ARCHITECTURE.md "Layering": the import-linter contracts in pyproject.toml hold for the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_newcomer_finds_every_app_importing_only_downwards():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_an_app_that_imports_upwards_breaks_the_contract():
    """The check can fail: a module planted in `tenancy` that imports `risk` is found."""
    planted = ROOT / "tenancy" / "_upward_probe.py"
    planted.write_text("from risk import rules  # noqa: F401 - an upward import, planted by a test\n")
    try:
        result = lint_imports()
    finally:
        planted.unlink()
    assert result.returncode != 0
    assert "tenancy is not allowed to import risk" in result.stdout
