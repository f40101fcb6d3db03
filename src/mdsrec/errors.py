"""Errors that the CLI reports to the user as one clear line (no traceback)."""

from __future__ import annotations

from pathlib import Path


class MdsrecError(Exception):
    """Base class for errors caused by user input (files, configs, flags), not by bugs."""


class DataFormatError(MdsrecError):
    """A data file does not have the expected format.

    The message always names the file, the line (1-based) or field where known, and what was expected.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(MdsrecError):
    """A configuration value or key is invalid."""


class ManifestMismatchError(MdsrecError):
    """A checkpoint or run does not belong to the data directory it is used with."""


def yaml_problem(e: BaseException) -> str:
    """A YAML parser error on one line: where (line, column) and the problem, without the parser's context lines."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e) or type(e).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


class TrainingDiverged(FloatingPointError):
    """The training loss (or the validation scores) became non-finite before any epoch was evaluated, so a run has
    nothing to report. Later divergence is not an error: training stops and the best epoch so far is the result."""
