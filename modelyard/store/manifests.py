"""Manifests: the files of a data source that make one data version, and their materialization.

A manifest is canonical JSON::

    {"format": "modelyard-manifest/1", "source": NAME, "url": URL,
     "files": [{"path": "a/b.csv", "size": 12, "sha256": "<hex>"}, ...]}   (sorted by path)

with `"date"` in each file entry when the source has a `date_prefix`. It is stored in the artifact
store as a JSON value (`put_value`), so its artifact digest, the sha256 of the canonical JSON, is
the data version. Only names, sizes and content hashes are in it: a file whose mtime changes but
whose bytes do not leaves the version as it was.

Files are hashed as streams (1 MiB chunks locally, 8 MiB ranged reads remotely), never loaded
whole. What was learnt about each file (a fingerprint: size, mtime, ctime and inode locally; ETag
and size on object stores) is kept with its hash, so the next snapshot neither re-reads unchanged
local files nor downloads unchanged remote ones. fsspec is imported only for remote sources.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import sqlalchemy as sa

from modelyard.errors import ArtifactError, ConfigError
from modelyard.pipeline.model import DataSource
from modelyard.pipeline.selection import select
from modelyard.settings import STATE_DIR_NAME
from modelyard.store.artifacts import (
    ArtifactRef,
    ArtifactStore,
    canonical_json,
    check_relpath,
    hash_stream,
)
from modelyard.store.objectstore import CHUNK_SIZE, require_protocol, url_protocols

if TYPE_CHECKING:
    from modelyard.store.dataversions import DataVersionRow
    from modelyard.store.db import Database

MANIFEST_FORMAT = "modelyard-manifest/1"
# A local file changed this recently may still change within the same mtime tick without its
# fingerprint changing (git's "racy clean" problem): its hash is not remembered.
RACY_SECONDS = 2.0
_REMOTE_BLOCK_SIZE = 8 << 20


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str  # hex, without the "sha256:" prefix
    date: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.date is not None:
            entry["date"] = self.date
        return entry


@dataclass(frozen=True)
class Manifest:
    source: str
    url: str
    files: tuple[ManifestFile, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "source": self.source,
            "url": self.url,
            "files": [f.to_json() for f in self.files],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @classmethod
    def from_json(cls, data: Any, digest: str = "") -> Manifest:
        def bad(why: str) -> ArtifactError:
            return ArtifactError(
                f"{digest or 'the document'} is not a valid manifest: {why}",
                hint="a data version's digest names a modelyard-manifest/1 JSON value",
            )

        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise bad(f"expected format {MANIFEST_FORMAT!r}")
        files = data.get("files")
        if not isinstance(files, list):
            raise bad("'files' must be a list")
        entries = []
        for item in files:
            try:
                entry = ManifestFile(
                    check_relpath(item["path"]), item["size"], item["sha256"], item.get("date")
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"bad file entry {item!r}") from exc
            if not isinstance(entry.size, int) or not isinstance(entry.sha256, str):
                raise bad(f"bad file entry {item!r}")
            entries.append(entry)
        return cls(str(data.get("source")), str(data.get("url")), tuple(entries))


# -- locations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """A file found in a source: its relative path, size and fingerprint (None: not cacheable)."""

    path: str
    size: int
    fingerprint: str | None
    full: str  # local path or the filesystem's path, for reading and messages


class Location:
    """Where a data source's files are: a local folder, or a prefix in an fsspec filesystem."""

    def __init__(self, source: DataSource, project_root: Path) -> None:
        self.source = source
        self.fs: Any = None
        url = source.url
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme in ("", "file"):
            if source.storage_options:
                raise ConfigError(
                    f"data source '{source.name}': storage_options are given for a local folder",
                    hint="remove them, or use a URL such as s3://bucket/prefix",
                )
            path = Path(url[len("file://") :] if scheme == "file" else url).expanduser()
            self.root = str((project_root / path).resolve())
            self.key = self.root
        else:
            self.fs, self.root = _open_fs(source)
            self.key = url.rstrip("/")

    @property
    def is_local(self) -> bool:
        return self.fs is None

    def list(self) -> Iterator[Listed]:
        """Every file below the location, in no particular order."""
        return self._list_local() if self.fs is None else self._list_remote()

    def _list_local(self) -> Iterator[Listed]:
        root = Path(self.root)
        if not root.is_dir():
            raise ArtifactError(
                f"data source '{self.source.name}': folder {root} does not exist"
                if not root.exists()
                else f"data source '{self.source.name}': {root} is not a folder",
                hint="create the folder or fix `url` under data_sources in modelyard.yaml",
            )
        now = time.time()
        for folder, dirs, files in os.walk(root):
            # the project's own state folder changes with every run: never data
            dirs[:] = sorted(d for d in dirs if d != STATE_DIR_NAME)
            for name in files:
                full = os.path.join(folder, name)
                try:
                    st = os.stat(full)  # follows a symlink to what it points to
                except FileNotFoundError:
                    continue  # removed while listing, or a dangling link
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                recent = now - max(st.st_mtime, st.st_ctime) < RACY_SECONDS
                fingerprint = (
                    None
                    if recent
                    else f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
                )
                yield Listed(rel, st.st_size, fingerprint, full)

    def _list_remote(self) -> Iterator[Listed]:
        fs = self.fs
        fs.invalidate_cache(self.root)  # fsspec caches listings: a poll must see new files
        try:
            found = fs.find(self.root, detail=True, withdirs=False)
        except FileNotFoundError:
            found = {}
        except OSError as exc:  # no such bucket, access denied, no network...
            raise ArtifactError(
                f"data source '{self.source.name}': cannot list {self.source.url}: {exc}",
                hint="check the url, the credentials and the storage_options",
            ) from None
        prefix = self.root.rstrip("/") + "/"
        for full, info in found.items():
            if info.get("type") == "file" and full.startswith(prefix):
                yield _remote_listed(full[len(prefix) :], full, info)

    def listed(self, paths: Iterable[str]) -> Iterator[Listed]:
        """The given files (relative paths) only; a missing one is an error naming it."""
        for path in paths:
            self._require_remote()
            full = f"{self.root.rstrip('/')}/{path}"
            try:
                info = self.fs.info(full)
            except FileNotFoundError:
                info = {}
            if info.get("type") != "file":
                raise ArtifactError(
                    f"'{path}' is listed but is not an object of data source '{self.source.name}'",
                    where=self.describe(path),
                    hint="check the list of objects, or the source's url",
                )
            yield _remote_listed(path, full, info)

    def relative(self, bucket: str, key: str) -> str:
        """The path of s3://bucket/key below this location; an error if it is not below it."""
        self._require_remote()
        full = f"{bucket}/{key.lstrip('/')}"
        prefix = self.root.rstrip("/") + "/"
        if not full.startswith(prefix) or len(full) == len(prefix):
            raise ConfigError(
                f"object s3://{full} is not below data source '{self.source.name}' "
                f"({self.source.url})",
                hint="list only objects under the source's url, or change its url",
            )
        return check_relpath(full[len(prefix) :])

    def _require_remote(self) -> None:
        if self.fs is None:
            raise ConfigError(
                f"data source '{self.source.name}' is a local folder: a list of objects "
                "(such as an AWS manifest) needs a remote source such as s3://bucket/prefix",
                hint="give the source an s3:// url, or snapshot the folder without the list",
            )

    def open(self, listed_path: str) -> BinaryIO:
        """A binary stream over the file at `listed_path` (relative to the location)."""
        if self.fs is None:
            return open(os.path.join(self.root, *listed_path.split("/")), "rb")
        full = f"{self.root.rstrip('/')}/{listed_path}"
        stream: BinaryIO = self.fs.open(full, "rb", block_size=_REMOTE_BLOCK_SIZE)
        return stream

    def describe(self, path: str) -> str:
        """The file's full location, for messages."""
        if self.fs is None:
            return os.path.join(self.root, *path.split("/"))
        return f"{self.source.url.rstrip('/')}/{path}"


