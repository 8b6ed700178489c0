"""`pug.integrations.asgi.PugMiddleware` in real Starlette and FastAPI apps under uvicorn on
127.0.0.1, driven over HTTP: the events a request tracks (its endpoint, a middleware inside
that awaits before calling on, background tasks in a thread and on the loop, an asyncio task
the endpoint spawns) arrive once at an in-process FakePug, for the request's user and
session; 100 concurrent requests never see each other's user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import fastapi
import httpx
import pug
import pytest
from integrations import Seen, client_on_fake, fake_of, received_once, session, wait_for_events
from pug import AsyncPug, Pug
from pug.integrations.asgi import PugMiddleware, Scope
from servers import UvicornServer
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Client = Pug | AsyncPug
FRAMEWORKS = ["starlette", "fastapi"]
# Strong references to the tasks endpoints spawn and leave running (asyncio keeps weak ones).
_spawned: set[asyncio.Task[None]] = set()


@pytest.fixture(params=["Pug", "AsyncPug"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    made = client_on_fake(Pug if request.param == "Pug" else AsyncPug)
    yield made
    if isinstance(made, AsyncPug):
        asyncio.run(made.close())
    else:
        made.close()


# ---- the apps: the same endpoints in Starlette and in FastAPI ----------------------------


class Handlers:
    """What each app's routes do, tracking with `client` (never passing a distinct id)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def authenticate(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """A user's middleware inside Pug's: awaits (a token lookup) before calling on,
        and names the user it found."""
        await asyncio.sleep(0.001)
        token = request.headers.get("authorization")
        if token:
            pug.set_context(distinct_id=token.removeprefix("Bearer "))
        self.client.track("request.authenticated", {"n": request.url.path.rsplit("/")[-1]})
        return await call_next(request)

    def order(self, n: int, background: BackgroundTasks) -> dict[str, Any]:
        self.client.track("order.viewed", {"n": n})
        background.add_task(self.export_in_thread, n)
        background.add_task(self.follow_up, n)
        task = asyncio.get_running_loop().create_task(self.spawned(n))
        _spawned.add(task)
        task.add_done_callback(_spawned.discard)
        current = pug.current_context()
        assert current is not None
        return {"distinct_id": current.distinct_id, "session_id": current.session_id}

    def export_in_thread(self, n: int) -> None:  # sync: Starlette runs it in a thread
        self.client.track("order.exported", {"n": n})

    async def follow_up(self, n: int) -> None:  # after the response, on the loop
        await asyncio.sleep(0.001)
        self.client.track("order.followed_up", {"n": n})

    async def spawned(self, n: int) -> None:
        await asyncio.sleep(0.01)
        self.client.track("order.spawned", {"n": n})

    @staticmethod
    def fail() -> None:
        raise RuntimeError("card declined for order 7")

    async def who(self, n: int, everyone_in: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        """Read the context, wait until every concurrent request is in, read it again."""
        before = pug.current_context()
        await everyone_in()
        after = pug.current_context()
        assert before is not None and after is not None
        self.client.track("who.checked", {"n": n})
        return {"n": n, "before": before.distinct_id, "after": after.distinct_id}


class Gate:
    """Holds each request until `size` requests have come in (within a deadline)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrived = 0
        self.open = asyncio.Event()

    async def __call__(self) -> None:
        self.arrived += 1
        if self.arrived == self.size:
            self.open.set()
        await asyncio.wait_for(self.open.wait(), 20)


def starlette_app(client: Client, gate: Gate, **options: Any) -> Starlette:
    handlers = Handlers(client)

    async def order(request: Request) -> Response:
        background = BackgroundTasks()
        body = handlers.order(int(request.path_params["n"]), background)
        return JSONResponse(body, background=background)

    async def fail(request: Request) -> Response:
        handlers.fail()
        return Response()

    async def who(request: Request) -> Response:
        return JSONResponse(await handlers.who(int(request.path_params["n"]), gate))

    return Starlette(
        routes=[
            Route("/order/{n}", order),
            Route("/fail/{n}", fail),
            Route("/who/{n}", who),
        ],
        middleware=[  # the first is the outermost
            Middleware(PugMiddleware, client=client, **options),
            Middleware(BaseHTTPMiddleware, dispatch=handlers.authenticate),
        ],
    )


def fastapi_app(client: Client, gate: Gate, **options: Any) -> fastapi.FastAPI:
    handlers = Handlers(client)
    app = fastapi.FastAPI()

    @app.get("/order/{n}")
    async def order(n: int, background: fastapi.BackgroundTasks) -> dict[str, Any]:
        return handlers.order(n, background)

    @app.get("/fail/{n}")
    async def fail(n: int) -> None:
        handlers.fail()

    @app.get("/who/{n}")
    async def who(n: int) -> dict[str, Any]:
        return await handlers.who(n, gate)

    app.add_middleware(BaseHTTPMiddleware, dispatch=handlers.authenticate)
    app.add_middleware(PugMiddleware, client=client, **options)  # the last added is outermost
    return app


def serve(
    framework: str, client: Client, gate: Gate | None = None, **options: Any
) -> UvicornServer:
    make = starlette_app if framework == "starlette" else fastapi_app
    return UvicornServer(make(client, gate or Gate(1), **options), backlog=256)


