"""Screenshots of the built documentation site, to look at by eye (run by hand).

    just docs && python docs/screenshots/take.py

Serves site/ on 127.0.0.1 and saves, in this folder, the home page (home.png) and
the reference of `Pug.track` (pug-track.png), taken by Debian's headless Chromium
(`apt-get install chromium`) through Playwright (`pip install playwright`).
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
SITE = HERE.parents[1] / "site"
CHROMIUM = "/usr/bin/chromium"
# No network beyond 127.0.0.1, nothing fetched in the background.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1200}


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    if not (SITE / "index.html").exists():
        raise SystemExit(f"{SITE} has no index.html: build it first (`just docs`)")
    handler = functools.partial(Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{base}/", wait_until="networkidle")
            page.screenshot(path=HERE / "home.png")
            # The anchor mkdocstrings gives the method: its heading starts the shot.
            track = f"{base}/reference/clients/#pug.client.Pug.track"
            page.goto(track, wait_until="networkidle")
            page.screenshot(path=HERE / "pug-track.png")
            browser.close()
    finally:
        server.shutdown()
    print(f"wrote {HERE / 'home.png'} and {HERE / 'pug-track.png'}")


if __name__ == "__main__":
    main()
