"""The content-addressed artifact store.

An artifact is an immutable file, folder or JSON value, named by the sha256 of its content
(`"sha256:<64 hex>"`). Blobs live at `blobs/sha256/<2 hex>/<62 hex>` in an `ObjectStore`. A folder
is stored as its files' blobs plus a *tree manifest*: a canonical JSON blob listing every file
(POSIX path, digest, size, executable bit) and every empty folder. The folder's digest is the
manifest's digest, so identical content gives an identical digest whatever the mtimes or
permissions (only the executable bit counts).

Every read re-hashes what it reads: a corrupt or missing blob is reported (`verify` -> False, or
`ArtifactError`), never returned as a wrong result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, TypeAlias, cast, get_args

from modelyard.errors import ArtifactError
from modelyard.store.objectstore import CHUNK_SIZE, ObjectStore, open_object_store

__all__ = [
    "TREE_FORMAT",
    "ArtifactKind",
    "ArtifactRef",
    "ArtifactStore",
    "JSONValue",
    "TreeEntry",
    "blob_key",
    "canonical_json",
    "check_relpath",
    "digest_bytes",
    "digest_file",
    "hash_stream",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
ArtifactKind: TypeAlias = Literal["file", "dir", "value"]

TREE_FORMAT = "modelyard-tree/1"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_KINDS: tuple[str, ...] = get_args(ArtifactKind)


# -- digests ----------------------------------------------------------------------------------


def digest_bytes(data: bytes) -> str:
    """The digest of some bytes, as `"sha256:<hex>"`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_file(path: str | os.PathLike[str]) -> str:
    """The digest of a local file's content, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return hash_stream(f)[0]


def hash_stream(stream: BinaryIO) -> tuple[str, int]:
    """The digest (`sha256:<hex>`) and size of a stream, read in chunks."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ArtifactError(
            f"invalid artifact digest {digest!r}",
            hint="a digest looks like 'sha256:' followed by 64 lowercase hex digits",
        )
    return digest


def blob_key(digest: str) -> str:
    """The object key of a blob: `blobs/sha256/<first 2 hex>/<remaining 62 hex>`."""
    hex_ = _check_digest(digest)[len("sha256:") :]
    return f"blobs/sha256/{hex_[:2]}/{hex_[2:]}"


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8, no NaN/Infinity."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ArtifactError(
            f"value cannot be stored as JSON: {exc}",
            hint="store only dicts with str keys, lists, str, int, finite float, bool and None",
        ) from exc
    return text.encode("utf-8")


# -- references and manifests -----------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactRef:
    """A stored artifact: its digest, what kind of thing it is, and its size in bytes.

    For a dir the size is the sum of its files' sizes; for a value, the size of its JSON.
    """

    digest: str
    kind: ArtifactKind
    size: int

    def __post_init__(self) -> None:
        _check_digest(self.digest)
        if self.kind not in _KINDS:
            raise ArtifactError(f"invalid artifact kind {self.kind!r}; expected one of {_KINDS}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ArtifactError(f"invalid artifact size {self.size!r}; expected an int >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "kind": self.kind, "size": self.size}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArtifactRef:
        try:
            return cls(digest=data["digest"], kind=data["kind"], size=data["size"])
        except (KeyError, TypeError) as exc:
            raise ArtifactError(
                f"invalid artifact reference {data!r}: expected digest, kind and size"
            ) from exc


@dataclass(frozen=True)
class TreeEntry:
    """One file of a dir artifact."""

    path: str
    digest: str
    size: int
    executable: bool


