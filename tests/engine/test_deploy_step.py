"""The `deploy` step for real: a run makes a small pyfunc model (`x * K`; K `broken` raises on
predict), registers it approved, and deploys it to an endpoint: a supervisor process, replicas of
`modelyard serve` and a front proxy on 127.0.0.1.

- the run succeeds, the step's values say where the version serves, and that address answers;
- a gate that refuses the version skips the deploy step with the gate's reason, and the run
  still succeeds;
- a broken version deployed as a canary under traffic is rolled back: the step fails with the
  reason and the endpoint answers with the version that served before;
- a run cancelled while its deploy step waits for the rollout leaves the rollout going: the
  endpoint's supervisor, started by that attempt, is no part of the attempt's process tree, which
  the cancel kills; deploying that version again (as a retry would) waits on the same rollout.

The tests that deploy share one project and its endpoint (starting replicas costs seconds); it
is deleted at the end, so no process is left behind. Its metadata database is not the project's
default one: the step's process and the supervisor it starts must be told which it is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_harness import EngineHarness, process_gone, wait_until

from modelyard.engine import service
from modelyard.errors import NotFound, StateConflict
from modelyard.pipeline.deployment import Deployment
from modelyard.serving.endpoint import service as endpoints
from modelyard.serving.endpoint.deploy_step import deploy_version
from modelyard.testing.registry import TIMES_K_MODEL_STEP

pytestmark = pytest.mark.timeout(240)

PROJECT = """
name: shop
pipelines:
  release:
    parameters:
      k: "2"
      max_mse: 10.0
    steps:
      make:
        run: @PY@ make_model.py ${{ outputs.model }} ${{ params.k }}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{ steps.make.outputs.model }}
          approval_status: approved
          metrics: {mse: 1.0}
          gate:
            - {metric: mse, max: "${{ params.max_mse }}"}
      ship:
        deploy:
          model: register
          endpoint: toy-dev
          stage: dev
@ROLLOUT@
"""
BODY = {"dataframe_split": {"columns": ["x"], "data": [[1.5]]}}
ENDPOINT = "toy-dev"


def write(engine: EngineHarness, rollout: str = "") -> None:
    text = PROJECT.replace("@ROLLOUT@", rollout)
    engine.write(text, {"make_model.py": TIMES_K_MODEL_STEP})


def sqlite_harness(base: Path) -> EngineHarness:
    scratch = base / "scratch"
    scratch.mkdir()
    return EngineHarness(base / "project", f"sqlite:///{base / 'state' / 'modelyard.db'}", scratch)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineHarness]:
    """One project and its endpoint for the tests that deploy: each starts from what the one
    before left serving (`serving`)."""
    harness = sqlite_harness(tmp_path_factory.mktemp("deploy"))
    write(harness)
    try:
        yield harness
    finally:
        with contextlib.suppress(NotFound):  # its supervisor stops, and its replicas with it
            endpoints.delete(harness.runtime, "shop", ENDPOINT)
        harness.close()


def serving(engine: EngineHarness) -> tuple[str, str]:
    """The endpoint's url and the variant that serves it, deploying K=2 first if none does."""
    try:
        view = endpoints.show(engine.runtime, "shop", ENDPOINT)
    except NotFound:
        view = None
    if view is None or not view.running or view.rollout is not None:
        write(engine)
        run = engine.run("release")
        assert run.status == "succeeded", run.message
        view = endpoints.show(engine.runtime, "shop", ENDPOINT)
    (variant,) = [v for v in view.variants if v.weight == 100.0]
    assert view.url is not None
    return view.url, variant.name


