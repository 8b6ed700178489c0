"""Ingestion: how `track()` and `identify()` become requests to the server.

One direction, one module each: `validate` (the server's rules on ids and kinds) →
`encode` (EventEncoder: framed bytes, every cache) → `queue` (EventQueue: bounds,
overflow, flush waiters, stats; or `spool`'s SpoolQueue, the same on disk) → `worker`
(thread + loop: deliver, retry) → transport.
`core` wires them for a client; `lifecycle` closes clients at exit and resets them in a
forked child.
"""
