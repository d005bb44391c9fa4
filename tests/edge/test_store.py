"""ComponentStore and safe_unzip: recipes all-or-nothing and immutable, artifacts fetched from
artifact folders, file:// and a real local HTTPS server, verified, moded, unpacked safely, Docker
images through a fake `docker` on PATH, clean-up after removal and after a kill -9 mid-download.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.edge.agent import archives
from modelyard.edge.agent.archives import safe_unzip
from modelyard.edge.agent.digests import artifact_digest
from modelyard.edge.agent.errors import ArtifactError, RecipeError
from modelyard.edge.agent.model import Component, Recipe
from modelyard.edge.agent.platform import current_platform, select_manifest
from modelyard.edge.agent.recipe import parse_recipe
from modelyard.edge.agent.store import ComponentStore

REPO = Path(__file__).resolve().parents[2]
NAME = "com.example.Model"


# --- helpers ---------------------------------------------------------------------------------


def recipe_doc(
    name: str = NAME, version: str = "1.0.0", artifacts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    manifest: dict[str, Any] = {"Lifecycle": {"Run": "echo hi"}}
    if artifacts:
        manifest["Artifacts"] = artifacts
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [manifest],
    }


def write_recipe(folder: Path, doc: dict[str, Any], file: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (file or f"{doc['ComponentName']}-{doc['ComponentVersion']}.yaml")
    if path.suffix == ".json":
        path.write_text(json.dumps(doc, indent=2))
    else:
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def component(doc: dict[str, Any]) -> Component:
    recipe = parse_recipe(yaml.safe_dump(doc), fmt="yaml")
    return select_manifest(recipe, current_platform())


def artifact_file(folder: Path, name: str, data: bytes, version: str = "1.0.0") -> Path:
    """A file in an artifact folder laid out <dir>/<name>/<version>/<file>."""
    path = folder / NAME / version / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def digest_of(data: bytes, tmp_path: Path) -> str:
    probe = tmp_path / "digest-probe"
    probe.write_bytes(data)
    try:
        return artifact_digest(probe)
    finally:
        probe.unlink()


def entries(folder: Path) -> list[str]:
    """Every file and folder under `folder`, relative, hidden ones included."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def store(tmp_path: Path) -> ComponentStore:
    return ComponentStore(tmp_path / "root")


# --- recipes ---------------------------------------------------------------------------------


def test_add_recipes_stores_them_and_reads_them_back(store: ComponentStore, tmp_path: Path) -> None:
    src = tmp_path / "recipes"
    write_recipe(src, recipe_doc(version="1.0.0"))
    write_recipe(src, recipe_doc(version="1.10.0"), file="newer.json")
    write_recipe(src, recipe_doc(version="1.2.0"), file="mid.yml")
    write_recipe(src, recipe_doc(name="com.example.Other"))
    (src / "README.md").write_text("not a recipe")

    added = store.add_recipes(src)

    assert sorted(r.ref for r in added) == [
        "com.example.Model=1.0.0",
        "com.example.Model=1.10.0",
        "com.example.Model=1.2.0",
        "com.example.Other=1.0.0",
    ]
    stored = sorted(p.name for p in store.recipes_dir.iterdir())
    assert stored == [
        "com.example.Model-1.0.0.yaml",
        "com.example.Model-1.10.0.json",  # kept as given: JSON
        "com.example.Model-1.2.0.yaml",
        "com.example.Other-1.0.0.yaml",
    ]
    assert (store.recipes_dir / "com.example.Model-1.10.0.json").read_bytes() == (
        src / "newer.json"
    ).read_bytes()
    assert [r.version for r in store.recipes(NAME)] == ["1.0.0", "1.2.0", "1.10.0"]
    assert store.recipe(NAME, "1.2.0").version == "1.2.0"
    available = store.available()
    assert sorted(available) == ["com.example.Model", "com.example.Other"]
    assert [r.version for r in available[NAME]] == ["1.0.0", "1.2.0", "1.10.0"]
    # adding the same recipes again is fine: same content, same version
    assert len(store.add_recipes(src)) == 4
    with pytest.raises(RecipeError, match=r"no recipe for com.example.Model=9.0.0") as caught:
        store.recipe(NAME, "9.0.0")
    assert "1.0.0, 1.2.0, 1.10.0" in str(caught.value)