def predict(url: str) -> Any:
    answer = httpx.post(url + "/invocations", json=BODY, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_run_deploys_its_version_and_the_endpoint_answers(shop: EngineHarness) -> None:
    engine = shop
    write(engine)

    run = engine.run("release")

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    number = (steps["register"].values or {})["version"]
    ship = steps["ship"]
    assert ship.status == "succeeded", ship.message
    values = ship.values or {}
    url = values.get("url")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:")
    assert values == {
        "endpoint": ENDPOINT,
        "url": url,
        "variant": f"toy-{number}",
        "model": "toy",
        "version": number,
        "outcome": "completed",
    }
    assert predict(url) == {"predictions": [3.0]}
    assert ship.message == f"deployed toy/{number} to {ENDPOINT} ({url})"
    assert run.message == f"registered toy/{number} (approved); {ship.message}"
    # the attempt is one process that ended; the endpoint it deployed to goes on serving
    (attempt,) = engine.attempts(run.id, "ship")
    assert (attempt.status, attempt.exit_code) == ("succeeded", 0)
    view = endpoints.show(engine.runtime, "shop", ENDPOINT)
    assert view.running
    assert [(v.model_ref, v.weight) for v in view.variants] == [(f"toy/{number}", 100.0)]
    assert any(e.message.startswith(f"run {run.id}: deploying toy/{number}") for e in view.events)
    log = Path(str(attempt.log_path)).read_text()
    assert f"{ENDPOINT}: completed; serves on {url}/invocations" in log


def test_a_refused_version_is_not_deployed(tmp_path: Path) -> None:
    engine = sqlite_harness(tmp_path)
    write(engine)

    run = engine.run("release", {"max_mse": 0.5})

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    reason = (steps["register"].values or {})["reason"]
    assert reason and "mse" in reason
    assert steps["ship"].status == "skipped"
    assert steps["ship"].message == f"nothing to deploy: {reason}"
    assert engine.attempts(run.id, "ship") == []
    assert endpoints.list_endpoints(engine.runtime, "shop") == []
    engine.close()


class Traffic:
    """One client posting requests in a thread until stopped; every status is kept."""

    def __init__(self, url: str):
        self.url = url + "/invocations"
        self.statuses: list[int] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._client, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)

    def _client(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopped.is_set():
                try:
                    self.statuses.append(client.post(self.url, json=BODY).status_code)
                except httpx.TransportError:
                    self.statuses.append(0)


CANARY = "          rollout: {strategy: canary, canary_percent: 50, bake: 60s, min_requests: 4}"


def test_a_broken_canary_fails_the_step_and_the_old_version_serves(shop: EngineHarness) -> None:
    engine = shop
    url, stable = serving(engine)  # K=2
    write(engine, rollout=CANARY)

    with Traffic(url) as traffic:
        broken = engine.run("release", {"k": "broken"})

    assert broken.status == "failed", broken.message
    steps = engine.steps(broken.id)
    canary = f"toy-{(steps['register'].values or {})['version']}"
    ship = steps["ship"]
    assert ship.status == "failed"
    assert ship.message is not None and ship.message.startswith("rolled back: "), ship.message
    assert "error rate" in ship.message and f"{stable} serves again" in ship.message
    assert 500 in traffic.statuses  # the canary took traffic, and failed it
    assert predict(url) == {"predictions": [3.0]}
    view = endpoints.show(engine.runtime, "shop", ENDPOINT)
    assert [(v.name, v.weight) for v in view.variants] == [(stable, 100.0)]
    assert (view.recent_rollouts[0].to_variant, view.recent_rollouts[0].phase) == (
        canary,
        "rolled_back",
    )


def test_cancelling_a_deploy_leaves_the_endpoint_serving(shop: EngineHarness) -> None:
    engine = shop
    url, _ = serving(engine)
    # stopped: the next deploy step's attempt is the process that starts the supervisor again
    assert endpoints.stop(engine.runtime, "shop", ENDPOINT)
    write(engine, rollout="          rollout: {bake: 5m}")  # dev: all at once, then a long bake

    run_id = engine.create("release", {"k": "3"})
    driving = engine.drive_in_background(run_id)

    def baking() -> Any:
        view = endpoints.show(engine.runtime, "shop", ENDPOINT)
        rollout = view.rollout
        return view.running and rollout and rollout.phase == "baking" and view.row.supervisor

    supervisor = wait_until(baking, "the new version to take the traffic of its rollout")
    (attempt,) = engine.attempts(run_id, "ship")
    assert attempt.status == "running"
    service.request_cancel(engine.runtime, run_id)
    assert driving.join().status == "cancelled"

    # the attempt's process tree was killed; the supervisor it started was no part of it
    assert attempt.pid is not None and process_gone(attempt.pid)
    view = endpoints.show(engine.runtime, "shop", ENDPOINT)
    assert view.running and view.row.supervisor == supervisor
    assert view.rollout is not None and view.rollout.phase == "baking"
    assert predict(url) == {"predictions": [4.5]}

    # the same version deployed again (as a retry of the attempt would) waits on that rollout,
    # and a wait that runs out says so, without a second rollout
    number = int((engine.steps(run_id)["register"].values or {})["version"])
    said: list[str] = []
    with pytest.raises(StateConflict, match=f"toy-{number} to {ENDPOINT} still baking after 1s"):
        deploy_version(
            engine.runtime,
            project="shop",
            project_root=engine.root,
            deployment=Deployment(model="register", endpoint=ENDPOINT, stage="dev"),
            model="toy",
            version=number,
            actor="a test",
            deadline=time.time(),
            say=said.append,
        )
    assert said[0] == f"toy/{number} is already rolling out to {ENDPOINT}: waiting for it"
    again = endpoints.show(engine.runtime, "shop", ENDPOINT)
    assert again.rollout is not None and again.rollout.id == view.rollout.id
