"""CPU per call of request validation by the request models, beside parsing the same body, in one run.

Run: python bench/bench_validation.py [--iterations N]

No database is touched; settings are loaded only for the hooks the policy payload calls. Each
figure is time.process_time() over N calls, best of three rounds, in µs per call. The bodies are
the panel's examples: the close_positions envelope (envelope, then its command payload), the flat
open_position body (flat fields, then the command payload built from them, as the intake does),
the policy snapshot's payload, and its envelope with the payload. The baseline is
`json.loads` of the same body: what every request pays before validation starts.
"""

from __future__ import annotations

import argparse
import json
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

from commands import validation  # noqa: E402
from commands.examples import example  # noqa: E402


def close_positions() -> Callable[[], Any]:
    body = example("close_positions")

    def run() -> Any:
        checked = validation.validate_envelope(body)
        return validation.validate_command_payload(checked["payload"])

    return run


def flat_open_position() -> Callable[[], Any]:
    body = example("legacy_open_position")

    def run() -> Any:
        flat = validation.validate_flat(body)
        return validation.validate_command_payload(
            {**flat["payload"], "command_id": flat["command_id"], "command_type": flat["command_type"]}
        )

    return run


def policy_snapshot() -> Callable[[], Any]:
    payload = example("policy_snapshot")["payload"]

    def run() -> Any:
        return validation.validate_policy_payload(payload)

    return run


def policy_envelope() -> Callable[[], Any]:
    body = example("policy_snapshot")

    def run() -> Any:
        checked = validation.validate_envelope(body)
        return validation.validate_policy_payload(checked["payload"])

    return run


def parse(name: str, part: str | None = None) -> Callable[[], Any]:
    body = example(name)
    text = json.dumps(body[part] if part else body)
    return lambda: json.loads(text)


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

    cases = {
        "close_positions envelope + payload": (close_positions, parse("close_positions")),
        "flat open_position + payload": (flat_open_position, parse("legacy_open_position")),
        "policy snapshot payload": (policy_snapshot, parse("policy_snapshot", "payload")),
        "policy snapshot envelope + payload": (policy_envelope, parse("policy_snapshot")),
    }
    print(f"{'CPU µs per call':40} {'json.loads':>10} {'models':>9} {'ratio':>7}")
    for name, (build, baseline) in cases.items():
        parse_us = cpu_us_per_call(baseline, args.iterations)
        model_us = cpu_us_per_call(build(), args.iterations)
        print(f"{name:40} {parse_us:10.1f} {model_us:9.1f} {model_us / parse_us:6.1f}x")


if __name__ == "__main__":
    main()
