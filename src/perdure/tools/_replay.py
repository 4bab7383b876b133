"""``perdure replay MODULE:REGISTRY``: check, before a deploy, that today's code replays stored histories.

The histories come from a store (``--db``, filtered by ``--name`` and ``--status``) and from files
(``--history``: what ``perdure instances show --json`` prints, or a JSON list of its events). Exit
0 when every history replays, 1 with the list of the ones that diverge and where.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from perdure import Client, HistoryFormatError
from perdure._errors import type_name
from perdure.engine import FORMAT_VERSION, describe
from perdure.engine._codec import event_from_dict
from perdure.engine.events import HistoryEvent, OrchestrationStarted
from perdure.testing import Replayer, ReplayResult
from perdure.testing._replayer import stored_histories
from perdure.tools import _format
from perdure.tools._run import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandError, open_store
from perdure.tools._worker import registry_of, runtime_options

__all__ = ["read_history", "replay"]


async def replay(args: argparse.Namespace) -> int:
    """``perdure replay``: replay histories against the registry's code; exit 1 if any diverges."""
    if not args.db and not args.history:
        raise CommandError("nothing to replay: give --db URL (or set PERDURE_DB), or --history FILE", EXIT_USAGE)
    replayer = Replayer(registry_of(args.target), runtime_options(args))
    histories = [read_history(Path(path)) for path in args.history or ()]
    checked: list[tuple[str, list[HistoryEvent], ReplayResult]] = []
    for instance_id, execution_id, history in histories:
        result = replayer.replay(history, instance_id=instance_id, execution_id=execution_id)
        checked.append((instance_id, history, result))
    if args.db:
        async with open_store(args.db) as provider:
            async for state, stored in stored_histories(
                Client(provider, payload_codec=args.payload_codec), args.name, args.status or None
            ):
                result = replayer.replay_stored(state, stored)
                checked.append((state.instance_id, stored if isinstance(stored, list) else [], result))
    data = {
        "replayed": len(checked),
        "diverged": sum(not result.ok for _, _, result in checked),
        "instances": [_result_json(instance_id, history, result) for instance_id, history, result in checked],
    }
    print(_format.dumps(data) if args.json else _format.inert_lines(_report(data)))
    return EXIT_FAILURE if data["diverged"] else EXIT_OK


def read_history(path: Path) -> tuple[str, int, list[HistoryEvent]]:
    """(instance id, execution id, events) of a history file; the file's name stands in for a missing id."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path} is not JSON: {exc}", EXIT_USAGE) from None
    instance: Any = document.get("instance") if isinstance(document, dict) else None
    raw = document.get("history") if isinstance(document, dict) else document
    if not isinstance(raw, list):
        raise CommandError(f"{path} holds no history: expected the output of 'instances show --json'", EXIT_USAGE)
    try:
        events = [_event(item) for item in raw]
    except HistoryFormatError as exc:
        raise CommandError(f"{path}: {exc}", EXIT_USAGE) from None
    instance_id = instance.get("instance_id") if isinstance(instance, dict) else None
    execution_id = instance.get("execution_id") if isinstance(instance, dict) else None
    if isinstance(document, dict) and "execution_id" in document:
        execution_id = document["execution_id"]  # the execution the history belongs to
    return (
        instance_id if isinstance(instance_id, str) else path.stem,
        execution_id if isinstance(execution_id, int) else 1,
        events,
    )


def _event(item: Any) -> HistoryEvent:
    """An event as ``instances show --json`` shows it (``details``), or in its stored form (``v``)."""
    if isinstance(item, dict) and "details" in item and isinstance(item["details"], dict):
        fields = {key: item[key] for key in ("event_id", "timestamp") if key in item}
        return event_from_dict({"v": FORMAT_VERSION, "type": item.get("type"), **fields, **item["details"]})
    return event_from_dict(item)


def _result_json(instance_id: str, history: list[HistoryEvent], result: ReplayResult) -> dict[str, Any]:
    started = history[0] if history and isinstance(history[0], OrchestrationStarted) else None
    event = None
    if result.event is not None:
        start = history[0].timestamp if history else result.event.timestamp
        event = {**_format.event_json(result.event, start), "description": describe(result.event)}
    error = None if result.error is None else {"type": type_name(result.error), "message": str(result.error)}
    return {
        "instance_id": instance_id,
        "name": started.name if started else None,
        "version": started.version if started else None,
        "ok": result.ok,
        "error": error,
        "event": event,
    }


def _report(data: dict[str, Any]) -> str:
    total, diverged = data["replayed"], data["diverged"]
    if not total:
        return "No instances to replay."
    if not diverged:
        return f"All {total} instance{'s' if total != 1 else ''} replay with this code."
    rows = [
        [
            item["instance_id"],
            f"{item['name']}@{item['version']}" if item["name"] else "-",
            str(item["event"]["event_id"]) if item["event"] else "-",
            f"{item['error']['type'].removeprefix('perdure.')}: {item['error']['message']}",
        ]
        for item in data["instances"]
        if not item["ok"]
    ]
    table = _format.table(["INSTANCE", "ORCHESTRATION", "AT EVENT", "WHY"], rows)
    return f"{diverged} of {total} instance{'s' if total != 1 else ''} do not replay with this code:\n\n{table}"
