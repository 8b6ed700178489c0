"""Independent Pug servers for the end-to-end transport tests (tests/e2e/test_transports_e2e.py).

Neither server shares code with the SDK: messages are Google protobuf classes compiled from
catalog/proto (the `google_pb2` fixture), and the protocols are spoken by other people's
implementations.

- `ConnectServer`: the `connectrpc` package's ASGI application (Connect, HTTP/1.1) under
  uvicorn in a background thread, with connectrpc's google.protobuf codec. A small ASGI
  middleware in front of it can answer HTTP 503 with an HTML page, as a proxy would.
- `GrpcServer`: Google's `grpcio` with generic handlers, on an h2c port and, given a
  certificate, on a TLS port too.
- `RecordingHTTPServer`: a bare HTTP/1.1 server that records paths; for URL layout tests.
- `UvicornServer`: any ASGI app under uvicorn on 127.0.0.1 (what `ConnectServer` runs on;
  the framework integration tests serve their apps with it).

Both RPC servers delegate to a `FakePug`: it records every call (decoded request, headers,
the client's timeout) and answers as the test scripted it. Besides the SDK's write methods
they serve the read methods of tests/e2e/test_reads_e2e.py (`READ_METHODS`), answering with the
responses a test queued (`answer_next`) and failing with error details where told.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import uvicorn
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from protobuf.wkt import Any as ConnectAny
from protoc_helpers import GoogleMessages
from pug._wire import protobuf as pb
from pug.transports.base import BATCH_CREATE, IDENTIFY

LIST = "shared.profiles.v1.ProfilesService/List"
GET = "shared.profiles.v1.ProfilesService/Get"
GET_BY_EXTERNAL_ID = "shared.profiles.v1.ProfilesService/GetByExternalId"
DELETE_DATA_SUBJECT = "shared.profiles.v1.ProfilesService/DeleteDataSubject"
ACTIVITY_FEED = "shared.activity.v1.ActivityService/GetActivityFeed"
INSIGHTS_QUERY = "shared.insights.v1.InsightsService/Query"
READ_METHODS = (GET, GET_BY_EXTERNAL_ID, DELETE_DATA_SUBJECT, ACTIVITY_FEED, INSIGHTS_QUERY)
METHODS = (BATCH_CREATE, IDENTIFY, LIST, *READ_METHODS)

# A stalled call waits for the client to give up; this only bounds a client that never does.
STALL_LIMIT = 10.0
HTML_503 = b"<html><body><h1>503 Service Unavailable</h1><p>upstream overloaded</p></body></html>"


class Refusal(Exception):
    """A scripted error answer: `code` is the Connect code name (`unavailable`, ...);
    `details` are messages sent as error details (Connect JSON, gRPC status details)."""

    def __init__(self, code: str, message: str, details: tuple[Message, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


STALL = "stall"  # a script entry: keep the call waiting past the client's deadline


@dataclass(frozen=True)
class Delay:
    """A script entry: answer after `seconds` (unless the client's deadline comes first)."""

    seconds: float


# ---- google.rpc messages, without googleapis-common-protos -------------------------------


def _google_rpc_pool() -> descriptor_pool.DescriptorPool:
    """google.rpc.Status and google.rpc.BadRequest, declared as googleapis declares them
    (google/rpc/status.proto, error_details.proto): the gRPC error-details envelope and
    the detail a server attaches to invalid_argument. googleapis-common-protos is not
    installed, and these few fields are all the tests need."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED

    status = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto",
        package="google.rpc",
        dependency=["google/protobuf/any.proto"],
        syntax="proto3",
    )
    message = status.message_type.add(name="Status")
    message.field.add(name="code", number=1, type=field.TYPE_INT32, label=optional)
    message.field.add(name="message", number=2, type=field.TYPE_STRING, label=optional)
    message.field.add(
        name="details",
        number=3,
        type=field.TYPE_MESSAGE,
        label=repeated,
        type_name=".google.protobuf.Any",
    )
    pool.Add(status)

    details = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/error_details.proto", package="google.rpc", syntax="proto3"
    )
    bad_request = details.message_type.add(name="BadRequest")
    violation = bad_request.nested_type.add(name="FieldViolation")
    violation.field.add(name="field", number=1, type=field.TYPE_STRING, label=optional)
    violation.field.add(name="description", number=2, type=field.TYPE_STRING, label=optional)
    bad_request.field.add(
        name="field_violations",
        number=1,
        type=field.TYPE_MESSAGE,
        label=repeated,
        type_name=".google.rpc.BadRequest.FieldViolation",
    )
    pool.Add(details)
    return pool


_GOOGLE_RPC = _google_rpc_pool()
RpcStatus = message_factory.GetMessageClass(_GOOGLE_RPC.FindMessageTypeByName("google.rpc.Status"))
BadRequest = message_factory.GetMessageClass(
    _GOOGLE_RPC.FindMessageTypeByName("google.rpc.BadRequest")
)


def type_url(message: Message) -> str:
    """How an Any names the type of `message`, as both protocols send it."""
    return "type.googleapis.com/" + message.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Call:
    """One call as the server saw it."""

    method: str  # "sdk.events.v1.EventsService/BatchCreate"
    request: Message | None  # None: refused before the body was read (HTTP 503)
    headers: Mapping[str, str]  # lowercase names; gRPC: the invocation metadata
    timeout: float | None  # seconds the client allowed, as the server computed it
    outcome: str  # "ok", "stall", "http 503" or the code of a Refusal


@dataclass(frozen=True)
class RpcMethod:
    """A method's message classes, looked up in the compiled protos (not hard-coded)."""

    service: str
    name: str
    input: type[Message]
    output: type[Message]
    server_streaming: bool


def rpc_method(messages: GoogleMessages, method: str) -> RpcMethod:
    service, name = method.split("/")
    descriptor = messages.pool.FindServiceByName(service).methods_by_name[name]
    return RpcMethod(
        service=service,
        name=name,
        input=messages[descriptor.input_type.full_name],
        output=messages[descriptor.output_type.full_name],
        server_streaming=descriptor.server_streaming,
    )


class FakePug:
    """The behaviour shared by both RPC servers: record, check the key, follow the script.

    Handlers run on server threads while tests read from theirs, hence the lock.
    """

    def __init__(self, messages: GoogleMessages) -> None:
        self.messages = messages
        self.methods = {method: rpc_method(messages, method) for method in METHODS}
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget calls and script: each test starts from a server that accepts everything."""
        with self._lock:
            self._calls: list[Call] = []
            self._script: deque[Refusal | str] = deque()
            self._http_503_left = 0
            self.required_key: str | None = None
            self.list_pages: list[Message] = []
            self.list_error: tuple[int, Refusal] | None = None  # (after n pages, error)
            self._answers: dict[str, deque[Message]] = {}

    # ---- scripting ---------------------------------------------------------------------

    def fail_next(
        self,
        times: int,
        code: str,
        message: str = "scripted failure",
        *,
        details: tuple[Message, ...] = (),
    ) -> None:
        """The next `times` calls are answered with the Connect/gRPC error `code` (and the
        error `details`, if given)."""
        with self._lock:
            self._script.extend(Refusal(code, message, details) for _ in range(times))

    def delay_next(self, times: int, seconds: float) -> None:
        """The next `times` calls are answered after `seconds`: a slow server."""
        with self._lock:
            self._script.extend(Delay(seconds) for _ in range(times))

    def answer_next(self, method: str, *responses: Message) -> None:
        """Successful calls of the unary `method` get these responses, one per call, in
        order; once they are used up, an empty response."""
        with self._lock:
            self._answers.setdefault(method, deque()).extend(responses)

    def stall_next(self, times: int) -> None:
        """The next `times` calls get no answer until the client's deadline has passed."""
        with self._lock:
            self._script.extend(STALL for _ in range(times))

    def answer_503_next(self, times: int) -> None:
        """The next `times` HTTP requests get a proxy's 503 HTML page (Connect server only)."""
        with self._lock:
            self._http_503_left += times

    # ---- what tests read ---------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def delivered_events(self) -> list[Message]:
        """The events of every BatchCreate that was answered with success, in order."""
        return [
            event
            for call in self.calls(BATCH_CREATE)
            if call.outcome == "ok"
            for event in call.request.events  # type: ignore[union-attr]
        ]

    # ---- what handlers call ------------------------------------------------------------

    def take_http_503(self, method: str, headers: Mapping[str, str]) -> bool:
        """Whether this HTTP request is to be refused with a 503 page (and record it)."""
        with self._lock:
            if self._http_503_left == 0:
                return False
            self._http_503_left -= 1
            self._calls.append(Call(method, None, dict(headers), None, "http 503"))
            return True

    def receive(
        self, method: str, request: Message, headers: Mapping[str, str], timeout: float | None
    ) -> float:
        """Record a call; raise its scripted Refusal, or return how many seconds to hold
        it before answering: 0.0 (false) at once, STALL_LIMIT for a stall."""
        with self._lock:
            action: Refusal | Delay | str | None = None
            if self.required_key is not None and headers.get("x-api-key") != self.required_key:
                # What a Pug server answers for a missing or unknown key.
                action = Refusal("unauthenticated", "invalid API key")
            elif self._script:
                action = self._script.popleft()
            if isinstance(action, Refusal):
                outcome = action.code
            elif action == STALL:
                outcome = "stall"
            else:
                outcome = "ok"  # at once, or after a Delay: answered either way
            self._calls.append(Call(method, request, dict(headers), timeout, outcome))
        if isinstance(action, Refusal):
            raise action
        if isinstance(action, Delay):
            return action.seconds
        return STALL_LIMIT if action == STALL else 0.0

    def reply(self, method: str, request: Message) -> Message:
        """The success answer of a unary method: the next queued one, or a default."""
        with self._lock:
            queued = self._answers.get(method)
            if queued:
                return queued.popleft()
        output = self.methods[method].output
        if method == BATCH_CREATE:
            return output(accepted=len(request.events), dropped=0)  # type: ignore[attr-defined]
        return output()

    def stream_replies(self) -> Iterator[Message]:
        """The List pages, raising the scripted mid-stream error after its page."""
        with self._lock:
            pages, error = list(self.list_pages), self.list_error
        for index, page in enumerate(pages):
            if error is not None and error[0] == index:
                raise error[1]
            yield page
        if error is not None and error[0] >= len(pages):
            raise error[1]


# ---- Connect: connectrpc's ASGI application under uvicorn -------------------------------


class _ConnectApp(ConnectASGIApplication[FakePug]):
    @property
    def path(self) -> str:
        # Only used when mounted inside another ASGI app; the endpoints carry full paths.
        return "/"


@contextlib.contextmanager
def _as_connect_error() -> Iterator[None]:
    try:
        yield
    except Refusal as refusal:
        # connectrpc packs details from its own protobuf runtime's Any; given one already
        # packed, it sends type and bytes as they are ({"type": ..., "value": base64}).
        details = [
            ErrorDetail(ConnectAny(type_url=type_url(d), value=d.SerializeToString()))
            for d in refusal.details
        ]
        raise ConnectError(Code(refusal.code), refusal.message, details) from None


def _connect_call(ctx: RequestContext[Any, Any]) -> tuple[dict[str, str], float | None]:
    headers = dict(ctx.request_headers.items())
    timeout_ms = headers.get("connect-timeout-ms")
    return headers, (int(timeout_ms) / 1000 if timeout_ms else None)


def _connect_endpoint(fake: FakePug, method: str) -> Any:
    rpc = fake.methods[method]
    info = MethodInfo(
        name=rpc.name,
        service_name=rpc.service,
        input=rpc.input,
        output=rpc.output,
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM if rpc.server_streaming else StreamType.UNARY,
    )

    async def stall_if_told(request: Message, ctx: RequestContext[Any, Any]) -> None:
        headers, timeout = _connect_call(ctx)
        hold = fake.receive(method, request, headers, timeout)
        if hold:
            # connectrpc enforces connect-timeout-ms: it cancels this sleep at the deadline.
            await asyncio.sleep(hold)

    async def unary(request: Message, ctx: RequestContext[Any, Any]) -> Message:
        with _as_connect_error():
            await stall_if_told(request, ctx)
            return fake.reply(method, request)

    async def server_stream(
        request: Message, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[Message]:
        with _as_connect_error():
            await stall_if_told(request, ctx)
            for page in fake.stream_replies():
                yield page

    if rpc.server_streaming:
        return Endpoint.server_stream(info, server_stream)
    return Endpoint.unary(info, unary)


class _Http503Middleware:
    """Stands in for a proxy that is out of upstreams: 503 with an HTML page, no Connect."""

    def __init__(self, app: Any, fake: FakePug) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if self.fake.take_http_503(scope["path"].lstrip("/"), headers):
                # Read the body first so the connection stays reusable for the retry.
                while (await receive()).get("more_body", False):
                    pass
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [(b"content-type", b"text/html; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": HTML_503})
                return
        await self.app(scope, receive, send)


def _listening_socket(backlog: int = 64) -> socket.socket:
    """A socket already listening on a free port of 127.0.0.1.

    Clients may connect at once: the kernel queues them until the server accepts, so
    nobody has to wait for the server thread to report that it started.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released): connections to
    it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornServer:
    """Any ASGI app under uvicorn (h11) on 127.0.0.1, in a background thread: the SDK's
    test servers, and the framework apps of the integration tests. `backlog` bounds the
    connections waiting to be accepted (a test opening 100 at once needs more than 64)."""

    def __init__(self, app: Any, *, certfile: str | None = None, backlog: int = 64) -> None:
        self._socket = _listening_socket(backlog)
        port = self._socket.getsockname()[1]
        self.url = f"{'https' if certfile else 'http'}://127.0.0.1:{port}"
        config = uvicorn.Config(
            app,
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            ssl_certfile=certfile,
            timeout_graceful_shutdown=1,
            backlog=backlog,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> UvicornServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True  # uvicorn checks it every 0.1 s
        self._thread.join(10)
        self._socket.close()


class ConnectServer(UvicornServer):
    """`connectrpc` serving `METHODS` on 127.0.0.1 (TLS when given a cert file)."""

    def __init__(self, fake: FakePug, *, certfile: str | None = None) -> None:
        self.fake = fake
        app = _ConnectApp(
            service=fake,
            endpoints=lambda fake: {"/" + m: _connect_endpoint(fake, m) for m in METHODS},
            codecs=[google_protobuf_binary_codec()],
        )
        super().__init__(_Http503Middleware(app, fake), certfile=certfile)

    def __enter__(self) -> ConnectServer:
        super().__enter__()
        return self


# ---- gRPC: grpcio with generic handlers --------------------------------------------------


def _grpc_status(code: str) -> grpc.StatusCode:
    # Connect spells gRPC's CANCELLED with one L; every other name matches.
    return grpc.StatusCode.CANCELLED if code == "canceled" else grpc.StatusCode[code.upper()]


def _grpc_stall_if_told(
    fake: FakePug, method: str, request: Message, context: grpc.ServicerContext
) -> None:
    headers = dict(context.invocation_metadata())  # type: ignore[arg-type]
    hold = fake.receive(method, request, headers, context.time_remaining())
    if hold:
        # Wait `hold` seconds, or less if grpcio ends the RPC first (the client's deadline
        # passes, or it cancels).
        ended = threading.Event()
        if context.add_callback(ended.set):
            ended.wait(hold)


def _grpc_abort(context: grpc.ServicerContext, refusal: Refusal) -> NoReturn:
    """End the call with the refusal's status; details go in `grpc-status-details-bin`,
    a google.rpc.Status, as grpcio-status's `abort_with_status` would send them."""
    status = _grpc_status(refusal.code)
    if refusal.details:
        envelope = RpcStatus(code=status.value[0], message=refusal.message)
        for detail in refusal.details:
            envelope.details.add(type_url=type_url(detail), value=detail.SerializeToString())
        context.set_trailing_metadata((("grpc-status-details-bin", envelope.SerializeToString()),))
    context.abort(status, refusal.message)


def _grpc_handler(fake: FakePug, method: str) -> grpc.RpcMethodHandler:
    rpc = fake.methods[method]

    def unary(request: Message, context: grpc.ServicerContext) -> Message:
        try:
            _grpc_stall_if_told(fake, method, request, context)
            if not context.is_active():
                # The client gave up while the call was held: grpcio discards whatever is
                # returned, so leave the scripted answer to the next call.
                return rpc.output()
            return fake.reply(method, request)
        except Refusal as refusal:
            _grpc_abort(context, refusal)

    def server_stream(request: Message, context: grpc.ServicerContext) -> Iterator[Message]:
        try:
            _grpc_stall_if_told(fake, method, request, context)
            yield from fake.stream_replies()
        except Refusal as refusal:
            _grpc_abort(context, refusal)

    make = (
        grpc.unary_stream_rpc_method_handler
        if rpc.server_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(
        server_stream if rpc.server_streaming else unary,  # type: ignore[arg-type]
        request_deserializer=rpc.input.FromString,
        response_serializer=rpc.output.SerializeToString,
    )


class GrpcServer:
    """grpcio serving `METHODS` on an h2c port (`url`) and, given a key and certificate
    chain (PEM), on a TLS port (`tls_url`)."""

    def __init__(self, fake: FakePug, *, tls_key_and_chain: tuple[bytes, bytes] | None) -> None:
        self.fake = fake
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in METHODS:
            service, name = method.split("/")
            by_service.setdefault(service, {})[name] = _grpc_handler(fake, method)
        handlers = [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]
        # Stalled calls hold a worker each: leave room for them and the calls after.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=handlers)
        self.url = f"http://127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self.tls_url: str | None = None
        if tls_key_and_chain is not None:
            credentials = grpc.ssl_server_credentials([tls_key_and_chain])
            port = self._server.add_secure_port("127.0.0.1:0", credentials)
            self.tls_url = f"https://127.0.0.1:{port}"

    def __enter__(self) -> GrpcServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait(10)


# ---- a bare HTTP server that records request paths --------------------------------------


def batch_answer(path: str, body: bytes, content_encoding: str | None) -> bytes:
    """What a Pug server answers a POST: every event accepted for BatchCreate, else an
    empty message (a valid answer to Identify)."""
    if not path.endswith("/" + BATCH_CREATE):
        return b""
    return pb.accept_all(gzip.decompress(body) if content_encoding == "gzip" else body)


class RecordingHTTPServer:
    """Answers every POST with 200 and an empty protobuf body (a valid empty response)
    and records the path and headers; `paths` lists what was requested."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        recorded = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a Connect server would
            disable_nagle_algorithm = True  # the body is a second write: no ACK wait

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                recorded.append(self.path)
                answer = batch_answer(self.path, body, self.headers.get("content-encoding"))
                self.send_response(200)
                self.send_header("content-type", "application/proto")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> RecordingHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
