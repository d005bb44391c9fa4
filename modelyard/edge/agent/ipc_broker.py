"""Local publish/subscribe for components: the agent's IPC server on a Unix socket.

Greengrass v2 components talk to each other through the nucleus's IPC; this is ours. The agent
`register`s each component with its authorization `Policies` and gets a random token, which it
hands to the component's processes in the environment (`SVCUID`, as Greengrass does, and the
socket path in `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`). Component code connects
with `modelyard.edge.ipc` (standard library only).

Protocol: frames of a 4-byte big-endian length and a JSON object (at most `MAX_FRAME_BYTES`).
The first frame is {"op": "connect", "id", "token"}; then requests, each with an "id" and
answered {"id", "ok": true, ...} or {"id", "ok": false, "error": {"code", "message"}}:

- publish {topic, message: {"json": value} | {"binary": base64}}
- subscribe {topic (an MQTT filter: + and #), receive_mode?} -> the request id is the
  subscription id; messages come as {"op": "message", "subscription", "topic", "message"}
- unsubscribe {subscription}
- subscribe_to_component_updates -> {"op": "component_update", "subscription", "phase":
  "pre" | "post", "deployment_id", "is_ggc_restarting"}
- defer_component_update {deployment_id, recheck_after_ms, message} (0 ms: go ahead)
- get_configuration {key_path: [...], component_name?}

Every publish and subscribe is checked against the component's policies; a denial is an
error reply (code UNAUTHORIZED) and an `on_denied` call, and the connection stays open. A
broken frame (bad length, too large, not a JSON object) closes that connection only. Each
connection has a bounded queue of outgoing messages: a slow subscriber loses its oldest
messages (counted in `stats`) and never blocks a publisher.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import secrets
import socket
import stat
import struct
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from modelyard.edge.agent.policy import (
    PUBLISH_TO_TOPIC,
    PUBSUB_SERVICE,
    SUBSCRIBE_TO_TOPIC,
    Policies,
    filter_problem,
    has_wildcards,
    topic_matches,
    topic_problem,
)

SVCUID_ENV = "SVCUID"
SOCKET_PATH_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
MAX_FRAME_BYTES = 16 * 1024 * 1024
DEFAULT_QUEUE_SIZE = 1024  # messages per connection
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024  # and bytes: a few large messages must not exhaust memory
CONNECT_TIMEOUT = 10.0  # seconds a new connection has to send its token
MAX_SUBSCRIPTIONS = 1024  # per connection: a runaway loop should not eat the device's memory
_CONTROL_HIGH_WATER = 256  # replies a client leaves unread before we stop reading its requests
_WRITE_BATCH = 64
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with the trailing NUL
_HEADER = struct.Struct(">I")
RECEIVE_ALL = "RECEIVE_ALL_MESSAGES"
RECEIVE_FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"

# error codes in replies
UNAUTHORIZED = "UNAUTHORIZED"
UNAUTHENTICATED = "UNAUTHENTICATED"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
UNKNOWN_OPERATION = "UNKNOWN_OPERATION"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
BAD_FRAME = "BAD_FRAME"
FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
SERVICE_ERROR = "SERVICE_ERROR"

log = logging.getLogger(__name__)

OnDenied = Callable[[str, str, str], None]  # (component, operation, topic)
ConfigurationProvider = Callable[[str], Mapping[str, Any] | None]  # component -> its config
Bridge = Callable[[str, Any], None]  # (topic, message: JSON value or bytes)


class IpcBrokerError(RuntimeError):
    """The broker cannot do what the agent asked (socket path, unknown component, ...)."""


class _RequestError(Exception):
    """A request that gets an error reply; the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _FrameError(_RequestError):
    """A frame we cannot read: the reply says why, then the connection is closed."""


@dataclass(frozen=True)
class Deferral:
    """A component's request to postpone an update (DeferComponentUpdate)."""

    component: str
    deployment_id: str
    recheck_after_ms: int
    message: str = ""


@dataclass(frozen=True)
class BrokerStats:
    connections: int  # open and authenticated now
    connections_total: int  # authenticated since start
    connections_refused: int  # bad token, broken first frame
    messages_published: int
    messages_delivered: int  # pushed to a subscriber's queue
    denials: int
    drops: int  # messages a slow subscriber's full queue lost (the oldest ones)
    drops_by_component: dict[str, int] = field(default_factory=dict)


