"""Manifests of data sources: determinism, filters, streaming, the file-hash cache, S3 sources,
AWS manifests, and materializing a version with every file checked."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import ArtifactError, ConfigError
from modelyard.pipeline.model import DataSource
from modelyard.store import manifests
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.db import Database
from modelyard.store.manifests import (
    MANIFEST_FORMAT,
    build_manifest,
    materialize,
    read_manifest,
    store_manifest,
    take_snapshot,
)


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def source(url: str = "data", **options: Any) -> DataSource:
    return DataSource(name="raw", url=url, **options)


def digest_of(root: Path, **options: Any) -> str:
    return build_manifest(source(**options), root).manifest.digest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / "data", {"a.csv": "1,2\n", "sub/b.csv": "3,4\n", "notes.txt": "hello"})
    return root


# -- the manifest --------------------------------------------------------------------------------


def test_the_manifest_is_canonical_json_sorted_by_path(project: Path):
    built = build_manifest(source(), project)
    document = json.loads(built.manifest.to_bytes())
    assert document == {
        "format": MANIFEST_FORMAT,
        "source": "raw",
        "url": "data",
        "files": [
            {"path": "a.csv", "size": 4, "sha256": hashlib.sha256(b"1,2\n").hexdigest()},
            {"path": "notes.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()},
            {"path": "sub/b.csv", "size": 4, "sha256": hashlib.sha256(b"3,4\n").hexdigest()},
        ],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert built.manifest.digest == "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_same_files_give_the_same_digest_anywhere(tmp_path: Path, project: Path):
    copy = write(
        tmp_path / "elsewhere",
        {"data/sub/b.csv": "3,4\n", "data/notes.txt": "hello", "data/a.csv": "1,2\n"},
    )
    assert digest_of(copy) == digest_of(project)


@pytest.mark.parametrize(
    "change",
    ["content", "same-size content", "rename", "add", "remove", "move to a folder"],
)
def test_any_change_of_the_files_gives_a_new_digest(project: Path, change: str):
    before = digest_of(project)
    data = project / "data"
    if change == "content":
        (data / "a.csv").write_text("1,2,3\n")
    elif change == "same-size content":
        (data / "a.csv").write_text("9,9\n")
    elif change == "rename":
        (data / "a.csv").rename(data / "c.csv")
    elif change == "add":
        (data / "new.csv").write_text("")
    elif change == "remove":
        (data / "notes.txt").unlink()
    else:
        (data / "other").mkdir()
        (data / "a.csv").rename(data / "other" / "a.csv")
    assert digest_of(project) != before


def test_touching_files_keeps_the_digest(project: Path):
    before = digest_of(project)
    for path in (project / "data").rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    (project / "data" / "a.csv").chmod(0o600)
    assert digest_of(project) == before


def test_include_and_exclude(project: Path):
    built = build_manifest(source(include=("**/*.csv",), exclude=("sub/**",)), project)
    assert [f.path for f in built.manifest.files] == ["a.csv"]
    top = build_manifest(source(include=("*.csv", "*.txt")), project)
    assert [f.path for f in top.manifest.files] == ["a.csv", "notes.txt"]


def test_date_prefix_keeps_dated_files_and_records_their_date(tmp_path: Path):
    root = write(
        tmp_path,
        {
            "data/2024/05/01/a.csv": "a",
            "data/2024/05/02/b.csv": "b",
            "data/2024/05/02/skip.tmp": "x",
            "data/2024/99/01/c.csv": "c",
            "data/latest.csv": "l",
        },
    )
    built = build_manifest(source(date_prefix="YYYY/MM/DD/", include=("*.csv",)), root)
    entries = [f.to_json() for f in built.manifest.files]
    assert [(e["path"], e["date"]) for e in entries] == [
        ("2024/05/01/a.csv", "2024-05-01"),
        ("2024/05/02/b.csv", "2024-05-02"),
    ]


def test_the_state_folder_is_never_data(tmp_path: Path):
    root = write(tmp_path, {"a.csv": "a", ".modelyard/modelyard.db": "db", "x/.modelyard": "f"})
    built = build_manifest(source(url="."), root)
    assert [f.path for f in built.manifest.files] == ["a.csv", "x/.modelyard"]


def test_a_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ArtifactError) as info:
        build_manifest(source(url="nope"), tmp_path)
    assert "data source 'raw'" in info.value.message and "does not exist" in info.value.message
    assert "url" in (info.value.hint or "")


def test_local_sources_take_no_storage_options(project: Path):
    with pytest.raises(ConfigError, match="storage_options"):
        build_manifest(source(storage_options={"anon": True}), project)


def test_big_files_are_hashed_as_streams(tmp_path: Path):
    size = 12 << 20
    block = os.urandom(1 << 20)
    big = tmp_path / "data" / "big.bin"
    big.parent.mkdir()
    with open(big, "wb") as out:
        for _ in range(size >> 20):
            out.write(block)
    tracemalloc.start()
    try:
        built = build_manifest(source(), tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert built.manifest.files[0].size == size
    assert built.manifest.files[0].sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert peak < 4 << 20, f"hashing a {size >> 20} MiB file peaked at {peak >> 20} MiB"


# -- snapshots and the file-hash cache -----------------------------------------------------------


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Database, ArtifactStore]]:
    database = Database(f"sqlite:///{tmp_path / 'state' / 'm.db'}")
    yield database, ArtifactStore.open(tmp_path / "state" / "artifacts")
    database.dispose()


def test_a_snapshot_stores_the_manifest_and_records_the_version_once(
    project: Path, stores: tuple[Database, ArtifactStore]
):
    database, store = stores
    first = take_snapshot(database, store, "proj", project, source())
    assert first.new
    assert first.version.digest == first.manifest.digest
    assert (first.version.file_count, first.version.total_bytes) == (3, 13)
    stored, ref = read_manifest(store, first.version.digest)
    assert stored == first.manifest
    assert ref.kind == "value" and ref.digest == first.version.digest
    again = take_snapshot(database, store, "proj", project, source())
    assert not again.new and again.version.id == first.version.id
    # the same files in another project are that project's own version
    other = take_snapshot(database, store, "other", project, source())
    assert other.new and other.version.digest == first.version.digest


def test_unchanged_files_are_not_read_again(
    project: Path, stores: tuple[Database, ArtifactStore], monkeypatch: pytest.MonkeyPatch
):
    database, store = stores
    # files written by this test are "racy" (changed within RACY_SECONDS): trust them at once
    monkeypatch.setattr(manifests, "RACY_SECONDS", 0.0)
    first = take_snapshot(database, store, "proj", project, source())
    assert first.hashed == 3
    second = take_snapshot(database, store, "proj", project, source())
    assert second.hashed == 0 and second.version.digest == first.version.digest
    with open(project / "data" / "a.csv", "a") as f:
        f.write("5,6\n")
    third = take_snapshot(database, store, "proj", project, source())
    assert third.hashed == 1 and third.new
    assert third.manifest.files[0].sha256 == hashlib.sha256(b"1,2\n5,6\n").hexdigest()


def test_recently_changed_files_are_always_read(
    project: Path, stores: tuple[Database, ArtifactStore]
):
    database, store = stores
    take_snapshot(database, store, "proj", project, source())
    # written just now: a rewrite within the same mtime tick could keep the fingerprint
    assert take_snapshot(database, store, "proj", project, source()).hashed == 3


# -- materializing -------------------------------------------------------------------------------


def test_materialize_copies_the_files_at_their_paths(tmp_path: Path, project: Path):
    built = build_manifest(source(include=("**/*.csv",)), project)
    dest = materialize(built.manifest, source(), project, tmp_path / "in", built.manifest.digest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "a.csv",
        "sub/b.csv",
    ]
    assert (dest / "sub" / "b.csv").read_text() == "3,4\n"


@pytest.mark.parametrize("change", ["changed", "missing"])
def test_materialize_refuses_a_file_that_changed_since_the_snapshot(
    tmp_path: Path, project: Path, change: str
):
    built = build_manifest(source(), project)
    target = project / "data" / "sub" / "b.csv"
    if change == "changed":
        target.write_text("3,X\n")
    else:
        target.unlink()
    dest = tmp_path / "in"
    with pytest.raises(ArtifactError) as info:
        materialize(built.manifest, source(), project, dest, built.manifest.digest)
    assert "'sub/b.csv'" in info.value.message
    assert ("changed since" if change == "changed" else "missing") in info.value.message
    assert info.value.where == str(target)
    assert "new run" in (info.value.hint or "")
    assert not dest.exists() and list(tmp_path.glob(".in.*")) == []  # nothing partial left


# -- S3 (moto) -----------------------------------------------------------------------------------


@pytest.fixture
def s3_source(s3_bucket: str, s3_options: dict[str, Any]) -> tuple[DataSource, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    prefix = f"{s3_bucket}/data-{uuid.uuid4().hex}"
    fs.pipe({f"{prefix}/a.csv": b"1,2\n", f"{prefix}/sub/b.csv": b"3,4\n"})
    fs.pipe({f"{prefix}/notes.txt": b"hello"})
    return DataSource("raw", f"s3://{prefix}", storage_options=s3_options), fs


@pytest.mark.s3
def test_an_s3_source(
    tmp_path: Path,
    project: Path,
    s3_source: tuple[DataSource, Any],
    stores: tuple[Database, ArtifactStore],
    monkeypatch: pytest.MonkeyPatch,
):
    remote, fs = s3_source
    database, store = stores
    local = build_manifest(source(), project).manifest
    opened: list[str] = []
    original = manifests.Location.open

    def counting_open(self: manifests.Location, path: str) -> Any:
        opened.append(path)
        return original(self, path)

    monkeypatch.setattr(manifests.Location, "open", counting_open)
    first = take_snapshot(database, store, "proj", project, remote)
    # the same files as the local folder: the same entries (the url differs)
    assert first.manifest.files == local.files
    assert sorted(opened) == ["a.csv", "notes.txt", "sub/b.csv"]
    opened.clear()
    second = take_snapshot(database, store, "proj", project, remote)
    assert not second.new and opened == []  # ETags unchanged: nothing downloaded
    fs.pipe({f"{remote.url.removeprefix('s3://')}/a.csv": b"1,2,3\n"})
    third = take_snapshot(database, store, "proj", project, remote)
    assert third.new and opened == ["a.csv"]
    dest = materialize(third.manifest, remote, project, tmp_path / "in", third.version.digest)
    assert (dest / "a.csv").read_bytes() == b"1,2,3\n"
    assert (dest / "sub" / "b.csv").read_bytes() == b"3,4\n"


@pytest.mark.s3
def test_an_aws_manifest_names_exactly_the_objects_of_a_version(
    project: Path, s3_source: tuple[DataSource, Any], stores: tuple[Database, ArtifactStore]
):
    remote, _ = s3_source
    database, store = stores
    bucket, _, prefix = remote.url.removeprefix("s3://").partition("/")
    objects = [(bucket, f"{prefix}/sub/b.csv"), (bucket, f"{prefix}/a.csv")]
    taken = take_snapshot(database, store, "proj", project, remote, objects)
    assert [f.path for f in taken.manifest.files] == ["a.csv", "sub/b.csv"]
    with pytest.raises(ConfigError, match="not below data source 'raw'"):
        build_manifest(remote, project, objects=[(bucket, "elsewhere/a.csv")])
    with pytest.raises(ArtifactError, match=r"'gone\.csv' is listed but is not an object"):
        build_manifest(remote, project, objects=[(bucket, f"{prefix}/gone.csv")])


def test_aws_manifest_format_errors():
    assert manifests.aws_manifest_keys({"data": [{"bucketName": "b", "objectKey": "k"}]}) == [
        ("b", "k")
    ]
    with pytest.raises(ConfigError, match="'data' list"):
        manifests.aws_manifest_keys({"files": []})
    with pytest.raises(ConfigError, match="entry 1"):
        manifests.aws_manifest_keys({"data": [{"bucketName": "b", "objectKey": "k"}, {}]})


def test_store_manifest_digest_is_the_version(tmp_path: Path, project: Path):
    store = ArtifactStore.open(tmp_path / "artifacts")
    built = build_manifest(source(), project)
    assert store_manifest(store, built.manifest).digest == built.manifest.digest
