"""Pipeline overhead: what modelyard adds to running trivial steps, against bare subprocesses.

Creates throw-away projects in a temporary folder with linear pipelines of N trivial steps:

* `run` steps: `python steps/step.py --in ${{ inputs.prev }} --out ${{ outputs.out }}`, a tiny
  script copying a small file from its input folder to its output folder;
* `python` steps (`benchsteps:step`, doing the same in-process) on the `inline` executor and on
  the default `process` executor.

Each modelyard measurement is the wall time of the whole CLI process (`modelyard --project DIR
run chain --quiet`), so interpreter start and imports are included, as a user sees them. Every
case runs in a fresh project (cold: empty cache and artifact store; its database is created
beforehand by a `modelyard runs`, timed separately), then again for the fully cached re-run. The
baseline runs the same `N` scripts as bare `subprocess.run` calls one after the other, in the same
repetition, timed in-process. After every modelyard run the run is checked in the metadata
database: succeeded, every step succeeded, and all taken from the cache for the re-run.

Bytecode is cached (in the temporary folder, through PYTHONPYCACHEPREFIX) and warmed up before
measuring, as it is for an installed package, even if the caller sets PYTHONDONTWRITEBYTECODE;
`--no-pyc-cache` measures with the environment as it is. Next to wall time the table gives the
CPU time of each command (it varies less on a busy machine).

    .venv/bin/python benchmarks/pipeline_overhead.py            # full: 5 repetitions
    .venv/bin/python benchmarks/pipeline_overhead.py --smoke    # CI: proves the script works

The table (median and min of the repetitions) is printed and written to `--output`
(default benchmarks/results/pipeline_overhead.md; with --smoke only if --output is given).
The exit code is 0 whether the goals are met or not (use --strict to fail on a missed goal);
it is 1 if a run fails or records something wrong.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "pipeline_overhead.md"
PIPELINE = "chain"
COMMAND_TIMEOUT_S = 300.0  # a hung command fails the benchmark instead of blocking CI

# The goals of the issue (all modelyard times include the CLI's start).
GOAL_STEP_OVERHEAD_S = 0.030  # per isolated step, over the bare-subprocess baseline
GOAL_INLINE10_S = 0.6  # 10 trivial inline python steps, everything recorded
GOAL_CACHED10_S = 0.5  # a fully cached re-run of 10 steps

SEED_DATA = "modelyard pipeline-overhead benchmark\n" * 16  # ~600 bytes

# The step script: deliberately minimal (no argparse) so the step itself costs only the
# interpreter start and what modelyard adds stands out.
STEP_SCRIPT = """\
import os
import sys

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
out = args["--out"]
os.makedirs(out, exist_ok=True)
if "--in" in args:
    with open(os.path.join(args["--in"], "data.txt"), "rb") as source:
        data = source.read()
else:
    data = SEED.encode()
with open(os.path.join(out, "data.txt"), "wb") as target:
    target.write(data)
"""

STEP_MODULE = """\
from pathlib import Path

SEED = {seed!r}


def step(out: Path, prev: Path | None = None) -> None:
    data = (prev / "data.txt").read_bytes() if prev is not None else SEED.encode()
    (out / "data.txt").write_bytes(data)
