"""Evidence for approving a model version: what a reviewer sees before saying yes.

An approval is only as good as what the person approving looked at, so the same evidence should
be shown wherever a decision is taken (CLI, web UI, Slack, pull requests) and kept with the
approval. This module turns one typed `Evidence` (the candidate version, the champion it would
replace, the evaluation set's actual values) into:

- `compare_metrics`: one `MetricRow` per metric: values, delta, relative delta, better or worse
  by the metric's direction ("lower" or "higher" is better);
- `render_markdown`: a compact summary for Slack and pull-request comments (no images, at most
  `MARKDOWN_LIMIT` characters);
- `render_html`: a self-contained page (inline CSS, plots as data: URIs, no script, no external
  URL but the MLflow run links) with metrics, predicted-vs-actual and residual plots, lineage and
  parameters;
- `render_plots` / `write_report`: the PNGs alone, or everything written to a folder.

Rendering is pure: no database, no MLflow calls. The registry service gathers the inputs.
matplotlib and numpy are imported inside the plotting functions only, so importing this module
(and the registry, and the CLI) stays fast.

Lineage keys rendered specially (others are shown as they come): `run_id`, `project`,
`pipeline`, `step`, `git` (`{commit, dirty, branch}`, or flat `git_commit`/`git_dirty`), `data`
or `data_versions` (`{source: manifest digest}`), `inputs` (`{name: digest}`), `parents` (names,
or the registry's `{model, version, alias}`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from modelyard.errors import ArtifactError, ConfigError, MissingDependency

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from matplotlib.axes import Axes

__all__ = [
    "MARKDOWN_LIMIT",
    "SCATTER_LIMIT",
    "Evidence",
    "MetricRow",
    "Plot",
    "VersionEvidence",
    "compare_metrics",
    "render_html",
    "render_markdown",
    "render_plots",
    "write_report",
]

# Slack cuts a message's text block at 3,000 characters; PR comments are read the same way.
MARKDOWN_LIMIT = 3000
# Above this many evaluation rows the scatter plots show a sample: more points only hide each
# other, make the PNG large and the page slow, and say nothing a sample does not.
SCATTER_LIMIT = 5000
# A fixed seed, so the same evidence always shows the same sample (and gives the same bytes).
_SAMPLE_SEED = 20240611

HTML_FILE = "report.html"
MARKDOWN_FILE = "summary.md"
PLOT_NAMES = ("predicted_vs_actual", "residuals")

Direction = Literal["lower", "higher"]
Status = Literal[
    "better",  # neither side NaN, the direction known, and the candidate wins
    "worse",
    "same",
    "no_direction",  # both values comparable, but nobody said which way is better
    "candidate_only",  # no champion, or the champion did not report this metric
    "champion_only",  # the candidate does not report a metric the champion had
    "not_comparable",  # NaN on either side
]

_DIRECTION_ALIASES: dict[str, Direction] = {
    "lower": "lower",
    "min": "lower",
    "minimize": "lower",
    "higher": "higher",
    "max": "higher",
    "maximize": "higher",
}

# Blue and orange stay distinct for the common kinds of colour blindness.
CANDIDATE_COLOR = "#2563eb"
CHAMPION_COLOR = "#ea580c"


# -- the input -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionEvidence:
    """One side of the comparison: the candidate version or the champion."""

    label: str  # "candidate abalone/4", "champion abalone/3 (@champion)"
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    lineage: Mapping[str, Any] = field(default_factory=dict)
    mlflow_run_url: str | None = None
    # On the evaluation set, in the same order as `Evidence.actuals`.
    predictions: Collection[float] | None = None

    def __post_init__(self) -> None:
        # Metrics arrive from JSON files, MLflow and numpy: normalise them to plain floats once,
        # here at the edge, so that every renderer can trust them.
        metrics: dict[str, float] = {}
        for name, value in self.metrics.items():
            if isinstance(value, bool):
                raise _bad_metric(self.label, name, value)
            try:
                metrics[str(name)] = float(value)
            except (TypeError, ValueError):
                raise _bad_metric(self.label, name, value) from None
        object.__setattr__(self, "metrics", metrics)


def _bad_metric(label: str, name: object, value: object) -> ConfigError:
    return ConfigError(
        f"metric {name!r} is {value!r}, not a number",
        where=label,
        hint="metrics must be numbers (NaN and infinity are allowed and shown as such)",
    )


@dataclass(frozen=True)
class Evidence:
    """What a reviewer sees before approving `candidate` (to replace `champion`, if any)."""

    model: str
    candidate: VersionEvidence
    champion: VersionEvidence | None = None  # None when there is no champion yet
    actuals: Collection[float] | None = None  # the evaluation set's true values
    # Which way is better, per metric: "lower" (mse) or "higher" (accuracy). Metrics named here
    # come first, in this order, so put the one the gate uses first.
    metric_directions: Mapping[str, str] = field(default_factory=dict)
    title: str = ""  # empty: "Approval evidence for <model>"
    notes: Sequence[str] = ()  # what the reviewer should know that the numbers do not say

    def __post_init__(self) -> None:
        directions: dict[str, Direction] = {}
        for name, direction in self.metric_directions.items():
            normal = _DIRECTION_ALIASES.get(str(direction).strip().lower())
            if normal is None:
                raise ConfigError(
                    f"metric {name!r} has direction {direction!r}",
                    where=f"evidence for {self.model}",
                    hint='say "lower" (smaller is better, like mse) or "higher" (like accuracy)',
                )
            directions[str(name)] = normal
        object.__setattr__(self, "metric_directions", directions)
        # A length mismatch means predictions and actuals are not row-aligned: any plot made from
        # them would be silently wrong, so refuse here rather than draw it.
        for side in (self.candidate, self.champion):
            if side is None or side.predictions is None or self.actuals is None:
                continue
            if len(side.predictions) != len(self.actuals):
                raise ConfigError(
                    f"{len(side.predictions)} predictions but {len(self.actuals)} actual values",
                    where=side.label,
                    hint="give predictions on the evaluation rows, in the same order as actuals",
                )

    @property
    def heading(self) -> str:
        return self.title or f"Approval evidence for {self.model}"

    @property
    def directions(self) -> Mapping[str, Direction]:
        # __post_init__ normalised the values; this view gives them their precise type.
        return self.metric_directions  # type: ignore[return-value]


# -- metrics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    """One metric of the comparison. `delta` is candidate minus champion."""

    name: str
    candidate: float | None
    champion: float | None
    delta: float | None  # None unless both values are finite
    relative_delta: float | None  # delta / |champion|; None when the champion is 0 or missing
    better: bool | None  # None: equal, not comparable, or no direction known
    direction: Direction | None
    status: Status

    @property
    def alarming(self) -> bool:
        """Whether a reviewer should look twice at this metric."""
        return self.problem is not None

    @property
    def problem(self) -> str | None:
        """Why the metric is alarming, in a few words; None when it is not."""
        if self.candidate is not None and math.isnan(self.candidate):
            return "NaN"
        if self.candidate is not None and math.isinf(self.candidate):
            return "infinite"
        return {"worse": "worse", "champion_only": "missing"}.get(self.status)

    @property
    def verdict(self) -> str:
        """A short word for the metric's status, with the marker used in the summaries."""
        problem = self.problem
        if problem is not None:
            return f"⚠️ {problem}"
        return {
            "better": "✅ better",
            "same": "= same",
            "no_direction": "no direction",
            "candidate_only": "new",
            "not_comparable": "not comparable",
        }.get(self.status, "")


