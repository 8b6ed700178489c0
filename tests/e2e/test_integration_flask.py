"""`pug.integrations.flask.PugExtension` in a real Flask app through Flask's test client: the
events a request tracks (its view, another before_request hook, a thread it starts, an async
view) arrive once at an in-process FakePug for the request's user and session, and each
request's context ends with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pug
import pytest
import werkzeug.serving
from integrations import Seen, client_on_fake, fake_of, received_once, session
from pug import Pug, TrackedEvent
from pug.integrations.flask import PugExtension

HEADERS = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": session(7)}


@pytest.fixture
def client() -> Iterator[Pug]:
    made = client_on_fake()
    assert isinstance(made, Pug)
    yield made
    made.close()


THREADS = 8


def make_app(
    client: Pug, extension: PugExtension, everyone_in: threading.Barrier | None = None
) -> flask.Flask:
    app = flask.Flask(__name__)
    everyone_in = everyone_in or threading.Barrier(1)

    @app.before_request
    def authenticate() -> None:  # registered before init_app: still in the context
        token = flask.request.headers.get("Authorization")
        if token:
            pug.set_context(distinct_id=token.removeprefix("Bearer "))
        client.track("request.authenticated", {"n": flask.request.path.rsplit("/")[-1]})

    @app.get("/order/<int:n>")
    def order(n: int) -> dict[str, str | None]:
        client.track("order.viewed", {"n": n})
        work = contextvars.copy_context().run
        thread = threading.Thread(target=work, args=(client.track, "order.exported", {"n": n}))
        thread.start()
        thread.join()
        current = pug.current_context()
        assert current is not None
        return {"distinct_id": current.distinct_id, "session_id": current.session_id}

    @app.get("/async/<int:n>")
    async def async_order(n: int) -> dict[str, int]:
        await asyncio.sleep(0.001)
        client.track("order.viewed", {"n": n})
        await asyncio.to_thread(client.track, "order.exported", {"n": n})
        return {"n": n}

    @app.get("/who/<int:n>")
    def who(n: int) -> dict[str, str | None]:
        """Read the context, wait until every concurrent request is in, read it again."""
        before = pug.current_context()
        everyone_in.wait(20)
        after = pug.current_context()
        assert before is not None and after is not None
        return {"before": before.distinct_id, "after": after.distinct_id}

    @app.get("/fail/<int:n>")
    def fail(n: int) -> str:
        raise RuntimeError("card declined for order 7")

    @app.get("/missing/<int:n>")
    def missing(n: int) -> str:
        flask.abort(404)

    extension.init_app(app)
    return app


def request_events(n: int, distinct_id: str, session_id: str | None) -> list[Seen]:
    events = [Seen(k, distinct_id, session_id, n) for k in ("order.exported", "order.viewed")]
    events.append(Seen("request.authenticated", distinct_id, session_id, str(n)))
    return sorted(events, key=repr)


def test_a_requests_events_arrive_once_with_its_user_and_session(client: Pug) -> None:
    http = make_app(client, PugExtension()).test_client()
    assert http.get("/order/7", headers=HEADERS).json == {
        "distinct_id": "user_7",
        "session_id": session(7),
    }
    assert http.get("/async/8", headers=HEADERS).json == {"n": 8}
    expected = request_events(7, "user_7", session(7)) + request_events(8, "user_7", session(7))
    assert received_once(fake_of(client)) == sorted(expected, key=repr)
    assert pug.current_context() is None  # each request's context ended with it


def test_each_request_has_its_own_context(client: Pug) -> None:
    http = make_app(client, PugExtension()).test_client()
    http.get("/order/1", headers={"Authorization": "Bearer user_from_token"})
    http.get("/order/2", headers={"X-Pug-Distinct-Id": "user_2"})
    expected = request_events(1, "user_from_token", client.session_id) + request_events(
        2, "user_2", client.session_id
    )
    assert received_once(fake_of(client)) == sorted(expected, key=repr)


def test_the_distinct_id_callable_and_header_names_are_options(client: Pug) -> None:
    extension = PugExtension(
        distinct_id=lambda request: request.cookies.get("uid"), session_id_header="X-Session"
    )
    http = make_app(client, extension).test_client()
    http.set_cookie("uid", "user_9")
    http.get("/order/9", headers={"X-Session": session(9)})
    assert received_once(fake_of(client)) == request_events(9, "user_9", session(9))


def test_unhandled_exceptions_are_tracked_when_asked(client: Pug) -> None:
    app = make_app(client, PugExtension(client=client, track_exceptions=True))
    http = app.test_client()
    assert http.get("/fail/7", headers=HEADERS).status_code == 500
    assert http.get("/missing/7", headers=HEADERS).status_code == 404  # not an error
    (error,) = fake_of(client).events("error_occurred")
    assert (error.distinct_id, error.session_id) == ("user_7", session(7))
    assert error.properties["errorCode"] == "RuntimeError"
    assert error.properties["message"] == "card declined for order 7"
    assert error.properties["stack"].endswith("RuntimeError: card declined for order 7\n")


def test_exceptions_are_not_tracked_by_default(client: Pug) -> None:
    http = make_app(client, PugExtension(client=client)).test_client()
    assert http.get("/fail/7", headers=HEADERS).status_code == 500
    assert fake_of(client).events("error_occurred") == []


def test_before_send_is_where_the_error_is_redacted() -> None:
    def redact(event: TrackedEvent) -> TrackedEvent:
        if event.kind == "error_occurred":
            del event.properties["stack"]
            event.properties["message"] = "[redacted]"
        return event

    client = client_on_fake(before_send=redact)
    assert isinstance(client, Pug)
    try:
        app = make_app(client, PugExtension(client=client, track_exceptions=True))
        assert app.test_client().get("/fail/7", headers=HEADERS).status_code == 500
        (error,) = fake_of(client).events("error_occurred")
        assert error.properties == {
            "errorCode": "RuntimeError",
            "message": "[redacted]",
            "severity": "error",
            "unhandled": True,
        }
    finally:
        client.close()


def test_concurrent_requests_in_threads_never_see_another_users_id(client: Pug) -> None:
    """A threaded WSGI server: every request is held inside its view until all 8 are."""
    app = make_app(client, PugExtension(), threading.Barrier(THREADS))
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"

        def ask(n: int) -> Any:
            headers = {"X-Pug-Distinct-Id": f"user_{n}"}
            return httpx.get(f"{url}/who/{n}", headers=headers, timeout=30).json()

        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(ask, range(THREADS)))
    finally:
        server.shutdown()
        serving.join(10)
    assert answers == [{"before": f"user_{n}", "after": f"user_{n}"} for n in range(THREADS)]