"""


class BenchmarkError(Exception):
    """A command failed or a run was not recorded as expected: the numbers would be wrong."""


# -- the cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str  # "run", "inline" or "process"
    steps: int

    @property
    def key(self) -> str:
        return f"{self.kind}{self.steps}"

    @property
    def label(self) -> str:
        if self.kind == "run":
            return f"{self.steps} `run` steps"
        return f"{self.steps} `python` steps, {self.kind} executor"


FULL_CASES = [Case(k, n) for k in ("run", "inline", "process") for n in (3, 10)]
SMOKE_CASES = [Case("run", 3), Case("inline", 3)]


def step_name(i: int) -> str:
    return f"s{i:02d}"


def project_yaml(case: Case) -> str:
    lines = ["name: bench", "pipelines:", f"  {PIPELINE}:", "    steps:"]
    for i in range(1, case.steps + 1):
        lines.append(f"      {step_name(i)}:")
        if case.kind == "run":
            command = "python steps/step.py"
            if i > 1:
                command += " --in ${{ inputs.prev }}"
            lines.append(f"        run: {command} --out ${{{{ outputs.out }}}}")
        else:
            lines.append("        python: benchsteps:step")
            lines.append(f"        executor: {case.kind}")
        if i > 1:
            lines.append(
                f'        inputs: {{prev: "${{{{ steps.{step_name(i - 1)}.outputs.out }}}}"}}'
            )
        lines.append("        outputs: [out]")
    return "\n".join(lines) + "\n"


def write_project(root: Path, case: Case) -> None:
    (root / "steps").mkdir(parents=True)
    (root / "modelyard.yaml").write_text(project_yaml(case))
    (root / "steps" / "step.py").write_text(f"SEED = {SEED_DATA!r}\n" + STEP_SCRIPT)
    (root / "benchsteps.py").write_text(STEP_MODULE.format(seed=SEED_DATA))


# -- running and timing --------------------------------------------------------------------------


def modelyard_command() -> list[str]:
    """The console script users run, next to this interpreter; else `python -m modelyard`."""
    script = Path(sys.executable).parent / "modelyard"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "modelyard"]


def child_environment(pycache: Path | None) -> dict[str, str]:
    """The environment of every command: the caller's, without MODELYARD_* variables (a
    database URL must not leak into the projects) and without the background MLflow push.
    With `pycache`, bytecode is cached there, as an installed package's is, even where the
    caller sets PYTHONDONTWRITEBYTECODE: otherwise every command would compile modelyard's
    modules again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    # The detached MLflow pusher a run leaves behind (~2 s of CPU importing mlflow) would run
    # during the next measurements on this 2-core machine; it is not part of a run's own time.
    env["MODELYARD_TRACKING_AUTO_PUSH"] = "0"
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes and those they waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Timing:
    """Wall and CPU time of one command, which must succeed."""
    cpu = children_cpu()
    start = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"timed out after {COMMAND_TIMEOUT_S:g}s: {' '.join(argv)}") from exc
    elapsed = Timing(time.perf_counter() - start, children_cpu() - cpu)
    if done.returncode != 0:
        raise BenchmarkError(
            f"exit code {done.returncode}: {' '.join(argv)}\n"
            f"stdout:\n{done.stdout.decode(errors='replace')}\n"
            f"stderr:\n{done.stderr.decode(errors='replace')}"
        )
    return elapsed


def run_baseline(root: Path, steps: int, env: dict[str, str]) -> Timing:
    """The same scripts as bare subprocesses, one after the other, timed in-process."""
    base = root / "baseline"
    if base.exists():
        shutil.rmtree(base)
    outputs = [base / step_name(i) for i in range(1, steps + 1)]
    cpu = children_cpu()
    start = time.perf_counter()
    previous: Path | None = None
    for out in outputs:
        argv = [sys.executable, "steps/step.py"]
        if previous is not None:
            argv += ["--in", str(previous)]
        argv += ["--out", str(out)]
        subprocess.run(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=True,
        )
        previous = out
    elapsed = Timing(time.perf_counter() - start, children_cpu() - cpu)
    if (outputs[-1] / "data.txt").read_text() != SEED_DATA:
        raise BenchmarkError(f"the baseline's last step did not copy the data ({outputs[-1]})")
    return elapsed


