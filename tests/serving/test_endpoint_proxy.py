"""The endpoint's front proxy, served by uvicorn on 127.0.0.1 in front of fake replicas (small
asyncio HTTP servers in the test's loop that answer `{"predictions": [NAME]}`, or fail as told):
forwarding with the variant header, exact weighted shares, no dropped request when replicas close
connections or are stopped mid-stream, NO_REPLICA, errors recorded per variant, the guards, the
body limit, the timeout, /ping, /health, /metrics; and the upstream pool's keep-alive, stale
connections, chunked and close-delimited bodies, Connection: close."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import httptools
import httpx
import pytest
import uvicorn

from modelyard.serving.endpoint.proxy import EndpointProxy
from modelyard.serving.endpoint.routing import Backend, Router
from modelyard.serving.endpoint.upstream import (
    UpstreamBroken,
    UpstreamPool,
    UpstreamResponse,
    UpstreamUnavailable,
)
from modelyard.serving.guards import GuardOptions

KEY = "k3y-for-proxy-tests-0123456789"
BODY = {"dataframe_split": {"columns": ["x"], "data": [[1.5]]}}


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a test's body, then stop the fake replicas it left running."""

    async def main() -> None:
        try:
            await coroutine
        finally:
            for fake in list(FakeReplica.running):
                await fake.stop()

    asyncio.run(main())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition, failing after a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        await asyncio.sleep(0.005)


class _Requests:
    """httptools callbacks: complete requests as (path, headers, body)."""

    def __init__(self) -> None:
        self.complete: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.complete.append((self._url, self._headers, b"".join(self._body)))
        self._url, self._headers, self._body = b"", {}, []


class FakeReplica:
    """A replica of `variant` on 127.0.0.1. `mode`: ok, fail (500), shed (503), close (closes
    the connection without answering), close-reused (the same, except for a connection's first
    request: a keep-alive timeout racing a request), cut (half an answer), chunked, conn-close,
    eof-body (a body delimited by closing the connection). `delay`: seconds before answering."""

    running: ClassVar[list[FakeReplica]] = []

    def __init__(self, name: str, variant: str = "a"):
        self.name = name
        self.variant = variant
        self.mode = "ok"
        self.delay = 0.0
        self.port = 0
        self.connections = 0  # accepted
        self.requests = 0  # received
        self.pending = 0  # received, not yet answered
        self.seen: list[dict[bytes, bytes]] = []  # each request's headers
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    async def start(self, port: int = 0) -> FakeReplica:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        FakeReplica.running.append(self)
        return self

    async def stop(self) -> None:
        """Like a killed process: no more connections, the open ones closed unanswered."""
        assert self._server is not None
        FakeReplica.running.remove(self)
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    def backend(self) -> Backend:
        return Backend(self.name, self.variant, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        requests = _Requests()
        parser = httptools.HttpRequestParser(requests)
        answered = 0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                parser.feed_data(data)
                while requests.complete:
                    path, headers, _ = requests.complete.pop(0)
                    if not await self._answer(writer, path, headers, answered):
                        return
                    answered += 1
        except (ConnectionError, httptools.HttpParserError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, path: bytes, headers: dict[bytes, bytes], index: int
    ) -> bool:
        self.requests += 1
        self.seen.append(headers)
        mode = self.mode
        if mode == "close" or (mode == "close-reused" and index > 0):
            return False
        self.pending += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # a slow model
        finally:
            self.pending -= 1
        status, body, extra = 200, json.dumps({"predictions": [self.name]}).encode(), b""
        content_type = b"application/json"
        if path == b"/version":
            body, content_type = b"9.9.9", b"text/plain; charset=utf-8"
        elif mode == "fail":
            status, body = 500, b'{"error_code": "INTERNAL_ERROR", "message": "boom"}'
        elif mode == "shed":
            status, extra = 503, b"retry-after: 2\r\n"
            body = b'{"error_code": "OVERLOADED", "message": "at capacity"}'
        head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\n%s" % (status, content_type, extra)
        if mode == "chunked":
            half = len(body) // 2
            chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                half,
                body[:half],
                len(body) - half,
                body[half:],
            )
            writer.write(head + b"transfer-encoding: chunked\r\n\r\n" + chunks)
        elif mode == "eof-body":
            writer.write(head + b"connection: close\r\n\r\n" + body)
            return False
        elif mode == "cut":
            writer.write(head + b"content-length: %d\r\n\r\n" % len(body) + body[:3])
            return False
        else:
            close = mode == "conn-close"
            writer.write(
                head
                + b"content-length: %d\r\n" % len(body)
                + (b"connection: close\r\n" if close else b"")
                + b"\r\n"
                + body
            )
            if close:
                return False
        await writer.drain()
        return True


