"""Human approval with a timeout: an external event raced against a durable timer.

The orchestration asks for an approval (an activity that would send an e-mail), then waits for
whichever comes first: the ``Approval`` event or a timer. Two instances show both outcomes: the
first is approved by a client call while it waits; nobody answers the second, so its timer fires.

The timer is durable: if every worker stopped during the wait, the instance would still time
out, at the right moment, as soon as a worker runs again. While it waits it is only rows in the
store.

The request and the approval are dataclasses: perdure stores them as JSON and hands them back as
the types the annotations (and ``result_type``) name (docs/payloads.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, SqliteProvider

registry = Registry()

APPROVAL_TIMEOUT_SECONDS = 1.0  # hours or days in real life; short so the example ends quickly


@dataclass
class DeploymentRequest:
    what: str
    approver: str


@dataclass
class Approval:
    approved: bool
    by: str


@registry.activity("RequestApproval")
async def request_approval(ctx: ActivityContext, request: DeploymentRequest) -> None:
    print(f"[{ctx.instance_id}] approval requested from {request.approver} for {request.what}")


@registry.activity("Deploy")
async def deploy(ctx: ActivityContext, what: str) -> str:
    return f"{what} deployed"


@registry.orchestration("ApproveDeployment")
async def approve_deployment(ctx: OrchestrationContext, request: DeploymentRequest) -> str:
    await ctx.call_activity("RequestApproval", request)
    ctx.set_custom_status("waiting for approval")
    approval = ctx.wait_for_event("Approval", result_type=Approval)
    timeout = ctx.create_timer(APPROVAL_TIMEOUT_SECONDS)
    winner = await ctx.when_any([approval, timeout])
    if winner is timeout:
        ctx.set_custom_status("timed out")
        return f"{request.what}: not approved within {APPROVAL_TIMEOUT_SECONDS:g} s, nothing deployed"
    decision: Approval = approval.result()
    if not decision.approved:
        return f"{request.what}: rejected by {decision.by}"
    result = await ctx.call_activity("Deploy", request.what)
    return f"{result}, approved by {decision.by}"


async def wait_until_waiting(client: Client, instance_id: str) -> None:
    """Poll until the orchestration says it waits (a person would look at a dashboard)."""
    for _ in range(1500):
        state = await client.get_status(instance_id)
        if state is not None and state.custom_status == "waiting for approval":
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{instance_id} never started waiting for its approval")


async def main() -> None:
    provider = await SqliteProvider.open(":memory:")
    async with Runtime(provider, registry):
        client = Client(provider)
        await client.start_orchestration("deploy-1", "ApproveDeployment", DeploymentRequest("release 1.4", "ana"))
        await client.start_orchestration("deploy-2", "ApproveDeployment", DeploymentRequest("release 1.5", "bo"))

        await wait_until_waiting(client, "deploy-1")
        await client.raise_event("deploy-1", "Approval", Approval(approved=True, by="ana"))

        for instance_id in ("deploy-1", "deploy-2"):
            state = await client.wait_for_orchestration(instance_id, timeout=30)
            print(f"{instance_id}: {state.status.value}: {state.output}")
    await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
