"""Erin checks the served document with the tools her TypeScript team and an API reviewer use
(PROTOCOL §9 "OpenAPI"), at the versions pinned in contract/package-lock.json:

- openapi-typescript's types accept every request example of the document (an envelope of each
  command type, the policy snapshot, the flat body), and `command_type` narrows a payload to its
  own fields (contract/discriminator.ts): `tsc --noEmit` passes;
- Redocly's recommended rules and Spectral's `spectral:oas` report no error, and no warning but
  the ones docs/laravel.md explains.

`npm ci` installs the tools into contract/node_modules when they are missing or the lock file
changed. Node.js (20.19 or newer) and npm are needed: without them these tests fail, never skip."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from commands import examples
from tests.openapi_document import served_document

CONTRACT = Path(__file__).resolve().parent.parent / "contract"
BUILD = CONTRACT / "build"
BIN = CONTRACT / "node_modules" / ".bin"
ENV = {
    **os.environ,
    "NO_COLOR": "1",
    "DO_NOT_TRACK": "1",
    "SCARF_ANALYTICS": "false",
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
}

# The warnings the linters still give, each explained in docs/laravel.md ("Linters"): a new one
# fails here until it is fixed or explained there.
REDOCLY_WARNINGS_EXPLAINED = {"info-license", "operation-4xx-response", "no-illogical-composition-keywords"}
SPECTRAL_WARNINGS_EXPLAINED = {"info-contact"}
SPECTRAL_SEVERITY = {0: "error", 1: "warning", 2: "info", 3: "hint"}


def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], cwd=CONTRACT, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"


@pytest.fixture(scope="session")
def tools() -> Path:
    """contract/node_modules/.bin, installed by `npm ci` unless it already holds this lock file's packages."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "Node.js 20.19+ and npm are needed for the OpenAPI tool checks (docs/laravel.md, 'Linters'):"
            f" node is {node or 'missing'}, npm is {npm or 'missing'}."
        )
    digest = hashlib.sha256((CONTRACT / "package-lock.json").read_bytes()).hexdigest()
    stamp = CONTRACT / "node_modules" / ".installed-from-lock"
    if not stamp.exists() or stamp.read_text() != digest:
        installed = run(npm, "ci", timeout=600)
        assert installed.returncode == 0, f"npm ci in contract/ failed:\n{output(installed)}"
        stamp.write_text(digest)
    return BIN


@pytest.fixture(scope="session")
def document(django_db_setup: None, django_db_blocker: Any) -> dict[str, Any]:
    """The served document, written to contract/build/openapi.json for the tools."""
    served = served_document(django_db_blocker)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "openapi.json").write_text(json.dumps(served, indent=2))
    return served


def request_examples(document: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(operationId, example key, value) of every request example in the document."""
    found = []
    for item in document["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for key, example in content.get("examples", {}).items():
                found.append((operation["operationId"], key, example["value"]))
    return found


def examples_module(document: dict[str, Any]) -> str:
    """build/examples.ts: each request example as a constant of its operation's generated request
    type, and each command envelope's payload also as its own command type's payload type."""
    lines = [
        "// Written by tests/test_openapi_tools.py from the served document: do not edit.",
        'import type { components, operations } from "./bridge";',
        "",
    ]
    for operation_id, key, value in request_examples(document):
        body = f'operations["{operation_id}"]["requestBody"]["content"]["application/json"]'
        lines.append(f"export const {operation_id}_{key}: {body} = {json.dumps(value, indent=2)};")
    for command_type, envelope in examples.COMMAND_ENVELOPES.items():
        payload = "".join(part.title() for part in command_type.split("_")) + "PayloadRequest"
        lines.append(
            f'export const {command_type}: components["schemas"]["CommandEnvelopeDocRequest"]'
            f' & {{ payload: components["schemas"]["{payload}"] }} = {json.dumps(envelope, indent=2)};'
        )
    return "\n".join(lines) + "\n"


def test_openapi_typescript_types_accept_every_request_example_and_narrow_on_command_type(tools, document):
    create_examples = {key for operation_id, key, _ in request_examples(document) if operation_id == "command_create"}
    assert len(create_examples) == len(examples.COMMAND_ENVELOPES) + 1  # every command type and the flat body

    generated = run(tools / "openapi-typescript", BUILD / "openapi.json", "--output", BUILD / "bridge.d.ts")
    assert generated.returncode == 0, output(generated)
    assert "warn" not in (generated.stdout + generated.stderr).lower(), output(generated)
    (BUILD / "examples.ts").write_text(examples_module(document))

    checked = run(tools / "tsc", "--project", CONTRACT / "tsconfig.json")
    assert checked.returncode == 0, f"tsc --noEmit (contract/tsconfig.json):\n{output(checked)}"


def test_redocly_recommended_rules_find_no_error_and_only_the_explained_warnings(tools, document):
    linted = run(tools / "redocly", "lint", BUILD / "openapi.json", "--format=json")
    assert linted.stdout.strip(), output(linted)
    report = json.loads(linted.stdout)
    problems = [(problem["severity"], problem["ruleId"], problem["message"]) for problem in report["problems"]]
    assert [problem for problem in problems if problem[0] == "error"] == [], problems
    assert linted.returncode == 0, output(linted)
    assert {rule for severity, rule, _ in problems if severity == "warn"} <= REDOCLY_WARNINGS_EXPLAINED, problems


def test_spectral_oas_rules_find_no_error_and_only_the_explained_warnings(tools, document):
    ruleset = CONTRACT / ".spectral.yaml"
    linted = run(tools / "spectral", "lint", BUILD / "openapi.json", "--ruleset", ruleset, "--format", "json")
    assert linted.stdout.strip().startswith("["), output(linted)
    problems = [
        (SPECTRAL_SEVERITY[problem["severity"]], problem["code"], ".".join(map(str, problem["path"])))
        for problem in json.loads(linted.stdout)
    ]
    assert [problem for problem in problems if problem[0] == "error"] == [], problems
    assert linted.returncode == 0, output(linted)
    assert {code for severity, code, _ in problems if severity != "hint"} <= SPECTRAL_WARNINGS_EXPLAINED, problems
