"""The endpoint's front proxy: the ASGI app on the endpoint's stable address.

Every request passes the guards first (the same `Guards` as a model server: allow-list, API keys,
throttling, shedding on the proxy's own in-flight count), before its body is read. Then:

- `POST /invocations`: a replica chosen by the `Router` (variant by weight, then least loaded)
  gets the body with its content-type and accept headers (never the client's key: replicas have
  none), over a pooled keep-alive connection, at the backend's path prefix if it has one (a
  variant on Ray Serve sits behind Ray's proxy, shared by all). A replica that went away before
  answering (stopped, restarting) costs a retry on another one, up to `attempts` in all, so a
  rollout or a scale-in never drops a request. The replica's answer goes back with
  `x-modelyard-variant`, and into the variant's `VariantStats`, which rollouts judge and
  autoscaling reads.
- `GET /ping`: 200 while some variant with traffic has a replica (a load balancer's probe);
  `GET /health`: the supervisor's status plus each variant's traffic of the last minute;
  `GET /metrics`: the proxy's own Prometheus metrics; `GET /openapi.json` and `GET /version` are
  a replica's.

Like the model server, a plain ASGI callable: it is on the path of every prediction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modelyard.errors import ConfigError
from modelyard.serving.app import (
    JSON,
    Receive,
    Scope,
    Send,
    dispatch,
    error,
    header,
    lifespan,
    refuse,
    respond,
)
from modelyard.serving.guards import GuardOptions, Guards
from modelyard.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelyard.serving.metrics import LATENCY_BUCKETS

from .routing import Backend, Router
from .upstream import UpstreamBroken, UpstreamPool, UpstreamResponse, UpstreamUnavailable

INVOCATIONS = "/invocations"
VARIANT_HEADER = b"x-modelyard-variant"
FORWARDED = (b"content-type", b"accept")  # what a replica needs of the client's headers
HEALTH_WINDOW = 60.0  # seconds of traffic shown per variant in /health
TEXT = b"text/plain; charset=utf-8"

_REFUSAL_KINDS = {
    "FORBIDDEN": "allow_list",
    "UNAUTHENTICATED": "api_key",
    "REQUEST_LIMIT_EXCEEDED": "throttled",
    "OVERLOADED": "shed",
}


class _BadBody(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ProxyMetrics:
    """The proxy's Prometheus metrics, in a registry of its own (not the process-global one)."""

    def __init__(self, in_flight: Callable[[], float]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelyard_endpoint_requests",
            "Invocations answered by the endpoint, by variant and HTTP status",
            ["variant", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelyard_endpoint_request_seconds",
            "Time from an invocation's arrival at the endpoint to its answer, by variant",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "modelyard_endpoint_refusals",
            "Requests refused by the guards, by kind (allow_list, api_key, throttled, shed)",
            ["kind"],
            registry=self.registry,
        )
        self.retries = Counter(
            "modelyard_endpoint_upstream_retries",
            "Invocations sent to another replica because one went away before answering, by the "
            "variant of the one that went away",
            ["variant"],
            registry=self.registry,
        )
        gauge = Gauge(
            "modelyard_endpoint_in_flight",
            "Invocations being served by the endpoint",
            registry=self.registry,
        )
        gauge.set_function(in_flight)  # read at scrape time: nothing to do per request
        # children bound once per label value: labels() per request costs a lookup and a lock
        self._requests: dict[str, dict[int, Any]] = {}
        self._latency: dict[str, Any] = {}

    def observe(self, variant: str, status: int, seconds: float) -> None:
        by_status = self._requests.get(variant)
        if by_status is None:
            by_status = self._requests[variant] = {}
            self._latency[variant] = self.latency.labels(variant)
        counter = by_status.get(status)
        if counter is None:
            counter = by_status[status] = self.requests.labels(variant, str(status))
        counter.inc()
        self._latency[variant].observe(seconds)

    def refused(self, code: str) -> None:
        self.refusals.labels(_REFUSAL_KINDS.get(code, code.lower())).inc()

    def retried(self, variant: str) -> None:
        self.retries.labels(variant).inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class EndpointProxy:
    """The ASGI app in front of an endpoint's replicas."""

    def __init__(
        self,
        name: str,
        router: Router,
        pool: UpstreamPool,
        guards: GuardOptions | None = None,
        *,
        max_body_bytes: int = 5 * 1024 * 1024,
        timeout: float | None = None,
        attempts: int = 3,
        status: Callable[[], dict[str, Any]] = dict,
    ):
        """`timeout`: seconds for a whole invocation (504 after), the guards' timeout when None.
        `attempts`: replicas an invocation may be sent to when they go away unanswered.
        `status`: the supervisor's view (variants, replicas, rollout) shown in /health."""
        from modelyard.serving import jsonio

        if attempts < 1:
            raise ConfigError(f"an endpoint's proxy needs 1 attempt or more, not {attempts}")
        self.name = name
        self.router = router
        self.pool = pool
        self.guards = Guards(guards or GuardOptions())
        self.max_body_bytes = max_body_bytes
        self._timeout = timeout
        self.timeout = timeout if timeout is not None else self.guards.options.timeout
        self.attempts = attempts
        self.status = status
        self.metrics = ProxyMetrics(lambda: self.guards.in_flight)
        self._dumps = jsonio.dumps
        self._guarded = self.guards.active
        self._variant_headers: dict[str, tuple[bytes, bytes]] = {}
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", INVOCATIONS): self._invocations,
            ("GET", "/ping"): self._ping,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._forward_get,
            ("GET", "/version"): self._forward_get,
        }

    def set_guards(self, options: GuardOptions) -> None:
        """New guards (the endpoint's config changed): throttling starts afresh, the count of
        invocations in flight carries over so shedding stays right."""
        guards = Guards(options)
        guards.in_flight = self.guards.in_flight
        self.guards = guards
        self._guarded = guards.active
        if self._timeout is None:
            self.timeout = options.timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            return
        if self._guarded:
            client = scope.get("client")
            refusal = self.guards.check(
                client[0] if client else None, scope["path"], scope["headers"]
            )
            if refusal is not None:
                await refuse(send, refusal)
                self.metrics.refused(refusal.code)
                return
        if scope["path"] == INVOCATIONS and scope["method"] == "POST":
            await self._invocations(scope, receive, send)  # the hot path: no route lookup
            return
        await dispatch(self._routes, scope, receive, send)

    # -- invocations -----------------------------------------------------------------------------

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        router = self.router
        answer: UpstreamResponse | None = None
        backend: Backend | None = None  # the replica being tried
        tried: list[Backend] = []  # those that went away unanswered
        failure: tuple[int, str, str] | None = None  # the proxy's own answer: status, code, text
        fault = False  # the client's (a bad body): no variant's
        self.guards.in_flight += 1
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._body(scope, receive)
                headers = [(k, v) for k, v in scope["headers"] if k in FORWARDED]
                for _ in range(self.attempts):
                    backend = router.pick(tried)
                    if backend is None:
                        break
                    backend.in_flight += 1
                    try:
                        answer = await self.pool.request(
                            backend, "POST", backend.prefix + INVOCATIONS, headers, body
                        )
                        break
                    except UpstreamUnavailable:
                        tried.append(backend)
                        self.metrics.retried(backend.variant)
                    finally:
                        backend.in_flight -= 1
        except TimeoutError:
            failure = (504, "TIMEOUT", "the endpoint's replicas took longer than the timeout")
        except UpstreamBroken as exc:
            failure = (502, "BAD_GATEWAY", f"a replica's answer was cut short: {exc.reason}")
        except _BadBody as exc:
            code = "RESOURCE_LIMIT_EXCEEDED" if exc.status == 413 else "BAD_REQUEST"  # as app.py
            failure, fault = (exc.status, code, exc.message), True
        finally:
            self.guards.in_flight -= 1
        if backend is None and tried:
            backend = tried[-1]  # none left to try: the failure is the last one's variant
        if answer is None and failure is None:
            if backend is None:
                failure = (503, "NO_REPLICA", f"endpoint {self.name} has no replica to answer")
            else:
                failure = (502, "BAD_GATEWAY", f"no replica answered ({len(tried)} tried)")
        variant = backend.variant if backend is not None and not fault else None
        if answer is not None:
            status = answer.status
            headers = [
                (b"content-type", answer.header(b"content-type") or JSON),
                (b"content-length", str(len(answer.body)).encode()),
            ]
            retry_after = answer.header(b"retry-after") if status in (429, 503) else None
            if retry_after is not None:  # a replica shedding load says when to come back
                headers.append((b"retry-after", retry_after))
            payload = answer.body
        else:
            assert failure is not None
            status, code, message = failure
            payload = self._dumps({"error_code": code, "message": message})
            headers = [(b"content-type", JSON), (b"content-length", str(len(payload)).encode())]
            if status == 503:
                headers.append((b"retry-after", b"1"))
        if variant is not None:
            headers.append(self._variant_header(variant))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        seconds = time.perf_counter() - started
        self.metrics.observe(variant or "none", status, seconds)
        if variant is not None:
            # the proxy's own 502/503/504 about a variant count against it; a replica's answer
            # is classified by its status (its 503 is load shedding, not a fault)
            router.stats(variant).record(status, seconds, True if answer is None else None)

    def _variant_header(self, variant: str) -> tuple[bytes, bytes]:
        header = self._variant_headers.get(variant)
        if header is None:
            header = self._variant_headers[variant] = (VARIANT_HEADER, variant.encode())
        return header

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _BadBody(413, f"the request body is over {limit:,} bytes")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _BadBody(400, "the client went away before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BadBody(413, f"the request body is over {limit:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- the other routes ------------------------------------------------------------------------

    async def _ping(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.router.available():
            await respond(send, 200, TEXT, b"\n")
        else:
            await error(send, 503, "NO_REPLICA", f"endpoint {self.name} has no replica")

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        since = router.clock() - HEALTH_WINDOW
        health = {
            "endpoint": self.name,
            **self.status(),
            "traffic": {v: router.stats(v).since(since).to_json() for v in router.variants()},
        }
        await respond(send, 200, JSON, self._dumps(health))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, METRICS_CONTENT_TYPE.encode(), self.metrics.render())

    async def _forward_get(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A replica's own document (OpenAPI, version): any replica will do, the weighted
        rotation of invocations is left alone."""
        headers = [(k, v) for k, v in scope["headers"] if k == b"accept"]
        tried: list[Backend] = []
        answer: UpstreamResponse | None = None
        backend: Backend | None = None
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(self.attempts):
                    backend = self.router.pick_any(tried)
                    if backend is None:
                        break
                    backend.in_flight += 1  # a draining replica waits for these too
                    try:
                        answer = await self.pool.request(
                            backend, "GET", backend.prefix + scope["path"], headers, b""
                        )
                        break
                    except UpstreamUnavailable:
                        tried.append(backend)
                    finally:
                        backend.in_flight -= 1
        except TimeoutError:
            await error(send, 504, "TIMEOUT", "the replica took longer than the timeout")
            return
        except UpstreamBroken as exc:
            await error(send, 502, "BAD_GATEWAY", f"a replica's answer was cut short: {exc}")
            return
        if answer is not None and backend is not None:
            extra = [self._variant_header(backend.variant)]
            content_type = answer.header(b"content-type") or TEXT
            await respond(send, answer.status, content_type, answer.body, extra)
        elif tried:
            await error(send, 502, "BAD_GATEWAY", f"no replica answered ({len(tried)} tried)")
        else:
            await self._no_replica(send)

    async def _no_replica(self, send: Send) -> None:
        body = self._dumps(
            {"error_code": "NO_REPLICA", "message": f"endpoint {self.name} has no replica"}
        )
        await respond(send, 503, JSON, body, [(b"retry-after", b"1")])
