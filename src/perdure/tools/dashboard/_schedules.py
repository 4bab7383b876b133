"""The dashboard's schedules view: one page, its JSON API and the schedule commands.

- ``GET /schedules`` → the page (``static/schedules.html``, which polls the API);
- ``GET /api/schedules`` → ``{"schedules": [SCHEDULE…]}`` (the shape of ``perdure schedules list
  --json``), deleted schedules left out;
- ``POST /api/schedule/{pause|resume|trigger|delete}?id=…`` with a JSON body (``{"note"}`` for a
  pause) → ``{"ok": true}``; an unknown schedule is 404, a command to an ended one 409, a bad note
  400, each as ``{"error": message}``.

The routes come from :func:`schedule_routes`, which :func:`~perdure.tools.dashboard.create_app`
mounts beside its own; the page shares the guard (token, Origin, CSRF) of every other route.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from perdure import Client, InstanceNotFoundError, InvalidInstanceStateError
from perdure.tools._schedule_commands import schedule_json
from perdure.tools.dashboard import _params

__all__ = ["SCHEDULES_PAGE", "schedule_routes"]

SCHEDULES_PAGE = "schedules.html"

_COMMANDS = ("pause", "resume", "trigger", "delete")


def schedule_routes(page: Any) -> list[BaseRoute]:
    """The schedules routes; ``page`` is the endpoint that serves the page with its tokens filled in."""
    return [
        Route("/schedules", page),
        Route("/api/schedules", _list),
        Route("/api/schedule/{command}", _command, methods=["POST"]),
    ]


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


async def _list(request: Request) -> Response:
    schedules = await _client(request).list_schedules(limit=1000)
    return JSONResponse({"schedules": [schedule_json(s) for s in schedules]})


async def _command(request: Request) -> Response:
    command = request.path_params["command"]
    if command not in _COMMANDS:
        return JSONResponse({"error": f"unknown command {command!r}"}, 404)
    try:
        schedule_id = _params.instance_id(request.query_params) or ""
        body = json.loads(await request.body() or b"{}")
    except _params.BadParameter as exc:
        return JSONResponse({"error": str(exc)}, 400)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return JSONResponse({"error": f"the request body is not JSON: {exc}"}, 400)
    note = body.get("note") if isinstance(body, dict) else None
    client = _client(request)
    try:
        if command == "pause":
            await client.pause_schedule(schedule_id, note or None)
        else:
            await getattr(client, f"{command}_schedule")(schedule_id)
    except InstanceNotFoundError as exc:
        return JSONResponse({"error": str(exc)}, 404)
    except InvalidInstanceStateError as exc:
        return JSONResponse({"error": str(exc)}, 409)
    except (TypeError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"ok": True})