def compare_metrics(evidence: Evidence) -> list[MetricRow]:
    """Compare candidate and champion metric by metric.

    Order: the metrics named in `metric_directions` (in that order), then the others by name.
    """
    candidate = evidence.candidate.metrics
    champion = evidence.champion.metrics if evidence.champion is not None else {}
    directions = evidence.directions
    names = [name for name in directions if name in candidate or name in champion]
    names += sorted((set(candidate) | set(champion)) - set(names))
    return [
        _compare(name, candidate.get(name), champion.get(name), directions.get(name))
        for name in names
    ]


def _compare(
    name: str, cand: float | None, champ: float | None, direction: Direction | None
) -> MetricRow:
    def row(
        status: Status,
        better: bool | None = None,
        delta: float | None = None,
        relative: float | None = None,
    ) -> MetricRow:
        return MetricRow(name, cand, champ, delta, relative, better, direction, status)

    if cand is None:
        return row("champion_only")
    if champ is None:
        return row("candidate_only")
    if math.isnan(cand) or math.isnan(champ):
        return row("not_comparable")
    delta = relative = None
    if math.isfinite(cand) and math.isfinite(champ):
        delta = cand - champ
        relative = delta / abs(champ) if champ != 0 else None
    # Treat float noise (the same model retrained gives 4.5000000001) as equal, not as "better".
    if cand == champ or (delta is not None and math.isclose(cand, champ, rel_tol=1e-9)):
        return row("same", None, delta, relative)
    if direction is None:
        return row("no_direction", None, delta, relative)
    better = cand < champ if direction == "lower" else cand > champ
    return row("better" if better else "worse", better, delta, relative)


