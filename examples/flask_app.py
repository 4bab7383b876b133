"""Sign-ups over HTTP with Flask: synchronous views drive durable workflows through ``SyncClient``.

    POST /signups                   {"email": "ana@example.com"}  ->  202 {"id": "signup-…"}
    GET  /signups/{id}              the workflow's status and output
    POST /signups/{id}/confirm      raises the Confirmed event (the link in the e-mail)

Flask views have no event loop, so the app shares one ``SyncClient``: it runs the client's calls
on a loop thread of its own and is safe to use from every request thread. The workflows run in
separate worker processes on the same store::

    pip install flask
    SIGNUPS_DB=sqlite:///signups.db flask --app flask_app run
    perdure worker flask_app:registry --db sqlite:///signups.db

The same holds for Django: create the ``SyncClient`` once (in an ``AppConfig.ready``, say) and
call it from views.
"""

from __future__ import annotations

import atexit
import os
import uuid
from typing import Any

from flask import Flask, abort, request

from perdure import ActivityContext, OrchestrationContext, Registry, SyncClient

registry = Registry()

CONFIRM_DAYS = 7


@registry.activity("SendWelcome")
def send_welcome(ctx: ActivityContext, email: str) -> str:
    return f"welcome e-mail sent to {email}"  # an e-mail service would be called here


@registry.orchestration("Signup")
async def signup(ctx: OrchestrationContext, email: str) -> dict[str, Any]:
    ctx.set_custom_status("waiting for confirmation")
    confirmed = ctx.wait_for_event("Confirmed")
    expiry = ctx.create_timer(CONFIRM_DAYS * 86400)
    if await ctx.when_any([confirmed, expiry]) is expiry:
        return {"email": email, "active": False}
    return {"email": email, "active": True, "welcome": await ctx.call_activity("SendWelcome", email)}


def create_app(db_url: str | None = None) -> Flask:
    """The web app on the store at ``db_url`` (default: ``$SIGNUPS_DB``); its client is ``app.extensions["perdure"]``.

    ``flask --app flask_app run`` calls this factory; importing the module opens nothing, so
    workers can import it for its registry alone.
    """
    app = Flask(__name__)
    client = SyncClient(db_url or os.environ.get("SIGNUPS_DB", "sqlite:///signups.db"))
    app.extensions["perdure"] = client
    atexit.register(client.close)  # closing twice is harmless

    @app.post("/signups")
    def start_signup() -> tuple[dict[str, str], int]:
        email = (request.get_json(silent=True) or {}).get("email")
        if not isinstance(email, str) or "@" not in email:
            abort(422, "an e-mail address is required")
        instance_id = client.start_orchestration(f"signup-{uuid.uuid4().hex}", "Signup", email)
        return {"id": instance_id}, 202

    @app.get("/signups/<instance_id>")
    def signup_status(instance_id: str) -> dict[str, Any]:
        state = client.get_status(instance_id)
        if state is None:
            abort(404)
        return {"id": instance_id, "status": state.status.value, "step": state.custom_status, "output": state.output}

    @app.post("/signups/<instance_id>/confirm")
    def confirm_signup(instance_id: str) -> tuple[dict[str, str], int]:
        state = client.get_status(instance_id)
        if state is None:
            abort(404)
        if state.status.is_terminal:
            abort(409, f"sign-up {instance_id} is already {state.status.value}")
        client.raise_event(instance_id, "Confirmed")
        return {"id": instance_id}, 202

    return app
