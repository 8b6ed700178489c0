"""Django with Pug, in one file: the middleware runs every request in a Pug context, for
sync and async views alike.

    pug devserver                                     # one terminal: prints what arrives
    python examples/django_app.py runserver 8000      # another (WSGI), or under ASGI:
    uvicorn examples.django_app:application --port 8000
    curl -X POST -H 'X-Pug-Distinct-Id: user_42' localhost:8000/orders/o1

In a real project the settings below go in settings.py, with PugMiddleware after
AuthenticationMiddleware: the logged-in user's pk is then the distinct id. PUG_BASE_URL
and PUG_API_KEY point the client elsewhere (default: the dev server).
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from pug import Pug
from pug.events import Purchase

client = Pug(
    api_key=os.environ.get("PUG_API_KEY", "prv_local"),
    base_url=os.environ.get("PUG_BASE_URL", "http://127.0.0.1:8700"),
)

settings.configure(
    DEBUG=True,
    SECRET_KEY="only-for-this-example",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["pug.integrations.django.PugMiddleware"],
    PUG={
        "client": f"{__name__}.client",  # the client above, by dotted path
        "track_exceptions": True,  # unhandled view exceptions as ErrorOccurred
    },
)


async def checkout(request: HttpRequest, order_id: str) -> HttpResponse:
    client.track(Purchase(product_id="sku_42", amount=49.0, currency="USD"))
    return JsonResponse({"order_id": order_id})


def receipt(request: HttpRequest, order_id: str) -> HttpResponse:
    client.track("receipt.sent", {"order_id": order_id})
    return JsonResponse({"order_id": order_id})


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("tracked as error_occurred, then answered with a 500")


urlpatterns = [
    path("orders/<order_id>", checkout),
    path("orders/<order_id>/receipt", receipt),
    path("broken", broken),
]
application = get_asgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
