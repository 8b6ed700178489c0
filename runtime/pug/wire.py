"""`pug.wire`, kept for the code that imports it (tests, benchmarks, transports): the
stateless protobuf writer and reader, which live in `pug._wire.protobuf`.

Encoding an event for the queue is `pug._ingest.encode.EventEncoder`'s job alone.
"""

from pug._wire import protobuf as _protobuf
from pug._wire.protobuf import *  # noqa: F403

# The names transports used before the reader became public.
_fields = _protobuf.read_fields
_read_varint = _protobuf._read_varint