def check_run(root: Path, case: Case, *, cached: bool, expected_runs: int) -> None:
    """Check the newest run in the project's database: succeeded, every step succeeded (from the
    cache, for a re-run), and the last step's output is the seed data copied along the chain."""
    # Imported here: the benchmark process needs modelyard only to read what the CLI recorded.
    from modelyard.engine import service
    from modelyard.testing import open_runtime

    reference = root / "expected-output"
    reference.mkdir(exist_ok=True)
    (reference / "data.txt").write_text(SEED_DATA)
    runtime = open_runtime(root)
    try:
        runs = service.list_runs(runtime, limit=expected_runs + 1)
        if len(runs) != expected_runs:
            raise BenchmarkError(f"{case.key}: expected {expected_runs} runs, found {len(runs)}")
        detail = service.run_detail(runtime, runs[0].id)
        expected_digest = runtime.store.put_dir(reference).digest
    finally:
        runtime.close()
    what = f"{case.key} run {detail.run.id} ({'cached re-run' if cached else 'cold'})"
    if detail.run.status != "succeeded":
        raise BenchmarkError(f"{what}: status {detail.run.status}: {detail.run.message}")
    names = [step_name(i) for i in range(1, case.steps + 1)]
    if list(detail.steps) != names:
        raise BenchmarkError(f"{what}: steps {list(detail.steps)}, expected {names}")
    for name, row in detail.steps.items():
        if row.status != "succeeded":
            raise BenchmarkError(f"{what}: step {name} is {row.status}: {row.message}")
        if row.cached != cached:
            raise BenchmarkError(f"{what}: step {name} cached={row.cached}, expected {cached}")
        attempts = detail.attempts[name]
        if cached and attempts:
            raise BenchmarkError(f"{what}: step {name} was cached but has attempts")
        if not cached and [a.status for a in attempts] != ["succeeded"]:
            raise BenchmarkError(f"{what}: step {name} attempts: {[a.status for a in attempts]}")
        if not row.outputs or "out" not in row.outputs:
            raise BenchmarkError(f"{what}: step {name} recorded no output 'out'")
    last = (detail.steps[names[-1]].outputs or {}).get("out", {})
    if last.get("digest") != expected_digest:
        raise BenchmarkError(f"{what}: the last output is {last}, expected {expected_digest}")


# -- the measurements ----------------------------------------------------------------------------

Samples = dict[str, list[Timing]]


def warm_up(kinds: set[str], workdir: Path, cli: list[str], env: dict[str, str]) -> None:
    """Untimed runs of every command and executor, so that the bytecode cache and the OS's file
    cache are warm, as they are for a user's second command."""
    timed([*cli, "--help"], workdir, env)
    for kind in sorted(kinds):
        root = workdir / f"warm-up-{kind}"
        write_project(root, Case(kind, 2))
        project = [*cli, "--project", str(root)]
        timed([*project, "runs"], workdir, env)
        for _ in range(2):
            timed([*project, "run", PIPELINE, "--quiet"], workdir, env)
        run_baseline(root, 2, env)
        shutil.rmtree(root)


def measure(
    cases: list[Case],
    repeat: int,
    workdir: Path,
    env: dict[str, str],
    log: Callable[[str], None],
    keep: bool = False,
) -> Samples:
    """Every case in every repetition; cases interleave so that drifts hit all of them alike."""
    cli = modelyard_command()
    samples: Samples = {}

    def add(name: str, timing: Timing) -> Timing:
        samples.setdefault(name, []).append(timing)
        return timing

    warm_up({c.kind for c in cases}, workdir, cli, env)
    for rep in range(1, repeat + 1):
        for case in cases:
            root = workdir / f"{case.key}-r{rep}"
            write_project(root, case)
            project = [*cli, "--project", str(root)]
            run = [*project, "run", PIPELINE, "--quiet"]
            add("first-command", timed([*project, "runs"], workdir, env))  # creates the DB
            if case.kind == "run":
                add(f"baseline{case.steps}", run_baseline(root, case.steps, env))
            cold = add(f"{case.key}-cold", timed(run, workdir, env))
            check_run(root, case, cached=False, expected_runs=1)
            cached = add(f"{case.key}-cached", timed(run, workdir, env))
            check_run(root, case, cached=True, expected_runs=2)
            if case == cases[0]:  # start-up references, in a project with two runs
                add("python", timed([sys.executable, "-c", "pass"], workdir, env))
                add("help", timed([*cli, "--help"], workdir, env))
                add("runs", timed([*project, "runs"], workdir, env))
            if not keep:
                shutil.rmtree(root)
            log(f"rep {rep}/{repeat} {case.key}: cold {cold.wall:.3f}s, cached {cached.wall:.3f}s")
    return samples


