"""The dev server's page in a real browser: headless Chromium (Debian's `chromium`) driven
by Playwright, against a real `DevServer` that a real `Pug` client sends to.

Without chromium these tests are skipped, except in CI (CI=true), where they fail: `.ci/run`
installs it."""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pug import BatchConfig, Pug, PugError
from pug.devserver import DevServer
from pug.events import Purchase
from pug.proto.common.v1 import PropertyValue
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.testing import FakePug
from pug.transports.base import BATCH_CREATE

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT = 10_000  # ms Playwright waits for what the page should show (it returns at once)


def _browser_or_skip() -> Any:
    missing = None if CHROMIUM.exists() else f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api
    except ImportError:
        missing = missing or "playwright is not installed (the dev extra)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: CI must run the browser tests (.ci/run installs chromium)")
        pytest.skip(f"{missing}: apt-get install chromium to run the page's browser tests")
    return playwright.sync_api


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    api = _browser_or_skip()
    with api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user data dir
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer(out=io.StringIO()) as running:
        yield running


@pytest.fixture
def page(browser: Any, server: DevServer) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT)
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(server.page_url)
    expect(tab.locator("#status")).to_have_text("live")
    yield tab
    tab.close()
    assert errors == []  # no script error on the page


def client_for(server: DevServer) -> Pug:
    return Pug(api_key="prv_page", base_url=server.connect_url, batch=BatchConfig(max_wait=60))


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def test_a_tracked_event_appears_within_a_second_with_its_catalog_class(
    server: DevServer, page: Any
) -> None:
    client = client_for(server)
    client.track("user_1", Purchase(product_id="sku_1", amount=9.5, currency="EUR"))
    assert client.flush(10)
    [stored] = server.fake.events()
    card = page.locator(".entry.event").first
    expect(card).to_have_attribute("data-kind", "purchase", timeout=1000)
    expect(card.locator(".kind")).to_have_text("purchase")
    expect(card.locator(".class")).to_have_text("pug.events.Purchase")
    expect(card.locator("button.who")).to_have_text("user_1")
    meta = card.locator(".meta dd")
    expect(meta).to_have_text(
        [re.compile(r"^20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$"), stored.session_id or "",
         stored.event_id]
    )  # fmt: skip
    rows = card.locator("table.props").first.locator("tr")
    expect(rows).to_have_text(
        [
            re.compile(r'^productId\s*"sku_1"\s*str$'),
            re.compile(r"^amount\s*9\.5\s*float, > 0\.0$"),
            re.compile(r'^currency\s*"EUR"\s*str, pattern'),
        ]
    )
    # The catalog's description of the class and of every field, folded under the event.
    card.locator("details.catalog summary").click()
    expect(card.locator("details.catalog summary")).to_contain_text(
        "A user completed a purchase and an order was placed"
    )
    expect(card.locator("details.catalog tr").first).to_have_text(
        re.compile(r"^productId\s*str\s*optional")
    )
    client.close()


def refused_batch() -> bytes:
    def event(n: int, kind: str) -> Event:
        return Event(
            event_id=f"0190a5f0-0000-7000-8000-00000000000{n}",
            distinct_id="curl_user",
            kind=kind,
            session_id="0190a5f0-0000-7000-8000-000000000009",
            occur_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
            custom_properties={"via": PropertyValue(string_value="curl")},
        )

    return bytes(BatchCreateRequest(events=[event(1, "fine.kind"), event(2, "Bad Kind <b>!")]))


