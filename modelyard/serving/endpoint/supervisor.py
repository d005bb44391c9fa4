"""The endpoint's supervisor: one process per endpoint that makes the recorded desired state true.

Started (detached) by `endpoint deploy` or `endpoint start`; runs until `endpoint stop|delete`
(SIGTERM). In one asyncio loop, about twice a second, it:
- reads the endpoint's rows when their generation changed (a deploy, a rollback request);
- keeps each live variant's replicas at the wanted count (`ReplicaSet`: restarted when they die,
  drained through the proxy before they stop) and tells the router which replicas answer;
- advances the rollout in progress (`rollout.advance`) on the traffic the proxy measured, applies
  its weights, and retires the losing variant when it ends;
- lets the autoscaler resize each autoscaled variant on its invocations per replica per minute;
- writes a heartbeat, the status and what it observes, so `endpoint list|show` read the truth.

All clocks are wall-clock seconds (`time.time`): a rollout's state outlives the process, and a
supervisor started again after a crash carries it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import NotFound
from modelyard.serving import autoscale
from modelyard.store import endpoints as store

from . import service
from .replicas import Replica, ReplicaSet, ReplicaSpec
from .rollout import Observation, RolloutPlan, RolloutState, advance, start, stats_since
from .routing import Backend, Router

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime

    from .proxy import EndpointProxy
    from .ray_backend import RayVariant
    from .upstream import UpstreamPool

TICK = 0.5  # seconds between two passes of the control loop
DRAIN_TIMEOUT = 30.0  # the longest a replica's in-flight requests are waited for


@dataclass
class LiveVariant:
    """A variant's replicas and autoscaling state, as this process runs them."""

    row: store.VariantRow
    replicas: ReplicaSet | RayVariant
    scaling: autoscale.ScalingState
    backends: dict[tuple[int, int], Backend] = field(default_factory=dict)  # (slot, port)
    resize: asyncio.Task[None] | None = None
    wanted: int = 0