# -- the report ----------------------------------------------------------------------------------


def median(samples: Samples, name: str, what: str = "wall") -> float | None:
    values = [getattr(t, what) for t in samples.get(name, [])]
    return statistics.median(values) if values else None


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def millis(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:+.1f}"


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.1f}x"


def verdict(value: float | None, goal: float, unit: str = "s") -> str:
    if value is None:
        return "not measured (run without --smoke)"
    shown = f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.3f} s"
    limit = f"{goal * 1000:g} ms" if unit == "ms" else f"{goal:g} s"
    return f"{'met' if value <= goal else 'NOT met'}: {shown} (goal <= {limit})"


def paired_slope(samples: Samples, name3: str, name10: str, base: bool) -> float | None:
    """The per-step cost between 3 and 10 steps, start-up excluded: (T10 - T3) / 7, less the
    baseline's (B10 - B3) / 7 with `base`. Computed within each repetition (every case runs once
    per repetition, so the lists line up) and the median taken, which cancels slow drifts of a
    shared machine better than a difference of medians."""
    names = [name3, name10] + (["baseline3", "baseline10"] if base else [])
    series = [samples.get(name, []) for name in names]
    if not all(series):
        return None
    slopes = []
    for timings in zip(*series, strict=True):
        t3, t10, *b = (t.wall for t in timings)
        slopes.append(((t10 - t3) - ((b[1] - b[0]) if base else 0.0)) / 7)
    return statistics.median(slopes)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def source_version() -> str:
    from importlib.metadata import version

    text = f"modelyard {version('modelyard')}"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        text += f", git {commit}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return text


def report(
    samples: Samples, cases: list[Case], repeat: int, smoke: bool, load: str, pyc_cache: bool
) -> str:
    def row(label: str, name: str, steps: int | None = None, base: str | None = None) -> None:
        med = median(samples, name)
        if med is None:
            return
        low = min(t.wall for t in samples[name])
        cpu = median(samples, name, "cpu")
        b = median(samples, base) if base else None
        per_step = (med - b) / steps if b is not None and steps else None
        cells = [label, str(steps or ""), seconds(med), seconds(low), seconds(cpu), seconds(b)]
        lines.append("| " + " | ".join([*cells, millis(per_step), ratio(med, b)]) + " |")

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Pipeline overhead",
        "",
        f"- date: {now}",
        f"- machine: {machine()}; load average {load}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- {source_version()}",
        f"- CLI measured: `{' '.join(Path(a).name for a in modelyard_command())}`; "
        f"{repeat} repetition{'s' if repeat != 1 else ''}{' (--smoke)' if smoke else ''}; "
        "times in seconds, median and min",
        "- bytecode: "
        + (
            "cached (in a temporary PYTHONPYCACHEPREFIX, warmed up before measuring)"
            if pyc_cache
            else f"as the environment sets it (PYTHONDONTWRITEBYTECODE="
            f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})"
        ),
        "",
        "Every modelyard time is the wall time of the whole CLI process (interpreter start, "
        "imports, project load, database, steps, artifacts). *cold*: a fresh project (empty "
        "cache and artifact store); *cached*: the same pipeline again, every step a cache hit. "
        "The baseline runs the same scripts as bare subprocesses. CPU: median user + system time "
        "of the command and the processes it waited for (less sensitive to a busy machine than "
        "wall time). Overhead/step = (median - baseline median) / steps, so it includes the "
        "CLI's fixed start-up.",
        "",
        "| measurement | steps | median | min | CPU | baseline | overhead/step (ms) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    row("`python -c pass` (interpreter start)", "python")
    row("`modelyard --help`", "help")
    row("`modelyard runs` (start-up + one query)", "runs")
    row("first command in a new project (creates the DB)", "first-command")
    for n in sorted({c.steps for c in cases}):
        base = f"baseline{n}"
        row(f"baseline: {n} bare subprocesses", base, n)
        for case in (c for c in cases if c.steps == n):
            row(f"modelyard: {case.label}, cold", f"{case.key}-cold", n, base)
            row(f"modelyard: {case.label}, cached re-run", f"{case.key}-cached", n, base)
    lines.append("")

    run_slope = paired_slope(samples, "run3-cold", "run10-cold", base=True)
    slopes = [
        ("`run` steps, over the baseline", run_slope),
        (
            "`python` steps (process executor), over the baseline",
            paired_slope(samples, "process3-cold", "process10-cold", base=True),
        ),
        (
            "`python` steps (inline executor), marginal cost",
            paired_slope(samples, "inline3-cold", "inline10-cold", base=False),
        ),
        (
            "cached re-run of `run` steps, marginal cost",
            paired_slope(samples, "run3-cached", "run10-cached", base=False),
        ),
    ]
    measured = [(label, value) for label, value in slopes if value is not None]
    if measured:
        lines += [
            "Per-step cost from the slope between 3 and 10 steps, which excludes the fixed "
            "start-up: ((T10 - T3) - (B10 - B3)) / 7 over the baseline, (T10 - T3) / 7 marginal; "
            "computed within each repetition, median of the repetitions.",
            "",
            "| per step (slope 3 -> 10) | ms |",
            "|---|---:|",
            *[f"| {label} | {value * 1000:.1f} |" for label, value in measured],
            "",
        ]

    t10, b10 = median(samples, "run10-cold"), median(samples, "baseline10")
    spread = ""
    if t10 is not None and b10 is not None:
        spread = f"; with the CLI's start-up spread over 10 steps: {(t10 - b10) * 100:.1f} ms/step"
    lines += [
        "## Goals",
        "",
        "- isolated steps <= 30 ms overhead per step over the baseline (slope of `run` steps, "
        f"3 -> 10): {verdict(run_slope, GOAL_STEP_OVERHEAD_S, 'ms')}{spread}",
        "- 10 trivial `python` steps on the inline executor, everything recorded, < 0.6 s: "
        + verdict(median(samples, "inline10-cold"), GOAL_INLINE10_S),
        "- fully cached re-run of 10 steps < 0.5 s: "
        + verdict(median(samples, "run10-cached"), GOAL_CACHED10_S),
        "",
    ]
    return "\n".join(lines)


