"""The SDK's main job in miniature: typed events → a BatchCreateRequest → bytes → decoded.

Run it with `python examples/demo.py`. It builds the request Pug's ingestion endpoint
receives, from well-known typed events and a custom one, serializes it with the
generated stubs, parses the bytes back and prints what a server would decode.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable
from typing import Any

from pug._version import __version__
from pug.event import PugEvent, Variant, WireProperties, event_properties
from pug.events import FeatureUsed, Purchase, Signup
from pug.proto.common.v1 import PropertyValue
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event

AUTO_PROPERTIES = {"$lib": "pug-python", "$sdkVersion": __version__, "$platform": "server"}


# One constructor per variant: a PropertyValue gets exactly one member of its oneof.
PROPERTY_VALUE: dict[Variant, Callable[[Any], PropertyValue]] = {
    Variant.STRING: lambda v: PropertyValue(string_value=v),
    Variant.INT: lambda v: PropertyValue(int_value=v),
    Variant.DOUBLE: lambda v: PropertyValue(double_value=v),
    Variant.BOOL: lambda v: PropertyValue(bool_value=v),
    Variant.TIMESTAMP: lambda v: PropertyValue(timestamp_value=v),
}


def wire_event(distinct_id: str, kind: str, props: WireProperties, session: str) -> Event:
    now = datetime.datetime.now(datetime.UTC)
    return Event(
        event_id=str(uuid.uuid4()),
        distinct_id=distinct_id,
        kind=kind,
        occur_time=now,
        session_id=session,
        auto_properties={k: PropertyValue(string_value=v) for k, v in AUTO_PROPERTIES.items()},
        custom_properties={k: PROPERTY_VALUE[t](v) for k, (t, v) in props.items()},
    )


def main() -> None:
    session = str(uuid.uuid4())
    typed: list[PugEvent] = [
        Signup(),
        Purchase(product_id="sku_42", amount=49, currency="USD", quantity=1),
        FeatureUsed(feature_id="export_csv", feature_name="Export to CSV"),
    ]
    events = [wire_event("user_42", *event_properties(e), session) for e in typed]
    events.append(
        wire_event("user_42", "report.shared", {"channel": (Variant.STRING, "slack")}, session)
    )
    body = bytes(BatchCreateRequest(events=events))
    print(f"BatchCreateRequest: {len(events)} events, {len(body)} bytes on the wire\n")
    decoded = BatchCreateRequest.parse(body)
    for event in decoded.events:
        custom = {k: v.to_dict() for k, v in event.custom_properties.items()}
        print(f"{event.kind:<14} {event.distinct_id}  {json.dumps(custom)}")


if __name__ == "__main__":
    main()
