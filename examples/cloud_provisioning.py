"""Cloud provisioning as a saga: create a VM with its network and storage, undo it all on failure.

The orchestration creates, one step after the other, a storage account, a virtual network, a
subnet, a public IP address, a network interface and finally the virtual machine. Each step that
succeeds pushes its *compensation* (the activity that deletes what the step created) on a stack.
When a step fails for good (after its retries), the orchestration runs the compensations of the
completed steps in reverse order, so nothing is left half-built, and then fails with the error.

Both outcomes are shown: ``env-ok`` is fully provisioned; ``env-broken`` asks for a VM size the
(simulated) cloud has no quota for, so the VM step fails and the five earlier steps are undone.

The steps are durable: a crash at any point resumes the saga where it was, and the stack of
compensations is rebuilt by replay rather than kept anywhere in memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from perdure import (
    ActivityContext,
    ActivityFailedError,
    Client,
    OrchestrationContext,
    Registry,
    RetryPolicy,
    Runtime,
    SqliteProvider,
)

registry = Registry()

# The simulated cloud: resource id -> kind. Activities are where I/O belongs; here they edit this dict.
CLOUD: dict[str, str] = {}


class QuotaExceededError(Exception):
    """The cloud refuses the request; retrying does not help."""


def _create(kind: str, resource_id: str) -> str:
    CLOUD[resource_id] = kind
    print(f"  created {kind} {resource_id}")
    return resource_id


def _delete(kind: str, resource_id: str) -> None:
    CLOUD.pop(resource_id, None)  # idempotent: activities run at least once
    print(f"  deleted {kind} {resource_id}")


@registry.activity("CreateStorageAccount")
async def create_storage_account(ctx: ActivityContext, env: str) -> str:
    return _create("storage account", f"{env}/storage")


@registry.activity("CreateVirtualNetwork")
async def create_virtual_network(ctx: ActivityContext, env: str) -> str:
    return _create("virtual network", f"{env}/vnet")


@registry.activity("CreateSubnet")
async def create_subnet(ctx: ActivityContext, vnet: str) -> str:
    return _create("subnet", f"{vnet}/subnet-default")


@registry.activity("CreatePublicIp")
async def create_public_ip(ctx: ActivityContext, env: str) -> str:
    return _create("public IP", f"{env}/ip")


@registry.activity("CreateNetworkInterface")
async def create_network_interface(ctx: ActivityContext, spec: dict[str, str]) -> str:
    return _create("network interface", f"{spec['env']}/nic")


@registry.activity("CreateVirtualMachine")
async def create_virtual_machine(ctx: ActivityContext, spec: dict[str, str]) -> str:
    if spec["size"] == "XXL":
        raise QuotaExceededError(f"no quota left for VM size {spec['size']} (attempt {ctx.attempt})")
    return _create("virtual machine", f"{spec['env']}/vm")


@registry.activity("DeleteResource")
async def delete_resource(ctx: ActivityContext, resource: dict[str, str]) -> None:
    _delete(resource["kind"], resource["id"])


@registry.orchestration("ProvisionEnvironment")
async def provision_environment(ctx: OrchestrationContext, spec: dict[str, str]) -> dict[str, str]:
    env = spec["env"]
    # Transient cloud errors get a second chance; a quota error would fail again, so it fails at once.
    retry = RetryPolicy(max_attempts=3, initial_interval=0.1, non_retryable_errors=[QuotaExceededError])
    compensations: list[dict[str, str]] = []  # rebuilt by replay on every turn, never stored by hand

    async def step(activity: str, kind: str, input: Any) -> str:
        ctx.set_custom_status(f"creating {kind}")
        resource_id: str = await ctx.call_activity(activity, input, retry=retry)
        compensations.append({"kind": kind, "id": resource_id})
        return resource_id

    try:
        storage = await step("CreateStorageAccount", "storage account", env)
        vnet = await step("CreateVirtualNetwork", "virtual network", env)
        subnet = await step("CreateSubnet", "subnet", vnet)
        ip = await step("CreatePublicIp", "public IP", env)
        nic = await step("CreateNetworkInterface", "network interface", {"env": env, "subnet": subnet, "ip": ip})
        vm = await step("CreateVirtualMachine", "virtual machine", {"env": env, "nic": nic, "size": spec["size"]})
    except ActivityFailedError:
        ctx.set_custom_status("rolling back")
        for resource in reversed(compensations):
            await ctx.call_activity("DeleteResource", resource, retry=RetryPolicy(max_attempts=5))
        ctx.set_custom_status("rolled back")
        raise  # the instance fails with the original error, and nothing is left behind
    ctx.set_custom_status("ready")
    return {"vm": vm, "nic": nic, "ip": ip, "subnet": subnet, "vnet": vnet, "storage": storage}


async def main() -> None:
    provider = await SqliteProvider.open(":memory:")
    async with Runtime(provider, registry):
        client = Client(provider)
        for env, size in (("env-ok", "M"), ("env-broken", "XXL")):
            print(f"{env}: provisioning a VM of size {size}")
            await client.start_orchestration(env, "ProvisionEnvironment", {"env": env, "size": size})
            state = await client.wait_for_orchestration(env, timeout=30)
            print(f"{env}: {state.status.value} ({state.custom_status})")
            if state.error is not None:
                print(f"{env}: error: {state.error.message}")
            else:
                print(f"{env}: vm {state.output['vm']}")
            left = sorted(r for r in CLOUD if r.startswith(f"{env}/"))
            print(f"{env}: resources left: {len(left)}")
    await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
