"""The git state recorded with each run: with the git binary, and read from `.git` without it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from modelyard.project import gitinfo
from modelyard.project.gitinfo import GitState, git_state

needs_git = pytest.mark.skipif(
    shutil.which("git") is None, reason="the git binary is not installed"
)


def git(root: Path, *args: str) -> str:
    command = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    done = subprocess.run([*command, *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("the git binary is not installed")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "modelyard.yaml").write_text("pipelines: {}\n")
    (root / "project").mkdir()
    git(root, "add", "modelyard.yaml")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_not_a_repository(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None


def test_a_clean_then_dirty_checkout(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == GitState(head, False, "main")
    (repo / "untracked.txt").write_text("new")  # untracked files do not make it dirty
    assert git_state(repo / "project") == GitState(head, False, "main")
    (repo / "modelyard.yaml").write_text("pipelines: {changed: true}\n")
    assert git_state(repo) == GitState(head, True, "main")


def test_a_detached_head_and_a_repository_without_commits(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach")
    assert git_state(repo) == GitState(head, False, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    assert git_state(empty) == GitState(None, False, "main")


def test_without_the_git_binary_the_commit_is_read_from_the_files(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(gitinfo.shutil, "which", lambda name: None)
    assert git_state(repo) == GitState(head, None, "main")  # dirty: unknown
    git(repo, "pack-refs", "--all")  # the branch now lives in packed-refs only
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_state(repo) == GitState(head, None, "main")


def test_a_worktree_is_followed_to_its_common_folder(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(worktree))
    assert git_state(worktree) == GitState(head, False, "feature")
    monkeypatch.setattr(gitinfo.shutil, "which", lambda name: None)
    assert git_state(worktree) == GitState(head, None, "feature")


@needs_git
def test_a_refusing_git_falls_back_to_the_files(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """e.g. git's "dubious ownership" refusal for a repository of another user."""
    head = git(repo, "rev-parse", "HEAD")
    monkeypatch.setattr(gitinfo.shutil, "which", lambda name: "/bin/false")
    assert git_state(repo) == GitState(head, None, "main")
