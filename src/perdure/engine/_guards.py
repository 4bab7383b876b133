"""Determinism guards: while orchestration code runs, calls that answer differently on every replay raise.

The driver turns the guard on for the thread that runs a step of orchestration code, and off
again when the step ends; other threads, and the same thread between steps, are never affected.
A call it refuses raises :class:`~perdure.NonDeterministicCallError`, naming the deterministic
alternative, and fails the turn even if the code catches it (``Guard.off`` hands it back).

Two mechanisms, because not everything can be replaced:

- **Module functions**, wherever the call is made from (the code, or a library it calls):
  ``time.time``, ``time.time_ns``, ``time.monotonic``, ``time.monotonic_ns``, every function of
  ``random``, ``uuid.uuid1``, ``uuid.uuid4``, ``os.urandom`` and the functions of ``secrets``
  except ``compare_digest``. :func:`install` replaces each, once, by a wrapper that checks a set of
  thread ids (one truth test when no orchestration code runs anywhere). Calls made by the
  ``logging`` package pass: a log record's time is no decision.
- **Call sites** for what cannot be replaced: ``datetime.now()``, ``datetime.utcnow()``,
  ``datetime.today()`` and ``date.today()`` are methods of a C type, and a name imported before
  :func:`install` (``from time import time``) keeps the original function. These are caught where
  the orchestration's own code calls them: the orchestration function, functions defined in it,
  and the functions of its module that it calls by name. A scan of their bytecode (once per
  function) finds the code that names such a callable; only steps of such code pay for a check
  of each call, by ``sys.monitoring`` on Python 3.12 and later, by ``sys.setprofile`` on 3.11.

Not guarded: ``datetime.now()`` in a helper of another module, a callable reached through an
alias the scan cannot see, ``random.Random()`` without a seed, ``random.SystemRandom``, and
``time.perf_counter`` (for measuring durations, which decide nothing).
"""

from __future__ import annotations

import builtins
import datetime as _datetime
import dis
import functools
import os
import random
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from types import CodeType, FrameType, FunctionType
from typing import Any

from perdure._errors import NonDeterministicCallError

__all__ = ["Guard", "install"]

_NOW = "use ctx.now(), the time of the event being processed, the same on every replay"
_RANDOM = "use ctx.random(), a random.Random seeded the same way on every replay"
_GUID = "use ctx.new_guid(), a UUID that is the same on every replay"
_BYTES = "use ctx.random().randbytes(n); create secrets (keys, tokens) in an activity"

_guarded: set[int] = set()  # the threads running orchestration code now
_violations: dict[int, NonDeterministicCallError] = {}  # refused calls the code may have caught
_originals: dict[Any, str] = {}  # every guarded callable as it was → the error message
_scanned: dict[CodeType, frozenset[CodeType]] = {}
_install_lock = threading.Lock()
_installed = False
_monitoring: Any = None  # sys.monitoring on Python 3.12+, once a tool id is ours
_TOOL_IDS = (4, 3)  # the ids sys.monitoring leaves unnamed
_TIME_METHODS = frozenset({"now", "utcnow", "today"})
_CLOCK_TYPES = (_datetime.datetime, _datetime.date)


def _targets() -> list[tuple[Any, str, str]]:
    """(module, function name, advice) for every module function the guard replaces."""
    targets = [(time, name, _NOW) for name in ("time", "time_ns", "monotonic", "monotonic_ns")]
    targets += [(random, name, _RANDOM) for name in random.__all__]
    targets += [(uuid, "uuid1", _GUID), (uuid, "uuid4", _GUID), (os, "urandom", _BYTES)]
    targets += [(secrets, name, _BYTES) for name in secrets.__all__ if name != "compare_digest"]
    return [t for t in targets if not isinstance(getattr(t[0], t[1]), type)]  # Random, SystemRandom stay


