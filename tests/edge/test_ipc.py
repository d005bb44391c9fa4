"""Local pub/sub IPC: the agent's broker on a real Unix socket, and the component client.

The broker runs in an asyncio loop on a thread of its own; clients run in the test's thread,
in their reader threads, and in one test in a separate process started with the environment
the agent gives a component.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import select
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from modelyard.edge import ipc
from modelyard.edge.agent import ipc_broker
from modelyard.edge.agent.ipc_broker import BrokerStats, Deferral, IpcBroker, IpcBrokerError
from modelyard.edge.agent.policy import PUBLISH_TO_TOPIC, PUBSUB_SERVICE, Policies
from modelyard.edge.ipc import IpcClient, IpcError, UnauthorizedError

T = TypeVar("T")
PUB = "aws.greengrass#PublishToTopic"
SUB = "aws.greengrass#SubscribeToTopic"
REPO = Path(__file__).resolve().parents[2]


def policies(component: str, *resources: str, operations: tuple[str, ...] = (PUB, SUB)) -> Policies:
    if not resources:
        return Policies()  # no accessControl: every publish/subscribe is denied
    return Policies.from_configuration(
        component,
        {
            "accessControl": {
                PUBSUB_SERVICE: {
                    f"{component}:pubsub:1": {
                        "operations": list(operations),
                        "resources": list(resources),
                    }
                }
            }
        },
    )


class BrokerThread:
    """An IpcBroker serving from an event loop on its own thread."""

    def __init__(self, socket_path: Path, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.broker = IpcBroker(socket_path, **options)
        self.run(self.broker.start())
        self.clients: list[IpcClient] = []
        self.sockets: list[socket.socket] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def in_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    @property
    def stats(self) -> BrokerStats:
        return self.in_loop(lambda: self.broker.stats)

    def client(self, component: str, *resources: str, **kw: Any) -> IpcClient:
        token = self.broker.register(component, policies(component, *resources, **kw))
        client = IpcClient(str(self.broker.socket_path), token)
        self.clients.append(client)
        return client

    def raw(self, token: str | None) -> socket.socket:
        """A bare socket speaking the protocol by hand (connected with `token` if given)."""
        sock = raw_connect(self.broker.socket_path, token)
        self.sockets.append(sock)
        return sock

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for sock in self.sockets:
            sock.close()
        if not self.loop.is_closed():
            self.run(self.broker.close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., BrokerThread]]:
    started: list[BrokerThread] = []

    def make(**options: Any) -> BrokerThread:
        broker = BrokerThread(tmp_path / "ipc" / "agent.sock", **options)
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for `condition` with a deadline (polls: the state lives in other threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def receiver() -> tuple[queue.Queue[tuple[str, Any]], Callable[[str, Any], None]]:
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
    return inbox, lambda topic, message: inbox.put((topic, message))


def raw_connect(path: Path, token: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    if token is not None:
        send_frame(sock, {"op": "connect", "id": 0, "token": token})
        assert recv_frame(sock)["ok"] is True
    return sock


def send_frame(sock: socket.socket, payload: Any) -> None:
    body = json.dumps(payload).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    frame: dict[str, Any] = json.loads(recv_exact(sock, length))
    return frame


def assert_closed(sock: socket.socket) -> None:
    with pytest.raises((EOFError, ConnectionResetError)):
        recv_frame(sock)


def test_two_components_exchange_json_and_binary_messages(
    start: Callable[..., BrokerThread],
) -> None:
    b = start()
    producer = b.client("com.ml.producer", "local/inference")
    consumer = b.client("com.ml.xgboost", "local/inference")
    inbox, handler = receiver()

    subscription = consumer.subscribe("local/inference", handler)
    producer.publish("local/inference", {"features": [1.5, 2.0], "id": "r1"})
    producer.publish("local/inference", b"\x00\xffraw")
    producer.publish("local/inference", [1, 2, 3])

    assert inbox.get(timeout=5) == ("local/inference", {"features": [1.5, 2.0], "id": "r1"})
    assert inbox.get(timeout=5) == ("local/inference", b"\x00\xffraw")
    assert inbox.get(timeout=5) == ("local/inference", [1, 2, 3])
    assert producer.component == "com.ml.producer"
    subscription.close()
    producer.publish("local/inference", {"after": "close"})
    producer.publish("local/inference", {"after": "close"})  # its reply comes after any push
    assert inbox.empty()
    stats = b.stats
    assert stats.connections == 2
    assert stats.messages_published == 5
    assert stats.messages_delivered == 3


def test_the_environment_names_match_between_agent_and_client(
    start: Callable[..., BrokerThread],
) -> None:
    b = start()
    b.broker.register("com.a", Policies())

    env = b.broker.environment("com.a")

    assert ipc.SVCUID_ENV == ipc_broker.SVCUID_ENV == "SVCUID"
    assert ipc.SOCKET_PATH_ENV == ipc_broker.SOCKET_PATH_ENV
    assert env[ipc.SOCKET_PATH_ENV] == str(b.broker.socket_path)
    assert len(env[ipc.SVCUID_ENV]) >= 32
    assert b.broker.register("com.a", Policies()) == env[ipc.SVCUID_ENV]  # stable per component
    with pytest.raises(IpcBrokerError, match=r"com\.unknown is not registered"):
        b.broker.environment("com.unknown")


def test_wildcard_subscriptions_route_by_mqtt_filter(start: Callable[..., BrokerThread]) -> None:
    b = start()
    sensors = b.client("com.sensors", "sensors/*", "other/x")
    dashboard = b.client("com.dashboard", "sensors/#", "sensors/+/temp", "sensors/end")
    every, on_every = receiver()
    temps, on_temp = receiver()
    dashboard.subscribe("sensors/#", on_every)
    dashboard.subscribe("sensors/+/temp", on_temp)

    sensors.publish("sensors/k1/temp", {"c": 21})
    sensors.publish("sensors/k1/humidity", {"rh": 40})
    sensors.publish("other/x", {"no": 1})
    sensors.publish("sensors/end", {})

    assert [every.get(timeout=5)[0] for _ in range(3)] == [
        "sensors/k1/temp",
        "sensors/k1/humidity",
        "sensors/end",
    ]
    assert temps.get(timeout=5) == ("sensors/k1/temp", {"c": 21})
    assert temps.empty() and every.empty()


def test_own_messages_come_back_on_exact_topics_only_by_default(
    start: Callable[..., BrokerThread],
) -> None:
    b = start()
    client = b.client("com.loop", "loop/*")
    exact, on_exact = receiver()
    wild, on_wild = receiver()
    both, on_both = receiver()
    client.subscribe("loop/a", on_exact)
    client.subscribe("loop/#", on_wild)
    client.subscribe("loop/+", on_both, receive_mode=ipc.RECEIVE_ALL)

    client.publish("loop/a", {"n": 1})

    assert exact.get(timeout=5) == ("loop/a", {"n": 1})
    assert both.get(timeout=5) == ("loop/a", {"n": 1})
    assert wild.empty()  # RECEIVE_MESSAGES_FROM_OTHERS is the default with wildcards
    with pytest.raises(IpcError) as caught:
        client.subscribe("loop/b", on_exact, receive_mode="SOMETIMES")
    assert caught.value.code == "INVALID_ARGUMENTS"


def test_a_denied_publish_is_refused_and_reported_while_others_carry_on(
    start: Callable[..., BrokerThread],
) -> None:
    denied: list[tuple[str, str, str]] = []
    b = start(on_denied=lambda *args: denied.append(args))
    rogue = b.client("com.rogue", "local/allowed")
    good = b.client("com.good", "local/allowed")
    listener = b.client("com.listener", "local/allowed", "local/secret", operations=(SUB,))
    inbox, handler = receiver()
    listener.subscribe("local/allowed", handler)
    listener.subscribe("local/secret", handler)

    with pytest.raises(UnauthorizedError) as caught:
        rogue.publish("local/secret", {"steal": True})
    with pytest.raises(UnauthorizedError):
        rogue.subscribe("local/secret", handler)
    with pytest.raises(UnauthorizedError):  # a filter needs a policy that covers the filter
        rogue.subscribe("local/#", handler)
    with pytest.raises(UnauthorizedError):  # subscribe-only
        listener.publish("local/allowed", {})

    assert caught.value.code == "UNAUTHORIZED"
    assert "com.rogue" in caught.value.message
    assert PUBLISH_TO_TOPIC in caught.value.message
    assert "local/secret" in caught.value.message
    assert denied[:3] == [
        ("com.rogue", PUB, "local/secret"),
        ("com.rogue", SUB, "local/secret"),
        ("com.rogue", SUB, "local/#"),
    ]
    # the denied connection stays open, and the others are unaffected
    rogue.publish("local/allowed", {"from": "rogue"})
    good.publish("local/allowed", {"from": "good"})
    assert inbox.get(timeout=5) == ("local/allowed", {"from": "rogue"})
    assert inbox.get(timeout=5) == ("local/allowed", {"from": "good"})
    assert inbox.empty()
    assert b.stats.denials == 4


def test_a_bad_token_is_refused(start: Callable[..., BrokerThread]) -> None:
    b = start()
    b.broker.register("com.a", Policies())

    with pytest.raises(IpcError) as caught:
        IpcClient(str(b.broker.socket_path), "not-a-token")
    sock = b.raw(None)
    send_frame(sock, {"op": "publish", "id": 1, "topic": "a", "message": {"json": 1}})
    reply = recv_frame(sock)
    assert_closed(sock)

    assert caught.value.code == "UNAUTHENTICATED"
    assert "SVCUID" in caught.value.message
    assert reply["ok"] is False and reply["error"]["code"] == "UNAUTHENTICATED"
    assert "connect" in reply["error"]["message"]
    stats = b.stats
    assert stats.connections_refused == 2
    assert stats.connections_total == 0


def test_broken_frames_close_only_their_own_connection(start: Callable[..., BrokerThread]) -> None:
    b = start()
    token = b.broker.register("com.broken", policies("com.broken", "*"))
    producer = b.client("com.producer", "t")
    consumer = b.client("com.consumer", "t")
    inbox, handler = receiver()
    consumer.subscribe("t", handler)

    not_json = b.raw(token)
    not_json.sendall(struct.pack(">I", 5) + b"{oops")
    oversized = b.raw(token)
    oversized.sendall(struct.pack(">I", ipc_broker.MAX_FRAME_BYTES + 1))
    not_an_object = b.raw(token)
    send_frame(not_an_object, [1, 2])
    bad_request = b.raw(token)
    send_frame(bad_request, {"op": "publish", "id": 7, "topic": "a/+", "message": {"json": 1}})
    send_frame(bad_request, {"op": "nope", "id": 8})
    send_frame(bad_request, {"op": "publish", "id": 9, "topic": "t", "message": {"binary": "%%"}})

    assert recv_frame(not_json)["error"]["code"] == "BAD_FRAME"
    assert recv_frame(oversized)["error"]["code"] == "FRAME_TOO_LARGE"
    assert recv_frame(not_an_object)["error"]["code"] == "BAD_FRAME"
    for sock in (not_json, oversized, not_an_object):
        assert_closed(sock)
    # a well-framed but wrong request gets an error reply and the connection stays
    replies = [recv_frame(bad_request) for _ in range(3)]
    assert [(r["id"], r["error"]["code"]) for r in replies] == [
        (7, "INVALID_ARGUMENTS"),
        (8, "UNKNOWN_OPERATION"),
        (9, "INVALID_ARGUMENTS"),
    ]
    send_frame(bad_request, {"op": "publish", "id": 10, "topic": "t", "message": {"json": 2}})
    assert recv_frame(bad_request) == {"id": 10, "ok": True}
    producer.publish("t", {"still": "working"})
    assert inbox.get(timeout=5) == ("t", 2)
    assert inbox.get(timeout=5) == ("t", {"still": "working"})


def test_a_request_too_large_for_the_agent_fails_locally(
    start: Callable[..., BrokerThread],
) -> None:
    b = start()
    client = b.client("com.big", "big")

    with pytest.raises(IpcError) as caught:
        client.publish("big", b"x" * ipc.MAX_FRAME_BYTES)

    assert caught.value.code == "FRAME_TOO_LARGE"
    client.publish("big", b"x" * 1024)  # the connection is still usable


@pytest.mark.parametrize(
    "bounds",
    [{"queue_size": 20}, {"queue_size": 10_000, "queue_bytes": 50_000}],
    ids=["by-count", "by-bytes"],
)
def test_a_slow_subscriber_loses_its_oldest_messages_without_blocking_publishers(
    start: Callable[..., BrokerThread], bounds: dict[str, int]
) -> None:
    b = start(**bounds)
    producer = b.client("com.fast", "stream")
    slow = b.client("com.slow", "stream")
    released = threading.Event()
    seen: list[int] = []

    def stuck_handler(topic: str, message: Any) -> None:
        released.wait(30)  # blocks slow's reader thread: its socket is not read meanwhile
        seen.append(message["n"])

    slow.subscribe("stream", stuck_handler)
    payload = "x" * 2048
    count = 3000
    started = time.monotonic()
    for n in range(count):  # ~6 MB: far more than the socket buffers and the queue hold
        producer.publish("stream", {"n": n, "pad": payload})
    publish_seconds = time.monotonic() - started
    stats = b.stats
    released.set()

    until(lambda: bool(seen) and seen[-1] == count - 1)
    assert publish_seconds < 20  # every publish was answered while the subscriber was stuck
    assert stats.drops > 0
    assert stats.drops_by_component == {"com.slow": stats.drops}
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert len(seen) < count  # some were dropped ...
    assert seen[-20:] == list(range(count - 20, count))  # ... the oldest ones, not the newest


def test_component_updates_collect_a_deferral_and_an_ack(
    start: Callable[..., BrokerThread],
) -> None:
    b = start()
    busy = b.client("com.busy")
    idle = b.client("com.idle")
    events: queue.Queue[tuple[str, ipc.ComponentUpdate]] = queue.Queue()

    def on_busy(event: ipc.ComponentUpdate) -> None:
        events.put(("busy", event))
        if event.phase == "pre":  # a request from inside a handler: the reader reads on
            busy.defer_component_update(event.deployment_id, 5000, "inference in progress")

    def on_idle(event: ipc.ComponentUpdate) -> None:
        events.put(("idle", event))
        if event.phase == "pre" and event.deployment_id == "dep-1":
            idle.acknowledge_component_update(event.deployment_id)

    busy.subscribe_to_component_updates(on_busy)
    idle.subscribe_to_component_updates(on_idle)

    started = time.monotonic()
    deferrals = b.run(b.broker.notify_update("dep-1", timeout=10))
    answered_in = time.monotonic() - started
    # dep-2: idle does not answer, so the broker waits out the timeout
    started = time.monotonic()
    second = b.run(b.broker.notify_update("dep-2", timeout=0.5))
    waited = time.monotonic() - started
    b.in_loop(lambda: b.broker.notify_updated("dep-2"))

    assert deferrals == [Deferral("com.busy", "dep-1", 5000, "inference in progress")]
    assert answered_in < 5  # returned once both answered, not at the timeout
    assert second == [Deferral("com.busy", "dep-2", 5000, "inference in progress")]
    assert waited >= 0.5
    received = [events.get(timeout=5) for _ in range(6)]
    assert sorted((who, e.phase, e.deployment_id) for who, e in received) == [
        ("busy", "post", "dep-2"),
        ("busy", "pre", "dep-1"),
        ("busy", "pre", "dep-2"),
        ("idle", "post", "dep-2"),
        ("idle", "pre", "dep-1"),
        ("idle", "pre", "dep-2"),
    ]
    with pytest.raises(IpcError) as caught:  # nothing is waiting for that deployment now
        busy.defer_component_update("dep-1", 100)
    assert caught.value.code == "RESOURCE_NOT_FOUND"


def test_an_update_with_no_subscriber_does_not_wait(start: Callable[..., BrokerThread]) -> None:
    b = start()
    b.client("com.quiet")

    started = time.monotonic()
    assert b.run(b.broker.notify_update("dep-x", timeout=30)) == []
    assert time.monotonic() - started < 5


def test_get_configuration_reads_from_the_agent(start: Callable[..., BrokerThread]) -> None:
    configs = {
        "com.model": {"model": {"threshold": 0.5, "labels": ["a", "b"]}},
        "com.other": {"port": 8080},
    }
    b = start(configuration=configs.get)
    client = b.client("com.model")

    assert client.get_configuration() == configs["com.model"]
    assert client.get_configuration(["model", "threshold"]) == 0.5
    assert client.get_configuration(["port"], component_name="com.other") == 8080
    with pytest.raises(IpcError) as caught:
        client.get_configuration(["model", "missing"])
    assert caught.value.code == "RESOURCE_NOT_FOUND"
    assert "model/missing" in caught.value.message
    with pytest.raises(IpcError, match=r"no configuration for component com\.nobody"):
        client.get_configuration(component_name="com.nobody")


def test_bridge_sees_messages_on_its_topics(start: Callable[..., BrokerThread]) -> None:
    bridged: list[tuple[str, Any]] = []
    b = start(
        bridge=lambda topic, message: bridged.append((topic, message)), bridge_topics=["cloud/#"]
    )
    client = b.client("com.up", "cloud/*", "local/x")

    client.publish("cloud/metrics", {"latency_ms": 4})
    client.publish("cloud/raw", b"\x01")
    client.publish("local/x", {"not": "bridged"})

    assert bridged == [("cloud/metrics", {"latency_ms": 4}), ("cloud/raw", b"\x01")]
    with pytest.raises(IpcBrokerError, match="bridge_topics"):
        IpcBroker(b.broker.socket_path, bridge_topics=["a/#/b"])


def test_the_socket_is_private(start: Callable[..., BrokerThread], tmp_path: Path) -> None:
    b = start()
    path = b.broker.socket_path

    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o755)
    with pytest.raises(IpcBrokerError, match="chmod 700"):
        asyncio.run(IpcBroker(open_folder / "agent.sock").start())
    with pytest.raises(IpcBrokerError, match="already listening"):
        asyncio.run(IpcBroker(path).start())


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "ipc"
    folder.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(folder / "agent.sock"))
    stale.close()  # the file stays, nobody listens: what a crashed agent leaves

    async def serve() -> bool:
        async with IpcBroker(folder / "agent.sock"):
            return (folder / "agent.sock").exists()

    assert asyncio.run(serve()) is True
    assert not (folder / "agent.sock").exists()  # close() removes it


def test_unregister_and_close_end_connections(start: Callable[..., BrokerThread]) -> None:
    b = start()
    token = b.broker.register("com.gone", policies("com.gone", "t"))
    gone = IpcClient(str(b.broker.socket_path), token)
    b.clients.append(gone)
    stays = b.client("com.stays", "t")

    b.broker.unregister("com.gone")  # from another thread than the loop's

    until(lambda: b.stats.connections == 1)
    with pytest.raises(IpcError) as caught:
        gone.publish("t", {})
    assert caught.value.code == "CONNECTION_CLOSED"
    with pytest.raises(IpcError) as refused:  # its token is no longer valid
        IpcClient(str(b.broker.socket_path), token)
    assert refused.value.code == "UNAUTHENTICATED"
    stays.publish("t", {})
    b.run(b.broker.close())
    with pytest.raises(IpcError) as closed:
        stays.publish("t", {})
    assert closed.value.code == "CONNECTION_CLOSED"
    assert not b.broker.socket_path.exists()


def test_connect_needs_the_agent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ipc.SVCUID_ENV, raising=False)
    monkeypatch.delenv(ipc.SOCKET_PATH_ENV, raising=False)

    with pytest.raises(ipc.AgentNotFoundError) as caught:
        ipc.connect()
    assert str(caught.value.message) == "not running under a modelyard agent (SVCUID is not set)"
    monkeypatch.setenv(ipc.SVCUID_ENV, "token")
    with pytest.raises(ipc.AgentNotFoundError, match=ipc.SOCKET_PATH_ENV):
        ipc.connect()


def test_publish_rejects_what_is_not_json_or_bytes(start: Callable[..., BrokerThread]) -> None:
    client = start().client("com.a", "a")

    with pytest.raises(TypeError, match="bytes or JSON-serializable"):
        client.publish("a", {"when": object()})
    client.publish("a", {"ok": True})


COMPONENT = textwrap.dedent(
    """
    import sys, threading
    from modelyard.edge import ipc

    done = threading.Event()
    with ipc.connect() as client:
        def on_request(topic, message):
            if message == "stop":
                done.set()
                return
            client.publish("proc/out", {"x": message["x"] * 2, "me": client.component})

        client.subscribe("proc/in", on_request)
        print("ready", flush=True)
        if not done.wait(30):
            sys.exit(3)
    """
)


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the component process said nothing in time"
    return proc.stdout.readline().strip()


def test_a_component_process_started_with_the_agent_environment(
    start: Callable[..., BrokerThread], tmp_path: Path
) -> None:
    b = start()
    token = b.broker.register("com.worker", policies("com.worker", "proc/*"))
    script = tmp_path / "component.py"
    script.write_text(COMPONENT)
    env = {**os.environ, **b.broker.environment("com.worker")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert read_line(proc, 20) == "ready"
            caller = b.client("com.caller", "proc/*")
            inbox, handler = receiver()
            caller.subscribe("proc/out", handler)

            caller.publish("proc/in", {"x": 21})

            assert inbox.get(timeout=10) == ("proc/out", {"x": 42, "me": "com.worker"})
            caller.publish("proc/in", "stop")
            assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
            assert token == b.broker.environment("com.worker")[ipc.SVCUID_ENV]
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_client_and_the_broker_import_only_what_they_may() -> None:
    code = (
        "import json, sys\n"
        "ours = lambda: sorted(m for m in sys.modules if m.startswith('modelyard'))\n"
        "import modelyard.edge.ipc\n"
        "client = ours()\n"
        "import modelyard.edge.agent.ipc_broker\n"
        "print(json.dumps([client, ours()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    client, broker = json.loads(out.stdout)

    assert client == ["modelyard", "modelyard.edge", "modelyard.edge.ipc"]
    outside = [m for m in broker if m not in client and not m.startswith("modelyard.edge.agent")]
    assert outside == []
    assert "modelyard.edge.agent.policy" in broker