async def replicas(*specs: tuple[str, str]) -> list[FakeReplica]:
    return [await FakeReplica(name, variant).start() for name, variant in specs]


def route(fakes: list[FakeReplica], weights: dict[str, float]) -> Router:
    router = Router()
    for variant in {fake.variant for fake in fakes}:
        router.set_backends(variant, [f.backend() for f in fakes if f.variant == variant])
    router.set_weights(weights)
    return router


@asynccontextmanager
async def serving(proxy: EndpointProxy) -> AsyncIterator[httpx.AsyncClient]:
    """The proxy under uvicorn on a socket of 127.0.0.1, and a client for it."""
    sock = socket.socket()
    # accepted connections inherit it: without it asyncio leaves Nagle on for a socket made
    # with proto 0, and every response waits ~40 ms for a delayed ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(proxy, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started or task.done())
    assert server.started
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        await proxy.pool.aclose()
        sock.close()


# -- forwarding and routing --------------------------------------------------------------------


def test_it_forwards_and_answers_with_the_variant_header() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        router = route([a0], {"a": 1})
        async with serving(EndpointProxy("shop", router, UpstreamPool())) as client:
            response = await client.post(
                "/invocations",
                json=BODY,
                headers={"authorization": "Bearer secret-of-client", "x-api-key": "secret-too"},
            )
            assert response.status_code == 200
            assert response.json() == {"predictions": ["a0"]}
            assert response.headers["x-modelyard-variant"] == "a"
            assert response.headers["content-type"] == "application/json"
            [seen] = a0.seen
            assert seen[b"content-type"] == b"application/json"
            assert b"authorization" not in seen and b"x-api-key" not in seen  # replicas: no keys
            assert int(seen[b"content-length"]) == len(json.dumps(BODY).replace(" ", ""))
            version = await client.get("/version")
            assert version.status_code == 200 and version.text == "9.9.9"
            assert (await client.get("/openapi.json")).json() == {"predictions": ["a0"]}
            assert (await client.get("/nope")).status_code == 404
            assert (await client.get("/invocations")).status_code == 405
        [backend] = router.backends("a")
        assert backend.in_flight == 0
        assert router.stats("a").since(0).requests == 1  # GETs are not invocations

    run(main())


def test_weights_80_20_give_exactly_those_shares_over_100_requests() -> None:
    async def main() -> None:
        fakes = await replicas(("a0", "a"), ("a1", "a"), ("b0", "b"))
        router = route(fakes, {"a": 80, "b": 20})
        async with serving(EndpointProxy("shop", router, UpstreamPool())) as client:
            variants: Counter[str] = Counter()
            names: Counter[str] = Counter()
            for _ in range(100):
                response = await client.post("/invocations", json=BODY)
                assert response.status_code == 200
                variants[response.headers["x-modelyard-variant"]] += 1
                names[response.json()["predictions"][0]] += 1
        assert variants == {"a": 80, "b": 20}
        assert names == {"a0": 40, "a1": 40, "b0": 20}  # one at a time: round robin within a
        # sequential requests reuse one keep-alive connection per replica
        assert [fake.connections for fake in fakes] == [1, 1, 1]
        assert router.stats("a").since(0).requests == 80

    run(main())


# -- replicas going away -------------------------------------------------------------------------


def test_requests_to_a_replica_that_closes_or_is_stopped_go_elsewhere() -> None:
    async def main() -> None:
        bad, good = await replicas(("a0", "a"), ("a1", "a"))
        bad.mode = "close"
        router = route([bad, good], {"a": 1})
        proxy = EndpointProxy("shop", router, UpstreamPool())
        async with serving(proxy) as client:
            for _ in range(10):
                response = await client.post("/invocations", json=BODY)
                assert response.status_code == 200
                assert response.json() == {"predictions": ["a1"]}
            assert bad.requests > 0  # it was tried, and its requests went to a1
            await bad.stop()  # now refused
            for _ in range(10):
                assert (await client.post("/invocations", json=BODY)).status_code == 200
            metrics = (await client.get("/metrics")).text
        assert _value(metrics, 'modelyard_endpoint_upstream_retries_total{variant="a"}') >= 5
        stats = router.stats("a").since(0)
        assert (stats.requests, stats.errors) == (20, 0)

    run(main())