def _remote_listed(path: str, full: str, info: Mapping[str, Any]) -> Listed:
    size = int(info.get("size") or 0)
    # an object's ETag changes whenever its content does; without one, fall back on its mtime
    tag = info.get("ETag") or info.get("etag") or info.get("md5")
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    fingerprint = (
        f"etag:{tag}:{size}"
        if tag
        else (f"mtime:{modified}:{size}" if modified is not None else None)
    )
    return Listed(path, size, fingerprint, full)


def _open_fs(source: DataSource) -> tuple[Any, str]:
    import fsspec  # lazy: only remote sources need it

    for protocol in url_protocols(source.url):
        require_protocol(fsspec, protocol, source.url, "data source")
    try:
        fs, root = fsspec.core.url_to_fs(source.url, **source.storage_options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"data source '{source.name}': cannot open {source.url!r}: {exc}",
            hint="check the url and its storage_options",
        ) from None
    return fs, str(root).rstrip("/")


# -- building a manifest -------------------------------------------------------------------------


@dataclass
class Built:
    manifest: Manifest
    location: str  # the key of the file-hash cache
    # path -> (fingerprint, sha256) for every file of the manifest whose fingerprint is known
    hashes: dict[str, tuple[str, str]] = field(default_factory=dict)
    hashed: int = 0  # files read (the others came from the cache)


