"""The ray backend of endpoints (`endpoint deploy --backend ray`), for real: the supervisor process
runs each variant as a Ray Serve application on a local Ray instance, behind the endpoint's own
front proxy on 127.0.0.1; the model is the abalone inference pipeline, registered twice.

- deployed with `--backend ray`, the endpoint answers the package's predictions (the replicas run
  modelyard's own server code, natively), and says where it runs;
- a second version rolls out all at once under a stream of requests: none fails, and traffic ends
  on the new version, which is the application Ray routes `<prefix>` to;
- a deploy with `--replicas` changes the count of replicas Ray itself reports, both ways;
- an endpoint keeps its backend and its Ray cluster (a different one is a ConfigError);
- delete shuts down the Ray instance the backend started; on a cluster given by `--ray-address`
  (a model shipped packed), delete removes the application and leaves the cluster running.

Ray itself is asked through a probe process (a second driver) rather than this one: the CLI forks
to start supervisors, which a process holding Ray's threads must not do. Without Ray installed,
those tests are skipped; the ones that need no Ray (the missing dependency, the proxy's prefix,
packing a model) run anyway.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing.abalone import COLUMNS, Abalone, make_abalone
from modelyard.testing.serving import Load, wait_for

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="Ray Serve is not installed (pip install 'modelyard[ray]')"
)
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]

PROBE = r"""
import json, socket, sys
import ray
from ray import serve

address = sys.argv[1]
if address == "local":  # a cluster of the probe's own, whose Serve an operator configured
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
else:
    ray.init(address=address, log_to_driver=False)
print(json.dumps({"address": ray.get_runtime_context().gcs_address}), flush=True)
for line in sys.stdin:
    apps = {}
    for name, app in serve.status().applications.items():
        replicas = {}
        for deployment in app.deployments.values():
            for state, count in deployment.replica_states.items():
                replicas[str(getattr(state, "value", state))] = count
        apps[name] = {"status": str(getattr(app.status, "value", app.status)), "replicas": replicas}
    print(json.dumps(apps), flush=True)
"""


class RayProbe:
    """A process connected to a Ray cluster (or owning one: "local") that reports, on request,
    the Serve applications and their replicas by state, as Ray sees them."""

    def __init__(self, address: str):
        # a driver given an address authenticates only when told to (Ray's policy); the token is
        # the one local instances write to ~/.ray/auth_token
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
        self.errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - what it says when it fails
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env=env,
        )
        self.address = json.loads(self._line())["address"]

    def apps(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("status\n")
        self.process.stdin.flush()
        return dict(json.loads(self._line()))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the probe leaves (and stops a cluster it started)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the probe answers or exits: never a hang
        if not line:
            code = self.process.wait()
            self.errors.seek(0)
            raise AssertionError(f"the Ray probe exited ({code}): {self.errors.read()[-3000:]}")
        return line


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Shop:
    root: Path
    abalone: Abalone


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A project whose registry holds abalone/1 and abalone/2 (the same model packaged again:
    another package, the same predictions)."""
    from modelyard.cli.main import main

    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for name in saved:
        del os.environ[name]
    os.environ["MODELYARD_TRACKING_AUTO_PUSH"] = "0"
    root = tmp_path_factory.mktemp("ray") / "shop"
    root.mkdir()
    (root / "modelyard.yaml").write_text("name: shop\npipelines: {}\n")
    try:
        abalone = make_abalone(tmp_path_factory.mktemp("abalone"))
        first = abalone.package(tmp_path_factory.mktemp("packages") / "abalone-1").path
        second = tmp_path_factory.mktemp("packages") / "abalone-2"
        shutil.copytree(first, second, dirs_exist_ok=True)
        (second / "NOTES.txt").write_text("packaged again\n")
        _register(root, [first, second])
        yield Shop(root, abalone)
        for name in ("abalone-ray", "abalone-attached"):
            main(["--project", str(root), "endpoint", "delete", name])
    finally:
        os.environ.update(saved)


