"""docs/cli.md is the argument parser's own help: it fails here when a command or option changes without it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mdsrec.cli_reference import cli_markdown

REPO = Path(__file__).resolve().parents[1]
GENERATED_WITH = (3, 11)  # argparse's help layout differs slightly between Python versions


def _commands_and_flags(text: str) -> list[tuple[str, list[str]]]:
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    return [(s.splitlines()[0], sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", s)))) for s in sections]


def test_committed_cli_reference_is_what_the_parser_prints() -> None:
    """Regenerate with `python -m mdsrec.cli_reference > docs/cli.md`."""
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    fresh = cli_markdown()
    assert _commands_and_flags(committed) == _commands_and_flags(
        fresh
    )  # every command and option, any Python
    assert len(_commands_and_flags(fresh)) >= 14
    if sys.version_info[:2] == GENERATED_WITH:
        assert committed == fresh
