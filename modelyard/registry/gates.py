"""Gates: automatic checks on a candidate version's metrics before it is registered (pure).

A rule is a threshold (`{metric: mse, max: 6.0}`) or a comparison with the version an alias
points at (`{metric: mse, better_than: champion, direction: lower}`). The register step checks
the rules before it packages anything (a failing gate costs no packaging), and again in the
transaction that inserts the version, against the champion of that moment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.pipeline.registration import GateRule

LOWER, HIGHER = "lower", "higher"

# Metric names whose better direction is known, so rules and comparisons need not say it.
_KNOWN_DIRECTIONS = {
    **dict.fromkeys(
        ("mse", "rmse", "mae", "mape", "msle", "rmsle", "loss", "log_loss", "logloss", "error"),
        LOWER,
    ),
    **dict.fromkeys(
        ("accuracy", "precision", "recall", "f1", "auc", "roc_auc", "pr_auc", "r2", "map"),
        HIGHER,
    ),
}


def known_direction(metric: str) -> str | None:
    """`lower` or `higher` for a well-known metric name (case and `val_`/`test_` ignored)."""
    name = metric.lower()
    for prefix in ("val_", "validation_", "test_", "eval_"):
        name = name.removeprefix(prefix)
    return _KNOWN_DIRECTIONS.get(name)


def metric_directions(metrics: Iterable[str], rules: Iterable[ResolvedRule]) -> dict[str, str]:
    """Which way is better for each metric: a rule's direction, what a one-sided threshold
    implies (`max:` lower, `min:` higher), else the well-known name; unknown ones are left out."""
    found: dict[str, str] = {}
    for rule in rules:  # the gate's metrics first: the evidence shows them first
        implied = rule.direction
        if implied is None and (rule.min is None) != (rule.max is None):
            implied = "lower" if rule.max is not None else "higher"
        if implied is not None:
            found.setdefault(rule.metric, implied)
    for metric in metrics:
        known = known_direction(metric)
        if known is not None:
            found.setdefault(metric, known)
    return found


@dataclass(frozen=True)
class ResolvedRule:
    """A gate rule with its numbers resolved (references rendered)."""

    metric: str
    min: float | None = None
    max: float | None = None
    better_than: str | None = None
    direction: str | None = None
    margin: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Champion:
    """The version an alias points at, as a gate compares with it."""

    alias: str
    version: int
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class RuleResult:
    rule: ResolvedRule
    passed: bool
    detail: str  # e.g. "mse 5.2 <= 6.0", or "champion is not set: passes"
    compared_with: int | None = None  # the champion's version number

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_json(),
            "passed": self.passed,
            "detail": self.detail,
            "compared_with": self.compared_with,
        }


@dataclass(frozen=True)
class GateReport:
    results: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def reason(self) -> str:
        """Why the gate failed (every failing rule), or '' if it passed."""
        return "; ".join(r.detail for r in self.results if not r.passed)

    @property
    def compared_with(self) -> dict[str, int]:
        """alias -> the version number each `better_than` rule compared with."""
        return {
            r.rule.better_than: r.compared_with
            for r in self.results
            if r.rule.better_than is not None and r.compared_with is not None
        }

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.results]


def resolve_rules(
    rules: Sequence[GateRule], number: Callable[[str, Any], float]
) -> list[ResolvedRule]:
    """The rules with their numbers resolved by `number(what, value)` (which renders references
    and raises for a non-number); the direction is filled in from known metric names."""
    resolved = []
    for index, rule in enumerate(rules, start=1):
        where = f"gate rule {index} ({rule.metric})"
        resolved.append(
            ResolvedRule(
                metric=rule.metric,
                min=None if rule.min is None else number(f"{where} min", rule.min),
                max=None if rule.max is None else number(f"{where} max", rule.max),
                better_than=rule.better_than,
                direction=rule.direction or known_direction(rule.metric),
                margin=number(f"{where} margin", rule.margin),
            )
        )
    return resolved


def evaluate_gate(
    rules: Sequence[ResolvedRule],
    metrics: Mapping[str, float],
    champions: Mapping[str, Champion | None],
) -> GateReport:
    """Check every rule; `champions` maps each `better_than` alias to its version (None: unset)."""
    return GateReport(tuple(_check(rule, metrics, champions) for rule in rules))


def _check(
    rule: ResolvedRule, metrics: Mapping[str, float], champions: Mapping[str, Champion | None]
) -> RuleResult:
    value = metrics[rule.metric]  # lint makes sure every gated metric is declared
    name = rule.metric
    if rule.better_than is None:
        if rule.min is not None and not value >= rule.min:
            return RuleResult(rule, False, f"{name} {_num(value)} < {_num(rule.min)}")
        if rule.max is not None and not value <= rule.max:
            return RuleResult(rule, False, f"{name} {_num(value)} > {_num(rule.max)}")
        bounds = [
            *([f"{_num(rule.min)} <= "] if rule.min is not None else []),
            f"{name} {_num(value)}",
            *([f" <= {_num(rule.max)}"] if rule.max is not None else []),
        ]
        return RuleResult(rule, True, "".join(bounds))
    alias = rule.better_than
    champion = champions.get(alias)
    if champion is None:
        return RuleResult(rule, True, f"{alias} is not set: nothing to compare {name} with")
    theirs = champion.metrics.get(name)
    label = f"{alias} (version {champion.version})"
    if not _is_number(theirs):
        return RuleResult(
            rule,
            False,
            f"cannot compare {name}: {label} has no number for it",
            champion.version,
        )
    assert isinstance(theirs, int | float)
    margin = f" by more than {_num(rule.margin)}" if rule.margin else ""
    if rule.direction == LOWER:
        passed = value < theirs - rule.margin
        relation = "<" if passed else ">="
    else:
        passed = value > theirs + rule.margin
        relation = ">" if passed else "<="
    detail = f"{name} {_num(value)} {relation} {_num(theirs)} of {label}"
    if not passed:
        detail = f"{detail}: not better{margin}"
    return RuleResult(rule, passed, detail, champion.version)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float) -> str:
    """A number as people read it: 6.0 -> 6.0, 5.213456789 -> 5.21346, 3 -> 3."""
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.6g}"
    return text if any(c in text for c in ".eni") else f"{text}.0"
