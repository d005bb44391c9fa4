"""Running a model server: resolve what to serve, load it, listen (uvicorn).

MODEL is an MLflow model folder, or a registry reference (`abalone/3`, `abalone@champion`,
`abalone`) of the project, whose package is written once into the project's state folder
(`.modelyard/serving/<digest>/`, verified against its digest) and served from there.

An endpoint's supervisor runs replicas of this server on sockets it bound itself (`fd`), and
has them exit when it dies (`exit_with_parent`), so that no replica outlives a killed supervisor.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime

    from .app import ServedModel, ServingOptions
    from .guards import GuardOptions


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # "abalone/3" or the folder's name
    folder: Path


def is_model_folder(text: str) -> bool:
    return (Path(text) / "MLmodel").is_file()


def resolve_model(text: str, registry: Callable[[], tuple[Runtime, str]]) -> ResolvedModel:
    """A model folder as it is, or a registry reference (of the project `registry()` opens,
    giving its runtime and name) written out to the state folder."""
    path = Path(text)
    if is_model_folder(text):
        return ResolvedModel(path.resolve().name, path.resolve())
    if path.exists():
        raise ConfigError(
            f"'{text}' is not an MLflow model folder (it has no MLmodel file)",
            hint="give a folder that `mlflow.pyfunc.load_model` loads, or a registry reference "
            "such as abalone@champion",
        )
    from modelyard.registry import service

    runtime, project = registry()
    detail = service.show_version(runtime, project, text)
    version = detail.version
    return ResolvedModel(
        detail.ref, package_folder(runtime, version.package_digest, version.package_size)
    )


def package_folder(runtime: Runtime, digest: str, size: int) -> Path:
    """A registered package written out once into the state folder (verified by its digest)."""
    from modelyard.store.artifacts import ArtifactRef

    folder = runtime.settings.state_dir / "serving" / digest.replace(":", "-")
    if not (folder / "MLmodel").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        runtime.store.materialize(
            ArtifactRef(digest, "dir", size), folder, overwrite=folder.exists()
        )
    return folder


def load_served_model(
    resolved: ResolvedModel, *, native: bool = True, variant: str = "default"
) -> ServedModel:
    from .app import ServedModel
    from .predictors import load_predictor
    from .signature import InputSchema

    predictor = load_predictor(resolved.folder, native=native)
    schema = InputSchema.from_mlmodel(resolved.folder)
    return ServedModel(resolved.name, predictor, schema, variant)


def inherited_socket(fd: int) -> socket.socket:
    """The listening TCP socket a parent process passed down as file descriptor `fd`."""
    try:
        sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    except OSError as exc:
        raise ConfigError(
            f"file descriptor {fd} is not an open socket ({exc.strerror})",
            hint="--fd is for a parent process that passes a listening socket down",
        ) from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()  # not ours to close
        raise ConfigError(
            f"file descriptor {fd} is not a listening stream socket",
            hint="the parent must bind and listen before passing the socket down",
        )
    return sock


def run_server(
    served: ServedModel,
    *,
    host: str,
    port: int,
    options: ServingOptions,
    guards: GuardOptions | None = None,
    started_at: float,
    announce: Callable[[str], Any] = print,
    sock: socket.socket | None = None,
    parent_pid: int | None = None,
) -> None:
    """Serve until interrupted; announce the address once the socket listens.

    `sock`: serve on this listening socket (see `inherited_socket`) instead of `host`/`port`.
    `parent_pid`: shut down gracefully (as on SIGTERM) once that process is no longer our
    parent, i.e. it died (read it with `os.getppid()` as early as possible).
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency("uvicorn", "serve", "modelyard serve") from None
    from .app import ModelServer

    # uvicorn's own `fd=` wraps a descriptor as an AF_UNIX socket, which makes asyncio skip
    # TCP_NODELAY on accepted connections (Nagle + delayed ACKs: 40 ms stalls behind the proxy).
    # A socket whose family was read from the descriptor, passed as `sockets`, avoids that.
    sockets = [sock] if sock is not None else None
    app = ModelServer(served, options, guards)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                address = self.servers[0].sockets[0].getsockname()
                took = time.monotonic() - started_at
                kind = served.predictor.kind
                announce(
                    f"serving {served.name} on http://{address[0]}:{address[1]} "
                    f"({kind}; ready in {took:.2f}s)"
                )
                sys.stdout.flush()

        async def on_tick(self, counter: int) -> bool:
            # uvicorn ticks every 0.1 s: look at the parent about once a second (one syscall)
            if parent_pid is not None and counter % 10 == 0 and os.getppid() != parent_pid:
                self.should_exit = True  # what SIGTERM does: stop accepting, finish in-flight
            return await super().on_tick(counter)

    _Server(config).run(sockets=sockets)
