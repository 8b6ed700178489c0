"""The dev server's page, on its Connect port: the HTML and its static files, the live
stream of what arrived (server-sent events), and JSON for the rest.

    GET  /                      the page (static/index.html; static/page.js, page.css)
    GET  /api/stream?kind=&distinct_id=   text/event-stream from `Feed.updates`
    GET  /api/events?kind=&distinct_id=   the newest entries the feed holds, as JSON
    GET  /api/catalog           the well-known events (`catalog.catalog`)
    GET  /api/profiles          the newest profiles' external ids
    GET  /api/profile?external_id=        traits, merged anonymous ids, events
    POST /api/clear             FakePug.reset() and Feed.clear()

Bound to a loopback address, the page answers only requests whose Host is a loopback name,
so that a web page elsewhere cannot read it through DNS rebinding; clear needs a header a
cross-site form cannot send.
"""

from __future__ import annotations

import http.server
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pug.devserver.catalog import catalog
from pug.devserver.feed import Feed, Filter
from pug.testing import FakePug

STATIC = Path(__file__).parent / "static"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
MAX_PROFILES = 500  # external ids listed (the newest)
MAX_PROFILE_EVENTS = 200  # events shown with a profile (the newest)
CLEAR_HEADER = "x-pug-page"  # sent by the page's clear button


class Page:
    """The routes of the page, for the Connect handler's GET and POST."""

    def __init__(self, fake: FakePug, feed: Feed, host: str) -> None:
        self.fake = fake
        self.feed = feed
        self.check_host = host in _LOOPBACK_NAMES

    def get(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if not self._host_ok(handler):
            return
        url = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/":
            self._file(handler, "index.html")
        elif path == "/favicon.ico":
            _send(handler, 204, "image/x-icon", b"")
        elif path.startswith("/static/"):
            self._file(handler, path.removeprefix("/static/"))
        elif path == "/api/stream":
            self._stream(handler, _filter(query))
        elif path == "/api/events":
            want = _filter(query)
            _json(handler, 200, {"entries": self.feed.recent(want), "stats": self.feed.stats()})
        elif path == "/api/catalog":
            _json(handler, 200, catalog())
        elif path == "/api/profiles":
            ids = list(self.fake.profiles)[-MAX_PROFILES:]
            _json(handler, 200, {"external_ids": ids[::-1]})
        elif path == "/api/profile":
            self._profile(handler, query.get("external_id", ""))
        else:
            _json(handler, 404, {"error": f"no page at {path}"})

    def post(self, handler: http.server.BaseHTTPRequestHandler) -> bool:
        """Answer a POST to one of the page's paths (True), or leave it to Connect."""
        if not handler.path.startswith("/api/"):
            return False
        if not self._host_ok(handler):
            return True
        if handler.path != "/api/clear":
            _json(handler, 404, {"error": f"no page at {handler.path}"})
        elif handler.headers.get(CLEAR_HEADER) != "clear":
            _json(handler, 403, {"error": f"clear needs the header {CLEAR_HEADER}: clear"})
        else:
            self.fake.reset()
            self.feed.clear()
            _json(handler, 200, {"cleared": True})
        return True

    def _host_ok(self, handler: http.server.BaseHTTPRequestHandler) -> bool:
        host = urlsplit("//" + (handler.headers.get("host") or "")).hostname
        if not self.check_host or host in _LOOPBACK_NAMES:
            return True
        _json(handler, 403, {"error": "the page answers only on a loopback host name"})
        return False

    def _file(self, handler: http.server.BaseHTTPRequestHandler, name: str) -> None:
        # Only the files of static/ itself: no path from the request reaches the disk.
        files = {p.name: p for p in STATIC.iterdir() if p.suffix in _CONTENT_TYPES}
        if name not in files:
            _json(handler, 404, {"error": f"no static file {name!r}"})
            return
        _send(handler, 200, _CONTENT_TYPES[files[name].suffix], files[name].read_bytes())

    def _stream(self, handler: http.server.BaseHTTPRequestHandler, want: Filter) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-store")
        handler.send_header("connection", "close")  # the stream ends with the connection
        handler.end_headers()
        handler.close_connection = True
        try:
            for message in self.feed.updates(want):
                handler.wfile.write(message)
        except OSError:
            pass  # the page went away

    def _profile(self, handler: http.server.BaseHTTPRequestHandler, external_id: str) -> None:
        try:
            profile = self.fake.profile(external_id)
        except KeyError:
            _json(handler, 404, {"error": f"no profile with external id {external_id!r}"})
            return
        merged = self.fake.merged_ids(external_id)
        events = [e for i in [external_id, *merged] for e in self.fake.events(distinct_id=i)]
        events.sort(key=lambda e: e.occur_time, reverse=True)
        summary = profile.activity
        _json(
            handler,
            200,
            {
                "external_id": external_id,
                "id": profile.id,
                "traits": profile.properties.to_dict() if profile.properties else {},
                "merged_ids": merged,
                "create_time": profile.create_time,
                "update_time": profile.update_time,
                "total_events": summary.total_events if summary else len(events),
                "events": [
                    {
                        "kind": e.kind,
                        "distinct_id": e.distinct_id,
                        "event_id": e.event_id,
                        "session_id": e.session_id,
                        "occur_time": e.occur_time,
                        "properties": e.properties,
                    }
                    for e in events[:MAX_PROFILE_EVENTS]
                ],
            },
        )


def _filter(query: dict[str, str]) -> Filter:
    return Filter(query.get("distinct_id") or None, query.get("kind") or None)


def _json(handler: http.server.BaseHTTPRequestHandler, status: int, data: object) -> None:
    body = json.dumps(data, default=_jsonable).encode()
    _send(handler, status, "application/json", body)


def _jsonable(value: object) -> object:
    isoformat = getattr(value, "isoformat", None)
    return isoformat().replace("+00:00", "Z") if isoformat else str(value)


def _send(
    handler: http.server.BaseHTTPRequestHandler, status: int, content_type: str, body: bytes
) -> None:
    handler.send_response(status)
    handler.send_header("content-type", content_type)
    handler.send_header("content-length", str(len(body)))
    handler.send_header("cache-control", "no-store")
    handler.end_headers()
    handler.wfile.write(body)
