"""Flask with Pug: every request runs in a Pug context, so views track without passing the
user's id around.

    pug devserver                                     # one terminal: prints what arrives
    flask --app examples/flask_app.py run --port 8000 # another, from the repository root
    curl -X POST --cookie user_id=user_42 localhost:8000/orders/o1

PUG_BASE_URL and PUG_API_KEY point the client elsewhere (default: the dev server).
"""

from __future__ import annotations

import os

import flask
from pug import Pug
from pug.events import Purchase
from pug.integrations.flask import PugExtension

client = Pug(
    api_key=os.environ.get("PUG_API_KEY", "prv_local"),
    base_url=os.environ.get("PUG_BASE_URL", "http://127.0.0.1:8700"),
)


def user_id(request: flask.Request) -> str | None:
    """Who the request is for: here a cookie; flask-login's `current_user.get_id()` works
    too (this runs inside the request). None falls back to nobody: track() then needs an
    explicit distinct id."""
    return request.cookies.get("user_id") or request.headers.get("X-Pug-Distinct-Id")


app = flask.Flask(__name__)
PugExtension(app, client, distinct_id=user_id, track_exceptions=True)


@app.post("/orders/<order_id>")
def checkout(order_id: str) -> dict[str, str]:
    client.track(Purchase(product_id="sku_42", amount=49.0, currency="USD"))
    client.track("receipt.sent", {"order_id": order_id})
    return {"order_id": order_id}


@app.get("/broken")
def broken() -> str:
    raise RuntimeError("tracked as error_occurred, then answered with a 500")
