"""The environment's digest: part of every cache key, so a changed environment is a cache miss.

With a lock file (declared in the project, or a well-known name in its root) the digest is the
lock file's; without one it covers every installed distribution and version, which is slower
to compute but never misses an upgrade.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

from modelyard.store.artifacts import digest_file

WELL_KNOWN_LOCKS = (
    "uv.lock",
    "poetry.lock",
    "pylock.toml",
    "requirements.lock",
    "requirements.txt",
    "environment.yml",
)


def lock_file(root: Path, declared: str | None) -> Path | None:
    if declared:
        return root / declared
    for name in WELL_KNOWN_LOCKS:
        if (root / name).is_file():
            return root / name
    return None


def environment_digest(root: Path, declared_lock: str | None) -> str:
    digest = hashlib.sha256()
    digest.update(f"python={sys.version}\nplatform={platform.platform()}\n".encode())
    lock = lock_file(root, declared_lock)
    if lock is not None:
        digest.update(f"lock={lock.name}:{digest_file(lock)}\n".encode())
    else:
        digest.update(_installed_distributions().encode())
    return "sha256:" + digest.hexdigest()


def _installed_distributions() -> str:
    # The names of *.dist-info / *.egg-info folders carry each distribution's name and version;
    # listing them is ~100x faster than importlib.metadata, which parses every METADATA file.
    names: set[str] = set()
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        try:
            children = os.listdir(folder)
        except OSError:
            continue
        names.update(c.lower() for c in children if c.endswith((".dist-info", ".egg-info")))
    return "\n".join(sorted(names))
