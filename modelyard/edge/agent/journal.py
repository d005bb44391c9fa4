"""The device's deployment state on disk, under `<root>/deployments/`, safe against kill -9.

- `current.json`: what the device runs (`DeviceState`): its root components, every resolved
  component with its version, each one's effective configuration, the last deployment applied.
  The agent starts exactly this after a restart, and it is the commit point of a deployment:
  it changes only once a deployment's result is final.
- `<deploymentId>.json`: one `DeploymentRecord` per deployment: its document, status (QUEUED,
  IN_PROGRESS with a phase, SUCCEEDED, FAILED), reason, timestamps, the state before it (the
  rollback snapshot), the state it aims at, and each component's outcome.
- `queue/`: deployment documents waiting for the agent, taken in file-name order (the names
  start with a nanosecond timestamp). The CLI writes them; the agent removes each once its
  record exists, so a document is never lost nor run twice.

Every file is written whole to a temporary name, fsynced and renamed over the old one (then the
folder is fsynced), so a reader or a restarted agent sees the old or the new content, never a
part. Temporary files start with `.tmp-` and are ignored (and cleaned) like the store's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.edge.agent.errors import AgentError
from modelyard.edge.agent.files import fsync_dir

QUEUED = "QUEUED"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STATUSES = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED)
FINAL = (SUCCEEDED, FAILED)
CURRENT = "current"  # current.json: no deployment may take that id
TMP_PREFIX = ".tmp-"
DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class JournalError(AgentError):
    """A journal file the agent can't read (hand-edited, or another program's)."""

    exit_code = 1


class InvalidDeploymentIdError(AgentError):
    """A deployment id that can't name a record file."""

    exit_code = 2


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """UTC, to the millisecond: "2024-05-01T12:00:00.123Z" (sorts as text)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def write_json_atomically(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace `path` by `data` as JSON: temp file, (fsync), rename, (fsync the folder).

    `durable=False` skips the fsyncs, for files that are rewritten often and matter little
    after a power cut (the agent's status); a rename still keeps readers from half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}"
    body = json.dumps(data, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    """The JSON in `path`; JournalError (saying how to fix it) when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise JournalError(
            f"cannot read {path}: {exc}",
            hint="restore it from a backup, or delete it (the agent then forgets that state)",
        ) from None


# --- the device's state ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceState:
    """What the device runs: root components, all components' versions and configuration."""

    roots: Mapping[str, str] = field(default_factory=dict)  # name -> version
    components: Mapping[str, str] = field(default_factory=dict)  # every one, name -> version
    configuration: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    last_deployment_id: str | None = None

    def describe(self) -> str:
        """ "com.example.A 1.0.0, com.example.B 2.0.0", or "no components"."""
        if not self.components:
            return "no components"
        return ", ".join(f"{name} {self.components[name]}" for name in sorted(self.components))

    def to_json(self) -> dict[str, Any]:
        return {
            "roots": dict(self.roots),
            "components": {
                name: {"version": version, "configuration": self.configuration.get(name, {})}
                for name, version in sorted(self.components.items())
            },
            "lastDeploymentId": self.last_deployment_id,
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str = "state") -> DeviceState:
        try:
            roots = data["roots"]
            entries = data["components"]
            components = {name: str(entry["version"]) for name, entry in entries.items()}
            configuration = {
                name: dict(entry.get("configuration") or {}) for name, entry in entries.items()
            }
            last = data.get("lastDeploymentId")
            if not isinstance(roots, dict) or (last is not None and not isinstance(last, str)):
                raise TypeError("roots must be an object, lastDeploymentId a string")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise JournalError(
                f"{source} is not a device state: {exc!r}",
                hint="restore it from a backup, or delete it (the device then runs nothing)",
            ) from None
        return cls({str(k): str(v) for k, v in roots.items()}, components, configuration, last)


# --- deployment records ------------------------------------------------------------------------


