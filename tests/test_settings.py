"""Settings refuse a configuration that would break the lanes, with a message that says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import bridgeproject.settings"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_default_retry_pauses_and_drains_fit_inside_both_lanes_task_timeouts() -> None:
    assert _load_settings().returncode == 0


def test_retry_pauses_that_outlast_the_normal_task_timeout_are_refused() -> None:
    loaded = _load_settings(COMMAND_RETRY_BACKOFF_SECONDS="20,20,20")
    assert loaded.returncode != 0
    assert "ImproperlyConfigured" in loaded.stderr
    assert "normal cluster's drain (2.0 s) and retry pauses (60.0 s)" in loaded.stderr


def test_long_pauses_that_the_fast_deadline_cuts_short_are_accepted_for_a_long_outage() -> None:
    # What the terminal_down drill runs: 42.5 s of pauses, 30 s of them on the fast lane.
    assert _load_settings(COMMAND_RETRY_BACKOFF_SECONDS="0.5,1,2" + ",3" * 13).returncode == 0


def test_a_fast_lane_drain_that_would_outlast_its_task_timeout_is_refused() -> None:
    loaded = _load_settings(FAST_LANE_DRAIN_SECONDS="36")
    assert loaded.returncode != 0
    assert "fastlane cluster's drain (36.0 s) and retry pauses (5.15 s)" in loaded.stderr
