"""Versions are resolved once, when an execution starts, and pinned in history from then on."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from tests.integration.runtime_support import FAST, history_has, running, wait_until

from perdure import (
    ActivityContext,
    OrchestrationContext,
    OrchestrationDescriptor,
    OrchestrationStatus,
    Provider,
    RegistrationError,
    Registry,
)
from perdure.engine.events import OrchestrationStarted

FEW_ATTEMPTS = dataclasses.replace(FAST, max_dispatch_attempts=3)


def tagged(version: str) -> Any:
    """An orchestration that reports which version's code ran it, after waiting for an event."""

    async def orchestration(ctx: OrchestrationContext, _: Any) -> str:
        await ctx.wait_for_event("go")
        return f"ran {version}"

    return orchestration


def registry_with(*versions: str, policy: str | None = None) -> Registry:
    registry = Registry()
    for version in versions:
        registry.orchestrations.add("Work", tagged(version), version)
    if policy:
        registry.set_version_policy("Work", policy)
    return registry


async def started_version(provider: Provider, instance_id: str) -> str:
    history = await provider.get_history(instance_id)
    assert isinstance(history[0], OrchestrationStarted)
    return history[0].version


async def test_changing_which_version_is_latest_never_changes_a_running_instance(provider: Provider) -> None:
    async with running(provider, registry_with("1.0.0")) as client:
        await client.start_orchestration("pinned", "Work")
        await wait_until(lambda: history_has(client, "pinned", OrchestrationStarted))
    assert await started_version(provider, "pinned") == "1.0.0"

    # Redeploy: 2.0.0 is now the latest, 1.0.0 still registered.
    async with running(provider, registry_with("1.0.0", "2.0.0")) as client:
        await client.start_orchestration("fresh", "Work")
        for instance_id in ("pinned", "fresh"):
            await client.raise_event(instance_id, "go")
        assert (await client.wait_for_orchestration("pinned")).output == "ran 1.0.0"
        fresh = await client.wait_for_orchestration("fresh")
        assert (fresh.output, fresh.version) == ("ran 2.0.0", "2.0.0")


async def test_explicit_version_start_and_the_exact_policy(provider: Provider) -> None:
    async with running(provider, registry_with("1.0.0", "1.5.0", "2.0.0", policy="1.5.0")) as client:
        await client.start_orchestration("explicit", "Work", version="2.0.0")
        await client.start_orchestration("by-policy", "Work")
        for instance_id in ("explicit", "by-policy"):
            await client.raise_event(instance_id, "go")
        assert (await client.wait_for_orchestration("explicit")).output == "ran 2.0.0"
        assert (await client.wait_for_orchestration("by-policy")).output == "ran 1.5.0"


async def test_a_bad_version_is_refused_at_the_call(provider: Provider) -> None:
    async with running(provider, registry_with("1.0.0")) as client:
        with pytest.raises(RegistrationError, match="semantic version"):
            await client.start_orchestration("bad", "Work", version="latest-and-greatest")
        assert await client.get_status("bad") is None
    with pytest.raises(RegistrationError, match="already registered"):
        registry_with("1.0.0", "1.0.0")


