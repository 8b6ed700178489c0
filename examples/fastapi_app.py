"""FastAPI with Pug: every request runs in a Pug context, so the endpoint, its dependencies
and its background tasks track without passing the user's id around.

    pug devserver                                 # one terminal: prints what arrives
    uvicorn examples.fastapi_app:app --port 8000  # another, from the repository root
    curl -X POST -H 'Authorization: Bearer user_42' localhost:8000/orders/o1

PUG_BASE_URL and PUG_API_KEY point the client elsewhere (default: the dev server).
"""

from __future__ import annotations

import os
from typing import Annotated

import pug
from fastapi import BackgroundTasks, Depends, FastAPI, Header
from pug import Pug
from pug.events import Purchase
from pug.integrations.asgi import PugMiddleware

client = Pug(
    api_key=os.environ.get("PUG_API_KEY", "prv_local"),
    base_url=os.environ.get("PUG_BASE_URL", "http://127.0.0.1:8700"),
)

app = FastAPI()
# Distinct id and session id from the X-Pug-Distinct-Id / X-Pug-Session-Id headers, until
# the app knows better (current_user below); unhandled exceptions as ErrorOccurred.
app.add_middleware(PugMiddleware, client=client, track_exceptions=True)


def current_user(authorization: Annotated[str | None, Header()] = None) -> str | None:
    """The app's own authentication: once it knows the user, the request tracks for them."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    user_id = authorization.removeprefix("Bearer ")  # a real app looks the token up
    pug.set_context(distinct_id=user_id)
    return user_id


def send_receipt(order_id: str) -> None:
    # A background task, run after the response: still in the request's context.
    client.track("receipt.sent", {"order_id": order_id})


@app.post("/orders/{order_id}")
async def checkout(
    order_id: str,
    background: BackgroundTasks,
    user_id: Annotated[str | None, Depends(current_user)],
) -> dict[str, str | None]:
    client.track(Purchase(product_id="sku_42", amount=49.0, currency="USD"))
    background.add_task(send_receipt, order_id)
    return {"order_id": order_id, "user_id": user_id}


@app.get("/broken")
async def broken() -> None:
    raise RuntimeError("tracked as error_occurred, then answered with a 500")
