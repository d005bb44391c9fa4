"""Contract tests for the artifact store, run against every object store backend.

The same tests run on the local backend (tmp_path), fsspec's memory:// filesystem, and S3 served
by moto in a background thread (marked `s3`, skipped when moto/s3fs are not installed).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import ArtifactError, ConfigError, MissingDependency
from modelyard.store.artifacts import (
    TREE_FORMAT,
    ArtifactRef,
    ArtifactStore,
    JSONValue,
    blob_key,
    canonical_json,
    digest_bytes,
    digest_file,
)
from modelyard.store.objectstore import (
    FsspecObjectStore,
    LocalObjectStore,
    ObjectStore,
    open_object_store,
)

MiB = 1 << 20


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def memory_fs() -> Iterator[None]:
    """Start and end each test with an empty memory:// filesystem (it is process-global)."""
    from fsspec.implementations.memory import MemoryFileSystem

    def clear() -> None:
        MemoryFileSystem.store.clear()
        MemoryFileSystem.pseudo_dirs[:] = [""]

    clear()
    yield
    clear()


@pytest.fixture(params=["local", "memory", "fsspec-file", pytest.param("s3", marks=pytest.mark.s3)])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    if request.param == "fsspec-file":
        # fsspec's local filesystem: the backend's write-aside-then-move path (no atomic puts).
        return FsspecObjectStore(f"file://{tmp_path / 'store'}")
    if request.param == "memory":
        request.getfixturevalue("memory_fs")
        return FsspecObjectStore(f"memory://modelyard-{uuid.uuid4().hex}")
    bucket = request.getfixturevalue("s3_bucket")
    options = request.getfixturevalue("s3_options")
    # A fresh prefix per test keeps tests independent without emptying the bucket.
    return FsspecObjectStore(f"s3://{bucket}/{uuid.uuid4().hex}", options)


@pytest.fixture
def store(objects: ObjectStore) -> ArtifactStore:
    return ArtifactStore(objects)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A scratch folder for inputs and outputs, separate from the local store's folder."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _write(path: Path, data: bytes | str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def _make_tree(root: Path) -> Path:
    _write(root / "train.csv", "a,b\n1,2\n")
    _write(root / "model" / "weights.bin", bytes(range(256)) * 10)
    _write(root / "model" / "deep" / "er" / "config.json", '{"depth": 3}')
    _write(root / "bin" / "run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    (root / "empty" / "sub").mkdir(parents=True)
    (root / "empty-top").mkdir()
    return root


def _snapshot(root: Path) -> dict[str, Any]:
    """Content, executable bit and empty folders of a local tree, for comparisons."""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                out[rel] = "<empty dir>"
        else:
            out[rel] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return out


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir()) if path.parent.exists() else []


# -- digests and refs ------------------------------------------------------------------------------


def test_digest_helpers_match_hashlib(tmp_path: Path) -> None:
    data = b"hello modelyard"
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest_bytes(data) == expected
    assert digest_file(_write(tmp_path / "f", data)) == expected
    assert digest_bytes(b"") == "sha256:" + hashlib.sha256(b"").hexdigest()