class Supervisor:
    def __init__(self, runtime: Runtime, project: str, name: str, project_root: Path):
        self.runtime = runtime
        self.project = project
        self.name = name
        self.root = project_root
        self.router = Router(clock=time.time)
        self.live: dict[str, LiveVariant] = {}
        self.stopping = asyncio.Event()
        self.generation = -1
        self.endpoint: store.EndpointRow | None = None
        self.rollout: store.RolloutRow | None = None
        self._variants: list[store.VariantRow] = []
        self.last_heartbeat = 0.0
        self.pool: UpstreamPool | None = None
        self.proxy: EndpointProxy | None = None

    # -- the process ------------------------------------------------------------------------------

    async def run(self) -> int:
        from modelyard.engine.runtime import process_identity

        with self.runtime.db.begin() as conn:
            endpoint = service._endpoint(conn, self.project, self.name, lock=True)
            if service.supervisor_alive(endpoint) and endpoint.supervisor != process_identity():
                say(f"endpoint {self.name} is already supervised by {endpoint.supervisor}")
                return 1
            store.update_endpoint(
                conn,
                endpoint.id,
                supervisor=process_identity(),
                heartbeat_at=time.time(),
                status="starting",
                status_reason=None,
            )
        try:
            listener = _bind(endpoint.host, endpoint.port or 0)
        except OSError as exc:
            self._set_status("failed", f"cannot listen on {endpoint.host}:{endpoint.port}: {exc}")
            say(f"cannot listen on {endpoint.host}:{endpoint.port}: {exc}")
            return 1
        port = listener.getsockname()[1]
        if endpoint.port != port:
            with self.runtime.db.begin() as conn:
                store.update_endpoint(conn, endpoint.id, port=port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        server = self._http_server(endpoint)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        say(f"endpoint {self.name} listening on http://{endpoint.host}:{port}")
        try:
            while not self.stopping.is_set():
                try:
                    await self.tick()
                except NotFound:
                    say(f"endpoint {self.name} was deleted: stopping")
                    break
                except Exception as exc:  # one bad pass must not take the endpoint down
                    problem = f"control loop: {type(exc).__name__}: {exc}"
                    say(problem)
                    with contextlib.suppress(Exception):  # say so, and that this process lives
                        self._set_status("degraded", problem, heartbeat=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), TICK)
        finally:
            server.should_exit = True
            await serving
            for live in self.live.values():
                await live.replicas.stop_all()
            if self.pool is not None:
                await self.pool.aclose()
            self._mark_stopped()
        return 0

    def _http_server(self, endpoint: store.EndpointRow) -> Any:
        import uvicorn

        from .proxy import EndpointProxy
        from .upstream import UpstreamPool

        config = endpoint.config
        serving = config.get("serving", {})
        self.pool = UpstreamPool()
        self.proxy = EndpointProxy(
            self.name,
            self.router,
            self.pool,
            guard_options(config),
            max_body_bytes=int(serving.get("max_body_mb", 5.0) * 1024 * 1024),
            timeout=config.get("guards", {}).get("timeout"),
            status=self.status_json,
        )
        uvicorn_config = uvicorn.Config(
            self.proxy,
            lifespan="on",
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,  # X-Forwarded-For from a local client must not pass the allow-list
        )

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the supervisor handles SIGTERM itself: proxy first, then the replicas

        return _Server(uvicorn_config)

    # -- one pass of the control loop -------------------------------------------------------------

    async def tick(self) -> None:
        now = time.time()
        self._load()
        assert self.endpoint is not None
        rows = {v.name: v for v in self._variants}
        for name in list(self.live):
            if name not in rows:
                await self._retire(name)
        for row in rows.values():
            live = self.live.get(row.name) or await self._start_variant(row)
            live.row = row
            if live.wanted != row.replicas and (live.resize is None or live.resize.done()):
                live.wanted = row.replicas
                live.resize = asyncio.create_task(
                    live.replicas.scale_to(row.replicas, self._drainer(live))
                )
        for live in self.live.values():
            await live.replicas.tick()
            self._sync_backends(live)
        weights = self._advance_rollout(now)
        self.router.set_weights(weights)
        self._autoscale(now)
        if now - self.last_heartbeat >= service.HEARTBEAT_SECONDS:
            self._write_observed(now)

    def _load(self) -> None:
        with self.runtime.db.begin() as conn:
            endpoint = service._endpoint(conn, self.project, self.name)
            if endpoint.generation != self.generation or self.endpoint is None:
                self._variants = store.variants(conn, endpoint.id)
                self.rollout = store.current_rollout(conn, endpoint.id)
                self.generation = endpoint.generation
                changed = self.endpoint is not None and endpoint.config != self.endpoint.config
                if self.proxy is not None and changed:
                    self.proxy.set_guards(guard_options(endpoint.config))
            self.endpoint = endpoint

    async def _start_variant(self, row: store.VariantRow) -> LiveVariant:
        folder = await asyncio.to_thread(self._package_folder, row)
        serving = self.endpoint.config.get("serving", {}) if self.endpoint else {}
        args: list[str] = []
        for option, key in (
            ("--max-batch", "max_batch"),
            ("--max-wait-ms", "max_wait_ms"),
            ("--max-body-mb", "max_body_mb"),
        ):
            if key in serving:
                args += [option, str(serving[key])]
        spec = ReplicaSpec(
            endpoint=self.name,
            variant=row.name,
            model_folder=folder,
            model_name=row.model_ref,
            log_dir=service.log_dir(self.runtime, self.name) / "replicas",
            serve_args=tuple(args),
            cwd=self.root,
        )
        assert self.endpoint is not None
        replicas = replica_set(self.endpoint, self.project, spec)
        live = LiveVariant(row, replicas, autoscale.ScalingState(row.replicas))
        self.live[row.name] = live
        return live

    def _package_folder(self, row: store.VariantRow) -> Path:
        from modelyard.serving.server import package_folder

        return package_folder(self.runtime, row.package_digest, row.package_size)

    async def _retire(self, name: str) -> None:
        live = self.live.pop(name)
        if live.resize is not None and not live.resize.done():
            live.resize.cancel()
        self.router.set_weights({k: v for k, v in self.router.weights().items() if k != name})
        await live.replicas.stop_all(self._drainer(live))
        self.router.remove_variant(name)

    def _drainer(self, live: LiveVariant) -> Callable[[Replica], Awaitable[None]]:
        async def drain(replica: Replica) -> None:
            await self._drain(live, replica)

        return drain

    async def _drain(self, live: LiveVariant, replica: Replica) -> None:
        """Stop routing to the replica and wait for its requests in flight to be answered."""
        backend = live.backends.get((replica.slot, replica.port))
        if backend is None:
            return
        backend.draining = True
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while backend.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # polling a counter of this loop: requests finish meanwhile
        if self.pool is not None:
            await self.pool.close_backend(backend)

    def _sync_backends(self, live: LiveVariant) -> None:
        """The router's backends of a variant: its ready replicas, and the draining ones (their
        requests in flight are counted until they stop)."""
        keep: dict[tuple[int, int], Backend] = {}
        for replica in live.replicas.replicas:
            if replica.state not in ("ready", "draining"):
                continue
            key = (replica.slot, replica.port)
            backend = live.backends.get(key) or _backend(live.row.name, replica)
            backend.draining = backend.draining or replica.state == "draining"
            keep[key] = backend
        if keep.keys() != live.backends.keys():
            live.backends = keep
            self.router.set_backends(live.row.name, list(keep.values()))

    # -- rollouts ---------------------------------------------------------------------------------

    def _advance_rollout(self, now: float) -> dict[str, float]:
        rollout = self.rollout
        weights = {v.name: v.weight for v in self._variants}
        if rollout is None:
            return weights
        plan = RolloutPlan.from_json(rollout.plan)
        if rollout.state is None:
            state = start(plan, now, new_variant=rollout.to_variant)
        else:
            state = RolloutState.from_json(rollout.state)
        new = self.live.get(rollout.to_variant)
        stats = self.router.stats(rollout.to_variant).since(stats_since(state))
        failure = rollout.reason if rollout.reason else None
        if new is not None and failure is None:
            failure = new.replicas.crashlooping
        ready = new is not None and len(new.replicas.ready()) >= max(1, new.row.replicas)
        step = advance(
            plan,
            state,
            Observation(
                now=now,
                new_ready=ready,
                new_failure=failure,
                new_requests=stats.requests,
                new_errors=stats.errors,
                new_p99_ms=stats.p99_ms,
            ),
        )
        old_share, new_share = step.weights
        event = step.event
        if rollout.from_variant is None and event and not step.state.done:
            # a first variant has no traffic to take over: it serves once its replicas are ready
            event = f"{rollout.to_variant}: replicas ready, it takes all traffic"
        if rollout.from_variant is not None:
            weights[rollout.from_variant] = old_share
        weights[rollout.to_variant] = new_share
        if step.state != state or rollout.state is None or event:
            self._record_rollout(rollout, step.state, event, weights)
        return weights

    def _record_rollout(
        self,
        rollout: store.RolloutRow,
        state: RolloutState,
        event: str | None,
        weights: dict[str, float],
    ) -> None:
        assert self.endpoint is not None
        endpoint_id = self.endpoint.id
        with self.runtime.db.begin() as conn:
            values: dict[str, Any] = {"state": state.to_json(), "phase": state.phase}
            if state.done:
                values |= {"finished_at": time.time(), "reason": state.reason}
            store.update_rollout(conn, rollout.id, **values)
            if event:
                store.add_event(conn, endpoint_id, "rollout", event)
            if state.done:
                winner, loser = (
                    (rollout.to_variant, rollout.from_variant)
                    if state.phase == "completed"
                    else (rollout.from_variant, rollout.to_variant)
                )
                if loser is not None:
                    store.update_variant(
                        conn,
                        endpoint_id,
                        loser,
                        state=store.RETIRED,
                        weight=0.0,
                        retired_at=time.time(),
                    )
                if winner is not None:
                    store.update_variant(
                        conn, endpoint_id, winner, state=store.ACTIVE, weight=100.0
                    )
                # the status changes with the rollout's end, not a heartbeat later
                status, reason = ("in_service", None) if winner else ("failed", state.reason)
                store.update_endpoint(conn, endpoint_id, status=status, status_reason=reason)
                store.bump_generation(conn, endpoint_id)
            else:
                for name, weight in weights.items():
                    store.update_variant(conn, endpoint_id, name, weight=weight)
        self.generation = -1
        self._load()  # the rows as they are now: the status written next must not be stale
        if event:
            say(f"rollout: {event}")

    # -- autoscaling ------------------------------------------------------------------------------

    def _autoscale(self, now: float) -> None:
        for live in self.live.values():
            policy_json = live.row.autoscale
            if not policy_json or live.row.state != store.ACTIVE:
                continue
            policy = autoscale.AutoscalePolicy(**policy_json)
            ready = len(live.replicas.ready())
            if ready == 0:
                continue
            rate = self.router.stats(live.row.name).per_minute(policy.window)
            state = autoscale.ScalingState(
                live.row.replicas, live.scaling.last_scale_out, live.scaling.last_scale_in
            )
            decision = autoscale.decide(policy, state, rate / ready, now)
            if not decision.changes(state):
                continue
            live.scaling = autoscale.apply(state, decision, now)
            assert self.endpoint is not None
            with self.runtime.db.begin() as conn:
                store.update_variant(
                    conn, self.endpoint.id, live.row.name, replicas=decision.replicas
                )
                store.add_event(
                    conn, self.endpoint.id, "scale", f"{live.row.name}: {decision.reason}"
                )
                store.bump_generation(conn, self.endpoint.id)
            say(f"scale: {live.row.name}: {decision.reason}")

    # -- status -----------------------------------------------------------------------------------

    def status_json(self) -> dict[str, Any]:
        """What the proxy's /health shows."""
        return {
            "status": self._status()[0],
            "variants": {
                name: {
                    "model": live.row.model_ref,
                    "weight": self.router.weights().get(name, 0.0),
                    "replicas": live.replicas.describe(),
                }
                for name, live in self.live.items()
            },
            "rollout": self.rollout.to_variant if self.rollout else None,
        }

    def _status(self) -> tuple[str, str | None]:
        if self.rollout is not None:
            first = self.rollout.from_variant is None
            return ("creating" if first else "updating"), f"rollout of {self.rollout.to_variant}"
        serving = [self.live.get(v.name) for v in self._variants if v.weight > 0]
        if not serving:
            return "failed", "no variant serves (the first deployment was rolled back)"
        if not any(live is not None and live.replicas.ready() for live in serving):
            return "degraded", "no replica is ready"
        return "in_service", None

    def _write_observed(self, now: float) -> None:
        assert self.endpoint is not None
        status, reason = self._status()
        with self.runtime.db.begin() as conn:
            store.update_endpoint(
                conn,
                self.endpoint.id,
                heartbeat_at=now,
                status=status,
                status_reason=reason,
                updated_at=self.endpoint.updated_at,
            )
            for name, live in self.live.items():
                stats = self.router.stats(name).since(now - 60)
                store.update_variant(
                    conn,
                    self.endpoint.id,
                    name,
                    observed={
                        "replicas": live.replicas.describe(),
                        "ready": len(live.replicas.ready()),
                        "last_minute": {
                            "requests": stats.requests,
                            "errors": stats.errors,
                            "p50_ms": stats.p50_ms,
                            "p99_ms": stats.p99_ms,
                        },
                        "in_flight": self.router.in_flight(name),
                    },
                )
        self.last_heartbeat = now

    def _set_status(self, status: str, reason: str | None, *, heartbeat: bool = False) -> None:
        with self.runtime.db.begin() as conn:
            endpoint = service._endpoint(conn, self.project, self.name)
            values: dict[str, Any] = {"status": status, "status_reason": reason}
            if heartbeat:
                values["heartbeat_at"] = time.time()
            store.update_endpoint(conn, endpoint.id, **values)

    def _mark_stopped(self) -> None:
        with self.runtime.db.begin() as conn:
            endpoint = store.get_endpoint(conn, self.project, self.name)
            if endpoint is None:  # deleted
                return
            store.update_endpoint(
                conn, endpoint.id, supervisor=None, status="stopped", status_reason="stopped"
            )
            for name in self.live:
                store.update_variant(conn, endpoint.id, name, observed=None)


