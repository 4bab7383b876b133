"""The client's schedule calls: create, list, read, pause, resume, trigger and delete schedules.

A schedule is an instance of the built-in orchestration ``perdure.Schedule`` with the id
``schedule:<schedule_id>`` (see ``perdure.schedules``); these calls create it, read it, and send it
commands as events. :class:`ScheduleCalls` is a base of :class:`~perdure.Client`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from perdure._errors import (
    InstanceAlreadyExistsError,
    InvalidInstanceStateError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
)
from perdure._state import OrchestrationState
from perdure._tracing import Tracer
from perdure._validate import check_limit, check_reason, check_text
from perdure.client._payloads import ClientPayloads
from perdure.client._start import IfExists, start_instance
from perdure.engine.events import EventRaised, StartRequested
from perdure.providers._base import InstanceFilter, Message, Provider
from perdure.schedules import (
    CONTROL_EVENT,
    DEFAULT_CATCHUP_WINDOW,
    SCHEDULE_ORCHESTRATION,
    SCHEDULE_PREFIX,
    Overlap,
    ScheduleInfo,
    ScheduleSpec,
    ScheduleState,
    duration,
    schedule_info,
    schedule_instance_id,
)
from perdure.schedules._spec import check_schedule_id

__all__ = ["ScheduleCalls"]


class ScheduleCalls:
    """The schedule calls of :class:`~perdure.Client` (a base class: the client is one object)."""

    provider: Provider
    _payloads: ClientPayloads  # the client's: runs' inputs, the schedule's state and commands go through it

    def _tracing(self) -> Tracer | None:
        raise NotImplementedError  # the client's

    async def create_schedule(
        self,
        schedule_id: str,
        name: str,
        input: Any = None,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        catchup_window: float | timedelta = DEFAULT_CATCHUP_WINDOW,
    ) -> ScheduleInfo:
        """Start the orchestration ``name`` on a cron expression or at a fixed interval, durably.

        A schedule is itself an orchestration instance (``schedule:<schedule_id>``, run by any
        runtime on the store), so it survives restarts and fires once per due time however many
        workers run. See ``docs/schedules.md``.

        Args:
            schedule_id: A unique id of your choice (no ``@``). Each run's instance id is
                ``<schedule_id>@<due time in UTC>``.
            name: The orchestration each run starts.
            input: The input of every run (a JSON value).
            cron: A five-field cron expression (``"0 2 * * *"``) or ``"@hourly"``, ``"@daily"`` …,
                matched against wall-clock time in ``timezone``. Give this or ``every``.
            every: An interval (seconds or a ``timedelta``, at least 1 s), first due one interval from now.
            timezone: The IANA time zone of the cron expression (DST changes included).
            overlap: When a due time comes while the previous run still runs: ``"skip"`` it,
                ``"buffer_one"`` (start it when the previous one ends; one at most), or
                ``"allow"`` runs side by side.
            start_at: No run is due before this aware datetime.
            end_at: No run is due after it; the schedule then ends.
            catchup_window: After downtime (no worker running), due times at most this late still
                fire (under the overlap rule); later ones are counted as missed. Default: a year.

        Returns:
            The new schedule (``next_fire_at`` is its first due time).

        Raises:
            ScheduleAlreadyExistsError: if a schedule with this id exists and has not ended.
            TypeError, ValueError: for a bad argument (a bad cron expression, both or neither of ``cron``
                and ``every``, an unknown time zone, a bad overlap, a naive datetime, no due time at all).
            SerializationError: if ``input`` is not a JSON value.
        """
        spec = ScheduleSpec(
            schedule_id=schedule_id,
            name=name,
            input=self._payloads.payloads.to_json(input, f"input of orchestration {name!r}"),
            cron=cron,
            every=duration(every, "every"),
            timezone=timezone,
            overlap=overlap,
            start_at=start_at,
            end_at=end_at,
            catchup_window=duration(catchup_window, "catchup_window"),  # type: ignore[arg-type]
            created_at=datetime.now(UTC).replace(microsecond=0),  # whole seconds make tidy run ids
        )
        return await self._create(spec)

    async def list_schedules(self, *, limit: int = 100, after: str | None = None) -> list[ScheduleInfo]:
        """Schedules ordered by id, deleted ones left out (ended ones stay until deleted).

        Page with ``after``: pass the last ``schedule_id`` of one page to get the next.
        """
        where = InstanceFilter(
            name=SCHEDULE_ORCHESTRATION,
            instance_id_prefix=SCHEDULE_PREFIX,
            limit=check_limit(limit),
            after=None if check_text(after, "after") is None else schedule_instance_id(str(after)),
        )
        schedules = [schedule_info(s) for s in self._payloads.states(await self.provider.list_instances(where))]
        return [s for s in schedules if s.state != "deleted"]

    async def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        """The schedule ``schedule_id``.

        Raises:
            ScheduleNotFoundError: if there is none, or it was deleted.
        """
        return schedule_info(await self._schedule_instance(schedule_id))

    async def pause_schedule(self, schedule_id: str, note: str | None = None) -> None:
        """Stop firing until resumed; runs already started go on. ``note`` says why (shown with it).

        Raises:
            ScheduleNotFoundError: if there is no such schedule.
            InvalidInstanceStateError: if it has ended.
        """
        check_reason(note)
        await self._command(schedule_id, {"command": "pause", "note": note})

    async def resume_schedule(self, schedule_id: str) -> None:
        """Fire again; due times that passed while paused are passed over, not caught up.

        Raises:
            ScheduleNotFoundError: if there is no such schedule.
            InvalidInstanceStateError: if it has ended.
        """
        await self._command(schedule_id, {"command": "resume"})

    async def trigger_schedule(self, schedule_id: str) -> None:
        """Start a run now, outside the due times (also while paused), under the overlap rule.

        The run's instance id is ``<schedule_id>@<now in UTC>~<n>``.

        Raises:
            ScheduleNotFoundError: if there is no such schedule.
            InvalidInstanceStateError: if it has ended.
        """
        await self._command(schedule_id, {"command": "trigger"})

    async def delete_schedule(self, schedule_id: str) -> None:
        """Stop the schedule for good; runs already started go on. Its id may then be used again.

        A live schedule ends at its next turn (its instance stays, COMPLETED, for its history); an
        ended one is purged at once.

        Raises:
            ScheduleNotFoundError: if there is no such schedule (or it was deleted already).
        """
        instance = await self._schedule_instance(schedule_id)
        if instance.status.is_terminal:
            await self.provider.purge_instances([instance.instance_id])
            return
        await self._command(schedule_id, {"command": "delete"})

    async def _create(self, spec: ScheduleSpec) -> ScheduleInfo:
        first = spec.first_due()
        if first is None:
            raise ValueError(f"schedule {spec.schedule_id!r} would never fire: no due time comes before end_at")
        instance_id = schedule_instance_id(spec.schedule_id)
        existing = await self.provider.get_state(instance_id)
        # An ended or deleted schedule's instance gives way; a live one is refused.
        if_exists: IfExists = "restart" if existing is not None and existing.status.is_terminal else "fail"
        state = self._payloads.payloads.seal(ScheduleState(spec=spec, next_due=first).to_json())
        start = StartRequested(name=SCHEDULE_ORCHESTRATION, input=state)
        try:
            await start_instance(self.provider, self._tracing(), instance_id, start, if_exists)
        except InstanceAlreadyExistsError:
            raise ScheduleAlreadyExistsError(f"a schedule with id {spec.schedule_id!r} exists") from None
        return await self.get_schedule(spec.schedule_id)

    async def _schedule_instance(self, schedule_id: str) -> OrchestrationState:
        instance_id = schedule_instance_id(check_schedule_id(schedule_id))
        instance = self._payloads.state(await self.provider.get_state(instance_id))
        if instance is None or instance.name != SCHEDULE_ORCHESTRATION or schedule_info(instance).state == "deleted":
            raise ScheduleNotFoundError(f"no schedule with id {schedule_id!r}")
        return instance

    async def _command(self, schedule_id: str, command: dict[str, Any]) -> None:
        instance = await self._schedule_instance(schedule_id)
        if instance.status.is_terminal:
            info = schedule_info(instance)
            raise InvalidInstanceStateError(
                f"schedule {schedule_id!r} is {info.state}: it takes no commands (delete it, or create it anew)"
            )
        event = EventRaised(name=CONTROL_EVENT, data=self._payloads.payloads.seal(command))
        await self.provider.enqueue_messages(
            [Message(instance_id=instance.instance_id, execution_id=None, event=event)]
        )
