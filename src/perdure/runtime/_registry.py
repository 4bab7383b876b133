"""Registries: which orchestrations (by name and version) and activities a worker can run."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from perdure._errors import RegistrationError, UnregisteredActivityError, UnregisteredOrchestrationError
from perdure._payloads import parameter_type, return_type
from perdure._validate import check_name, parse_version
from perdure.engine._replay import OrchestrationFunction
from perdure.schedules import SCHEDULE_ORCHESTRATION, SCHEDULE_VERSION, run_schedule

__all__ = ["ActivityRegistry", "OrchestrationRegistry", "Registry", "ResultTypes"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_VERSION = "1.0.0"

# Orchestrations every runtime runs without being told: schedules (see perdure.schedules).
_BUILT_IN: dict[str, dict[str, OrchestrationFunction]] = {SCHEDULE_ORCHESTRATION: {SCHEDULE_VERSION: run_schedule}}


@dataclass(frozen=True, slots=True)
class RegisteredActivity:
    """An activity function with how to call it."""

    name: str
    function: Callable[..., Any]
    is_async: bool
    takes_input: bool

    @property
    def input_type(self) -> Any:
        """The annotation of the input parameter (``None``: none, or no input)."""
        return parameter_type(self.function, 1) if self.takes_input else None


def _takes_input(function: Callable[..., Any], what: str) -> bool:
    """Whether ``function`` is ``f(ctx, input)`` (True) or ``f(ctx)`` (False)."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 2:
        return True
    if len(positional) == 1:
        return False
    raise RegistrationError(f"{what} must take the context as its first parameter (and optionally an input)")


def _without_input(function: Callable[..., Any]) -> OrchestrationFunction:
    def call(ctx: Any, _input: Any) -> Any:
        return function(ctx)

    return call


def _check_name(name: Any, what: str) -> str:
    # The rule every entry applies, reported as the registration error this module raises.
    try:
        return check_name(name, f"{what} name")
    except (TypeError, ValueError) as exc:
        raise RegistrationError(str(exc)) from exc


class OrchestrationRegistry:
    """Orchestration functions by name and version, with a version policy per name.

    Every registry also holds perdure's built-in orchestrations (``perdure.Schedule``, which runs
    schedules); their names are reserved and :meth:`names` leaves them out.
    """

    def __init__(self) -> None:
        self._functions: dict[str, dict[str, OrchestrationFunction]] = {}
        self._policies: dict[str, str] = {}
        self._as_written: dict[tuple[str, str], Callable[..., Any]] = {}  # before ``_without_input``

    def add(self, name: str, function: Callable[..., Any], version: str = DEFAULT_VERSION) -> None:
        """Register ``function`` as ``name@version``; a duplicate is refused."""
        _check_name(name, "orchestration")
        _check_not_built_in(name)
        parse_version(version)
        if not inspect.iscoroutinefunction(function):
            raise RegistrationError(f"orchestration {name!r} must be an async function (async def)")
        versions = self._functions.setdefault(name, {})
        if version in versions:
            raise RegistrationError(f"orchestration {name}@{version} is already registered")
        takes_input = _takes_input(function, f"orchestration {name!r}")
        versions[version] = function if takes_input else _without_input(function)
        self._as_written[name, version] = function

    def result_type(self, name: str) -> Any:
        """The return annotation of the version of ``name`` new instances get (``None``: unknown here)."""
        try:
            function = self._as_written.get((name, self.resolve(name)))
        except UnregisteredOrchestrationError:
            return None
        return None if function is None else return_type(function)

    def set_policy(self, name: str, policy: str) -> None:
        """Choose which version new instances of ``name`` get: ``"latest"`` or an exact version."""
        if policy != "latest":
            parse_version(policy)
        self._policies[_check_not_built_in(_check_name(name, "orchestration"))] = policy

    def resolve(self, name: str, version: str | None = None) -> str:
        """The version a new execution of ``name`` gets: ``version`` if given, else by policy.

        Raises:
            UnregisteredOrchestrationError: if nothing registered matches.
        """
        if version is not None:
            return version
        versions = self._functions.get(name) or _BUILT_IN.get(name)
        policy = self._policies.get(name, "latest")
        if policy != "latest":
            return policy
        if not versions:
            raise UnregisteredOrchestrationError(f"no orchestration named {name!r} is registered")
        return max(versions, key=parse_version)

    def get(self, name: str, version: str) -> OrchestrationFunction | None:
        """The function of ``name@version``, or ``None`` if this worker does not have it."""
        return (self._functions.get(name) or _BUILT_IN.get(name, {})).get(version)

    def versions(self, name: str) -> list[str]:
        """The registered versions of ``name``, oldest first."""
        return sorted(self._functions.get(name) or _BUILT_IN.get(name, {}), key=parse_version)

    def names(self) -> list[str]:
        """Every registered orchestration name."""
        return sorted(self._functions)


