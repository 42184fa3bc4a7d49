"""``lake gateway``: devices send telemetry over HTTP (contract section 8).

``POST /v1/telemetry`` with ``Authorization: Bearer <secret>`` and one
message (``application/json``) or NDJSON (``application/x-ndjson``, at most
1,000 messages and 1 MiB). A request goes through, in this order, each step
refusing it with its status code:

1. the secret (401; 429/503 when new secrets are checked too fast: ``gateway_auth``);
2. the content type (415) and declared length (413), before any body is read;
3. the device's rate: an empty bucket is refused before the body is read (429);
4. the body, read as it streams and refused past its limit (413);
5. the rate again, for the batch's size (429; 413 when over the burst itself):
   every message sent counts, valid or not, except those Kafka did not take;
6. every message, with the contract's validation (400, naming each bad line);
7. every message's vehicle is the device's (403);
8. Kafka: 202 ``{"accepted": n}`` once it acknowledged every message (503 when not).

Starlette on uvicorn (uvloop, httptools). Starlette, not FastAPI, by
measurement: a bare endpoint answered 27.7K requests/s on Starlette against
15.1K on FastAPI on this machine (wrk, one worker); the OpenAPI document is
written out (``gateway_openapi``) rather than derived from signatures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from lake.edge.gateway_auth import AuthGuard, AuthLimits, AuthRefused
from lake.edge.gateway_kafka import KafkaForwarder, KafkaUnavailable
from lake.edge.gateway_limits import TokenBuckets
from lake.edge.gateway_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from lake.edge.gateway_metrics import Metrics
from lake.edge.gateway_openapi import openapi_document
from lake_core import kafka_admin
from lake_core.errors import BrokerUnavailableError, ConfigError, LakeError
from lake_schemas import MAX_MESSAGE_BYTES, Accepted, validate_message

__all__ = ["GatewayOptions", "create_app", "serve", "MAX_BODY_BYTES", "MAX_MESSAGES"]

MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGES = 1000
JSON, NDJSON = "application/json", "application/x-ndjson"
_ENCODE = msgspec.json.Encoder()
_WWW_MISSING = 'Bearer realm="lake"'
_WWW_INVALID = 'Bearer realm="lake", error="invalid_token"'


@dataclass(frozen=True)
class GatewayOptions:
    """Everything a gateway worker needs; picklable, since workers are started with ``spawn``."""

    lake_root: str
    bootstrap: str
    topic: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    rate: float = 50.0  # messages/s per device, sustained
    burst: float = 1000.0  # messages a device may send at once (a full NDJSON batch)
    produce_timeout_s: float = 5.0
    auth: AuthLimits = field(default_factory=AuthLimits)
    metrics_dir: Optional[str] = None  # shared by the workers (set by ``serve`` when there are several)
    verbose: bool = False

    def check(self) -> None:
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if self.rate <= 0:
            raise ConfigError("--rate must be above 0 messages/s")
        if self.burst < 1:
            raise ConfigError("--burst must be at least 1 message")
        if not 0.5 <= self.produce_timeout_s <= 300:
            raise ConfigError("--produce-timeout must be between 0.5 and 300 seconds")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port")


class _Refusal(Exception):
    """A request answered with an error: its status, JSON body and headers."""

    def __init__(self, status: int, detail: str, errors: Optional[list] = None, headers: Optional[dict] = None):
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"detail": detail} if errors is None else {"detail": detail, "errors": errors}
        self.headers = headers

    def response(self) -> Response:
        return Response(_ENCODE.encode(self.body), self.status, self.headers, media_type=JSON)


def _retry_after(seconds: Optional[float]) -> dict[str, str]:
    """``Retry-After`` in whole seconds (RFC 9110), at least 1."""
    return {"Retry-After": str(max(1, int(-(-(seconds or 1.0) // 1))))}


def _bearer(authorization: Optional[str]) -> Optional[str]:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Gateway:
    """One worker's gateway: its guard, rate buckets, Kafka producer and metrics."""

    def __init__(self, options: GatewayOptions):
        self.options = options
        self.guard = AuthGuard(options.lake_root, options.auth)
        self.rates = TokenBuckets(options.rate, options.burst)
        self.metrics = Metrics(options.metrics_dir, slow_checks=lambda: self.guard.slow_checks)
        self.kafka: Optional[KafkaForwarder] = None
        self._openapi = _ENCODE.encode(
            openapi_document(MAX_BODY_BYTES, MAX_MESSAGES, options.rate, options.burst),
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette):
        self.kafka = KafkaForwarder(
            self.options.bootstrap,
            self.options.topic,
            self.options.produce_timeout_s,
            on_produced=self.metrics.produced,
        )
        self.kafka.start()
        self.guard.start()
        self.metrics.start()
        try:
            yield
        finally:  # uvicorn has drained the requests in flight: deliver what they queued
            left = self.kafka.close(self.options.produce_timeout_s)
            if left:
                print(f"lake gateway: {left:,} message(s) not delivered at shutdown", file=sys.stderr)
            self.guard.close()
            self.metrics.close()

    # -- POST /v1/telemetry

    async def telemetry(self, request: Request) -> Response:
        arrival_ms = time.time_ns() // 1_000_000
        try:
            return await self._telemetry(request, arrival_ms)
        except _Refusal as refusal:
            return refusal.response()

    async def _telemetry(self, request: Request, arrival_ms: int) -> Response:
        headers = request.headers
        client = request.client.host if request.client else "-"
        try:
            device = await self.guard.authenticate(_bearer(headers.get("authorization")), client)
        except AuthRefused as refused:
            if refused.status == 401:
                www = _WWW_MISSING if refused.reason == "missing" else _WWW_INVALID
                raise _Refusal(401, refused.detail, headers={"WWW-Authenticate": www}) from None
            raise _Refusal(refused.status, refused.detail, headers=_retry_after(refused.retry_after)) from None
        vehicle_id = device.vehicle_id

        kind = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if kind not in (JSON, NDJSON):
            raise _Refusal(415, f"Content-Type must be {JSON} (one message) or {NDJSON} (one message per line)")
        encoding = (headers.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise _Refusal(415, f"Content-Encoding {encoding!r} is not supported: send the body as is")
        limit = MAX_MESSAGE_BYTES if kind == JSON else MAX_BODY_BYTES
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _Refusal(413, f"a {kind} body is at most {limit:,} bytes (Content-Length {int(declared):,})")
        tokens = self.rates.available(vehicle_id)
        if tokens < 1:
            self._throttled(vehicle_id, (1 - tokens) / self.options.rate)

        values, lines = _messages(await _read_body(request, limit, kind), kind)
        n = len(values)
        if n > self.options.burst:
            self.metrics.messages_done("refused", "rate_limited", n)
            raise _Refusal(413, f"{n:,} messages are more than this gateway's burst of {self.options.burst:g}")
        # Every message sent counts against the rate, valid or not (checking costs CPU too); only
        # what Kafka did not take is given back.
        wait = self.rates.take(vehicle_id, n)
        if wait > 0:
            self.metrics.messages_done("refused", "rate_limited", n)
            self._throttled(vehicle_id, wait)
        self._check(values, lines, vehicle_id)
        assert self.kafka is not None  # set at startup
        try:
            await self.kafka.forward(vehicle_id.encode(), values, arrival_ms)
        except KafkaUnavailable as exc:
            self.rates.refund(vehicle_id, n)
            self.metrics.messages_done("refused", "kafka_unavailable", n)
            raise _Refusal(503, str(exc), headers=_retry_after(2)) from None
        self.metrics.messages_done("accepted", "", n)
        return Response(b'{"accepted":%d}' % n, 202, media_type=JSON)

    def _throttled(self, vehicle_id: str, wait: float) -> None:
        detail = f"vehicle {vehicle_id} is over its rate of {self.options.rate:g} messages/s; retry later"
        raise _Refusal(429, detail, headers=_retry_after(wait))

    def _check(self, values: list[bytes], lines: list[int], vehicle_id: str) -> None:
        """Every message valid (else 400) and the device's own (else 403), or nothing is forwarded."""
        verdicts = [validate_message(v) for v in values]
        errors, foreign = [], []
        for line, verdict in zip(lines, verdicts):
            if type(verdict) is not Accepted:
                errors.append({"line": line, "reason": verdict.reason.value, "detail": verdict.detail[:300]})
            elif verdict.vehicle_id != vehicle_id:
                foreign.append(
                    {
                        "line": line,
                        "reason": "vehicle_mismatch",
                        "detail": f"vehicle {verdict.vehicle_id!r} is not this device's ({vehicle_id})",
                    }
                )
        if errors:
            for e in errors:
                self.metrics.messages_done("refused", e["reason"], 1)
            self.metrics.messages_done("refused", "batch_refused", len(values) - len(errors))
            raise _Refusal(400, f"{len(errors):,} of {len(values):,} message(s) invalid; nothing forwarded", errors)
        if foreign:
            self.metrics.messages_done("refused", "vehicle_mismatch", len(values))
            detail = f"{len(foreign):,} message(s) for another vehicle than {vehicle_id}; nothing forwarded"
            raise _Refusal(403, detail, foreign)

    # -- the rest

    async def health(self, _request: Request) -> Response:
        assert self.kafka is not None
        problem = self.kafka.health()
        if problem is None:
            return Response(b'{"status":"ok"}', 200, media_type=JSON)
        return Response(_ENCODE.encode({"status": "unavailable", "detail": problem}), 503, media_type=JSON)

    async def metrics_text(self, _request: Request) -> Response:
        return Response(self.metrics.exposition(), 200, media_type=METRICS_CONTENT_TYPE)

    async def openapi(self, _request: Request) -> Response:
        return Response(self._openapi, 200, media_type=JSON)


async def _read_body(request: Request, limit: int, kind: str) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never read whole beyond it)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refusal(413, f"a {kind} body is at most {limit:,} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Refusal(400, "the client went away before sending the whole body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _messages(body: bytes, kind: str) -> tuple[list[bytes], list[int]]:
    """The messages of a body, each as sent, and their 1-based line numbers."""
    if kind == JSON:
        return [body], [1]
    values: list[bytes] = []
    lines: list[int] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:  # an empty line (the body's final newline, say) is no message
            values.append(line)
            lines.append(number)
    if not values:
        raise _Refusal(400, "no message in the body", [{"line": 1, "reason": "empty", "detail": "empty body"}])
    if len(values) > MAX_MESSAGES:
        raise _Refusal(413, f"at most {MAX_MESSAGES:,} messages per request ({len(values):,} sent)")
    return values, lines


class _CountRequests:
    """Outermost ASGI layer: every answer counted by path and status (500s too), POST latencies timed."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            path = scope["path"]
            elapsed = time.perf_counter() - started if path == "/v1/telemetry" else None
            self.metrics.request(path, status, elapsed)


def create_app(options: GatewayOptions) -> Any:
    """The ASGI application of one worker."""
    gateway = Gateway(options)
    app = Starlette(
        routes=[
            Route("/v1/telemetry", gateway.telemetry, methods=["POST"]),
            Route("/healthz", gateway.health, methods=["GET"]),
            Route("/metrics", gateway.metrics_text, methods=["GET"]),
            Route("/openapi.json", gateway.openapi, methods=["GET"]),
        ],
        lifespan=gateway.lifespan,
    )
    return _CountRequests(app, gateway.metrics)


class GatewayFactory:
    """What uvicorn calls in each worker (``factory=True``) to build its app: picklable, unlike the app."""

    def __init__(self, options: GatewayOptions):
        self.options = options

    def __call__(self) -> Any:
        return create_app(self.options)


def _check_kafka(options: GatewayOptions) -> None:
    """A missing topic is a mistake to name now; an unreachable Kafka is not (the gateway answers 503)."""
    try:
        kafka_admin.wait_until_reachable(options.bootstrap, timeout=3.0)
    except BrokerUnavailableError as exc:
        print(f"lake gateway: warning: {exc}; answering 503 until it is reachable", file=sys.stderr)
        return
    kafka_admin.partition_count(options.bootstrap, options.topic)


def _graceful_server_class() -> Any:
    import uvicorn  # noqa: PLC0415 - keeps `lake --help` light

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM once it has shut down, so the process dies of it (exit -15) although
        every request was drained: a supervisor would log a crash. A drained stop exits 0 instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    if self.started:  # drained: the signal did what it asked for
                        self._captured_signals.clear()

    return GracefulServer


def serve(options: GatewayOptions) -> None:
    """Run the gateway until SIGTERM or SIGINT: then drain the requests in flight and flush the producers."""
    import uvicorn  # noqa: PLC0415 - keeps `lake --help` light
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    options.check()
    _check_kafka(options)
    metrics_dir = tempfile.mkdtemp(prefix="lake-gateway-metrics-") if options.workers > 1 else None
    worker_options = GatewayOptions(**{**options.__dict__, "metrics_dir": metrics_dir})
    config = uvicorn.Config(
        GatewayFactory(worker_options),
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        loop="auto",  # uvloop when installed (uvicorn[standard]), else asyncio
        http="auto",  # httptools when installed, else h11
        lifespan="on",
        access_log=options.verbose,
        log_level="info" if options.verbose else "warning",
        server_header=False,
        timeout_graceful_shutdown=int(options.produce_timeout_s) + 5,
    )
    try:
        try:
            sock = config.bind_socket()
        except SystemExit:  # uvicorn logged why (address in use...)
            raise LakeError(f"cannot listen on {options.host}:{options.port}") from None
        host, port = sock.getsockname()[:2]
        print(
            f"lake gateway: http://{host}:{port}/v1/telemetry ({options.workers} worker(s), "
            f"topic {options.topic} on {options.bootstrap}, pid {os.getpid()})",
            file=sys.stderr,
            flush=True,
        )
        if options.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server = _graceful_server_class()(config)
            server.run(sockets=[sock])
            if not server.started:
                raise LakeError("the gateway did not start (see the log above)")
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
