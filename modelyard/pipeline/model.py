"""The pure pipeline model: what the engine runs and what is stored with every run.

Plain frozen dataclasses that round-trip through JSON, so a run carries the exact definition it
was started with and any process can advance it without re-reading the project file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    # their own modules, imported only where a register or deploy step is built or read: every
    # command imports this one, and each frozen dataclass costs about a millisecond to create
    from modelyard.pipeline.deployment import Deployment
    from modelyard.pipeline.registration import Registration

StepKind = Literal["run", "python", "condition", "fail", "approval", "register", "deploy"]
COMPUTE_KINDS = frozenset({"run", "python"})
# The values every register step produces (null where they do not apply), so later steps and
# conditions can refer to them: `${{ steps.register.values.version }}`.
REGISTER_VALUES = ("registered", "model", "version", "package_digest", "reason")
# The values of a deploy step: where the version serves, and `outcome`: "completed" (rolled
# out) or "unchanged" (it already served there). A rollout that rolled back fails the step.
DEPLOY_VALUES = ("endpoint", "url", "variant", "model", "version", "outcome")
# The output of a register step: the model package it stored (a dir artifact).
REGISTER_OUTPUT = "package"
# ... and, when it builds evidence for the reviewer, the report folder (report.html, summary.md).
EVIDENCE_OUTPUT = "evidence"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any = None
    required: bool = False
    description: str = ""
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Retry:
    max: int = 0
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait before the next attempt after `failed_attempts` failures (>= 1)."""
        return float(min(self.backoff * self.factor ** (failed_attempts - 1), self.max_backoff))


@dataclass(frozen=True)
class Step:
    name: str
    kind: StepKind
    description: str = ""
    after: tuple[str, ...] = ()
    # compute steps (run, python)
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    code: tuple[str, ...] = ()
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    cache: bool = True
    # run
    command: str | tuple[str, ...] | None = None
    shell: bool = False
    contract: str = "modelyard"
    workdir: str | None = None
    # python
    function: str | None = None
    executor: str = "process"
    # condition
    condition: str | None = None
    then: tuple[str, ...] = ()
    otherwise: tuple[str, ...] = ()
    # fail and approval
    message: str = ""
    approval_timeout: float | None = None
    approves: str | None = None  # the register step whose version an approval decides
    alias_on_approval: str | None = None  # ... and the alias it then points at that version
    # register
    registration: Registration | None = None
    # deploy
    deployment: Deployment | None = None

    @property
    def is_compute(self) -> bool:
        return self.kind in COMPUTE_KINDS

    @property
    def runs_a_process(self) -> bool:
        """Whether an attempt of the step is a process (counted against `max_parallel`)."""
        return self.is_compute or self.kind in ("register", "deploy")

    @property
    def produced_outputs(self) -> tuple[str, ...]:
        """The outputs later steps may refer to (a register step's are implied by its kind)."""
        if self.registration is None:
            return self.outputs
        if self.registration.evidence is not None:
            return (REGISTER_OUTPUT, EVIDENCE_OUTPUT)
        return (REGISTER_OUTPUT,)

    @property
    def upstream(self) -> tuple[str, ...]:
        """The steps named as dependencies: `after`, and the register step an approval decides
        or a deploy step deploys."""
        if self.approves:
            return (*self.after, self.approves)
        if self.deployment is not None:
            return (*self.after, self.deployment.model)
        return self.after

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        values = dict(data)
        for key in ("after", "outputs", "values", "code", "then", "otherwise"):
            if key in values:
                values[key] = tuple(values[key])
        if isinstance(values.get("command"), list):
            values["command"] = tuple(values["command"])
        if "retry" in values:
            values["retry"] = Retry(**values["retry"])
        if values.get("registration") is not None:
            from modelyard.pipeline.registration import Registration

            values["registration"] = Registration.from_json(values["registration"])
        if values.get("deployment") is not None:
            from modelyard.pipeline.deployment import Deployment

            values["deployment"] = Deployment.from_json(values["deployment"])
        return cls(**values)


@dataclass(frozen=True)
class DataSource:
    """A watched location whose files are a data version: a folder of the project or a URL."""

    name: str
    url: str  # a path relative to the project, an absolute path, or an fsspec URL
    include: tuple[str, ...] = ("**/*",)
    exclude: tuple[str, ...] = ()
    date_prefix: str | None = None  # e.g. "YYYY/MM/DD/": only files under dated folders
    storage_options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSource:
        values = dict(data)
        for key in ("include", "exclude"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: dict[str, Step]
    parameters: dict[str, Parameter] = field(default_factory=dict)
    description: str = ""
    max_parallel: int | None = None
    # the data sources its steps read (`${{ data.NAME }}`) or that trigger it, frozen with each
    # run so that any process can materialize the run's data without the project file
    data_sources: dict[str, DataSource] = field(default_factory=dict)
    data_triggers: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "max_parallel": self.max_parallel,
            "parameters": {n: asdict(p) for n, p in self.parameters.items()},
            "steps": [s.to_json() for s in self.steps.values()],
            "data_sources": {n: d.to_json() for n, d in self.data_sources.items()},
            "data_triggers": list(self.data_triggers),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pipeline:
        params = {}
        for name, p in data.get("parameters", {}).items():
            choices = p.get("choices")
            params[name] = Parameter(**(p | {"choices": tuple(choices) if choices else None}))
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            max_parallel=data.get("max_parallel"),
            parameters=params,
            steps={s["name"]: Step.from_json(s) for s in data["steps"]},
            data_sources={
                n: DataSource.from_json(d) for n, d in data.get("data_sources", {}).items()
            },
            data_triggers=tuple(data.get("data_triggers", ())),
        )