def test_no_request_is_dropped_when_a_replica_is_stopped_mid_stream() -> None:
    async def main() -> None:
        fakes = await replicas(("a0", "a"), ("a1", "a"), ("a2", "a"))
        for fake in fakes:
            fake.delay = 0.002  # requests stay in flight long enough to be cut
        router = route(fakes, {"a": 1})
        statuses: Counter[int] = Counter()
        proxy = EndpointProxy("shop", router, UpstreamPool())
        async with serving(proxy) as client:

            async def stream() -> None:
                while sum(statuses.values()) < 600:
                    response = await client.post("/invocations", json=BODY)
                    statuses[response.status_code] += 1

            streams = [asyncio.create_task(stream()) for _ in range(16)]
            await until(lambda: sum(statuses.values()) >= 100 and fakes[0].pending > 0)
            await fakes[0].stop()  # with requests of the stream in its hands
            stopped_at = sum(statuses.values())
            await asyncio.gather(*streams)
        assert statuses == {200: sum(statuses.values())}
        assert stopped_at < 600
        assert fakes[1].requests + fakes[2].requests > 600 - stopped_at
        assert all(backend.in_flight == 0 for backend in router.backends("a"))
        assert router.stats("a").since(0).errors == 0
        # the requests it held unanswered were sent again, to the others
        retried = 'modelyard_endpoint_upstream_retries_total{variant="a"}'
        assert _value(proxy.metrics.render().decode(), retried) >= 1

    run(main())


def test_no_replica_is_503_and_every_attempt_failing_is_502() -> None:
    async def main() -> None:
        router = Router()
        router.set_weights({"a": 1})
        proxy = EndpointProxy("shop", router, UpstreamPool(), attempts=2)
        async with serving(proxy) as client:
            response = await client.post("/invocations", json=BODY)
            assert response.status_code == 503
            assert response.json()["error_code"] == "NO_REPLICA"
            assert response.headers["retry-after"] == "1"
            assert (await client.get("/ping")).status_code == 503
            assert (await client.get("/version")).status_code == 503
            gone = await replicas(("a0", "a"), ("a1", "a"), ("a2", "a"))
            router.set_backends("a", [fake.backend() for fake in gone])
            assert (await client.get("/ping")).status_code == 200
            for fake in gone:
                await fake.stop()
            failed = await client.post("/invocations", json=BODY)
            assert failed.status_code == 502
            assert failed.json()["error_code"] == "BAD_GATEWAY"
            assert failed.headers["x-modelyard-variant"] == "a"
            assert "2 tried" in failed.json()["message"]  # attempts=2 of 3 replicas
            for backend in router.backends("a"):
                backend.draining = True
            assert (await client.get("/ping")).status_code == 503
        stats = router.stats("a").since(0)
        assert (stats.requests, stats.errors) == (1, 1)  # the 502, not the "no variant" 503

    run(main())


def test_a_replica_error_is_recorded_against_its_variant_and_shedding_is_not() -> None:
    async def main() -> None:
        a0, b0 = await replicas(("a0", "a"), ("b0", "b"))
        b0.mode = "fail"
        router = route([a0, b0], {"a": 1, "b": 1})
        async with serving(EndpointProxy("shop", router, UpstreamPool())) as client:
            got = [await client.post("/invocations", json=BODY) for _ in range(4)]
            assert sorted(r.status_code for r in got) == [200, 200, 500, 500]
            failed = next(r for r in got if r.status_code == 500)
            assert failed.headers["x-modelyard-variant"] == "b"
            assert failed.json()["error_code"] == "INTERNAL_ERROR"  # the replica's own body
            a0.mode = "shed"
            router.set_weights({"a": 1})
            shed = await client.post("/invocations", json=BODY)
            assert shed.status_code == 503 and shed.headers["retry-after"] == "2"
        a, b = router.stats("a").since(0), router.stats("b").since(0)
        assert (a.requests, a.errors) == (3, 0)
        assert (b.requests, b.errors) == (2, 2) and b.error_rate == 1.0

    run(main())


# -- guards, limits, timeout ---------------------------------------------------------------------