def _summary_counts(rows: Sequence[MetricRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def _verdict_sentence(evidence: Evidence, rows: Sequence[MetricRow]) -> tuple[str, str]:
    """One sentence for the top of a report, and its tone: "good", "warn" or "info"."""
    alarming = [f"{r.name} ({r.problem})" for r in rows if r.alarming]
    closer = ""
    if alarming:
        shown = ", ".join(alarming[:6])
        more = f" and {len(alarming) - 6} more" if len(alarming) > 6 else ""
        closer = f"Needs a closer look: {shown}{more}."
    if evidence.champion is None:
        first = (
            f"No champion yet: this candidate would be the first approved version of "
            f"{evidence.model}; its metrics are shown without comparison."
        )
        return ("warn", f"{first} {closer}") if closer else ("info", first)
    if closer:
        return "warn", closer
    compared = [r for r in rows if r.status in ("better", "worse", "same")]
    if not compared:
        return "info", "No metric could be compared: no shared metric has a known direction."
    better = sum(r.status == "better" for r in compared)
    return "good", (
        f"Better than the champion on {better} of {len(compared)} compared metrics, worse on none."
    )


# -- text helpers --------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    """A number for people: about five significant digits, no float noise."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1e9 or magnitude < 1e-4:
        return f"{value:.3e}"
    if magnitude >= 1e4:
        return f"{value:.0f}"
    return f"{value:.5g}"


def _signed(value: float | None) -> str:
    if value is None:
        return "—"
    text = _num(value)
    return f"+{text}" if value > 0 else text


def _percent(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 10:
        return f"{value:+.0%}"
    return f"{value:+.2%}" if abs(value) < 0.001 else f"{value:+.1%}"


def _decimals(scale: float) -> int:
    """Decimals that show `scale` with about four significant digits (at least none)."""
    if not math.isfinite(scale) or scale <= 0:
        return 3
    return max(0, min(6, 3 - math.floor(math.log10(scale))))


def _fixed(value: float, decimals: int, sign: bool = False) -> str:
    # A column of error figures reads best with one number of decimals for all of them.
    text = f"{value:.{decimals}f}"
    if float(text) == 0:
        return f"{0:.{decimals}f}"  # not "-0.000" or "+0.000"
    return f"+{text}" if sign and value > 0 else text


def _arrow(direction: Direction | None) -> str:
    return {"lower": "↓", "higher": "↑"}.get(direction or "", "")


def _plain(value: Any, limit: int = 200) -> str:
    """A parameter or lineage value on one line, cut at `limit` characters."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        text = _num(value)
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, sort_keys=isinstance(value, Mapping), default=str)
    else:
        text = str(value)
    return _cut(" ".join(text.split()), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _short_digest(digest: str) -> str:
    """`sha256:` and 12 hex digits, as the CLI shows data versions."""
    algo, sep, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if sep and len(hexpart) > 12 else _cut(digest, 24)


def _safe_url(url: str | None) -> str | None:
    """The URL if it is an http(s) link a page may carry; None for anything else.

    A label is text, but a link is an action: `javascript:` or `data:` URLs in a run link would
    run in the reviewer's browser, so only plain web links become links.
    """
    if not url:
        return None
    url = url.strip()
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


# -- lineage and params as (label, text) pairs ---------------------------------------------------

_COMMIT_KEYS = ("git_commit", "commit", "git_sha")
_DIRTY_KEYS = ("git_dirty", "dirty")


@dataclass(frozen=True)
class _Fact:
    label: str
    text: str  # full text
    short: str  # for the markdown summary
    warning: str | None = None


def _lineage_facts(lineage: Mapping[str, Any]) -> list[_Fact]:
    facts: list[_Fact] = []
    used: set[str] = set()

    def take(*keys: str) -> Any:
        for key in keys:
            if key in lineage:
                used.add(key)
                return lineage[key]
        return None

    for label, keys in (
        ("run", ("run_id", "run")),
        ("project", ("project",)),
        ("pipeline", ("pipeline",)),
        ("step", ("step",)),
    ):
        value = take(*keys)
        if value is not None:
            facts.append(_Fact(label, _plain(value), _plain(value, 40)))
    git = take("git")
    git = git if isinstance(git, Mapping) else {}
    commit = take(*_COMMIT_KEYS) or git.get("commit")
    dirty = take(*_DIRTY_KEYS) or git.get("dirty")
    branch = take("git_branch", "branch") or git.get("branch")
    if commit is not None or dirty is not None:
        text = _plain(commit) if commit is not None else "unknown"
        short = _plain(commit, 200)[:12] if commit is not None else "unknown"
        if branch:
            text, short = f"{text} on {_plain(branch, 80)}", f"{short} on {_plain(branch, 30)}"
        # A dirty tree means the code that trained the model is not in any commit: the version
        # cannot be rebuilt from the repository, which a reviewer should know.
        warning = "dirty: uncommitted changes" if _truthy(dirty) else None
        facts.append(_Fact("git commit", text, short, warning))
    for label, keys in (("data", ("data_versions", "data")), ("input", ("inputs",))):
        value = take(*keys)
        if isinstance(value, Mapping):
            for name in sorted(value, key=str):
                digest = _plain(value[name])
                facts.append(_Fact(f"{label}: {_plain(name, 60)}", digest, _short_digest(digest)))
        elif value is not None:
            facts.append(_Fact(label, _plain(value), _plain(value, 60)))
    parents = take("parents")
    if parents is not None:
        items = list(parents) if isinstance(parents, list | tuple) else [parents]
        text = ", ".join(_parent(p) for p in items) or "none"
        facts.append(_Fact("parents", _cut(text, 400), _cut(text, 80)))
    for key in lineage:
        if key not in used:
            value = lineage[key]
            facts.append(_Fact(_plain(key, 60), _plain(value, 400), _plain(value, 60)))
    return facts


def _parent(parent: Any) -> str:
    """`abalone/3 @champion` for the registry's {model, version, alias}; other forms as text."""
    if isinstance(parent, Mapping) and "model" in parent and "version" in parent:
        alias = f" @{_plain(parent['alias'], 40)}" if parent.get("alias") else ""
        return f"{_plain(parent['model'], 60)}/{_plain(parent['version'], 20)}{alias}"
    return _plain(parent, 80)


def _truthy(value: Any) -> bool:
    # Lineage may come from JSON or the environment, where a flag can be the string "false".
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "dirty")
    return bool(value)


def _param_rows(evidence: Evidence) -> list[tuple[str, str | None, str | None, bool]]:
    """(name, candidate, champion, differs): the differing ones first, each group by name."""
    cand = {str(k): _plain(v) for k, v in evidence.candidate.params.items()}
    champ = (
        {str(k): _plain(v) for k, v in evidence.champion.params.items()}
        if evidence.champion is not None
        else {}
    )
    rows = []
    for name in sorted(set(cand) | set(champ)):
        a, b = cand.get(name), champ.get(name)
        rows.append((name, a, b, evidence.champion is not None and a != b))
    return sorted(rows, key=lambda r: not r[3])


# -- markdown ------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(text: str, limit: int = 120) -> str:
    """Free text for GitHub markdown and Slack: one line, no markup, no HTML."""
    text = _cut(" ".join(text.split()), limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_code(text: str, limit: int = 60) -> str:
    """An identifier in a code span: markup is inert there, but backticks and table pipes not."""
    text = _cut(" ".join(text.split()), limit).replace("`", "'").replace("|", "\\|")
    # GitHub shows code spans literally, but Slack reads `<...>` as a link or mention (even
    # `<!channel>`) everywhere: entities keep a strange value from pinging anyone.
    return "`" + text.replace("<", "&lt;").replace(">", "&gt;") + "`"


def _md_link(text: str, url: str | None) -> str | None:
    safe = _safe_url(url)
    if safe is None or len(safe) > 300:  # a link that long would crowd out the metrics
        return None
    # Characters that would end the link target early are percent-encoded.
    for char, code in ((" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E")):
        safe = safe.replace(char, code)
    return f"[{text}]({safe})"


def render_markdown(evidence: Evidence, *, limit: int = MARKDOWN_LIMIT) -> str:
    """A compact summary for Slack messages and pull-request comments, at most `limit` chars.

    Header, a one-line verdict, the metrics table with deltas and ✅/⚠️, lineage, changed
    parameters and MLflow links. With many metrics the table keeps the ones with a direction and
    the alarming ones first and says how many it left out; the counts cover all metrics.
    """
    rows = compare_metrics(evidence)
    champion = evidence.champion
    head = [f"### {_md(evidence.heading, 160)}"]
    cand_label = f"**Candidate:** {_md(evidence.candidate.label)}"
    if champion is None:
        head.append(f"{cand_label} · **Champion:** none (no champion yet)")
    else:
        head.append(f"{cand_label} · **Champion:** {_md(champion.label)}")
    _tone, sentence = _verdict_sentence(evidence, rows)
    head.append("")
    head.append(_md(sentence, 300))
    counts = _summary_counts(rows)
    if champion is not None and rows:
        parts = [f"✅ {counts.get('better', 0)} better", f"⚠️ {counts.get('worse', 0)} worse"]
        parts += [
            f"{counts[key]} {word}"
            for key, word in (
                ("same", "same"),
                ("no_direction", "without a direction"),
                ("candidate_only", "new"),
                ("champion_only", "missing on the candidate"),
                ("not_comparable", "not comparable"),
            )
            if counts.get(key)
        ]
        head.append(" · ".join(parts))

    tail: list[str] = []
    cand_facts = _lineage_facts(evidence.candidate.lineage)
    lineage_lines = [("**Candidate lineage:** ", cand_facts)]
    if champion is not None:
        # Only where the champion differs: the same project and pipeline twice is noise here.
        same = {(f.label, f.text) for f in cand_facts}
        differing = [f for f in _lineage_facts(champion.lineage) if (f.label, f.text) not in same]
        lineage_lines.append(("**Champion lineage, where it differs:** ", differing))
    for prefix, facts in lineage_lines:
        items = [
            f"{_md(f.label, 60)} {_md_code(f.short)}{' ⚠️ dirty' if f.warning else ''}"
            for f in facts
        ]
        if items:
            tail.append(_capped_join(prefix, items, " · ", 350))
    changed = [r for r in _param_rows(evidence) if r[3]]
    if changed:
        items = [  # champion -> candidate reads as "was -> now"
            f"{_md_code(name, 40)} {_md(was or '—', 40)} → {_md(now or '—', 40)}"
            for name, now, was, _ in changed
        ]
        tail.append(_capped_join("**Params changed (champion → candidate):** ", items, "; ", 350))
    elif champion is None and evidence.candidate.params:
        items = [
            f"{_md_code(k, 40)} {_md(_plain(v), 40)}" for k, v in evidence.candidate.params.items()
        ]
        tail.append(_capped_join("**Params:** ", items, "; ", 350))
    links = [
        link
        for link in (
            _md_link("candidate run", evidence.candidate.mlflow_run_url),
            _md_link("champion run", champion.mlflow_run_url) if champion is not None else None,
        )
        if link is not None
    ]
    if links:
        tail.append("**MLflow:** " + " · ".join(links))

    for note in evidence.notes:  # e.g. the champion could not predict: the reviewer must know
        tail.append(f"**Note:** {_md(note, 400)}")
    table = _markdown_table(rows, champion is not None, limit - _length(head) - _length(tail) - 8)
    text = "\n".join([*head, "", *table, "", *tail]).strip() + "\n"
    if len(text) > limit:
        # The parts are capped one by one, so this only happens with a tiny `limit`; cut on a
        # line boundary so no table row or link is left half-written.
        text = text[: limit - 2].rsplit("\n", 1)[0] + "\n…"
    return text


def _capped_join(prefix: str, items: Sequence[str], sep: str, limit: int) -> str:
    """`prefix` and as many whole items as fit in `limit` characters, then how many are left.

    Whole items only: a cut inside one could leave a code span open and garble the rest.
    """
    text = prefix
    for shown, item in enumerate(items):
        addition = (sep if shown else "") + item
        left = len(items) - shown - 1
        reserve = len(f"{sep}… (+{left} more)") if left else 0
        if len(text) + len(addition) + reserve > limit:
            return text + (sep if shown else "") + f"… (+{len(items) - shown} more)"
        text += addition
    return text


def _length(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)


def _markdown_table(rows: Sequence[MetricRow], with_champion: bool, budget: int) -> list[str]:
    if not rows:
        return ["_No metrics were recorded for the candidate._"]
    if with_champion:
        header = ["| metric | candidate | champion | Δ | Δ% | |", "|---|--:|--:|--:|--:|---|"]
    else:
        header = ["| metric | candidate | |", "|---|--:|---|"]

    def line(row: MetricRow) -> str:
        name = f"{_md_code(row.name, 40)} {_arrow(row.direction)}".rstrip()
        if not with_champion:
            return f"| {name} | {_num(row.candidate)} | {row.verdict if row.alarming else ''} |"
        cells = (_num(row.candidate), _num(row.champion), _signed(row.delta))
        return f"| {name} | {' | '.join(cells)} | {_percent(row.relative_delta)} | {row.verdict} |"

    lines = [line(row) for row in rows]
    total = _length(header) + _length(lines)
    if total <= budget:
        return header + lines
    # Too many metrics: keep the ones a decision rests on (a direction, or something alarming),
    # in the table's own order, and count the rest.
    priority = sorted(
        range(len(rows)),
        key=lambda i: (rows[i].direction is None and not rows[i].alarming, i),
    )
    more_note = 60
    used = _length(header) + more_note
    keep: set[int] = set()
    for i in priority:
        if used + len(lines[i]) + 1 > budget:
            break
        keep.add(i)
        used += len(lines[i]) + 1
    left = len(rows) - len(keep)
    return [
        *header,
        *(lines[i] for i in sorted(keep)),
        f"_… and {left} more metrics in the full report._",
    ]


# -- plots ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plot:
    """One PNG of the report."""

    name: str  # file stem: "predicted_vs_actual", "residuals"
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class _ErrorStats:
    label: str
    role: str  # "candidate" or "champion"
    color: str
    n: int
    rmse: float
    mae: float
    bias: float  # mean residual, actual - predicted: above 0 means the model predicts too low
    max_abs: float


@dataclass(frozen=True)
class _Predictions:
    plots: list[Plot]
    stats: list[_ErrorStats]
    notes: list[str]


def _prediction_sides(evidence: Evidence) -> tuple[list[VersionEvidence], list[str]]:
    """The sides that can be plotted, and notes on what cannot (no numpy needed)."""
    notes: list[str] = list(evidence.notes)
    with_predictions = [
        side
        for side in (evidence.candidate, evidence.champion)
        if side is not None and side.predictions is not None
    ]
    if evidence.candidate.predictions is None:
        notes.append(
            "No predictions on an evaluation set were recorded for the candidate: "
            "metrics only, no plots."
        )
        return [], notes
    if evidence.actuals is None:
        notes.append("No actual values for the evaluation set were given: metrics only, no plots.")
        return [], notes
    if len(evidence.actuals) == 0:
        notes.append("The evaluation set is empty: metrics only, no plots.")
        return [], notes
    if evidence.champion is not None and evidence.champion.predictions is None:
        notes.append("The champion has no predictions on this evaluation set: candidate only.")
    return with_predictions, notes


def render_plots(evidence: Evidence) -> list[Plot]:
    """The report's PNGs: predicted vs actual, and residuals. Empty without predictions."""
    return _predictions(evidence).plots


def _predictions(evidence: Evidence) -> _Predictions:
    sides, notes = _prediction_sides(evidence)
    if not sides or evidence.actuals is None:
        return _Predictions([], [], notes)
    np = _numpy()
    actual = _array(evidence.actuals, "actual values")
    total = len(actual)
    sample = None
    if total > SCATTER_LIMIT:
        rng = np.random.default_rng(_SAMPLE_SEED)
        sample = np.sort(rng.choice(total, size=SCATTER_LIMIT, replace=False))
        notes.append(
            f"The scatter plots show a fixed random sample of {SCATTER_LIMIT:,} of the "
            f"{total:,} evaluation rows; the histogram and the error figures use all of them."
        )
    series: list[_Series] = []
    for side in sides:
        assert side.predictions is not None  # _prediction_sides keeps only these
        predicted = _array(side.predictions, f"predictions of {side.label}")
        finite = np.isfinite(actual) & np.isfinite(predicted)
        dropped = int(total - finite.sum())
        if dropped:
            notes.append(
                f"{dropped:,} rows where {side.label} or the actual value is NaN or infinite "
                "are left out of its plots."
            )
        color = CANDIDATE_COLOR if side is evidence.candidate else CHAMPION_COLOR
        role = "candidate" if side is evidence.candidate else "champion"
        series.append(_Series(side.label, role, color, actual, predicted, finite, sample))
    series = [s for s in series if s.n]
    if not series:
        notes.append("No row has both a finite prediction and a finite actual value: no plots.")
        return _Predictions([], [], notes)
    stats = [s.stats() for s in series]
    plots = [_plot_predicted_vs_actual(series), _plot_residuals(series)]
    return _Predictions(plots, stats, notes)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise _missing("numpy") from None
    return numpy


def _missing(package: str) -> MissingDependency:
    error = MissingDependency(package, "", "plots of the approval evidence")
    # matplotlib and numpy come with mlflow, a core dependency, so no extra brings them back:
    # a missing one means a trimmed environment, and installing the package is the fix.
    error.hint = f"pip install {package}"
    return error


def _array(values: Collection[float], what: str) -> npt.NDArray[np.float64]:
    numpy = _numpy()
    try:
        return numpy.asarray(values, dtype=float).reshape(-1)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} are not numbers: {exc}",
            hint="predictions and actuals are numbers, one per evaluation row",
        ) from None


class _Series:
    """One side's predictions, cleaned: finite rows, and the scatter sample of them."""

    def __init__(
        self,
        label: str,
        role: str,
        color: str,
        actual: npt.NDArray[np.float64],
        predicted: npt.NDArray[np.float64],
        finite: npt.NDArray[np.bool_],
        sample: npt.NDArray[np.intp] | None,
    ) -> None:
        self.label = label
        self.role = role
        self.color = color
        self.actual = actual[finite]
        self.predicted = predicted[finite]
        self.residual = self.actual - self.predicted
        # The sample is drawn over all rows, so both sides show the same rows.
        rows = sample[finite[sample]] if sample is not None else None
        self.scatter_actual = actual[rows] if rows is not None else self.actual
        self.scatter_predicted = predicted[rows] if rows is not None else self.predicted
        self.n = len(self.actual)

    def stats(self) -> _ErrorStats:
        r = self.residual
        return _ErrorStats(
            self.label,
            self.role,
            self.color,
            self.n,
            rmse=float((r**2).mean() ** 0.5),
            mae=float(abs(r).mean()),
            bias=float(r.mean()),
            max_abs=float(abs(r).max()),
        )


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise _missing("matplotlib") from None
    # A Figure with its own Agg canvas: no pyplot, so the caller's backend and figure list are
    # untouched, and nothing needs a display.
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained", facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry (it names the matplotlib version): the same evidence gives the same
    # bytes on every machine, so reports can be compared and cached by digest.
    figure.savefig(buffer, format="png", dpi=144, metadata={"Software": None})
    return buffer.getvalue()


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=12, loc="left", fontweight="bold", color="#111827")
    ax.set_xlabel(xlabel, fontsize=10, color="#374151")
    ax.set_ylabel(ylabel, fontsize=10, color="#374151")
    ax.tick_params(labelsize=9, colors="#4b5563")
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")


