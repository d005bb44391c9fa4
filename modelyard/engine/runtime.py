"""What the engine works with: the settings, the metadata database and the artifact store."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import cached_property

from modelyard.settings import Settings
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.db import Database


@dataclass
class Runtime:
    settings: Settings
    _db: Database | None = field(default=None, repr=False)

    @cached_property
    def db(self) -> Database:
        return self._db or Database(self.settings.effective_database_url)

    @cached_property
    def store(self) -> ArtifactStore:
        return ArtifactStore.open(
            self.settings.effective_artifact_store, self.settings.artifact_store_options or None
        )

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()


def process_identity() -> str:
    """host:pid:start-time, so a lease held by a dead (or recycled) pid is recognised."""
    from modelyard.executors.processes import start_time

    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_time(pid) or 0:.2f}"


def owner_is_dead(owner: str | None) -> bool:
    """True if `owner` is a process of this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's process: only its lease expiry tells
    from modelyard.executors.processes import is_same_process

    return not is_same_process(int(pid_text), float(started or 0) or None)
