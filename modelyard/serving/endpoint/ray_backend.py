"""Ray Serve as the place where an endpoint's replicas run (`endpoint deploy --backend ray`).

The endpoint keeps all it has with the local backend: its supervisor, its front proxy (stable
address, guards, weighted variants, rollouts and rollbacks), its rows in the DB, autoscaling by
modelyard's own policy. Only where replicas run changes. `RayVariant` has the interface of
`replicas.ReplicaSet`, so the supervisor drives either:

- each variant is a Ray Serve application `<project>.<endpoint>.<variant>` holding one deployment
  (named after the variant) under the route prefix `/<project>/<endpoint>/<variant>` of Ray's HTTP
  proxy. Project and endpoint are in both because a Ray cluster is shared: two endpoints serving
  the same model version must not replace each other's application;
- its replicas load the MLflow model folder with modelyard's own server code (`load_served_model`
  and the `ModelServer` ASGI app): the same validation, native predictors and answers as a local
  replica. The front proxy sends `<prefix>/invocations` to Ray's proxy (`Backend.prefix`);
- the number of replicas is the deployment's `num_replicas`. The deployment gets a fixed version
  (a digest of what the replicas load), so a new count is applied in place (Ray adds replicas or
  drains and removes some) instead of restarting them all, which a fresh `serve.run` would do;
- `replicas` shows one `RayReplica` per running Ray replica, all reached at Ray's proxy: the
  rollout counts them against the wanted replicas and autoscaling divides traffic by them. They
  are ready once the application runs and `<prefix>/ping` answers through Ray's proxy.

The cluster: `ray.init(address)` with the endpoint's `--ray-address`; without one, a local Ray
instance of this process's own (address "local": never one that another endpoint started and
would stop under us), shut down when its last variant stops. A supervisor killed with SIGKILL
takes its local instance's core processes with it (Ray's fate sharing); Ray's agents notice and
exit within a minute or two. On a cluster given by address, the supervisor is one more driver:
Ray's token authentication applies as to any (`RAY_AUTH_MODE=token` in the environment of the
command that starts the supervisor), Serve's HTTP proxy must be reachable from this machine
(its own interface, or the head's address), and it is a way to the models that the endpoint's
guards do not watch: the operator keeps it private. Our own instance's listens on loopback.

Shipping the model: replicas on our own local instance read the folder where it is. On a cluster
given by address, nodes may be other machines, so the folder goes along as a zip in the
deployment's arguments and is unpacked once per node (`_materialize`), keyed by its digest.

Every Ray call blocks, so all of them run on one thread of their own (`_call`): the supervisor's
loop and the proxy never wait on Ray, and calls are serialized: a delete queued after a deploy
runs after it even when the coroutine that asked for the deploy was cancelled meanwhile.
`import ray` happens only inside functions: Ray is an optional extra (`modelyard[ray]`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from modelyard.errors import ConfigError, MissingDependency, StateConflict

from .replicas import Drain, Replica, ReplicaSpec, State, _check_spec, http_ok

if TYPE_CHECKING:
    from modelyard.serving.app import Receive, Scope, Send, ServingOptions

T = TypeVar("T")

PROBE_TIMEOUT = 1.0  # seconds a readiness probe through Ray's proxy may take
DELETE_TIMEOUT = 60.0  # the longest a deleted application is waited for (its replicas drain)
MAX_ONGOING = 256  # requests one replica takes at once: the ModelServer batches them itself
REPLICA_CPUS = 1.0  # what Ray reserves per replica: a busy model server uses about a core
MAX_PACKED = 512 * 1024 * 1024  # a bigger model is not sent through the deployment's arguments
UNREACHABLE_TICKS = 20  # failed status polls in a row (10 s) before the variant counts as failed
RETRY = (1.0, 30.0)  # backoff of a failed deploy: first, longest (seconds)
_STARTING = ("STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION")
_ANY_HOST = ("", "0.0.0.0", "::")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_NO_CRASH_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def _ray() -> Any:
    """The `ray` module, untyped: its hints are partial, and it is an optional extra."""
    import importlib
    import sys

    if "ray" in sys.modules:
        return sys.modules["ray"]
    # Ray's crash handler, installed in a driver, takes SIGTERM as well, and once one arrived,
    # ray.shutdown() aborts the process (SIGABRT; Ray 2.60): a supervisor stops on SIGTERM and
    # must live on to stop its Ray instance. Ray reads the switch when imported, so it is put
    # back at once: the instance's processes keep their handler.
    saved = os.environ.get(_NO_CRASH_HANDLER)
    os.environ[_NO_CRASH_HANDLER] = "1"
    try:
        return importlib.import_module("ray")
    finally:
        if saved is None:
            del os.environ[_NO_CRASH_HANDLER]
        else:
            os.environ[_NO_CRASH_HANDLER] = saved


def _serve() -> Any:
    import importlib

    _ray()  # first: its switch above
    return importlib.import_module("ray.serve")


def require_ray() -> None:
    """MissingDependency (exit 7, how to install it) when Ray Serve is not installed."""
    import importlib.util

    # looked up, not imported (importing Ray takes seconds); fastapi stands for Serve's extras
    try:
        found = all(importlib.util.find_spec(name) is not None for name in ("ray", "fastapi"))
    except (ImportError, ValueError):  # a module set to None or without a spec
        found = False
    if not found:
        raise MissingDependency("ray", "ray", "the ray backend")


@dataclass(eq=False)
class RayReplica(Replica):
    """A running Ray replica as the router sees it: Ray's HTTP proxy, under the app's prefix."""

    host: str = "127.0.0.1"
    prefix: str = ""


# -- the process's connection to Ray (used on the Ray thread only) --------------------------------


@dataclass
class _Session:
    address: str | None  # as the endpoint gave it; None: our own local instance
    started: bool  # this process started the instance: it shuts it down
    connected: bool  # this process called ray.init (else it was a driver already: left alone)
    host: str  # where Ray's HTTP proxy answers us
    port: int
    log_dir: Path  # Serve's logs (replicas, proxy, controller) on this node
    cluster: str  # the cluster's GCS address, as `ray.init(address=...)` takes it
    users: int = 0  # variants using the session; the last one out closes it


_session: _Session | None = None
_executor: ThreadPoolExecutor | None = None


async def _call(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking Ray call on the Ray thread (one for the process: calls are serialized)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-ray")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(function, *args))


def _connect(address: str | None) -> _Session:
    global _session
    if _session is not None:
        if _session.address != address:  # one supervisor serves one endpoint: one cluster
            raise ConfigError(f"this process already uses the Ray cluster at {_session.address}")
        _session.users += 1
        return _session
    ray, serve = _ray(), _serve()
    # no usage report to Ray's servers on the user's behalf (inherited by the local instance)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    started = False
    connected = not ray.is_initialized()
    if not connected:  # this process is already a driver (a test, a notebook): use it
        session_dir = _session_dir()
    elif address is None:
        info = ray.init(address="local", include_dashboard=False, **quiet)
        session_dir = info.address_info.get("session_dir", "")
        started = True
    else:
        info = ray.init(address=address, **quiet)
        session_dir = info.address_info.get("session_dir", "")
    try:
        if started:
            port = _free_port()
            # our own instance's proxy listens on loopback only: the endpoint's guards are on
            # its own address, and nothing else should reach the models past them
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            host = "127.0.0.1"
        else:
            serve.start()  # when Serve already runs, its proxies keep the options they have
            http_host, port = _serve_http()
            host = _proxy_host(http_host, address, ray.util.get_node_ip_address())
    except BaseException:
        if connected:  # so that the next attempt connects afresh
            ray.shutdown()
        raise
    log_dir = Path(session_dir) / "logs" / "serve" if session_dir else Path(tempfile.gettempdir())
    cluster = str(ray.get_runtime_context().gcs_address)
    _session = _Session(address, started, connected, host, port, log_dir, cluster, users=1)
    return _session


def _release() -> None:
    """A variant is done with Ray; the last one disconnects (and stops our own instance)."""
    global _session
    if _session is None:
        return
    _session.users -= 1
    if _session.users > 0:
        return
    ray, serve = _ray(), _serve()
    session, _session = _session, None
    if session.started:
        serve.shutdown()
        ray.shutdown()  # stops the local instance this process started, agents and all
    elif session.connected and ray.is_initialized():
        ray.shutdown()  # only disconnects this driver: the cluster and its other apps live on


def _session_dir() -> str:
    try:
        node = _ray()._private.worker.global_worker.node
        return str(node.get_session_dir_path()) if node is not None else ""
    except Exception:  # private API: the logs' place is a convenience, never a failure
        return ""


def _serve_http() -> tuple[str, int]:
    """Host and port the Serve proxies of the cluster listen on (its own, if Serve ran)."""
    try:
        import importlib

        context: Any = importlib.import_module("ray.serve.context")
        config = context._get_global_client().http_config
        return str(config.host), int(config.port)
    except Exception:  # private API moved: Serve's documented defaults
        return "127.0.0.1", 8000


def _proxy_host(http_host: str, address: str | None, own_ip: str) -> str:
    """Where to reach Ray's proxy from here: its own interface when it names one, else the
    cluster's head (loopback when the head is this machine)."""
    if http_host not in _ANY_HOST and http_host not in _LOOPBACK:
        return http_host
    head = _address_host(address)
    if head is None or head in _LOOPBACK or head == own_ip:
        return "127.0.0.1"
    return head