def _legend_label(series: _Series) -> str:
    return _cut(series.label, 42)


def _zorder(series: _Series) -> int:
    # The candidate is what is being decided on: draw it over the champion.
    return 3 if series.role == "candidate" else 2


def _point_style(series: Sequence[_Series]) -> dict[str, float]:
    # Fewer points can be larger and more opaque; thousands need to be small and translucent.
    points = max(len(s.scatter_actual) for s in series)
    if points <= 500:
        return {"s": 18.0, "alpha": 0.6}
    if points <= 2000:
        return {"s": 10.0, "alpha": 0.45}
    return {"s": 5.0, "alpha": 0.3}


def _plot_predicted_vs_actual(series: Sequence[_Series]) -> Plot:
    figure = _figure(6.0, 5.4)
    ax = figure.add_subplot()
    style = _point_style(series)
    for s in series:
        rmse = s.stats().rmse
        ax.scatter(
            s.scatter_actual,
            s.scatter_predicted,
            color=s.color,
            linewidths=0,
            zorder=_zorder(s),
            label=f"{_legend_label(s)} (RMSE {_fixed(rmse, _decimals(rmse))})",
            **style,
        )
    low = min(min(s.actual.min(), s.predicted.min()) for s in series)
    high = max(max(s.actual.max(), s.predicted.max()) for s in series)
    pad = (high - low) * 0.04 or 1.0
    low, high = float(low - pad), float(high + pad)
    identity = {"color": "#6b7280", "linestyle": "--", "linewidth": 1.2, "zorder": 0}
    ax.plot([low, high], [low, high], label="perfect prediction", **identity)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    _style(ax, "Predicted vs actual", "actual", "predicted")
    ax.legend(fontsize=9, loc="upper left", frameon=False, markerscale=1.6)
    caption = (
        "Each point is one evaluation row; points on the dashed line are predicted exactly. "
        "Points above it are over-predictions."
    )
    return Plot("predicted_vs_actual", "Predicted vs actual", caption, _png(figure))


