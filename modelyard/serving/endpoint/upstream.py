"""The proxy's HTTP/1.1 client for the endpoint's own replicas: asyncio streams, keep-alive pools.

Why not httpx or aiohttp: the proxy talks to a handful of replicas on loopback, with small
requests, and needs two things those hide: to know whether a failed request was answered at all
(a replica that restarted or is being stopped closes its connections; a request that got no byte
back may go to another replica, one that got half an answer may not), and the lowest cost per
request, since every microsecond here is added to every prediction.

Responses are parsed by httptools (llhttp, the parser under uvicorn), not by hand. Measured for a
small JSON response on this machine: httptools parses one in ~1.3 us, h11 needs ~60 us to parse
it (plus ~50 us to produce the request): h11's pure-Python state machine would cost more than a
native model's prediction. Content-Length and chunked bodies are both read (llhttp decodes
chunks); a response without either is read until the replica closes the connection.

Connections are kept per replica address (a restarted replica on the same port is the same
address), most recently used first: the freshest is the least likely to have been closed by the
replica's keep-alive timeout. One closed meanwhile is noticed before use when its end of stream
has arrived, and otherwise by getting no byte back, in which case the request is sent once more
on a fresh connection: the replica never saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelyard.errors import MissingDependency

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .routing import Backend

try:
    from httptools import HttpParserError, HttpResponseParser
except ImportError:  # pragma: no cover - the `serve` extra brings it (uvicorn[standard])
    raise MissingDependency("httptools", "serve", "an endpoint's proxy") from None

_READ_SIZE = 256 * 1024
_JOIN_LIMIT = 64 * 1024
_SKIPPED = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


class UpstreamError(Exception):
    """A request to a replica failed; `reason` says how, in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UpstreamUnavailable(UpstreamError):
    """The request was NOT answered and may safely go elsewhere: the connection was refused or
    reset, or closed by the replica before any byte of a response arrived."""


