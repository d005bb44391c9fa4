"""A Greengrass v2 component recipe as typed data: what `recipe` produces and the rest consumes.

Plain frozen dataclasses (no validation here: `recipe` validates while it builds them), with the
recipe's own names in snake case. A recipe has manifests per platform; `Component` is a recipe
whose manifest for this device was already selected, which is what the agent installs and runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DependencyType = Literal["HARD", "SOFT"]
Algorithm = Literal["SHA-256", "SHA-384", "SHA-512"]
Unarchive = Literal["NONE", "ZIP"]
Access = Literal["NONE", "OWNER", "ALL"]
# the lifecycle phases a recipe may define, in the order the agent runs them
PHASES = ("install", "startup", "run", "shutdown", "recover")


@dataclass(frozen=True)
class Dependency:
    name: str
    version_requirement: str  # an npm-style range, e.g. ">=1.0.0 <2.0.0" or "^2.1"
    dependency_type: DependencyType = "HARD"  # HARD: restart with it; SOFT: don't


@dataclass(frozen=True)
class Permission:
    read: Access = "OWNER"
    execute: Access = "NONE"


@dataclass(frozen=True)
class Artifact:
    uri: str  # s3://..., file://..., greengrass:..., docker:registry/image:tag
    digest: str | None = None  # base64 of the hash, as Greengrass writes it
    algorithm: Algorithm = "SHA-256"
    unarchive: Unarchive = "NONE"
    permission: Permission = field(default_factory=Permission)

    @property
    def is_docker(self) -> bool:
        return self.uri.startswith("docker:")

    @property
    def file_name(self) -> str:
        """The name the artifact gets in the component's artifacts folder."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[-1]


@dataclass(frozen=True)
class Skipif:
    """Skip the phase if a program is on the PATH (`onpath`) or a file exists (`exists`)."""

    kind: Literal["onpath", "exists"]
    value: str


@dataclass(frozen=True)
class LifecycleStep:
    """One phase of the lifecycle: a shell script with its options."""

    script: str
    timeout: float | None = None  # seconds; None: the phase's default
    setenv: dict[str, str] = field(default_factory=dict)
    requires_privilege: bool = False
    skipif: Skipif | None = None


@dataclass(frozen=True)
class Lifecycle:
    setenv: dict[str, str] = field(default_factory=dict)  # for every phase
    install: LifecycleStep | None = None
    startup: LifecycleStep | None = None  # a background process the component starts itself
    run: LifecycleStep | None = None  # the component's process (or a run-once script)
    shutdown: LifecycleStep | None = None
    recover: LifecycleStep | None = None  # after the component errored


@dataclass(frozen=True)
class Platform:
    """What a manifest applies to; None (or "*") matches any."""

    os: str | None = None  # linux, darwin, windows, ...
    architecture: str | None = None  # amd64, aarch64, arm, x86, ...
    attributes: dict[str, str] = field(default_factory=dict)  # other keys of `Platform`


@dataclass(frozen=True)
class Manifest:
    platform: Platform
    lifecycle: Lifecycle
    artifacts: tuple[Artifact, ...] = ()
    name: str | None = None


@dataclass(frozen=True)
class Recipe:
    format_version: str  # "2020-01-25"
    name: str  # com.example.HelloWorld
    version: str  # semantic version, e.g. 1.0.0
    description: str = ""
    publisher: str = ""
    type: str = "aws.greengrass.generic"
    dependencies: tuple[Dependency, ...] = ()
    default_configuration: dict[str, Any] = field(default_factory=dict)  # free JSON
    manifests: tuple[Manifest, ...] = ()
    global_lifecycle: Lifecycle | None = None  # a top-level `Lifecycle` (older recipes)
    source: str | None = field(default=None, compare=False)  # where it was read from

    @property
    def ref(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class Component:
    """A recipe resolved for this device: its manifest chosen, ready to install and run."""

    recipe: Recipe
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def version(self) -> str:
        return self.recipe.version

    @property
    def lifecycle(self) -> Lifecycle:
        return self.manifest.lifecycle

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        return self.manifest.artifacts