@dataclass
class DeploymentRecord:
    """One deployment's history (mutable: the agent updates it, then `Journal.save`s it)."""

    deployment_id: str
    document: dict[str, Any]
    status: str = QUEUED
    phase: str | None = None  # while IN_PROGRESS: RESOLVING, FETCHING, NOTIFYING, ...
    reason: str | None = None
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    finished_at: str | None = None
    snapshot: DeviceState | None = None  # the state before it: what a rollback restores
    target: DeviceState | None = None  # the state it aims at
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> version, state
    deferrals: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "deploymentId": self.deployment_id,
            "document": self.document,
            "status": self.status,
            "phase": self.phase,
            "reason": self.reason,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "snapshot": None if self.snapshot is None else self.snapshot.to_json(),
            "target": None if self.target is None else self.target.to_json(),
            "outcomes": self.outcomes,
            "deferrals": self.deferrals,
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> DeploymentRecord:
        try:
            status = data["status"]
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            snapshot, target = data.get("snapshot"), data.get("target")
            return cls(
                deployment_id=str(data["deploymentId"]),
                document=dict(data.get("document") or {}),
                status=status,
                phase=data.get("phase"),
                reason=data.get("reason"),
                created_at=str(data["createdAt"]),
                updated_at=str(data.get("updatedAt") or data["createdAt"]),
                started_at=data.get("startedAt"),
                finished_at=data.get("finishedAt"),
                snapshot=None
                if snapshot is None
                else DeviceState.from_json(snapshot, source=source),
                target=None if target is None else DeviceState.from_json(target, source=source),
                outcomes=dict(data.get("outcomes") or {}),
                deferrals=list(data.get("deferrals") or []),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise JournalError(
                f"{source} is not a deployment record: {exc!r}",
                hint="delete it if it is not the agent's (the deployment is then forgotten)",
            ) from None


@dataclass(frozen=True)
class Queued:
    """A document waiting in the queue: its file, and the document or why it is unreadable."""

    path: Path
    deployment_id: str  # from the document, or from the file name when unreadable
    document: Any
    error: str | None = None
    queued_at: str = ""  # when the CLI queued it (the file name's timestamp)


class Journal:
    """Reads and writes `<root>/deployments/` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.folder = self.root / "deployments"
        self.queue_dir = self.folder / "queue"
        self.current_path = self.folder / f"{CURRENT}.json"

    def ensure(self) -> None:
        self.queue_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held by the CLI while it adds recipes to the store and queues their deployment, and
        by the agent while it removes unused store entries, so it never removes recipes that a
        deployment just queued needs."""
        self.ensure()
        fd = os.open(self.folder / "store.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- the current state

    def current(self) -> DeviceState:
        if not self.current_path.exists():
            return DeviceState()
        return DeviceState.from_json(read_json(self.current_path), source=str(self.current_path))

    def write_current(self, state: DeviceState) -> None:
        write_json_atomically(self.current_path, state.to_json())

    # -- records

    def record_path(self, deployment_id: str) -> Path:
        check_deployment_id(deployment_id)
        return self.folder / f"{deployment_id}.json"

    def record(self, deployment_id: str) -> DeploymentRecord | None:
        path = self.record_path(deployment_id)
        if not path.exists():
            return None
        return DeploymentRecord.from_json(read_json(path), source=str(path))

    def save(self, record: DeploymentRecord) -> None:
        record.updated_at = now_iso()
        write_json_atomically(self.record_path(record.deployment_id), record.to_json())

    def records(self) -> list[DeploymentRecord]:
        """Every deployment record, oldest first; unreadable ones are skipped."""
        found = []
        for path in self._record_files():
            with contextlib.suppress(JournalError):
                found.append(DeploymentRecord.from_json(read_json(path), source=str(path)))
        return sorted(found, key=lambda r: (r.created_at, r.deployment_id))

    def _record_files(self) -> Iterator[Path]:
        if not self.folder.is_dir():
            return
        for path in self.folder.glob("*.json"):
            if path.name != self.current_path.name and not path.name.startswith(TMP_PREFIX):
                yield path

    # -- the queue

    def enqueue(self, document: Mapping[str, Any]) -> Path:
        """Put a document in the queue (atomically: the agent never sees half of it)."""
        deployment_id = str(document.get("deploymentId", ""))
        check_deployment_id(deployment_id)
        self.ensure()
        path = self.queue_dir / f"{time.time_ns():020d}-{deployment_id}.json"
        write_json_atomically(path, dict(document))
        return path

    def queued(self) -> list[Queued]:
        """The waiting documents, in the order the agent takes them."""
        if not self.queue_dir.is_dir():
            return []
        items = []
        for path in sorted(self.queue_dir.glob("*.json")):
            if path.name.startswith(TMP_PREFIX):
                continue
            stamp, _, rest = path.stem.partition("-")
            fallback = rest or path.stem
            at = _queued_at(path, stamp)
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue  # taken meanwhile
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                error = f"{path.name} is not valid JSON: {exc}"
                items.append(Queued(path, fallback, None, error, at))
                continue
            found = document.get("deploymentId") if isinstance(document, dict) else None
            identifier = (
                found if isinstance(found, str) and DEPLOYMENT_ID.fullmatch(found) else None
            )
            items.append(Queued(path, identifier or fallback, document, None, at))
        return items

    def dequeue(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fsync_dir(path.parent)

    def cleanup_temporary(self) -> list[Path]:
        """Remove the `.tmp-*` files an interrupted write left."""
        removed = []
        for folder in (self.folder, self.queue_dir):
            if folder.is_dir():
                for path in folder.glob(f"{TMP_PREFIX}*"):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
        return removed


def _queued_at(path: Path, stamp: str) -> str:
    """The time in a queue file's name (nanoseconds since the epoch), else its mtime."""
    try:
        seconds = int(stamp) / 1e9 if stamp.isdigit() else path.stat().st_mtime
        return iso(datetime.fromtimestamp(seconds, UTC))
    except (OSError, ValueError, OverflowError):
        return now_iso()


def check_deployment_id(deployment_id: str, *, path: str = "deploymentId") -> str:
    """A deployment id that is safe as a file name (it names the deployment's record)."""
    if not isinstance(deployment_id, str) or not DEPLOYMENT_ID.fullmatch(deployment_id):
        raise InvalidDeploymentIdError(
            f"invalid deployment id {deployment_id!r}",
            path=path,
            hint="use 1 to 128 letters, digits, '.', '-' or '_', starting with a letter or "
            "digit (a UUID is fine)",
        )
    if deployment_id == CURRENT:
        raise InvalidDeploymentIdError(
            f"the deployment id {CURRENT!r} is reserved", path=path, hint="choose another id"
        )
    return deployment_id
