"""CPU per call of request validation: DRF alone against the compiled fast path, in one run.

Run: python bench/bench_validation.py [--iterations N]

No database is touched; settings are loaded only for DRF and the timezone. Each figure is
time.process_time() over N calls, best of three rounds, in µs per call. The bodies are the
panel's examples: the close_positions envelope (envelope, then its command payload), the flat
open_position body (flat fields, then the command payload built from them, as the intake does),
and the policy snapshot's payload.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bridgeproject.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from commands import envelope, validation  # noqa: E402
from commands.examples import example  # noqa: E402


def close_positions(
    validate_with: Callable[..., Any], validate_command_payload: Callable[..., Any]
) -> Callable[[], Any]:
    body = example("close_positions")

    def run() -> Any:
        checked = validate_with(envelope.EnvelopeSerializer, body, "")
        return validate_command_payload(checked["payload"])

    return run


def flat_open_position(
    validate_with: Callable[..., Any], validate_command_payload: Callable[..., Any]
) -> Callable[[], Any]:
    body = example("legacy_open_position")

    def run() -> Any:
        flat = validate_with(envelope.LegacyFlatCommandSerializer, body, "")
        return validate_command_payload(
            {**flat["payload"], "command_id": flat["command_id"], "command_type": flat["command_type"]}
        )

    return run


def policy_snapshot(
    validate_with: Callable[..., Any], validate_command_payload: Callable[..., Any]
) -> Callable[[], Any]:
    payload = example("policy_snapshot")["payload"]

    def run() -> Any:
        return validate_with(envelope.PolicyPayloadSerializer, payload, "payload")

    return run


def policy_envelope(
    validate_with: Callable[..., Any], validate_command_payload: Callable[..., Any]
) -> Callable[[], Any]:
    body = example("policy_snapshot")

    def run() -> Any:
        checked = validate_with(envelope.EnvelopeSerializer, body, "")
        return validate_with(envelope.PolicyPayloadSerializer, checked["payload"], "payload")

    return run


def cpu_us_per_call(run: Callable[[], Any], iterations: int) -> float:
    run()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(iterations):
            run()
        best = min(best, time.process_time() - start)
    return best / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()

    drf = (validation.drf_validate_with, validation.drf_validate_command_payload)
    fast = (validation.validate_with, validation.validate_command_payload)
    cases = {
        "close_positions envelope + payload": close_positions,
        "flat open_position + payload": flat_open_position,
        "policy snapshot payload": policy_snapshot,
        "policy snapshot envelope + payload": policy_envelope,
    }
    for build in cases.values():
        assert build(*drf)() == build(*fast)(), "the fast path and DRF disagree on an example"
    # Figures for a fast path that quietly declined would only time DRF twice.
    assert validation.fast_validate(envelope.EnvelopeSerializer, example("close_positions")) is not None
    assert validation.fast_validate(envelope.LegacyFlatCommandSerializer, example("legacy_open_position")) is not None
    assert validation.fast_validate(envelope.PolicyPayloadSerializer, example("policy_snapshot")["payload"]) is not None

    print(f"{'CPU µs per call':40} {'DRF':>9} {'fast':>9} {'ratio':>7}")
    for name, build in cases.items():
        slow_us = cpu_us_per_call(build(*drf), args.iterations)
        fast_us = cpu_us_per_call(build(*fast), args.iterations)
        print(f"{name:40} {slow_us:9.1f} {fast_us:9.1f} {slow_us / fast_us:6.1f}x")


if __name__ == "__main__":
    main()