def goals_met(samples: Samples) -> bool:
    checks = [
        (paired_slope(samples, "run3-cold", "run10-cold", base=True), GOAL_STEP_OVERHEAD_S),
        (median(samples, "inline10-cold"), GOAL_INLINE10_S),
        (median(samples, "run10-cached"), GOAL_CACHED10_S),
    ]
    return all(value is not None and value <= goal for value, goal in checks)


# -- the command ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Wall time of trivial modelyard pipelines against bare subprocesses."
    )
    parser.add_argument("--repeat", type=int, help="repetitions per case (default 5; 1 in smoke)")
    parser.add_argument(
        "--smoke", action="store_true", help="one repetition of two small cases (CI)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"markdown file to write (default {DEFAULT_OUTPUT.relative_to(REPO)}; "
        "with --smoke, none unless given)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 if a goal is not met")
    parser.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="leave bytecode caching as the environment sets it (by default it is cached in a "
        "temporary folder, as for an installed package, even under PYTHONDONTWRITEBYTECODE)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.smoke else 5)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    cases = SMOKE_CASES if args.smoke else FULL_CASES
    output = args.output or (None if args.smoke else DEFAULT_OUTPUT)

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    env = child_environment(None if args.no_pyc_cache else workdir / "pycache")
    started = time.perf_counter()
    load_before = load_average()
    try:
        samples = measure(cases, repeat, workdir, env, log, keep=args.keep)
    except (BenchmarkError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode(errors="replace") if getattr(exc, "stderr", None) else ""
        print(f"benchmark failed: {exc}\n{detail}".rstrip(), file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"projects kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"measured in {time.perf_counter() - started:.1f}s")
    load = f"{load_before} before, {load_average()} after"
    text = report(samples, cases, repeat, args.smoke, load, not args.no_pyc_cache)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        log(f"written to {output}")
    if args.strict and not goals_met(samples):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