def _plot_residuals(series: Sequence[_Series]) -> Plot:
    np = _numpy()
    figure = _figure(11.0, 4.2)
    scatter_ax, hist_ax = figure.subplots(1, 2, width_ratios=[1.35, 1])
    style = _point_style(series)
    for s in series:
        scatter_ax.scatter(
            s.scatter_predicted,
            s.scatter_actual - s.scatter_predicted,
            color=s.color,
            linewidths=0,
            zorder=_zorder(s),
            label=_legend_label(s),
            **style,
        )
    scatter_ax.axhline(0, color="#6b7280", linestyle="--", linewidth=1.2, zorder=0)
    _style(scatter_ax, "Residual vs predicted", "predicted", "residual (actual - predicted)")
    scatter_ax.legend(fontsize=9, loc="best", frameon=False, markerscale=1.6)

    # Shared bins, so the two histograms are comparable bar by bar.
    residuals = np.concatenate([s.residual for s in series])
    low, high = float(residuals.min()), float(residuals.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 41)
    decimals = _decimals(max(s.stats().rmse for s in series))
    for s in series:
        hist_ax.hist(s.residual, bins=bins, histtype="stepfilled", alpha=0.25, color=s.color)
        mean = _fixed(float(s.residual.mean()), decimals, sign=True)
        label = f"{_legend_label(s)} (mean {mean})"
        hist_ax.hist(
            s.residual, bins=bins, histtype="step", linewidth=1.6, color=s.color, label=label
        )
    hist_ax.axvline(0, color="#6b7280", linestyle="--", linewidth=1.2)
    # Head room above the tallest bar, so the legend does not cover the distributions.
    hist_ax.set_ylim(0, hist_ax.get_ylim()[1] * 1.3)
    _style(hist_ax, "Residual distribution", "residual (actual - predicted)", "rows")
    hist_ax.legend(fontsize=9, loc="upper left", frameon=False)
    caption = (
        "Residuals should scatter evenly around zero at every predicted value; a slope or a "
        "funnel shape means errors depend on the prediction. The histogram uses all rows."
    )
    return Plot("residuals", "Residuals", caption, _png(figure))