@dataclass
class _Subscription:
    sid: str
    kind: str  # "topic" | "updates"
    topic_filter: str = ""
    from_self: bool = True  # receive this component's own messages


@dataclass
class _PendingUpdate:
    waiting: set[str]
    responses: dict[str, Deferral] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, component: str) -> None:
        self.waiting.discard(component)
        if not self.waiting:
            self.done.set()


def _frame(payload: Mapping[str, Any]) -> bytes:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(len(body)) + body


class _Connection:
    """One client: its subscriptions and its outgoing queues, written by one task."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        queue_size: int,
        queue_bytes: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.component: str | None = None
        self.subscriptions: dict[str, _Subscription] = {}
        self.task: asyncio.Task[Any] | None = None
        # replies and update events: never dropped (the client waits for them)
        self.control: deque[bytes] = deque()
        # pub/sub messages: bounded, the oldest dropped when full
        self.messages: deque[bytes] = deque()
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.control_space = asyncio.Event()
        self.closing = False
        self.writer_task = asyncio.get_running_loop().create_task(self._write_loop())

    def send_control(self, payload: Mapping[str, Any]) -> None:
        self.control.append(_frame(payload))
        self.wakeup.set()

    def push_message(self, frame: bytes) -> int:
        """Queue a message, dropping the oldest ones to make room; returns how many it dropped."""
        dropped = 0
        while self.messages and (
            len(self.messages) >= self.queue_size
            or self.queued_bytes + len(frame) > self.queue_bytes
        ):
            self.queued_bytes -= len(self.messages.popleft())
            dropped += 1
        self.messages.append(frame)
        self.queued_bytes += len(frame)
        self.wakeup.set()
        return dropped

    async def _write_loop(self) -> None:
        try:
            while True:
                while not self.control and not self.messages:
                    if self.closing:
                        return
                    self.wakeup.clear()
                    await self.wakeup.wait()
                batch = list(self.control)
                self.control.clear()
                self.control_space.set()
                for _ in range(min(_WRITE_BATCH, len(self.messages))):
                    batch.append(self.messages.popleft())
                    self.queued_bytes -= len(batch[-1])
                self.writer.write(b"".join(batch))
                await self.writer.drain()  # a slow reader blocks only this task
        except (ConnectionError, OSError):
            self.messages.clear()
            self.queued_bytes = 0

    async def wait_control_space(self) -> None:
        while len(self.control) > _CONTROL_HIGH_WATER and not self.writer_task.done():
            self.control_space.clear()
            await self.control_space.wait()

    async def flush(self, timeout: float) -> None:
        """Write what is queued (the last error reply), then stop the writer."""
        self.closing = True
        self.wakeup.set()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(asyncio.shield(self.writer_task), timeout)

    async def close(self) -> None:
        self.closing = True
        self.writer_task.cancel()
        self.writer.close()
        await asyncio.gather(self.writer_task, return_exceptions=True)

    async def read_frame(self, max_bytes: int) -> dict[str, Any] | None:
        """The next frame's object, or None at a clean end of stream."""
        try:
            header = await self.reader.readexactly(_HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise _FrameError(BAD_FRAME, "the stream ended inside a frame header") from None
        (length,) = _HEADER.unpack(header)
        if length > max_bytes:
            raise _FrameError(
                FRAME_TOO_LARGE, f"a frame of {length} bytes is over the limit of {max_bytes}"
            )
        if length == 0:
            raise _FrameError(BAD_FRAME, "an empty frame")
        try:
            body = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise _FrameError(BAD_FRAME, "the stream ended inside a frame") from None
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _FrameError(BAD_FRAME, f"a frame is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _FrameError(BAD_FRAME, "a frame must be a JSON object")
        return payload


class IpcBroker:
    """The agent's local pub/sub server. Run it in an asyncio loop: `await start()`, `close()`.

    `register`/`unregister` may be called from any thread; the rest from the loop's thread.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        on_denied: OnDenied | None = None,
        configuration: ConfigurationProvider | None = None,
        bridge: Bridge | None = None,
        bridge_topics: Sequence[str] = (),
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        for topic_filter in bridge_topics:
            problem = filter_problem(topic_filter)
            if problem:
                raise IpcBrokerError(f"bridge_topics: {problem}")
        if queue_size < 1 or queue_bytes < 1:
            raise IpcBrokerError(
                f"queue_size and queue_bytes must be at least 1, not {queue_size}, {queue_bytes}"
            )
        self.socket_path = Path(socket_path)
        self._on_denied = on_denied
        self._configuration = configuration
        self._bridge = bridge
        self._bridge_topics = tuple(bridge_topics)
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._max_frame = max_frame_bytes
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()  # guards the registry: the agent may call from its thread
        self._tokens: dict[str, str] = {}  # component -> token
        self._policies: dict[str, Policies] = {}
        self._connections: set[_Connection] = set()
        self._pending_updates: dict[str, _PendingUpdate] = {}
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counts = dict.fromkeys(
            ("total", "refused", "published", "delivered", "denials", "drops"), 0
        )
        self._drops_by_component: dict[str, int] = {}
        self._ops: dict[str, Callable[[_Connection, dict[str, Any]], dict[str, Any]]] = {
            "publish": self._publish,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "subscribe_to_component_updates": self._subscribe_to_updates,
            "defer_component_update": self._defer_update,
            "get_configuration": self._get_configuration,
        }

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise IpcBrokerError("the IPC broker is already started")
        self._loop = asyncio.get_running_loop()
        _prepare_socket_path(self.socket_path)
        self._closing = False
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        # the 0700 folder already keeps others out between bind and this chmod
        os.chmod(self.socket_path, 0o600)
        log.info("IPC broker listening on %s", self.socket_path)

    async def close(self) -> None:
        """Stop listening, close every connection, end pending update notifications."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._closing = True
        handlers = dict(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in handlers.values():
            writer.close()  # also those whose task was cancelled before it ever ran
        for pending in self._pending_updates.values():
            pending.done.set()
        if server is not None:
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    async def __aenter__(self) -> IpcBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- components -----------------------------------------------------------------------

    def register(self, component: str, policies: Policies) -> str:
        """Allow `component` to connect; returns its token (the same one if already registered:
        its running processes keep working, under the new policies)."""
        with self._lock:
            token = self._tokens.get(component) or secrets.token_urlsafe(32)
            self._tokens[component] = token
            self._policies[component] = policies
        return token

    def unregister(self, component: str) -> None:
        """Forget `component`'s token and close its connections."""
        with self._lock:
            self._tokens.pop(component, None)
            self._policies.pop(component, None)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._close_component(component)
        else:
            loop.call_soon_threadsafe(self._close_component, component)

    def environment(self, component: str) -> dict[str, str]:
        """The variables the agent sets for `component`'s processes."""
        with self._lock:
            token = self._tokens.get(component)
        if token is None:
            raise IpcBrokerError(f"{component} is not registered with the IPC broker")
        return {SVCUID_ENV: token, SOCKET_PATH_ENV: str(self.socket_path)}

    def _close_component(self, component: str) -> None:
        for conn in list(self._connections):
            if conn.component == component and conn.task is not None:
                conn.task.cancel()

    def _component_for(self, token: Any) -> str | None:
        if not isinstance(token, str):
            return None
        with self._lock:
            for component, known in self._tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return component
        return None

    @property
    def stats(self) -> BrokerStats:
        counts = self._counts
        return BrokerStats(
            connections=sum(1 for c in self._connections if c.component is not None),
            connections_total=counts["total"],
            connections_refused=counts["refused"],
            messages_published=counts["published"],
            messages_delivered=counts["delivered"],
            denials=counts["denials"],
            drops=counts["drops"],
            drops_by_component=dict(self._drops_by_component),
        )

    # ---- component updates --------------------------------------------------------------

    async def notify_update(
        self, deployment_id: str, timeout: float, *, is_ggc_restarting: bool = False
    ) -> list[Deferral]:
        """Tell subscribed components an update is coming; collect their deferrals.

        Waits until every subscribed component answered (a deferral, or 0 ms: go ahead), its
        connections closed, or `timeout` seconds passed. Returns the deferrals (> 0 ms).
        """
        if deployment_id in self._pending_updates:
            raise IpcBrokerError(f"deployment {deployment_id} is already being notified")
        components = self._push_update("pre", deployment_id, is_ggc_restarting)
        pending = _PendingUpdate(waiting=set(components))
        if not components:
            return []
        self._pending_updates[deployment_id] = pending
        try:
            await asyncio.wait_for(pending.done.wait(), timeout)
        except TimeoutError:
            log.info(
                "deployment %s: no answer to the update notice within %ss from %s",
                deployment_id,
                timeout,
                ", ".join(sorted(pending.waiting)),
            )
        finally:
            del self._pending_updates[deployment_id]
        return [d for d in pending.responses.values() if d.recheck_after_ms > 0]

    def notify_updated(self, deployment_id: str) -> None:
        """Tell subscribed components the update is done (PostComponentUpdateEvent)."""
        self._push_update("post", deployment_id, False)

    def _push_update(self, phase: str, deployment_id: str, restarting: bool) -> set[str]:
        notified: set[str] = set()
        for conn in self._connections:
            for sub in conn.subscriptions.values():
                if sub.kind == "updates" and conn.component is not None:
                    event = {
                        "op": "component_update",
                        "subscription": sub.sid,
                        "phase": phase,
                        "deployment_id": deployment_id,
                        "is_ggc_restarting": restarting,
                    }
                    conn.send_control(event)
                    notified.add(conn.component)
        return notified

    # ---- connections --------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback, not a coroutine: the task is known from the start, so `close`
        # can end it (and close its socket) even if it has not run yet
        if self._closing:
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._handlers[task] = writer
        task.add_done_callback(self._handlers.pop)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer, self._queue_size, self._queue_bytes)
        conn.task = asyncio.current_task()
        self._connections.add(conn)
        try:
            await self._authenticate(conn)
            while True:
                frame = await conn.read_frame(self._max_frame)
                if frame is None:
                    break
                await self._handle(conn, frame)
                await conn.wait_control_space()
        except _FrameError as exc:
            if conn.component is None:
                self._counts["refused"] += 1
            log.warning(
                "IPC connection of %s closed: %s", conn.component or "(unknown)", exc.message
            )
            conn.send_control(_error_reply(None, exc.code, exc.message))
            await conn.flush(timeout=1.0)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # unregister or close: end quietly, the task is ours
        finally:
            self._drop(conn)
            await conn.close()

    async def _authenticate(self, conn: _Connection) -> None:
        try:
            frame = await asyncio.wait_for(conn.read_frame(self._max_frame), self._connect_timeout)
        except TimeoutError:
            raise _FrameError(
                UNAUTHENTICATED, f"no connect frame within {self._connect_timeout}s"
            ) from None
        if frame is None:
            raise _FrameError(UNAUTHENTICATED, "the connection closed before connecting")
        if frame.get("op") != "connect":
            raise _FrameError(UNAUTHENTICATED, 'the first frame must be {"op": "connect", ...}')
        component = self._component_for(frame.get("token"))
        if component is None:
            raise _FrameError(
                UNAUTHENTICATED,
                f"the token ({SVCUID_ENV}) is not one this agent issued; connect from a "
                "process the agent started for the component",
            )
        conn.component = component
        self._counts["total"] += 1
        conn.send_control({"id": frame.get("id"), "ok": True, "component": component})

    async def _handle(self, conn: _Connection, frame: dict[str, Any]) -> None:
        request_id = frame.get("id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            conn.send_control(
                _error_reply(None, INVALID_ARGUMENTS, "every request needs an id (string or int)")
            )
            return
        op = frame.get("op")
        operation = self._ops.get(op) if isinstance(op, str) else None
        try:
            if operation is None:
                raise _RequestError(
                    UNKNOWN_OPERATION,
                    f"unknown op {op!r}; one of {', '.join(sorted(self._ops))}",
                )
            result = operation(conn, frame)
            reply = _frame({"id": request_id, "ok": True, **result})
        except _RequestError as exc:
            reply = _frame(_error_reply(request_id, exc.code, exc.message))
        except Exception:
            log.exception("IPC request %s of %s failed", frame.get("op"), conn.component)
            reply = _frame(_error_reply(request_id, SERVICE_ERROR, "the agent failed; see its log"))
        conn.control.append(reply)
        conn.wakeup.set()

    def _drop(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        component = conn.component
        had_updates = any(s.kind == "updates" for s in conn.subscriptions.values())
        conn.subscriptions.clear()
        if component is None or not had_updates:
            return
        still = any(
            c.component == component and any(s.kind == "updates" for s in c.subscriptions.values())
            for c in self._connections
        )
        if not still:  # nobody left to answer for it: don't wait for it
            for pending in self._pending_updates.values():
                pending.answered(component)

    def _policies_of(self, component: str) -> Policies:
        with self._lock:
            policies = self._policies.get(component)
        if policies is None:
            raise _RequestError(UNAUTHENTICATED, f"{component} is no longer registered")
        return policies

    def _authorize(self, component: str, operation: str, resource: str) -> None:
        if self._policies_of(component).allows(component, operation, resource):
            return
        self._counts["denials"] += 1
        if self._on_denied is not None:
            try:
                self._on_denied(component, operation, resource)
            except Exception:
                log.exception("the on_denied callback failed")
        raise _RequestError(
            UNAUTHORIZED,
            f"{component} is not authorized to perform {PUBSUB_SERVICE}:{operation} on "
            f"resource {resource}; allow it in the component's accessControl configuration",
        )

    # ---- operations ---------------------------------------------------------------------

    def _publish(self, conn: _Connection, frame: dict[str, Any]) -> dict[str, Any]:
        component = _component(conn)
        topic = frame.get("topic")
        problem = topic_problem(topic)
        if problem:
            raise _RequestError(INVALID_ARGUMENTS, problem)
        assert isinstance(topic, str)
        message, value = _read_message(frame.get("message"))
        self._authorize(component, PUBLISH_TO_TOPIC, topic)
        self._counts["published"] += 1
        # the message is encoded once and spliced into each subscriber's frame
        head = json.dumps(topic)
        body = json.dumps(message, separators=(",", ":"))
        for target in list(self._connections):
            for sub in target.subscriptions.values():
                if sub.kind != "topic" or not topic_matches(sub.topic_filter, topic):
                    continue
                if not sub.from_self and target.component == component:
                    continue
                payload = (
                    f'{{"op":"message","subscription":{json.dumps(sub.sid)},'
                    f'"topic":{head},"message":{body}}}'
                ).encode()
                self._counts["delivered"] += 1
                dropped = target.push_message(_HEADER.pack(len(payload)) + payload)
                if dropped:
                    self._count_drop(target, dropped)
        if self._bridge is not None and any(topic_matches(f, topic) for f in self._bridge_topics):
            try:
                self._bridge(topic, value)
            except Exception:
                log.exception("the IPC bridge callback failed for topic %s", topic)
        return {}

    def _count_drop(self, conn: _Connection, dropped: int) -> None:
        name = conn.component or "(unknown)"
        before = self._drops_by_component.get(name, 0)
        self._counts["drops"] += dropped
        self._drops_by_component[name] = before + dropped
        # log the first drop, then once per power of ten: a stuck subscriber must not flood
        if before == 0 or len(str(before)) != len(str(before + dropped)):
            log.warning(
                "IPC subscriber %s is too slow: %d messages dropped so far (its queue holds "
                "%d messages, %d bytes)",
                name,
                before + dropped,
                self._queue_size,
                self._queue_bytes,
            )

    def _subscribe(self, conn: _Connection, frame: dict[str, Any]) -> dict[str, Any]:
        component = _component(conn)
        topic_filter = frame.get("topic")
        problem = filter_problem(topic_filter)
        if problem:
            raise _RequestError(INVALID_ARGUMENTS, problem)
        assert isinstance(topic_filter, str)
        mode = frame.get("receive_mode")
        if mode is None:  # Greengrass's default: own messages only on exact topics
            mode = RECEIVE_FROM_OTHERS if has_wildcards(topic_filter) else RECEIVE_ALL
        if mode not in (RECEIVE_ALL, RECEIVE_FROM_OTHERS):
            raise _RequestError(
                INVALID_ARGUMENTS,
                f"receive_mode must be {RECEIVE_ALL} or {RECEIVE_FROM_OTHERS}, not {mode!r}",
            )
        self._authorize(component, SUBSCRIBE_TO_TOPIC, topic_filter)
        sid = self._new_subscription_id(conn, frame)
        conn.subscriptions[sid] = _Subscription(
            sid, "topic", topic_filter, from_self=mode == RECEIVE_ALL
        )
        return {"subscription": sid}

    def _new_subscription_id(self, conn: _Connection, frame: dict[str, Any]) -> str:
        sid = str(frame["id"])
        if sid in conn.subscriptions:
            raise _RequestError(INVALID_ARGUMENTS, f"subscription id {sid} is already in use")
        if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise _RequestError(
                LIMIT_EXCEEDED, f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            )
        return sid

    def _unsubscribe(self, conn: _Connection, frame: dict[str, Any]) -> dict[str, Any]:
        sid = frame.get("subscription")
        if conn.subscriptions.pop(str(sid), None) is None:
            raise _RequestError(RESOURCE_NOT_FOUND, f"no subscription {sid!r} on this connection")
        return {}

    def _subscribe_to_updates(self, conn: _Connection, frame: dict[str, Any]) -> dict[str, Any]:
        sid = self._new_subscription_id(conn, frame)
        conn.subscriptions[sid] = _Subscription(sid, "updates")
        return {"subscription": sid}

    def _defer_update(self, conn: _Connection, frame: dict[str, Any]) -> dict[str, Any]:
        component = _component(conn)
        deployment_id = frame.get("deployment_id")
        recheck = frame.get("recheck_after_ms", 0)
        message = frame.get("message") or ""
        if not isinstance(deployment_id, str) or not deployment_id:
            raise _RequestError(INVALID_ARGUMENTS, "deployment_id must be a non-empty string")
        if not isinstance(recheck, int) or isinstance(recheck, bool) or recheck < 0:
            raise _RequestError(
                INVALID_ARGUMENTS, f"recheck_after_ms must be an integer >= 0, not {recheck!r}"
            )
        if not isinstance(message, str):
            raise _RequestError(INVALID_ARGUMENTS, "message must be a string")
        pending = self._pending_updates.get(deployment_id)
        if pending is None:
            raise _RequestError(
                RESOURCE_NOT_FOUND,
                f"no update of deployment {deployment_id} is waiting for answers (it may "
                "have timed out)",
            )
        pending.responses[component] = Deferral(component, deployment_id, recheck, message)
        pending.answered(component)
        return {}

    def _get_configuration(self, conn: _Connection, frame: dict[str, Any]) -> dict[str, Any]:
        name = frame.get("component_name") or _component(conn)
        key_path = frame.get("key_path") or []
        if not isinstance(name, str):
            raise _RequestError(INVALID_ARGUMENTS, "component_name must be a string")
        if not isinstance(key_path, list) or not all(isinstance(k, str) for k in key_path):
            raise _RequestError(INVALID_ARGUMENTS, "key_path must be a list of strings")
        config = self._configuration(name) if self._configuration is not None else None
        if config is None:
            raise _RequestError(RESOURCE_NOT_FOUND, f"no configuration for component {name}")
        value: Any = config
        for depth, key in enumerate(key_path):
            if not isinstance(value, Mapping) or key not in value:
                where = "/".join(key_path[: depth + 1])
                raise _RequestError(RESOURCE_NOT_FOUND, f"{name} has no configuration key {where}")
            value = value[key]
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise _RequestError(
                SERVICE_ERROR, f"the configuration of {name} at {key_path} is not JSON"
            ) from None
        return {"component": name, "value": value}


def _component(conn: _Connection) -> str:
    assert conn.component is not None  # requests come only after connect
    return conn.component


def _error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _read_message(message: Any) -> tuple[dict[str, Any], Any]:
    """The message as sent on ({"json": ...} or {"binary": base64}) and its decoded value."""
    if not isinstance(message, dict) or len(message) != 1:
        raise _RequestError(
            INVALID_ARGUMENTS, 'message must be {"json": value} or {"binary": base64 string}'
        )
    if "json" in message:
        return message, message["json"]
    data = message.get("binary")
    if not isinstance(data, str):
        raise _RequestError(
            INVALID_ARGUMENTS, 'message must be {"json": value} or {"binary": base64 string}'
        )
    try:
        return message, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _RequestError(INVALID_ARGUMENTS, "message.binary is not valid base64") from None


def _prepare_socket_path(path: Path) -> None:
    """A private folder (0700) for the socket, and no stale socket in the way."""
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        raise IpcBrokerError(
            f"the IPC socket path {path} is too long for a Unix socket "
            f"(at most {_SOCKET_PATH_MAX} bytes); choose a shorter agent root folder"
        )
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        os.chmod(folder, 0o700)  # the umask may have taken bits away, never added: be exact
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise IpcBrokerError(
            f"the IPC socket folder {folder} is open to other users (mode {mode:o}); "
            f"use a folder only the agent's user can enter (chmod 700 {folder})"
        )
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise IpcBrokerError(f"{path} exists and is not a socket; remove it or choose another")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # a socket nobody listens on: left by an agent that died
    else:
        raise IpcBrokerError(f"another agent is already listening on {path}")
    finally:
        probe.close()
