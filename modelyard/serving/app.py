"""The model server's ASGI application: what `modelyard serve` runs.

- `POST /invocations`: what MLflow's scoring server accepts (`dataframe_split`,
  `dataframe_records`, `instances`, `inputs`, CSV), validated against the model's signature
  before the model sees it (a bad request gets 400/413/415/422 naming the field, never a 500 and
  never a model call); answers `{"predictions": [...]}` like MLflow.
- `GET /ping` (SageMaker's health check), `GET /health` (what is served, as JSON),
  `GET /metrics` (Prometheus), `GET /openapi.json` (derived from the signature), `GET /version`.

A plain ASGI callable rather than a web framework: on the hot path every microsecond of routing
and middleware is latency added to a sub-millisecond model, and there are five routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .batching import MicroBatcher
from .guards import GuardOptions, Guards, Refusal
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .payloads import Batch, PayloadError, parse_request
from .predictors import PredictError, Predictor
from .signature import InputSchema

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"


@dataclass(frozen=True)
class ServingOptions:
    max_body_bytes: int = 5 * 1024 * 1024  # bigger requests get 413 before being read
    max_rows: int = 10_000  # rows of one request
    max_batch_rows: int = 256  # rows predicted together
    max_wait: float = 0.0  # seconds a request may wait for company (0: adaptive only)


@dataclass(frozen=True)
class ServedModel:
    """What is served: the predictor, its input schema, and how to name it."""

    name: str  # "abalone/3", or the folder's name
    predictor: Predictor
    schema: InputSchema | None
    variant: str = "default"


class ModelServer:
    """An ASGI app serving one model."""

    def __init__(
        self,
        model: ServedModel,
        options: ServingOptions | None = None,
        guards: GuardOptions | None = None,
    ):
        from . import jsonio

        self.model = model
        self.options = options or ServingOptions()
        self.guards = Guards(guards or GuardOptions())
        self.metrics = ServerMetrics(model.variant)
        self.batcher = MicroBatcher(
            model.predictor.predict,
            max_rows=self.options.max_batch_rows,
            max_wait=self.options.max_wait,
            on_batch=self.metrics.observe_batch,
        )
        self.started = time.time()
        self._dumps = jsonio.dumps
        self._openapi: bytes | None = None
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/invocations"): self._invocations,
            ("GET", "/ping"): self._ping,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._openapi_document,
            ("GET", "/version"): self._version,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.guards.active:
            client = scope.get("client")
            refusal = self.guards.check(
                client[0] if client else None, scope["path"], scope["headers"]
            )
            if refusal is not None:
                await refuse(send, refusal)
                if scope["path"] == "/invocations":
                    self.metrics.observe(refusal.status, 0.0, "refused")
                return
        await dispatch(self._routes, scope, receive, send)

    # -- invocations -----------------------------------------------------------------------------

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status, kind = 200, None
        self.guards.in_flight += 1
        try:
            body = await self._body(scope, receive)
            batch = parse_request(
                body,
                header(scope, b"content-type"),
                self.model.schema,
                max_rows=self.options.max_rows,
            )
            if batch.params and self.model.predictor.takes_params:
                prediction = self._with_params(batch)  # alone: its params are its own
            else:
                prediction = self.batcher.submit(batch.columns, batch.rows)
            timeout = self.guards.options.timeout
            if timeout is not None:
                prediction = asyncio.wait_for(prediction, timeout - (time.perf_counter() - started))
            predictions = await prediction
            payload = self._dumps({"predictions": predictions})
        except TimeoutError:
            status, kind = 504, "timeout"
            payload = self._dumps(
                {"error_code": "TIMEOUT", "message": "the prediction took longer than the timeout"}
            )
        except PayloadError as exc:
            status, kind = exc.status, "bad_request"
            payload = self._dumps(exc.to_json())
        except PredictError as exc:  # the input passed the schema but the model refuses it
            status, kind = 422, "model_input"
            payload = self._dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": str(exc)})
        except Exception as exc:  # the model failed: say so without its internals
            status, kind = 500, "model_error"
            payload = self._dumps(
                {
                    "error_code": "INTERNAL_ERROR",
                    "message": f"prediction failed: {type(exc).__name__}",
                }
            )
        finally:
            self.guards.in_flight -= 1
        await respond(send, status, JSON, payload)
        self.metrics.observe(status, time.perf_counter() - started, kind)

    async def _with_params(self, batch: Batch) -> Any:
        assert batch.params is not None
        return self.model.predictor.predict_with_params(batch.columns, batch.rows, batch.params)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.options.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadError(413, f"the request body is over {limit:,} bytes", None)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise PayloadError(400, "the client went away before sending its body", None)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadError(413, f"the request body is over {limit:,} bytes", None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- the other routes ------------------------------------------------------------------------

    async def _ping(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"text/plain; charset=utf-8", b"\n")

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self.model
        health = {
            "status": "ok",
            "model": model.name,
            "variant": model.variant,
            "predictor": model.predictor.describe(),
            "inputs": list(model.schema.names) if model.schema is not None else None,
            "uptime_s": round(time.time() - self.started, 3),
            "batches": self.batcher.stats.batches,
            "requests": self.batcher.stats.requests,
        }
        await respond(send, 200, JSON, self._dumps(health))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, METRICS_CONTENT_TYPE.encode(), self.metrics.render())

    async def _openapi_document(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._openapi is None:
            from .openapi import openapi_document

            self._openapi = self._dumps(openapi_document(self.model.name, self.model.schema))
        await respond(send, 200, JSON, self._openapi)

    async def _version(self, scope: Scope, receive: Receive, send: Send) -> None:
        from importlib.metadata import version

        await respond(send, 200, b"text/plain; charset=utf-8", version("modelyard").encode())


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


async def dispatch(
    routes: Mapping[tuple[str, str], Handler], scope: Scope, receive: Receive, send: Send
) -> None:
    """Call the route of (method, path), or answer 405 (a known path) or 404."""
    route = routes.get((scope["method"], scope["path"]))
    if route is not None:
        await route(scope, receive, send)
    elif any(path == scope["path"] for _, path in routes):
        await error(send, 405, "METHOD_NOT_ALLOWED", "method not allowed here")
    else:
        await error(send, 404, "NOT_FOUND", f"no route {scope['path']}")


async def refuse(send: Send, refusal: Refusal) -> None:
    """The answer to a request the guards refused (with Retry-After when they say when)."""
    from . import jsonio

    extra = []
    if refusal.retry_after is not None:
        extra.append((b"retry-after", str(refusal.retry_after).encode()))
    body = jsonio.dumps({"error_code": refusal.code, "message": refusal.message})
    await respond(send, refusal.status, JSON, body, extra)


async def error(send: Send, status: int, code: str, message: str) -> None:
    """An error answer as MLflow's scoring server gives them: {"error_code", "message"}."""
    from . import jsonio

    await respond(send, status, JSON, jsonio.dumps({"error_code": code, "message": message}))


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def respond(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