def _address_host(address: str | None) -> str | None:
    if address is None or address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):  # [::1]:6379
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- deploying (on the Ray thread) ---------------------------------------------------------------


@dataclass(frozen=True)
class _Deployment:
    app: str
    prefix: str
    name: str  # the deployment's: the variant
    source: _ModelSource
    model_name: str
    options: ServingOptions
    version: str


def _deploy(deployment: _Deployment, count: int) -> None:
    serve = _serve()
    target = serve.deployment(
        _replica_class(),
        name=deployment.name,
        num_replicas=count,
        max_ongoing_requests=MAX_ONGOING,
        ray_actor_options={"num_cpus": REPLICA_CPUS},
    )
    # a fixed version: a new num_replicas is then applied in place, not by restarting replicas
    target = target.options(version=deployment.version, _internal=True)
    app = target.bind(deployment.source, deployment.model_name, deployment.name, deployment.options)
    serve.run_many(
        [
            serve.RunTarget(
                app,
                name=deployment.app,
                route_prefix=deployment.prefix,
                # the endpoint's proxy counts and times every request: no log line per request
                logging_config={"enable_access_log": False, "log_level": "WARNING"},
            )
        ],
        wait_for_applications_running=False,  # readiness is polled: the loop never waits here
    )


def _app_status(app: str) -> tuple[str, str, dict[str, int]] | None:
    """(status, message, replicas by state) of the application, None when there is none."""
    serve = _serve()
    found = serve.status().applications.get(app)
    if found is None:
        return None
    states: dict[str, int] = {}
    messages = [found.message] if found.message else []
    for deployment in found.deployments.values():
        for state, count in deployment.replica_states.items():
            key = str(getattr(state, "value", state))
            states[key] = states.get(key, 0) + count
        if deployment.message:
            messages.append(deployment.message)
    status = str(getattr(found.status, "value", found.status))
    return status, " ".join(messages), states