@dataclass(frozen=True)
class _Tree:
    files: tuple[TreeEntry, ...]
    dirs: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "format": TREE_FORMAT,
                "files": [
                    {"path": e.path, "digest": e.digest, "size": e.size, "executable": e.executable}
                    for e in self.files
                ],
                "dirs": list(self.dirs),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, digest: str) -> _Tree:
        """Parse and validate a manifest; paths are checked so a hostile one cannot escape."""

        def bad(why: str) -> ArtifactError:
            return ArtifactError(
                f"artifact {digest} is not a valid tree manifest: {why}",
                hint="the ref may point at a file artifact; check its kind",
            )

        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(str(exc)) from exc
        if not isinstance(doc, dict) or doc.get("format") != TREE_FORMAT:
            raise bad(f"expected format {TREE_FORMAT!r}")
        files, dirs = doc.get("files"), doc.get("dirs")
        if not isinstance(files, list) or not isinstance(dirs, list):
            raise bad("'files' and 'dirs' must be lists")
        entries = []
        for item in files:
            try:
                entry = TreeEntry(
                    path=check_relpath(item["path"]),
                    digest=_check_digest(item["digest"]),
                    size=item["size"],
                    executable=item["executable"],
                )
            except (KeyError, TypeError, ValueError, ArtifactError) as exc:
                raise bad(f"bad file entry {item!r}") from exc
            size_ok = isinstance(entry.size, int) and not isinstance(entry.size, bool)
            if not size_ok or entry.size < 0 or not isinstance(entry.executable, bool):
                raise bad(f"bad file entry {item!r}")
            entries.append(entry)
        try:
            dir_paths = tuple(check_relpath(d) for d in dirs)
        except (TypeError, ValueError) as exc:
            raise bad(f"bad dirs {dirs!r}") from exc
        return cls(tuple(entries), dir_paths)


def check_relpath(path: object) -> str:
    """A POSIX path relative to a tree root, refused if it could point outside the tree."""
    if not isinstance(path, str):
        raise TypeError(f"path must be a string, not {type(path).__name__}")
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid relative path {path!r}")
    return path


# -- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LocalFile:
    relpath: str
    real: Path
    executable: bool