def _register(root: Path, packages: list[Path]) -> None:
    from modelyard.engine.runtime import Runtime
    from modelyard.registry.service import Candidate, record_version
    from modelyard.settings import Settings
    from modelyard.store import runs as db

    runtime = Runtime(Settings.resolve(root, {}))
    try:
        for package in packages:
            stored = runtime.store.put_path(package)
            with runtime.db.begin() as conn:
                db.record_artifacts(conn, [stored.to_json()])
                record_version(
                    conn,
                    Candidate(
                        project="shop",
                        model="abalone",
                        description="",
                        package_digest=stored.digest,
                        package_size=stored.size,
                        flavor="python_function",
                        signature=None,
                        metrics={},
                        params={},
                        lineage={},
                        tags={},
                        approval_status="approved",
                        rules=(),
                        alias=None,
                        actor="test",
                        run_id=None,
                    ),
                )
    finally:
        runtime.close()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`cli(root, "endpoint", "show", NAME)`: `modelyard --project ROOT ...` in this process."""
    from modelyard.cli.main import main

    def invoke(root: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--project", str(root), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def rows(abalone: Abalone, count: int) -> dict[str, Any]:
    return {"dataframe_split": abalone.frame.iloc[:count][COLUMNS].to_dict(orient="split")}


def shown(cli: Callable[..., Result], root: Path, name: str) -> dict[str, Any]:
    result = cli(root, "endpoint", "show", name, "--json")
    assert result.code == 0, result.err
    return dict(result.json())


def ray_replicas(cli: Callable[..., Result], root: Path, name: str) -> list[dict[str, Any]]:
    variants = shown(cli, root, name)["variants"]
    return [r for v in variants for r in (v["observed"] or {}).get("replicas", [])]


def all_ready(cli: Callable[..., Result], root: Path, name: str, count: int) -> bool:
    """The supervisor observes exactly `count` replicas, all ready."""
    replicas = ray_replicas(cli, root, name)
    return len(replicas) == count and all(r["state"] == "ready" for r in replicas)


def ray_processes(pid: int) -> list[Any]:
    """The processes of the Ray instance a supervisor started: its descendants running Ray."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if command.startswith("ray::") or "/ray/" in command:
            found.append(child)
    return found


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a measurement past the capture (shown with -s)."""

    def say(text: str) -> None:
        with capsys.disabled():
            print(text)

    return say


# -- without Ray -----------------------------------------------------------------------------------


def test_without_ray_the_ray_backend_is_a_clear_error_and_nothing_is_recorded(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "modelyard.yaml").write_text("name: bare\npipelines: {}\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    done = cli(
        tmp_path, "endpoint", "deploy", "e", "--model", "m/1", "--stage", "dev", "--backend", "ray"
    )
    assert done.code == 7, done.out + done.err
    assert "the ray backend needs the Python package 'ray'" in done.err
    assert "pip install 'modelyard[ray]'" in done.err and "Traceback" not in done.err
    assert cli(tmp_path, "endpoint", "list", "--json").json() == []

    local = cli(
        tmp_path, "endpoint", "deploy", "e", "--model", "m/1", "--stage", "dev",
        "--backend", "local", "--ray-address", "127.0.0.1:1",
    )  # fmt: skip
    assert local.code == 2 and "a Ray address is for the ray backend" in local.err


def test_the_proxy_forwards_under_the_backends_prefix() -> None:
    """A backend behind a shared proxy (Ray's) gets its prefix before every path it is sent."""
    from modelyard.serving.endpoint.proxy import EndpointProxy
    from modelyard.serving.endpoint.routing import Backend, Router
    from modelyard.serving.endpoint.upstream import UpstreamPool

    async def main() -> list[bytes]:
        lines: list[bytes] = []

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines.append(head.split(b"\r\n", 1)[0])
                length = [h for h in head.lower().split(b"\r\n") if h.startswith(b"content-")]
                size = int(length[0].split(b":")[1]) if length else 0
                await reader.readexactly(size)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        router = Router()
        router.set_backends("v", [Backend("v/1", "v", "127.0.0.1", port, prefix="/shop/e/v")])
        router.set_weights({"v": 1.0})
        pool = UpstreamPool()
        proxy = EndpointProxy("e", router, pool)
        for method, path in (("POST", "/invocations"), ("GET", "/version")):
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"{}", "more_body": False}

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = {"type": "http", "method": method, "path": path, "headers": []}
            await proxy(scope, receive, send)
            assert sent[0]["status"] == 200
        await pool.aclose()
        server.close()
        return lines

    assert asyncio.run(main()) == [
        b"POST /shop/e/v/invocations HTTP/1.1",
        b"GET /shop/e/v/version HTTP/1.1",
    ]


def test_a_packed_model_unpacks_once_per_node_to_the_same_files(tmp_path: Path) -> None:
    from modelyard.serving.endpoint.ray_backend import _materialize, _ModelSource, _pack

    folder = tmp_path / "model"
    (folder / "code").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "code" / "m.py").write_text("K = 2\n")
    packed, digest = _pack(folder)
    os.utime(folder / "MLmodel", (0, 0))  # the zip's bytes depend on the files only
    assert _pack(folder) == (packed, digest)

    source = _ModelSource(str(tmp_path / "elsewhere"), packed, digest)
    nodes = tmp_path / "node-cache"
    unpacked = _materialize(source, nodes)
    assert unpacked == nodes / digest
    assert (unpacked / "code" / "m.py").read_text() == "K = 2\n"
    (unpacked / "MLmodel").write_text("flavors: {}\n# seen\n")
    assert _materialize(source, nodes) == unpacked  # reused, not unpacked again
    assert (unpacked / "MLmodel").read_text().endswith("# seen\n")
    assert sorted(p.name for p in nodes.iterdir()) == [digest]  # no staging folder left
    assert _materialize(_ModelSource(str(folder)), nodes) == folder  # a shared folder as it is