async def test_continue_as_new_keeps_its_version_unless_told_and_upgrades_when_told(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Eternal", version="1.0.0")
    async def eternal_v1(ctx: OrchestrationContext, rounds: int) -> str:
        if rounds == 0:
            ctx.continue_as_new(1, version="2.0.0")  # the upgrade point
        ctx.continue_as_new(rounds - 1)  # keeps 1.0.0 even though 2.0.0 is the latest

    @registry.orchestration("Eternal", version="2.0.0")
    async def eternal_v2(ctx: OrchestrationContext, rounds: int) -> str:
        return f"v2 after {ctx.execution_id - 1} executions of v1"

    async with running(provider, registry) as client:
        await client.start_orchestration("eternal", "Eternal", 2, version="1.0.0")
        state = await client.wait_for_orchestration("eternal")
        assert state.output == "v2 after 3 executions of v1"
        assert state.version == "2.0.0"
        for execution in (1, 2, 3):
            first = (await client.get_history("eternal", execution))[0]
            assert isinstance(first, OrchestrationStarted) and first.version == "1.0.0", execution


async def test_descriptor_of_a_root_and_a_child_comes_from_history(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Child", version="3.1.4")
    async def child(ctx: OrchestrationContext, _: Any) -> str:
        return "child done"

    @registry.orchestration("Parent", version="1.2.0")
    async def parent(ctx: OrchestrationContext, _: Any) -> str:
        return str(await ctx.call_sub_orchestration("Child", instance_id="the-child"))

    async with running(provider, registry) as client:
        assert await client.get_orchestration_descriptor("nobody") is None
        await client.start_orchestration("the-parent", "Parent")
        assert (await client.wait_for_orchestration("the-parent")).output == "child done"
        assert await client.get_orchestration_descriptor("the-parent") == OrchestrationDescriptor(
            name="Parent", version="1.2.0", parent_instance=None, parent_id=None
        )
        child_descriptor = await client.get_orchestration_descriptor("the-child")
        assert child_descriptor is not None
        assert (child_descriptor.name, child_descriptor.version) == ("Child", "3.1.4")
        assert child_descriptor.parent_instance == "the-parent"
        scheduled = (await client.get_history("the-parent"))[child_descriptor.parent_id - 1]  # type: ignore[operator]
        assert type(scheduled).__name__ == "SubOrchestrationScheduled"


async def test_the_descriptor_is_readable_between_a_continue_as_new_and_the_next_first_turn(
    provider: Provider,
) -> None:
    def registry_for(*versions: str) -> Registry:
        registry = Registry()

        async def upgrade(ctx: OrchestrationContext, _: Any) -> str:
            ctx.continue_as_new("again", version="2.0.0")

        async def upgraded(ctx: OrchestrationContext, _: Any) -> str:
            return "upgraded"

        functions = {"1.0.0": upgrade, "2.0.0": upgraded}
        for version in versions:
            registry.orchestrations.add("Upgrade", functions[version], version)
        return registry

    patient = dataclasses.replace(FAST, max_dispatch_attempts=1000)
    async with running(provider, registry_for("1.0.0"), patient) as client:
        await client.start_orchestration("upgrading", "Upgrade", version="1.0.0")

        async def continued() -> bool:
            state = await client.get_status("upgrading")
            return state is not None and state.execution_id == 2

        await wait_until(continued, what="the continue-as-new")
    # No worker here has 2.0.0: execution 2 has not started, and the state still shows 1.0.0.
    state = await client.get_status("upgrading")
    assert state is not None and (state.status, state.version) == (OrchestrationStatus.RUNNING, "1.0.0")
    assert await provider.get_history("upgrading", 2) == []
    v1 = OrchestrationDescriptor(name="Upgrade", version="1.0.0", parent_instance=None, parent_id=None)
    assert await client.get_orchestration_descriptor("upgrading") == v1

    async with running(provider, registry_for("1.0.0", "2.0.0")) as client:
        assert (await client.wait_for_orchestration("upgrading")).output == "upgraded"
        assert await client.get_orchestration_descriptor("upgrading") == dataclasses.replace(v1, version="2.0.0")


async def test_a_child_pinned_to_a_version_no_worker_has_fails_and_its_parent_sees_it(provider: Provider) -> None:
    ran_v2 = []

    def registry_for(child_version: str) -> Registry:
        registry = Registry()

        @registry.orchestration("Parent", version="1.0.0")
        async def parent(ctx: OrchestrationContext, _: Any) -> str:
            return str(await ctx.call_sub_orchestration("Child", instance_id="child"))

        @registry.orchestration("Child", version=child_version)
        async def child(ctx: OrchestrationContext, _: Any) -> str:
            if child_version == "2.0.0":
                ran_v2.append(ctx.instance_id)
            await ctx.wait_for_event("go")
            return child_version

        return registry

    async with running(provider, registry_for("1.0.0"), FEW_ATTEMPTS) as client:
        await client.start_orchestration("parent", "Parent")
        await wait_until(lambda: history_has(client, "child", OrchestrationStarted), what="the child started")
    # The runtime stopped with the child in flight; it comes back with the child only as v2.
    async with running(provider, registry_for("2.0.0"), FEW_ATTEMPTS) as client:
        await client.raise_event("child", "go")
        child = await client.wait_for_orchestration("child")
        parent = await client.wait_for_orchestration("parent")
    assert child.status is OrchestrationStatus.FAILED
    assert child.error is not None
    assert child.error.is_type("UnregisteredOrchestrationError")
    assert "Child@1.0.0" in child.error.message
    assert ran_v2 == []
    assert parent.status is OrchestrationStatus.FAILED
    assert parent.error is not None
    assert parent.error.is_type("SubOrchestrationFailedError")
    assert "UnregisteredOrchestrationError" in parent.error.message
    assert "Child@1.0.0" in parent.error.message


async def test_an_activity_no_worker_registers_fails_the_orchestration(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("CallsGhost")
    async def calls_ghost(ctx: OrchestrationContext, _: Any) -> str:
        try:
            await ctx.call_activity("Ghost")
        except Exception as exc:
            return f"caught {type(exc).__name__}: {exc}"
        return "the ghost answered"

    async with running(provider, registry, FEW_ATTEMPTS) as client:
        await client.start_orchestration("ghost", "CallsGhost")
        state = await client.wait_for_orchestration("ghost")
    assert state.output.startswith("caught ActivityFailedError")
    assert "UnregisteredActivityError" in state.output
    assert "'Ghost'" in state.output


async def test_rolling_deploy_the_worker_that_has_the_version_runs_it(provider: Provider) -> None:
    old = Registry()
    old.orchestrations.add("Work", tagged("1.0.0"), "1.0.0")
    new = registry_with("1.0.0", "2.0.0")

    @new.activity("Where")
    async def where(ctx: ActivityContext, _: Any) -> str:
        return "new"

    patient = dataclasses.replace(FAST, max_dispatch_attempts=1000)
    async with running(provider, old, patient) as client:
        await client.start_orchestration("v2-instance", "Work", version="2.0.0")
        await client.raise_event("v2-instance", "go")
        async with running(provider, new, patient):
            state = await client.wait_for_orchestration("v2-instance")
    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "ran 2.0.0")