def test_guards_keys_allow_list_and_throttling() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        router = route([a0], {"a": 1})
        keyed = GuardOptions.build(keys=[KEY], rate=1, burst=2)
        responses: list[httpx.Response] = []
        async with serving(EndpointProxy("shop", router, UpstreamPool(), keyed)) as client:
            missing = await client.post("/invocations", json=BODY)
            assert missing.status_code == 401
            assert missing.json()["error_code"] == "UNAUTHENTICATED"
            wrong = await client.post("/invocations", json=BODY, headers={"x-api-key": "x" * 20})
            assert wrong.status_code == 401
            assert (await client.get("/ping")).status_code == 200  # probes need no key
            headers = {"authorization": f"Bearer {KEY}"}
            flood = [await client.post("/invocations", json=BODY, headers=headers)]
            flood += await asyncio.gather(
                *[client.post("/invocations", json=BODY, headers=headers) for _ in range(5)]
            )
            statuses = Counter(r.status_code for r in flood)
            assert statuses[200] >= 2 and statuses[429] >= 3
            throttled = next(r for r in flood if r.status_code == 429)
            assert int(throttled.headers["retry-after"]) >= 1
            metrics = (await client.get("/metrics", headers=headers)).text
            responses += [missing, wrong, *flood]
        assert all(b"authorization" not in seen for seen in a0.seen)
        for response in responses:
            assert KEY not in response.text and KEY not in str(response.headers)
        assert _value(metrics, 'modelyard_endpoint_refusals_total{kind="api_key"}') == 2
        assert _value(metrics, 'modelyard_endpoint_refusals_total{kind="throttled"}') >= 3
        # refusals are the endpoint's, not a variant's
        assert router.stats("a").since(0).requests == statuses[200]

        open_proxy = EndpointProxy("shop", router, UpstreamPool())
        async with serving(open_proxy) as client:
            assert (await client.post("/invocations", json=BODY)).status_code == 200
            # the endpoint's config changed: new guards apply to the next request
            open_proxy.set_guards(GuardOptions.build(allow=["10.0.0.0/8"]))
            forbidden = await client.post("/invocations", json=BODY)
            assert forbidden.status_code == 403
            assert forbidden.json()["error_code"] == "FORBIDDEN"

    run(main())


def test_shedding_counts_the_proxys_own_requests_in_flight() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        a0.delay = 0.3
        router = route([a0], {"a": 1})
        shedding = GuardOptions.build(max_in_flight=2)
        async with serving(EndpointProxy("shop", router, UpstreamPool(), shedding)) as client:
            slow = [asyncio.create_task(client.post("/invocations", json=BODY)) for _ in range(2)]
            await until(lambda: a0.pending == 2)
            shed = await client.post("/invocations", json=BODY)
            assert shed.status_code == 503 and shed.json()["error_code"] == "OVERLOADED"
            assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200]
        assert router.stats("a").since(0).requests == 2

    run(main())


def test_a_body_over_the_limit_is_413_and_never_forwarded() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        router = route([a0], {"a": 1})
        proxy = EndpointProxy("shop", router, UpstreamPool(), max_body_bytes=1000)
        async with serving(proxy) as client:
            big = await client.post("/invocations", content=b"x" * 2000)
            assert big.status_code == 413 and "1,000" in big.json()["message"]
            assert big.json()["error_code"] == "RESOURCE_LIMIT_EXCEEDED"

            async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as read
                for _ in range(4):
                    yield b"y" * 400

            streamed = await client.post("/invocations", content=chunks())
            assert streamed.status_code == 413
            assert (await client.post("/invocations", content=b"z" * 900)).status_code == 200
        assert a0.requests == 1
        assert router.stats("a").since(0).requests == 1  # the client's fault: not the variant's

    run(main())


def test_a_slow_replica_is_a_504_recorded_as_its_variants_error() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        a0.delay = 30.0
        router = route([a0], {"a": 1})
        proxy = EndpointProxy("shop", router, UpstreamPool(), timeout=0.3)
        async with serving(proxy) as client:
            started = time.monotonic()
            response = await client.post("/invocations", json=BODY)
            took = time.monotonic() - started
            assert response.status_code == 504 and response.json()["error_code"] == "TIMEOUT"
            assert response.headers["x-modelyard-variant"] == "a"
            assert 0.3 <= took < 5
            [backend] = router.backends("a")
            assert backend.in_flight == 0
            assert proxy.guards.in_flight == 0
            await a0.stop()
        stats = router.stats("a").since(0)
        assert (stats.requests, stats.errors) == (1, 1)
        assert stats.p50_ms is not None and stats.p50_ms >= 290

    run(main())


# -- probes, health, metrics ---------------------------------------------------------------------


