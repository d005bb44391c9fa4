"""The IPC client for component code: publish/subscribe to local topics through the agent.

Component code is plain Python started by the modelyard agent, which sets `SVCUID` (this
component's token) and `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT` (the agent's
Unix socket), as the Greengrass nucleus does. Standard library only, so that any component
can use it without installing anything:

    from modelyard.edge import ipc

    with ipc.connect() as client:
        client.subscribe("local/inference", lambda topic, message: ...)
        client.publish("local/result", {"score": 0.93})   # dict/list -> JSON, bytes -> binary

The API is synchronous. A background reader thread receives the agent's frames and calls the
subscription handlers (in that thread, one at a time, in arrival order). A handler may itself
call the client (publish a result, say): the reader thread then reads on until that reply
comes, and holds other messages until the handler returns. Errors from the agent raise
`IpcError(code, message)`; `UnauthorizedError` when the component's accessControl does not
allow the operation.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

SVCUID_ENV = "SVCUID"
SOCKET_PATH_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
MAX_FRAME_BYTES = 16 * 1024 * 1024  # the agent refuses larger frames (and closes the connection)
# what we accept from the agent: a message at the limit, plus the envelope the agent puts round it
_MAX_INCOMING = MAX_FRAME_BYTES + 64 * 1024
DEFAULT_TIMEOUT = 10.0
RECEIVE_ALL = "RECEIVE_ALL_MESSAGES"
RECEIVE_FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"
_HEADER = struct.Struct(">I")
_PUSHES = ("message", "component_update")

log = logging.getLogger(__name__)


class IpcError(Exception):
    """An IPC request failed; `code` is the agent's error code (or a local one)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class UnauthorizedError(IpcError):
    """The component's accessControl policies do not allow the operation on that resource."""


class AgentNotFoundError(IpcError):
    """Not running under a modelyard agent: the environment has no token or socket path."""


@dataclass(frozen=True)
class ComponentUpdate:
    """A deployment is about to update components ("pre") or has just done so ("post")."""

    phase: str
    deployment_id: str
    is_ggc_restarting: bool = False


MessageHandler = Callable[[str, Any], None]  # (topic, message: JSON value or bytes)
UpdateHandler = Callable[[ComponentUpdate], None]


class _Closed(Exception):
    """The stream ended."""


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: dict[str, Any] | None = None
        self.error: IpcError | None = None


def connect(*, timeout: float = DEFAULT_TIMEOUT) -> IpcClient:
    """Connect to the agent that started this process (from `SVCUID` and the socket path)."""
    token = os.environ.get(SVCUID_ENV)
    if not token:
        raise AgentNotFoundError(
            "NO_AGENT", f"not running under a modelyard agent ({SVCUID_ENV} is not set)"
        )
    path = os.environ.get(SOCKET_PATH_ENV)
    if not path:
        raise AgentNotFoundError(
            "NO_AGENT", f"not running under a modelyard agent ({SOCKET_PATH_ENV} is not set)"
        )
    return IpcClient(path, token, timeout=timeout)


