"""Load YAML while remembering where every key and value came from (file:line for errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError

Path_ = tuple[str | int, ...]


@dataclass
class YamlSource:
    """Parsed YAML data plus the line (1-based) of every key path."""

    file: Path
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def where(self, path: Path_) -> str:
        return f"{self.file}:{self.line_of(path)}"


def read_project_file(file: Path) -> str:
    """The text of a project file, or a ConfigError saying why it cannot be read."""
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found", where=str(file), hint="run `modelyard init` to create one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", where=str(file)) from None


def load_yaml(file: Path, text: str | None = None) -> YamlSource:
    import yaml  # imported here: a cached project is loaded without parsing YAML

    try:  # the C loader is several times faster; PyYAML wheels ship it
        from yaml import CSafeLoader as Loader
    except ImportError:  # pragma: no cover - only on builds without libyaml
        from yaml import SafeLoader as Loader  # type: ignore[assignment]

    if text is None:
        text = read_project_file(file)
    try:
        loader = Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"YAML syntax error: {problem}",
            where=f"{file}:{line}",
            hint="check the indentation and quoting on that line "
            "(a value containing ': ' or starting with '{' or '*' needs quotes)",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", where=str(file)) from None
    source = YamlSource(file=file, data=None)
    if root is None:
        return source
    source.data = _construct(root, (), source, yaml.constructor.SafeConstructor())
    return source


def _construct(node: Any, path: Path_, source: YamlSource, constructor: Any) -> Any:
    import yaml

    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(
                    "YAML merge keys ('<<') are not supported",
                    where=f"{source.file}:{key_node.start_mark.line + 1}",
                    hint="write the keys out; use parameters for shared values",
                )
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise ConfigError(
                    "mapping keys must be plain names",
                    where=f"{source.file}:{key_node.start_mark.line + 1}",
                )
            key = str(key)
            if key in result:
                raise ConfigError(
                    f"duplicate key '{key}' (first defined on line {source.lines[(*path, key)]})",
                    where=f"{source.file}:{key_node.start_mark.line + 1}",
                    hint="names must be unique: rename or remove one of them",
                )
            source.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, (*path, key), source, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, (*path, i), source, constructor) for i, item in enumerate(node.value)
        ]
    return constructor.construct_object(node, deep=True)
