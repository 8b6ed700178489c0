"""`pug.integrations.django.PugMiddleware` in a real Django project (auth, sessions, sqlite),
through Django's test clients (sync and async) and under uvicorn on 127.0.0.1 (ASGI).

The events a request tracks (its view, a thread or an asyncio task it starts, a user's async
middleware that awaits before calling on) arrive once at an in-process FakePug, for the
logged-in user's pk (else the header) and the session header.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import django
import httpx
import pug
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient
from django.test import Client as DjangoClient
from django.test.utils import override_settings
from django.urls import path
from django.utils.decorators import async_only_middleware
from integrations import Seen, client_on_fake, fake_of, received_once, session, wait_for_events
from pug import Pug
from pug.integrations.django import PugMiddleware
from servers import UvicornServer

HEADERS = {"X-Pug-Session-Id": session(7)}
_client: Pug | None = None  # what the views track with: the test's
_spawned: set[asyncio.Task[None]] = set()


def tracker() -> Pug:
    assert _client is not None
    return _client


def context_json() -> JsonResponse:
    current = pug.current_context()
    assert current is not None
    return JsonResponse({"distinct_id": current.distinct_id, "session_id": current.session_id})


# ---- the project: views, a user's middleware, urls (ROOT_URLCONF is this module) ---------


def sync_view(request: HttpRequest, n: int) -> HttpResponse:
    tracker().track("page.viewed", {"n": n})
    # A thread the request starts, with a copy of its context.
    work = contextvars.copy_context().run
    thread = threading.Thread(target=work, args=(tracker().track, "export.done", {"n": n}))
    thread.start()
    thread.join()
    return context_json()


async def async_view(request: HttpRequest, n: int) -> HttpResponse:
    tracker().track("page.viewed", {"n": n})
    await asyncio.to_thread(tracker().track, "export.done", {"n": n})
    task = asyncio.create_task(spawned(n))  # left running after the response
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)
    return context_json()


async def async_fail_view(request: HttpRequest, n: int) -> HttpResponse:
    await asyncio.sleep(0)
    raise RuntimeError("card declined for order 7")


async def spawned(n: int) -> None:
    await asyncio.sleep(0.01)
    tracker().track("report.spawned", {"n": n})


def fail_view(request: HttpRequest, n: int) -> HttpResponse:
    raise RuntimeError("card declined for order 7")


def missing_view(request: HttpRequest, n: int) -> HttpResponse:
    raise Http404("no such order")


@async_only_middleware
def awaiting_auth(
    get_response: Callable[[HttpRequest], Awaitable[HttpResponse]],
) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    """A user's async middleware after Pug's: awaits (a token lookup) before calling on,
    and names the user a bearer token is for."""

    async def middleware(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0.001)
        token = request.headers.get("Authorization")
        if token:
            pug.set_context(distinct_id=token.removeprefix("Bearer "))
        tracker().track("request.authenticated", {"n": request.path.rsplit("/")[-1]})
        return await get_response(request)

    return middleware


def distinct_id_from_query(request: HttpRequest) -> str | None:
    return request.GET.get("uid")


urlpatterns = [
    path("sync/<int:n>", sync_view),
    path("async/<int:n>", async_view),
    path("fail/<int:n>", fail_view),
    path("async-fail/<int:n>", async_fail_view),
    path("missing/<int:n>", missing_view),
]


@pytest.fixture(scope="module")
def user_pk(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Django set up once (a sqlite file: requests run in several threads), with a user."""
    if not settings.configured:
        database = tmp_path_factory.mktemp("django") / "db.sqlite3"
        settings.configure(
            SECRET_KEY="pug-tests",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[
                "django.contrib.auth",
                "django.contrib.contenttypes",
                "django.contrib.sessions",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "pug.integrations.django.PugMiddleware",
                f"{__name__}.awaiting_auth",
            ],
            USE_TZ=True,
        )
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username="ada")
    return str(user.pk)


@pytest.fixture
def client(user_pk: str) -> Iterator[Pug]:
    global _client
    _client = client_on_fake()
    assert isinstance(_client, Pug)
    with override_settings(PUG={"client": _client}):
        yield _client
    _client.close()
    _client = None


def logged_in_django_client(**kwargs: Any) -> DjangoClient:
    from django.contrib.auth.models import User

    http = DjangoClient(**kwargs)
    http.force_login(User.objects.get(username="ada"))
    return http


def sync_events(n: int, distinct_id: str, session_id: str | None) -> list[Seen]:
    events = [Seen(kind, distinct_id, session_id, n) for kind in ("export.done", "page.viewed")]
    events.append(Seen("request.authenticated", distinct_id, session_id, str(n)))
    return sorted(events, key=repr)


def async_events(n: int, distinct_id: str, session_id: str | None) -> list[Seen]:
    spawned = Seen("report.spawned", distinct_id, session_id, n)
    return sorted([*sync_events(n, distinct_id, session_id), spawned], key=repr)


# ---- Django's test clients ---------------------------------------------------------------


def test_sync_view_logged_in_user_is_the_distinct_id(client: Pug, user_pk: str) -> None:
    answer = logged_in_django_client().get("/sync/7", headers=HEADERS)
    assert answer.json() == {"distinct_id": user_pk, "session_id": session(7)}
    assert received_once(fake_of(client)) == sync_events(7, user_pk, session(7))


