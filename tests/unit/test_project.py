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
            "AwaitedEvent",
            "Client",
            "DataConverter",
            "DurableTask",
            "ErrorDetails",
            "HistoryFormatError",
            "InstanceAlreadyExistsError",
            "InstanceNotFoundError",
            "InvalidInstanceStateError",
            "NonDeterminismError",
            "NonDeterministicCallError",
            "NonDurableAwaitError",
            "OrchestrationContext",
            "OrchestrationDescriptor",
            "OrchestrationRegistry",
            "OrchestrationState",
            "OrchestrationStatus",
            "PayloadCodec",
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
            "ScheduleAlreadyExistsError",
            "ScheduleInfo",
            "ScheduleNotFoundError",
            "SerializationError",
            "SqliteProvider",
            "SubOrchestrationFailedError",
            "SyncClient",
            "TaskCancelledError",
            "TaskFailedError",
            "UnregisteredActivityError",
            "UnregisteredOrchestrationError",
            "WorkerInfo",
            "__version__",
            "open_provider",
        ]
    )
    for name in perdure.__all__:
        assert hasattr(perdure, name), name


def test_the_shipped_codecs_are_public() -> None:
    import perdure.codecs

    assert sorted(perdure.codecs.__all__) == ["FernetCodec", "PayloadCodec", "ZlibCodec"]
    assert perdure.codecs.PayloadCodec is perdure.PayloadCodec


def test_the_testing_tools_are_exactly_these() -> None:
    import perdure.testing

    assert sorted(perdure.testing.__all__) == ["ReplayResult", "Replayer", "TestEnvironment"]
    for name in perdure.testing.__all__:
        assert hasattr(perdure.testing, name), name


def test_the_provider_contract_is_public() -> None:
    # A provider is written from these names alone: the contract and every record it takes or returns.
    import perdure.providers

    assert sorted(perdure.providers.__all__) == sorted(
        [
            "ActivityRequest",
            "DataRefusedError",
            "Heartbeat",
            "HistoryMark",
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
            "StoreNotFoundError",
            "TurnCommit",
            "WorkItem",
            "WorkerInfo",
            "WorkerLiveness",
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


# --- the shape of the package (docs/architecture.md, "Rooms") ------------------------------------

SRC = ROOT / "src" / "perdure"
_LEAVES = {"_errors", "_json", "_payloads", "_state", "_validate"}
# What each room may import from perdure, besides itself. Rooms not listed (tools, testing, the
# package's own __init__) sit on top and may import anything.
_MAY_IMPORT = {
    "leaf": set(),
    "engine": {"leaf"},
    "providers": {"leaf", "engine"},
    "_tracing": {"leaf", "engine"},
    "schedules": {"leaf", "engine"},
    "client": {"leaf", "engine", "providers", "_tracing", "schedules"},
    "runtime": {"leaf", "engine", "providers", "_tracing", "schedules"},
}


def _room(module: str) -> str:
    """The room of a dotted module name below ``perdure``: its first component (leaf modules share one)."""
    first = module.split(".")[1] if "." in module else ""
    return "leaf" if first in _LEAVES else first


def _imports(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "perdure":
            found.update(f"perdure.{alias.name}" for alias in node.names)  # from perdure import _json
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "perdure" or name.startswith("perdure.")}


def test_rooms_import_only_what_sits_below_them() -> None:
    climbing = []
    for path in SRC.rglob("*.py"):
        module = "perdure." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        room = _room(module)
        if room not in _MAY_IMPORT:
            continue
        for imported in _imports(path):
            target = _room(imported)
            if target != room and target not in _MAY_IMPORT[room]:
                climbing.append(f"{module} imports {imported}")
    assert not climbing, "\n".join(sorted(climbing))


def _too_long(path: Path) -> list[str]:
    """Functions over 60 lines, classes over 300 and modules over 500, unless their docstring says why."""
    import ast

    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    found = []

    def excused(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        return "long because" in (ast.get_docstring(node) or "")

    if len(text.splitlines()) > 500 and not excused(tree):
        found.append(f"{path.name}: {len(text.splitlines())} lines")
    for node in ast.walk(tree):
        limit = 60 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else 300
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit and not excused(node):
                found.append(f"{path.name}: {node.name} is {length} lines")
    return found


def test_functions_classes_and_modules_stay_small() -> None:
    # A docstring that says why ("… long because …") excuses one; everything else stays readable in one screen or two.
    found = [problem for path in SRC.rglob("*.py") for problem in _too_long(path)]
    assert not found, "\n".join(found)
