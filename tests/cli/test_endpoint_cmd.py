"""`modelyard endpoint`, for real: a supervisor process, replica processes of `modelyard serve`, a
front proxy on 127.0.0.1, the registry's versions of a small pyfunc model (`x * K`; K `broken`
raises on predict).

- deploy, list and show tell the truth, also after the supervisor was killed (`down`) and
  started again (same address); a killed replica is restarted;
- a new version deployed all at once under a stream of requests: no request fails;
- a canary of a broken version is rolled back automatically, clients see errors only from the
  canary and only at its share, and traffic returns to the stable version;
- the prod endpoint autoscales from 2 replicas up under a bounded load, and back down;
- the endpoint's guards: a key is required, the allow-list refuses, a flood gets 429s.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import write_project
from modelyard.testing.registry import TIMES_K_MODEL_STEP
from modelyard.testing.serving import Load, wait_for

pytestmark = pytest.mark.timeout(300)

PROJECT = f"""\
name: shop
pipelines:
  train:
    parameters:
      k: "2"
    steps:
      make:
        run: {sys.executable} make_model.py ${{{{ outputs.model }}}} ${{{{ params.k }}}}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{{{ steps.make.outputs.model }}}}
          approval_status: approved
"""
BODY = {"dataframe_split": {"columns": ["x"], "data": [[1.5]]}}
KEY = "endpoint-key-0123456789abcdef"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project whose registry holds toy/1 (2x), toy/2 (broken) and toy/3 (3x)."""
    from modelyard.cli.main import main

    root = write_project(
        tmp_path_factory.mktemp("endpoints") / "shop",
        PROJECT,
        {"make_model.py": TIMES_K_MODEL_STEP},
    )
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for name in saved:
        del os.environ[name]
    os.environ["MODELYARD_TRACKING_AUTO_PUSH"] = "0"
    try:
        for k in ("2", "broken", "3"):
            assert main(["--project", str(root), "run", "train", "-p", f"k={k}", "--quiet"]) == 0
        yield root
        for name in ("toy-dev", "toy-prod", "toy-scale", "toy-guarded"):
            main(["--project", str(root), "endpoint", "delete", name])
    finally:
        os.environ.update(saved)


def url_of(cli: Callable[..., Any], root: Path, name: str) -> str:
    shown = cli(root, "endpoint", "show", name, "--json")
    assert shown.code == 0, shown.err
    return str(shown.json()["url"])


def test_deploy_list_show_and_the_truth_after_a_supervisor_dies(
    shop: Path, cli: Callable[..., Any]
) -> None:
    deployed = cli(shop, "endpoint", "deploy", "toy-dev", "--model", "toy/1", "--stage", "dev")
    assert deployed.code == 0, deployed.out + deployed.err
    assert "toy-dev: completed" in deployed.out
    url = url_of(cli, shop, "toy-dev")
    answer = httpx.post(url + "/invocations", json=BODY)
    assert answer.status_code == 200 and answer.json() == {"predictions": [3.0]}
    assert answer.headers["x-modelyard-variant"] == "toy-1"

    listing = cli(shop, "endpoint", "list", "--json").json()
    (dev,) = [e for e in listing if e["name"] == "toy-dev"]
    assert (dev["stage"], dev["status"], dev["url"]) == ("dev", "in_service", url)
    assert [(v["model"], v["weight"], v["state"]) for v in dev["variants"]] == [
        ("toy/1", 100.0, "active")
    ]
    text = cli(shop, "endpoint", "list")
    assert "toy-dev" in text.out and "toy/1 100% (1/1 ready)" in text.out

    # a replica killed -9 is restarted; the endpoint keeps answering
    replica = wait_for(
        lambda: cli(shop, "endpoint", "show", "toy-dev", "--json").json()["variants"][0][
            "observed"
        ],
        "the replica to be observed",
    )["replicas"][0]
    os.kill(replica["pid"], signal.SIGKILL)

    def restarted() -> Any:
        observed = cli(shop, "endpoint", "show", "toy-dev", "--json").json()["variants"][0]
        rows = (observed["observed"] or {}).get("replicas", [])
        return rows and rows[0]["restarts"] == 1 and rows[0]["state"] == "ready" and rows[0]

    again = wait_for(restarted, "the replica to be restarted")
    assert again["pid"] != replica["pid"] and "SIGKILL" in again["last_exit"]
    assert httpx.post(url + "/invocations", json=BODY).status_code == 200

    # the supervisor killed -9: the endpoint is `down`, its replicas go too; `start` brings it
    # back on the same address
    supervisor = cli(shop, "endpoint", "show", "toy-dev", "--json").json()
    pid = int(supervisor["supervisor"].split(":")[1])
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: cli(shop, "endpoint", "list", "--json").json()[0]["status"] == "down",
        "the endpoint to show as down",
    )
    wait_for(lambda: not _alive(again["pid"]), "the orphaned replica to exit")
    started = cli(shop, "endpoint", "start", "toy-dev")
    assert started.code == 0 and "starting" in started.out
    wait_for(
        lambda: cli(shop, "endpoint", "show", "toy-dev", "--json").json()["status"] == "in_service",
        "the endpoint to serve again",
    )
    assert url_of(cli, shop, "toy-dev") == supervisor["url"]
    assert httpx.post(url + "/invocations", json=BODY).json() == {"predictions": [3.0]}


