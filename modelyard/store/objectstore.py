"""Object stores: a flat key -> bytes namespace with atomic puts.

Two backends share the small `ObjectStore` protocol: `LocalObjectStore` (plain os/pathlib, the
embedded default) and `FsspecObjectStore` (any fsspec URL: s3://, memory://, ...). The artifact
layer in `modelyard.store.artifacts` only talks to this protocol.

fsspec is imported lazily inside `FsspecObjectStore` so that importing this module, and using the
local backend, stays fast.

A missing key raises the builtin `FileNotFoundError` in both backends (fsspec does the same), so
callers handle one exception type.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast, runtime_checkable
from urllib.parse import unquote, urlsplit

from modelyard.errors import ConfigError, MissingDependency

CHUNK_SIZE = 1 << 20
# Remote reads fetch this much per request: bigger than a chunk to save round trips, small
# enough that a stream holds little memory (s3fs would otherwise buffer 50 MiB).
_REMOTE_BLOCK_SIZE = 8 << 20

# A URL scheme (RFC 3986) followed by "://", or an fsspec chained URL ("simplecache::s3://...").
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")

# Protocols whose implementation lives in an optional package: protocol -> (package, extra).
# Only s3 has a modelyard extra; the others get a plain `pip install` hint.
_PROTOCOL_PACKAGES: dict[str, tuple[str, str | None]] = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", None),
    "gcs": ("gcsfs", None),
    "az": ("adlfs", None),
    "abfs": ("adlfs", None),
    "abfss": ("adlfs", None),
}

# Object stores (and the in-memory fs) publish an object only once it is fully written, so a
# plain put is already atomic there; elsewhere we write a temporary key and move it into place.
_ATOMIC_PUT_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "oss", "r2"}
)


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-ish objects addressed by POSIX-style relative keys."""

    @property
    def location(self) -> str:
        """Where the store lives (a path or URL), for messages."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically: readers see the old object or the whole new one."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the content of the local file `path` under `key` atomically, streaming it."""
        ...

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to the local file `dest` (overwritten if present)."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object in memory."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """A binary stream over the object, for reading big objects in chunks; close it."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""
        ...


def check_key(key: str) -> str:
    """Validate a key: relative POSIX path without `.`/`..`/empty parts, so it cannot escape."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}: expected a relative path like 'a/b/c'")
    return key


class LocalObjectStore:
    """Objects as files under a local folder.

    Puts write a temporary file in the destination folder, fsync it and `os.replace` it into
    place, so a crash never leaves a torn object and concurrent writers of one key are safe (the
    last rename wins, and every rename installs a complete file).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _atomic_write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The temp file must be in the same folder: os.replace is only atomic within a filesystem.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                fill(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            # mkstemp creates 0600 files; give blobs the usual permissions for other readers.
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._atomic_write(key, lambda f: shutil.copyfileobj(src, f, CHUNK_SIZE))

    def get_file(self, key: str, dest: Path) -> None:
        with self.open_read(key) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK_SIZE)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class FsspecObjectStore:
    """Objects in any fsspec filesystem, rooted at `url` (`s3://bucket/prefix`, `memory://x`)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec  # lazy: fsspec (and its protocol packages) are slow to import

        self.url = url
        options = dict(storage_options or {})
        for protocol in url_protocols(url):
            require_protocol(fsspec, protocol, url)
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot open the artifact store {url!r}: {exc}",
                hint="check the URL and its storage options",
            ) from exc
        self.fs: Any = fs
        self.root = str(root).rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self._atomic_put = protocol in _ATOMIC_PUT_PROTOCOLS

    def __repr__(self) -> str:
        return f"FsspecObjectStore({self.url!r})"

    @property
    def location(self) -> str:
        return self.url

    def _path(self, key: str) -> str:
        check_key(key)
        return f"{self.root}/{key}" if self.root else key

    def _put(self, key: str, write: Callable[[str], object]) -> None:
        target = self._path(key)
        if self._atomic_put:
            write(target)
            return
        # Filesystems without atomic object publication: write aside, then move into place.
        # They also have real folders, which (unlike object stores) must exist before a write.
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{target}.{uuid.uuid4().hex}.tmp"
        try:
            write(tmp)
            self.fs.mv(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.rm_file(tmp)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put(key, lambda p: self.fs.pipe_file(p, data))

    def put_file(self, key: str, path: Path) -> None:
        self._put(key, lambda p: self.fs.put_file(os.fspath(path), p))

    def get_file(self, key: str, dest: Path) -> None:
        self.fs.get_file(self._path(key), os.fspath(dest))

    def read_bytes(self, key: str) -> bytes:
        return cast(bytes, self.fs.cat_file(self._path(key)))

    def open_read(self, key: str) -> BinaryIO:
        return cast(BinaryIO, self.fs.open(self._path(key), "rb", block_size=_REMOTE_BLOCK_SIZE))

    def exists(self, key: str) -> bool:
        # info() instead of exists(): fsspec's exists() turns every error (bad credentials, no
        # network) into False, which would hide real problems behind "missing".
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            return False
        return bool(info.get("type") == "file")

    def size(self, key: str) -> int:
        info = self.fs.info(self._path(key))
        if info.get("type") != "file":
            raise FileNotFoundError(key)
        return int(info["size"])

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))


def open_object_store(
    location: str | Path, storage_options: dict[str, Any] | None = None
) -> ObjectStore:
    """The object store for a location: a plain or `file://` path is local, any other URL fsspec."""
    if isinstance(location, Path):
        return _local(location, storage_options)
    if "::" in location:  # fsspec chained URL, e.g. "simplecache::s3://bucket"
        return FsspecObjectStore(location, storage_options)
    match = _SCHEME_RE.match(location)
    if match is None:
        return _local(Path(location), storage_options)
    if match["scheme"].lower() != "file":
        return FsspecObjectStore(location, storage_options)
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ConfigError(
            f"unsupported file URL {location!r}",
            hint="use file:///absolute/path or a plain path",
        )
    return _local(Path(unquote(parts.path)), storage_options)


def _local(path: Path, storage_options: dict[str, Any] | None) -> LocalObjectStore:
    if storage_options:
        # Options only mean something to fsspec backends; silently dropping them hides mistakes.
        raise ConfigError(
            f"storage options {sorted(storage_options)} were given for the local path {path}",
            hint="remove the storage options, or use a URL such as s3://bucket/prefix",
        )
    return LocalObjectStore(path)


def url_protocols(url: str) -> list[str]:
    """The protocols of a (possibly chained) fsspec URL."""
    protocols = []
    for part in url.split("::"):
        match = _SCHEME_RE.match(part)
        protocols.append(match["scheme"].lower() if match else part.lower())
    return protocols


def require_protocol(fsspec: Any, protocol: str, url: str, what: str = "artifact store") -> None:
    """Fail early, with an install hint, when a protocol's package is missing."""
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        package, extra = _PROTOCOL_PACKAGES.get(protocol, (None, None))
        feature = f"The {protocol}:// {what}"
        if package is not None and extra is not None:
            raise MissingDependency(package, extra, feature) from exc
        raise ConfigError(
            f"{feature} needs a package that is not installed: {exc}",
            where=url,
            hint=f"pip install {package}" if package else "install the fsspec implementation",
        ) from exc
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ConfigError(
            f"unknown storage protocol {protocol!r} in {url!r}",
            hint="use a local path, file://, s3://bucket/prefix, or another fsspec protocol",
        ) from exc