def _check_not_built_in(name: str) -> str:
    if name in _BUILT_IN:
        raise RegistrationError(f"{name!r} is the name of one of perdure's built-in orchestrations; choose another")
    return name


class ActivityRegistry:
    """Activity functions by name."""

    def __init__(self) -> None:
        self._activities: dict[str, RegisteredActivity] = {}

    def add(self, name: str, function: Callable[..., Any]) -> None:
        """Register ``function`` (``async def`` runs on the loop, plain ``def`` in a thread pool)."""
        _check_name(name, "activity")
        if name in self._activities:
            raise RegistrationError(f"activity {name!r} is already registered")
        self._activities[name] = RegisteredActivity(
            name=name,
            function=function,
            is_async=inspect.iscoroutinefunction(function),
            takes_input=_takes_input(function, f"activity {name!r}"),
        )

    def get(self, name: str) -> RegisteredActivity:
        """The activity ``name``; raises :class:`UnregisteredActivityError` if there is none."""
        activity = self._activities.get(name)
        if activity is None:
            raise UnregisteredActivityError(f"no activity named {name!r} is registered on this worker")
        return activity

    def names(self) -> list[str]:
        """Every registered activity name."""
        return sorted(self._activities)

    def result_type(self, name: str) -> Any:
        """The return annotation of activity ``name`` (``None``: none, or not registered here)."""
        activity = self._activities.get(name)
        return None if activity is None else return_type(activity.function)


class ResultTypes:
    """The result types of a registry's activities and orchestrations, as the replay engine asks for them."""

    def __init__(self, orchestrations: OrchestrationRegistry, activities: ActivityRegistry | None) -> None:
        self._orchestrations = orchestrations
        self._activities = activities
        self._activity_results: dict[str, Any] = {}  # an activity, once registered, never changes

    def activity_result(self, name: str) -> Any:
        found = self._activity_results.get(name)
        if found is None and self._activities is not None:
            found = self._activities.result_type(name)
            if found is not None:  # kept once known: a registered activity never changes
                self._activity_results[name] = found
        return found

    def orchestration_result(self, name: str) -> Any:
        return self._orchestrations.result_type(name)


class Registry:
    """The orchestrations and activities of an application, registered with decorators.

    Example::

        registry = Registry()

        @registry.activity("Greet")
        async def greet(ctx: ActivityContext, name: str) -> str:
            return f"Hello, {name}!"

        @registry.orchestration("Hello", version="1.0.0")
        async def hello(ctx: OrchestrationContext, name: str) -> str:
            return await ctx.call_activity("Greet", name)
    """

    def __init__(self) -> None:
        self.orchestrations = OrchestrationRegistry()
        """The orchestration registry."""
        self.activities = ActivityRegistry()
        """The activity registry."""

    def orchestration(self, name: str | None = None, *, version: str = DEFAULT_VERSION) -> Callable[[F], F]:
        """Register an ``async def`` orchestration (name defaults to the function's name)."""

        def register(function: F) -> F:
            self.orchestrations.add(name or function.__name__, function, version)
            return function

        return register

    def activity(self, name: str | None = None) -> Callable[[F], F]:
        """Register an activity (name defaults to the function's name)."""

        def register(function: F) -> F:
            self.activities.add(name or function.__name__, function)
            return function

        return register

    def set_version_policy(self, name: str, policy: str) -> None:
        """Which version new instances of orchestration ``name`` get: ``"latest"`` (default) or exact."""
        self.orchestrations.set_policy(name, policy)
