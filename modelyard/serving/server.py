"""Running a model server: resolve what to serve, load it, listen (uvicorn).

MODEL is an MLflow model folder, or a registry reference (`abalone/3`, `abalone@champion`,
`abalone`) of the project, whose package is written once into the project's state folder
(`.modelyard/serving/<digest>/`, verified against its digest) and served from there.
"""

from __future__ import annotations

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
    from modelyard.store.artifacts import ArtifactRef

    runtime, project = registry()
    detail = service.show_version(runtime, project, text)
    version = detail.version
    digest = version.package_digest
    folder = runtime.settings.state_dir / "serving" / digest.replace(":", "-")
    if not (folder / "MLmodel").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        package = ArtifactRef(digest, "dir", version.package_size)
        runtime.store.materialize(package, folder, overwrite=folder.exists())
    return ResolvedModel(detail.ref, folder)


def load_served_model(resolved: ResolvedModel, *, native: bool = True) -> ServedModel:
    from .app import ServedModel
    from .predictors import load_predictor
    from .signature import InputSchema

    predictor = load_predictor(resolved.folder, native=native)
    schema = InputSchema.from_mlmodel(resolved.folder)
    return ServedModel(resolved.name, predictor, schema)


def run_server(
    served: ServedModel,
    *,
    host: str,
    port: int,
    options: ServingOptions,
    guards: GuardOptions | None = None,
    started_at: float,
    announce: Callable[[str], Any] = print,
) -> None:
    """Serve until interrupted; announce the address once the socket listens."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency("uvicorn", "serve", "modelyard serve") from None
    from .app import ModelServer

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

    _Server(config).run()
