"""The dashboard's workers page: the worker processes on the store and what each serves.

- ``/workers``: the page (``static/workers.html``), which polls the API below;
- ``GET /api/workers[?all=1]`` → ``{"workers": [WORKER…], "now"}``: the live workers, and with
  ``all=1`` also those that died in the last day (``Client.list_workers``), each in the shape of
  :func:`perdure.tools._format.worker_json`. A bad ``all`` is answered with 400.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from perdure import Client
from perdure.tools import _format
from perdure.tools.dashboard import _params

__all__ = ["API_ROUTES", "PAGES"]

PAGES = {"/workers": "workers.html"}
"""The page of this module: its path and its file in ``static/``."""


async def _list_workers(request: Request) -> Response:
    try:
        include_stale = _params.choice(request.query_params, "all", ("", "0", "1")) == "1"
    except _params.BadParameter as exc:
        return JSONResponse({"error": str(exc)}, 400)
    client: Client = request.app.state.client
    found = await client.list_workers(include_stale=include_stale)
    return JSONResponse({"workers": [_format.worker_json(w) for w in found], "now": datetime.now(UTC).isoformat()})


API_ROUTES = [Route("/api/workers", _list_workers)]