def test_a_refused_batch_shows_the_event_and_the_rule_it_breaks(
    server: DevServer, page: Any
) -> None:
    body = refused_batch()
    with pytest.raises(PugError) as expected:  # what the real server's rules say
        FakePug().handle(BATCH_CREATE, body)
    [violation] = expected.value.details or []
    assert isinstance(violation, dict)
    request = urllib.request.Request(
        f"{server.connect_url}/{BATCH_CREATE}",
        data=body,
        headers={"content-type": "application/proto", "x-api-key": "prv_page"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 400
    card = page.locator(".entry.rejected")
    expect(card.locator(".code")).to_have_text("invalid_argument")
    expect(card.locator(".muted").first).to_have_text(
        "batch of 2 events: the real server refuses all of it"
    )
    expect(card.locator(".violations li")).to_have_text(
        f"{violation['field']} broke {violation['rule_id']}: {violation['message']}"
    )
    assert violation["field"] == "events[1].kind"
    # The event it names, as text (the markup in its kind is not markup on the page).
    expect(card.locator(".named h3")).to_have_text("events[1]: Bad Kind <b>! curl_user")
    assert card.locator(".named b").count() == 0
    expect(card.locator(".named .props tr")).to_have_text([re.compile(r'^via\s*"curl"$')])
    assert server.fake.events() == []


def test_the_profile_view_shows_traits_merged_ids_and_events(server: DevServer, page: Any) -> None:
    client = client_for(server)
    client.track("anon-7f3a", "page.viewed", {"path": "/pricing"})
    assert client.flush(10)
    client.identify("user_42", {"name": "Ada", "plan": "pro"}, anonymous_id="anon-7f3a")
    client.track("user_42", "report.shared", {"channel": "slack"})
    assert client.flush(10)
    client.close()
    card = page.locator(".entry.event[data-kind='report.shared']")
    card.locator("button.who").click()
    side = page.locator("#side")
    expect(side.locator(".external-id")).to_have_text("user_42")
    expect(side.locator("table.props tr")).to_have_text(
        [re.compile(r'^name\s*"Ada"$'), re.compile(r'^plan\s*"pro"$')]
    )
    expect(side.locator(".merged li")).to_have_text(["anon-7f3a"])
    expect(side.locator(".profile-events .kind")).to_have_text(["report.shared", "page.viewed"])


def test_filters_by_distinct_id_and_by_kind(server: DevServer, page: Any) -> None:
    client = client_for(server)
    for user, kind in [("u1", "a.one"), ("u2", "a.one"), ("u1", "b.two"), ("u2", "b.two")]:
        client.track(user, kind)
    assert client.flush(10)
    client.close()
    entries = page.locator(".entry")
    expect(entries).to_have_count(4)
    page.fill("#filter-distinct-id", "u1")
    page.click("#filters button[type=submit]")
    expect(entries.locator("button.who")).to_have_text(["u1", "u1"])
    expect(entries.locator(".kind")).to_have_text(["b.two", "a.one"])
    page.fill("#filter-distinct-id", "")
    page.fill("#filter-kind", "a.one")
    page.click("#filters button[type=submit]")
    expect(entries.locator("button.who")).to_have_text(["u2", "u1"])
    # New events are filtered too.
    tracker = client_for(server)
    tracker.track("u3", "a.one")
    tracker.track("u3", "c.three")
    assert tracker.flush(10)
    tracker.close()
    expect(entries.locator("button.who")).to_have_text(["u3", "u2", "u1"])
    page.click("#filter-reset")
    expect(entries).to_have_count(6)


def test_clear_empties_the_page_and_the_server(server: DevServer, page: Any) -> None:
    client = client_for(server)
    client.identify("user_1", {"plan": "pro"})
    client.track("user_1", "x.y")
    assert client.flush(10)
    client.close()
    expect(page.locator(".entry")).to_have_count(1)
    expect(page.locator("#count-received")).to_have_text("1")
    page.click("#clear-button")
    expect(page.locator(".entry")).to_have_count(0)
    expect(page.locator("#count-received")).to_have_text("0")
    expect(page.locator("#empty")).to_be_visible()
    assert server.fake.events() == []
    assert server.fake.profiles == {}


def test_clear_needs_the_pages_header(server: DevServer) -> None:
    # A cross-site form can POST but not set a header: without it, nothing is cleared.
    client = client_for(server)
    client.track("user_1", "x.y")
    assert client.flush(10)
    client.close()
    request = urllib.request.Request(f"{server.connect_url}/api/clear", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 403
    assert len(server.fake.events()) == 1


def test_the_page_answers_only_to_a_loopback_host(server: DevServer) -> None:
    # DNS rebinding: another site's name pointed at 127.0.0.1 must not read the page.
    url = f"{server.connect_url}/api/events"
    request = urllib.request.Request(url, headers={"host": "evil.example:8700"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 403
    with urllib.request.urlopen(url, timeout=10) as ok:
        assert json.load(ok)["entries"] == []


def test_the_page_stays_usable_while_20000_events_arrive(server: DevServer, page: Any) -> None:
    client = Pug(api_key="prv_page", base_url=server.connect_url, batch=BatchConfig(max_size=500))
    sent = threading.Event()

    def burst() -> None:
        for n in range(20_000):
            client.track(f"user_{n % 50}", "load.tick", {"n": n})
        client.flush(120)
        sent.set()

    sender = threading.Thread(target=burst)
    sender.start()
    try:
        notice = page.locator("#sampling")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("arrived since the last update; showing the newest 50.")
        # A click still works while they arrive: the profile view opens.
        page.locator(".entry button.who").first.click()
        expect(page.locator("#side .external-id")).to_have_text(re.compile(r"^user_\d+$"))
    finally:
        sender.join(180)
    assert sent.is_set()
    expect(page.locator("#count-received")).to_have_text("20,000")
    # The list keeps the newest 300. The burst may be over in fewer updates than fill it
    # (each shows the newest 50): seven more, of 50 events each, take it past its bound.
    for step in range(1, 8):
        for n in range(50):
            client.track("user_more", "load.more", {"n": n})
        assert client.flush(10)
        expect(page.locator("#count-received")).to_have_text(f"{20_000 + 50 * step:,}")
    client.close()
    expect(page.locator(".entry")).to_have_count(300)  # the list's bound
    expect(page.locator(".entry").first).to_contain_text("load.more")
    assert len(server.fake.events()) == 20_350