class ArtifactStore:
    """Content-addressed files, folders and JSON values on top of an `ObjectStore`.

    Safe to share between threads, and between processes using the same store: blobs are
    written atomically and named by their content, so concurrent writers of one artifact agree.
    """

    def __init__(self, objects: ObjectStore, *, upload_workers: int = 8) -> None:
        self.objects = objects
        # Folders with many files are uploaded in parallel: remote stores are latency-bound.
        self.upload_workers = max(1, upload_workers)

    @classmethod
    def open(
        cls, location: str | Path, storage_options: dict[str, Any] | None = None
    ) -> ArtifactStore:
        """The artifact store at a local path or fsspec URL."""
        return cls(open_object_store(location, storage_options))

    def __repr__(self) -> str:
        return f"ArtifactStore({self.objects!r})"

    # -- writing

    def put_path(self, path: str | os.PathLike[str]) -> ArtifactRef:
        """Store a file or a folder."""
        p = Path(path)
        return self.put_dir(p) if p.is_dir() else self.put_file(p)

    def put_file(self, path: str | os.PathLike[str]) -> ArtifactRef:
        """Store a local file (a symlink stores what it points to)."""
        p = Path(path)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ArtifactError(
                "cannot store a file that does not exist", where=str(p), hint="check the path"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise ArtifactError(
                "is a folder, not a file", where=str(p), hint="use put_dir or put_path"
            )
        if not stat.S_ISREG(st.st_mode):
            raise _special_file_error(p)
        digest, size = self._put_blob_file(p)
        return ArtifactRef(digest, "file", size)

    def put_dir(self, path: str | os.PathLike[str]) -> ArtifactRef:
        """Store a local folder: a blob per file plus a tree manifest."""
        root = Path(path)
        if not root.is_dir():
            raise ArtifactError(
                "is not a folder" if root.exists() else "folder does not exist",
                where=str(root),
                hint="use put_file for a file, or check the path",
            )
        files, empty_dirs = _scan_tree(root)
        seen: set[str] = set()

        def upload(f: _LocalFile) -> TreeEntry:
            digest, size = self._put_blob_file(f.real, seen)
            return TreeEntry(f.relpath, digest, size, f.executable)

        if len(files) > 1 and self.upload_workers > 1:
            from concurrent.futures import ThreadPoolExecutor  # lazy: only big folders need it

            with ThreadPoolExecutor(self.upload_workers, thread_name_prefix="artifact-put") as ex:
                entries = list(ex.map(upload, files))
        else:
            entries = [upload(f) for f in files]
        tree = _Tree(tuple(entries), tuple(empty_dirs))
        digest = self._put_blob_bytes(tree.to_bytes())
        return ArtifactRef(digest, "dir", sum(e.size for e in entries))

    def put_value(self, value: JSONValue) -> ArtifactRef:
        """Store a JSON-able value as its canonical JSON."""
        data = canonical_json(value)
        return ArtifactRef(self._put_blob_bytes(data), "value", len(data))

    def _put_blob_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        key = blob_key(digest)
        if not self.objects.exists(key):
            self.objects.put_bytes(key, data)
        return digest

    def _put_blob_file(self, path: Path, seen: set[str] | None = None) -> tuple[str, int]:
        try:
            before = path.stat()
            with open(path, "rb") as f:
                digest, size = hash_stream(f)
        except OSError as exc:
            raise ArtifactError(
                f"cannot read the file to store it: {exc.strerror or exc}",
                where=str(path),
                hint="check that it exists and is readable",
            ) from exc
        key = blob_key(digest)
        if seen is not None and digest in seen:
            return digest, size
        uploaded = False
        if not self.objects.exists(key):
            self.objects.put_file(key, path)
            uploaded = True
        after = path.stat()
        # The file was hashed and uploaded in two reads; if it changed in between, the blob we
        # wrote may not match its name. Refuse rather than store a lie.
        changed = (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
        if changed or size != before.st_size:
            if uploaded and not self._blob_intact(digest):
                self.objects.delete(key)
            raise ArtifactError(
                "file changed while it was being stored",
                where=str(path),
                hint="store outputs only after the process writing them has finished",
            )
        if seen is not None:
            seen.add(digest)
        return digest, size

    # -- reading

    def read_value(self, ref: ArtifactRef) -> JSONValue:
        """The value stored by `put_value`."""
        self._require_kind(ref, "value")
        data = self._read_blob(ref.digest)
        try:
            return cast(JSONValue, json.loads(data.decode("utf-8")))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise ArtifactError(
                f"artifact {ref.digest} does not hold a JSON value: {exc}",
                hint="the ref's kind is probably wrong; read it with read_file",
            ) from exc

    def read_file(self, ref: ArtifactRef, relpath: str | None = None) -> bytes:
        """The verified bytes of a file artifact, or of the file `relpath` in a dir artifact."""
        if ref.kind != "dir":
            if relpath is not None:
                raise ArtifactError(
                    f"artifact {ref.digest} is a {ref.kind}, not a folder; it has no {relpath!r}",
                    hint="call read_file without a relpath",
                )
            return self._read_blob(ref.digest)
        tree = self._read_tree(ref.digest)
        if relpath is None:
            raise ArtifactError(
                f"artifact {ref.digest} is a folder; say which file to read",
                hint=f"pass relpath, one of: {_some(e.path for e in tree.files)}",
            )
        wanted = str(PurePosixPath(relpath))
        for entry in tree.files:
            if entry.path == wanted:
                return self._read_blob(entry.digest)
        import difflib  # lazy: only for this error message

        paths = [e.path for e in tree.files]
        close = difflib.get_close_matches(wanted, paths, n=5, cutoff=0.5)
        suggestions = close + [p for p in paths if p not in close]
        raise ArtifactError(
            f"no file {relpath!r} in folder artifact {ref.digest} ({len(paths)} files)",
            hint=f"use one of: {_some(suggestions)}" if paths else "the folder has no files",
        )

    def list_files(self, ref: ArtifactRef) -> list[str]:
        """The POSIX paths of the files in a dir artifact, sorted."""
        self._require_kind(ref, "dir")
        return [e.path for e in self._read_tree(ref.digest).files]

    def tree(self, ref: ArtifactRef) -> list[TreeEntry]:
        """The file entries of a dir artifact's manifest, sorted by path."""
        self._require_kind(ref, "dir")
        return list(self._read_tree(ref.digest).files)

    def read_blob(self, digest: str) -> bytes:
        """The verified bytes of the blob named `digest`, for callers that know only a digest
        (such as a data version's manifest)."""
        return self._read_blob(_check_digest(digest))

    def _read_blob(self, digest: str) -> bytes:
        try:
            data = self.objects.read_bytes(blob_key(digest))
        except FileNotFoundError:
            raise _missing_error(digest, self.objects.location) from None
        if digest_bytes(data) != digest:
            raise _corrupt_error(digest, self.objects.location)
        return data

    def _read_tree(self, digest: str) -> _Tree:
        return _Tree.from_bytes(self._read_blob(digest), digest)

    # -- checking

    def verify(self, ref: ArtifactRef) -> bool:
        """Whether the artifact is present and intact (every blob re-hashed). Never raises for a
        missing or corrupt artifact: that is a cache miss, not an error."""
        if ref.kind != "dir":
            return self._blob_intact(ref.digest, ref.size)
        try:
            tree = self._read_tree(ref.digest)
        except ArtifactError:
            return False
        if sum(e.size for e in tree.files) != ref.size:
            return False
        checked: set[str] = set()
        for entry in tree.files:
            if entry.digest not in checked:
                if not self._blob_intact(entry.digest, entry.size):
                    return False
                checked.add(entry.digest)
        return True

    def discard_damaged(self, ref: ArtifactRef) -> list[str]:
        """Delete the blobs of `ref` that are present but corrupt; return their digests.

        Storing a blob is skipped when its key exists, so a corrupt blob would otherwise stay
        corrupt even after its content is produced and stored again.
        """
        digests = [ref.digest]
        if ref.kind == "dir":
            with contextlib.suppress(ArtifactError):
                digests += [e.digest for e in self._read_tree(ref.digest).files]
        damaged = []
        for digest in dict.fromkeys(digests):
            key = blob_key(digest)
            if self.objects.exists(key) and not self._blob_intact(digest):
                self.objects.delete(key)
                damaged.append(digest)
        return damaged

    def _blob_intact(self, digest: str, size: int | None = None) -> bool:
        key = blob_key(digest)
        try:
            if size is not None and self.objects.size(key) != size:
                return False
            with self.objects.open_read(key) as stream:
                return hash_stream(stream)[0] == digest
        except FileNotFoundError:
            return False

    # -- materializing

    def materialize(
        self, ref: ArtifactRef, dest: str | os.PathLike[str], *, overwrite: bool = False
    ) -> Path:
        """Write the artifact out to `dest`: a file for a file or value, a folder for a dir.

        Everything is written to a temporary sibling and checked against its digest before one
        rename puts it in place, so a missing or corrupt blob raises `ArtifactError` and leaves
        no partial `dest`. The files are fresh copies: changing them cannot touch the store.
        """
        dest = Path(dest)
        if (dest.exists() or dest.is_symlink()) and not overwrite:
            raise ArtifactError(
                "cannot materialize an artifact here: the path already exists",
                where=str(dest),
                hint="remove it, pick another path, or pass overwrite=True",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            if ref.kind == "dir":
                self._write_tree(ref.digest, tmp)
            else:
                self._write_blob(ref.digest, tmp)
            _replace(tmp, dest)
        except BaseException:
            _remove(tmp)
            raise
        return dest

    def _write_tree(self, digest: str, target: Path) -> None:
        tree = self._read_tree(digest)
        target.mkdir()
        for d in tree.dirs:
            target.joinpath(*d.split("/")).mkdir(parents=True, exist_ok=True)
        for entry in tree.files:
            path = target.joinpath(*entry.path.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_blob(entry.digest, path)
            if entry.executable:
                mode = path.stat().st_mode
                # Like git: grant execute wherever read is granted (respecting the umask).
                path.chmod(mode | ((mode & 0o444) >> 2))

    def _write_blob(self, digest: str, target: Path) -> None:
        """Copy a blob to a new local file, hashing on the way; raise if it does not match."""
        h = hashlib.sha256()
        try:
            with self.objects.open_read(blob_key(digest)) as src, open(target, "xb") as out:
                while chunk := src.read(CHUNK_SIZE):
                    h.update(chunk)
                    out.write(chunk)
        except FileNotFoundError:
            if target.exists():  # the blob was there but the write failed: not a missing blob
                raise
            raise _missing_error(digest, self.objects.location) from None
        if "sha256:" + h.hexdigest() != digest:
            raise _corrupt_error(digest, self.objects.location)

    def _require_kind(self, ref: ArtifactRef, kind: ArtifactKind) -> None:
        if ref.kind != kind:
            raise ArtifactError(
                f"artifact {ref.digest} is a {ref.kind}, not a {kind}",
                hint="check which output or reference this ref came from",
            )


# -- local trees -------------------------------------------------------------------------------


def _scan_tree(root: Path) -> tuple[list[_LocalFile], list[str]]:
    """Every regular file under `root` (sorted by POSIX relpath) and every empty folder.

    Symlinks are followed when they stay inside the tree (stored as what they point to); links
    out of the tree, dangling links, link cycles and special files are refused, because the
    artifact would silently depend on something that is not in it.
    """
    root_real = root.resolve()
    files: list[_LocalFile] = []
    empty_dirs: list[str] = []

    def visit(real_dir: Path, rel: PurePosixPath | None, ancestors: frozenset[Path]) -> None:
        with os.scandir(real_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child_rel = rel / entry.name if rel else PurePosixPath(entry.name)
            shown = root / child_rel
            if entry.is_symlink():
                try:
                    target = Path(entry.path).resolve()
                except (RuntimeError, OSError):  # 3.11 raises RuntimeError on a link loop
                    raise ArtifactError(
                        "symlink loop: the link resolves to itself",
                        where=str(shown),
                        hint="remove the link",
                    ) from None
                if not target.is_relative_to(root_real):
                    raise ArtifactError(
                        f"symlink points outside the folder being stored, to {target}",
                        where=str(shown),
                        hint="copy the target into the folder, or make the link relative "
                        "to a path inside it",
                    )
                try:
                    st = target.stat()
                except FileNotFoundError:
                    raise ArtifactError(
                        "symlink points to nothing",
                        where=str(shown),
                        hint="remove the dangling link or create its target",
                    ) from None
            else:
                target = Path(entry.path)
                st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if target in ancestors:
                    raise ArtifactError(
                        "symlink loop: the link points to a folder that contains it",
                        where=str(shown),
                        hint="remove the link",
                    )
                visit(target, child_rel, ancestors | {target})
            elif stat.S_ISREG(st.st_mode):
                files.append(_LocalFile(_posix(child_rel, shown), target, _executable(st)))
            else:
                raise _special_file_error(shown)
        if not entries and rel is not None:
            empty_dirs.append(_posix(rel, root / rel))

    visit(root_real, None, frozenset({root_real}))
    # scandir order per level is sorted by name, but "a/b" vs "a.txt" needs a global sort by path.
    files.sort(key=lambda f: f.relpath)
    empty_dirs.sort()
    return files, empty_dirs


def _posix(rel: PurePosixPath, shown: Path) -> str:
    text = rel.as_posix()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ArtifactError(
            "file name is not valid UTF-8", where=str(shown), hint="rename the file"
        ) from None
    return text


def _executable(st: os.stat_result) -> bool:
    return bool(st.st_mode & stat.S_IXUSR)


def _special_file_error(path: Path) -> ArtifactError:
    return ArtifactError(
        "is not a regular file, folder or symlink (a fifo, socket or device)",
        where=str(path),
        hint="remove it from the folder before storing, or store a file that describes it",
    )


def _missing_error(digest: str, location: str) -> ArtifactError:
    return ArtifactError(
        f"artifact blob {digest} is missing from the store at {location}",
        hint="re-run the step that produced it (a missing artifact is a cache miss)",
    )


def _corrupt_error(digest: str, location: str) -> ArtifactError:
    return ArtifactError(
        f"artifact blob {digest} in the store at {location} is corrupt (its content does not "
        "match its digest)",
        hint="delete the blob and re-run the step that produced it",
    )


def _some(paths: Iterable[str], n: int = 8) -> str:
    items = list(paths)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _replace(tmp: Path, dest: Path) -> None:
    """Move `tmp` to `dest`, replacing whatever is there.

    os.replace cannot put a folder over a file or a non-empty folder, so an existing `dest` is
    first renamed aside and removed once the new one is in place.
    """
    if not (dest.exists() or dest.is_symlink()):
        os.rename(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.old"
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)  # put the previous content back
        raise
    _remove(old)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
