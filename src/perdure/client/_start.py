"""Starting an instance: new ids, and what to do when the id is taken (``if_exists``)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Literal

from perdure._errors import InstanceAlreadyExistsError
from perdure._state import OrchestrationStatus
from perdure._tracing import Tracer
from perdure.engine.events import StartRequested, TerminateRequested
from perdure.providers._base import InstanceFilter, Message, NewInstance, Provider

__all__ = ["IF_EXISTS", "IfExists", "new_instance_id", "start_instance"]

IfExists = Literal["fail", "return", "restart"]
IF_EXISTS: tuple[IfExists, ...] = ("fail", "return", "restart")
"""What ``Client.start_orchestration`` may do when the instance id is taken."""

_UNFINISHED = [OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING, OrchestrationStatus.SUSPENDED]


def new_instance_id() -> str:
    """A fresh random instance id: 32 hex digits."""
    return uuid.uuid4().hex


async def start_instance(
    provider: Provider,
    tracer: Tracer | None,
    instance_id: str,
    start: StartRequested,
    if_exists: IfExists,
    start_at: datetime | None = None,
) -> str:
    """Create the instance and queue ``start``; an existing one fails, is returned, or is restarted.

    With ``start_at`` the start message stays invisible until then, so the instance stays
    PENDING (a delayed start). With a ``tracer`` the start is traced: its span heads (or joins the
    caller's) trace, and the orchestration's spans become its children.
    """
    if tracer is None:
        return await _start(provider, instance_id, start, if_exists, start_at)
    attributes = {"perdure.type": "create_orchestration", "perdure.name": start.name}
    attributes["perdure.instance_id"] = instance_id
    if start.version is not None:
        attributes["perdure.version"] = start.version
    with tracer.client_span(f"create_orchestration:{start.name}", attributes) as trace_context:
        return await _start(provider, instance_id, replace(start, trace_context=trace_context), if_exists, start_at)


async def _start(
    provider: Provider, instance_id: str, start: StartRequested, if_exists: IfExists, start_at: datetime | None
) -> str:
    message = Message(
        instance_id=instance_id,
        execution_id=None,
        event=start,
        visible_at=start_at,
        new_instance=NewInstance(name=start.name, input=start.input),
    )
    if if_exists == "restart":
        await _terminate_children_of_unfinished(provider, instance_id)
        await provider.restart_instance(message)
        return instance_id
    try:
        await provider.create_instance(message)
    except InstanceAlreadyExistsError:
        if if_exists == "fail":
            raise
    return instance_id


async def _terminate_children_of_unfinished(provider: Provider, instance_id: str) -> None:
    """An unfinished instance about to be restarted is terminated, and terminating it ends its unfinished
    children (recursively); the restart itself discards the instance's own pending work."""
    state = await provider.get_state(instance_id)
    if state is None or state.status.is_terminal:
        return
    reason = f"the parent instance {instance_id!r} was restarted"
    after: str | None = None
    while True:
        where = InstanceFilter(parent_instance_id=instance_id, status=_UNFINISHED, limit=1000, after=after)
        children = await provider.list_instances(where)
        if not children:
            return
        after = children[-1].instance_id
        stop = TerminateRequested(reason=reason, recursive=True)
        await provider.enqueue_messages(
            [Message(instance_id=c.instance_id, execution_id=None, event=stop, control=True) for c in children]
        )
