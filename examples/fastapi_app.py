"""Orders over HTTP with FastAPI: one durable workflow per request, approved by a later request.

    POST /orders                  {"item": "lamp", "quantity": 2}  ->  202 {"id": "order-…"}
    GET  /orders/{id}             the workflow's status, custom status, output and error
    POST /orders/{id}/approval    {"approved": true, "by": "ana"}  ->  202, raises the Approval event

The request handlers only write rows through a ``Client``: starting a workflow or raising an
event returns as soon as it is stored, and the workflow runs on whichever worker takes it. Here a
``Runtime`` runs inside the web process, started and stopped by the app's lifespan::

    pip install fastapi uvicorn
    ORDERS_DB=sqlite:///orders.db uvicorn fastapi_app:app

To run workers separately (more of them, on other hosts, deployed on their own), turn the
in-process runtime off and start ``perdure worker`` processes on the same store; they import this
module for its registry only::

    ORDERS_DB=postgresql://app@db/orders ORDERS_IN_PROCESS_WORKER=0 uvicorn fastapi_app:app
    perdure worker fastapi_app:registry --db postgresql://app@db/orders
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, open_provider

registry = Registry()

APPROVAL_DAYS = 3


@registry.activity("ReserveStock")
async def reserve_stock(ctx: ActivityContext, order: dict[str, Any]) -> str:
    return f"reserved {order['quantity']} x {order['item']}"


@registry.activity("Ship")
async def ship(ctx: ActivityContext, order: dict[str, Any]) -> str:
    return f"shipped {order['quantity']} x {order['item']}"


@registry.orchestration("Order")
async def order_workflow(ctx: OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    await ctx.call_activity("ReserveStock", order)
    ctx.set_custom_status("waiting for approval")
    approval = ctx.wait_for_event("Approval")
    expiry = ctx.create_timer(APPROVAL_DAYS * 86400)
    if await ctx.when_any([approval, expiry]) is expiry:
        return {"outcome": "expired"}
    decision = approval.result()
    if not decision["approved"]:
        return {"outcome": "rejected", "by": decision["by"]}
    ctx.set_custom_status("shipping")
    return {"outcome": "shipped", "by": decision["by"], "shipment": await ctx.call_activity("Ship", order)}


class OrderRequest(BaseModel):
    item: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class ApprovalRequest(BaseModel):
    approved: bool
    by: str = Field(min_length=1)


router = APIRouter()


def get_client(request: Request) -> Client:
    """The app's client, opened by its lifespan."""
    client: Client = request.app.state.client
    return client


ClientDep = Annotated[Client, Depends(get_client)]


@router.post("/orders", status_code=202)
async def create_order(order: OrderRequest, client: ClientDep) -> dict[str, str]:
    instance_id = await client.start_orchestration(f"order-{uuid.uuid4().hex}", "Order", order.model_dump())
    return {"id": instance_id}


@router.get("/orders/{instance_id}")
async def order_status(instance_id: str, client: ClientDep) -> dict[str, Any]:
    state = await client.get_status(instance_id)
    if state is None:
        raise HTTPException(404, f"no order {instance_id}")
    return {
        "id": instance_id,
        "status": state.status.value,
        "step": state.custom_status,
        "output": state.output,
        "error": None if state.error is None else state.error.message,
    }


@router.post("/orders/{instance_id}/approval", status_code=202)
async def approve_order(instance_id: str, approval: ApprovalRequest, client: ClientDep) -> dict[str, str]:
    state = await client.get_status(instance_id)
    if state is None:
        raise HTTPException(404, f"no order {instance_id}")
    if state.status.is_terminal:
        raise HTTPException(409, f"order {instance_id} is already {state.status.value}")
    await client.raise_event(instance_id, "Approval", approval.model_dump())
    return {"id": instance_id}


def create_app(db_url: str, *, in_process_worker: bool = True) -> FastAPI:
    """The web app on the store at ``db_url``, with a runtime in the process unless told otherwise."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        provider = await open_provider(db_url)
        app.state.client = Client(provider)
        try:
            if in_process_worker:
                async with Runtime(provider, registry):  # shuts down gracefully when the server stops
                    yield
            else:
                yield
        finally:
            await provider.close()

    app = FastAPI(title="orders", lifespan=lifespan)
    app.include_router(router)
    return app


app = create_app(
    os.environ.get("ORDERS_DB", "sqlite:///orders.db"),
    in_process_worker=os.environ.get("ORDERS_IN_PROCESS_WORKER", "1") != "0",
)