def test_replicas_get_the_endpoints_serving_options_and_nothing_else() -> None:
    from modelyard.errors import ConfigError
    from modelyard.serving.app import ServingOptions
    from modelyard.serving.endpoint.ray_backend import _serving_options

    assert _serving_options(()) == ServingOptions()  # the same defaults as `modelyard serve`
    given = ("--max-batch", "64", "--max-wait-ms", "2", "--max-body-mb", "1")
    assert _serving_options(given) == ServingOptions(
        max_body_bytes=1024 * 1024, max_batch_rows=64, max_wait=0.002
    )
    with pytest.raises(ConfigError, match="does not take --pyfunc"):
        _serving_options(("--pyfunc",))


@pytest.mark.parametrize(
    ("http_host", "address", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),  # our own instance
        ("0.0.0.0", "10.1.2.3:6379", "10.1.2.3"),  # all interfaces of a remote head
        ("0.0.0.0", "ray://10.1.2.3:10001", "10.1.2.3"),
        ("0.0.0.0", "192.0.2.9:6379", "127.0.0.1"),  # the head is this machine
        ("10.9.9.9", "10.1.2.3:6379", "10.9.9.9"),  # the proxy's own interface
        ("127.0.0.1", "auto", "127.0.0.1"),
    ],
)
def test_rays_proxy_is_reached_where_it_listens(
    http_host: str, address: str | None, expected: str
) -> None:
    from modelyard.serving.endpoint.ray_backend import _proxy_host

    assert _proxy_host(http_host, address, own_ip="192.0.2.9") == expected


# -- on Ray ----------------------------------------------------------------------------------------