def _delete(app: str) -> None:
    serve = _serve()
    serve.delete(app, _blocking=False)  # waited for by polling: the Ray thread stays free


_replica_type: type | None = None


def _replica_class() -> type:
    """The deployment's class: built once per process (Ray imports it only here)."""
    global _replica_type
    if _replica_type is None:
        serve = _serve()

        @serve.ingress(_ReplicaApp())
        class ModelyardReplica:
            def __init__(
                self, source: _ModelSource, name: str, variant: str, options: ServingOptions
            ) -> None:
                _load_replica(source, name, variant, options)

        _replica_type = ModelyardReplica
    return _replica_type


# -- what runs in a Ray replica ------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelSource:
    """Where a replica finds the model: the folder, or the folder packed for other machines."""

    folder: str  # the MLflow model folder on the supervisor's machine
    packed: bytes | None = None  # the folder as a zip (clusters given by address)
    digest: str = ""  # sha256 of `packed`: where a node unpacks it once


_served: Any = None  # this replica's ModelServer: a Ray replica is a process of its own


def _load_replica(source: _ModelSource, name: str, variant: str, options: ServingOptions) -> None:
    global _served
    from modelyard.serving.app import ModelServer
    from modelyard.serving.server import ResolvedModel, load_served_model

    served = load_served_model(ResolvedModel(name, _materialize(source)), variant=variant)
    _served = ModelServer(served, options)


