"""Framework integrations, each an optional extra: `pug.integrations.django`, `.asgi`
(Starlette, FastAPI, any ASGI app), `.flask` and `.celery`.

Each gives every request (or task) a `pug.context`, so code under it tracks without
passing the user's id around, and can track unhandled exceptions as `ErrorOccurred`
(off by default). What they share is in `_common`.
"""
