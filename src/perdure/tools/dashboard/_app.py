"""The dashboard's web application: the pages, a small JSON API and the actions (workers: ``_workers``;
schedules: ``_schedules``).

Pages (``/``, ``/instance?id=…``, ``/workers`` and ``/schedules``) are static HTML from ``static/`` with the CSRF
token filled in; the scripts poll the JSON API and render. The workers page and its API are in
:mod:`perdure.tools.dashboard._workers`. The API:

- ``GET /api/instances?status=…&prefix=…&name=…&created_after=…&created_before=…&after=…&limit=…``
  → ``{"instances": [SUMMARY…], "next_cursor": str | null}``: summaries with previews of the
  values, never the values themselves (they may be megabytes each, and the list is polled);
- ``GET /api/instance?id=…[&execution=N]`` → ``{"instance": SUMMARY, "values": {"input",
  "output", "custom_status"}, "error", "history", "timeline", "children": [SUMMARY…], "can":
  {"terminate", "suspend", "resume", "rewind", "purge", "raise_event"}, "finished", "waiting_for":
  [WAIT…], "now"}`` where each value is cut at 64 KiB, ``can`` says which actions the instance's
  status allows (``OrchestrationStatus.allowed_actions``), ``finished`` whether that status is
  terminal, and ``waiting_for`` what an unfinished instance waits for (:mod:`perdure.tools._waits`,
  read from its current execution and the live workers);
- ``GET /api/download?id=…&field=input|output|custom_status|error`` → the whole value as a JSON
  file;
- ``POST /api/instance/{terminate|suspend|resume|rewind|raise-event}?id=…`` with a JSON body
  (``{"reason"}``, or ``{"name", "data"}`` for an event) → ``{"ok": true}``.

A refused parameter or body is answered with 400, an unknown instance with 404, a refused action
with 409, each as ``{"error": message}``. Shapes of summaries and cut values:
:mod:`perdure.tools._preview`; of events and spans: :mod:`perdure.tools._format`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from perdure import Client, InstanceNotFoundError, InvalidInstanceStateError, OrchestrationState, SerializationError
from perdure._state import ACTIONS
from perdure.engine.events import HistoryEvent
from perdure.tools import _format, _preview, _waits
from perdure.tools.dashboard import _params, _workers
from perdure.tools.dashboard._params import BadParameter
from perdure.tools.dashboard._schedules import SCHEDULES_PAGE, schedule_routes
from perdure.tools.dashboard._security import CSRF_HEADER, SESSION_COOKIE, TOKEN_COOKIE, Guard

__all__ = ["create_app"]

_STATIC = resources.files("perdure.tools.dashboard") / "static"
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _GuardMiddleware:
    """Host, access-token, Origin and CSRF checks in front of every route."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        guard = self.guard
        host = request.headers.get("host")
        if not guard.host_ok(host):
            return PlainTextResponse("This dashboard answers only on a loopback address.", 421)
        if guard.token is not None:
            query_token = request.query_params.get("token")
            if query_token is not None and request.method == "GET" and guard.token_ok(query_token):
                # Trade the token in the URL for a cookie, and drop it from the address bar.
                target = request.url.remove_query_params("token")
                response = RedirectResponse(str(target.path) + (f"?{target.query}" if target.query else ""), 303)
                response.set_cookie(TOKEN_COOKIE, query_token, httponly=True, samesite="strict")
                return response
            auth = request.headers.get("authorization", "")
            presented = auth[7:] if auth.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE)
            if not guard.token_ok(presented):
                return PlainTextResponse(
                    "An access token is required: open the dashboard's address with ?token=<token>.", 401
                )
        if request.method not in ("GET", "HEAD"):
            if request.method != "POST":
                return PlainTextResponse("Method not allowed.", 405)
            if not guard.origin_ok(request.headers.get("origin"), request.url.scheme, host):
                return JSONResponse({"error": "cross-site request refused (Origin does not match)"}, 403)
            if not guard.csrf_ok(request.cookies.get(SESSION_COOKIE), request.headers.get(CSRF_HEADER)):
                return JSONResponse({"error": "missing or wrong CSRF token; reload the page"}, 403)
        return None