class UpstreamBroken(UpstreamError):
    """The replica began an answer and did not finish it properly (cut short, malformed): the
    request may have been served, so it is not sent elsewhere."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # names in lower case
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _NoAnswer(Exception):
    """Internal: the connection ended before any byte of the response."""


class _Connection:
    """One keep-alive connection to a replica, with its response parser (reused per response:
    llhttp starts on the next message by itself). It is its own parser's callback object."""

    __slots__ = (
        "body",
        "bounded",
        "done",
        "headers",
        "headers_done",
        "keep_alive",
        "parser",
        "reader",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.parser = HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = False
        self.headers_done = False
        self.keep_alive = False
        self.bounded = False  # the response says where its body ends (length or chunks)

    # -- parser callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self.bounded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # read here: llhttp forgets the message's flags once it is complete
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True

    # -- use -------------------------------------------------------------------------------------

    def alive(self) -> bool:
        """False when the replica has closed it (its end of stream is already here)."""
        return not (self.reader.at_eof() or self.writer.transport.is_closing())

    async def exchange(self, head: bytes, body: bytes) -> UpstreamResponse:
        self.headers = []
        self.body = []
        self.done = self.headers_done = self.keep_alive = self.bounded = False
        reader = self.reader
        answered = False
        try:
            if len(body) <= _JOIN_LIMIT:
                self.writer.write(head + body)  # one segment for the usual small request
            else:
                self.writer.write(head)  # no copy of a big body
                self.writer.write(body)
            await self.writer.drain()
            while not self.done:
                chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    if not answered:
                        raise _NoAnswer("the replica closed the connection without answering")
                    if self.headers_done and not self.bounded:
                        break  # a body delimited by the end of the connection
                    raise UpstreamBroken("the replica closed the connection mid-response")
                answered = True
                self.parser.feed_data(chunk)
        except OSError as exc:  # reset, broken pipe
            if not answered:
                raise _NoAnswer(f"the connection failed: {type(exc).__name__}") from None
            raise UpstreamBroken(
                f"the connection failed mid-response: {type(exc).__name__}"
            ) from None
        except HttpParserError as exc:
            raise UpstreamBroken(f"the replica's response is not valid HTTP: {exc}") from None
        if not self.done:
            self.keep_alive = False
        chunks = self.body
        return UpstreamResponse(
            self.parser.get_status_code(),
            self.headers,
            chunks[0] if len(chunks) == 1 else b"".join(chunks),
        )

    def close(self) -> None:
        self.writer.close()


class _Peer:
    """A replica's address: its idle connections and the request line prefix naming it."""

    __slots__ = ("closed", "host_line", "idle")

    def __init__(self, host: str, port: int):
        self.host_line = f"host: {host}:{port}\r\n".encode("latin-1")
        self.idle: list[_Connection] = []
        self.closed = False  # by close_backend: connections in use are closed when done


class UpstreamPool:
    """Keep-alive connections to the replicas, and requests over them."""

    def __init__(self, max_idle_per_backend: int = 32, connect_timeout: float = 2.0):
        self.max_idle = max_idle_per_backend
        self.connect_timeout = connect_timeout
        self._peers: dict[tuple[str, int], _Peer] = {}
        self._closed = False

    async def request(
        self,
        backend: Backend,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> UpstreamResponse:
        """Send one request to the replica and read its whole response.

        Raises UpstreamUnavailable when the replica did not answer (safe to send elsewhere),
        UpstreamBroken when it began to and failed. A cancelled request closes its connection
        (its state is unknown), so a timeout never leaves a half-read response in the pool.
        """
        peer = self._peers.get((backend.host, backend.port))
        if peer is None:
            peer = self._peers[(backend.host, backend.port)] = _Peer(backend.host, backend.port)
        head = _head(method, path, peer.host_line, headers, len(body))
        idle = peer.idle
        while idle:
            connection = idle.pop()
            if not connection.alive():
                connection.close()
                continue
            try:
                response = await connection.exchange(head, body)
            except _NoAnswer:
                connection.close()
                break  # closed while idle: the replica never saw it; once more on a fresh one
            except BaseException:
                connection.close()
                raise
            self._release(peer, connection)
            return response
        connection = await self._connect(backend)
        try:
            response = await connection.exchange(head, body)
        except _NoAnswer as exc:
            connection.close()
            raise UpstreamUnavailable(f"{backend.key}: {exc}") from None
        except BaseException:
            connection.close()
            raise
        self._release(peer, connection)
        return response

    async def close_backend(self, backend: Backend) -> None:
        """Close the replica's idle connections (it is being stopped, or was replaced)."""
        peer = self._peers.pop((backend.host, backend.port), None)
        if peer is not None:
            peer.closed = True
            await _close_all(peer.idle)

    async def aclose(self) -> None:
        self._closed = True
        peers, self._peers = self._peers, {}
        for peer in peers.values():
            peer.closed = True
        await _close_all([c for peer in peers.values() for c in peer.idle])

    def idle_connections(self, backend: Backend) -> int:
        peer = self._peers.get((backend.host, backend.port))
        return len(peer.idle) if peer is not None else 0

    async def _connect(self, backend: Backend) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
        except TimeoutError:
            raise UpstreamUnavailable(f"{backend.key}: connecting timed out") from None
        except OSError as exc:  # refused: the replica is not listening (stopped, restarting)
            reason = exc.strerror or type(exc).__name__
            raise UpstreamUnavailable(f"{backend.key}: cannot connect: {reason}") from None
        return _Connection(reader, writer)

    def _release(self, peer: _Peer, connection: _Connection) -> None:
        if (
            connection.keep_alive
            and not (self._closed or peer.closed)
            and len(peer.idle) < self.max_idle
        ):
            peer.idle.append(connection)
        else:
            connection.close()


def _head(
    method: str,
    path: str,
    host_line: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    length: int,
) -> bytes:
    if method == "HEAD":  # its response has no body whatever it declares: not supported here
        raise ValueError("the upstream pool does not send HEAD requests")
    lines = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), host_line]
    for name, value in headers:
        if name.lower() in _SKIPPED:
            continue  # ours to write: the body is sent whole, with its length
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise ValueError("a header holds a line break")
        lines += (name, b": ", value, b"\r\n")
    lines += (b"content-length: ", str(length).encode(), b"\r\n\r\n")
    return b"".join(lines)


async def _close_all(connections: list[_Connection]) -> None:
    for connection in connections:
        connection.close()
    for connection in connections:
        with contextlib.suppress(Exception):
            await connection.writer.wait_closed()
    connections.clear()