def install() -> None:
    """Replace the guarded module functions by their wrappers (once per process)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        for cls in _CLOCK_TYPES:
            for name in sorted(_TIME_METHODS):
                if hasattr(cls, name):
                    _originals[getattr(cls, name)] = _message(f"{cls.__name__}.{name}()", _NOW)
        for module, name, advice in _targets():
            original = getattr(module, name)
            message = _message(f"{module.__name__}.{name}()", advice)
            setattr(module, name, _wrapper(original, message))
            _originals[original] = message
        _start_monitoring()
        _installed = True


def _message(call: str, advice: str) -> str:
    return f"{call} in orchestration code answers differently on every replay: {advice}"


def _wrapper(original: Callable[..., Any], message: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _guarded and threading.get_ident() in _guarded:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller != "logging" and not caller.startswith("logging."):
                _refuse(message)
        return original(*args, **kwargs)

    return guarded


def _refuse(message: str) -> None:
    error = NonDeterministicCallError(message)
    _violations[threading.get_ident()] = error
    raise error


def _forbidden(candidate: Any) -> str | None:
    """The message for ``candidate`` if it is a guarded callable as it was before :func:`install`."""
    try:
        return _originals.get(candidate)
    except Exception:  # unhashable, or a hash or comparison of its own that fails: no function of ours
        return None


# --- call sites --------------------------------------------------------------------------------


def watched_code(code: CodeType, namespace: dict[str, Any]) -> frozenset[CodeType]:
    """The code objects of an orchestration (``code`` with its module's ``namespace``) whose calls are checked."""
    found = _scanned.get(code)
    if found is None:
        flagged: set[CodeType] = set()
        try:
            _scan(code, namespace, flagged, set())
        except Exception:  # code the scan cannot read is left to the wrappers; a turn never fails for it
            flagged.clear()
        found = _scanned[code] = frozenset(flagged)
        if _monitoring is not None:
            for flagged_code in found:
                _monitoring.set_local_events(_tool_id, flagged_code, _monitoring.events.CALL)
    return found


def _scan(code: CodeType, namespace: dict[str, Any], flagged: set[CodeType], seen: set[CodeType]) -> None:
    """Flag the code objects that name a guarded callable the wrappers cannot catch.

    Follows code defined inside ``code`` and the functions of the same module it loads by name.
    """
    if code in seen:
        return
    seen.add(code)
    loaded: Any = None  # what the previous instruction put on the stack, when the scan can tell
    for instruction in dis.get_instructions(code):
        name, value = instruction.argval, None
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(name, str):
            value = namespace.get(name, getattr(builtins, name, None))
            if _forbidden(value) is not None:
                flagged.add(code)
            elif isinstance(value, FunctionType) and value.__module__ == namespace.get("__name__"):
                _scan(value.__code__, value.__globals__, flagged, seen)
        elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD") and isinstance(name, str):
            if name in _TIME_METHODS and loaded in _CLOCK_TYPES:
                flagged.add(code)
            value = getattr(loaded, name, None) if loaded is _datetime else None
        loaded = value
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            _scan(constant, namespace, flagged, seen)


def _start_monitoring() -> None:
    global _monitoring, _tool_id
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return
    for tool_id in _TOOL_IDS:
        if monitoring.get_tool(tool_id) is None:
            monitoring.use_tool_id(tool_id, "perdure determinism guard")
            monitoring.register_callback(tool_id, monitoring.events.CALL, _on_call)
            _monitoring, _tool_id = monitoring, tool_id
            return


_tool_id = -1


def _on_call(code: CodeType, offset: int, callee: Any, arg0: Any) -> Any:
    # Watched code runs in any thread (an activity may share a helper): only guarded threads refuse.
    if _guarded and threading.get_ident() in _guarded:
        message = _forbidden(callee)
        if message is not None:
            _refuse(message)
    return None


def _profiler(watched: frozenset[CodeType]) -> Callable[[FrameType, str, Any], None]:
    """Python 3.11: a profile function that refuses guarded calls made from ``watched`` code."""

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            if frame.f_code in watched:
                message = _forbidden(arg)
                if message is not None:
                    _refuse(message)
        elif event == "call" and frame.f_back is not None and frame.f_back.f_code in watched:
            message = _python_original(frame)
            if message is not None:
                _refuse(message)

    return profile


def _python_original(frame: FrameType) -> str | None:
    """The message for the guarded Python function (``uuid.uuid4``, ``random.choice``…) ``frame`` runs, if any."""
    for original, message in _originals.items():
        function = getattr(original, "__func__", original)
        if getattr(function, "__code__", None) is frame.f_code:
            owner = getattr(original, "__self__", None)
            if owner is None or frame.f_locals.get("self") is owner:
                return message
    return None


class Guard:
    """The guard of one execution's code, turned on around each step of its coroutine."""

    __slots__ = ("_previous", "_profile")

    def __init__(self, coroutine: Any) -> None:
        install()
        code, frame = getattr(coroutine, "cr_code", None), getattr(coroutine, "cr_frame", None)
        watched = watched_code(code, frame.f_globals) if isinstance(code, CodeType) and frame else frozenset()
        self._profile = _profiler(watched) if watched and _monitoring is None else None
        self._previous: Any = None

    def on(self) -> None:
        """Guard this thread while a step of the code runs."""
        _guarded.add(threading.get_ident())
        if self._profile is not None:
            self._previous = sys.getprofile()
            sys.setprofile(self._profile)

    def off(self) -> NonDeterministicCallError | None:
        """End the step; returns the guarded call it made, if any, even one the code caught."""
        ident = threading.get_ident()
        if self._profile is not None:
            sys.setprofile(self._previous)
            self._previous = None
        _guarded.discard(ident)
        return _violations.pop(ident, None) if _violations else None
