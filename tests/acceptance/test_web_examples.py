"""The web examples, driven through HTTP: FastAPI over httpx's ASGI transport, Flask with its test client.

Each app's workflows run where its docstring says they run: in the FastAPI process (its lifespan),
or in a ``perdure worker`` process importing the example for its registry.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def perdure_worker(target: str, db_url: str) -> Iterator[None]:
    """``perdure worker TARGET --db URL`` run from the examples directory, as its docstring says."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "perdure", "worker", target, "--db", db_url, "--log-level", "warning"],
        cwd=EXAMPLES,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, out


def poll(read: Callable[[], dict[str, Any]], until: Callable[[dict[str, Any]], bool], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = read()
        if until(body):
            return body
        assert time.monotonic() < deadline, f"still {body}"
        time.sleep(0.05)


# --- FastAPI ---------------------------------------------------------------------------------------

fastapi_app = load_example("fastapi_app")


async def wait_for_order(http: httpx.AsyncClient, order_id: str, until: Callable[[dict[str, Any]], bool]) -> Any:
    deadline = time.monotonic() + 30
    while True:
        response = await http.get(f"/orders/{order_id}")
        assert response.status_code == 200, response.text
        if until(response.json()):
            return response.json()
        assert time.monotonic() < deadline, f"order still {response.json()}"
        await asyncio.sleep(0.05)


def http_client(app: Any) -> httpx.AsyncClient:
    """An HTTP client calling the ASGI app in this process (the app's lifespan is run separately)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orders.test")


@contextmanager
def no_worker() -> Iterator[None]:
    yield


@pytest.mark.parametrize("in_process_worker", [True, False], ids=["lifespan-runtime", "separate-worker"])
async def test_fastapi_orders_are_started_reported_and_approved(tmp_path: Path, in_process_worker: bool) -> None:
    db_url = f"sqlite:///{tmp_path / 'orders.db'}"
    app = fastapi_app.create_app(db_url, in_process_worker=in_process_worker)
    workers = no_worker() if in_process_worker else perdure_worker("fastapi_app:registry", db_url)
    transport = httpx.ASGITransport(app=app)
    with workers:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as http,
        ):
            started = [await http.post("/orders", json={"item": "lamp", "quantity": q}) for q in (1, 2)]
            assert [r.status_code for r in started] == [202, 202]
            approved_id, rejected_id = (r.json()["id"] for r in started)
            assert approved_id != rejected_id

            waiting = await wait_for_order(http, approved_id, lambda o: o["step"] == "waiting for approval")
            assert waiting["status"] == "RUNNING"
            await wait_for_order(http, rejected_id, lambda o: o["step"] == "waiting for approval")
            answer = await http.post(f"/orders/{approved_id}/approval", json={"approved": True, "by": "ana"})
            assert answer.status_code == 202
            await http.post(f"/orders/{rejected_id}/approval", json={"approved": False, "by": "bo"})

            done = await wait_for_order(http, approved_id, lambda o: o["status"] == "COMPLETED")
            assert done["output"] == {"outcome": "shipped", "by": "ana", "shipment": "shipped 1 x lamp"}
            rejected = await wait_for_order(http, rejected_id, lambda o: o["status"] == "COMPLETED")
            assert rejected["output"] == {"outcome": "rejected", "by": "bo"}

            late = await http.post(f"/orders/{approved_id}/approval", json={"approved": False, "by": "cy"})
            assert late.status_code == 409
            assert (await http.get("/orders/order-unknown")).status_code == 404
            assert (
                await http.post("/orders/order-unknown/approval", json={"approved": True, "by": "x"})
            ).status_code == 404
            assert (await http.post("/orders", json={"item": "lamp", "quantity": 0})).status_code == 422


# --- Flask -----------------------------------------------------------------------------------------

flask_app = load_example("flask_app")


def test_flask_signups_from_eight_request_threads_run_on_a_separate_worker(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'signups.db'}"
    app = flask_app.create_app(db_url)
    try:
        with perdure_worker("flask_app:registry", db_url):

            def sign_up(n: int) -> dict[str, Any]:
                http = app.test_client()  # one per thread, like a server's request threads
                started = http.post("/signups", json={"email": f"user{n}@example.com"})
                assert started.status_code == 202, started.text
                signup_id = started.json["id"]
                status = lambda: http.get(f"/signups/{signup_id}").json  # noqa: E731
                poll(status, lambda s: s["step"] == "waiting for confirmation")
                assert http.post(f"/signups/{signup_id}/confirm").status_code == 202
                return poll(status, lambda s: s["status"] == "COMPLETED")  # type: ignore[no-any-return]

            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(sign_up, range(8)))

        assert [r["output"] for r in results] == [
            {"email": f"user{n}@example.com", "active": True, "welcome": f"welcome e-mail sent to user{n}@example.com"}
            for n in range(8)
        ]
        http = app.test_client()
        assert http.post("/signups", json={"email": "nope"}).status_code == 422
        assert http.get("/signups/signup-unknown").status_code == 404
        assert http.post(f"/signups/{results[0]['id']}/confirm").status_code == 409
    finally:
        app.extensions["perdure"].close()