class _ReplicaApp:
    """The ASGI app Ray's ingress wraps: the replica's ModelServer, seeing its own paths (Ray
    passes the route prefix as root_path, and in the path as well, as Starlette expects)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = _served
        if scope["type"] == "lifespan" or server is None:
            from modelyard.serving.app import JSON, lifespan, respond

            if scope["type"] == "lifespan":
                await lifespan(receive, send)
            elif scope["type"] == "http":
                body = b'{"error_code":"NOT_READY","message":"the model is not loaded"}'
                await respond(send, 503, JSON, body)
            return
        root = scope.get("root_path")
        if root:
            path = scope["path"]
            if path.startswith(root):
                scope["path"] = path[len(root) :] or "/"
        await server(scope, receive, send)


def _pack(folder: Path) -> tuple[bytes, str]:
    """The folder as a zip whose bytes depend only on the files (so its digest, and the
    deployment's version, stay the same for the same model)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
            if buffer.tell() > MAX_PACKED:
                raise ConfigError(
                    f"the model folder {folder} is over {MAX_PACKED >> 20} MiB: too big to send "
                    "to a Ray cluster with the deployment",
                    hint="serve it from a Ray instance on this machine (no --ray-address)",
                )
    packed = buffer.getvalue()
    return packed, hashlib.sha256(packed).hexdigest()


def _materialize(source: _ModelSource, root: Path | None = None) -> Path:
    """The model folder on this node: as given, or unpacked once (by digest) from the zip."""
    if source.packed is None:
        return Path(source.folder)
    cache = (root or Path(tempfile.gettempdir()) / "modelyard-ray-models") / source.digest
    if (cache / "MLmodel").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=cache.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(source.packed)) as archive:
            archive.extractall(staging)  # member names are sanitized: nothing lands outside
        try:
            os.replace(staging, cache)  # atomic: a replica never loads a half-written folder
        except OSError:
            if not (cache / "MLmodel").is_file():  # not another replica's copy: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


# -- the variant ---------------------------------------------------------------------------------


