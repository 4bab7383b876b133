"""How a ``perdure`` command is declared: a :class:`Command` and its :class:`Arg` s, built into argparse.

Every option ``--some-option`` may also come from an environment variable, by default
``PERDURE_SOME_OPTION`` (``--db`` from ``PERDURE_DB``, ``--json`` from ``PERDURE_JSON=1``,
``--status`` from ``PERDURE_STATUS=failed,terminated``); the command line wins. A usage error is
one line on stderr and exit code 2, like every other failure (:mod:`perdure.tools._run`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from perdure.tools._run import EXIT_USAGE, Handler, fail

__all__ = ["Arg", "Command", "Many", "arg", "build_parser", "env_name", "listed"]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_BOOLEAN_ACTIONS = ("store_true", argparse.BooleanOptionalAction)


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a command, in the terms of ``argparse``.

    Attributes:
        name: A positional's name (``instance_id``) or an option's flag (``--status``).
        help: One line for ``--help``.
        env: The environment variable an option's default comes from; by default
            :func:`env_name` of the flag.
        settings: The other keywords of ``add_argument`` (``type``, ``metavar``, ``action``…).
    """

    name: str
    help: str | None = None
    env: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


def arg(name: str, help: str | None = None, *, env: str | None = None, **settings: Any) -> Arg:
    """Declare an argument: ``arg("--limit", "at most N", type=int, metavar="N")``."""
    return Arg(name, help, env, settings)


@dataclass(frozen=True, slots=True)
class Command:
    """One command of the ``perdure`` CLI.

    Attributes:
        name: ``start``; or ``instances list`` for the command ``list`` in the group
            ``instances``, which is declared before it.
        help: One line for the list of commands.
        handler: What runs it (see :mod:`perdure.tools._run`); ``None`` for a group.
        args: Its arguments, in order.
        description: The text at the top of its own ``--help`` (default: ``help``).
    """

    name: str
    help: str
    handler: Handler | None
    args: Sequence[Arg] = ()
    description: str | None = None


def env_name(flag: str) -> str:
    """``--created-before`` → ``PERDURE_CREATED_BEFORE``."""
    return "PERDURE_" + flag.lstrip("-").replace("-", "_").upper()


def listed(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argument type for comma-separated values, each converted by ``convert``."""

    def parse(text: str) -> list[T]:
        return [convert(part.strip()) for part in text.split(",") if part.strip()]

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its errors
    return parse


class Many(argparse.Action):
    """Collects repeated (or comma-separated, with :func:`listed`) values; given ones replace the env default."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        current = getattr(namespace, self.dest)
        current = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, current + list(values))


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(fail(f"{message} (see '{self.prog} --help')", EXIT_USAGE))


def build_parser(commands: Sequence[Command], *, description: str) -> argparse.ArgumentParser:
    """The parser of ``commands``; a parsed command carries its handler as ``handler``."""
    parser = _Parser(prog="perdure", description=description)
    groups = {"": parser.add_subparsers(dest="command", required=True, metavar="COMMAND")}
    for command in commands:
        group, _, leaf = command.name.rpartition(" ")
        sub = groups[group].add_parser(leaf, help=command.help, description=command.description or command.help)
        if command.handler is None:
            dest = command.name.replace(" ", "_") + "_command"
            groups[command.name] = sub.add_subparsers(dest=dest, required=True, metavar="COMMAND")
        else:
            sub.set_defaults(handler=command.handler)
        for argument in command.args:
            _add(sub, argument)
    return parser


def _add(parser: argparse.ArgumentParser, argument: Arg) -> None:
    settings = dict(argument.settings)
    if not argument.name.startswith("-"):
        parser.add_argument(argument.name, help=argument.help, **settings)
        return
    env = argument.env or env_name(argument.name)
    raw = os.environ.get(env)
    if raw is not None:
        # A string default is converted by argparse like a typed value, and its errors reported alike.
        boolean = settings.get("action") in _BOOLEAN_ACTIONS
        settings["default"] = raw.strip().lower() in _TRUE if boolean else raw
        if settings.get("required"):
            settings["required"] = False
    parser.add_argument(argument.name, help=f"{argument.help} (env {env})", **settings)