def test_one_bad_recipe_adds_nothing(store: ComponentStore, tmp_path: Path) -> None:
    src = tmp_path / "recipes"
    write_recipe(src, recipe_doc(version="1.0.0"))
    bad = recipe_doc(name="com.example.Bad")
    bad["Manifests"][0]["Lifecycle"] = {"Runn": "echo typo"}
    bad_file = write_recipe(src, bad)

    with pytest.raises(RecipeError) as caught:
        store.add_recipes(src)

    assert caught.value.path == "Manifests[0].Lifecycle.Runn"
    assert str(bad_file) in str(caught.value)
    assert "did you mean Run?" in str(caught.value)
    assert entries(store.recipes_dir) == []


def test_a_version_is_immutable(store: ComponentStore, tmp_path: Path) -> None:
    first = tmp_path / "first"
    write_recipe(first, recipe_doc())
    store.add_recipes(first)
    before = (store.recipes_dir / f"{NAME}-1.0.0.yaml").read_bytes()

    changed = recipe_doc()
    changed["Manifests"][0]["Lifecycle"] = {"Run": "echo changed"}
    second = tmp_path / "second"
    write_recipe(second, changed)
    write_recipe(second, recipe_doc(name="com.example.Fine"))  # valid, but must not be added
    with pytest.raises(RecipeError, match="immutable") as caught:
        store.add_recipes(second)

    assert caught.value.path == "ComponentVersion"
    assert caught.value.hint is not None and "1.0.1" in caught.value.hint
    assert (store.recipes_dir / f"{NAME}-1.0.0.yaml").read_bytes() == before
    assert store.recipes("com.example.Fine") == []

    # two files of one folder giving the same version differently: refused too
    third = tmp_path / "third"
    write_recipe(third, recipe_doc(name="com.example.Twice"), file="a.yaml")
    twice = recipe_doc(name="com.example.Twice")
    twice["Manifests"][0]["Lifecycle"] = {"Run": "echo other"}
    write_recipe(third, twice, file="b.yaml")
    with pytest.raises(RecipeError, match="immutable"):
        store.add_recipes(third)
    assert store.recipes("com.example.Twice") == []


def test_a_name_that_would_escape_the_store_is_refused(
    store: ComponentStore, tmp_path: Path
) -> None:
    src = tmp_path / "recipes"
    write_recipe(src, recipe_doc(name=".."), file="dots.yaml")
    with pytest.raises(RecipeError, match="invalid component name") as caught:
        store.add_recipes(src)
    assert caught.value.path == "ComponentName"
    assert entries(store.recipes_dir) == []


def test_recipes_whose_file_names_clash_do_not_overwrite_each_other(
    store: ComponentStore, tmp_path: Path
) -> None:
    write_recipe(tmp_path / "one", recipe_doc(name="a", version="1.0.0-b-2.0.0"))
    store.add_recipes(tmp_path / "one")
    write_recipe(tmp_path / "two", recipe_doc(name="a-1.0.0-b", version="2.0.0"), "x.yaml")
    with pytest.raises(RecipeError, match=r"holds a=1\.0\.0-b-2\.0\.0"):
        store.add_recipes(tmp_path / "two")
    assert [r.ref for r in store.available()["a"]] == ["a=1.0.0-b-2.0.0"]


def test_a_missing_or_empty_recipe_folder_is_a_clear_error(
    store: ComponentStore, tmp_path: Path
) -> None:
    with pytest.raises(RecipeError, match="no recipe folder"):
        store.add_recipes(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match=r"no recipe files \(\*.yaml"):
        store.add_recipes(tmp_path / "empty")


# --- fetching files --------------------------------------------------------------------------


