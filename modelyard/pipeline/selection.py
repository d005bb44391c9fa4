"""Which files of a data source belong to a data version: glob patterns and dated folders (pure).

Paths are relative POSIX paths below the source's URL. Patterns match the whole relative path:
`*` and `?` stay inside one folder level, `**` spans any number of levels (`**/*.csv` is every
CSV file at any depth, `*.csv` only those at the top). With a date prefix such as `YYYY/MM/DD/`,
only files below folders matching it are selected, the patterns match the path below that folder,
and the date is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

DEFAULT_INCLUDE = ("**/*",)
# token -> (regex group, strptime-like role); the order of the alternatives matters: YYYY first
_DATE_TOKENS = {"YYYY": r"(?P<year>\d{4})", "MM": r"(?P<month>\d{2})", "DD": r"(?P<day>\d{2})"}
_DATE_TOKEN_RE = re.compile("|".join(_DATE_TOKENS))


def check_pattern(pattern: str) -> str:
    """Validate a glob pattern; raise ValueError with the reason."""
    if not pattern or not pattern.strip():
        raise ValueError("a pattern cannot be empty")
    if pattern.startswith("/") or "\\" in pattern:
        raise ValueError(f"'{pattern}' must be a relative POSIX path pattern such as '**/*.csv'")
    if any(part in (".", "..") for part in pattern.split("/")):
        raise ValueError(f"'{pattern}' cannot contain '.' or '..' folder parts")
    glob_regex(pattern)  # raises on a malformed [class]
    return pattern


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for a glob pattern over relative POSIX paths."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")  # zero or more whole folder levels
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                raise ValueError(f"'{pattern}': '[' is not closed by ']'")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"(?!/)[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise ValueError(f"'{pattern}' is not a valid pattern: {exc}") from None


def matches(path: str, patterns: Sequence[str]) -> bool:
    return any(glob_regex(p).match(path) for p in patterns)


@dataclass(frozen=True)
class DatePrefix:
    """A dated-folder pattern such as `YYYY/MM/DD/` (tokens YYYY, MM, DD; other text literal)."""

    pattern: str
    regex: re.Pattern[str]

    def split(self, path: str) -> tuple[str, str] | None:
        """(date, rest) if `path` lies below a dated folder with a real date, else None.

        The date is ISO 8601 with as many parts as the pattern has: 2024-05-01, 2024-05, 2024.
        """
        match = self.regex.match(path)
        if match is None:
            return None
        parts = match.groupdict()
        year, month, day = parts.get("year"), parts.get("month"), parts.get("day")
        assert year is not None
        try:  # 2024/13/40/ looks dated but is not a date
            datetime(int(year), int(month or 1), int(day or 1))
        except ValueError:
            return None
        date = "-".join(p for p in (year, month, day) if p is not None)
        rest = path[match.end() :]
        return (date, rest) if rest else None


@lru_cache(maxsize=64)
def parse_date_prefix(pattern: str) -> DatePrefix:
    """Validate and compile a date prefix; raise ValueError with the reason."""
    if pattern.startswith("/") or "\\" in pattern:
        raise ValueError(f"date_prefix '{pattern}' must be a relative pattern such as YYYY/MM/DD/")
    if not pattern.endswith("/"):
        pattern += "/"  # it names folders: "YYYY/MM/DD" means "YYYY/MM/DD/"
    tokens = _DATE_TOKEN_RE.findall(pattern)
    if "YYYY" not in tokens:
        raise ValueError(
            f"date_prefix '{pattern}' has no YYYY: write folders such as YYYY/MM/DD/ or YYYY-MM/"
        )
    if len(tokens) != len(set(tokens)):
        raise ValueError(f"date_prefix '{pattern}' repeats a token (YYYY, MM or DD)")
    if "DD" in tokens and "MM" not in tokens:
        raise ValueError(f"date_prefix '{pattern}' has DD without MM")
    if any(c in pattern for c in "*?["):
        raise ValueError(f"date_prefix '{pattern}' cannot contain glob characters (* ? [)")
    regex: list[str] = []
    position = 0
    for match in _DATE_TOKEN_RE.finditer(pattern):
        regex.append(re.escape(pattern[position : match.start()]))
        regex.append(_DATE_TOKENS[match.group(0)])
        position = match.end()
    regex.append(re.escape(pattern[position:]))
    return DatePrefix(pattern, re.compile("".join(regex)))


def select(
    path: str,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
    date_prefix: str | None = None,
) -> tuple[bool, str | None]:
    """Whether `path` is selected, and its date when the source has a date prefix."""
    date = None
    rest = path
    if date_prefix:
        dated = parse_date_prefix(date_prefix).split(path)
        if dated is None:
            return False, None
        date, rest = dated
    if not matches(rest, include) or matches(rest, exclude):
        return False, None
    return True, date
