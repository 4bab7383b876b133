"""Registry: names, semantic versions, version policies and what may be registered."""

from __future__ import annotations

from typing import Any

import pytest

from perdure import RegistrationError, Registry, UnregisteredActivityError, UnregisteredOrchestrationError
from perdure._validate import parse_version


async def orch(ctx: Any, value: Any) -> Any:
    return value


async def orch_without_input(ctx: Any) -> Any:
    return "no input"


@pytest.mark.parametrize("version", ["1.0.0", "0.0.1", "10.20.30", "1.0.0-alpha", "1.0.0-rc.1+build.5", "2.0.0+meta"])
def test_valid_versions(version: str) -> None:
    parse_version(version)
    Registry().orchestration("o", version=version)(orch)


@pytest.mark.parametrize("version", ["1", "1.0", "v1.0.0", "01.0.0", "1.0.0.0", "1.0.0-", "", " 1.0.0", "latest", 1])
def test_invalid_versions_are_refused(version: Any) -> None:
    with pytest.raises(RegistrationError, match="is not a semantic version"):
        parse_version(version)
    with pytest.raises(RegistrationError):
        Registry().orchestration("o", version=version)(orch)


def test_versions_sort_semantically() -> None:
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9", "2.0.0-alpha", "1.2.1"]
    assert sorted(versions, key=parse_version) == ["0.9.9", "1.2.0-rc.1", "1.2.0", "1.2.1", "1.10.0", "2.0.0-alpha"]


def test_registration_by_decorator_with_default_name_and_version() -> None:
    registry = Registry()
    assert registry.orchestration()(orch) is orch

    @registry.activity()
    def greet(ctx: Any, name: str) -> str:
        return f"hi {name}"

    assert registry.orchestrations.names() == ["orch"]
    assert registry.orchestrations.versions("orch") == ["1.0.0"]
    assert registry.orchestrations.get("orch", "1.0.0") is orch
    activity = registry.activities.get("greet")
    assert (activity.name, activity.is_async, activity.takes_input) == ("greet", False, True)


def test_duplicates_are_refused() -> None:
    registry = Registry()
    registry.orchestration("o", version="1.0.0")(orch)
    registry.orchestration("o", version="1.1.0")(orch)
    with pytest.raises(RegistrationError, match=r"orchestration o@1.0.0 is already registered"):
        registry.orchestration("o", version="1.0.0")(orch)
    registry.activity("a")(orch)
    with pytest.raises(RegistrationError, match="activity 'a' is already registered"):
        registry.activity("a")(orch)


def test_sync_orchestration_is_refused() -> None:
    def sync(ctx: Any, value: Any) -> Any:
        return value

    with pytest.raises(RegistrationError, match="must be an async function"):
        Registry().orchestration("s")(sync)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty or only whitespace"),
        ("   ", "must not be empty or only whitespace"),
        ("a\x00b", "must not contain control characters"),
        ("x" * 257, "must be at most 256 characters"),
        (None, "must be a string"),
        (3, "must be a string"),
    ],
)
def test_bad_names_are_refused_with_the_rule_every_entry_applies(name: Any, message: str) -> None:
    registry = Registry()
    with pytest.raises(RegistrationError, match=f"the orchestration name {message}") as refused:
        registry.orchestrations.add(name, orch)
    assert isinstance(refused.value.__cause__, TypeError | ValueError)  # the shared check's error, kept as the cause
    with pytest.raises(RegistrationError, match=f"the activity name {message}"):
        registry.activities.add(name, orch)
    with pytest.raises(RegistrationError, match=f"the orchestration name {message}"):
        registry.set_version_policy(name, "latest")
    assert registry.orchestrations.names() == registry.activities.names() == []


def test_the_longest_name_and_version_are_accepted() -> None:
    registry = Registry()
    longest_version = "1.0.0-" + "a" * 250
    registry.orchestrations.add("o" * 256, orch, longest_version)
    registry.activities.add("a" * 256, orch)
    assert registry.orchestrations.versions("o" * 256) == [longest_version]
    with pytest.raises(RegistrationError, match="a version is at most 256 characters, got 257"):
        registry.orchestrations.add("o", orch, longest_version + "a")


def test_functions_must_take_the_context() -> None:
    async def nothing() -> None:
        pass

    with pytest.raises(RegistrationError, match="must take the context"):
        Registry().orchestration("o")(nothing)
    with pytest.raises(RegistrationError, match="must take the context"):
        Registry().activity("a")(nothing)


def test_orchestration_without_input_parameter_is_adapted() -> None:
    registry = Registry()
    registry.orchestration("o")(orch_without_input)
    function = registry.orchestrations.get("o", "1.0.0")
    assert function is not None
    coro = function(None, "ignored")  # type: ignore[arg-type]
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    assert stop.value.value == "no input"


def test_latest_policy_picks_the_highest_version() -> None:
    registry = Registry()
    for version in ["1.2.0", "1.10.0", "2.0.0-beta", "1.9.9"]:
        registry.orchestration("o", version=version)(orch)
    assert registry.orchestrations.resolve("o") == "2.0.0-beta"
    registry.orchestration("o", version="2.0.0")(orch)
    assert registry.orchestrations.resolve("o") == "2.0.0"
    assert registry.orchestrations.versions("o") == ["1.2.0", "1.9.9", "1.10.0", "2.0.0-beta", "2.0.0"]


def test_exact_policy_and_explicit_version() -> None:
    registry = Registry()
    registry.orchestration("o", version="1.0.0")(orch)
    registry.orchestration("o", version="2.0.0")(orch)
    registry.set_version_policy("o", "1.0.0")
    assert registry.orchestrations.resolve("o") == "1.0.0"
    assert registry.orchestrations.resolve("o", "2.0.0") == "2.0.0"  # an explicit version wins
    registry.set_version_policy("o", "latest")
    assert registry.orchestrations.resolve("o") == "2.0.0"
    with pytest.raises(RegistrationError, match="is not a semantic version"):
        registry.set_version_policy("o", "newest")


def test_unregistered_names() -> None:
    registry = Registry()
    with pytest.raises(UnregisteredOrchestrationError, match="'missing'"):
        registry.orchestrations.resolve("missing")
    assert registry.orchestrations.get("missing", "1.0.0") is None
    assert registry.orchestrations.versions("missing") == []
    with pytest.raises(UnregisteredActivityError, match="'missing'"):
        registry.activities.get("missing")


def test_registries_are_separate() -> None:
    registry = Registry()
    registry.orchestration("same")(orch)
    registry.activity("same")(orch)
    assert registry.orchestrations.names() == ["same"]
    assert registry.activities.names() == ["same"]
    assert registry.activities.get("same").is_async