def test_fetch_from_an_artifact_dir_for_any_scheme(store: ComponentStore, tmp_path: Path) -> None:
    data = b"weights" * 1000
    artifacts = tmp_path / "artifacts"
    source = artifact_file(artifacts, "model.bin", data)
    doc = recipe_doc(
        artifacts=[
            {"URI": "s3://bucket/models/model.bin", "Digest": digest_of(data, tmp_path)},
            {"URI": "greengrass:notes.txt"},
        ]
    )
    artifact_file(artifacts, "notes.txt", b"notes")
    comp = component(doc)

    paths = store.fetch_artifacts(comp, artifact_dirs=[tmp_path / "elsewhere", artifacts])

    target = store.root / "packages" / "artifacts" / NAME / "1.0.0"
    assert paths.artifacts == str(target)
    assert paths.decompressed == str(store.root / "packages/artifacts-unarchived" / NAME / "1.0.0")
    assert paths.work == str(store.root / "work" / NAME)
    assert (target / "model.bin").read_bytes() == data
    assert (target / "notes.txt").read_bytes() == b"notes"
    assert entries(target) == ["model.bin", "notes.txt"]  # no temporary file left

    # already fetched and verified: no work, even without the source
    inode = (target / "model.bin").stat().st_ino
    source.unlink()
    store.fetch_artifacts(comp, artifact_dirs=[artifacts])
    assert (target / "model.bin").stat().st_ino == inode


def test_fetch_from_a_file_uri(store: ComponentStore, tmp_path: Path) -> None:
    source = tmp_path / "some where" / "app.py"
    source.parent.mkdir()
    source.write_text("print('hi')\n")
    uri = source.as_uri()  # file:///.../some%20where/app.py
    comp = component(recipe_doc(artifacts=[{"URI": uri}]))

    paths = store.fetch_artifacts(comp, artifact_dirs=[])

    assert (Path(paths.artifacts) / "app.py").read_text() == "print('hi')\n"


def test_a_changed_artifact_is_fetched_again(store: ComponentStore, tmp_path: Path) -> None:
    data = b"good bytes"
    artifacts = tmp_path / "artifacts"
    artifact_file(artifacts, "model.bin", data)
    comp = component(
        recipe_doc(artifacts=[{"URI": "s3://b/model.bin", "Digest": digest_of(data, tmp_path)}])
    )
    paths = store.fetch_artifacts(comp, artifact_dirs=[artifacts])
    stored = Path(paths.artifacts) / "model.bin"
    stored.chmod(0o600)
    stored.write_bytes(b"corrupted on the device")

    store.fetch_artifacts(comp, artifact_dirs=[artifacts])

    assert stored.read_bytes() == data