def build_manifest(
    source: DataSource,
    project_root: Path,
    known: Callable[[str], Mapping[str, tuple[str, str]]] | None = None,
    objects: Sequence[tuple[str, str]] | None = None,
) -> Built:
    """List, filter and hash the source's files.

    `known(location)` returns what a previous snapshot learnt there: path -> (fingerprint,
    sha256). A file whose fingerprint is unchanged is not read again. `objects` (bucket, key)
    replaces listing and filtering: exactly these objects are the version (an AWS manifest).
    """
    location = Location(source, project_root)
    previous = known(location.key) if known is not None else {}
    selected: list[tuple[Listed, str | None]] = []
    if objects is not None:
        paths = dict.fromkeys(location.relative(bucket, key) for bucket, key in objects)
        for listed in location.listed(paths):
            _, date = select(listed.path, date_prefix=source.date_prefix)
            selected.append((listed, date))
    for listed in location.list() if objects is None else ():
        chosen, date = select(listed.path, source.include, source.exclude, source.date_prefix)
        if chosen:
            _check_name(listed.path, location)
            selected.append((listed, date))
    selected.sort(key=lambda item: item[0].path)
    built = Built(Manifest(source.name, source.url, ()), location.key)
    files = []
    for listed, date in selected:
        cached = previous.get(listed.path)
        if (
            listed.fingerprint is not None
            and cached is not None
            and cached[0] == listed.fingerprint
        ):
            sha256 = cached[1]
            size = listed.size
        else:
            sha256, size = _hash(location, listed)
            built.hashed += 1
        if listed.fingerprint is not None:
            built.hashes[listed.path] = (listed.fingerprint, sha256)
        files.append(ManifestFile(listed.path, size, sha256, date))
    built.manifest = Manifest(source.name, source.url, tuple(files))
    return built


def _check_name(path: str, location: Location) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ArtifactError(
            "file name is not valid UTF-8", where=location.describe(path), hint="rename the file"
        ) from None


def _hash(location: Location, listed: Listed) -> tuple[str, int]:
    try:
        with location.open(listed.path) as stream:
            digest, size = hash_stream(stream)
            return digest.removeprefix("sha256:"), size
    except FileNotFoundError:
        raise ArtifactError(
            "the file disappeared while the data source was being read",
            where=location.describe(listed.path),
            hint="snapshot again once the files stop changing",
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"cannot read the file: {exc.strerror or exc}",
            where=location.describe(listed.path),
            hint="check that it is readable (and the credentials, for a remote source)",
        ) from None


# -- storing and reading -------------------------------------------------------------------------


def store_manifest(store: ArtifactStore, manifest: Manifest) -> ArtifactRef:
    """Store the manifest as a JSON value: its artifact digest is the data version."""
    ref = store.put_value(manifest.to_json())
    assert ref.digest == manifest.digest  # both are the sha256 of the same canonical JSON
    return ref


def read_manifest(store: ArtifactStore, digest: str) -> tuple[Manifest, ArtifactRef]:
    """The manifest of a data version, verified against its digest."""
    data = store.read_blob(digest)
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"{digest} is not a JSON manifest: {exc}") from None
    return Manifest.from_json(document, digest), ArtifactRef(digest, "value", len(data))


# -- materializing -------------------------------------------------------------------------------


