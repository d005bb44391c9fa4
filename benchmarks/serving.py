"""Serving benchmark: `modelyard serve` against `mlflow models serve`, a plain FastAPI app and
the raw in-process predict call, for the abalone model (scenario S1), in one run.

The model: the example's preprocessor and XGBoost booster trained on the shipped data (50
rounds), packaged as the register step packages it (an MLflow inference-pipeline model: a raw
row of 8 values in, rings out). Every server runs as its own process on 127.0.0.1 and is loaded
by a closed-loop client (asyncio, keep-alive connections, one request in flight per connection)
at concurrency 1 and 16 for a fixed time after a warm-up; the body is one raw row in MLflow's
`dataframe_split` format. Measured: latency p50/p99, requests per second, and the time from
starting the process to the first answered `/ping` ("ready").

- raw predict: `Predictor.predict` in-process, the call the modelyard server makes for one
  request (the compiled preprocessor, then XGBoost's inplace_predict); also shown: the booster
  alone on a prepared row, and MLflow's pyfunc predict on a one-row DataFrame;
- plain FastAPI: a FastAPI app (pydantic body, uvicorn) calling that same raw predict for each
  request: the serving layer without batching;
- `mlflow models serve --env-manager local`: MLflow's scoring server;
- `modelyard endpoint`: the same package registered and deployed to an endpoint: the endpoint's
  front proxy (routing, keep-alive pool) in front of one `modelyard serve` replica, i.e. what a
  production endpoint adds per request.

Run by hand:

    .venv/bin/python benchmarks/serving.py            # ~3 minutes; writes the README table
    .venv/bin/python benchmarks/serving.py --smoke    # CI: modelyard only, seconds; no writes

Results go to benchmarks/results/serving.md and, in full runs, between the markers of the
README's performance section. The client shares the 2 cores with the server, as a load
generator on the same machine does; ratios between contenders are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "serving.md"
README = REPO / "README.md"
sys.path.insert(0, str(REPO))  # modelyard.testing, when run from a checkout without installing
MARKERS = ("<!-- serving-benchmark:start -->", "<!-- serving-benchmark:end -->")
ROW = ["M", 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]

# The goals.
GOAL_P50_OVER_RAW_MS = 0.5  # at concurrency 1, p50 within 0.5 ms of the raw predict call
GOAL_THROUGHPUT_VS_FASTAPI = 2.0  # at concurrency 16, at least twice the plain FastAPI app
GOAL_READY_S = 1.5  # ready to serve within 1.5 s of start

FASTAPI_APP = """
import os
from fastapi import FastAPI
from pydantic import BaseModel

from modelyard.serving.predictors import load_predictor

predictor = load_predictor(os.environ["PKG"])  # the package folder, set by the benchmark
app = FastAPI()


class Split(BaseModel):
    columns: list[str]
    data: list[list[str | float]]


class Body(BaseModel):
    dataframe_split: Split


@app.get("/ping")
async def ping() -> str:
    return ""


@app.post("/invocations")
async def invocations(body: Body) -> dict:
    split = body.dataframe_split
    columns = {name: [row[i] for row in split.data] for i, name in enumerate(split.columns)}
    return {"predictions": predictor.predict(columns, len(split.data)).tolist()}
