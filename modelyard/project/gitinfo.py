"""The git state of a project folder (commit, dirty flag, branch), recorded with every run.

Lineage needs to know which code a model came from. The `git` binary answers best (one
`git status --porcelain=v2 --branch` call gives the commit, the branch and whether tracked files
changed); without it, or when it refuses the repository, the commit and branch are read from the
`.git` folder itself and the dirty flag is unknown (None). Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_GIT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class GitState:
    commit: str | None  # None: a repository without commits yet
    dirty: bool | None  # tracked files changed since the commit; None: unknown
    branch: str | None  # None: a detached HEAD


def git_state(folder: Path) -> GitState | None:
    """The git state of the repository holding `folder`, or None if it is not in one."""
    git_dir = _find_git_dir(folder)
    if git_dir is None:
        return None
    state = _ask_git(folder)
    return state if state is not None else _read_git_dir(git_dir)


def _find_git_dir(folder: Path) -> Path | None:
    """The repository's git folder: `.git`, or where a `.git` file (worktree) points."""
    folder = folder.resolve()
    for candidate in (folder, *folder.parents):
        dot_git = candidate / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():
            try:
                text = dot_git.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return None
            if text.startswith("gitdir:"):
                target = Path(text.removeprefix("gitdir:").strip())
                return target if target.is_absolute() else (candidate / target).resolve()
            return None
    return None


def _ask_git(folder: Path) -> GitState | None:
    git = shutil.which("git")
    if git is None:
        return None
    # GIT_OPTIONAL_LOCKS=0: `status` must not take the index lock of a repository a person is
    # using at the same time (it would otherwise refresh the index as a side effect).
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    command = [git, "-C", str(folder), "status", "--porcelain=v2", "--branch"]
    try:
        done = subprocess.run(
            [*command, "--untracked-files=no"],  # like `git describe --dirty`: tracked files
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_SECONDS,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:  # e.g. "dubious ownership": fall back to reading the files
        return None
    commit: str | None = None
    branch: str | None = None
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.removeprefix("# branch.oid ").strip()
            commit = oid if oid != "(initial)" else None
        elif line.startswith("# branch.head "):
            head = line.removeprefix("# branch.head ").strip()
            branch = head if head != "(detached)" else None
        elif line and not line.startswith("#"):
            dirty = True
    return GitState(commit, dirty, branch)


def _read_git_dir(git_dir: Path) -> GitState:
    """Commit and branch from HEAD and the refs (loose or packed); the dirty flag is unknown."""
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return GitState(None, None, None)
    if not head.startswith("ref:"):
        return GitState(head or None, None, None)  # a detached HEAD holds the commit itself
    ref = head.removeprefix("ref:").strip()
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    # a worktree's own folder holds HEAD; the refs live in the common folder it names
    common = git_dir
    with contextlib.suppress(OSError, UnicodeDecodeError):
        common = (git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    return GitState(_resolve_ref(common, ref), None, branch)


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    try:
        return (git_dir / ref).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        pass
    try:
        lines = (git_dir / "packed-refs").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        sha, _, name = line.partition(" ")
        if name.strip() == ref and not line.startswith(("#", "^")):
            return sha
    return None  # a branch without commits yet
