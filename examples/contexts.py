"""Contexts, client-level properties and the flushing decorator: every documented form,
run against the in-memory fake server (no network). `mypy --strict` checks this file.

    python examples/contexts.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import pug
from pug import AsyncPug, Pug
from pug.events import Purchase
from pug.testing import FakePug

fake = FakePug()
client = Pug(api_key="prv_example", transport=fake, properties={"service": "checkout"})
fake.attach(client)  # fake.events() flushes the client first


def handle_request(user_id: str, session_id: str) -> None:
    with pug.context(distinct_id=user_id, session_id=session_id, properties={"plan": "pro"}):
        client.track("order.completed", {"amount": 9.5})  # the context's distinct id
        client.track("order.completed", properties={"amount": 9.5})
        client.track(Purchase(product_id="p1", amount=49.0, currency="USD"))
        client.track(Purchase(product_id="p2", amount=5.0), {"coupon": "SPRING"})
        client.track("user_7", "order.refunded")  # an explicit distinct id wins
        client.track("user_7", "order.refunded", {"amount": 9.5})
        client.track("order.refunded", distinct_id="user_8")
        with pug.context(properties={"step": "payment"}):  # nested: merged, inner wins
            client.track("payment.started")
        view = pug.current_context()
        assert view is not None and view.distinct_id == user_id


def log_in_halfway() -> None:
    with pug.context(session_id="01938c2a-0000-7000-8000-000000000001"):
        client.track("anon-7f3a", "page.viewed")
        pug.set_context(distinct_id="user_42", properties={"logged_in": True})
        client.track("dashboard.viewed")  # sent for user_42


@pug.context(distinct_id="cron", properties={"job": "nightly"})
def nightly_job() -> int:
    client.track("job.finished", {"rows": 1200})
    return 1200


@pug.context(distinct_id="worker")
async def async_job() -> None:
    await asyncio.sleep(0)
    client.track("job.finished")


@client.flushing(timeout=2.0)
def lambda_handler(event: dict[str, Any], context: object) -> dict[str, int]:
    client.track("user_42", "lambda.invoked")
    return {"statusCode": 200}


async def async_app() -> None:
    async with AsyncPug(api_key="prv_example", transport=fake) as async_client:

        @async_client.flushing(timeout=2.0)
        async def handler() -> str:
            async with pug.context(distinct_id="user_9"):
                async_client.track("async.handled")
            return "ok"

        assert await handler() == "ok"


if __name__ == "__main__":
    handle_request("user_42", "01938c2a-0000-7000-8000-0000000000aa")
    log_in_halfway()
    assert nightly_job() == 1200
    asyncio.run(async_job())
    assert lambda_handler({}, None) == {"statusCode": 200}
    asyncio.run(async_app())
    for event in fake.events():
        print(f"{event.kind:<18} {event.distinct_id:<10} {dict(sorted(event.properties.items()))}")
    client.close()