"""


@dataclass
class Load:
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds
    seconds: float = 0.0
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


@dataclass
class Result:
    name: str
    ready_s: float | None
    loads: dict[int, Load]
    note: str = ""


# -- the model ------------------------------------------------------------------------------------


def build_package(workdir: Path, rounds: int) -> Path:
    from modelyard.testing.abalone import make_abalone

    (workdir / "model").mkdir()
    abalone = make_abalone(workdir / "model", rows=4177, rounds=rounds)
    return abalone.package(workdir / "package").path


def raw_timings(package: Path, repeat: int) -> dict[str, float]:
    """Median seconds of the in-process calls, one raw row each."""
    import numpy as np

    from modelyard.serving.predictors import load_predictor
    from modelyard.testing.abalone import COLUMNS

    predictor = load_predictor(package)
    columns = {name: [value] for name, value in zip(COLUMNS, ROW, strict=True)}
    timings = {"predictor": _median_call(lambda: predictor.predict(columns, 1), repeat)}
    import joblib  # type: ignore[import-untyped]
    import pandas as pd
    import xgboost

    frame = pd.DataFrame([ROW], columns=COLUMNS)
    features = np.asarray(
        joblib.load(package / "artifacts" / "preprocessor.joblib").transform(frame), dtype=float
    )
    booster = xgboost.Booster(model_file=str(package / "artifacts" / "xgboost-model.json"))
    booster.set_param({"nthread": 1})
    timings["booster"] = _median_call(lambda: booster.inplace_predict(features), repeat)
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(package))
    timings["pyfunc"] = _median_call(lambda: model.predict(frame), max(50, repeat // 20))
    return timings


def _median_call(call: Callable[[], Any], repeat: int) -> float:
    for _ in range(min(repeat, 200)):  # warm-up: caches, lazy initialisation
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    argv: Sequence[str], port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server; the seconds until its /ping answers."""
    began = time.perf_counter()
    process = subprocess.Popen(
        list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO
    )
    deadline = began + 120
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[:4]} exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, time.perf_counter() - began
        except OSError:
            pass
        time.sleep(0.01)  # polling a port that is not open yet: nothing to wait on instead
    process.kill()
    raise RuntimeError(f"{argv[:4]} was not ready within 120 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def request_bytes(port: int) -> bytes:
    from modelyard.testing.abalone import COLUMNS

    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [ROW]}}).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _user(port: int, request: bytes, until: float, load: Load, record_from: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            start = time.perf_counter()
            if start >= until:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            body = await reader.readexactly(int(found[1])) if found else b""
            if not head.startswith(b"HTTP/1.1 200") or b"predictions" not in body:
                load.errors += 1
            elif start >= record_from:
                load.latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def _load(port: int, concurrency: int, warmup: float, seconds: float) -> Load:
    request = request_bytes(port)
    load = Load(concurrency)
    now = time.perf_counter()
    record_from, until = now + warmup, now + warmup + seconds
    await asyncio.gather(
        *(_user(port, request, until, load, record_from) for _ in range(concurrency))
    )
    load.seconds = seconds
    return load


def measure(
    port: int, concurrencies: Sequence[int], warmup: float, seconds: float
) -> dict[int, Load]:
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    return {c: runner(_load(port, c, warmup, seconds)) for c in concurrencies}


def contenders(
    package: Path, workdir: Path, smoke: bool
) -> list[tuple[str, Callable[[int], list[str]]]]:
    python = sys.executable
    app_file = workdir / "fastapi_app.py"
    app_file.write_text(textwrap.dedent(FASTAPI_APP))
    servers: list[tuple[str, Callable[[int], list[str]]]] = [
        (
            "modelyard serve",
            lambda p: [python, "-m", "modelyard", "serve", str(package), "--port", str(p)],
        ),
    ]
    if not smoke:
        servers += [
            (
                "plain FastAPI app (uvicorn, same predict call)",
                lambda p: [
                    python, "-m", "uvicorn", "--app-dir", str(workdir), "fastapi_app:app",
                    "--host", "127.0.0.1", "--port", str(p), "--log-level", "warning",
                    "--no-access-log",
                ],
            ),
            (
                "mlflow models serve",
                lambda p: [
                    str(Path(python).parent / "mlflow"), "models", "serve", "-m", str(package),
                    "--env-manager", "local", "--host", "127.0.0.1", "-p", str(p),
                ],
            ),
        ]  # fmt: skip
    return servers


ENDPOINT_PROJECT = """\
name: bench
pipelines:
  ship:
    steps:
      copy:
        run: >-
          python -c "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2],
          dirs_exist_ok=True)" {package} ${{{{ outputs.model }}}}
        outputs: [model]
      register:
        register:
          model: abalone
          mlflow_model: ${{{{ steps.copy.outputs.model }}}}
          approval_status: approved
"""


def endpoint_result(
    package: Path, workdir: Path, env: dict[str, str], measure_at: Callable[[int], dict[int, Load]]
) -> Result:
    """The same package behind an endpoint: the front proxy (guards off, one variant) and one
    replica process of `modelyard serve`. "ready" is the time `endpoint deploy` took, from the
    command's start to the first variant serving."""
    project = workdir / "endpoint-project"
    project.mkdir()
    (project / "modelyard.yaml").write_text(ENDPOINT_PROJECT.format(package=package))
    modelyard = [sys.executable, "-m", "modelyard", "--project", str(project)]
    subprocess.run([*modelyard, "run", "ship", "--quiet"], env=env, check=True, cwd=project)
    port = free_port()
    deploy = [*modelyard, "endpoint", "deploy", "bench", "--model", "abalone/1", "--stage", "dev"]
    began = time.perf_counter()
    subprocess.run([*deploy, "--port", str(port)], env=env, check=True, cwd=project,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    ready = time.perf_counter() - began
    try:
        print(f"modelyard endpoint: ready in {ready:.2f} s; loading ...", flush=True)
        loads = measure_at(port)
    finally:
        subprocess.run([*modelyard, "endpoint", "delete", "bench"], env=env, cwd=project,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return Result("modelyard endpoint (front proxy + 1 replica)", ready, loads)


# -- the report -----------------------------------------------------------------------------------


def table(results: Sequence[Result], raw: dict[str, float], concurrencies: Sequence[int]) -> str:
    head = ["server", "ready"]
    for c in concurrencies:
        head += [f"c={c} p50 ms", f"c={c} p99 ms", f"c={c} req/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for result in results:
        cells = [result.name, f"{result.ready_s:.2f} s" if result.ready_s is not None else "-"]
        for c in concurrencies:
            load = result.loads[c]
            cells += [
                f"{load.percentile(50):.2f}",
                f"{load.percentile(99):.2f}",
                f"{load.rps:,.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("In-process, one raw row (median):")
    lines.append(
        f"`Predictor.predict` (the raw predict call) {raw['predictor'] * 1000:.3f} ms; "
        f"XGBoost's inplace_predict alone on a prepared row {raw['booster'] * 1000:.3f} ms; "
        f"MLflow's pyfunc predict on a DataFrame {raw['pyfunc'] * 1000:.3f} ms."
    )
    return "\n".join(lines)


def goals(results: Sequence[Result], raw: dict[str, float]) -> list[str]:
    by_name = {r.name.split(" (")[0]: r for r in results}
    ours = by_name["modelyard serve"]
    out = []
    over = ours.loads[1].percentile(50) - raw["predictor"] * 1000
    out.append(
        f"- p50 at concurrency 1 within {GOAL_P50_OVER_RAW_MS} ms of the raw predict call: "
        f"{'met' if over <= GOAL_P50_OVER_RAW_MS else 'NOT met'} (+{over:.2f} ms)"
    )
    fastapi = by_name.get("plain FastAPI app")
    if fastapi is not None and 16 in ours.loads:
        ratio = ours.loads[16].rps / fastapi.loads[16].rps
        out.append(
            f"- throughput at concurrency 16 at least {GOAL_THROUGHPUT_VS_FASTAPI:g}x the plain "
            f"FastAPI app's: {'met' if ratio >= GOAL_THROUGHPUT_VS_FASTAPI else 'NOT met'} "
            f"({ratio:.2f}x)"
        )
    if ours.ready_s is not None:
        out.append(
            f"- ready within {GOAL_READY_S} s of start: "
            f"{'met' if ours.ready_s <= GOAL_READY_S else 'NOT met'} ({ours.ready_s:.2f} s)"
        )
    return out


def write_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    start, end = MARKERS
    if start not in readme or end not in readme:
        print(f"README has no {start} ... {end} markers: table not written there", file=sys.stderr)
        return
    before, rest = readme.split(start, 1)
    _, after = rest.split(end, 1)
    README.write_text(before + start + "\n" + text + "\n" + end + after, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="modelyard only, short; no writes")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per load")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time before")
    args = parser.parse_args(argv)
    seconds, warmup = (1.0, 0.5) if args.smoke else (args.seconds, args.warmup)
    concurrencies = (1, 16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env["PYTHONPATH"] = str(REPO)
    # `mlflow models serve` starts `uvicorn` by name: the venv's scripts must be on PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="modelyard-serving-bench-") as tmp:
        workdir = Path(tmp)
        print("training and packaging the abalone model ...", flush=True)
        package = build_package(workdir, rounds=5 if args.smoke else 50)
        raw = raw_timings(package, 200 if args.smoke else 5000)
        results = []
        for name, argv_for in contenders(package, workdir, args.smoke):
            port = free_port()
            process, ready = start(argv_for(port), port, env | {"PKG": str(package)})
            try:
                print(f"{name}: ready in {ready:.2f} s; loading ...", flush=True)
                loads = measure(port, concurrencies, warmup, seconds)
            finally:
                stop(process)
            if any(load.errors for load in loads.values()):
                print(
                    f"{name}: {sum(load.errors for load in loads.values())} failed requests",
                    file=sys.stderr,
                )
                return 1
            results.append(Result(name, ready, loads))
            if name == "modelyard serve":
                results.append(
                    endpoint_result(
                        package, workdir, env, lambda p: measure(p, concurrencies, warmup, seconds)
                    )
                )
                if any(load.errors for load in results[-1].loads.values()):
                    print("modelyard endpoint: failed requests", file=sys.stderr)
                    return 1
    report = table(results, raw, concurrencies)
    lines = goals(results, raw)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Measured {stamp} on {os.cpu_count()} cores ({platform.machine()}), Python "
        f"{platform.python_version()}; {seconds:g} s per load after {warmup:g} s of warm-up; "
        "client and server on the same machine."
    )
    text = "\n".join([header, "", report, "", "Goals:", *lines])
    print("\n" + text)
    if not args.smoke:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("# Serving benchmark\n\n" + text + "\n", encoding="utf-8")
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
