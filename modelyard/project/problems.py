"""Validation findings located in the project file (file:line), and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.errors import ConfigError
from modelyard.pipeline.lint import LintIssue
from modelyard.project.yamlsource import YamlSource


@dataclass
class Problem:
    """One validation finding, already located in the file."""

    level: str
    where: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.level}: {self.message}"
        return text + (f"\n  fix: {self.hint}" if self.hint else "")


class ProjectInvalid(ConfigError):
    """The project file has errors; `problems` lists each with its file:line."""

    def __init__(self, problems: list[Problem]):
        errors = [p for p in problems if p.level == "error"]
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        super().__init__(
            f"the project is invalid ({count}):\n" + "\n".join(str(p) for p in problems)
        )
        self.problems = problems

    def __str__(self) -> str:
        return self.message


def locate_issue(source: YamlSource, pipeline: str, issue: LintIssue) -> Problem:
    path = ("pipelines", pipeline, *issue.path)
    return Problem(issue.level, source.where(path), issue.message, issue.hint)
