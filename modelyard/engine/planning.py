"""Which steps can start, which must be skipped, and whether the run is waiting (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.pipeline.dag import Dag
from modelyard.store.runs import CANCELLED, FAILED, PENDING, SKIPPED, SUCCEEDED, WAITING, StepRow


@dataclass
class Decision:
    ready: list[str] = field(default_factory=list)
    skip: dict[str, str] = field(default_factory=dict)  # step -> why
    waiting: list[str] = field(default_factory=list)  # approvals waiting for a person
    failed: bool = False  # a step failed or was cancelled: start nothing new
    retry_at: float | None = None  # the earliest time a step waiting to retry may start

    @property
    def wake_at(self) -> float | None:
        return self.retry_at


def plan(dag: Dag, steps: dict[str, StepRow], now: float) -> Decision:
    status = {name: row.status for name, row in steps.items()}
    decision = Decision(failed=any(s in (FAILED, CANCELLED) for s in status.values()))
    for name in dag.order:
        if status[name] == WAITING:
            decision.waiting.append(name)
        if status[name] != PENDING:
            continue
        reason = _skip_reason(dag, steps, status, name)
        if reason is not None:
            decision.skip[name] = reason
            status[name] = SKIPPED  # so that what depends on it is skipped in this same pass
            continue
        if any(status.get(dep) != SUCCEEDED for dep in dag.dependencies[name]):
            continue
        not_before = steps[name].not_before
        if not_before is not None and not_before > now:
            decision.retry_at = min(decision.retry_at or not_before, not_before)
            continue
        decision.ready.append(name)
    return decision


def _skip_reason(
    dag: Dag, steps: dict[str, StepRow], status: dict[str, str], name: str
) -> str | None:
    for gate in dag.gates.get(name, []):
        if status[gate.condition] == SKIPPED:
            return f"condition '{gate.condition}' was skipped"
        if status[gate.condition] == SUCCEEDED:
            result = bool((steps[gate.condition].values or {}).get("result"))
            chosen = "then" if result else "else"
            if chosen != gate.branch:
                return f"condition '{gate.condition}' was {str(result).lower()}"
    deciding = dag.pipeline.steps[name].kind == "condition"
    for dep in sorted(dag.dependencies[name]):
        if status.get(dep) == SKIPPED:
            return f"'{dep}' was skipped"
        # A gate that refused the version ends that branch cleanly: approving or deploying
        # nothing makes no sense. Conditions still run, so a run can branch on `registered`.
        if not deciding and status.get(dep) == SUCCEEDED and _registered_nothing(steps[dep]):
            return f"'{dep}' registered no version"
    return None


def _registered_nothing(row: StepRow) -> bool:
    return row.kind == "register" and (row.values or {}).get("registered") is False