class Subscription:
    """An open subscription; `close()` ends it (and is safe to call twice)."""

    def __init__(self, client: IpcClient, sid: str, topic: str | None) -> None:
        self._client = client
        self.id = sid
        self.topic = topic
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._client._unsubscribe(self.id)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class IpcClient:
    """A connection to the agent's IPC broker, authenticated as one component."""

    def __init__(self, socket_path: str, token: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._ids = itertools.count(1)
        self._held: deque[dict[str, Any]] = deque()  # pushes that came during a handler
        self._in_handler = False
        self._closed = False
        self._error: IpcError | None = None
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(socket_path)
        except OSError as exc:
            self._sock.close()
            raise IpcError(
                "CONNECTION_FAILED",
                f"cannot connect to the agent's IPC socket {socket_path}: {exc.strerror or exc}",
            ) from None
        self._sock.settimeout(None)
        try:
            self._send({"op": "connect", "id": 0, "token": token})
            reply = self._read_frame(time.monotonic() + timeout)
        except (_Closed, OSError) as exc:
            self._sock.close()
            raise IpcError("CONNECTION_FAILED", f"the agent closed the connection: {exc}") from None
        except IpcError:
            self._sock.close()
            raise
        if not reply.get("ok"):
            self._sock.close()
            raise _error_from(reply)
        self.component: str = str(reply.get("component", ""))
        self._reader = threading.Thread(
            target=self._read_loop, name=f"modelyard-ipc-{self.component}", daemon=True
        )
        self._reader.start()

    # ---- operations -----------------------------------------------------------------------

    def publish(self, topic: str, message: Any, *, timeout: float | None = None) -> None:
        """Publish to a local topic; returns once the agent accepted it (raises if denied).

        bytes-like -> a binary message; anything else must be JSON-serializable.
        """
        self._request(
            {"op": "publish", "topic": topic, "message": encode_message(message)}, timeout
        )

    def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        receive_mode: str | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Subscribe to a topic or MQTT filter (`+`, `#`); `handler(topic, message)` per message.

        `receive_mode`: RECEIVE_ALL_MESSAGES or RECEIVE_MESSAGES_FROM_OTHERS (the default for
        filters with wildcards, as in Greengrass).
        """

        def dispatch(frame: dict[str, Any]) -> None:
            handler(str(frame.get("topic")), decode_message(frame.get("message")))

        request: dict[str, Any] = {"op": "subscribe", "topic": topic}
        if receive_mode is not None:
            request["receive_mode"] = receive_mode
        return self._open_subscription(request, dispatch, topic, timeout)

    def subscribe_to_component_updates(
        self, handler: UpdateHandler, *, timeout: float | None = None
    ) -> Subscription:
        """`handler(ComponentUpdate)` before ("pre") and after ("post") each update.

        Answer a "pre" with `defer_component_update` (or `acknowledge_component_update`),
        or the agent waits for you until its timeout.
        """

        def dispatch(frame: dict[str, Any]) -> None:
            handler(
                ComponentUpdate(
                    phase=str(frame.get("phase")),
                    deployment_id=str(frame.get("deployment_id")),
                    is_ggc_restarting=bool(frame.get("is_ggc_restarting")),
                )
            )

        request = {"op": "subscribe_to_component_updates"}
        return self._open_subscription(request, dispatch, None, timeout)

    def defer_component_update(
        self, deployment_id: str, recheck_after_ms: int, message: str = ""
    ) -> None:
        """Ask the agent to postpone the update by `recheck_after_ms` (0: go ahead now)."""
        self._request(
            {
                "op": "defer_component_update",
                "deployment_id": deployment_id,
                "recheck_after_ms": recheck_after_ms,
                "message": message,
            },
            None,
        )

    def acknowledge_component_update(self, deployment_id: str) -> None:
        """Let the update go ahead (a deferral of 0 ms, as in Greengrass)."""
        self.defer_component_update(deployment_id, 0)

    def get_configuration(
        self, key_path: list[str] | None = None, *, component_name: str | None = None
    ) -> Any:
        """This component's configuration (or `component_name`'s), at `key_path` if given."""
        request: dict[str, Any] = {"op": "get_configuration", "key_path": list(key_path or [])}
        if component_name is not None:
            request["component_name"] = component_name
        return self._request(request, None).get("value")

    def close(self) -> None:
        """Close the connection (the agent drops this client's subscriptions)."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=self.timeout)
        self._sock.close()

    def __enter__(self) -> IpcClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- requests -----------------------------------------------------------------------

    def _open_subscription(
        self,
        request: dict[str, Any],
        dispatch: Callable[[dict[str, Any]], None],
        topic: str | None,
        timeout: float | None,
    ) -> Subscription:
        # the handler is in place before the request leaves: no message can come first
        request_id = next(self._ids)
        sid = str(request_id)
        self._handlers[sid] = dispatch
        try:
            self._request(request, timeout, request_id=request_id)
        except BaseException:
            self._handlers.pop(sid, None)
            raise
        return Subscription(self, sid, topic)

    def _unsubscribe(self, sid: str) -> None:
        self._handlers.pop(sid, None)  # no more calls, even for messages already on the way
        if self._closed or self._error is not None:
            return
        self._request({"op": "unsubscribe", "subscription": sid}, None)

    def _request(
        self,
        payload: dict[str, Any],
        timeout: float | None,
        *,
        request_id: int | None = None,
    ) -> dict[str, Any]:
        if self._closed:
            raise IpcError("CONNECTION_CLOSED", "the IPC client is closed")
        if self._error is not None:
            raise self._error
        request_id = next(self._ids) if request_id is None else request_id
        payload["id"] = request_id
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if threading.current_thread() is self._reader:
            return self._request_from_handler(payload, deadline)
        waiter = _Waiter()
        with self._state_lock:  # checked again under the lock `_fail` takes: no lost wakeup
            if self._error is not None:
                raise self._error
            self._waiters[request_id] = waiter
        try:
            self._send(payload)
            if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
                raise IpcError("TIMEOUT", f"no answer from the agent to {payload['op']} in time")
        finally:
            with self._state_lock:
                self._waiters.pop(request_id, None)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None
        return _result(waiter.reply)

    def _request_from_handler(self, payload: dict[str, Any], deadline: float) -> dict[str, Any]:
        # we are the reader: nobody else will read our reply, so read on until it comes
        self._send(payload)
        while True:
            try:
                frame = self._read_frame(deadline)
            except (_Closed, OSError):
                raise self._fail(self._error or _closed_error()) from None
            except IpcError as exc:
                if exc.code == "TIMEOUT":
                    raise
                raise self._fail(exc) from None
            if frame.get("id") == payload["id"] and frame.get("op") not in _PUSHES:
                return _result(frame)
            self._route(frame)

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        if len(body) > MAX_FRAME_BYTES:
            raise IpcError(
                "FRAME_TOO_LARGE",
                f"the request is {len(body)} bytes, over the agent's limit of {MAX_FRAME_BYTES}",
            )
        try:
            with self._send_lock:
                self._sock.sendall(_HEADER.pack(len(body)) + body)
        except OSError:
            raise self._error or _closed_error() from None

    # ---- reading ----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                self._route(self._read_frame(None))
                while self._held:
                    self._dispatch(self._held.popleft())
        except IpcError as exc:  # a broken frame: this connection is unusable
            self._fail(exc)
        except (_Closed, OSError):
            pass
        finally:
            self._fail(self._error or _closed_error())

    def _route(self, frame: dict[str, Any]) -> None:
        if frame.get("op") in _PUSHES:
            if self._in_handler:
                self._held.append(frame)
            else:
                self._dispatch(frame)
            return
        request_id = frame.get("id")
        if request_id is None:  # the agent is closing this connection, and says why
            self._error = _error_from(frame)
            return
        with self._state_lock:
            waiter = self._waiters.get(request_id) if isinstance(request_id, int) else None
        if waiter is not None:
            waiter.reply = frame
            waiter.event.set()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        dispatch = self._handlers.get(str(frame.get("subscription")))
        if dispatch is None:
            return  # closed meanwhile
        self._in_handler = True
        try:
            dispatch(frame)
        except Exception:
            log.exception("an IPC subscription handler failed (the subscription stays open)")
        finally:
            self._in_handler = False

    def _fail(self, error: IpcError) -> IpcError:
        """Fail every waiting request (the connection is gone)."""
        with self._state_lock:
            if self._error is None:
                self._error = error
            failure = self._error
            waiters = list(self._waiters.values())
        for waiter in waiters:
            waiter.error = failure
            waiter.event.set()
        return failure

    def _read_frame(self, deadline: float | None) -> dict[str, Any]:
        # the deadline applies until a frame starts: a frame is then read whole, so that a
        # timeout never leaves the stream in the middle of one
        if deadline is not None:
            ready, _, _ = select.select([self._sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise IpcError("TIMEOUT", "no answer from the agent in time")
        (length,) = _HEADER.unpack(self._recv_exact(_HEADER.size))
        if length > _MAX_INCOMING:
            raise IpcError("FRAME_TOO_LARGE", f"the agent sent a frame of {length} bytes")
        try:
            frame = json.loads(self._recv_exact(length))
        except ValueError:
            raise IpcError("BAD_FRAME", "the agent sent a frame that is not JSON") from None
        if not isinstance(frame, dict):
            raise IpcError("BAD_FRAME", "the agent sent a frame that is not an object")
        return frame

    def _recv_exact(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self._sock.recv(min(size - len(chunks), 1 << 20))
            if not chunk:
                raise _Closed("the agent closed the IPC connection")
            chunks += chunk
        return bytes(chunks)


def encode_message(message: Any) -> dict[str, Any]:
    """The wire form of a message: bytes-like -> {"binary": base64}, else {"json": value}."""
    if isinstance(message, bytes | bytearray | memoryview):
        return {"binary": base64.b64encode(bytes(message)).decode("ascii")}
    try:
        json.dumps(message, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"an IPC message must be bytes or JSON-serializable (dict, list, ...): {exc}"
        ) from None
    return {"json": message}


def decode_message(message: Any) -> Any:
    """The value of a received message: a JSON value, or bytes for a binary message."""
    if isinstance(message, dict) and "binary" in message:
        return base64.b64decode(message["binary"])
    if isinstance(message, dict):
        return message.get("json")
    return message


def _result(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("ok"):
        raise _error_from(reply)
    return reply


def _error_from(reply: dict[str, Any]) -> IpcError:
    error = reply.get("error") if isinstance(reply.get("error"), dict) else {}
    assert isinstance(error, dict)
    code = str(error.get("code", "SERVICE_ERROR"))
    message = str(error.get("message", "the agent refused the request"))
    if code == "UNAUTHORIZED":
        return UnauthorizedError(code, message)
    return IpcError(code, message)


def _closed_error() -> IpcError:
    return IpcError("CONNECTION_CLOSED", "the agent closed the IPC connection")