def request_events(n: int, distinct_id: str, session_id: str | None) -> list[Seen]:
    """What one GET /order/{n} tracks: in the middleware, the endpoint, both background
    tasks and the task the endpoint spawns."""
    kinds = ["order.exported", "order.followed_up", "order.spawned", "order.viewed"]
    events = [Seen(kind, distinct_id, session_id, n) for kind in kinds]
    events.append(Seen("request.authenticated", distinct_id, session_id, str(n)))
    return sorted(events, key=repr)


# ---- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_requests_events_arrive_once_with_its_user_and_session(
    framework: str, client: Client
) -> None:
    headers = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": session(7)}
    with serve(framework, client) as server:
        answer = httpx.get(f"{server.url}/order/7", headers=headers, timeout=10)
        assert answer.json() == {"distinct_id": "user_7", "session_id": session(7)}
        assert wait_for_events(fake_of(client), 5) == request_events(7, "user_7", session(7))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_user_set_by_an_awaiting_middleware_reaches_the_endpoint_and_background_tasks(
    framework: str, client: Client
) -> None:
    headers = {"Authorization": "Bearer user_from_token", "X-Pug-Session-Id": session(8)}
    with serve(framework, client) as server:
        answer = httpx.get(f"{server.url}/order/8", headers=headers, timeout=10)
        assert answer.json() == {"distinct_id": "user_from_token", "session_id": session(8)}
        expected = request_events(8, "user_from_token", session(8))
        assert wait_for_events(fake_of(client), 5) == expected


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_distinct_id_callable_and_header_names_are_options(
    framework: str, client: Client
) -> None:
    async def from_cookie(scope: Scope) -> str | None:
        await asyncio.sleep(0)
        cookies = dict(scope["headers"]).get(b"cookie", b"").decode()
        return cookies.removeprefix("uid=") or None

    options = {"distinct_id": from_cookie, "session_id_header": "X-Session"}
    with serve(framework, client, **options) as server:
        headers = {"Cookie": "uid=user_9", "X-Session": session(9)}
        httpx.get(f"{server.url}/order/9", headers=headers, timeout=10).raise_for_status()
        assert wait_for_events(fake_of(client), 5) == request_events(9, "user_9", session(9))


def test_a_session_header_that_is_not_a_uuid_is_left_out(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": "session_7"}
    with serve("starlette", client) as server:
        httpx.get(f"{server.url}/order/7", headers=headers, timeout=10).raise_for_status()
        expected = request_events(7, "user_7", client.session_id)
        assert wait_for_events(fake_of(client), 5) == expected
    assert "session id header ignored: not a UUID: 'session_7'" in caplog.messages


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unhandled_exceptions_are_tracked_as_error_occurred_when_asked(
    framework: str, client: Client
) -> None:
    headers = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": session(7)}
    with serve(framework, client, track_exceptions=True) as server:
        answer = httpx.get(f"{server.url}/fail/7", headers=headers, timeout=10)
    assert answer.status_code == 500
    (error,) = fake_of(client).events("error_occurred")
    assert (error.distinct_id, error.session_id) == ("user_7", session(7))
    properties = dict(error.properties)
    stack = properties.pop("stack")
    assert properties == {
        "errorCode": "RuntimeError",
        "message": "card declined for order 7",
        "severity": "error",
        "unhandled": True,
    }
    assert stack.startswith("Traceback (most recent call last")
    assert 'in fail\n    raise RuntimeError("card declined for order 7")' in stack
    assert stack.endswith("RuntimeError: card declined for order 7\n")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_exceptions_are_not_tracked_by_default(framework: str, client: Client) -> None:
    with serve(framework, client) as server:
        answer = httpx.get(f"{server.url}/fail/7", headers={"X-Pug-Distinct-Id": "u"}, timeout=10)
    assert answer.status_code == 500
    assert received_once(fake_of(client)) == [
        Seen("request.authenticated", "u", client.session_id, "7")
    ]


def test_track_exceptions_needs_a_client() -> None:
    with pytest.raises(ValueError, match="needs a client"):
        PugMiddleware(Starlette(), track_exceptions=True)


CONCURRENT = 100


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_concurrent_requests_never_see_another_users_id(framework: str, client: Client) -> None:
    """Every request is held inside its endpoint until all 100 are: a context shared
    between requests (or leaking from one to the next) would show another user there."""

    async def send_all(url: str) -> list[Any]:
        limits = httpx.Limits(max_connections=CONCURRENT)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.get(f"{url}/who/{n}", headers={"X-Pug-Distinct-Id": f"user_{n}"})
                    for n in range(CONCURRENT)
                )
            )
        return [answer.json() for answer in answers]

    with serve(framework, client, Gate(CONCURRENT)) as server:
        answers = asyncio.run(send_all(server.url))
    expected = [{"n": n, "before": f"user_{n}", "after": f"user_{n}"} for n in range(CONCURRENT)]
    assert answers == expected
    checked = [s for s in received_once(fake_of(client)) if s.kind == "who.checked"]
    assert sorted((s.n, s.distinct_id) for s in checked) == [
        (n, f"user_{n}") for n in range(CONCURRENT)
    ]