def materialize(
    manifest: Manifest, source: DataSource, project_root: Path, dest: Path, digest: str
) -> Path:
    """Copy the manifest's files from the source into the new folder `dest`, checking each.

    A file that is missing or whose size or sha256 differs from the manifest (the source changed
    after the snapshot) is an `ArtifactError` naming it; nothing partial is left at `dest`.
    """
    location = Location(source, project_root)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir(parents=True)
    try:
        for entry in manifest.files:
            target = tmp.joinpath(*entry.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_verified(location, entry, target, digest)
        os.rename(tmp, dest)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _copy_verified(location: Location, entry: ManifestFile, target: Path, digest: str) -> None:
    where = location.describe(entry.path)
    version = f"data version {digest[:19]} of '{location.source.name}'"
    h = hashlib.sha256()
    size = 0
    try:
        with location.open(entry.path) as src, open(target, "xb") as out:
            while chunk := src.read(CHUNK_SIZE):
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except FileNotFoundError:
        raise ArtifactError(
            f"file '{entry.path}' of {version} is missing from the source",
            where=where,
            hint="restore it, or start a new run: it takes a new snapshot of the source",
        ) from None
    except OSError as exc:
        raise ArtifactError(
            f"cannot copy file '{entry.path}' of {version}: {exc.strerror or exc}",
            where=where,
            hint="check that the source is readable and the disk has room",
        ) from None
    if size != entry.size or h.hexdigest() != entry.sha256:
        raise ArtifactError(
            f"file '{entry.path}' changed since {version} was taken "
            f"(now {size} bytes, sha256 {h.hexdigest()[:12]}; "
            f"recorded {entry.size} bytes, sha256 {entry.sha256[:12]})",
            where=where,
            hint="restore it, or start a new run: it takes a new snapshot of the source",
        )


# -- the AWS scenario's manifest format ----------------------------------------------------------


def aws_manifest_keys(document: Any) -> list[tuple[str, str]]:
    """(bucket, key) pairs of an AWS-style manifest `{"data": [{"bucketName", "objectKey"}]}`."""
    items = document.get("data") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ConfigError(
            "the AWS manifest must be a JSON object with a 'data' list",
            hint='expected {"data": [{"bucketName": "...", "objectKey": "..."}, ...]}',
        )
    pairs = []
    for index, item in enumerate(items):
        bucket = item.get("bucketName") if isinstance(item, dict) else None
        key = item.get("objectKey") if isinstance(item, dict) else None
        if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
            raise ConfigError(
                f"entry {index} of the AWS manifest needs 'bucketName' and 'objectKey' strings",
                hint='write e.g. {"bucketName": "my-bucket", "objectKey": "raw/2024/a.csv"}',
            )
        pairs.append((bucket, key))
    return pairs


# -- snapshots: build, store and record a data version -------------------------------------------


@dataclass
class Snapshot:
    version: DataVersionRow
    new: bool  # the digest was not yet known for this project and source
    manifest: Manifest
    hashed: int  # files read to take it (the others were unchanged since the last snapshot)


def take_snapshot(
    db: Database,
    store: ArtifactStore,
    project: str,
    project_root: Path,
    source: DataSource,
    objects: Sequence[tuple[str, str]] | None = None,
) -> Snapshot:
    """Snapshot a data source: its manifest in the artifact store and a `data_versions` row.

    `objects` (bucket, key) takes exactly these objects instead of listing the source.
    """
    from modelyard.store import dataversions as dv

    def known(location: str) -> Mapping[str, tuple[str, str]]:
        with db.begin() as conn:
            return dv.known_hashes(conn, location)

    built = build_manifest(source, project_root, known, objects)
    manifest = built.manifest
    store_manifest(store, manifest)
    for attempt in (1, 2):
        try:
            with db.begin() as conn:
                # re-read inside the transaction: another snapshot may have changed the cache
                dv.save_hashes(
                    conn, built.location, built.hashes, dv.known_hashes(conn, built.location)
                )
                row = dv.get_version(conn, project, source.name, manifest.digest)
                new = row is None
                if row is None:
                    row = dv.insert_version(
                        conn,
                        project=project,
                        source=source.name,
                        digest=manifest.digest,
                        url=source.url,
                        file_count=len(manifest.files),
                        total_bytes=manifest.total_bytes,
                    )
            return Snapshot(row, new, manifest, built.hashed)
        except sa.exc.IntegrityError:
            # a concurrent snapshot recorded the same version or file first: look again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
