"""The SDK's main job, end to end, on this machine: `python examples/demo.py`.

Starts the local dev server (an in-memory Pug serving Connect on 127.0.0.1), points a
`Pug` client at it over the real Connect transport, tracks typed and custom events and
an identify, closes (which delivers everything), then reads back the profile, the
activity feed and a trends query. Needs no account and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import datetime
import io

from pug import Pug
from pug.devserver import DevServer
from pug.events import FeatureUsed, Purchase, Signup
from pug.proto.common.v1 import EventFilter, TimeRange
from pug.proto.shared.insights.v1 import (
    AggregationType,
    EventQuery,
    Granularity,
    InsightQuerySpec,
    InsightType,
)

API_KEY = "prv_demo_key"


def main() -> None:
    received = io.StringIO()  # the dev server's own log of what arrived
    with DevServer(out=received) as server:
        print(f"dev server: Connect on {server.connect_url}")

        pug = Pug(api_key=API_KEY, base_url=server.connect_url)
        pug.track("anon-7f3a", "page.viewed", {"path": "/pricing"})
        pug.identify("user_42", {"name": "Ada", "plan": "pro"}, anonymous_id="anon-7f3a")
        user = pug.bind("user_42")
        user.track(Signup())
        user.track(FeatureUsed(feature_id="export_csv", feature_name="Export to CSV"))
        user.track(Purchase(product_id="sku_42", amount=49.0, currency="USD", quantity=1))
        user.track(Purchase(product_id="sku_7", amount=12.5, currency="USD", quantity=2))
        user.track("report.shared", {"channel": "slack", "recipients": 3})
        pug.close()
        stats = pug.stats()
        print(f"sent {stats.sent} events and {stats.identifies_sent} identify over Connect:")
        for line in received.getvalue().splitlines():
            print(f"  {line}")

        reader = Pug(api_key=API_KEY, base_url=server.connect_url)
        profile = reader.profiles.get_by_external_id("user_42")
        traits = profile.properties.to_dict() if profile.properties else {}
        print(f"profile {profile.external_id}: {traits}")

        feed = reader.activity.feed(distinct_id="user_42", page_size=10)
        kinds = ", ".join(e.kind or "" for e in feed.events)
        print(f"activity feed of user_42 (newest first): {kinds}")

        now = datetime.datetime.now(datetime.UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        spec = InsightQuerySpec(
            insight_type=InsightType.TRENDS,
            events=[
                EventQuery(event=EventFilter(kind="purchase"), aggregation=AggregationType.TOTAL)
            ],
        )
        result = reader.insights.query(
            spec=spec,
            time_range=TimeRange(from_=today, to=today + datetime.timedelta(days=1)),
            granularity=Granularity.DAY,
            timezone="UTC",
        )
        series = result.trends.series if result.trends else []
        counts = [int(p.value or 0) for s in series for p in s.points]
        print(f"trends: {sum(counts)} purchase events today")
        reader.close()


if __name__ == "__main__":
    main()