def create_app(client: Client, *, token: str | None = None, refresh: float = 1.5) -> Starlette:
    """The dashboard application over ``client`` (the caller owns the client's provider)."""
    routes = [
        Route("/", _page("index.html")),
        Route("/instance", _page("instance.html")),
        Route("/api/instances", _list_instances),
        Route("/api/instance", _instance),
        Route("/api/download", _download),
        Route("/api/instance/{action}", _action, methods=["POST"]),
        *[Route(path, _page(name)) for path, name in _workers.PAGES.items()],
        *_workers.API_ROUTES,
        *schedule_routes(_page(SCHEDULES_PAGE)),
        Mount("/static", StaticFiles(directory=str(_STATIC)), name="static"),
    ]
    guard = Guard(token)
    app = Starlette(routes=routes, middleware=[Middleware(_GuardMiddleware, guard=guard)])
    app.state.client = client
    app.state.guard = guard
    app.state.refresh = refresh
    pages = ("index.html", "instance.html", *_workers.PAGES.values(), SCHEDULES_PAGE)
    app.state.pages = {name: (_STATIC / name).read_text(encoding="utf-8") for name in pages}
    return app


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def _page(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        state = request.app.state
        session = request.cookies.get(SESSION_COOKIE) or state.guard.new_session()
        html = (
            state.pages[name]
            .replace("__CSRF_TOKEN__", state.guard.csrf_token(session))
            .replace("__REFRESH_MS__", str(int(state.refresh * 1000)))
        )
        response = HTMLResponse(html)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
        return response

    return endpoint


Endpoint = Callable[[Request], Awaitable[Response]]


def _api(endpoint: Endpoint) -> Endpoint:
    """An API endpoint whose refused parameters are 400 and unknown instances 404, never 500."""

    @wraps(endpoint)
    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadParameter as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except InstanceNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    return handle


async def _state(client: Client, instance_id: str) -> OrchestrationState:
    state = await client.get_status(instance_id)
    if state is None:
        raise InstanceNotFoundError(f"no instance with id {instance_id!r}")
    return state


@_api
async def _list_instances(request: Request) -> Response:
    query = request.query_params
    limit = _params.number(query, "limit", low=1, high=500) or 25
    page = await _client(request).list_instances(
        status=_params.statuses(query) or None,
        name=_params.text(query, "name"),
        instance_id_prefix=_params.prefix(query),
        created_after=_params.moment(query, "created_after"),
        created_before=_params.moment(query, "created_before"),
        limit=limit + 1,
        after=_params.instance_id(query, "after", required=False),
    )
    # The provider reads whole states; only their summaries go out.
    cursor = page[limit - 1].instance_id if len(page) > limit else None
    return JSONResponse({"instances": [_preview.instance_summary(s) for s in page[:limit]], "next_cursor": cursor})


@_api
async def _instance(request: Request) -> Response:
    client = _client(request)
    instance_id = _params.instance_id(request.query_params) or ""
    state = await _state(client, instance_id)
    execution = _params.number(request.query_params, "execution", low=1, high=state.execution_id)
    history = await client.get_history(instance_id, execution)
    children = await client.list_instances(parent_instance_id=instance_id, limit=500)
    current = execution in (None, state.execution_id)
    waiting = await _waiting_for(client, state, history if current else None)
    timeline = _format.timeline_json(history)
    if current:
        _label_timeouts(timeline, state)
    return JSONResponse(
        {
            "instance": _preview.instance_summary(state),
            "values": {
                "input": _preview.value_page_json(state.input),
                "output": _preview.value_page_json(state.output),
                "custom_status": _preview.value_page_json(state.custom_status),
            },
            "error": _preview.error_page_json(state.error),
            "history": _preview.history_page_json(history),
            "timeline": timeline,
            "children": [_preview.instance_summary(c) for c in children],
            # The page enables the buttons the status allows; the client refuses the rest anyway.
            "can": {action: action in state.status.allowed_actions for action in ACTIONS},
            "finished": state.status.is_terminal,
            "waiting_for": [_waits.wait_json(w) for w in waiting],
            "now": datetime.now(UTC).isoformat(),
        }
    )


def _label_timeouts(timeline: list[dict[str, Any]], state: OrchestrationState) -> None:
    """A timer that is the timeout of an event wait still open is labelled as such."""
    timeouts = {w.timer_event_id: w.name for w in state.waiting_for}
    for span in timeline:
        if span["kind"] == "timer" and span["event_id"] in timeouts:
            span["label"] = f"timeout of event {timeouts[span['event_id']]!r}"


async def _waiting_for(
    client: Client, state: OrchestrationState, history: list[HistoryEvent] | None
) -> list[_waits.Wait]:
    """What the instance waits for, from its current execution's ``history`` (read here if ``None``)."""
    if state.status.is_terminal:
        return []
    if history is None:
        history = await client.get_history(state.instance_id, state.execution_id)
    running = await client.provider.activity_workers(state.instance_id, state.execution_id)
    return _waits.waits(state, history, await client.list_workers(), running)


_FIELDS = ("input", "output", "custom_status", "error")


@_api
async def _download(request: Request) -> Response:
    """One whole value of an instance, as a JSON file (the page shows at most 64 KiB of it)."""
    instance_id = _params.instance_id(request.query_params) or ""
    field = _params.choice(request.query_params, "field", _FIELDS)
    state = await _state(_client(request), instance_id)
    value = _format.error_json(state.error) if field == "error" else getattr(state, field)
    filename = f"{instance_id}-{field}.json"
    disposition = f"attachment; filename=\"{field}.json\"; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(
        _preview.json_text(value, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": disposition},
    )


@_api
async def _action(request: Request) -> Response:
    name = request.path_params["action"]
    if name not in _POSTED_ACTIONS:
        return JSONResponse({"error": f"unknown action {name!r}"}, 404)
    instance_id = _params.instance_id(request.query_params) or ""
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return JSONResponse({"error": f"the request body is not JSON: {exc}"}, 400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "the request body must be a JSON object"}, 400)
    try:
        if not await _apply(_client(request), name, instance_id, body):
            return JSONResponse({"error": f"instance {instance_id!r} has already finished"}, 409)
    except InvalidInstanceStateError as exc:
        return JSONResponse({"error": str(exc)}, 409)
    except (SerializationError, ValueError) as exc:
        # The client's checks: an empty or too long event name or reason, data that is not JSON…
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"ok": True})


_POSTED_ACTIONS = ("terminate", "suspend", "resume", "rewind", "raise-event")


async def _apply(client: Client, name: str, instance_id: str, body: dict[str, Any]) -> bool:
    """Apply one of :data:`_POSTED_ACTIONS`; ``False`` if it changed nothing (a terminate too late)."""
    reason = _body_text(body, "reason")
    if name == "terminate":
        return await client.terminate(instance_id, reason)
    if name == "suspend":
        await client.suspend(instance_id, reason)
    elif name == "resume":
        await client.resume(instance_id, reason)
    elif name == "rewind":
        await client.rewind(instance_id, reason)
    else:
        await client.raise_event(instance_id, _body_text(body, "name") or "", body.get("data"))
    return True


def _body_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadParameter(f"{key} must be text, got {type(value).__name__}")
    return value or None
