"""Dana integrates from the document alone (PROTOCOL §9 "OpenAPI": generator-clean). She points
openapi-python-client at the served document, changes nothing in what it writes, and uses that
client against the live API: the seed's policy snapshot, an envelope of every command type, the
legacy flat body, a command read back and the sync read. The client is generated afresh in every
test session from the document the app serves, so it can never lag behind the document."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from types import ModuleType
from typing import Any

import attrs
import pytest

from commands import examples
from commands.models import Command, CommandType
from commands.states import State
from execution.runner import command_execute
from execution.simulator.service import sim_account_create, sim_set_price
from tests.conftest import ALICE_TOKEN
from tests.openapi_document import served_document
from tests.test_execution import _terminal  # noqa: F401  # fixture: a fresh gateway for each test

PACKAGE = "bridge_client"


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any) -> Iterator[Any]:
    """`openapi-python-client generate` on the served document, as its README says, into a
    temporary folder; any warning of the generator (a schema it could not turn into code) fails."""
    folder = tmp_path_factory.mktemp("generated-client")
    document = folder / "openapi.json"
    document.write_text(json.dumps(served_document(django_db_blocker)))
    config = folder / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no formatter run on the output: it is imported, not read
    result = subprocess.run(
        [
            *(sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document)),
            *("--output-path", str(folder / PACKAGE), "--meta", "none", "--config", str(config), "--fail-on-warning"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(folder))
    try:
        yield Generated(importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


class Generated:
    """The generated package's parts, by the names the generator gives them."""

    def __init__(self, package: ModuleType) -> None:
        self.package = package
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.types = importlib.import_module(f"{PACKAGE}.types")

    def api(self, tag: str, operation: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")

    def client(self, base_url: str, token: str) -> Any:
        return self.package.AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)


def model_name(command_type: str) -> str:
    return "".join(part.title() for part in command_type.split("_")) + "PayloadRequest"


def same(value: Any) -> Any:
    """A JSON value with its timestamps as datetimes: the generated models write `+00:00` for `Z`."""
    if isinstance(value, dict):
        return {key: same(item) for key, item in value.items()}
    if isinstance(value, list):
        return [same(item) for item in value]
    if isinstance(value, str) and len(value) >= 20 and value[10:11] == "T":
        return datetime.fromisoformat(value)
    return value


def undocumented(value: Any, where: str = "") -> list[str]:
    """Every key of an answer that landed in a generated model's `additional_properties`: a field
    the API sends that the document does not name."""
    if isinstance(value, list):
        return [key for index, item in enumerate(value) for key in undocumented(item, f"{where}[{index}]")]
    if not attrs.has(type(value)):
        return []
    found = [f"{where}.{key}" for key in getattr(value, "additional_properties", {})]
    for field in attrs.fields(type(value)):
        if field.name != "additional_properties":
            found += undocumented(getattr(value, field.name), f"{where}.{field.name}")
    return found


# --- the generated code itself -------------------------------------------------------------------


def test_every_command_types_envelope_becomes_its_own_payload_model_and_back_unchanged(generated):
    envelope_model = generated.models.CommandEnvelopeDocRequest
    assert set(examples.COMMAND_ENVELOPES) == set(CommandType.values)
    for command_type, envelope in examples.COMMAND_ENVELOPES.items():
        parsed = envelope_model.from_dict(envelope)
        assert type(parsed.payload).__name__ == model_name(command_type)  # chosen by command_type
        assert same(parsed.to_dict()) == same(envelope)
        assert undocumented(parsed) == []


def test_the_legacy_flat_body_and_the_policy_snapshot_have_models_that_keep_every_field(generated):
    flat = generated.models.LegacyFlatCommandRequest.from_dict(examples.LEGACY_OPEN_POSITION)
    assert same(flat.to_dict()) == same(examples.LEGACY_OPEN_POSITION)
    assert flat.additional_properties == {}  # its payload is documented free-form: any command's fields
    policy = generated.models.PolicyEnvelopeDocRequest.from_dict(examples.POLICY_SNAPSHOT)
    assert same(policy.to_dict()) == same(examples.POLICY_SNAPSHOT) and undocumented(policy) == []


# --- the generated client against the live API ---------------------------------------------------