def test_a_new_version_all_at_once_under_load_drops_no_request(
    shop: Path, cli: Callable[..., Any]
) -> None:
    first = cli(shop, "endpoint", "deploy", "toy-dev", "--model", "toy/1", "--stage", "dev")
    assert first.code == 0, first.err
    url = url_of(cli, shop, "toy-dev")
    with Load(url, BODY, clients=4) as load:
        wait_for(lambda: len(load.answers) > 50, "traffic")
        switched = cli(shop, "endpoint", "deploy", "toy-dev", "--model", "toy/3", "--stage", "dev")
        assert switched.code == 0, switched.out + switched.err
        seen = len(load.answers)
        wait_for(lambda: len(load.answers) > seen + 50, "traffic after the switch")
    statuses = {status for status, _, _ in load.answers}
    assert statuses == {200}, [a for a in load.answers if a[0] != 200][:5]
    assert load.answers[0][2] == {"predictions": [3.0]}
    assert load.answers[-1][2] == {"predictions": [4.5]}
    shown = cli(shop, "endpoint", "show", "toy-dev", "--json").json()
    assert [(v["model"], v["weight"]) for v in shown["variants"]] == [("toy/3", 100.0)]
    assert shown["rollouts"][0]["phase"] == "completed"


def test_a_broken_canary_is_rolled_back_and_errors_stay_at_its_share(
    shop: Path, cli: Callable[..., Any]
) -> None:
    stable = cli(shop, "endpoint", "deploy", "toy-prod", "--model", "toy/1", "--stage", "prod")
    assert stable.code == 0, stable.err
    url = url_of(cli, shop, "toy-prod")
    with Load(url, BODY) as load:
        canary = cli(
            shop,
            *("endpoint", "deploy", "toy-prod", "--model", "toy/2", "--stage", "prod"),
            *("--strategy", "canary", "--canary-percent", "25", "--bake-seconds", "120"),
            *("--min-requests", "12", "--max-error-rate", "0.05"),
        )
        seen = len(load.answers)
        wait_for(lambda: len(load.answers) > seen + 40, "traffic after the rollback")
    assert canary.code == 1, canary.out + canary.err
    assert "rolled_back" in canary.out and "error rate" in canary.out
    errors = [a for a in load.answers if a[0] != 200]
    assert errors, "the canary never took traffic"
    assert {variant for _, variant, _ in errors} == {"toy-2"}
    assert {status for status, _, _ in errors} == {500}
    # the canary's share is 25%: among the requests answered while it took traffic, at most a
    # quarter (plus one for the rounding of a partial cycle) failed
    first = next(i for i, a in enumerate(load.answers) if a[1] == "toy-2")
    last = max(i for i, a in enumerate(load.answers) if a[1] == "toy-2")
    window = load.answers[first : last + 1]
    assert len(errors) <= len(window) / 4 + 1
    after = load.answers[last + 1 :]
    assert after and all(a[0] == 200 and a[1] == "toy-1" for a in after)
    shown = cli(shop, "endpoint", "show", "toy-prod", "--json").json()
    assert [(v["model"], v["weight"]) for v in shown["variants"]] == [("toy/1", 100.0)]
    rollout = shown["rollouts"][0]
    assert (rollout["to"], rollout["phase"]) == ("toy-2", "rolled_back")
    assert "error rate" in rollout["reason"]


