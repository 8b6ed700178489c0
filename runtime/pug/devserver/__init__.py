"""`pug devserver`: a local Pug for development, serving `FakePug` on 127.0.0.1.

Connect over HTTP/1.1 (what a real Pug server serves on a plain port) and gRPC over h2c,
both answering from one in-memory `FakePug`. Each received event is printed as one line
(kind, distinct id, properties) and optionally appended to a JSONL file. API keys are
checked the way the real server does: `x-api-key` must be present and look like a Pug key
(`prv_…`, or `pub_…` for ingestion only), or equal the one key given on the command line.
Its Connect port also serves a page (`/`): what arrived, live, with what the real server
would refuse and why, and the profiles built.

- `dispatch`: what both servers do with a call (the key check, the fake, the printer);
- `connect`: Connect over HTTP/1.1; `grpc`: gRPC over h2c (grpclib);
- `feed`: what arrived, in a bounded store, as batched updates for the page; `page`: the
  page's routes (static/ holds its HTML, JS and CSS); `catalog`: the well-known events as
  the page describes them;
- `server`: `DevServer` (both, in background threads) and the `pug devserver` command.
"""

from pug.devserver.server import DevServer, main

__all__ = ["DevServer", "main"]
