"""Approval steps that decide a model version (`approval: {approves: register}`).

Such a step waits on the version its register step made, and a person's decision is recorded on
both at once, in one transaction: the step's approval (so the run goes on or fails) and the
version's approval status (so the registry says who approved it and why). Whichever way the
decision comes in, `modelyard approve RUN STEP` or `modelyard models approve MODEL/VERSION`, the two
never disagree (the registry side is `modelyard.registry.service.decide`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelyard.errors import StateConflict
from modelyard.pipeline.model import Step
from modelyard.store import runs as db

from .runtime import Runtime


@dataclass(frozen=True)
class Decided:
    approved: bool
    actor: str
    message: str


@dataclass(frozen=True)
class ApprovalTarget:
    model: str
    version: int
    decided: Decided | None  # the version was decided before the step opened

    @property
    def label(self) -> str:
        return f"{self.model}/{self.version}"

    @property
    def prompt(self) -> str:
        return f"A new version of model {self.model} is waiting for approval: {self.label}"

    @property
    def values(self) -> dict[str, Any]:
        # what `modelyard.registry.service` looks for to decide a waiting step with the version
        return {"model": self.model, "version": self.version}


def version_to_approve(
    runtime: Runtime, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]
) -> ApprovalTarget:
    """The version the step's register step made, and whether it is already decided."""
    from modelyard.registry import service as registry
    from modelyard.store.registry import APPROVED, PENDING

    assert step.approves is not None
    made = steps[step.approves].values or {}
    model, number = str(made.get("model")), int(made["version"])
    detail = registry.show_version(runtime, run.project, f"{model}/{number}")
    version = detail.version
    decided = None
    if version.approval_status != PENDING:
        approved = version.approval_status == APPROVED
        by = f" by {version.decided_by}" if version.decided_by else ""
        comment = f": {version.decision_comment}" if version.decision_comment else ""
        verb = "approved" if approved else "rejected"
        message = f"{model}/{number} was already {verb}{by}{comment}"
        decided = Decided(approved, version.decided_by or "", message)
    return ApprovalTarget(model, number, decided)


def decide_version_of_step(
    conn: sa.Connection,
    project: str,
    row: db.StepRow,
    *,
    approve: bool,
    comment: str,
    actor: str,
) -> None:
    """Decide the version a waiting step approves, if it approves one (same transaction)."""
    from modelyard.registry import service as registry

    values = row.values or {}
    if row.kind != "approval" or "version" not in values or "model" not in values:
        return
    ref = f"{values['model']}/{values['version']}"
    try:
        registry.decide_in(conn, project, ref, approve=approve, comment=comment, actor=actor)
    except StateConflict as exc:
        raise StateConflict(
            f"step '{row.name}' approves {ref}, which cannot be decided: {exc.message}",
            hint=exc.hint,
        ) from None