@needs_ray
def test_deployed_on_ray_it_answers_the_predictions_of_the_package(
    shop: Shop, cli: Callable[..., Result], report: Callable[[str], None]
) -> None:
    started = time.monotonic()
    deployed = cli(
        shop.root,
        *("endpoint", "deploy", "abalone-ray", "--model", "abalone/1", "--stage", "dev"),
        *("--backend", "ray"),
    )
    assert deployed.code == 0, deployed.out + deployed.err
    report(f"first deploy, on a new local Ray instance: {time.monotonic() - started:.1f}s")
    view = shown(cli, shop.root, "abalone-ray")
    assert (view["backend"], view["status"]) == ("ray", "in_service")
    assert view["ray"] == {"address": None}
    text = cli(shop.root, "endpoint", "show", "abalone-ray")
    assert "backend: ray (a local Ray instance of its own)" in text.out

    answer = httpx.post(view["url"] + "/invocations", json=rows(shop.abalone, 40), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-modelyard-variant"] == "abalone-1"
    predictions = answer.json()["predictions"]
    assert predictions == pytest.approx(shop.abalone.expected().tolist(), rel=1e-6)

    (replica,) = wait_for(lambda: ray_replicas(cli, shop.root, "abalone-ray"), "observed")
    assert replica["backend"] == "ray" and replica["state"] == "ready"
    assert replica["application"] == "shop.abalone-ray.abalone-1"
    # the replica behind Ray's proxy is modelyard's own server, natively predicting
    ray_url = f"http://{replica['host']}:{replica['port']}{replica['prefix']}"
    health = httpx.get(ray_url + "/health", timeout=30).json()
    assert health["model"] == "abalone/1" and health["variant"] == "abalone-1"
    assert health["predictor"]["kind"].startswith("native"), health["predictor"]
    record = shop.abalone.frame.iloc[0].to_dict()
    del record["shell_weight"]  # validated against the signature by the replica, as locally
    bad = httpx.post(view["url"] + "/invocations", json={"dataframe_records": [record]})
    assert bad.status_code == 422 and bad.json()["field"] == "shell_weight"

    # the endpoint keeps its backend and its cluster
    other = cli(
        shop.root,
        *("endpoint", "deploy", "abalone-ray", "--model", "abalone/1", "--stage", "dev"),
        *("--backend", "local"),
    )
    assert other.code == 2 and "runs on the ray backend, not local" in other.err
    assert "an endpoint keeps its backend" in other.err
    moved = cli(
        shop.root,
        *("endpoint", "deploy", "abalone-ray", "--model", "abalone/1", "--stage", "dev"),
        *("--ray-address", "127.0.0.1:1"),
    )
    assert moved.code == 2 and "keeps its Ray cluster" in moved.err


@needs_ray
def test_a_new_version_rolls_out_on_ray_under_load_with_no_failed_request(
    shop: Shop, cli: Callable[..., Result], report: Callable[[str], None]
) -> None:
    url = shown(cli, shop.root, "abalone-ray")["url"]
    expected = shop.abalone.expected()[:2].tolist()
    with Load(url, rows(shop.abalone, 2), clients=2) as load:
        wait_for(lambda: len(load.answers) > 30, "traffic")
        started = time.monotonic()
        switched = cli(
            shop.root, "endpoint", "deploy", "abalone-ray", "--model", "abalone/2", "--stage", "dev"
        )
        took = time.monotonic() - started
        assert switched.code == 0, switched.out + switched.err
        seen = len(load.answers)
        wait_for(lambda: len(load.answers) > seen + 30, "traffic after the switch")
    report(f"rollout of a second version on Ray: {took:.1f}s, {len(load.answers)} requests")
    failed = [a for a in load.answers if a[0] != 200]
    assert not failed, failed[:5]
    assert all(a[2]["predictions"] == pytest.approx(expected, rel=1e-6) for a in load.answers)
    assert load.answers[0][1] == "abalone-1" and load.answers[-1][1] == "abalone-2"
    view = shown(cli, shop.root, "abalone-ray")
    assert [(v["model"], v["weight"]) for v in view["variants"]] == [("abalone/2", 100.0)]
    (replica,) = wait_for(lambda: ray_replicas(cli, shop.root, "abalone-ray"), "observed")
    ray_url = f"http://{replica['host']}:{replica['port']}{replica['prefix']}"
    assert httpx.get(ray_url + "/health", timeout=30).json()["model"] == "abalone/2"


@needs_ray
def test_scaling_changes_the_replicas_ray_runs_and_delete_stops_its_ray(
    shop: Shop, cli: Callable[..., Result], report: Callable[[str], None]
) -> None:
    (replica,) = ray_replicas(cli, shop.root, "abalone-ray")
    probe = RayProbe(replica["cluster"])
    app = "shop.abalone-ray.abalone-2"
    try:
        # the old version's application goes once its rollout completed (Ray deletes it in
        # the background)
        wait_for(lambda: set(probe.apps()) == {app}, "the old version's application to go")
        for count in (2, 1):
            started = time.monotonic()
            scaled = cli(
                shop.root,
                *("endpoint", "deploy", "abalone-ray", "--model", "abalone/2", "--stage", "dev"),
                *("--replicas", str(count)),
            )
            assert scaled.code == 0, scaled.err
            wait_for(
                lambda count=count: probe.apps()[app]["replicas"] == {"RUNNING": count},
                f"Ray to run {count} replicas",
            )
            wait_for(
                lambda count=count: all_ready(cli, shop.root, "abalone-ray", count),
                f"{count} ready replicas observed",
            )
            report(f"scale to {count} on Ray: {time.monotonic() - started:.1f}s")
    finally:
        probe.close()
    supervisor = int(shown(cli, shop.root, "abalone-ray")["supervisor"].split(":")[1])
    instance = ray_processes(supervisor)
    commands = " ".join(" ".join(p.cmdline()) for p in instance)
    assert "gcs_server" in commands and "raylet" in commands and "ray::ServeReplica" in commands
    deleted = cli(shop.root, "endpoint", "delete", "abalone-ray")
    assert deleted.code == 0, deleted.err
    # every process of the instance is gone: its core, its agents, Serve's actors, the replicas
    wait_for(lambda: not any(p.is_running() for p in instance), "the Ray instance to stop", 30)


@needs_ray
def test_on_a_cluster_given_by_address_delete_removes_only_the_application(
    shop: Shop, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the supervisor's, to attach (as the probe's)
    cluster = RayProbe("local")  # someone else's cluster, as far as the endpoint knows
    try:
        deployed = cli(
            shop.root,
            *("endpoint", "deploy", "abalone-attached", "--model", "abalone/1", "--stage", "dev"),
            *("--backend", "ray", "--ray-address", cluster.address),
        )
        assert deployed.code == 0, deployed.out + deployed.err
        view = shown(cli, shop.root, "abalone-attached")
        assert view["ray"] == {"address": cluster.address}
        answer = httpx.post(view["url"] + "/invocations", json=rows(shop.abalone, 5), timeout=30)
        assert answer.status_code == 200, answer.text
        expected = shop.abalone.expected()[:5].tolist()
        assert answer.json()["predictions"] == pytest.approx(expected, rel=1e-6)
        app = "shop.abalone-attached.abalone-1"
        assert cluster.apps()[app]["replicas"] == {"RUNNING": 1}

        deleted = cli(shop.root, "endpoint", "delete", "abalone-attached")
        assert deleted.code == 0, deleted.err
        assert app not in cluster.apps()  # gone, and the cluster still answers
    finally:
        cluster.close()
