"""Unpacking ZIP artifacts (`Unarchive: ZIP`) without trusting the archive.

An artifact comes from wherever its recipe points, so an archive is treated as hostile: every
member is checked BEFORE anything is written (no absolute paths, no `..` leaving the destination,
no symlinks, devices or other special files, no zip bombs), then the members are extracted into a
temporary folder beside the destination, which is renamed into place only when complete. A kill
at any moment leaves either the old folder or a `.tmp-*` folder that `ComponentStore`'s
`cleanup_temporary()` removes.

Members are written by this module, not by `ZipFile.extract`, because `extract` silently rewrites
suspicious names (it drops `..` parts) and would put files where the archive did not say.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from modelyard.edge.agent.errors import ArtifactError

# names of files and folders that are work in progress; `cleanup_temporary` removes them
TMP_PREFIX = ".tmp-"

MAX_TOTAL_BYTES = 4 << 30  # what all members may unpack to, together
MAX_RATIO = 200  # uncompressed / compressed size of one member, beyond which it is a bomb
RATIO_FLOOR = 1 << 20  # members smaller than this are not ratio-checked (tiny files compress well)
MAX_MEMBERS = 100_000  # an archive of millions of empty files exhausts inodes, not bytes

_CHUNK = 1 << 20
_BOMB_HINT = "if the archive is genuine, unpack it in the component's Install script instead"


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # the normalised relative path
    is_dir: bool
    exec_bits: int  # the member's own execute bits (Unix archives), kept when extracting


def temporary_name(name: str) -> str:
    """A unique name for work in progress on `name`, recognised by `cleanup_temporary`."""
    return f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"


def safe_unzip(
    zip_path: str | Path,
    dest: str | Path,
    *,
    file_mode: int = 0o644,
    field: str | None = None,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
    max_members: int = MAX_MEMBERS,
) -> Path:
    """Extract `zip_path` into the folder `dest` (replacing it), refusing unsafe archives.

    Files get `file_mode` plus the execute bits they had in the archive, for whoever may read them
    (a script zipped as 0755 stays executable); folders get 0755. `field` is the recipe field
    named in errors. Raises ArtifactError naming the archive and the offending member; on any
    error nothing is left behind and an existing `dest` is untouched.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _check_members(archive, zip_path, field, max_total_bytes, max_ratio)
            if len(members) > max_members:
                raise ArtifactError(
                    f"{zip_path} has {len(members)} members, more than the {max_members} allowed",
                    path=field,
                    hint=_BOMB_HINT,
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = dest.parent / temporary_name(dest.name)
            try:
                staging.mkdir()
                for member in members:
                    _extract(archive, member, staging, zip_path, field, file_mode)
                _replace_dir(staging, dest)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise ArtifactError(
            f"{zip_path} is not a valid ZIP archive: {exc}",
            path=field,
            hint="check the artifact, or set Unarchive: NONE if it is not a ZIP file",
        ) from None
    except OSError as exc:
        raise ArtifactError(f"cannot unpack {zip_path} into {dest}: {exc}", path=field) from None
    return dest


def _refuse(zip_path: Path, name: str, why: str, field: str | None, hint: str) -> ArtifactError:
    return ArtifactError(f"{zip_path}: member {name!r} {why}", path=field, hint=hint)


def _check_members(
    archive: zipfile.ZipFile,
    zip_path: Path,
    field: str | None,
    max_total_bytes: int,
    max_ratio: float,
) -> list[_Member]:
    """Every member, checked; the first unsafe one raises before anything is extracted."""
    fix = "rebuild the archive with relative paths of regular files and folders only"
    members: list[_Member] = []
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    total = 0
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or "\0" in name:
            raise _refuse(zip_path, name, "has an absolute path", field, fix)
        if "\\" in name:  # a Windows separator: another system would read a different path
            raise _refuse(zip_path, name, "has a backslash in its path", field, fix)
        normal = posixpath.normpath(name)
        if normal == ".." or normal.startswith("../"):
            raise _refuse(zip_path, name, "leaves the destination folder (..)", field, fix)
        mode = info.external_attr >> 16  # the Unix mode, when the archive was made on Unix
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise _refuse(zip_path, name, "is a symbolic link", field, fix)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(zip_path, name, "is a device or special file", field, fix)
        if info.flag_bits & 0x1:
            raise _refuse(
                zip_path, name, "is encrypted", field, "the agent cannot unpack encrypted archives"
            )
        is_dir = info.is_dir() or stat.S_ISDIR(mode)
        parts = PurePosixPath(normal).parts if normal != "." else ()
        if not parts:
            if is_dir:
                continue  # "./": the destination itself
            raise _refuse(zip_path, name, "has no file name", field, fix)
        total += info.file_size
        if total > max_total_bytes:
            raise _refuse(
                zip_path,
                name,
                f"takes the unpacked size over the {max_total_bytes} bytes allowed",
                field,
                _BOMB_HINT,
            )
        compressed = max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and info.file_size / compressed > max_ratio:
            raise _refuse(
                zip_path,
                name,
                f"unpacks {info.file_size} bytes from {info.compress_size}: a compression ratio "
                f"over {max_ratio:g} (a zip bomb?)",
                field,
                _BOMB_HINT,
            )
        _check_conflicts(parts, is_dir, files, dirs, zip_path, name, field)
        members.append(_Member(info, parts, is_dir, 0 if is_dir else mode & 0o111))
    return members


def _check_conflicts(
    parts: tuple[str, ...],
    is_dir: bool,
    files: set[tuple[str, ...]],
    dirs: set[tuple[str, ...]],
    zip_path: Path,
    name: str,
    field: str | None,
) -> None:
    """Refuse a path given twice, or used both as a file and as a folder."""
    fix = "rebuild the archive so each path appears once"
    parents = {parts[:i] for i in range(1, len(parts))}
    if parts in files or (not is_dir and parts in dirs) or parents & files:
        raise _refuse(zip_path, name, "clashes with another member of the same path", field, fix)
    dirs.update(parents)
    (dirs if is_dir else files).add(parts)


def _extract(
    archive: zipfile.ZipFile,
    member: _Member,
    staging: Path,
    zip_path: Path,
    field: str | None,
    file_mode: int,
) -> None:
    target = staging.joinpath(*member.parts)
    if member.is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    # O_EXCL: never follow or reuse anything already at the path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, archive.open(member.info) as source:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > member.info.file_size:  # the header lied about the size
                raise _refuse(
                    zip_path,
                    member.info.filename,
                    "unpacks to more than its declared size",
                    field,
                    "the archive is corrupt or malicious: rebuild it",
                )
            out.write(chunk)
    readable_by = (file_mode >> 2) & 0o111  # execute only for whoever may read the file
    os.chmod(target, file_mode | (member.exec_bits & readable_by))


def _replace_dir(staging: Path, dest: Path) -> None:
    """Move the finished `staging` folder to `dest`, an old `dest` out of the way first."""
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / temporary_name(dest.name)
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        with contextlib.suppress(OSError):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
