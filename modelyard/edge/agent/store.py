"""The agent's component store: the recipes and artifacts a device has, on disk.

Greengrass's layout, simplified, under the agent's root folder:

    packages/recipes/<name>-<version>.yaml       each recipe as given (.json if given as JSON)
    packages/artifacts/<name>/<version>/          artifacts as fetched, verified against the recipe
    packages/artifacts-unarchived/<name>/<version>/<archive name without extension>/
    work/<name>/                                  a component's working folder

Recipes are immutable per version (adding different content under a stored version is refused),
and a folder of recipes is validated as a whole before any of it is written. Artifacts come from
a local artifact folder (`<dir>/<name>/<version>/<file>`, as `greengrass-cli deployment create
--artifactDir` lays them out), a `file://` path or an `https://` download; each is written to a
temporary name, its digest checked, then renamed into place, so a kill -9 leaves either the old
state or a `.tmp-*` entry that `cleanup_temporary()` removes on the next start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import os
import shutil
import ssl
import stat
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from semantic_version import Version

from modelyard.edge.agent.archives import (
    MAX_TOTAL_BYTES,
    TMP_PREFIX,
    safe_unzip,
    temporary_name,
)
from modelyard.edge.agent.builtins import check_docker_artifacts
from modelyard.edge.agent.digests import verify_artifact
from modelyard.edge.agent.errors import AgentError, ArtifactError, RecipeError
from modelyard.edge.agent.files import fsync_dir
from modelyard.edge.agent.model import Access, Artifact, Component, Recipe
from modelyard.edge.agent.recipe import load_recipe
from modelyard.edge.agent.variables import ComponentPaths

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
MAX_DOWNLOAD_BYTES = 4 << 30
DOWNLOAD_TIMEOUT = 60.0  # seconds without progress on one read, not for the whole download
DOCKER_INSPECT_TIMEOUT = 60.0
DOCKER_PULL_TIMEOUT = 1800.0  # images are large and device links slow
_CHUNK = 1 << 20
_READ_ERRORS = (OSError, ValueError, http.client.HTTPException)
_READ = {"NONE": 0, "OWNER": 0o400, "ALL": 0o444}
_EXECUTE = {"NONE": 0, "OWNER": 0o100, "ALL": 0o111}


def artifact_mode(read: Access, execute: Access) -> int:
    """The file mode of an artifact with this Permission; never writable (artifacts are
    immutable: a component copies what it wants to change). The owner (the agent's user) can
    always read: the agent verifies and unpacks what it stores, even with Read: NONE."""
    return _READ[read] | _EXECUTE[execute] | stat.S_IRUSR


class ComponentStore:
    """Recipes and artifacts under `root` (see the module docstring for the layout)."""

    def __init__(
        self,
        root: str | Path,
        *,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        max_unarchived_bytes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.recipes_dir = self.root / "packages" / "recipes"
        self.artifacts_dir = self.root / "packages" / "artifacts"
        self.unarchived_dir = self.root / "packages" / "artifacts-unarchived"
        self.work_root = self.root / "work"
        self.max_download_bytes = max_download_bytes
        self.download_timeout = download_timeout
        self.ssl_context = ssl_context  # None: the system's trusted CAs
        self.max_unarchived_bytes = max_unarchived_bytes  # None: archives' own default
        for folder in (self.recipes_dir, self.artifacts_dir, self.unarchived_dir, self.work_root):
            folder.mkdir(parents=True, exist_ok=True)

    # --- recipes -----------------------------------------------------------------------------

    def add_recipes(self, recipe_dir: str | Path) -> list[Recipe]:
        """Add every recipe file (*.yaml, *.yml, *.json) of `recipe_dir`, all or none.

        All files are parsed and checked first; then each new one is written atomically. A
        version already stored with the same content is accepted (and not rewritten).
        """
        folder = Path(recipe_dir)
        if not folder.is_dir():
            raise RecipeError(
                f"no recipe folder {folder}", hint="give the folder that holds the recipe files"
            )
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in RECIPE_SUFFIXES)
        files = [p for p in files if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise RecipeError(
                f"no recipe files (*.yaml, *.yml, *.json) in {folder}",
                hint="put the recipes in that folder, or give the folder that has them",
            )
        parsed: dict[str, tuple[Recipe, Path]] = {}
        for file in files:
            recipe = _load_from(file)
            _check_path_safe(recipe, file)
            earlier = parsed.get(recipe.ref)
            if earlier is not None and not _same(earlier[0], recipe):
                raise _changed_version(recipe, file, earlier[1])
            parsed.setdefault(recipe.ref, (recipe, file))
        to_write: list[tuple[Recipe, Path]] = []
        for recipe, file in parsed.values():
            stored = self._stored_recipe(recipe.name, recipe.version)
            if stored is None:
                to_write.append((recipe, file))
            elif not _same(stored, recipe):
                raise _changed_version(recipe, file, Path(stored.source or "the store"))
        self._write_recipes(to_write)
        return [recipe for recipe, _ in parsed.values()]

    def recipes(self, name: str) -> list[Recipe]:
        """The stored versions of component `name`, lowest version first."""
        found = [r for r in self._stored_recipes(f"{_glob_escape(name)}-*") if r.name == name]
        return sorted(found, key=_precedence)

    def recipe(self, name: str, version: str) -> Recipe:
        recipe = self._stored_recipe(name, version)
        if recipe is None:
            versions = ", ".join(r.version for r in self.recipes(name)) or "none"
            raise RecipeError(
                f"no recipe for {name}={version} in the store (versions stored: {versions})",
                hint="add the recipe first (modelyard-agent deploy --recipes <folder>)",
            )
        return recipe

    def available(self) -> dict[str, list[Recipe]]:
        """Every stored recipe by component name, lowest version first (for resolve_versions)."""
        by_name: dict[str, list[Recipe]] = {}
        for recipe in self._stored_recipes("*"):
            by_name.setdefault(recipe.name, []).append(recipe)
        return {name: sorted(found, key=_precedence) for name, found in sorted(by_name.items())}

    def _recipe_files(self, name: str, version: str) -> list[Path]:
        stem = f"{name}-{version}"
        return [self.recipes_dir / f"{stem}{suffix}" for suffix in (".yaml", ".json")]

    def _stored_recipe(self, name: str, version: str) -> Recipe | None:
        for file in self._recipe_files(name, version):
            if file.is_file():
                recipe = _load_stored(file)
                if recipe.name != name or recipe.version != version:
                    # "a" 1.0.0-b-2.0.0 and "a-1.0.0-b" 2.0.0 share a file name: never overwrite
                    raise RecipeError(
                        f"{name}={version} would be stored as {file.name}, which holds "
                        f"{recipe.ref}",
                        path="ComponentVersion",
                        hint="the two recipes' file names clash: rename one of the components",
                    )
                return recipe
        return None

    def _stored_recipes(self, pattern: str) -> Iterator[Recipe]:
        for suffix in (".yaml", ".json"):
            for file in sorted(self.recipes_dir.glob(f"{pattern}{suffix}")):
                if not file.name.startswith(TMP_PREFIX):
                    yield _load_stored(file)

    def _write_recipes(self, recipes: Sequence[tuple[Recipe, Path]]) -> None:
        """Write each recipe file; if one write fails, remove those already written."""
        written: list[Path] = []
        try:
            for recipe, source in recipes:
                suffix = ".json" if source.suffix.lower() == ".json" else ".yaml"
                target = self.recipes_dir / f"{recipe.name}-{recipe.version}{suffix}"
                _write_atomically(target, source.read_bytes())
                written.append(target)
        except OSError as exc:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise RecipeError(
                f"cannot write recipes into {self.recipes_dir}: {exc}; none were added",
                hint="check the free space and permissions of the agent's root folder",
            ) from None

    # --- paths -------------------------------------------------------------------------------

    def paths(self, component: Component | Recipe) -> ComponentPaths:
        """Where the component's files are: what `{artifacts:path}` and friends resolve to."""
        recipe = component.recipe if isinstance(component, Component) else component
        _check_path_safe(recipe, None)
        return ComponentPaths(
            artifacts=str(self.artifacts_dir / recipe.name / recipe.version),
            decompressed=str(self.unarchived_dir / recipe.name / recipe.version),
            work=str(self.work_root / recipe.name),
        )

    def work_dir(self, name: str) -> Path:
        """The component's working folder (created), kept across versions."""
        _check_name_safe(name, "ComponentName")
        folder = self.work_root / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # --- artifacts ---------------------------------------------------------------------------

    def fetch_artifacts(
        self, component: Component, *, artifact_dirs: Sequence[str | Path] = ()
    ) -> ComponentPaths:
        """Fetch, verify and (for `Unarchive: ZIP`) unpack each artifact of the component.

        A file is looked for in each `<dir>/<name>/<version>/<file>` of `artifact_dirs` first
        (whatever its URI scheme), then at its `file://` path or `https://` URL. Docker images
        are pulled when missing. An artifact already fetched and verified is left as it is.
        """
        check_docker_artifacts(component)  # no Docker: refuse before fetching anything
        paths = self.paths(component)
        target_dir = Path(paths.artifacts)
        target_dir.mkdir(parents=True, exist_ok=True)
        prefix = _manifest_prefix(component)
        for i, artifact in enumerate(component.artifacts):
            field = f"{prefix}Artifacts[{i}]"
            if artifact.is_docker:
                _ensure_docker_image(artifact, field)
                continue
            name = artifact.file_name
            if name in ("", ".", "..") or "\\" in name:
                raise ArtifactError(
                    f"artifact URI {artifact.uri} names no usable file",
                    path=f"{field}.URI",
                    hint="end the URI with the artifact's file name, e.g. .../model.zip",
                )
            target = target_dir / name
            fetched = self._fetch_file(component, artifact, target, field, artifact_dirs)
            if artifact.unarchive == "ZIP":
                self._unarchive(component, artifact, target, field, again=fetched)
        return paths

    def _fetch_file(
        self,
        component: Component,
        artifact: Artifact,
        target: Path,
        field: str,
        artifact_dirs: Sequence[str | Path],
    ) -> bool:
        """Put the artifact at `target`; False when it was already there and verified."""
        mode = artifact_mode(artifact.permission.read, artifact.permission.execute)
        if target.is_file() and _verified(target, artifact):
            if (target.stat().st_mode & 0o777) != mode:
                os.chmod(target, mode)  # the recipe's Permission may be all that changed
            return False
        opener, where, limit = self._source(component, artifact, field, artifact_dirs)
        tmp = target.parent / temporary_name(target.name)
        try:
            digest = _copy(opener, tmp, artifact, where, field, limit)
            _check_digest(digest, artifact, where, field)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return True

    def _source(
        self,
        component: Component,
        artifact: Artifact,
        field: str,
        artifact_dirs: Sequence[str | Path],
    ) -> tuple[Callable[[], IO[bytes]], str, int | None]:
        """How to open the artifact's bytes, where they come from (for messages), and how many
        bytes may come (downloads only: a local file's size is the user's choice)."""
        name = artifact.file_name
        looked = [Path(d) / component.name / component.version / name for d in artifact_dirs]
        for candidate in looked:
            if candidate.is_file():
                return _file_opener(candidate, field), str(candidate), None
        scheme = artifact.uri.partition(":")[0].lower()
        if scheme == "file":
            path = _file_uri_path(artifact.uri, f"{field}.URI")
            if path.is_file():
                return _file_opener(path, field), str(path), None
            looked.append(path)
        elif scheme == "https":
            return self._https_opener(artifact.uri, field), artifact.uri, self.max_download_bytes
        folders = ", ".join(str(p.parent) for p in looked) or "no artifact folder was given"
        local = f"<artifact dir>/{component.name}/{component.version}/{name}"
        hint = (
            f"create {looked[-1]}, or put the file at {local}"
            if scheme == "file"
            else f"the agent does not download {scheme}: URIs; put the file at {local} "
            "and pass that artifact dir"
        )
        raise ArtifactError(
            f"artifact {artifact.uri} of {component.recipe.ref} not found; looked in: {folders}",
            path=f"{field}.URI",
            hint=hint,
        )

    def _https_opener(self, url: str, field: str) -> Callable[[], IO[bytes]]:
        def open_url() -> IO[bytes]:
            handlers: list[urllib.request.BaseHandler] = [_HttpsOnlyRedirects()]
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
            opener = urllib.request.build_opener(*handlers)
            try:
                response: Any = opener.open(url, timeout=self.download_timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                raise ArtifactError(
                    f"cannot download {url}: HTTP {exc.code} {exc.reason}",
                    path=f"{field}.URI",
                    hint="check the URL, or put the file in a local artifact folder",
                ) from None
            except (urllib.error.URLError, *_READ_ERRORS) as exc:
                reason = getattr(exc, "reason", exc)
                raise ArtifactError(
                    f"cannot download {url}: {reason}",
                    path=f"{field}.URI",
                    hint="check the device's network and the URL, or use a local artifact folder",
                ) from None
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > self.max_download_bytes:
                response.close()
                raise _too_big(url, field, self.max_download_bytes)
            return response  # type: ignore[no-any-return]

        return open_url

    def _unarchive(
        self, component: Component, artifact: Artifact, archive: Path, field: str, *, again: bool
    ) -> None:
        dest = Path(self.paths(component).decompressed) / archive.stem  # model.zip -> model
        if dest.is_dir() and not again:
            return  # renamed into place only once complete: its presence means done
        mode = artifact_mode(artifact.permission.read, artifact.permission.execute)
        limit = self.max_unarchived_bytes
        safe_unzip(
            archive,
            dest,
            file_mode=mode,
            field=f"{field}.Unarchive",
            max_total_bytes=MAX_TOTAL_BYTES if limit is None else limit,
        )

    # --- clean-up ----------------------------------------------------------------------------

    def remove_unused(self, keep: set[tuple[str, str]]) -> list[str]:
        """Delete the recipes and artifacts of every (name, version) not in `keep`.

        Call it after a deployment succeeded, with every version that runs or may be rolled
        back to. Work folders are kept: they hold a component's data across versions. Returns
        the refs removed ("name=version").
        """
        stored: set[tuple[str, str]] = set()
        for recipes in self.available().values():
            stored.update((r.name, r.version) for r in recipes)
        for base in (self.artifacts_dir, self.unarchived_dir):  # also artifacts without recipe
            for name_dir in _subdirs(base):
                stored.update((name_dir.name, v.name) for v in _subdirs(name_dir))
        removed = []
        for name, version in sorted(stored - set(keep)):
            for base in (self.artifacts_dir, self.unarchived_dir):
                _remove_tree(base / name / version)
                with contextlib.suppress(OSError):
                    (base / name).rmdir()  # only when no other version is left
            for file in self._recipe_files(name, version):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()  # last: a half-removed version still shows as stored
            removed.append(f"{name}={version}")
        return removed

    def cleanup_temporary(self) -> list[Path]:
        """Remove the `.tmp-*` leftovers of an interrupted fetch, unpack or removal.

        Call it when the agent starts, before any fetch: an entry still being written by
        another process would be removed too.
        """
        removed = []
        for path in _temporary_entries(self.root / "packages"):
            _remove_path(path)
            removed.append(path)
        return removed


# --- recipes: helpers ------------------------------------------------------------------------


def _load_from(file: Path) -> Recipe:
    """A recipe file given to add_recipes; errors name the file and the field."""
    try:
        return load_recipe(file)
    except RecipeError as exc:
        message = exc.message if str(file) in exc.message else f"{file}: {exc.message}"
        raise RecipeError(message, path=exc.path, hint=exc.hint) from None


def _load_stored(file: Path) -> Recipe:
    try:
        return load_recipe(file)
    except RecipeError as exc:
        raise RecipeError(
            f"the stored recipe {file} is unreadable: {exc}",
            hint="delete that file and add the recipe again",
        ) from None


def _same(a: Recipe, b: Recipe) -> bool:
    return replace(a, source=None) == replace(b, source=None)


def _changed_version(recipe: Recipe, file: Path, other: Path) -> RecipeError:
    bumped = str(Version(recipe.version).next_patch())
    return RecipeError(
        f"{file}: {recipe.ref} differs from the recipe of that version already given "
        f"({other}); a component version is immutable",
        path="ComponentVersion",
        hint=f"bump ComponentVersion, e.g. to {bumped}",
    )


def _check_name_safe(name: str, path: str, file: Path | None = None) -> None:
    # the recipe grammar allows "." and ".." as names: as folder names they would escape
    if name.strip(".") == "" or "/" in name or "\\" in name or "\0" in name:
        where = f"{file}: " if file else ""
        raise RecipeError(
            f"{where}{name!r} cannot be used as a folder name on the device",
            path=path,
            hint="use letters or digits in the name, e.g. com.example.HelloWorld",
        )


def _check_path_safe(recipe: Recipe, file: Path | None) -> None:
    _check_name_safe(recipe.name, "ComponentName", file)
    _check_name_safe(recipe.version, "ComponentVersion", file)


def _precedence(recipe: Recipe) -> tuple[Any, str]:
    return Version(recipe.version).precedence_key, recipe.version


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _write_atomically(target: Path, data: bytes) -> None:
    tmp = target.parent / temporary_name(target.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


# --- artifacts: helpers ----------------------------------------------------------------------


def _manifest_prefix(component: Component) -> str:
    index = next(
        (i for i, m in enumerate(component.recipe.manifests) if m is component.manifest), None
    )
    return f"Manifests[{index}]." if index is not None else ""


def _verified(path: Path, artifact: Artifact) -> bool:
    try:
        verify_artifact(path, artifact)
    except AgentError:
        return False
    return True


def _copy(
    opener: Callable[[], IO[bytes]],
    tmp: Path,
    artifact: Artifact,
    where: str,
    field: str,
    limit: int | None,
) -> str:
    """Copy the source's bytes to `tmp` (at most `limit`), returning their base64 digest."""
    algorithm = artifact.algorithm.replace("-", "").lower()
    digest = hashlib.new(algorithm)
    size = 0
    with opener() as source:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = source.read(_CHUNK)
                except _READ_ERRORS as exc:  # a timeout, a reset connection
                    raise ArtifactError(
                        f"reading {where} failed after {size} bytes: {exc}",
                        path=f"{field}.URI",
                        hint="try the deployment again",
                    ) from None
                if not chunk:
                    break
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _too_big(where, field, limit)
                digest.update(chunk)
                out.write(chunk)
            missing = getattr(source, "length", None)  # an HTTP body's unread bytes
            if missing:  # urllib reads a closed connection as a normal end: check
                raise ArtifactError(
                    f"the download of {where} ended early: {missing} bytes missing",
                    path=f"{field}.URI",
                    hint="try the deployment again",
                )
            out.flush()
            os.fsync(out.fileno())
    return base64.b64encode(digest.digest()).decode("ascii")


def _check_digest(actual: str, artifact: Artifact, where: str, field: str) -> None:
    if artifact.digest is None:
        return
    expected = base64.b64decode(artifact.digest)
    if not hmac.compare_digest(base64.b64decode(actual), expected):
        raise ArtifactError(
            f"{where} does not match the digest of {artifact.uri}: the recipe says "
            f"{artifact.algorithm} {artifact.digest}, the file has {actual}",
            path=f"{field}.Digest",
            hint="use the file the recipe was made for, or update the recipe's Digest "
            "(and bump its version) if the file changed on purpose",
        )


def _file_opener(path: Path, field: str) -> Callable[[], IO[bytes]]:
    def open_file() -> IO[bytes]:
        try:
            return open(path, "rb")
        except OSError as exc:
            raise ArtifactError(
                f"cannot read artifact {path}: {exc}", path=f"{field}.URI"
            ) from None

    return open_file


def _file_uri_path(uri: str, field: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ArtifactError(
            f"file URI {uri} names the host {parsed.netloc!r}",
            path=field,
            hint="write an absolute path with three slashes: file:///path/to/file",
        )
    path = Path(urllib.request.url2pathname(parsed.path))
    if not path.is_absolute():
        raise ArtifactError(
            f"file URI {uri} is not an absolute path",
            path=field,
            hint="write file:///absolute/path/to/file",
        )
    return path


def _too_big(where: str, field: str, limit: int) -> ArtifactError:
    return ArtifactError(
        f"{where} is larger than the {limit} bytes an artifact may have",
        path=f"{field}.URI",
        hint="raise the agent's max_download_bytes if the artifact is genuine",
    )


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to https: a redirect to http would drop the transport security."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlparse(newurl).scheme.lower() != "https":
            raise urllib.error.URLError(f"refused a redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _ensure_docker_image(artifact: Artifact, field: str) -> None:
    """`docker image inspect`, then `docker pull` when the image is not on the device."""
    image = artifact.uri.removeprefix("docker:")
    docker = shutil.which("docker")
    if docker is None:  # check_docker_artifacts ran first; PATH changed since
        raise ArtifactError(
            f"{artifact.uri} needs Docker on the device; none found on PATH",
            path=f"{field}.URI",
            hint="install docker",
        )
    inspect = _docker(docker, ["image", "inspect", image], DOCKER_INSPECT_TIMEOUT, field)
    if inspect.returncode == 0:
        return
    pull = _docker(docker, ["pull", image], DOCKER_PULL_TIMEOUT, field)
    if pull.returncode != 0:
        detail = (pull.stderr or pull.stdout).strip().splitlines()
        raise ArtifactError(
            f"docker pull {image} failed (exit {pull.returncode})"
            + (f": {detail[-1]}" if detail else ""),
            path=f"{field}.URI",
            hint="check the image name and tag, and log the device in to its registry "
            "(docker login)",
        )


def _docker(
    docker: str, args: list[str], timeout: float, field: str
) -> subprocess.CompletedProcess[str]:
    command = " ".join(["docker", *args])
    try:
        return subprocess.run(
            [docker, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ArtifactError(
            f"`{command}` did not finish within {timeout:g} seconds",
            path=f"{field}.URI",
            hint="check the device's network and the Docker daemon",
        ) from None
    except OSError as exc:
        raise ArtifactError(f"cannot run `{command}`: {exc}", path=f"{field}.URI") from None


# --- files: helpers --------------------------------------------------------------------------


def _subdirs(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))


def _remove_tree(folder: Path) -> None:
    """Rename, then delete: a kill midway leaves a `.tmp-*` folder, never a half folder."""
    if not folder.exists():
        return
    doomed = folder.parent / temporary_name(folder.name)
    os.replace(folder, doomed)
    _remove_path(doomed)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _temporary_entries(folder: Path) -> list[Path]:
    """The `.tmp-*` entries under `folder` (not descending into them)."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        base = Path(current)
        found += [base / f for f in files if f.startswith(TMP_PREFIX)]
        found += [base / d for d in dirs if d.startswith(TMP_PREFIX)]
        dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
    return found