def test_digest_file_streams_in_chunks(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.bin", os.urandom(5 * MiB))
    tracemalloc.start()
    try:
        digest = digest_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == digest_bytes(path.read_bytes())
    assert peak < 3 * MiB, f"digest_file held {peak} bytes: it should read in 1 MiB chunks"


def test_blob_key_layout() -> None:
    digest = digest_bytes(b"x")
    hex_ = digest.removeprefix("sha256:")
    assert blob_key(digest) == f"blobs/sha256/{hex_[:2]}/{hex_[2:]}"
    with pytest.raises(ArtifactError, match="invalid artifact digest"):
        blob_key("md5:abc")


def test_ref_json_round_trip_and_validation() -> None:
    ref = ArtifactRef(digest_bytes(b"x"), "dir", 12)
    assert ArtifactRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert ref.to_json() == {"digest": ref.digest, "kind": "dir", "size": 12}
    with pytest.raises(ArtifactError):
        ArtifactRef.from_json({"digest": ref.digest, "kind": "folder", "size": 1})
    with pytest.raises(ArtifactError):
        ArtifactRef.from_json({"digest": "sha256:123", "kind": "file", "size": 1})
    with pytest.raises(ArtifactError):
        ArtifactRef.from_json({"digest": ref.digest, "kind": "file", "size": -1})
    with pytest.raises(ArtifactError, match="expected digest, kind and size"):
        ArtifactRef.from_json({"digest": ref.digest})


def test_canonical_json_is_stable_and_strict() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é", None]}) == '{"a":[1.5,"é",null],"b":1}'.encode()
    with pytest.raises(ArtifactError, match="cannot be stored as JSON"):
        canonical_json({"x": float("nan")})
    with pytest.raises(ArtifactError, match="cannot be stored as JSON"):
        canonical_json({"x": object()})


# -- object store contract -------------------------------------------------------------------------


def test_object_store_contract(objects: ObjectStore, work: Path) -> None:
    assert not objects.exists("a/b/c")
    with pytest.raises(FileNotFoundError):
        objects.read_bytes("a/b/c")
    with pytest.raises(FileNotFoundError):
        objects.size("a/b/c")
    with pytest.raises(FileNotFoundError):
        objects.open_read("a/b/c")

    objects.put_bytes("a/b/c", b"one")
    assert objects.exists("a/b/c")
    assert objects.read_bytes("a/b/c") == b"one"
    assert objects.size("a/b/c") == 3
    objects.put_bytes("a/b/c", b"second")  # overwrite
    with objects.open_read("a/b/c") as f:
        assert f.read() == b"second"

    objects.put_file("x/file", _write(work / "src", b"from a file"))
    objects.get_file("x/file", work / "copy")
    assert (work / "copy").read_bytes() == b"from a file"
    assert not objects.exists("x")  # a folder-like prefix is not an object

    objects.delete("a/b/c")
    assert not objects.exists("a/b/c")
    objects.delete("a/b/c")  # deleting a missing key is fine


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/", "a\\b"])
def test_object_store_rejects_escaping_keys(objects: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        objects.put_bytes(key, b"x")


def test_local_store_concurrent_writers_leave_one_whole_object(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "store")
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    barrier = threading.Barrier(len(payloads))

    def write(data: bytes) -> None:
        barrier.wait()
        objects.put_bytes("k/same", data)

    with ThreadPoolExecutor(len(payloads)) as ex:
        list(ex.map(write, payloads))
    assert objects.read_bytes("k/same") in payloads  # one complete write won, none torn
    assert os.listdir(tmp_path / "store" / "k") == ["same"]  # no temp files left


def test_local_store_failed_put_leaves_nothing(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        objects.put_file("k/v", tmp_path / "does-not-exist")
    assert not objects.exists("k/v")
    assert not (tmp_path / "store" / "k").exists() or not os.listdir(tmp_path / "store" / "k")


def test_open_object_store_dispatch(tmp_path: Path, memory_fs: None) -> None:
    local = open_object_store(tmp_path / "a")
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "a"
    plain = open_object_store(str(tmp_path / "b"))
    assert isinstance(plain, LocalObjectStore) and plain.root == tmp_path / "b"
    file_url = open_object_store(f"file://{tmp_path}/with%20space")
    assert isinstance(file_url, LocalObjectStore) and file_url.root == tmp_path / "with space"
    assert isinstance(open_object_store("memory://bucket/x"), FsspecObjectStore)
    with pytest.raises(ConfigError, match="unknown storage protocol"):
        open_object_store("nosuchproto://x")
    with pytest.raises(ConfigError, match="storage options"):
        open_object_store(tmp_path, {"key": "x"})
    with pytest.raises(ConfigError, match="unsupported file URL"):
        open_object_store("file://otherhost/x")


def test_missing_protocol_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    def no_s3fs(protocol: str) -> Any:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "get_filesystem_class", no_s3fs)
    with pytest.raises(MissingDependency) as info:
        open_object_store("s3://bucket/prefix")
    assert "s3fs" in str(info.value)
    assert "pip install 'modelyard[s3]'" in str(info.value)


def test_importing_and_local_use_do_not_import_fsspec(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from modelyard.store.artifacts import ArtifactStore\n"
        f"store = ArtifactStore.open({str(tmp_path / 'store')!r})\n"
        "ref = store.put_value({'a': 1})\n"
        "assert store.read_value(ref) == {'a': 1}\n"
        "assert 'fsspec' not in sys.modules, 'fsspec was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- artifacts: round trips ------------------------------------------------------------------------


def test_file_round_trip(store: ArtifactStore, work: Path) -> None:
    src = _write(work / "metrics.txt", "accuracy=0.93\n")
    ref = store.put_file(src)
    assert ref == ArtifactRef(digest_file(src), "file", src.stat().st_size)
    assert store.objects.exists(blob_key(ref.digest))
    assert store.verify(ref)
    assert store.read_file(ref) == b"accuracy=0.93\n"
    out = store.materialize(ref, work / "out" / "metrics.txt")
    assert out.read_bytes() == src.read_bytes()


def test_value_round_trip(store: ArtifactStore, work: Path) -> None:
    value: dict[str, JSONValue] = {
        "params": {"lr": 0.1, "depth": 3},
        "tags": ["a", "é"],
        "ok": True,
        "none": None,
    }
    ref = store.put_value(value)
    assert ref.kind == "value"
    assert store.read_value(ref) == value
    assert store.verify(ref)
    # Canonical JSON: key order does not change the digest.
    assert store.put_value({"ok": True, "none": None, "tags": ["a", "é"], **value}) == ref
    assert store.put_value({**value, "ok": False}).digest != ref.digest
    assert store.read_file(ref) == canonical_json(value)
    assert json.loads(store.materialize(ref, work / "v.json").read_text("utf-8")) == value


def test_dir_round_trip_with_nested_empty_dirs_and_executable(
    store: ArtifactStore, work: Path
) -> None:
    src = _make_tree(work / "src")
    ref = store.put_dir(src)
    assert ref.kind == "dir"
    assert ref.size == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert store.verify(ref)
    assert store.list_files(ref) == [
        "bin/run.sh",
        "model/deep/er/config.json",
        "model/weights.bin",
        "train.csv",
    ]
    out = store.materialize(ref, work / "out")
    assert _snapshot(out) == _snapshot(src)
    assert os.access(out / "bin" / "run.sh", os.X_OK)
    assert not os.access(out / "train.csv", os.X_OK)


def test_dir_manifest_is_canonical(store: ArtifactStore, work: Path) -> None:
    ref = store.put_dir(_make_tree(work / "src"))
    raw = store.objects.read_bytes(blob_key(ref.digest))
    doc = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["format"] == TREE_FORMAT
    assert doc["dirs"] == ["empty-top", "empty/sub"]
    paths = [f["path"] for f in doc["files"]]
    assert paths == sorted(paths)
    by_path = {f["path"]: f for f in doc["files"]}
    assert by_path["bin/run.sh"]["executable"] is True
    assert by_path["train.csv"] == {
        "path": "train.csv",
        "digest": digest_bytes(b"a,b\n1,2\n"),
        "size": 8,
        "executable": False,
    }
    assert [e.path for e in store.tree(ref)] == paths


def test_put_path_dispatches(store: ArtifactStore, work: Path) -> None:
    assert store.put_path(_write(work / "f", "x")).kind == "file"
    assert store.put_path(_make_tree(work / "d")).kind == "dir"


def test_empty_dir_and_empty_file(store: ArtifactStore, work: Path) -> None:
    (work / "nothing").mkdir()
    ref = store.put_dir(work / "nothing")
    assert ref.size == 0 and store.list_files(ref) == []
    assert store.materialize(ref, work / "nothing-out").is_dir()
    empty = store.put_file(_write(work / "empty.txt", b""))
    assert empty.size == 0 and store.read_file(empty) == b""


# -- artifacts: digests ----------------------------------------------------------------------------


def test_same_content_same_digest_regardless_of_metadata(store: ArtifactStore, work: Path) -> None:
    a = _make_tree(work / "a")
    b = _make_tree(work / "b")
    (b / "train.csv").chmod(0o600)  # non-executable permission changes do not count
    os.utime(b / "model" / "weights.bin", (1_000_000, 1_000_000))
    assert store.put_dir(a) == store.put_dir(b)
    assert store.put_file(a / "train.csv") == store.put_file(b / "train.csv")


def test_different_content_different_digest(store: ArtifactStore, work: Path) -> None:
    base = store.put_dir(_make_tree(work / "a")).digest

    changed = _make_tree(work / "content")
    _write(changed / "train.csv", "a,b\n1,3\n")
    renamed = _make_tree(work / "renamed")
    (renamed / "train.csv").rename(renamed / "train2.csv")
    executable = _make_tree(work / "exec")
    (executable / "train.csv").chmod(0o755)
    no_empty = _make_tree(work / "no-empty")
    (no_empty / "empty-top").rmdir()

    digests = {store.put_dir(p).digest for p in (changed, renamed, executable, no_empty)}
    assert len(digests) == 4 and base not in digests
    assert store.put_file(changed / "train.csv") != store.put_file(work / "a" / "train.csv")


def test_identical_files_in_a_dir_share_one_blob(store: ArtifactStore, work: Path) -> None:
    _write(work / "d" / "one.txt", "same")
    _write(work / "d" / "two.txt", "same")
    ref = store.put_dir(work / "d")
    entries = store.tree(ref)
    assert entries[0].digest == entries[1].digest
    assert store.read_file(ref, "two.txt") == b"same"


# -- artifacts: symlinks and special files ---------------------------------------------------------


def test_symlinks_inside_the_tree_store_their_content(store: ArtifactStore, work: Path) -> None:
    src = _make_tree(work / "src")
    (src / "latest.csv").symlink_to("train.csv")
    (src / "model-link").symlink_to(src / "model", target_is_directory=True)
    ref = store.put_dir(src)
    files = store.list_files(ref)
    assert "latest.csv" in files and "model-link/weights.bin" in files
    assert store.read_file(ref, "latest.csv") == b"a,b\n1,2\n"
    out = store.materialize(ref, work / "out")
    assert not (out / "latest.csv").is_symlink()
    assert (out / "model-link" / "deep" / "er" / "config.json").read_text() == '{"depth": 3}'

    # The same content without links gives the same digest as with links.
    plain = _make_tree(work / "plain")
    _write(plain / "latest.csv", "a,b\n1,2\n")
    _write(plain / "model-link" / "weights.bin", bytes(range(256)) * 10)
    _write(plain / "model-link" / "deep" / "er" / "config.json", '{"depth": 3}')
    assert store.put_dir(plain) == ref


def test_symlink_outside_the_tree_is_refused(store: ArtifactStore, work: Path) -> None:
    secret = _write(work / "outside.txt", "not in the artifact")
    src = _make_tree(work / "src")
    (src / "model" / "leak.txt").symlink_to(secret)
    with pytest.raises(ArtifactError) as info:
        store.put_dir(src)
    text = str(info.value)
    assert "leak.txt" in text and "outside" in text and "fix:" in text


def test_symlink_loop_and_dangling_link_are_refused(store: ArtifactStore, work: Path) -> None:
    src = _make_tree(work / "loop")
    (src / "model" / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(ArtifactError, match="loop"):
        store.put_dir(src)
    dangling = _make_tree(work / "dangling")
    (dangling / "gone").symlink_to("no-such-file")
    with pytest.raises(ArtifactError, match="points to nothing"):
        store.put_dir(dangling)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_special_files_are_refused(store: ArtifactStore, work: Path) -> None:
    src = _make_tree(work / "src")
    os.mkfifo(src / "model" / "pipe")
    with pytest.raises(ArtifactError) as info:
        store.put_dir(src)
    assert "pipe" in str(info.value) and "fix:" in str(info.value)


def test_put_file_errors(store: ArtifactStore, work: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        store.put_file(work / "missing")
    with pytest.raises(ArtifactError, match="is a folder"):
        store.put_file(work)
    with pytest.raises(ArtifactError, match="does not exist"):
        store.put_dir(work / "missing")


# -- artifacts: corruption and missing blobs -------------------------------------------------------


def test_corrupt_file_blob(store: ArtifactStore, work: Path) -> None:
    ref = store.put_file(_write(work / "f.txt", "original content"))
    store.objects.put_bytes(blob_key(ref.digest), b"tampered content")  # same size
    assert store.verify(ref) is False
    dest = work / "out" / "f.txt"
    with pytest.raises(ArtifactError, match="corrupt"):
        store.materialize(ref, dest)
    assert not dest.exists()
    assert _siblings(dest) == []  # no temp file left behind either
    with pytest.raises(ArtifactError, match="corrupt"):
        store.read_file(ref)


def test_corrupt_file_inside_dir(store: ArtifactStore, work: Path) -> None:
    ref = store.put_dir(_make_tree(work / "src"))
    [entry] = [e for e in store.tree(ref) if e.path == "model/weights.bin"]
    store.objects.put_bytes(blob_key(entry.digest), b"\0" * entry.size)
    assert store.verify(ref) is False
    dest = work / "out" / "model-dir"
    with pytest.raises(ArtifactError, match="corrupt"):
        store.materialize(ref, dest)
    assert _siblings(dest) == []
    assert store.read_file(ref, "train.csv") == b"a,b\n1,2\n"  # intact files still readable
    with pytest.raises(ArtifactError, match="corrupt"):
        store.read_file(ref, "model/weights.bin")


def test_corrupt_manifest(store: ArtifactStore, work: Path) -> None:
    ref = store.put_dir(_make_tree(work / "src"))
    store.objects.put_bytes(blob_key(ref.digest), b"{not json")
    assert store.verify(ref) is False
    with pytest.raises(ArtifactError):
        store.materialize(ref, work / "out")
    assert not (work / "out").exists()


def test_missing_blobs(store: ArtifactStore, work: Path) -> None:
    file_ref = store.put_file(_write(work / "f", "data"))
    dir_ref = store.put_dir(_make_tree(work / "src"))
    value_ref = store.put_value([1, 2, 3])
    store.objects.delete(blob_key(file_ref.digest))
    store.objects.delete(blob_key(store.tree(dir_ref)[0].digest))
    store.objects.delete(blob_key(value_ref.digest))
    for ref in (file_ref, dir_ref, value_ref):
        assert store.verify(ref) is False
        with pytest.raises(ArtifactError, match="missing"):
            store.materialize(ref, work / "out")
        assert not (work / "out").exists()
        assert not [n for n in os.listdir(work) if n.startswith(".")]  # no temp leftovers
    with pytest.raises(ArtifactError, match="missing"):
        store.read_value(value_ref)
    never_stored = ArtifactRef(digest_bytes(b"never stored"), "dir", 0)
    assert store.verify(never_stored) is False


def test_verify_rejects_a_ref_with_the_wrong_size(store: ArtifactStore, work: Path) -> None:
    file_ref = store.put_file(_write(work / "f", "data"))
    dir_ref = store.put_dir(_make_tree(work / "src"))
    for ref in (file_ref, dir_ref):
        assert store.verify(ref)
        assert not store.verify(ArtifactRef(ref.digest, ref.kind, ref.size + 1))


def test_put_repairs_a_missing_blob(store: ArtifactStore, work: Path) -> None:
    src = _write(work / "f", "data")
    ref = store.put_file(src)
    store.objects.delete(blob_key(ref.digest))
    assert store.put_file(src) == ref
    assert store.verify(ref)


# -- artifacts: reading files inside dirs ----------------------------------------------------------


def test_read_file_inside_dir(store: ArtifactStore, work: Path) -> None:
    ref = store.put_dir(_make_tree(work / "src"))
    assert store.read_file(ref, "model/deep/er/config.json") == b'{"depth": 3}'
    assert store.read_file(ref, "./train.csv") == b"a,b\n1,2\n"
    with pytest.raises(ArtifactError) as info:
        store.read_file(ref, "model/weight.bin")
    assert "model/weights.bin" in str(info.value)  # suggests what exists
    with pytest.raises(ArtifactError, match="say which file"):
        store.read_file(ref)
    file_ref = store.put_file(work / "src" / "train.csv")
    with pytest.raises(ArtifactError, match="not a folder"):
        store.read_file(file_ref, "train.csv")
    with pytest.raises(ArtifactError, match="not a dir"):
        store.list_files(file_ref)
    with pytest.raises(ArtifactError, match="not a value"):
        store.read_value(file_ref)


# -- artifacts: materialize ------------------------------------------------------------------------


def test_materialize_refuses_existing_dest_unless_overwrite(
    store: ArtifactStore, work: Path
) -> None:
    dir_ref = store.put_dir(_make_tree(work / "src"))
    file_ref = store.put_file(_write(work / "f", "new"))
    dest = _write(work / "dest" / "old.txt", "old").parent
    with pytest.raises(ArtifactError, match="already exists"):
        store.materialize(dir_ref, dest)
    assert (dest / "old.txt").read_text() == "old"
    store.materialize(dir_ref, dest, overwrite=True)
    assert _snapshot(dest) == _snapshot(work / "src")
    store.materialize(file_ref, dest, overwrite=True)  # a file replaces a folder
    assert dest.read_text() == "new"
    assert sorted(os.listdir(work)) == ["dest", "f", "src"]  # nothing left aside


def test_materialized_files_are_copies(store: ArtifactStore, work: Path) -> None:
    ref = store.put_dir(_make_tree(work / "src"))
    out = store.materialize(ref, work / "out")
    (out / "train.csv").write_text("changed in place")
    with open(out / "model" / "weights.bin", "r+b") as f:
        f.write(b"xx")
    assert store.verify(ref)
    assert store.read_file(ref, "train.csv") == b"a,b\n1,2\n"


# -- artifacts: concurrency and size ---------------------------------------------------------------


def test_concurrent_puts_of_the_same_file(store: ArtifactStore, work: Path) -> None:
    src = _write(work / "shared.bin", os.urandom(300_000))
    tree = _make_tree(work / "tree")
    barrier = threading.Barrier(6)

    def put(i: int) -> ArtifactRef:
        barrier.wait()
        return store.put_file(src) if i % 2 else store.put_dir(tree)

    with ThreadPoolExecutor(6) as ex:
        refs = list(ex.map(put, range(6)))
    assert len({r for r in refs if r.kind == "file"}) == 1
    assert len({r for r in refs if r.kind == "dir"}) == 1
    assert all(store.verify(r) for r in refs)


def test_large_file_streams(store: ArtifactStore, work: Path) -> None:
    data = os.urandom(5 * MiB + 123)
    src = _write(work / "big.bin", data)
    ref = store.put_file(src)
    assert ref.digest == digest_bytes(data) and ref.size == len(data)
    assert store.verify(ref)
    out = store.materialize(ref, work / "big-out.bin")
    assert out.read_bytes() == data


def test_local_put_and_materialize_stay_within_chunk_memory(tmp_path: Path) -> None:
    store = ArtifactStore(LocalObjectStore(tmp_path / "store"))
    src = _write(tmp_path / "big.bin", os.urandom(5 * MiB))
    tracemalloc.start()
    try:
        ref = store.put_file(src)
        store.verify(ref)
        store.materialize(ref, tmp_path / "out.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB, f"peak {peak} bytes: the store should stream in 1 MiB chunks"
