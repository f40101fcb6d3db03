"""docs/cli.md, written from the argument parser itself, so the command reference cannot drift from the CLI.

    python -m mdsrec.cli_reference > docs/cli.md

A test compares the committed docs/cli.md with ``cli_markdown()``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from mdsrec.cli import build_parser

WIDTH = 110  # help text width, fixed so the page does not depend on the terminal that wrote it


def _subcommands(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(full command, one-line help, parser) of every sub-command, depth first, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix} {name}"
                yield full, helps.get(name, ""), sub
                yield from _subcommands(sub, full)


def cli_markdown() -> str:
    """The command reference: one section per command (nested ones included) with its one-line summary and its
    ``--help`` text."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH + 2)  # argparse wraps at the terminal width minus 2
    try:
        parser = build_parser()
        parts = [
            "# Command reference\n\n"
            "Every `mdsrec` command and its options, as `mdsrec COMMAND --help` prints them "
            "(written by `python -m mdsrec.cli_reference`).\n"
        ]
        commands = list(_subcommands(parser, "mdsrec"))
        parts.append("\n".join(f"- [`{c}`](#{c.replace(' ', '-')}): {h}" for c, h, _ in commands) + "\n")
        for full, summary, sub in commands:
            parts.append(f"## {full}\n\n{summary}\n\n```text\n{sub.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def main() -> None:
    print(cli_markdown(), end="")


if __name__ == "__main__":
    main()