class RayVariant:
    """A variant's replicas as a Ray Serve application, kept at a count by `scale_to`; `tick`
    polls Ray (in the background) for what runs."""

    def __init__(
        self,
        spec: ReplicaSpec,
        *,
        project: str,
        address: str | None = None,
        on_change: Callable[[], None] = lambda: None,
    ):
        _check_spec(spec)
        require_ray()
        self.spec = spec
        self.address = address
        self.on_change = on_change
        self.app = f"{project}.{spec.endpoint}.{spec.variant}"
        self.prefix = f"/{project}/{spec.endpoint}/{spec.variant}"
        self._options = _serving_options(spec.serve_args)
        self._session: _Session | None = None
        self._deployment: _Deployment | None = None
        self._target: int | None = None  # replicas wanted (scale_to)
        self._deployed: int | None = None  # replicas Ray was last told to run
        self._routed = False  # Ray's proxy answered <prefix>/ping once
        self._failure: str | None = None  # the application failed to deploy
        self._last_exit: str | None = None
        self._restarts = 0  # the application was found gone and deployed again
        self._unreachable = 0  # status polls failed in a row
        self._failed_deploys = 0
        self._retry_at = 0.0  # monotonic: when a failed deploy is tried again
        self._replicas: list[RayReplica] = []
        self._ops = asyncio.Lock()  # one deploy or delete at a time, in the order asked
        self._applying: set[asyncio.Task[None]] = set()
        self._poll: asyncio.Task[None] | None = None
        self._closed = False

    # -- what the supervisor reads ---------------------------------------------------------------

    @property
    def replicas(self) -> list[Replica]:
        return list(self._replicas)

    def ready(self) -> list[Replica]:
        return [r for r in self._replicas if r.state == "ready"]

    @property
    def crashlooping(self) -> str | None:
        """Why the variant cannot run: Ray gave its deployment up, or cannot be reached."""
        return self._failure

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "endpoint": self.spec.endpoint,
                "variant": self.spec.variant,
                "slot": r.slot,
                "port": r.port,
                "pid": None,
                "state": r.state,
                "restarts": r.restarts,
                "started_at": r.started_at,
                "last_exit": r.last_exit,
                "log": str(r.log_path),
                "backend": "ray",
                "host": r.host,
                "application": self.app,
                "prefix": self.prefix,
                "cluster": self._session.cluster if self._session else None,
            }
            for r in self._replicas
        ]

    # -- scaling ---------------------------------------------------------------------------------

    async def scale_to(self, count: int, drain: Drain) -> None:
        """Tell Ray to run `count` replicas (connecting first, and deploying the application the
        first time). Ray starts them, or drains and removes extra ones, itself: all of them are
        reached at the same address, so there is nothing for `drain` to do per replica.
        Readiness comes through `tick`; a failed deploy is retried by `tick` after a backoff."""
        if count < 0:
            raise ConfigError(f"a variant cannot have {count} replicas")
        if self._closed:
            raise StateConflict(f"the replicas of {self._label} were stopped")
        self._target = count
        await self._apply_shielded()

    async def stop_all(self, drain: Drain | None = None) -> None:
        """Drain (when given) what the proxy sends to the variant, then delete the application
        and wait until Ray has removed it; the variant is done afterwards."""
        self._closed = True
        leaving = list(self._replicas)
        for replica in leaving:
            replica.state = "draining"
        if leaving:
            self.on_change()
        try:
            if drain is not None:
                await asyncio.gather(*(drain(replica) for replica in leaving))
        finally:  # a failed or cancelled drain must not leave the application running
            if self._poll is not None and not self._poll.done():
                self._poll.cancel()
            async with self._ops:  # after a deploy in progress: it must not come back after this
                if self._session is not None:
                    try:
                        await self._delete_app()
                    finally:
                        self._session = None
                        await _call(_release)
            self._replicas = []
            self.on_change()

    async def _apply_shielded(self) -> None:
        """`_apply`, carried through even when the caller is cancelled (the supervisor cancels
        a resize when it retires the variant): `stop_all`, waiting on the same lock, then sees
        the session it opened and the application it deployed, and deletes them."""
        task = asyncio.ensure_future(self._apply())
        self._applying.add(task)
        task.add_done_callback(self._applying.discard)
        await asyncio.shield(task)

    async def _apply(self) -> None:
        async with self._ops:
            if self._closed or self._target is None or self._target == self._deployed:
                return
            target = self._target
            try:
                if self._session is None:
                    self._session = await _call(_connect, self.address)
                if self._deployment is None:
                    self._deployment = await self._describe_deployment(self._session)
                await _call(_deploy, self._deployment, target)
            except Exception as exc:  # Ray unreachable, a refused deploy: retried by tick
                self._failed_deploys += 1
                first, longest = RETRY
                delay = min(longest, first * 2 ** (self._failed_deploys - 1))
                self._retry_at = time.monotonic() + delay
                self._last_exit = f"deploy failed: {type(exc).__name__}: {exc}"[:500]
                if isinstance(exc, ConfigError | MissingDependency):
                    self._failure = self._last_exit  # not going to get better by retrying
                return
            self._failed_deploys = 0
            self._deployed = target

    async def _describe_deployment(self, session: _Session) -> _Deployment:
        folder = self.spec.model_folder.resolve()
        if session.started:
            source = _ModelSource(str(folder))
        else:  # a cluster given by address: its nodes may not see this machine's files
            packed, digest = await asyncio.to_thread(_pack, folder)
            source = _ModelSource(str(folder), packed, digest)
        identity = {
            "model": source.digest or str(folder),
            "name": self.spec.model_name,
            "variant": self.spec.variant,
            "options": asdict(self._options),
            "modelyard": _modelyard_version(),
        }
        version = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return _Deployment(
            self.app, self.prefix, self.spec.variant, source, self.spec.model_name,
            self._options, version,
        )  # fmt: skip

    async def _delete_app(self) -> None:
        await _call(_delete, self.app)
        deadline = time.monotonic() + DELETE_TIMEOUT
        while await _call(_app_status, self.app) is not None:
            if time.monotonic() > deadline:
                self._last_exit = f"Ray did not remove application {self.app} in time"
                return
            await asyncio.sleep(0.1)  # Ray drains the replicas: polled, as Serve offers no wait

    # -- the supervisor's tick -------------------------------------------------------------------

    async def tick(self) -> None:
        """Start a background poll of Ray unless one runs: the loop never waits on Ray."""
        if self._closed or (self._poll is not None and not self._poll.done()):
            return
        self._poll = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self._refresh_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a poll must never kill the task silently: say why
            self._last_exit = f"polling Ray failed: {type(exc).__name__}: {exc}"[:500]

    async def _refresh_once(self) -> None:
        if self._target is not None and self._target != self._deployed:
            if time.monotonic() >= self._retry_at and not self._ops.locked():
                await self._apply_shielded()  # a failed deploy, or an application gone
            return
        session = self._session
        if session is None or self._deployed is None:
            return
        try:
            found = await _call(_app_status, self.app)
        except Exception as exc:
            self._unreachable += 1
            self._last_exit = f"Ray does not answer: {type(exc).__name__}: {exc}"[:500]
            if self._unreachable >= UNREACHABLE_TICKS:
                self._failure = self._last_exit
            self._update(0, 0, session)
            return
        self._unreachable = 0
        if self._closed:
            return
        if found is None:  # deleted behind our back, or the cluster restarted: deploy again
            self._restarts += 1
            self._last_exit = f"application {self.app} was gone from Ray"
            self._deployed = None
            self._routed = False
            self._update(0, 0, session)
            return
        status, message, states = found
        self._failure = f"Ray could not deploy {self.app}: {message}" if (
            status == "DEPLOY_FAILED"
        ) else None  # fmt: skip
        running = states.get("RUNNING", 0)
        starting = sum(states.get(state, 0) for state in _STARTING)
        if running and not self._routed:
            self._routed = await http_ok(
                session.host, session.port, self.prefix + "/ping", PROBE_TIMEOUT
            )
        self._update(running if self._routed else 0, starting, session, running)

    def _update(self, ready: int, starting: int, session: _Session, running: int = 0) -> None:
        """The replicas shown: `ready` ones first, then those Ray is starting (and those that
        run but are not routed yet)."""
        waiting = starting + (running - ready)
        up: State = "ready"
        coming: State = "starting"
        states = [up] * ready + [coming] * waiting
        before = [(r.slot, r.state) for r in self._replicas]
        kept = {r.slot: r for r in self._replicas}
        replicas: list[RayReplica] = []
        for slot, state in enumerate(states, start=1):
            replica = kept.get(slot)
            if replica is None:
                replica = RayReplica(
                    slot, session.port, None, state, 0, time.time(), None, session.log_dir,
                    host=session.host, prefix=self.prefix,
                )  # fmt: skip
            replica.state = state
            replica.restarts = self._restarts
            replica.last_exit = self._last_exit
            replicas.append(replica)
        self._replicas = replicas
        if [(r.slot, r.state) for r in replicas] != before:
            self.on_change()

    @property
    def _label(self) -> str:
        return f"{self.spec.endpoint}/{self.spec.variant}"


def _modelyard_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelyard")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _serving_options(serve_args: tuple[str, ...]) -> ServingOptions:
    """The replicas' ServingOptions from the options a local replica would get on its command
    line, read with the CLI's own definitions (same defaults)."""
    import argparse

    from modelyard.cli.serving_args import add_batching_arguments
    from modelyard.serving.app import ServingOptions

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    add_batching_arguments(parser)
    try:
        args, unknown = parser.parse_known_args(list(serve_args))
    except argparse.ArgumentError as exc:
        raise ConfigError(f"a replica option is invalid: {exc}") from None
    if unknown:
        raise ConfigError(f"the ray backend does not take {' '.join(unknown)}")
    return ServingOptions(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_batch_rows=args.max_batch,
        max_wait=args.max_wait_ms / 1000,
    )


def ray_address(config: Mapping[str, Any]) -> str | None:
    """The Ray address recorded in an endpoint's config (None: a local instance of its own)."""
    settings = config.get("ray") or {}
    address = settings.get("address")
    return str(address) if address else None