# -- HTML ----------------------------------------------------------------------------------------


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
:root{--cand:%(cand)s;--champ:%(champ)s;--muted:#6b7280;--line:#e5e7eb;--bg:#f4f5f7}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:#111827;
 font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1140px;margin:0 auto;padding:24px 24px 40px}
header,section{background:#fff;border:1px solid var(--line);border-radius:10px;
 padding:18px 24px;margin-bottom:16px}
.eyebrow{text-transform:uppercase;letter-spacing:.06em;font-size:11px;color:var(--muted);
 font-weight:600}
h1{font-size:22px;margin:2px 0 14px;word-break:break-word}
h2{font-size:16px;margin:0 0 12px}
.versions{display:grid;grid-template-columns:minmax(0,1fr) auto minmax(0,1fr);gap:12px}
.version{border:1px solid var(--line);border-left:5px solid var(--cand);border-radius:8px;
 padding:10px 14px}
.version.champ{border-left-color:var(--champ)}
.version.none{border-left-color:#d1d5db;color:var(--muted);background:#fafafa}
.role{font-size:11px;text-transform:uppercase;color:var(--muted);font-weight:600;
 letter-spacing:.05em}
.label{font-weight:600;font-size:15px;word-break:break-word}
.vs{align-self:center;color:var(--muted);font-weight:600}
.verdict{margin-top:14px;padding:10px 14px;border-radius:8px;font-weight:500}
.verdict.good{background:#ecfdf3;color:#14532d;border:1px solid #bbf7d0}
.verdict.warn{background:#fffbeb;color:#78350f;border:1px solid #fcd34d}
.verdict.info{background:#eff6ff;color:#1e3a8a;border:1px solid #bfdbfe}
.counts{margin-top:10px;display:flex;flex-wrap:wrap;gap:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:7px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:#fafafa}
th.cand{box-shadow:inset 0 -3px 0 var(--cand)}
th.champ{box-shadow:inset 0 -3px 0 var(--champ)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.num{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
tr.worse td{background:#fef2f2}
tr.better td{background:#f0fdf4}
tr.diff td{background:#fffbeb}
td.key{color:#374151;font-weight:500;white-space:nowrap}
.dir{color:var(--muted);font-size:12px;margin-left:4px}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;
 font-weight:600;white-space:nowrap;background:#f3f4f6;color:#4b5563}
.badge.better{background:#dcfce7;color:#166534}
.badge.worse,.badge.alert{background:#fee2e2;color:#991b1b}
.badge.same{background:#f3f4f6;color:#374151}
.note{background:#f9fafb;border:1px dashed #d1d5db;border-radius:8px;padding:9px 14px;
 color:#374151;margin:10px 0 0}
.plots{display:grid;grid-template-columns:minmax(0,1.15fr) minmax(0,1fr);gap:20px;
 align-items:start;margin-bottom:16px}
figure{margin:0}
figure img{display:block;width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{font-size:12px;color:var(--muted);margin-top:6px}
table.compact th,table.compact td{padding:6px 7px;white-space:nowrap}
h3{font-size:13px;margin:0 0 8px;color:#374151}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;
 vertical-align:baseline}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
 background:#f3f4f6;padding:1px 5px;border-radius:4px;word-break:break-all}
.warn-text{color:#b45309;font-weight:600}
a{color:#1d4ed8}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:8px}
@media (max-width:800px){.plots,.versions{grid-template-columns:minmax(0,1fr)}.vs{display:none}}
""".replace("%(cand)s", CANDIDATE_COLOR).replace("%(champ)s", CHAMPION_COLOR)

# The page needs nothing but its own styles and data: images. Saying so in a CSP means that even
# an escaping bug elsewhere could not run a script or load a resource in the reviewer's browser.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'"


def render_html(evidence: Evidence) -> str:
    """A self-contained HTML report: one file, no script, images inline, links to MLflow only."""
    return _html(evidence, _predictions_or_note(evidence))


def _predictions_or_note(evidence: Evidence) -> _Predictions:
    try:
        return _predictions(evidence)
    except MissingDependency as exc:
        # The metrics and lineage are still worth showing; the page says why the plots are not.
        _sides, notes = _prediction_sides(evidence)
        return _Predictions([], [], [*notes, f"Plots are not available: {exc}"])


def _html(evidence: Evidence, predictions: _Predictions) -> str:
    rows = compare_metrics(evidence)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(evidence.heading)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _html_header(evidence, rows),
        _html_metrics(evidence, rows),
        _html_predictions(predictions),
        _html_lineage(evidence),
        _html_params(evidence),
        "<footer>Generated by modelyard from the registry's records of both versions.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _html_link(url: str | None, text: str) -> str:
    safe = _safe_url(url)
    if safe is not None:
        return f'<a href="{_h(safe)}" rel="noopener noreferrer" target="_blank">{_h(text)} ↗</a>'
    if url:
        return f'<span class="muted" title="{_h(_cut(url, 300))}">not a web link</span>'
    return '<span class="muted">none</span>'


def _html_version(role: str, css: str, side: VersionEvidence | None) -> str:
    if side is None:
        return (
            '<div class="version none"><div class="role">Champion</div>'
            '<div class="label">No champion yet</div>'
            "<div>This would be the first approved version.</div></div>"
        )
    link = ""
    if _safe_url(side.mlflow_run_url) is not None:
        link = f"<div>{_html_link(side.mlflow_run_url, 'MLflow run')}</div>"
    return (
        f'<div class="version {css}"><div class="role">{role}</div>'
        f'<div class="label">{_h(_cut(side.label, 300))}</div>{link}</div>'
    )


def _html_header(evidence: Evidence, rows: Sequence[MetricRow]) -> str:
    tone, sentence = _verdict_sentence(evidence, rows)
    counts = _summary_counts(rows)
    chips = []
    if evidence.champion is not None:
        for key, word, css in (
            ("better", "better", "better"),
            ("worse", "worse", "worse"),
            ("same", "same", "same"),
            ("no_direction", "without a direction", ""),
            ("candidate_only", "new", ""),
            ("champion_only", "missing on the candidate", "alert"),
            ("not_comparable", "not comparable", ""),
        ):
            if counts.get(key) or key in ("better", "worse"):
                # A zero stays grey: "0 worse" in red would read as an alarm.
                chip = css if counts.get(key) else ""
                chips.append(f'<span class="badge {chip}">{counts.get(key, 0)} {word}</span>')
    return (
        "<header>"
        f'<div class="eyebrow">modelyard · model {_h(_cut(evidence.model, 200))}</div>'
        f"<h1>{_h(_cut(evidence.heading, 300))}</h1>"
        '<div class="versions">'
        + _html_version("Candidate", "cand", evidence.candidate)
        + '<div class="vs">vs</div>'
        + _html_version("Champion", "champ", evidence.champion)
        + "</div>"
        f'<div class="verdict {tone}">{_h(sentence)}</div>'
        + (f'<div class="counts">{"".join(chips)}</div>' if chips else "")
        + "</header>"
    )


def _badge(row: MetricRow, with_champion: bool) -> str:
    text = row.verdict.replace("⚠️ ", "").replace("✅ ", "").replace("= ", "")
    # Without a champion every metric is "new": only problems are worth a badge.
    if not text or (not with_champion and not row.alarming):
        return ""
    css: str = row.status if row.status in ("better", "worse", "same") else ""
    if row.alarming and row.status != "worse":
        css = "alert"
    return f'<span class="badge {css}">{_h(text)}</span>'


def _html_metrics(evidence: Evidence, rows: Sequence[MetricRow]) -> str:
    if not rows:
        return '<section><h2>Metrics</h2><p class="note">No metrics were recorded.</p></section>'
    with_champion = evidence.champion is not None
    head = '<th>metric</th><th class="num cand">candidate</th>'
    if with_champion:
        head += '<th class="num champ">champion</th><th class="num">Δ</th><th class="num">Δ %</th>'
    head += "<th></th>"
    body = []
    for row in rows:
        css = row.status if row.status in ("better", "worse") else ""
        direction = ""
        if row.direction is not None:
            direction = (
                f'<span class="dir">{_arrow(row.direction)} {row.direction} is better</span>'
            )
        cells = f'<td class="key">{_h(_cut(row.name, 120))}{direction}</td>'
        cells += f'<td class="num">{_num(row.candidate)}</td>'
        if with_champion:
            cells += (
                f'<td class="num">{_num(row.champion)}</td>'
                f'<td class="num">{_signed(row.delta)}</td>'
                f'<td class="num">{_percent(row.relative_delta)}</td>'
            )
        cells += f"<td>{_badge(row, with_champion)}</td>"
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    legend = (
        '<p class="muted">Δ is candidate minus champion; Δ % is relative to the champion.</p>'
        if with_champion
        else '<p class="note">No champion yet: the candidate\'s metrics are shown alone.</p>'
    )
    return (
        "<section><h2>Metrics</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{legend}</section>"
    )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_figure(plot: Plot) -> str:
    return (
        f'<figure><img src="{_data_uri(plot.png)}" alt="{_h(plot.title)}">'
        f"<figcaption>{_h(plot.caption)}</figcaption></figure>"
    )


def _html_predictions(predictions: _Predictions) -> str:
    notes = "".join(f'<p class="note">{_h(note)}</p>' for note in predictions.notes)
    if not predictions.plots:
        return f"<section><h2>Predictions on the evaluation set</h2>{notes}</section>"
    by_name = {plot.name: plot for plot in predictions.plots}
    decimals = _decimals(max(s.rmse for s in predictions.stats))
    stats_rows = "".join(
        "<tr>"
        f'<td class="key" title="{_h(_cut(s.label, 300))}">'
        f'<span class="swatch" style="background:{s.color}"></span>{s.role}</td>'
        f'<td class="num">{s.n:,}</td>'
        + "".join(
            f'<td class="num">{_fixed(value, decimals, sign)}</td>'
            for value, sign in ((s.rmse, False), (s.mae, False), (s.bias, True), (s.max_abs, False))
        )
        + "</tr>"
        for s in predictions.stats
    )
    stats = (
        "<h3>Errors on the evaluation set, from the predictions</h3>"
        '<table class="compact"><thead><tr><th>version</th><th class="num">rows</th>'
        '<th class="num">RMSE</th><th class="num">MAE</th><th class="num">bias</th>'
        f'<th class="num">max error</th></tr></thead><tbody>{stats_rows}</tbody></table>'
        '<p class="muted">Bias is the mean residual (actual - predicted): above 0, the version '
        "predicts too low on average. Max error is the largest |residual|.</p>"
    )
    return (
        "<section><h2>Predictions on the evaluation set</h2>"
        f'<div class="plots">{_html_figure(by_name["predicted_vs_actual"])}'
        f"<div>{stats}{notes}</div></div>"
        f"{_html_figure(by_name['residuals'])}</section>"
    )


_ALWAYS_DIFFERENT = frozenset({"run", "parents"})
_DIFF = ' class="diff"'


def _html_lineage(evidence: Evidence) -> str:
    sides = [evidence.candidate] + ([evidence.champion] if evidence.champion is not None else [])
    facts = [{f.label: f for f in _lineage_facts(side.lineage)} for side in sides]
    labels = list(dict.fromkeys(label for side in facts for label in side))
    head = '<th></th><th class="cand">candidate</th>'
    if len(sides) == 2:
        head += '<th class="champ">champion</th>'
    body = []
    for label in labels:
        cells = []
        for side in facts:
            fact = side.get(label)
            if fact is None:
                cells.append('<td class="muted">—</td>')
            else:
                warn = ""
                if fact.warning:
                    warn = f' <span class="warn-text">⚠ {_h(fact.warning)}</span>'

                cells.append(f"<td><code>{_h(fact.text)}</code>{warn}</td>")
        texts = {side[label].text if label in side else None for side in facts}
        # Run ids and parents differ between any two versions; highlighting them would drown
        # out the differences that matter (code, data, pipeline).
        differs = len(sides) == 2 and len(texts) > 1 and label not in _ALWAYS_DIFFERENT
        css = _DIFF if differs else ""
        body.append(f'<tr{css}><td class="key">{_h(label)}</td>{"".join(cells)}</tr>')
    links = "".join(f"<td>{_html_link(side.mlflow_run_url, 'open run')}</td>" for side in sides)
    body.append(f'<tr><td class="key">MLflow run</td>{links}</tr>')
    explain = ""
    if not labels:
        explain = '<p class="note">No lineage was recorded.</p>'
    elif len(sides) == 2:
        explain = '<p class="muted">Highlighted: code, data or settings that differ.</p>'

    return (
        "<section><h2>Lineage</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{explain}</section>"
    )


_MAX_PARAM_ROWS = 300


def _html_params(evidence: Evidence) -> str:
    rows = _param_rows(evidence)
    if not rows:
        return '<section><h2>Parameters</h2><p class="muted">No parameters recorded.</p></section>'
    with_champion = evidence.champion is not None
    head = '<th>parameter</th><th class="cand">candidate</th>'
    if with_champion:
        head += '<th class="champ">champion</th>'

    def cell(value: str | None) -> str:
        return '<td class="muted">—</td>' if value is None else f"<td><code>{_h(value)}</code></td>"

    body = [
        f'<tr{_DIFF if differs else ""}><td class="key">{_h(_cut(name, 120))}</td>'
        + cell(a)
        + (cell(b) if with_champion else "")
        + "</tr>"
        for name, a, b, differs in rows[:_MAX_PARAM_ROWS]
    ]
    changed = sum(r[3] for r in rows)
    summary = (
        f'<p class="muted">{changed} of {len(rows)} parameters differ from the champion '
        "(shown first, highlighted).</p>"
        if with_champion
        else ""
    )
    if len(rows) > _MAX_PARAM_ROWS:
        summary += f'<p class="note">{len(rows) - _MAX_PARAM_ROWS} more parameters not shown.</p>'
    return (
        "<section><h2>Parameters</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{summary}</section>"
    )


# -- files ---------------------------------------------------------------------------------------


def write_report(evidence: Evidence, folder: Path) -> dict[str, Path]:
    """Write `report.html`, `summary.md` and the PNGs into `folder` (created if needed).

    Returns the paths by name: "html", "markdown", and each plot's name
    ("predicted_vs_actual", "residuals") when there are plots.
    """
    predictions = _predictions_or_note(evidence)
    files: dict[str, tuple[Path, bytes]] = {
        "html": (folder / HTML_FILE, _html(evidence, predictions).encode("utf-8")),
        "markdown": (folder / MARKDOWN_FILE, render_markdown(evidence).encode("utf-8")),
    }
    for plot in predictions.plots:
        files[plot.name] = (folder / f"{plot.name}.png", plot.png)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in files.values():
            path.write_bytes(data)
        # A plot left from an earlier report of other evidence would sit next to a report that
        # says "no plots": remove the ones this report did not write.
        for name in PLOT_NAMES:
            if name not in files:
                (folder / f"{name}.png").unlink(missing_ok=True)
    except OSError as exc:
        raise ArtifactError(
            f"cannot write the evidence report: {exc.strerror or exc}",
            where=str(exc.filename or folder),
            hint="check that the folder is writable and the disk has space",
        ) from None
    return {name: path for name, (path, _) in files.items()}