def test_the_prod_endpoint_scales_out_under_load_and_back_in(
    shop: Path, cli: Callable[..., Any]
) -> None:
    deployed = cli(
        shop,
        *("endpoint", "deploy", "toy-scale", "--model", "toy/1", "--stage", "prod"),
        *("--autoscale", "2,4,60", "--cooldown", "2", "--scale-window", "3"),
    )
    assert deployed.code == 0, deployed.out + deployed.err
    url = url_of(cli, shop, "toy-scale")

    def replicas() -> tuple[int, int]:
        variant = cli(shop, "endpoint", "show", "toy-scale", "--json").json()["variants"][0]
        return variant["replicas"], (variant["observed"] or {}).get("ready", 0)

    wait_for(lambda: replicas() == (2, 2), "two ready replicas")
    # 60 invocations per replica per minute is 1/s: a few clients are many times that
    with Load(url, BODY, clients=2):
        wait_for(lambda: replicas()[0] > 2, "a scale-out", timeout=60)
        wait_for(lambda: replicas()[1] > 2, "the new replicas to be ready", timeout=60)
    wait_for(lambda: replicas() == (2, 2), "the scale-in after the load", timeout=60)
    events = cli(shop, "endpoint", "show", "toy-scale", "--json").json()["events"]
    scaling = [e["message"] for e in events if e["kind"] == "scale"]
    assert any("2 -> " in m for m in scaling) and any(m.endswith("-> 2 replicas") for m in scaling)


def test_the_guards_of_an_endpoint(
    shop: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_KEYS", KEY)
    deployed = cli(
        shop,
        *("endpoint", "deploy", "toy-guarded", "--model", "toy/1", "--stage", "dev"),
        *("--api-keys-env", "TOY_KEYS", "--allow", "127.0.0.0/8", "--rate", "5", "--burst", "5"),
    )
    assert deployed.code == 0, deployed.err
    url = url_of(cli, shop, "toy-guarded") + "/invocations"
    assert httpx.post(url, json=BODY).status_code == 401
    with httpx.Client() as client:
        answers = [
            client.post(url, json=BODY, headers={"authorization": f"Bearer {KEY}"})
            for _ in range(20)
        ]
    assert answers[0].status_code == 200
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(int(a.headers["retry-after"]) >= 1 for a in refused)
    logs = cli(shop, "endpoint", "logs", "toy-guarded")
    shown = cli(shop, "endpoint", "show", "toy-guarded", "--json")
    assert KEY not in logs.out + shown.out
    assert shown.json()["guards"]["api_keys"] == 1

    monkeypatch.setenv("TOY_KEYS", KEY)  # deploy took it out of its environment
    closed = cli(
        shop,
        *("endpoint", "deploy", "toy-guarded", "--model", "toy/1", "--stage", "dev"),
        *("--api-keys-env", "TOY_KEYS", "--allow", "10.0.0.0/8"),
    )
    assert closed.code == 0, closed.err
    wait_for(
        lambda: httpx.post(url, json=BODY, headers={"x-api-key": KEY}).status_code == 403,
        "the allow-list to refuse 127.0.0.1",
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