def test_health_and_metrics() -> None:
    async def main() -> None:
        a0, b0 = await replicas(("a0", "a"), ("b0", "b"))
        router = route([a0, b0], {"a": 3, "b": 1})

        def status() -> dict[str, Any]:
            return {"variants": {"a": {"replicas": 1}, "b": {"replicas": 1}}, "rollout": None}

        proxy = EndpointProxy("shop", router, UpstreamPool(), status=status)
        async with serving(proxy) as client:
            for _ in range(8):
                assert (await client.post("/invocations", json=BODY)).status_code == 200
            health = (await client.get("/health")).json()
            metrics = await client.get("/metrics")
        assert health["endpoint"] == "shop" and health["rollout"] is None
        assert health["variants"]["a"] == {"replicas": 1}
        assert health["traffic"]["a"]["requests"] == 6
        assert health["traffic"]["b"]["requests"] == 2
        assert health["traffic"]["a"]["errors"] == 0 and health["traffic"]["a"]["p99_ms"] > 0
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = metrics.text
        assert _value(text, 'modelyard_endpoint_requests_total{status="200",variant="a"}') == 6
        assert _value(text, 'modelyard_endpoint_requests_total{status="200",variant="b"}') == 2
        assert _value(text, 'modelyard_endpoint_request_seconds_count{variant="a"}') == 6
        assert 'modelyard_endpoint_request_seconds_bucket{le="0.0005",variant="a"}' in text
        assert _value(text, "modelyard_endpoint_in_flight") == 0

    run(main())


def _value(metrics: str, series: str) -> float:
    found = re.search(re.escape(series) + r" ([0-9.e+-]+)", metrics)
    assert found, f"{series} not in the metrics"
    return float(found[1])


# -- the upstream pool ---------------------------------------------------------------------------


def post(pool: UpstreamPool, backend: Backend) -> Coroutine[Any, Any, UpstreamResponse]:
    headers = [(b"content-type", b"application/json")]
    return pool.request(backend, "POST", "/invocations", headers, b"{}")


def test_the_pool_keeps_connections_alive() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        backend = a0.backend()
        pool = UpstreamPool()
        for _ in range(20):
            response = await post(pool, backend)
            assert response.status == 200 and json.loads(response.body) == {"predictions": ["a0"]}
        assert (a0.connections, a0.requests) == (1, 20)
        assert pool.idle_connections(backend) == 1
        await pool.close_backend(backend)
        await until(lambda: a0.open_connections == 0)  # the replica saw it closed
        assert pool.idle_connections(backend) == 0
        # a connection in use when its replica is closed is not kept afterwards
        a0.delay = 0.2
        request = asyncio.create_task(post(pool, backend))
        await until(lambda: a0.pending == 1)
        await pool.close_backend(backend)
        assert (await request).status == 200
        assert pool.idle_connections(backend) == 0
        await until(lambda: a0.open_connections == 0)
        await pool.aclose()

    run(main())


def test_a_stale_idle_connection_is_replaced_transparently() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        backend = a0.backend()
        pool = UpstreamPool()
        assert (await post(pool, backend)).status == 200
        # the replica restarts on the same port: the pooled connection is dead
        await a0.stop()
        restarted = await FakeReplica("a0-again").start(a0.port)
        response = await post(pool, backend)
        assert json.loads(response.body) == {"predictions": ["a0-again"]}
        assert restarted.connections == 1
        # a replica closing an idle connection just as it is reused (a keep-alive timeout):
        # the request it never answered goes once more on a fresh connection
        restarted.mode = "close-reused"
        for _ in range(3):
            assert (await post(pool, backend)).status == 200
        assert restarted.connections == 4
        # a fresh connection closed unanswered: the replica is going away, say so
        restarted.mode = "close"
        with pytest.raises(UpstreamUnavailable):
            await post(pool, backend)
        await restarted.stop()
        with pytest.raises(UpstreamUnavailable, match="cannot connect"):
            await post(pool, backend)
        await pool.aclose()

    run(main())


def test_the_pool_reads_chunked_and_close_delimited_bodies_and_honours_connection_close() -> None:
    async def main() -> None:
        [a0] = await replicas(("a0", "a"))
        backend = a0.backend()
        pool = UpstreamPool()
        expected = {"predictions": ["a0"]}
        a0.mode = "chunked"
        for _ in range(2):
            assert json.loads((await post(pool, backend)).body) == expected
        assert a0.connections == 1  # chunked responses keep the connection
        a0.mode = "conn-close"
        for _ in range(2):
            assert json.loads((await post(pool, backend)).body) == expected
        assert a0.connections == 2 and pool.idle_connections(backend) == 0  # not kept
        a0.mode = "eof-body"
        response = await post(pool, backend)
        assert json.loads(response.body) == expected and pool.idle_connections(backend) == 0
        a0.mode = "cut"  # half an answer: it may have been served, so not retried elsewhere
        with pytest.raises(UpstreamBroken, match="mid-response"):
            await post(pool, backend)
        a0.mode = "ok"
        assert json.loads((await post(pool, backend)).body) == expected
        await pool.aclose()

    run(main())
