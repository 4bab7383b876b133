"""The project's promises about itself: the public API and the README's set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import perdure

ROOT = Path(__file__).resolve().parents[2]


def test_public_api_is_exactly_this() -> None:
    # Changing this list is changing the public API: do it on purpose.
    assert sorted(perdure.__all__) == sorted(
        [
            "ActivityContext",
            "ActivityFailedError",
            "ActivityRegistry",
            "Client",
            "DurableTask",
            "ErrorDetails",
            "HistoryFormatError",
            "InstanceAlreadyExistsError",
            "InstanceNotFoundError",
            "InvalidInstanceStateError",
            "NonDeterminismError",
            "NonDurableAwaitError",
            "OrchestrationContext",
            "OrchestrationDescriptor",
            "OrchestrationRegistry",
            "OrchestrationState",
            "OrchestrationStatus",
            "PerdureError",
            "PoisonMessageError",
            "PostgresProvider",
            "Provider",
            "ProviderError",
            "Registry",
            "RegistrationError",
            "RetryPolicy",
            "Runtime",
            "RuntimeOptions",
            "SerializationError",
            "SqliteProvider",
            "SubOrchestrationFailedError",
            "TaskFailedError",
            "UnregisteredActivityError",
            "UnregisteredOrchestrationError",
            "__version__",
            "open_provider",
        ]
    )
    for name in perdure.__all__:
        assert hasattr(perdure, name), name


def test_the_provider_contract_is_public() -> None:
    # A provider is written from these names alone: the contract and every record it takes or returns.
    import perdure.providers

    assert sorted(perdure.providers.__all__) == sorted(
        [
            "ActivityRequest",
            "InstanceFilter",
            "InstanceUpdate",
            "LockLostError",
            "Message",
            "NewInstance",
            "OrchestrationItem",
            "Provider",
            "QueueKind",
            "QueuedMessage",
            "SqliteProvider",
            "TurnCommit",
            "WorkItem",
            "open_provider",
        ]
    )
    for name in perdure.providers.__all__:
        assert hasattr(perdure.providers, name), name


def test_the_provider_conformance_suite_imports_only_public_names() -> None:
    suite = (ROOT / "tests" / "integration" / "test_provider_contract.py").read_text(encoding="utf-8")
    imported = re.findall(r"^\s*(?:from|import) (perdure\S*)", suite, re.MULTILINE)
    assert imported, "the suite imports perdure"
    assert [module for module in imported if "._" in module] == []


def test_errors_share_one_root_and_read_as_public_names() -> None:
    for name in perdure.__all__:
        value = getattr(perdure, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, perdure.PerdureError), name
            assert value.__module__ == "perdure", name


def test_readme_starts_with_the_two_set_up_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    title, rest = readme.split("\n", 1)
    assert title == "# perdure"
    assert rest.lstrip().startswith("```bash\n"), "the set-up commands come first"
    block = re.search(r"```bash\n(.*?)```", rest, re.DOTALL)
    assert block is not None
    commands = block.group(1).strip().splitlines()
    assert len(commands) == 2
    assert "perdure demo" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
