"""``Client``: start, signal, inspect and manage orchestration instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Unpack

from perdure._errors import InstanceNotFoundError, InvalidInstanceStateError
from perdure._state import OrchestrationDescriptor, OrchestrationState, OrchestrationStatus
from perdure._tracing import Tracer
from perdure._validate import (
    check_aware,
    check_choice,
    check_execution_id,
    check_flag,
    check_instance_id,
    check_limit,
    check_name,
    check_purge_statuses,
    check_reason,
    check_statuses,
    check_text,
    check_timeout,
    check_version,
)
from perdure.client._payloads import ClientPayloads, PayloadSettings
from perdure.client._schedules import ScheduleCalls
from perdure.client._start import IF_EXISTS, IfExists, new_instance_id, start_instance
from perdure.engine.events import (
    EventRaised,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationResumed,
    OrchestrationStarted,
    OrchestrationSuspended,
    StartRequested,
    TerminateRequested,
)
from perdure.providers._base import InstanceFilter, Message, Provider, WorkerInfo

__all__ = ["Client"]

_OPERATOR_REQUESTS = (OrchestrationSuspended, OrchestrationResumed, TerminateRequested)


class Client(ScheduleCalls):
    """Talks to the store through a provider; needs no running runtime in this process.

    Every operation that changes an instance travels as a message through the orchestrator
    queue, so it is durable and ordered with everything else the instance receives.

    With OpenTelemetry configured (``tracer_provider``, or a global tracer provider), starting an
    orchestration is traced: its span heads (or joins the caller's) trace, and the orchestration's
    spans become its children, whichever process runs them.
    """

    def __init__(self, provider: Provider, *, tracer_provider: Any = None, **payloads: Unpack[PayloadSettings]) -> None:
        self.provider = provider
        self._payloads = ClientPayloads(**payloads)
        self._tracer_provider = tracer_provider
        self._tracer: Tracer | None = None

    def _tracing(self) -> Tracer | None:
        # Looked up until found, so a global tracer provider set after the client was made still counts.
        if self._tracer is None:
            self._tracer = Tracer.create(self._tracer_provider)
        return self._tracer

    async def start_orchestration(
        self,
        instance_id: str | None,
        name: str,
        input: Any = None,
        *,
        version: str | None = None,
        if_exists: IfExists = "fail",
        start_at: datetime | None = None,
    ) -> str:
        """Create an instance and schedule its first turn.

        Args:
            instance_id: A unique id of your choice, or ``None`` for a new random one.
            name: The registered orchestration name.
            input: The orchestration's input: a JSON value, dataclass, pydantic model… (docs/payloads.md).
            version: Pin this version; by default the name's version policy chooses when the
                instance starts.
            if_exists: When an instance with this id exists: ``"fail"`` (the default) raises
                :class:`~perdure.InstanceAlreadyExistsError`; ``"return"`` starts nothing and
                returns the id (a start that is safe to repeat); ``"restart"`` replaces it, in one
                transaction, with a fresh run in its next execution: a finished instance's history
                is purged, an unfinished one is terminated (its pending work is discarded, its
                unfinished children are terminated) — see ``docs/management.md``.
            start_at: Start at this aware datetime, not now: the instance stays PENDING until then.

        Returns:
            The instance id (the generated one if ``instance_id`` is ``None``).

        Raises:
            InstanceAlreadyExistsError: if an instance with this id exists and ``if_exists`` is ``"fail"``.
            SerializationError: if ``input`` cannot be stored, or is larger than ``max_payload_bytes``.
        """
        instance_id = new_instance_id() if instance_id is None else check_instance_id(instance_id)
        check_name(name, "orchestration name")
        check_version(version)
        check_choice(if_exists, IF_EXISTS, "if_exists")
        input = self._payloads.send(input, f"input of orchestration {name!r}")
        start = StartRequested(name=name, version=version, input=input)
        at = check_aware(start_at, "start_at")
        return await start_instance(self.provider, self._tracing(), instance_id, start, if_exists, at)

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Deliver the external event ``name`` to an instance (kept until the instance waits for it).

        Raises:
            InstanceNotFoundError: if the instance does not exist.
            InvalidInstanceStateError: if it has finished (completed, failed or terminated): the
                event would never be read. (One that finishes after this check drops the event.)
            SerializationError: if ``data`` cannot be stored, or is larger than ``max_payload_bytes``.
        """
        check_name(name, "event name")
        data = self._payloads.send(data, f"data of event {name!r}")
        state = await _require(self.provider, instance_id)
        if "raise_event" not in state.status.allowed_actions:
            raise InvalidInstanceStateError(f"instance {instance_id!r} is {state.status.value}; it takes no events")
        await _send(self.provider, instance_id, EventRaised(name=name, data=data))

    async def get_status(self, instance_id: str) -> OrchestrationState | None:
        """The instance's current state, or ``None`` if it does not exist."""
        check_instance_id(instance_id)
        return self._payloads.state(await self.provider.get_state(instance_id))

    async def wait_for_orchestration(
        self, instance_id: str, timeout: float = 60.0, *, execution_id: int | None = None, result_type: Any = None
    ) -> OrchestrationState:
        """Wait until the instance completes, fails or is terminated, and return its state.

        Args:
            instance_id: The instance.
            timeout: Seconds to wait at most.
            execution_id: Wait for this execution (or a later one) to end, e.g. the one
                :meth:`rewind` returned; an earlier execution that ended does not count.
            result_type: Decode the output to this type (a dataclass…); by default it is the stored JSON.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
            TimeoutError: if it has not finished after ``timeout`` seconds.
        """
        check_timeout(timeout)
        check_execution_id(execution_id)
        check_instance_id(instance_id)
        ended = await _wait_until_ended(self.provider, instance_id, timeout, execution_id or 0)
        return self._payloads.state(ended, result_type)

    async def terminate(self, instance_id: str, reason: str | None = None, *, recursive: bool = True) -> bool:
        """Terminate a pending, running or suspended instance (and its unfinished children).

        Returns:
            ``True`` if a termination was requested; ``False`` if the instance had already
            finished, in which case nothing changes.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
        """
        check_reason(reason)
        check_flag(recursive, "recursive")
        state = await _require(self.provider, instance_id)
        if "terminate" not in state.status.allowed_actions:
            return False
        await _send(self.provider, instance_id, TerminateRequested(reason=reason, recursive=recursive))
        return True

    async def suspend(self, instance_id: str, reason: str | None = None) -> None:
        """Pause a running instance: it runs no turns and its incoming messages wait until resumed.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
            InvalidInstanceStateError: if it is not PENDING or RUNNING.
        """
        check_reason(reason)
        state = await _require(self.provider, instance_id)
        if "suspend" not in state.status.allowed_actions:
            raise InvalidInstanceStateError(f"instance {instance_id!r} is {state.status.value}; it cannot be suspended")
        await _send(self.provider, instance_id, OrchestrationSuspended(reason=reason))

    async def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Resume a suspended instance; the messages that waited are applied in order.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
            InvalidInstanceStateError: if it is not SUSPENDED.
        """
        check_reason(reason)
        state = await _require(self.provider, instance_id)
        if "resume" not in state.status.allowed_actions:
            raise InvalidInstanceStateError(f"instance {instance_id!r} is {state.status.value}, not SUSPENDED")
        await _send(self.provider, instance_id, OrchestrationResumed(reason=reason))

    async def rewind(self, instance_id: str, reason: str | None = None) -> int:
        """Retry a FAILED instance from where it failed, in a new execution.

        The failed activities run again (with a fresh retry budget), failed children are rewound
        too, and everything that succeeded is kept and never redone. See ``docs/rewind.md``.

        The instance reads PENDING as soon as this returns (keeping the error it failed with until
        the rewound run starts), so :meth:`wait_for_orchestration` waits for the rewound run. The
        failed execution stays readable: ``get_history(instance_id, execution_id=n - 1)``.
        A rewind that cannot proceed (the pinned version is registered on no worker, the history
        cannot be read) makes execution ``n`` FAILED at once, with an error saying why.

        Returns:
            The execution id ``n`` the rewound run will have.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
            InvalidInstanceStateError: if it is not FAILED (or stopped being FAILED meanwhile).
        """
        check_reason(reason)
        state = await _require(self.provider, instance_id)
        rewind = ExecutionRewound(reason=reason)
        request = Message(instance_id=instance_id, execution_id=state.execution_id, event=rewind)
        # Checked again in the provider's transaction: of two rewinds at once, one is refused.
        if "rewind" not in state.status.allowed_actions or not await self.provider.request_rewind(request):
            state = await _require(self.provider, instance_id)
            raise InvalidInstanceStateError(
                f"instance {instance_id!r} is {state.status.value}; only FAILED instances can be rewound"
            )
        return state.execution_id + 1

    async def purge(self, instance_id: str, *, recursive: bool = True) -> int:
        """Delete a finished instance's history, state and queued messages.

        With ``recursive``, its child orchestrations (and theirs) are purged too; children that
        are still running are left alone.

        Returns:
            How many instances were purged.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
            InvalidInstanceStateError: if it has not finished (complete, fail or terminate it first).
        """
        state = await _require(self.provider, instance_id)
        if "purge" not in state.status.allowed_actions:
            raise InvalidInstanceStateError(
                f"instance {instance_id!r} is {state.status.value}; only finished instances can be purged"
            )
        family = [instance_id]
        if recursive:
            family += await _descendants(self.provider, instance_id)
        return await self.provider.purge_instances(family)

    async def purge_instances(
        self,
        *,
        status: OrchestrationStatus | Sequence[OrchestrationStatus] | None = None,
        created_before: datetime,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Purge every finished instance created before ``created_before`` (bulk clean-up).

        Args:
            status: Only instances in these terminal statuses (default: all three).
            created_before: An aware datetime; older instances are purged.
            batch_size: Instances deleted per transaction.
            progress: Called with the running total after each batch.

        Returns:
            How many instances were purged.
        """
        where = InstanceFilter(
            status=check_purge_statuses(status),
            created_before=check_aware(created_before, "created_before"),
            limit=check_limit(batch_size),
        )
        return await _purge_page_by_page(self.provider, where, progress)

    async def list_instances(
        self,
        *,
        status: OrchestrationStatus | Sequence[OrchestrationStatus] | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        instance_id_prefix: str | None = None,
        parent_instance_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[OrchestrationState]:
        """Instances matching every given filter, ordered by instance id.

        Page with ``after``: pass the last ``instance_id`` of one page to get the next.
        """
        where = InstanceFilter(
            status=check_statuses(status),
            name=check_text(name, "name"),
            created_after=check_aware(created_after, "created_after"),
            created_before=check_aware(created_before, "created_before"),
            instance_id_prefix=check_text(instance_id_prefix, "instance id prefix"),
            parent_instance_id=None if parent_instance_id is None else check_instance_id(parent_instance_id),
            limit=check_limit(limit),
            after=check_text(after, "after"),
        )
        return self._payloads.states(await self.provider.list_instances(where))

    async def get_history(self, instance_id: str, execution_id: int | None = None) -> list[HistoryEvent]:
        """The history of one execution (the current one by default), payloads decoded by the codec.

        Raises:
            InstanceNotFoundError: if the instance does not exist.
        """
        check_execution_id(execution_id)
        await _require(self.provider, instance_id)
        return self._payloads.history(await self.provider.get_history(instance_id, execution_id))

    async def get_orchestration_descriptor(self, instance_id: str) -> OrchestrationDescriptor | None:
        """Name, pinned version and parent of an instance, read from its history.

        Between a continue-as-new and the new execution's first turn (which pins its version), the
        new execution has no history yet: the descriptor is then the previous execution's, as
        :meth:`get_status` shows it too.

        Returns ``None`` for an unknown instance, or one that has not started yet.
        """
        check_instance_id(instance_id)
        state = await self.provider.get_state(instance_id)
        if state is None:
            return None
        history = await self.provider.get_history(instance_id, state.execution_id)
        if not history and state.execution_id > 1:
            history = await self.provider.get_history(instance_id, state.execution_id - 1)
        return _descriptor(history[0] if history else None)

    async def list_workers(self, *, include_stale: bool = False) -> list[WorkerInfo]:
        """The worker processes (runtimes) on this store and what each serves, by host and process id.

        A runtime keeps a record while it runs and deletes it when it stops cleanly; the record of
        a process that died stays for a day, not ``alive``: listed with ``include_stale=True``.
        """
        check_flag(include_stale, "include_stale")
        workers = await self.provider.list_workers()
        return workers if include_stale else [w for w in workers if w.alive]


async def _send(provider: Provider, instance_id: str, event: HistoryEvent) -> None:
    # Operator requests reach an instance even while it is suspended; everything else waits.
    control = isinstance(event, _OPERATOR_REQUESTS)
    message = Message(instance_id=instance_id, execution_id=None, event=event, control=control)
    await provider.enqueue_messages([message])


async def _require(provider: Provider, instance_id: str) -> OrchestrationState:
    check_instance_id(instance_id)
    state = await provider.get_state(instance_id)
    if state is None:
        raise InstanceNotFoundError(f"no instance with id {instance_id!r}")
    return state


def _descriptor(started: HistoryEvent | None) -> OrchestrationDescriptor | None:
    if not isinstance(started, OrchestrationStarted):
        return None
    return OrchestrationDescriptor(
        name=started.name, version=started.version, parent_instance=started.parent_instance, parent_id=started.parent_id
    )


async def _wait_until_ended(
    provider: Provider, instance_id: str, timeout: float, execution_id: int
) -> OrchestrationState:
    """The state once execution ``execution_id`` (or a later one) of the instance has ended."""
    deadline = time.monotonic() + timeout
    while True:
        # Listen before reading: a change committed after the read wakes the wait, none falls between.
        change = asyncio.ensure_future(
            provider.wait_for_state_change(
                instance_id, max(deadline - time.monotonic(), 0.0), until_ended=max(execution_id, 1)
            )
        )
        await asyncio.sleep(0)  # the wait listens from its first step
        try:
            state = await provider.get_state(instance_id)
            if state is None:
                raise InstanceNotFoundError(f"no instance with id {instance_id!r}")
            if state.status.is_terminal and state.execution_id >= execution_id:
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"instance {instance_id!r} is still {state.status.value} after {timeout} s")
            known = await change
        finally:
            change.cancel()
        if known is not None and known.status.is_terminal and known.execution_id >= execution_id:
            return known  # the provider knows how the change that woke us left the instance


async def _purge_page_by_page(provider: Provider, where: InstanceFilter, progress: Callable[[int], None] | None) -> int:
    """Purge every instance ``where`` matches, one page per transaction; how many were purged."""
    total = 0
    while True:
        page = await provider.list_instances(where)
        if not page:
            return total
        where = replace(where, after=page[-1].instance_id)
        total += await provider.purge_instances([s.instance_id for s in page])
        if progress is not None:
            progress(total)


async def _descendants(provider: Provider, instance_id: str) -> list[str]:
    """The ids of every instance below ``instance_id`` (children, theirs, …), read page by page."""
    found: list[str] = []
    frontier = [instance_id]
    while frontier:
        parent = frontier.pop()
        after: str | None = None
        while True:
            children = await provider.list_instances(InstanceFilter(parent_instance_id=parent, limit=1000, after=after))
            if not children:
                break
            after = children[-1].instance_id
            found += [c.instance_id for c in children]
            frontier += [c.instance_id for c in children]
    return found