def test_anonymous_request_takes_the_header(client: Pug) -> None:
    headers = {"X-Pug-Distinct-Id": "anon-3f2a", "X-Pug-Session-Id": session(7)}
    answer = DjangoClient().get("/sync/7", headers=headers)
    assert answer.json() == {"distinct_id": "anon-3f2a", "session_id": session(7)}
    assert received_once(fake_of(client)) == sync_events(7, "anon-3f2a", session(7))


def test_async_view_in_the_async_test_client(client: Pug, user_pk: str) -> None:
    from django.contrib.auth.models import User

    http = AsyncClient()
    http.force_login(User.objects.get(username="ada"))  # aforce_login: Django 5+ only

    async def run() -> Any:
        answer = await http.get("/async/7", headers=HEADERS)
        await asyncio.gather(*_spawned)
        return answer.json()

    assert asyncio.run(run()) == {"distinct_id": user_pk, "session_id": session(7)}
    assert received_once(fake_of(client)) == async_events(7, user_pk, session(7))


def test_the_distinct_id_callable_is_a_dotted_path(client: Pug) -> None:
    options = {"client": client, "distinct_id": f"{__name__}.distinct_id_from_query"}
    with override_settings(PUG=options):
        DjangoClient().get("/sync/7?uid=user_from_query", headers=HEADERS)
    assert received_once(fake_of(client)) == sync_events(7, "user_from_query", session(7))


def test_unknown_settings_are_refused(client: Pug) -> None:
    with override_settings(PUG={"clinet": "myapp.pug"}), pytest.raises(ImproperlyConfigured):
        PugMiddleware(lambda request: HttpResponse())


def test_unhandled_view_exceptions_are_tracked_when_asked(client: Pug, user_pk: str) -> None:
    with override_settings(PUG={"client": client, "track_exceptions": True}):
        http = logged_in_django_client(raise_request_exception=False)
        assert http.get("/fail/7", headers=HEADERS).status_code == 500
        assert http.get("/missing/7", headers=HEADERS).status_code == 404  # not an error
    (error,) = fake_of(client).events("error_occurred")
    assert (error.distinct_id, error.session_id) == (user_pk, session(7))
    assert error.properties["errorCode"] == "RuntimeError"
    assert error.properties["message"] == "card declined for order 7"
    assert error.properties["unhandled"] is True
    assert error.properties["stack"].endswith("RuntimeError: card declined for order 7\n")


def test_exceptions_are_not_tracked_by_default(client: Pug) -> None:
    http = logged_in_django_client(raise_request_exception=False)
    assert http.get("/fail/7").status_code == 500
    assert fake_of(client).events("error_occurred") == []


# ---- under uvicorn (ASGI) ----------------------------------------------------------------


def session_cookie() -> dict[str, str]:
    http = logged_in_django_client()
    name = settings.SESSION_COOKIE_NAME
    return {name: http.cookies[name].value}


def test_async_view_under_uvicorn(client: Pug, user_pk: str) -> None:
    from django.core.handlers.asgi import ASGIHandler

    with UvicornServer(ASGIHandler()) as server:
        answer = httpx.get(
            f"{server.url}/async/7", headers=HEADERS, cookies=session_cookie(), timeout=10
        )
        assert answer.json() == {"distinct_id": user_pk, "session_id": session(7)}
        assert wait_for_events(fake_of(client), 4) == async_events(7, user_pk, session(7))


def test_sync_view_under_uvicorn_with_a_user_set_by_an_awaiting_middleware(client: Pug) -> None:
    from django.core.handlers.asgi import ASGIHandler

    headers = {**HEADERS, "Authorization": "Bearer user_from_token"}
    with UvicornServer(ASGIHandler()) as server:
        answer = httpx.get(f"{server.url}/sync/7", headers=headers, timeout=10)
    assert answer.json() == {"distinct_id": "user_from_token", "session_id": session(7)}
    assert received_once(fake_of(client)) == sync_events(7, "user_from_token", session(7))


def test_the_async_middleware_runs_a_sync_callable_off_the_loop(client: Pug) -> None:
    from django.core.handlers.asgi import ASGIHandler

    options = {"client": client, "distinct_id": distinct_id_from_query}
    with override_settings(PUG=options), UvicornServer(ASGIHandler()) as server:
        url = f"{server.url}/async/7?uid=user_from_query"
        httpx.get(url, headers=HEADERS, timeout=10).raise_for_status()
        expected = async_events(7, "user_from_query", session(7))
        assert wait_for_events(fake_of(client), 4) == expected


def test_exceptions_under_uvicorn_are_tracked_in_the_requests_context(client: Pug) -> None:
    from django.core.handlers.asgi import ASGIHandler

    headers = {**HEADERS, "X-Pug-Distinct-Id": "user_7"}
    options = {"client": client, "track_exceptions": True}
    with override_settings(PUG=options), UvicornServer(ASGIHandler()) as server:
        for view in ("fail", "async-fail"):
            answer = httpx.get(f"{server.url}/{view}/7", headers=headers, timeout=10)
            assert answer.status_code == 500
    errors = fake_of(client).events("error_occurred")
    assert [(e.distinct_id, e.session_id) for e in errors] == [("user_7", session(7))] * 2
    assert [e.properties["message"] for e in errors] == ["card declined for order 7"] * 2