def test_a_digest_mismatch_is_refused_and_leaves_nothing(
    store: ComponentStore, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    artifact_file(artifacts, "model.bin", b"tampered")
    expected = digest_of(b"original", tmp_path)
    comp = component(recipe_doc(artifacts=[{"URI": "s3://b/model.bin", "Digest": expected}]))

    with pytest.raises(ArtifactError) as caught:
        store.fetch_artifacts(comp, artifact_dirs=[artifacts])

    message = str(caught.value)
    assert caught.value.path == "Manifests[0].Artifacts[0].Digest"
    assert expected in message
    assert digest_of(b"tampered", tmp_path) in message
    assert entries(store.artifacts_dir / NAME / "1.0.0") == []


def test_s3_without_a_local_copy_names_the_field_and_the_folders(
    store: ComponentStore, tmp_path: Path
) -> None:
    comp = component(recipe_doc(artifacts=[{"URI": "s3://bucket/key/model.zip"}]))
    artifacts = tmp_path / "artifacts"

    with pytest.raises(ArtifactError) as caught:
        store.fetch_artifacts(comp, artifact_dirs=[artifacts])

    assert caught.value.path == "Manifests[0].Artifacts[0].URI"
    assert str(artifacts / NAME / "1.0.0") in str(caught.value)
    assert "s3:" in str(caught.value.hint)


def test_a_missing_file_uri_is_named(store: ComponentStore, tmp_path: Path) -> None:
    missing = tmp_path / "missing.py"
    comp = component(recipe_doc(artifacts=[{"URI": missing.as_uri()}]))
    with pytest.raises(ArtifactError, match="not found") as caught:
        store.fetch_artifacts(comp)
    assert caught.value.path == "Manifests[0].Artifacts[0].URI"
    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize(
    ("permission", "mode"),
    [
        (None, 0o400),  # Greengrass's default: Read OWNER, Execute NONE
        ({"Read": "ALL", "Execute": "OWNER"}, 0o544),
        ({"Read": "ALL", "Execute": "ALL"}, 0o555),
        ({"Read": "OWNER", "Execute": "OWNER"}, 0o500),
        ({"Read": "NONE", "Execute": "NONE"}, 0o400),  # the agent itself can always read
    ],
)
def test_permission_becomes_the_file_mode(
    store: ComponentStore, tmp_path: Path, permission: dict[str, str] | None, mode: int
) -> None:
    artifacts = tmp_path / "artifacts"
    artifact_file(artifacts, "run.sh", b"#!/bin/sh\necho hi\n")
    artifact: dict[str, Any] = {"URI": "s3://b/run.sh"}
    if permission:
        artifact["Permission"] = permission
    paths = store.fetch_artifacts(
        component(recipe_doc(artifacts=[artifact])), artifact_dirs=[artifacts]
    )
    assert stat.S_IMODE((Path(paths.artifacts) / "run.sh").stat().st_mode) == mode


# --- https ------------------------------------------------------------------------------------


@dataclass
class HttpsServer:
    base: str
    ca_file: Path
    files: dict[str, bytes]
    release: threading.Event  # lets the /slow handler finish

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test server's certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    files: dict[str, bytes] = {}
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow/model.bin":  # 2 MiB of a promised 10, then stalls
                self.send_response(200)
                self.send_header("Content-Length", str(10 << 20))
                self.end_headers()
                self.wfile.write(b"x" * (2 << 20))
                self.wfile.flush()
                release.wait(60)
                return
            if self.path == "/short/model.bin":  # promises 1000 bytes, sends 100, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"z" * 100)
                self.close_connection = True
                return
            if self.path == "/redirect/model.bin":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/model.bin")
                self.end_headers()
                return
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsServer(f"https://127.0.0.1:{server.server_address[1]}", cert, files, release)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_fetch_over_https(https_server: HttpsServer, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    https_server.files["/v1/model.bin"] = data
    comp = component(
        recipe_doc(
            artifacts=[
                {"URI": f"{https_server.base}/v1/model.bin", "Digest": digest_of(data, tmp_path)}
            ]
        )
    )
    store = ComponentStore(tmp_path / "root", ssl_context=https_server.context())

    paths = store.fetch_artifacts(comp)

    assert (Path(paths.artifacts) / "model.bin").read_bytes() == data


def test_https_errors_are_named_and_leave_nothing(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    https_server.files["/big/model.bin"] = b"y" * 5000
    store = ComponentStore(
        tmp_path / "root", ssl_context=https_server.context(), max_download_bytes=4096
    )
    cases = {
        "/big/model.bin": "larger than the 4096 bytes",
        "/nothing/model.bin": "HTTP 404",
        "/short/model.bin": "ended early: 900 bytes missing",
        "/redirect/model.bin": "refused a redirect from https to http://",
    }
    for path, expected in cases.items():
        comp = component(recipe_doc(artifacts=[{"URI": f"{https_server.base}{path}"}]))
        with pytest.raises(ArtifactError, match=expected) as caught:
            store.fetch_artifacts(comp)
        assert caught.value.path == "Manifests[0].Artifacts[0].URI"
        assert entries(store.artifacts_dir / NAME / "1.0.0") == []
    # a certificate the device does not trust is refused
    untrusting = ComponentStore(tmp_path / "other")
    https_server.files["/ok/model.bin"] = b"ok"
    comp = component(recipe_doc(artifacts=[{"URI": f"{https_server.base}/ok/model.bin"}]))
    with pytest.raises(ArtifactError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.fetch_artifacts(comp)


def test_kill_9_mid_download_leaves_a_temporary_file_that_cleanup_removes(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    url = f"{https_server.base}/slow/model.bin"
    script = textwrap.dedent(
        f"""
        import ssl, yaml
        from modelyard.edge.agent.store import ComponentStore
        from modelyard.edge.agent.recipe import parse_recipe
        from modelyard.edge.agent.platform import current_platform, select_manifest
        doc = {json.dumps(recipe_doc(artifacts=[{"URI": url}]))}
        comp = select_manifest(parse_recipe(yaml.safe_dump(doc)), current_platform())
        context = ssl.create_default_context(cafile={str(https_server.ca_file)!r})
        ComponentStore({str(root)!r}, ssl_context=context).fetch_artifacts(comp)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    target = root / "packages" / "artifacts" / NAME / "1.0.0"
    try:

        def partial() -> bool:
            tmp = list(target.glob(".tmp-*")) if target.exists() else []
            return bool(tmp) and tmp[0].stat().st_size >= 1 << 20

        wait_for(partial, "the download to be half-written")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    left = [p.name for p in target.iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-")
    assert not (target / "model.bin").exists()  # the old state: never a partial model.bin
    # a temporary unpack folder and a half-removed version, as other kills would leave them
    (root / "packages/artifacts-unarchived/x/1.0.0/.tmp-abc-model").mkdir(parents=True)
    (root / "packages/artifacts/x/.tmp-def-1.0.0").mkdir(parents=True)
    (root / "packages/artifacts/x/1.0.0").mkdir(parents=True)

    removed = ComponentStore(root).cleanup_temporary()

    assert len(removed) == 3
    assert entries(target) == []
    assert entries(root / "packages/artifacts/x") == ["1.0.0"]
    assert entries(root / "packages/artifacts-unarchived/x/1.0.0") == []


# --- ZIP ---------------------------------------------------------------------------------------


def make_zip(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """A ZIP of (name, data, unix mode including the file type) members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def test_zip_artifact_is_unpacked_keeping_execute_bits(
    store: ComponentStore, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    archive = make_zip(
        tmp_path / "app.zip",
        [
            ("bin/", b"", stat.S_IFDIR | 0o755),
            ("bin/run.sh", b"#!/bin/sh\necho hi\n", stat.S_IFREG | 0o755),
            ("data/model.txt", b"weights", stat.S_IFREG | 0o644),
        ],
    )
    artifact_file(artifacts, "app.zip", archive.read_bytes())
    comp = component(
        recipe_doc(
            artifacts=[
                {
                    "URI": "s3://b/app.zip",
                    "Unarchive": "ZIP",
                    "Permission": {"Read": "ALL", "Execute": "NONE"},
                }
            ]
        )
    )

    paths = store.fetch_artifacts(comp, artifact_dirs=[artifacts])

    unpacked = Path(paths.decompressed) / "app"
    assert entries(unpacked) == ["bin", "bin/run.sh", "data", "data/model.txt"]
    assert stat.S_IMODE((unpacked / "bin/run.sh").stat().st_mode) == 0o555
    assert stat.S_IMODE((unpacked / "data/model.txt").stat().st_mode) == 0o444
    assert (unpacked / "data/model.txt").read_bytes() == b"weights"
    ran = subprocess.run([unpacked / "bin/run.sh"], capture_output=True, text=True, timeout=10)
    assert ran.stdout == "hi\n"
    assert entries(Path(paths.decompressed)) == ["app", *(f"app/{e}" for e in entries(unpacked))]


GOOD = ("ok.txt", b"fine", stat.S_IFREG | 0o644)  # comes first: must not be written either


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the clash case, made on purpose
@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("../evil.sh", b"pwned", stat.S_IFREG | 0o755), "leaves the destination"),
        (("a/../../evil.sh", b"pwned", stat.S_IFREG | 0o644), "leaves the destination"),
        (("/tmp/evil.sh", b"pwned", stat.S_IFREG | 0o644), "absolute path"),
        (("link", b"/etc/passwd", stat.S_IFLNK | 0o777), "symbolic link"),
        (("inner/link", b"../ok.txt", stat.S_IFLNK | 0o777), "symbolic link"),
        (("dev", b"", stat.S_IFCHR | 0o644), "device or special file"),
        (("fifo", b"", stat.S_IFIFO | 0o644), "device or special file"),
        (("big.bin", b"\0" * (3 << 20), stat.S_IFREG | 0o644), "compression ratio"),
        (("ok.txt", b"again", stat.S_IFREG | 0o644), "clashes"),
    ],
)
def test_unsafe_zip_members_are_refused_before_anything_is_written(
    tmp_path: Path, member: tuple[str, bytes, int], why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_zip(tmp_path / "bad.zip", [GOOD, member])
    out = tmp_path / "out"
    out.mkdir()
    extracted: list[str] = []  # not even the good member may be extracted, then rolled back
    real_extract = archives._extract

    def spy(archive_: zipfile.ZipFile, member_: Any, *args: Any) -> None:
        extracted.append(member_.info.filename)
        real_extract(archive_, member_, *args)

    monkeypatch.setattr(archives, "_extract", spy)

    with pytest.raises(ArtifactError, match=why) as caught:
        safe_unzip(archive, out / "dest", field="Manifests[0].Artifacts[0].Unarchive")

    assert str(archive) in str(caught.value)
    assert repr(member[0]) in str(caught.value)
    assert caught.value.path == "Manifests[0].Artifacts[0].Unarchive"
    assert extracted == []
    assert entries(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "out"]


def test_an_oversized_zip_is_refused(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "big.zip",
        [GOOD, ("a.bin", os.urandom(3000), stat.S_IFREG | 0o644)],
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArtifactError, match="over the 2048 bytes allowed") as caught:
        safe_unzip(archive, out / "dest", max_total_bytes=2048)
    assert "'a.bin'" in str(caught.value)
    assert entries(out) == []


def test_an_unsafe_zip_artifact_is_kept_from_the_store(
    store: ComponentStore, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    archive = make_zip(tmp_path / "app.zip", [GOOD, ("../../evil", b"x", stat.S_IFREG | 0o644)])
    artifact_file(artifacts, "app.zip", archive.read_bytes())
    comp = component(recipe_doc(artifacts=[{"URI": "s3://b/app.zip", "Unarchive": "ZIP"}]))

    with pytest.raises(ArtifactError, match="leaves the destination") as caught:
        store.fetch_artifacts(comp, artifact_dirs=[artifacts])

    assert caught.value.path == "Manifests[0].Artifacts[0].Unarchive"
    assert entries(store.unarchived_dir) == []
    assert not (store.root / "packages" / "evil").exists()


def test_a_new_unpack_replaces_the_old_folder_whole(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "app"
    safe_unzip(make_zip(tmp_path / "v1.zip", [("old.txt", b"1", 0o100644)]), dest)
    safe_unzip(make_zip(tmp_path / "v2.zip", [("new.txt", b"2", 0o100644)]), dest)
    assert entries(tmp_path / "out") == ["app", "app/new.txt"]
    with pytest.raises(ArtifactError, match="not a valid ZIP"):
        safe_unzip(_not_a_zip(tmp_path), dest)
    assert entries(tmp_path / "out") == ["app", "app/new.txt"]


def _not_a_zip(tmp_path: Path) -> Path:
    path = tmp_path / "fake.zip"
    path.write_bytes(b"this is not a zip file")
    return path


# --- docker ------------------------------------------------------------------------------------


DOCKER_RECIPE = recipe_doc(artifacts=[{"URI": "docker:ghcr.io/example/serve:2.0.0"}])


def fake_docker(folder: Path, *, inspect_exit: int, pull_exit: int = 0) -> Path:
    """A `docker` that records its arguments and answers as told."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    script = folder / "docker"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "$*" >> {log}
            case "$1" in
              image) exit {inspect_exit} ;;
              pull) [ {pull_exit} -eq 0 ] || echo "manifest unknown" >&2; exit {pull_exit} ;;
            esac
            exit 99
            """
        )
    )
    script.chmod(0o755)
    return log


def test_docker_image_is_pulled_when_inspect_does_not_find_it(
    store: ComponentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_docker(tmp_path / "bin", inspect_exit=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    store.fetch_artifacts(component(DOCKER_RECIPE))

    assert log.read_text().splitlines() == [
        "image inspect ghcr.io/example/serve:2.0.0",
        "pull ghcr.io/example/serve:2.0.0",
    ]


def test_docker_image_already_present_is_not_pulled(
    store: ComponentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_docker(tmp_path / "bin", inspect_exit=0)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    store.fetch_artifacts(component(DOCKER_RECIPE))
    assert log.read_text().splitlines() == ["image inspect ghcr.io/example/serve:2.0.0"]


def test_a_failed_docker_pull_is_named(
    store: ComponentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker(tmp_path / "bin", inspect_exit=1, pull_exit=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ArtifactError, match=r"docker pull .* failed .*manifest unknown") as caught:
        store.fetch_artifacts(component(DOCKER_RECIPE))
    assert caught.value.path == "Manifests[0].Artifacts[0].URI"


def test_docker_artifacts_without_docker_are_refused(
    store: ComponentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(RecipeError, match="needs Docker") as caught:
        store.fetch_artifacts(component(DOCKER_RECIPE))
    assert caught.value.path == "Manifests[0].Artifacts[0].URI"


# --- removal, paths, imports -------------------------------------------------------------------


def test_remove_unused_keeps_only_what_is_asked(store: ComponentStore, tmp_path: Path) -> None:
    src, artifacts = tmp_path / "recipes", tmp_path / "artifacts"
    for name, version in [(NAME, "1.0.0"), (NAME, "2.0.0"), ("com.example.Other", "1.0.0")]:
        archive = make_zip(tmp_path / "a.zip", [("f.txt", version.encode(), 0o100644)])
        folder = artifacts / name / version
        folder.mkdir(parents=True)
        shutil.copy(archive, folder / "a.zip")
        write_recipe(
            src,
            recipe_doc(name, version, [{"URI": "s3://b/a.zip", "Unarchive": "ZIP"}]),
        )
    recipes: list[Recipe] = store.add_recipes(src)
    for recipe in recipes:
        store.fetch_artifacts(
            select_manifest(recipe, current_platform()), artifact_dirs=[artifacts]
        )
    store.work_dir(NAME)

    removed = store.remove_unused({(NAME, "2.0.0"), ("com.example.Other", "1.0.0")})

    assert removed == [f"{NAME}=1.0.0"]
    assert [r.ref for r in store.recipes(NAME)] == [f"{NAME}=2.0.0"]
    assert sorted(p.name for p in (store.artifacts_dir / NAME).iterdir()) == ["2.0.0"]
    assert sorted(p.name for p in (store.unarchived_dir / NAME).iterdir()) == ["2.0.0"]
    assert (store.unarchived_dir / NAME / "2.0.0/a/f.txt").read_text() == "2.0.0"
    assert store.recipes("com.example.Other") != []
    assert (store.root / "work" / NAME).is_dir()  # a component's data outlives its versions

    assert store.remove_unused(set()) == [f"{NAME}=2.0.0", "com.example.Other=1.0.0"]
    assert store.available() == {}
    assert entries(store.artifacts_dir) == []
    assert entries(store.unarchived_dir) == []


def test_paths_and_work_dir(store: ComponentStore) -> None:
    comp = component(recipe_doc(version="3.1.4"))
    paths = store.paths(comp)
    assert paths.artifacts.endswith(f"packages/artifacts/{NAME}/3.1.4")
    assert paths.decompressed.endswith(f"packages/artifacts-unarchived/{NAME}/3.1.4")
    work = store.work_dir(NAME)
    assert work.is_dir() and str(work) == paths.work
    with pytest.raises(RecipeError, match="folder name"):
        store.work_dir("..")


def test_the_store_imports_no_other_part_of_modelyard() -> None:
    code = (
        "import sys, modelyard.edge.agent.store, modelyard.edge.agent.archives\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('modelyard')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    modules = loaded.stdout.split()
    assert "modelyard.edge.agent.store" in modules
    allowed = {"modelyard", "modelyard.edge", "modelyard.edge.agent"}
    stray = [m for m in modules if m not in allowed and not m.startswith("modelyard.edge.agent.")]
    assert stray == []
