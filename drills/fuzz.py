"""Fuzz every operation of /api/v1/schema with schemathesis, authenticated as each tenant.

    .venv/bin/python drills/fuzz.py [--max-examples 150]

A real gunicorn on a fresh PostgreSQL database (bridge_drill_fuzz); schemathesis's CLI runs its
examples, coverage, fuzzing and stateful phases with every check but `positive_data_acceptance`
(the protocol has cross-field rules a schema cannot state — header key = meta key, the tenant a
token may act for, the account's owner — so schema-valid requests are legitimately refused), and
drills/fuzz_hooks.py steers three cases in four into the tenant's real data. Passes when no check
fails (no 5xx, every status, content type, header and body as documented) and, at the default
size, at least 1,000 cases ran.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drills.harness import (
    DEMO_TOKEN,
    LOGIN_1,
    LOGIN_2,
    OUT,
    ROOT,
    SERVER,
    TENANT_2_TOKEN,
    auth,
    free_port,
    fresh_database,
    lanes,
    policy_body,
    print_figures,
    running,
    wait_http,
    web,
    write_result,
)

CHECKS_EXCLUDED = "positive_data_acceptance"


def run_schemathesis(port: int, tenant: str, token: str, login: int, max_examples: int, seed: int | None) -> dict:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "drills.fuzz_hooks",
        "PYTHONPATH": str(ROOT),
        "FUZZ_TENANT": tenant,
        "FUZZ_LOGIN": str(login),
        "FUZZ_SERVER": SERVER,
    }
    argv = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"http://127.0.0.1:{port}/api/v1/schema",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--exclude-checks",
        CHECKS_EXCLUDED,
        "--max-examples",
        str(max_examples),
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--continue-on-failure",
        "--no-color",
    ]
    if seed is not None:
        argv += ["--seed", str(seed)]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=OUT, capture_output=True, text=True, timeout=3600)
    output = proc.stdout + proc.stderr
    (OUT / f"fuzz-{tenant}.txt").write_text(output)
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) unique failures?", output)
    codes = sorted(set(re.findall(r"^- (ST\d+ [^\n]+)$", output, re.M)))
    seed_used = re.search(r"Seed: (\d+)", output)
    return {
        "tenant": tenant,
        "cases": int(generated.group(1)) if generated else 0,
        "unique_failures": int(failures.group(1)) if failures else (0 if proc.returncode == 0 else -1),
        "failure_kinds": codes,
        "server_errors": len(re.findall(r"\[5\d\d\]", output)),
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "seed": seed_used.group(1) if seed_used else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=150, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    url = fresh_database("bridge_drill_fuzz")
    port = free_port()
    server = web(url, port, name="fuzz-web")
    runs = []
    # The bridge as deployed: with both lanes up, health is not 503 `down` for want of a fast
    # worker (which schemathesis would count as a server error).
    with running(server, *lanes(url)):
        if not wait_http(port):
            raise SystemExit("the web process did not come up")
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10).status_code == 503:
            if time.monotonic() > deadline:
                raise SystemExit("health stayed 503 down: the lanes did not come up")
            time.sleep(0.5)
        # tenant_2's account, registered the way Laravel does: its first policy snapshot.
        httpx.post(
            f"http://127.0.0.1:{port}/api/v1/mt5/policies",
            json=policy_body(tenant="tenant_2", login=LOGIN_2),
            headers=auth(TENANT_2_TOKEN),
            timeout=30,
        ).raise_for_status()
        for tenant, token, login in (("tenant_1", DEMO_TOKEN, LOGIN_1), ("tenant_2", TENANT_2_TOKEN, LOGIN_2)):
            runs.append(run_schemathesis(port, tenant, token, login, args.max_examples, args.seed))
    tracebacks = server.log.read_text(errors="replace").count("unhandled error") if server.log.exists() else 0
    total = sum(run["cases"] for run in runs)
    failures = sum(max(run["unique_failures"], 0) for run in runs) + sum(run["unique_failures"] < 0 for run in runs)
    passed = failures == 0 and tracebacks == 0 and all(run["cases"] > 0 for run in runs)
    if args.max_examples >= 150:
        passed = passed and total >= 1000
    figures = {
        "cases (both tenants)": total,
        **{f"cases {run['tenant']}": run["cases"] for run in runs},
        "unique check failures": failures,
        "failure kinds": sorted({kind for run in runs for kind in run["failure_kinds"]}) or "none",
        "5xx responses seen": sum(run["server_errors"] for run in runs),
        "unhandled errors in the web log": tracebacks,
        "seconds": round(sum(run["seconds"] for run in runs), 1),
        "result": "PASS" if passed else "FAIL",
    }
    print_figures("fuzz: schemathesis, every operation, each tenant", figures)
    print(f"  full output: {OUT}/fuzz-tenant_1.txt, {OUT}/fuzz-tenant_2.txt")
    write_result("fuzz", {"passed": passed, "figures": figures, "runs": runs})
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