def replica_set(
    endpoint: store.EndpointRow, project: str, spec: ReplicaSpec
) -> ReplicaSet | RayVariant:
    """Where a variant's replicas run: processes of this machine, or a Ray Serve application."""
    if endpoint.backend == "ray":
        from .ray_backend import RayVariant, ray_address

        return RayVariant(spec, project=project, address=ray_address(endpoint.config))
    return ReplicaSet(spec)


def _backend(variant: str, replica: Replica) -> Backend:
    from .ray_backend import RayReplica

    key = f"{variant}/{replica.slot}"
    if isinstance(replica, RayReplica):  # Ray's HTTP proxy, under the application's prefix
        return Backend(key, variant, replica.host, replica.port, prefix=replica.prefix)
    return Backend(key, variant, "127.0.0.1", replica.port)


def guard_options(config: dict[str, Any]) -> Any:
    """The proxy's guards from the endpoint's recorded config (keys only as digests)."""
    from modelyard.serving.guards import GuardOptions

    guards = config.get("guards", {})
    options = GuardOptions.build(
        allow=guards.get("allow", ()),
        rate=guards.get("rate"),
        burst=guards.get("burst"),
        max_in_flight=guards.get("max_in_flight"),
        timeout=guards.get("timeout"),
    )
    from dataclasses import replace

    return replace(options, key_digests=tuple(config.get("key_digests", ())))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=2048)
    # accepted connections inherit it; without it plain asyncio leaves Nagle on, and a response
    # sent as head + body waits for a delayed ACK (~40 ms)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


def say(line: str) -> None:
    """A line of the supervisor's log (its stdout), with the local time."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}", flush=True)


def main(runtime: Runtime, project: str, name: str, project_root: Path) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(Supervisor(runtime, project, name, project_root).run())