@pytest.fixture
def dana(generated, live_server, tenant_1, _terminal):  # noqa: F811
    """Dana's client for alice's tenant, on a bridge served over HTTP, with a simulated account
    that exists in MT5 but is not registered yet: her first policy snapshot registers it."""
    sim_account_create(login=examples.DEMO_LOGIN, balance=100000, server=examples.DEMO_SERVER)
    sim_set_price("EURUSD", "1.08500")
    client = generated.client(live_server.url, ALICE_TOKEN)
    with client as open_client:
        yield open_client


def test_dana_registers_the_account_and_sends_every_command_type_with_the_generated_client(generated, dana):
    models = generated.models
    policy = generated.api("mt5", "policy_apply").sync_detailed(
        client=dana, body=models.PolicyEnvelopeDocRequest.from_dict(examples.POLICY_SNAPSHOT)
    )
    assert policy.status_code == 200
    assert isinstance(policy.parsed, models.PolicyResult)
    assert (policy.parsed.status, policy.parsed.policy_version) == ("applied", 12)

    create = generated.api("mt5", "command_create")
    for command_type, envelope in examples.COMMAND_ENVELOPES.items():
        body = models.CommandEnvelopeDocRequest.from_dict(envelope)
        answer = create.sync_detailed(client=dana, body=body, x_idempotency_key=envelope["meta"]["idempotency_key"])
        assert answer.status_code == 202, (command_type, answer.content)
        assert isinstance(answer.parsed, models.Accepted)
        assert answer.parsed.command_id == envelope["payload"]["command_id"]
        assert undocumented(answer.parsed) == []
    flat_body = models.LegacyFlatCommandRequest.from_dict(examples.LEGACY_OPEN_POSITION)
    flat = create.sync_detailed(client=dana, body=flat_body)
    assert flat.status_code == 202, flat.content
    assert sorted(Command.objects.values_list("command_type", flat=True)) == sorted(
        [*CommandType.values, "open_position"]
    )

    # The same snapshot again, through /ingest and with its idempotency key: the stored answer.
    again = generated.api("ingest", "ingest").sync_detailed(
        client=dana, body=models.PolicyEnvelopeDocRequest.from_dict(examples.POLICY_SNAPSHOT)
    )
    assert again.status_code == 200
    assert isinstance(again.parsed, models.PolicyResult)
    assert again.parsed.to_dict() == policy.parsed.to_dict()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_dana_reads_her_command_back_and_makes_the_sync_read_with_the_generated_client(generated, dana):
    models = generated.models
    generated.api("mt5", "policy_apply").sync(
        client=dana, body=models.PolicyEnvelopeDocRequest.from_dict(examples.POLICY_SNAPSHOT)
    )
    envelope = examples.COMMAND_ENVELOPES["open_position"]
    generated.api("mt5", "command_create").sync(client=dana, body=models.CommandEnvelopeDocRequest.from_dict(envelope))
    command = Command.objects.get(command_id=envelope["payload"]["command_id"])
    command_execute(command.pk)  # what the normal lane's worker does

    detail = generated.api("mt5", "command_get").sync(client=dana, command_id=envelope["payload"]["command_id"])
    assert isinstance(detail, models.CommandDetail)
    assert detail.state == State.SUCCEEDED
    assert detail.command_type == models.CommandTypeEnum.OPEN_POSITION
    assert detail.error_code is None
    assert undocumented(detail) == []

    page = generated.api("mt5", "command_list").sync(client=dana, account_login=examples.DEMO_LOGIN)
    assert isinstance(page, models.CommandPage)
    assert [item.command_id for item in page.results] == [envelope["payload"]["command_id"]]
    assert undocumented(page) == []

    account = generated.api("mt5", "account_get").sync(client=dana, account_login=examples.DEMO_LOGIN)
    assert isinstance(account, models.AccountRead)
    assert account.policy_version == 12
    assert account.trading_enabled is True
    assert isinstance(account.risk, models.RiskRead)
    assert [position.symbol for position in account.snapshot.positions] == ["EURUSD"]
    assert undocumented(account) == []

    missing = generated.api("mt5", "command_get").sync(client=dana, command_id="cmd-never-sent")
    assert isinstance(missing, models.Problem)
    assert (missing.status, missing.code) == (404, "command_not_found")
