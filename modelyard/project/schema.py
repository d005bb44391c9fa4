"""The schema of modelyard.yaml, validated with pydantic.

These models describe the file as users write it. The loader turns them into the pure pipeline
model (`modelyard.pipeline.model`) that the engine runs and stores with each run.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from modelyard.pipeline.selection import DEFAULT_INCLUDE, check_pattern, parse_date_prefix

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ParamType = Literal["str", "int", "float", "bool", "path", "json"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1.5h', '2d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 2h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(
                f"'{value}' is not a duration: write e.g. 30s, 5m, 2h, 1d or a number of seconds"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ParameterSpec(_Strict):
    type: ParamType | None = None
    default: Any = None
    required: bool = False
    description: str = ""
    choices: list[Any] | None = None


class RetrySpec(_Strict):
    max: int = Field(default=0, ge=0, le=100, description="retries after the first attempt")
    backoff: Duration = 1.0
    factor: float = Field(default=2.0, ge=1.0)
    max_backoff: Duration = 300.0

    @field_validator("backoff", "max_backoff", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class _StepBase(_Strict):
    description: str = ""
    after: list[Name] = Field(default_factory=list)


class _AttemptedStep(_StepBase):
    """A step that runs as attempts of a process: retries and a timeout apply."""

    retries: RetrySpec = Field(default_factory=RetrySpec)
    timeout: Duration | None = None

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("retries", mode="before")
    @classmethod
    def _retries(cls, value: Any) -> Any:
        # `retries: 3` is shorthand for `retries: {max: 3}`
        if isinstance(value, int) and not isinstance(value, bool):
            return {"max": value}
        return value


class _ComputeStep(_AttemptedStep):
    inputs: dict[Name, str] = Field(default_factory=dict)
    outputs: list[Name] = Field(default_factory=list)
    values: list[Name] = Field(default_factory=list)
    params: dict[Name, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    code: list[str] = Field(default_factory=list)
    cache: bool = True

    @model_validator(mode="after")
    def _names_unique(self) -> _ComputeStep:
        seen = set(self.outputs)
        if len(seen) != len(self.outputs):
            raise ValueError("output names must be unique")
        clash = seen & set(self.values)
        if clash:
            raise ValueError(f"'{sorted(clash)[0]}' is both an output and a value: rename one")
        return self


class RunStepSpec(_ComputeStep):
    run: str | list[str] = Field(description="command line; ${{ inputs.x }} etc. are substituted")
    shell: bool = False
    contract: Literal["modelyard", "sagemaker"] = "modelyard"
    workdir: str | None = None

    @field_validator("run")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if not (value.strip() if isinstance(value, str) else value):
            raise ValueError("the command is empty: write the command line to run")
        return value


class PythonStepSpec(_ComputeStep):
    python: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    executor: Literal["process", "inline"] = "process"


class ConditionStepSpec(_StepBase):
    condition: str
    then: list[Name] = Field(default_factory=list)
    else_: list[Name] = Field(default_factory=list, alias="else")


class FailStepSpec(_StepBase):
    fail: str


class ApprovalBody(_Strict):
    message: str = ""
    timeout: Duration | None = None
    approves: Name | None = Field(
        default=None,
        description="a register step: the decision approves or rejects the version it made",
    )
    alias_on_approval: Name | None = Field(
        default=None, description="with approves: point this alias at the approved version"
    )

    @model_validator(mode="after")
    def _alias_needs_version(self) -> ApprovalBody:
        if self.alias_on_approval is not None and self.approves is None:
            raise ValueError("alias_on_approval needs approves: (the register step)")
        return self

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class ApprovalStepSpec(_StepBase):
    approval: ApprovalBody

    @field_validator("approval", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `approval: "Deploy to prod?"` and `approval: {}` are both fine
        if value is None:
            return {}
        if isinstance(value, str):
            return {"message": value}
        return value


class PackageFileSpec(_Strict):
    output: str = Field(description="${{ steps.S.outputs.O }} or a project path")
    file: str | None = Field(default=None, description="the file inside the folder")


PackageFileValue = str | PackageFileSpec


class PackageSpec(_Strict):
    """An inference pipeline: the fitted preprocessor, then the XGBoost model."""

    preprocessor: PackageFileValue
    model: PackageFileValue
    columns: list[str] | None = Field(default=None, description="the raw input columns, in order")
    input_example: str | list[Any] | None = None
    requirements: list[str] = Field(default_factory=list)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("columns must be distinct and not empty")
        return value


def _number_or_reference(value: Any) -> Any:
    if isinstance(value, str) and "${{" not in value:
        raise ValueError(f"'{value}' is neither a number nor a ${{{{ }}}} reference")
    if isinstance(value, bool):
        raise ValueError("expected a number or a ${{ }} reference, not true/false")
    return value


# a number, or a ${{ }} reference to one (rendered when the step runs)
Number = Annotated[float | str, BeforeValidator(_number_or_reference)]


class GateRuleSpec(_Strict):
    metric: Name
    min: Number | None = None
    max: Number | None = None
    better_than: Name | None = Field(default=None, description="an alias of the model")
    direction: Literal["lower", "higher"] | None = None
    margin: Number = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> GateRuleSpec:
        thresholds = self.min is not None or self.max is not None
        if thresholds == (self.better_than is not None):
            raise ValueError(
                "a gate rule has either min/max (thresholds) or better_than (an alias)"
            )
        return self


class EvidenceBody(_Strict):
    """The candidate's and the champion's predictions on an evaluation set, for the reviewer."""

    data: str = Field(description="${{ steps.S.outputs.O }} or a project path: CSV with a header")
    label: str = Field(description="the column of actual values")
    compare_with: Name = Field(default="champion", description="the alias of the version to beat")
    file: str | None = Field(default=None, description="the CSV file inside the folder")


class RegisterBody(_Strict):
    model: Name = Field(description="the registry model's name")
    description: str = ""
    package: PackageSpec | None = None
    mlflow_model: str | None = Field(default=None, description="a folder that is an MLflow model")
    metrics: dict[Name, Number] = Field(default_factory=dict)
    params: dict[Name, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    approval_status: Literal["pending", "approved"] = "pending"
    gate: list[GateRuleSpec] = Field(default_factory=list)
    alias_on_register: Name | None = None
    evidence: EvidenceBody | None = None

    @model_validator(mode="after")
    def _one_package(self) -> RegisterBody:
        if (self.package is None) == (self.mlflow_model is None):
            raise ValueError(
                "give either `package:` (preprocessor and model) or `mlflow_model:`, not both"
                if self.package is not None
                else "give either `package:` (preprocessor and model) or `mlflow_model:`"
            )
        return self


class RegisterStepSpec(_AttemptedStep):
    # `register_`: pydantic models are ABCs, whose `register` must not be shadowed
    register_: RegisterBody = Field(alias="register")


class AutoscaleSpec(_Strict):
    """Target tracking on invocations per replica per minute; the limits are checked by
    `AutoscalePolicy` when the project is linted (so the rules live in one place)."""

    min: int = Field(description="the fewest replicas")
    max: int = Field(description="the most replicas")
    target: float = Field(description="invocations per replica per minute")
    cooldown: Duration = Field(default=60.0, description="between two changes of capacity")
    window: Duration = Field(default=60.0, description="traffic the rate is measured over")

    @field_validator("cooldown", "window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class RolloutSpec(_Strict):
    """How traffic moves from the serving version to the new one; every key is optional (the
    stage's default plan fills the rest) and `RolloutPlan` checks the values when linting."""

    strategy: str | None = Field(default=None, description="all_at_once, canary or linear")
    canary_percent: float | None = None
    linear_step_percent: float | None = None
    bake: Duration | None = None
    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    min_requests: int | None = None
    ready_timeout: Duration | None = None

    @field_validator("bake", "ready_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


class DeployBody(_Strict):
    model: Name = Field(description="the register step whose version is deployed")
    endpoint: str = Field(description="the endpoint's name (created on first deploy)")
    stage: str = Field(description="dev or prod")
    replicas: int | None = Field(default=None, ge=1)
    autoscale: AutoscaleSpec | None = None
    rollout: RolloutSpec | None = None
    allow_unapproved: bool = Field(
        default=False, description="let prod take a version nobody approved"
    )


class DeployStepSpec(_AttemptedStep):
    deploy: DeployBody


STEP_KINDS = ("run", "python", "condition", "fail", "approval", "register", "deploy")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        present = [kind for kind in STEP_KINDS if kind in value]
        return present[0] if len(present) == 1 else None
    return None


StepSpec = Annotated[
    Annotated[RunStepSpec, Tag("run")]
    | Annotated[PythonStepSpec, Tag("python")]
    | Annotated[ConditionStepSpec, Tag("condition")]
    | Annotated[FailStepSpec, Tag("fail")]
    | Annotated[ApprovalStepSpec, Tag("approval")]
    | Annotated[RegisterStepSpec, Tag("register")]
    | Annotated[DeployStepSpec, Tag("deploy")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of the keys: " + ", ".join(STEP_KINDS),
    ),
]


class TriggersSpec(_Strict):
    data: list[Name] = Field(
        default_factory=list, description="data sources whose new versions start a run"
    )

    @field_validator("data")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a data source is listed twice")
        return value


class PipelineSpec(_Strict):
    description: str = ""
    parameters: dict[Name, ParameterSpec] = Field(default_factory=dict)
    steps: dict[Name, StepSpec] = Field(default_factory=dict)
    define: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function building the pipeline in Python (instead of steps)",
    )
    max_parallel: int | None = Field(default=None, ge=1)
    triggers: TriggersSpec = Field(default_factory=TriggersSpec)

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameter_shorthand(cls, value: Any) -> Any:
        # `max_depth: 5` is shorthand for `max_depth: {default: 5}`
        if isinstance(value, dict):
            return {k: v if isinstance(v, dict) else {"default": v} for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _steps_or_define(self) -> PipelineSpec:
        if self.define and (self.steps or self.parameters):
            raise ValueError(
                "a pipeline has either `define: module:function` or `steps:`/`parameters:`, "
                "not both"
            )
        if not self.define and not self.steps:
            raise ValueError("a pipeline needs at least one step (or `define: module:function`)")
        return self


class EnvironmentSpec(_Strict):
    lock: str | None = Field(
        default=None, description="lock file whose digest is part of every cache key"
    )


class DataSourceSpec(_Strict):
    url: str = Field(description="a folder relative to the project, or an fsspec URL (s3://...)")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    date_prefix: str | None = Field(
        default=None, description="dated folders such as YYYY/MM/DD/: only files below them"
    )
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the url is empty: write a folder of the project or s3://bucket/...")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return [check_pattern(p) for p in value]

    @field_validator("date_prefix")
    @classmethod
    def _date_prefix(cls, value: str | None) -> str | None:
        return None if value is None else parse_date_prefix(value).pattern


class ProjectSpec(_Strict):
    name: Name | None = None
    data_sources: dict[Name, DataSourceSpec] = Field(default_factory=dict)
    pipelines: dict[Name, PipelineSpec] = Field(default_factory=dict)
    environment: EnvironmentSpec = Field(default_factory=EnvironmentSpec)
    settings: dict[str, Any] = Field(default_factory=dict)
